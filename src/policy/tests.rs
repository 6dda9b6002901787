use super::*;
use crate::config::RelayTls;

fn config(text: &str) -> Config {
    Config::from_toml(text, None).unwrap()
}

fn record() -> SecurityRecord {
    SecurityRecord::default()
}

fn ee() -> Tlsa {
    Tlsa {
        usage: tlsa::USAGE_DANE_EE,
        selector: tlsa::SELECTOR_SPKI,
        matching: tlsa::MATCHING_SHA256,
        data: vec![7; 32],
    }
}

fn facts(tlsa: TlsaState) -> HostFacts<'static> {
    HostFacts {
        host: "mx.example.org",
        recipient_domain: "example.org",
        mx_secure: true,
        address_secure: true,
        tlsa,
        dnssec: &Dnssec::Working,
        relay_tls: None,
    }
}

fn secure_tlsa() -> TlsaState {
    TlsaState::Secure {
        base: "mx.example.org".into(),
        usable: vec![ee()],
    }
}

fn plan(d: HostDecision) -> TlsPlan {
    match d {
        HostDecision::Use(p) => p,
        HostDecision::Skip(r) => panic!("skipped: {r:?}"),
    }
}

fn refusal(d: HostDecision) -> Refusal {
    match d {
        HostDecision::Skip(r) => r,
        HostDecision::Use(p) => panic!("used: {p:?}"),
    }
}

fn req(record: &SecurityRecord, cfg: &Config) -> Requirements {
    requirements(record, cfg, "alice@sender.example", "example.org", false)
}

#[test]
fn default_level_dane_with_usable_tlsa_enforces_dane_rfc7672_section_2_2() {
    let r = req(&record(), &config(""));
    assert!(wants_tlsa(&r, true, true));
    let p = plan(decide(&r, &facts(secure_tlsa())));
    assert_eq!(p.starttls, StartTls::Required);
    assert!(p.enforce);
    assert!(!p.plaintext_retry, "never plaintext with DANE");
    assert!(matches!(p.authentication, Authentication::Dane { .. }));
    assert_eq!(p.basis, "dane");
}

#[test]
fn dane_ta_reference_names_include_the_recipient_domain_when_mx_secure_rfc7672_section_3_2_2() {
    let r = req(&record(), &config(""));
    let mut f = facts(TlsaState::Secure {
        base: "real.example.net".into(),
        usable: vec![ee()],
    });
    let p = plan(decide(&r, &f));
    assert_eq!(p.server_name, "real.example.net", "SNI is the base domain");
    let Authentication::Dane { names, .. } = &p.authentication else {
        panic!()
    };
    assert_eq!(
        names,
        &["real.example.net", "example.org", "mx.example.org"]
    );
    f.mx_secure = false;
    let p = plan(decide(&r, &f));
    let Authentication::Dane { names, .. } = p.authentication else {
        panic!()
    };
    assert!(!names.contains(&"example.org".to_owned()));
}

#[test]
fn no_tlsa_at_default_level_is_opportunistic_with_plaintext_retry() {
    let r = req(&record(), &config(""));
    for state in [TlsaState::None, TlsaState::NotLooked] {
        let p = plan(decide(&r, &facts(state)));
        assert_eq!(p.starttls, StartTls::Opportunistic);
        assert!(!p.enforce);
        assert!(p.plaintext_retry);
    }
}

#[test]
fn secure_but_unusable_tlsa_requires_tls_without_authentication_rfc7672_section_2_2() {
    let r = req(&record(), &config(""));
    let unusable = TlsaState::Secure {
        base: "mx.example.org".into(),
        usable: vec![],
    };
    let p = plan(decide(&r, &facts(unusable.clone())));
    assert_eq!(p.starttls, StartTls::Required);
    assert_eq!(p.authentication, Authentication::None);
    assert!(!p.plaintext_retry);
    // With REQUIRETLS, PKIX must pass instead.
    let mut rec = record();
    rec.requiretls = true;
    let p = plan(decide(&req(&rec, &config("")), &facts(unusable)));
    assert_eq!(p.authentication, Authentication::Pkix);
    assert!(p.enforce);
}

