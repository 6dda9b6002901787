//! The TLS policy engine end to end: the binary (`sendmail`, `queue run`,
//! `probe`) against a private DNSSEC-signed root and fake MX hosts on
//! loopback. Each test is named after the section of RFC 8689 (REQUIRETLS),
//! RFC 7672 (DANE for SMTP) or RFC 6698/7671 (TLSA) it checks.
//!
//! TLSA records sit at `_<port>._tcp.<host>`: the fake MX hosts listen on
//! the world's port, not 25, and the port is part of the TLSA name (RFC 7672
//! §2.2.3), so the zones are built once the port is known
//! ([`World::signed_with`]).
//!
//! What a test asserts on: the fake MX's recorded commands (no `MAIL` means
//! the message never left), `queue show ID` (the recipient's state, its
//! enhanced status and the recorded protection), and the one log line per
//! connection (`delivery attempt`) that `queue run` writes on stderr.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::certs::{self_signed_expired, sha256, CertifiedKey};
use support::world::{World, MX1, MX2, MX3};
use support::{self_signed, FakeMx, Output, SignedZones, TestCa};

/// How long a test waits for a fake MX to see something.
const WAIT: Duration = Duration::from_secs(10);

/// TLSA usages, selectors and matching types (RFC 6698 §2.1).
const PKIX_TA: u8 = 0;
const PKIX_EE: u8 = 1;
const DANE_TA: u8 = 2;
const DANE_EE: u8 = 3;
const CERT: u8 = 0;
const SPKI: u8 = 1;
const SHA256: u8 = 1;

/// Association data that matches no certificate.
const WRONG: [u8; 32] = [0xab; 32];

const SENDER: &str = "alice@sender.example";

fn message(to: &str) -> String {
    format!("From: {SENDER}\nTo: {to}\nSubject: policy\n\nHello.\n")
}

/// `_<port>._tcp.<host>`, where a host's TLSA records live.
fn tlsa_name(port: u16, host: &str) -> String {
    format!("_{port}._tcp.{host}")
}

/// `example` with MX 10 `mx1.example` (MX1) and, when `two`, MX 20
/// `mx2.example` (MX2), all in the signed root.
fn secure_domain(two: bool) -> SignedZones {
    let zones = SignedZones::new()
        .mx("example", 10, "mx1.example")
        .a("mx1.example", &MX1.to_string());
    if two {
        zones
            .mx("example", 20, "mx2.example")
            .a("mx2.example", &MX2.to_string())
    } else {
        zones
    }
}

/// An unsigned child zone `insecure`: MX 10 `mx.insecure` (MX3).
fn with_insecure_domain(zones: SignedZones) -> SignedZones {
    zones.insecure_child("insecure", |z| {
        z.mx("insecure", 10, "mx.insecure")
            .a("mx.insecure", &MX3.to_string())
    })
}

/// A fake MX on `ip` offering STARTTLS with `cert`.
fn mx_with(world: &World, ip: Ipv4Addr, name: &str, cert: CertifiedKey) -> support::FakeMxBuilder {
    world.plain_mx(ip, name).starttls(Some(cert))
}

/// Submits `message` with `sendmail -v -f SENDER <args>` and returns the
/// queue id it printed.
fn submit(world: &World, args: &[&str], message: &str) -> String {
    let mut all = vec!["-v", "-f", SENDER];
    all.extend_from_slice(args);
    let out = world.env.sendmail(&all, message.as_bytes());
    assert_eq!(out.status, 0, "sendmail failed: {}", out.stderr);
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix("sendmail: queued as "))
        .unwrap_or_else(|| panic!("no queue id in {:?}", out.stderr))
        .trim()
        .to_string()
}

/// `queue show --json ID`.
fn show(world: &World, id: &str) -> serde_json::Value {
    let out = world.env.run(&["queue", "show", "--json", id]);
    assert_eq!(out.status, 0, "queue show {id}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The first recipient's state in `queue show ID`.
fn recipient(world: &World, id: &str) -> serde_json::Value {
    show(world, id)["recipients"][0].clone()
}

/// The first recipient's status (`pending`, `delivered`, `failed`) and the
/// enhanced status code of its last attempt.
fn status(world: &World, id: &str) -> (String, String) {
    let r = recipient(world, id);
    (
        r["status"].as_str().unwrap_or_default().to_string(),
        r["last"]["status"].as_str().unwrap_or_default().to_string(),
    )
}

/// The log lines of one kind (`"delivery attempt"`, ...), in order.
fn log_lines<'a>(out: &'a Output, message: &str) -> Vec<&'a str> {
    let marker = format!(" {message} ");
    out.stderr
        .lines()
        .filter(|l| l.contains(&marker) || l.ends_with(&format!(" {message}")))
        .collect()
}

/// The value of `name=` in a log line, without quotes.
fn field(line: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        return Some(quoted[..end].to_string());
    }
    Some(
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The `MAIL` commands a fake MX received.
fn mail_commands(mx: &FakeMx) -> Vec<String> {
    mx.commands()
        .into_iter()
        .filter(|c| c.line.to_ascii_uppercase().starts_with("MAIL"))
        .map(|c| c.line)
        .collect()
}

/// Asserts that `mx` never got a `MAIL` command (nor, so, the message).
fn assert_no_mail(mx: &FakeMx, what: &str) {
    assert!(
        mail_commands(mx).is_empty() && mx.messages().is_empty(),
        "{what}: the message must not have been offered; commands: {:?}",
        mx.commands()
    );
}

// ---------------------------------------------------------------------------
// RFC 7672: DANE-EE
// ---------------------------------------------------------------------------

#[test]
fn dane_ee_match_is_delivered_rfc7672_section_3_1_1() {
    // Self-signed, so PKIX could not vouch for it: only DANE can.
    let cert = self_signed(&["mx1.example"]);
    let spki = sha256(&cert.spki_der);
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &spki,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", cert).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example"]);
    assert!(got[0].tls.is_some(), "delivered over TLS");
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(attempts.len(), 1, "{}", out.stderr);
    assert_eq!(
        field(attempts[0], "verification").as_deref(),
        Some("dane-ee")
    );
    assert_eq!(field(attempts[0], "mx_dnssec").as_deref(), Some("true"));
    assert_eq!(field(attempts[0], "policy").as_deref(), Some("dane"));
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    let protection = &r["last"]["protection"];
    assert_eq!(protection["verification"], "dane-ee", "{r}");
    assert_eq!(protection["mx_dnssec"], true, "{r}");
    assert_eq!(protection["policy"], "dane", "{r}");
    mx.assert_no_open_sessions(WAIT);
}

#[test]
fn dane_ee_mismatch_is_not_used_nor_retried_in_plaintext_rfc7672_section_3_2() {
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &WRONG,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"])).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    assert_no_mail(&mx, "TLSA does not match");
    assert!(mx.sessions() >= 1, "the host was tried: {}", out.stderr);
    assert_every_session_started_tls(&mx);
    let (state, code) = status(&world, &id);
    assert_eq!(state, "pending", "a DANE failure defers (RFC 7672 §2.2)");
    assert!(code.starts_with("4."), "{code}");
    assert!(world.mailq().contains("bob@example"));
    mx.assert_no_open_sessions(WAIT);
}

#[test]
fn dane_ee_mismatch_moves_on_to_the_next_mx_whose_tlsa_matches_rfc7672_section_2_2() {
    let good = self_signed(&["mx2.example"]);
    let spki = sha256(&good.spki_der);
    let world = World::signed_with("", |port, _| {
        secure_domain(true)
            .tlsa(
                &tlsa_name(port, "mx1.example"),
                DANE_EE,
                SPKI,
                SHA256,
                &WRONG,
            )
            .tlsa(
                &tlsa_name(port, "mx2.example"),
                DANE_EE,
                SPKI,
                SHA256,
                &spki,
            )
    });
    let mx1 = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"])).start();
    let mx2 = mx_with(&world, MX2, "mx2.example", good).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    let got = mx2.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example"]);
    assert!(mx1.sessions() >= 1, "the preferred host was tried first");
    assert_no_mail(&mx1, "TLSA of mx1 does not match");
    assert_every_session_started_tls(&mx1);
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["host"], "mx2.example", "{r}");
    assert_eq!(r["last"]["protection"]["verification"], "dane-ee", "{r}");
}

#[test]
fn dane_ee_ignores_certificate_dates_rfc7672_section_3_1_1() {
    // Expired, self-signed and for another name: DANE-EE looks at the key
    // alone (RFC 7671 §5.1).
    let cert = self_signed_expired(&["not-the-mx.invalid"]);
    let spki = sha256(&cert.spki_der);
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &spki,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", cert).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].tls.is_some());
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(
        field(attempts[0], "verification").as_deref(),
        Some("dane-ee")
    );
    assert_eq!(
        recipient(&world, &id)["last"]["protection"]["verification"],
        "dane-ee"
    );
}