#[test]
fn tlsa_lookup_failure_skips_the_host_rfc7672_section_2_1_2() {
    let r = req(&record(), &config(""));
    let d = refusal(decide(&r, &facts(TlsaState::Failed("SERVFAIL".into()))));
    assert!(!d.permanent);
    assert!(d.reason.contains("SERVFAIL"));
}

#[test]
fn tls_required_no_sets_dane_aside_but_records_it_rfc8689_section_4_2_2() {
    let mut rec = record();
    rec.tls_optional = true;
    let r = req(&rec, &config(""));
    assert!(r.tls_optional);
    let p = plan(decide(&r, &facts(secure_tlsa())));
    assert!(matches!(p.authentication, Authentication::Dane { .. }));
    assert!(!p.enforce, "a DANE mismatch must not stop the delivery");
    assert!(p.plaintext_retry);
    assert_eq!(p.starttls, StartTls::Opportunistic);
    // A failed TLSA lookup does not stop it either.
    let p = plan(decide(&r, &facts(TlsaState::Failed("timeout".into()))));
    assert_eq!(p.starttls, StartTls::Opportunistic);
}

#[test]
fn tls_required_no_keeps_the_administrators_level_rfc8689_section_8_4() {
    let mut rec = record();
    rec.tls_optional = true;
    let cfg = config("[tls.domain.\"example.org\"]\nlevel = \"verify\"\n");
    let p = plan(decide(&req(&rec, &cfg), &facts(TlsaState::NotLooked)));
    assert!(p.enforce);
    assert_eq!(p.starttls, StartTls::Required);
    let cfg = config("[tls.domain.\"example.org\"]\nlevel = \"dane-only\"\n");
    let d = refusal(decide(&req(&rec, &cfg), &facts(TlsaState::None)));
    assert!(!d.permanent);
}

#[test]
fn requiretls_wins_over_tls_required_no_rfc8689_section_4_1() {
    let mut rec = record();
    rec.tls_optional = true;
    rec.requiretls = true;
    let r = req(&rec, &config(""));
    assert!(!r.tls_optional);
    let p = plan(decide(&r, &facts(TlsaState::None)));
    assert!(p.requiretls && p.enforce);
    assert_eq!(p.authentication, Authentication::Pkix);
}

#[test]
fn requiretls_with_insecure_mx_fails_at_once_with_5_7_10_rfc8689_section_4_2_1() {
    let mut rec = record();
    rec.requiretls = true;
    let mut f = facts(TlsaState::NotLooked);
    f.mx_secure = false;
    let d = refusal(decide(&req(&rec, &config("")), &f));
    assert_eq!(d.status, "5.7.10");
    assert!(d.permanent);
    // Normal mail to the same host goes.
    assert!(matches!(
        decide(&req(&record(), &config("")), &f),
        HostDecision::Use(_)
    ));
}

#[test]
fn require_dnssec_option_fails_on_an_insecure_mx() {
    let mut rec = record();
    rec.require_dnssec = true;
    let mut f = facts(TlsaState::NotLooked);
    f.mx_secure = false;
    assert!(refusal(decide(&req(&rec, &config("")), &f)).permanent);
}

#[test]
fn tls_verify_pkix_never_looks_up_tlsa_and_dane_requires_it() {
    let mut rec = record();
    rec.tls_verify = Some(VerifyMethod::Pkix);
    let r = req(&rec, &config(""));
    assert!(!wants_tlsa(&r, true, true));
    let p = plan(decide(&r, &facts(TlsaState::NotLooked)));
    assert!(p.enforce);
    assert_eq!(p.authentication, Authentication::Pkix);
    rec.tls_verify = Some(VerifyMethod::Dane);
    let r = req(&rec, &config("[tls]\nlevel = \"may\"\n"));
    assert!(wants_tlsa(&r, true, true), "the message asks for DANE");
    assert!(!refusal(decide(&r, &facts(TlsaState::None))).permanent);
}

#[test]
fn conflicting_requirements_fail() {
    let mut rec = record();
    rec.tls_verify = Some(VerifyMethod::Pkix);
    let cfg = config("[[rule]]\nrecipient_domain = \"example.org\"\ntls_verify = \"dane\"\n");
    let d = refusal(decide(&req(&rec, &cfg), &facts(secure_tlsa())));
    assert!(d.permanent);
}