/// Every session a fake MX had asked for STARTTLS before anything else
/// that matters: none went on in plaintext.
fn assert_every_session_started_tls(mx: &FakeMx) {
    let commands = mx.commands();
    for session in 0..mx.sessions() {
        let lines: Vec<&str> = commands
            .iter()
            .filter(|c| c.session == session && !c.tls)
            .map(|c| c.line.as_str())
            .collect();
        let plain_ok = lines.iter().all(|l| {
            let upper = l.to_ascii_uppercase();
            upper.starts_with("EHLO") || upper == "STARTTLS" || upper == "QUIT"
        });
        assert!(
            plain_ok && lines.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")),
            "session {session} went on without TLS: {lines:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// RFC 7672: DANE-TA
// ---------------------------------------------------------------------------

/// A world where `mx1.example` publishes `2 <selector> 1` for the test CA
/// and presents a CA-issued certificate for `names`.
fn dane_ta_world(selector: u8, names: &[&str]) -> (World, FakeMx) {
    let mut cert = None;
    let world = World::signed_with("", |port, ca: &TestCa| {
        cert = Some(ca.issue(names));
        let data = match selector {
            CERT => sha256(ca.ca_der.as_ref()),
            _ => sha256(&ca.ca_spki_der),
        };
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_TA,
            selector,
            SHA256,
            &data,
        )
    });
    let cert = cert.expect("the certificate was issued");
    let mx = mx_with(&world, MX1, "mx1.example", cert).start();
    (world, mx)
}

#[test]
fn dane_ta_with_the_tlsa_base_domain_as_name_rfc7672_section_3_2_2() {
    let (world, mx) = dane_ta_world(CERT, &["mx1.example"]);
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(
        field(attempts[0], "verification").as_deref(),
        Some("dane-ta")
    );
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["verification"], "dane-ta", "{r}");
}

#[test]
fn dane_ta_with_the_recipient_domain_as_name_rfc7672_section_3_2_2() {
    // The MX answer was secure, so the next-hop domain is a reference
    // identifier too.
    let (world, mx) = dane_ta_world(SPKI, &["example"]);
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    let r = recipient(&world, &id);
    assert_eq!(r["last"]["protection"]["verification"], "dane-ta", "{r}");
}

#[test]
fn dane_ta_with_names_matching_neither_is_not_used_rfc7672_section_3_2_2() {
    let (world, mx) = dane_ta_world(CERT, &["elsewhere.invalid"]);
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    assert!(mx.sessions() >= 1);
    assert_no_mail(&mx, "DANE-TA name check failed");
    assert_every_session_started_tls(&mx);
    assert_eq!(status(&world, &id).0, "pending");
}

// ---------------------------------------------------------------------------
// RFC 7672 §2.1.2: TLSA lookup failures
// ---------------------------------------------------------------------------

#[test]
fn tlsa_lookup_failure_skips_the_host_and_uses_the_next_rfc7672_section_2_1_2() {
    let world = World::signed_with("", |port, _| {
        secure_domain(true).servfail_for(&tlsa_name(port, "mx1.example"))
    });
    let mx1 = world.mx(MX1, "mx1.example").start();
    let mx2 = world.mx(MX2, "mx2.example").start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    mx2.wait_for_messages(1, WAIT);
    assert_eq!(mx1.sessions(), 0, "no connection to mx1: {}", out.stderr);
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["host"], "mx2.example", "{r}");
}

#[test]
fn tlsa_lookup_failure_of_the_only_host_defers_rfc7672_section_2_1_2() {
    let world = World::signed_with("", |port, _| {
        secure_domain(false).servfail_for(&tlsa_name(port, "mx1.example"))
    });
    let mx = world.mx(MX1, "mx1.example").start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0, "no connection: {}", out.stderr);
    let (state, code) = status(&world, &id);
    assert_eq!(state, "pending");
    assert!(code.starts_with("4."), "{code}");
    let detail = recipient(&world, &id)["last"]["detail"].to_string();
    assert!(detail.contains("TLSA"), "{detail}");
}

// ---------------------------------------------------------------------------
// RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) records are unusable
// ---------------------------------------------------------------------------

/// `mx1.example` publishes only PKIX-TA and PKIX-EE records.
fn pkix_only_tlsa(port: u16, ca: &TestCa) -> SignedZones {
    let name = tlsa_name(port, "mx1.example");
    secure_domain(false)
        .tlsa(&name, PKIX_TA, CERT, SHA256, &sha256(ca.ca_der.as_ref()))
        .tlsa(&name, PKIX_EE, SPKI, SHA256, &WRONG)
}

#[test]
fn pkix_usages_are_unusable_so_tls_without_authentication_rfc7672_section_3_1_3() {
    let world = World::signed_with("", pkix_only_tlsa);
    // Neither PKIX nor the records vouch for this certificate.
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["other.invalid"])).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].tls.is_some(), "encrypted");
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(
        field(attempts[0], "policy").as_deref(),
        Some("dane-unusable")
    );
    assert_eq!(field(attempts[0], "verification").as_deref(), Some("none"));
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["policy"], "dane-unusable", "{r}");
}

#[test]
fn secure_but_unusable_tlsa_still_makes_tls_mandatory_rfc7672_section_2_2() {
    let world = World::signed_with("", pkix_only_tlsa);
    let mx = world.plain_mx(MX1, "mx1.example").start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    assert_no_mail(&mx, "no STARTTLS with secure TLSA records");
    assert_eq!(status(&world, &id).0, "pending");
}

// ---------------------------------------------------------------------------
// RFC 8689 §4.2.1: REQUIRETLS
// ---------------------------------------------------------------------------

#[test]
fn requiretls_to_an_insecure_mx_fails_at_once_without_a_connection_rfc8689_section_4_2_1() {
    let world = World::signed(with_insecure_domain(SignedZones::new()), "");
    let mx = world.mx(MX3, "mx.insecure").requiretls().start();
    let long = submit(
        &world,
        &["--require-tls", "bob@insecure"],
        &message("bob@insecure"),
    );
    let postfix = submit(
        &world,
        &["-O", "requiretls=yes", "bob@insecure"],
        &message("bob@insecure"),
    );
    let out = world.queue_run(&["--id", &long, "--id", &postfix]);
    assert_eq!(mx.sessions(), 0, "no connection: {}", out.stderr);
    for id in [&long, &postfix] {
        let (state, code) = status(&world, id);
        assert_eq!(state, "failed", "{id}: {}", recipient(&world, id));
        assert_eq!(code, "5.7.10", "{id}");
        assert_eq!(show(&world, id)["envelope"]["security"]["requiretls"], true);
    }
    // The same domain takes normal mail (opportunistic TLS).
    let plain = submit(&world, &["bob@insecure"], &message("bob@insecure"));
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(!got[0].mail_params.iter().any(|p| p == "REQUIRETLS"));
    assert_eq!(mail_commands(&mx).len(), 1, "only the normal message");
    let r = recipient(&world, &plain);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["mx_dnssec"], false, "{r}");
}

#[test]
fn bogus_mx_defers_and_never_falls_back_to_an_implicit_mx_rfc7672_section_2_1_2() {
    let zones = SignedZones::new().bogus_child("bogus", |z| {
        // An address at the apex: what an implicit MX would use.
        z.mx("bogus", 10, "mx.bogus")
            .a("mx.bogus", &MX2.to_string())
            .a("bogus", &MX1.to_string())
    });
    let world = World::signed(zones, "");
    let mx1 = world.mx(MX1, "bogus").start();
    let mx2 = world.mx(MX2, "mx.bogus").start();
    let id = submit(&world, &["bob@bogus"], &message("bob@bogus"));
    let out = world.queue_run(&[]);
    assert_eq!(mx1.sessions() + mx2.sessions(), 0, "{}", out.stderr);
    let (state, code) = status(&world, &id);
    assert_eq!(state, "pending");
    assert_eq!(code, "4.4.3");
    let detail = recipient(&world, &id)["last"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        !detail.contains("no mx") && !detail.contains("implicit") && !detail.contains("not found"),
        "{detail}"
    );
    assert!(world.mailq().contains("pending"));
}

#[test]
fn requiretls_skips_a_receiver_without_requiretls_after_starttls_rfc8689_section_4_2_1() {
    let world = World::signed(secure_domain(true), "");
    let mx1 = world.mx(MX1, "mx1.example").start();
    let mx2 = world.mx(MX2, "mx2.example").requiretls().start();
    let id = submit(
        &world,
        &["--require-tls", "bob@example"],
        &message("bob@example"),
    );
    let out = world.queue_run(&[]);
    let got = mx2.wait_for_messages(1, WAIT);
    assert!(
        got[0].mail_params.iter().any(|p| p == "REQUIRETLS"),
        "{:?}",
        got[0].mail_params
    );
    let mail = mail_commands(&mx2);
    assert_eq!(mail.len(), 1);
    assert!(
        mail[0].starts_with(&format!("MAIL FROM:<{SENDER}>")) && mail[0].contains(" REQUIRETLS"),
        "{mail:?}"
    );
    // mx1 was asked first: STARTTLS, the second EHLO, then nothing.
    assert!(mx1.sessions() >= 1, "{}", out.stderr);
    assert!(mx1
        .commands()
        .iter()
        .any(|c| c.tls && c.line.starts_with("EHLO")));
    assert_no_mail(&mx1, "no REQUIRETLS after STARTTLS");
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["host"], "mx2.example", "{r}");
    assert_eq!(r["last"]["protection"]["requiretls"], true, "{r}");
    assert_eq!(r["last"]["protection"]["verification"], "pkix", "{r}");
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(
        field(attempts.last().unwrap(), "requiretls").as_deref(),
        Some("true")
    );
}