#[test]
fn rules_add_requirements_by_sender_and_recipient_domain() {
    let cfg = config(
        "[[rule]]\nsender_domain = \"sender.example\"\nrequiretls = true\n\
         [[rule]]\nrecipient_domain = \"example.org\"\ntls_min = \"1.3\"\n",
    );
    let r = req(&record(), &cfg);
    assert!(r.requiretls);
    assert_eq!(r.min_version, Some(TlsVersion::Tls13));
    let other = requirements(&record(), &cfg, "bob@else.example", "other.example", false);
    assert!(!other.requiretls);
    assert_eq!(other.min_version, None);
}

#[test]
fn minimum_version_is_the_highest_of_message_and_destination() {
    let mut rec = record();
    rec.tls_min = Some("1.2".into());
    let cfg = config("[tls]\nmin_version = \"1.3\"\n");
    assert_eq!(req(&rec, &cfg).min_version, Some(TlsVersion::Tls13));
    rec.tls_min = Some("1.3".into());
    assert_eq!(req(&rec, &config("")).min_version, Some(TlsVersion::Tls13));
}

#[test]
fn levels_none_may_encrypt_verify() {
    let level = |l: &str| {
        let cfg = config(&format!("[tls]\nlevel = \"{l}\"\n"));
        plan(decide(&req(&record(), &cfg), &facts(TlsaState::NotLooked)))
    };
    assert_eq!(level("none").starttls, StartTls::Never);
    let may = level("may");
    assert_eq!(may.starttls, StartTls::Opportunistic);
    assert!(may.plaintext_retry);
    let encrypt = level("encrypt");
    assert_eq!(encrypt.starttls, StartTls::Required);
    assert!(!encrypt.enforce && !encrypt.plaintext_retry);
    let verify = level("verify");
    assert!(verify.enforce && !verify.plaintext_retry);
    // REQUIRETLS is never weakened by level none.
    let mut rec = record();
    rec.requiretls = true;
    let cfg = config("[tls]\nlevel = \"none\"\n");
    let p = plan(decide(&req(&rec, &cfg), &facts(TlsaState::NotLooked)));
    assert_eq!(p.starttls, StartTls::Required);
    assert!(p.enforce);
}

#[test]
fn broken_validation_defers_only_mail_that_needs_dnssec() {
    let broken = Dnssec::Broken("root DNSKEY bogus".into());
    let mut f = facts(TlsaState::NotLooked);
    f.dnssec = &broken;
    f.mx_secure = false;
    assert!(matches!(
        decide(&req(&record(), &config("")), &f),
        HostDecision::Use(_)
    ));
    let mut rec = record();
    rec.requiretls = true;
    let d = refusal(decide(&req(&rec, &config("")), &f));
    assert!(!d.permanent, "deferred, not bounced: {d:?}");
    assert!(d.reason.contains("root DNSKEY bogus"), "{d:?}");
    // Switched off by the administrator: it can never be met.
    f.dnssec = &Dnssec::Off;
    assert!(refusal(decide(&req(&rec, &config("")), &f)).permanent);
    // A relayhost route does not need DNSSEC for REQUIRETLS (RFC 8689 §2).
    let cfg = config("relayhost = \"[relay.example.net]\"\n");
    let r = requirements(&rec, &cfg, "a@b.example", "example.org", true);
    f.relay_tls = Some(RelayTls::Starttls);
    f.dnssec = &broken;
    assert!(matches!(decide(&r, &f), HostDecision::Use(_)));
}

#[test]
fn relayhost_is_verified_and_uses_dane_when_it_has_secure_tlsa_rfc7672_section_2_2_2() {
    let cfg = config("relayhost = \"[relay.example.net]:587\"\n");
    let r = requirements(&record(), &cfg, "a@b.example", "example.org", true);
    assert!(wants_tlsa(&r, true, true));
    let mut f = facts(TlsaState::None);
    f.host = "relay.example.net";
    f.relay_tls = Some(RelayTls::Starttls);
    let p = plan(decide(&r, &f));
    assert_eq!(p.starttls, StartTls::Required);
    assert!(p.enforce);
    f.tlsa = TlsaState::Secure {
        base: "relay.example.net".into(),
        usable: vec![ee()],
    };
    f.relay_tls = Some(RelayTls::Implicit);
    let p = plan(decide(&r, &f));
    assert_eq!(p.starttls, StartTls::Implicit);
    assert!(matches!(p.authentication, Authentication::Dane { .. }));
}