#[test]
fn requiretls_fails_with_5_7_30_when_no_mx_offers_it_rfc8689_section_4_2_1() {
    let world = World::signed(secure_domain(true), "");
    let mx1 = world.mx(MX1, "mx1.example").start();
    let mx2 = world.mx(MX2, "mx2.example").start();
    let id = submit(
        &world,
        &["--require-tls", "bob@example"],
        &message("bob@example"),
    );
    let out = world.queue_run(&[]);
    for (mx, name) in [(&mx1, "mx1"), (&mx2, "mx2")] {
        assert!(mx.sessions() >= 1, "{name} was tried: {}", out.stderr);
        assert_no_mail(mx, name);
    }
    let (state, code) = status(&world, &id);
    assert_eq!(state, "failed", "{}", recipient(&world, &id));
    assert_eq!(code, "5.7.30");
}

#[test]
fn requiretls_never_goes_in_plaintext_when_starttls_is_missing_rfc8689_section_8_1() {
    // A man in the middle that strips STARTTLS looks like this server.
    let world = World::signed(secure_domain(false), "");
    let mx = world.plain_mx(MX1, "mx1.example").requiretls().start();
    let id = submit(
        &world,
        &["--require-tls", "bob@example"],
        &message("bob@example"),
    );
    world.queue_run(&[]);
    assert!(mx.sessions() >= 1);
    assert_no_mail(&mx, "REQUIRETLS without STARTTLS");
    let (state, code) = status(&world, &id);
    assert_ne!(state, "delivered");
    assert!(code.ends_with(".7.10"), "{code}");
}

#[test]
fn dane_protected_mail_never_goes_in_plaintext_when_starttls_is_missing_rfc7672_section_2_2() {
    let cert = self_signed(&["mx1.example"]);
    let spki = sha256(&cert.spki_der);
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &spki,
        )
    });
    let mx = world.plain_mx(MX1, "mx1.example").start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    assert!(mx.sessions() >= 1);
    assert_no_mail(&mx, "usable TLSA, no STARTTLS");
    assert_eq!(status(&world, &id).0, "pending");
}

// ---------------------------------------------------------------------------
// RFC 8689 §4.2.2: TLS-Required: No
// ---------------------------------------------------------------------------

#[test]
fn tls_required_no_sets_a_failing_tlsa_aside_rfc8689_section_4_2_2() {
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &WRONG,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"])).start();
    let text = format!("TLS-Required: No\n{}", message("bob@example"));
    let id = submit(&world, &["bob@example"], &text);
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(
        got[0].data_str().contains("TLS-Required: No\r\n"),
        "the header is kept (RFC 8689 §4.1): {}",
        got[0].data_str()
    );
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["tls_required_no"], true, "{r}");
    assert_ne!(r["last"]["protection"]["verification"], "dane-ee", "{r}");
    assert!(out.stderr.contains("TLS-Required: No"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------
// Per-message options (beyond RFC 8689)
// ---------------------------------------------------------------------------

#[test]
fn tls_verify_pkix_checks_the_mx_name_against_trusted_roots_rfc8689_section_4_2_1() {
    let world = World::signed(secure_domain(false), "");
    let mx = world.mx(MX1, "mx1.example").start();
    let id = submit(
        &world,
        &["--tls-verify=pkix", "bob@example"],
        &message("bob@example"),
    );
    let out = world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(field(attempts[0], "verification").as_deref(), Some("pkix"));
    assert_eq!(field(attempts[0], "policy").as_deref(), Some("pkix"));
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["verification"], "pkix", "{r}");
}

#[test]
fn tls_verify_pkix_refuses_an_untrusted_certificate() {
    let world = World::signed(secure_domain(false), "");
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"])).start();
    let id = submit(
        &world,
        &["--tls-verify=pkix", "bob@example"],
        &message("bob@example"),
    );
    world.queue_run(&[]);
    assert_no_mail(&mx, "PKIX required, self-signed certificate");
    assert_every_session_started_tls(&mx);
    assert_eq!(status(&world, &id).0, "pending");
}

#[test]
fn tls_verify_dane_to_a_host_without_tlsa_defers_rfc7672_section_2_2() {
    let world = World::signed(secure_domain(false), "");
    let mx = world.mx(MX1, "mx1.example").start();
    let id = submit(
        &world,
        &["--tls-verify=dane", "bob@example"],
        &message("bob@example"),
    );
    let out = world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0, "no connection: {}", out.stderr);
    let (state, code) = status(&world, &id);
    assert_eq!(state, "pending");
    assert!(code.starts_with("4."), "{code}");
}

#[test]
fn tls_min_1_3_is_recorded_and_used_rfc9325_section_3_1_1() {
    let world = World::signed(secure_domain(false), "");
    let mx = world.mx(MX1, "mx1.example").start();
    let id = submit(
        &world,
        &["--tls-min=1.3", "bob@example"],
        &message("bob@example"),
    );
    // Before the run the message waits in the maildrop.
    let waiting = show(&world, &id);
    assert_eq!(waiting["state"], "waiting in the maildrop for pickup");
    assert_eq!(waiting["envelope"]["security"]["tls_min"], "1.3");
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].tls.as_deref(), Some("TLSv1_3"));
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(field(attempts[0], "tls").as_deref(), Some("TLSv1.3"));
    let r = recipient(&world, &id);
    assert_eq!(r["last"]["tls"]["version"], "TLSv1.3", "{r}");
    assert_eq!(show(&world, &id)["envelope"]["security"]["tls_min"], "1.3");
}

#[test]
fn tls_min_1_3_refuses_a_tls_1_2_server_rfc9325_section_3_1_1() {
    let world = World::signed(secure_domain(false), "");
    let mx = world.mx(MX1, "mx1.example").tls12_only().start();
    let id = submit(
        &world,
        &["--tls-min=1.3", "bob@example"],
        &message("bob@example"),
    );
    world.queue_run(&[]);
    assert!(mx.sessions() >= 1);
    assert_no_mail(&mx, "TLS 1.2 only, 1.3 required");
    assert_eq!(status(&world, &id).0, "pending");
    // Without the option the same server takes the message over TLS 1.2.
    submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&["--all"]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1, "only the message without the option");
    assert_eq!(got[0].tls.as_deref(), Some("TLSv1_2"));
}

#[test]
fn require_dnssec_to_an_insecure_mx_fails_without_a_connection() {
    let world = World::signed(with_insecure_domain(SignedZones::new()), "");
    let mx = world.mx(MX3, "mx.insecure").start();
    let id = submit(
        &world,
        &["--require-dnssec", "bob@insecure"],
        &message("bob@insecure"),
    );
    let out = world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0, "{}", out.stderr);
    let (state, code) = status(&world, &id);
    assert_eq!(state, "failed", "{}", recipient(&world, &id));
    assert_eq!(code, "5.7.10");
}

// ---------------------------------------------------------------------------
// The administrator's rules and levels
// ---------------------------------------------------------------------------

#[test]
fn rule_for_a_recipient_domain_makes_plain_mail_requiretls_rfc8689_section_4_2_1() {
    let world = World::signed(secure_domain(false), "");
    world.append_config("[[rule]]\nrecipient_domain = \"example\"\nrequiretls = true");
    let mx = world.mx(MX1, "mx1.example").requiretls().start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(
        got[0].mail_params.iter().any(|p| p == "REQUIRETLS"),
        "{:?}",
        mail_commands(&mx)
    );
    let r = recipient(&world, &id);
    assert_eq!(r["last"]["protection"]["requiretls"], true, "{r}");
}

#[test]
fn rule_for_another_domain_leaves_mail_alone() {
    let world = World::signed(secure_domain(false), "");
    world.append_config("[[rule]]\nrecipient_domain = \"elsewhere.example\"\nrequiretls = true");
    let mx = world.mx(MX1, "mx1.example").requiretls().start();
    submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(!got[0].mail_params.iter().any(|p| p == "REQUIRETLS"));
}

#[test]
fn level_dane_only_without_tlsa_defers_rfc7672_section_2_2() {
    let world = World::signed(secure_domain(false), "");
    world.add_to_table("tls.domain.\"example\"", "level = \"dane-only\"");
    let mx = world.mx(MX1, "mx1.example").start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    let out = world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0, "{}", out.stderr);
    let (state, code) = status(&world, &id);
    assert_eq!(state, "pending");
    assert!(code.starts_with("4."), "{code}");
}

#[test]
fn level_verify_with_an_untrusted_certificate_defers() {
    let world = World::signed(secure_domain(false), "");
    world.add_to_table("tls.domain.\"example\"", "level = \"verify\"");
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"])).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    assert!(mx.sessions() >= 1);
    assert_no_mail(&mx, "level verify, untrusted certificate");
    assert_every_session_started_tls(&mx);
    assert_eq!(status(&world, &id).0, "pending");
}

// ---------------------------------------------------------------------------
// `smarthost probe`
// ---------------------------------------------------------------------------