#[test]
fn plaintext_relay_never_carries_requiretls_mail() {
    let cfg = config("relayhost = \"[relay.example.net]\"\nrelayhost_tls = \"none\"\n");
    let mut rec = record();
    let mut f = facts(TlsaState::NotLooked);
    f.relay_tls = Some(RelayTls::None);
    let r = requirements(&rec, &cfg, "a@b.example", "example.org", true);
    assert_eq!(plan(decide(&r, &f)).starttls, StartTls::Never);
    rec.requiretls = true;
    let r = requirements(&rec, &cfg, "a@b.example", "example.org", true);
    assert!(refusal(decide(&r, &f)).permanent);
}

#[test]
fn message_minimum_version_rules_out_plaintext_and_its_retry() {
    let mut rec = record();
    rec.tls_min = Some("1.3".into());
    let r = req(&rec, &config(""));
    assert!(r.tls_required);
    let p = plan(decide(&r, &facts(TlsaState::None)));
    assert_eq!(p.starttls, StartTls::Required);
    assert!(!p.plaintext_retry, "plaintext cannot meet a TLS minimum");
    assert_eq!(p.min_version, Some(TlsVersion::Tls13));
    let none = config("[tls]\nlevel = \"none\"\n");
    assert_eq!(
        plan(decide(&req(&rec, &none), &facts(TlsaState::NotLooked))).starttls,
        StartTls::Required
    );
    rec.tls_optional = true;
    let set_aside = plan(decide(&req(&rec, &config("")), &facts(secure_tlsa())));
    assert_eq!(set_aside.starttls, StartTls::Required);
    assert!(!set_aside.plaintext_retry);
}

#[test]
fn rule_minimum_version_requires_tls_and_destination_minimum_does_not() {
    let rule = config("[[rule]]\nrecipient_domain = \"example.org\"\ntls_min = \"1.2\"\n");
    let p = plan(decide(&req(&record(), &rule), &facts(TlsaState::None)));
    assert_eq!(p.starttls, StartTls::Required);
    assert!(!p.plaintext_retry);
    // The administrator's `min_version` applies when TLS is used.
    let level = config("[tls]\nlevel = \"may\"\nmin_version = \"1.3\"\n");
    let r = req(&record(), &level);
    assert!(!r.tls_required);
    let p = plan(decide(&r, &facts(TlsaState::NotLooked)));
    assert_eq!(p.starttls, StartTls::Opportunistic);
    assert!(p.plaintext_retry);
}

#[test]
fn plaintext_relayhost_refuses_a_message_with_a_tls_minimum() {
    let mut rec = record();
    rec.tls_min = Some("1.2".into());
    let r = requirements(&rec, &config(""), "a@sender.example", "example.org", true);
    let mut f = facts(TlsaState::NotLooked);
    f.relay_tls = Some(RelayTls::None);
    let refused = refusal(decide(&r, &f));
    assert_eq!(refused.status, "5.7.10");
    assert!(refused.permanent);
}

#[test]
fn published_tlsa_that_cannot_be_validated_defers_instead_of_dropping_dane_rfc7672_section_2_1_1() {
    let broken = Dnssec::Broken("root DNSKEY bogus".into());
    let mut f = facts(TlsaState::Unvalidated);
    f.dnssec = &broken;
    f.mx_secure = false;
    f.address_secure = false;
    let d = refusal(decide(&req(&record(), &config("")), &f));
    assert!(!d.permanent);
    assert!(d.reason.contains("TLSA"), "{d:?}");
    // TLS-Required: No sets the recipient's DANE policy aside.
    let mut rec = record();
    rec.tls_optional = true;
    assert!(matches!(
        decide(&req(&rec, &config("")), &f),
        HostDecision::Use(_)
    ));
}