/// `smarthost probe <args>`: exit status and standard output.
fn probe(world: &World, args: &[&str]) -> (i32, String) {
    let mut all = vec!["probe"];
    all.extend_from_slice(args);
    let out = world.env.run(&all);
    (out.status, format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn probe_explains_a_dane_ee_match_rfc7672_section_3_1_1() {
    let cert = self_signed(&["mx1.example"]);
    let spki = sha256(&cert.spki_der);
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &spki,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", cert).start();
    let (code, text) = probe(&world, &["example"]);
    assert_eq!(code, 0, "{text}");
    for expected in [
        "DNSSEC secure",
        "secure, usable: 3 1 1",
        "DANE must match",
        "dane-ee",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert_no_mail(&mx, "a probe sends no mail");
}

#[test]
fn probe_require_tls_explains_an_insecure_mx_rfc8689_section_4_2_1() {
    let world = World::signed(with_insecure_domain(SignedZones::new()), "");
    let mx = world.mx(MX3, "mx.insecure").requiretls().start();
    let (code, text) = probe(&world, &["insecure", "--require-tls"]);
    assert_eq!(code, 1, "{text}");
    for expected in ["not DNSSEC-validated", "5.7.10"] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert_eq!(mx.sessions(), 0, "no connection for the REQUIRETLS probe");
    let (code, text) = probe(&world, &["insecure"]);
    assert_eq!(code, 0, "normal mail goes: {text}");
}

#[test]
fn probe_of_a_bogus_mx_is_a_temporary_dns_failure_rfc7672_section_2_1_2() {
    let zones = SignedZones::new().bogus_child("bogus", |z| {
        z.mx("bogus", 10, "mx.bogus")
            .a("mx.bogus", &MX2.to_string())
    });
    let world = World::signed(zones, "");
    let mx = world.mx(MX2, "mx.bogus").start();
    let (code, text) = probe(&world, &["bogus"]);
    assert_eq!(code, 75, "{text}");
    assert!(text.to_ascii_lowercase().contains("bogus"), "{text}");
    assert!(!text.contains("implicit MX"), "{text}");
    assert_eq!(mx.sessions(), 0);
}

#[test]
fn probe_require_tls_explains_a_missing_requiretls_rfc8689_section_4_2_1() {
    let world = World::signed(secure_domain(true), "");
    let mx1 = world.mx(MX1, "mx1.example").start();
    let mx2 = world.mx(MX2, "mx2.example").start();
    let (code, text) = probe(&world, &["example", "--require-tls"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("PKIX must verify"), "{text}");
    assert!(text.contains("5.7.30"), "{text}");
    assert!(
        mx1.sessions() >= 1 && mx2.sessions() >= 1,
        "both were asked"
    );
    assert_no_mail(&mx1, "probe");
    assert_no_mail(&mx2, "probe");
}

#[test]
fn probe_require_tls_finds_the_mx_that_offers_it_rfc8689_section_4_2_1() {
    let world = World::signed(secure_domain(true), "");
    let _mx1 = world.mx(MX1, "mx1.example").start();
    let _mx2 = world.mx(MX2, "mx2.example").requiretls().start();
    let (code, text) = probe(&world, &["example", "--require-tls"]);
    assert_eq!(code, 0, "mx2 offers REQUIRETLS: {text}");
    assert!(text.contains("5.7.30"), "mx1 is explained: {text}");
    assert!(text.contains("REQUIRETLS offered; would deliver"), "{text}");
}

// ---------------------------------------------------------------------------
// Where DANE applies (RFC 7672 §2.2.1, §2.2.2, §2.2.3)
// ---------------------------------------------------------------------------

#[test]
fn tlsa_in_an_insecure_zone_is_ignored_rfc7672_section_2_2_1() {
    // The MX and its TLSA are insecure: pre-DANE opportunistic TLS, so a
    // record that matches nothing does not hold the message back.
    let world = World::signed_with("", |port, _| {
        SignedZones::new().insecure_child("insecure", |z| {
            z.mx("insecure", 10, "mx.insecure")
                .a("mx.insecure", &MX3.to_string())
                .tlsa(
                    &tlsa_name(port, "mx.insecure"),
                    DANE_EE,
                    SPKI,
                    SHA256,
                    &WRONG,
                )
        })
    });
    let mx = mx_with(&world, MX3, "mx.insecure", self_signed(&["mx.insecure"])).start();
    let id = submit(&world, &["bob@insecure"], &message("bob@insecure"));
    let out = world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(
        field(attempts[0], "policy").as_deref(),
        Some("opportunistic")
    );
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["mx_dnssec"], false, "{r}");
    assert_eq!(r["last"]["protection"]["verification"], "none", "{r}");
}

#[test]
fn secure_mx_with_an_insecure_address_gets_no_dane_rfc7672_section_2_2_2() {
    // `mx.insecure` is named by a secure MX RRset, but its address answer
    // is insecure: no TLSA lookup, opportunistic TLS.
    let world = World::signed_with("", |port, _| {
        SignedZones::new()
            .mx("example", 10, "mx.insecure")
            .insecure_child("insecure", |z| {
                z.a("mx.insecure", &MX3.to_string()).tlsa(
                    &tlsa_name(port, "mx.insecure"),
                    DANE_EE,
                    SPKI,
                    SHA256,
                    &WRONG,
                )
            })
    });
    let mx = mx_with(&world, MX3, "mx.insecure", self_signed(&["mx.insecure"])).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    let r = recipient(&world, &id);
    assert_eq!(r["status"], "delivered", "{r}");
    assert_eq!(r["last"]["protection"]["mx_dnssec"], true, "{r}");
    assert_ne!(r["last"]["protection"]["policy"], "dane", "{r}");
}

#[test]
fn tlsa_base_domain_is_the_secure_cname_target_rfc7672_section_2_2_3() {
    // mx1.example is a CNAME for real.example; the TLSA records and the
    // DANE-TA certificate name are those of the target.
    let mut cert = None;
    let world = World::signed_with("", |port, ca: &TestCa| {
        cert = Some(ca.issue(&["real.example"]));
        SignedZones::new()
            .mx("example", 10, "mx1.example")
            .cname("mx1.example", "real.example")
            .a("real.example", &MX1.to_string())
            .tlsa(
                &tlsa_name(port, "real.example"),
                DANE_TA,
                SPKI,
                SHA256,
                &sha256(&ca.ca_spki_der),
            )
    });
    let mx = mx_with(&world, MX1, "real.example", cert.expect("issued")).start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    let r = recipient(&world, &id);
    assert_eq!(r["last"]["protection"]["verification"], "dane-ta", "{r}");
}

#[test]
fn bogus_address_of_the_only_mx_defers_rfc7672_section_2_1_2() {
    let zones = SignedZones::new()
        .mx("example", 10, "mx.bogus")
        .bogus_child("bogus", |z| z.a("mx.bogus", &MX2.to_string()));
    let world = World::signed(zones, "");
    let mx = world.mx(MX2, "mx.bogus").start();
    let id = submit(&world, &["bob@example"], &message("bob@example"));
    world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0);
    assert_eq!(status(&world, &id), ("pending".into(), "4.4.3".into()));
    let (code, text) = probe(&world, &["example"]);
    assert_eq!(code, 75, "{text}");
}

// ---------------------------------------------------------------------------
// REQUIRETLS together with DANE, implicit MX and `TLS-Required: No`
// ---------------------------------------------------------------------------

#[test]
fn requiretls_with_a_dane_ee_match_rfc8689_section_4_2_1() {
    let cert = self_signed(&["mx1.example"]);
    let spki = sha256(&cert.spki_der);
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &spki,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", cert)
        .requiretls()
        .start();
    let id = submit(
        &world,
        &["--require-tls", "bob@example"],
        &message("bob@example"),
    );
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].mail_params.iter().any(|p| p == "REQUIRETLS"));
    let protection = &recipient(&world, &id)["last"]["protection"];
    assert_eq!(protection["verification"], "dane-ee");
    assert_eq!(protection["requiretls"], true);
}

#[test]
fn requiretls_with_unusable_tlsa_still_needs_pkix_rfc8689_section_4_2_1() {
    let world = World::signed_with("", pkix_only_tlsa);
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"]))
        .requiretls()
        .start();
    let id = submit(
        &world,
        &["--require-tls", "bob@example"],
        &message("bob@example"),
    );
    world.queue_run(&[]);
    assert_no_mail(&mx, "REQUIRETLS, unusable TLSA, untrusted certificate");
    assert_ne!(status(&world, &id).0, "delivered");
}

#[test]
fn requiretls_to_a_secure_implicit_mx_checks_the_recipient_domain_rfc8689_section_4_2_1() {
    let world = World::signed(
        SignedZones::new().a("implicit.example", &MX1.to_string()),
        "",
    );
    let mx = world.mx(MX1, "implicit.example").requiretls().start();
    let id = submit(
        &world,
        &["--require-tls", "bob@implicit.example"],
        &message("bob@implicit.example"),
    );
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].mail_params.iter().any(|p| p == "REQUIRETLS"));
    let protection = &recipient(&world, &id)["last"]["protection"];
    assert_eq!(protection["verification"], "pkix");
    assert_eq!(protection["mx_dnssec"], true);
}

#[test]
fn requiretls_overrides_tls_required_no_rfc8689_section_4_1() {
    let world = World::signed_with("", |port, _| {
        secure_domain(false).tlsa(
            &tlsa_name(port, "mx1.example"),
            DANE_EE,
            SPKI,
            SHA256,
            &WRONG,
        )
    });
    let mx = mx_with(&world, MX1, "mx1.example", self_signed(&["mx1.example"]))
        .requiretls()
        .start();
    let text = format!("TLS-Required: No\n{}", message("bob@example"));
    let id = submit(&world, &["--require-tls", "bob@example"], &text);
    world.queue_run(&[]);
    assert_no_mail(&mx, "REQUIRETLS wins over the header");
    assert_eq!(status(&world, &id).0, "pending");
}
