//! DANE tests: `usable()` filtering, the verifier called directly with
//! certificates made at run time, and real rustls handshakes over an
//! in-memory pipe.

use std::time::Duration;

use rcgen::PublicKeyData as _;
use ring::digest;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::smtp::tls::{dane_client_config, take_verdict, TlsVersion};

// ---------------------------------------------------------------------------
// Fixtures

/// 2026-06-01, inside the default rcgen validity (1975 to 4096).
fn now() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_780_272_000))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rec(usage: u8, selector: u8, matching: u8, data: impl Into<Vec<u8>>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data: data.into(),
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

fn sha512(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA512, data).as_ref().to_vec()
}

/// A certificate and its key. The SPKI comes from the key (rcgen), not from
/// parsing the certificate, so the verifier's extraction is checked
/// against an independent source.
struct Leaf {
    der: CertificateDer<'static>,
    key: rcgen::KeyPair,
}

impl Leaf {
    fn spki(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }
}

fn params(names: &[&str]) -> rcgen::CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    rcgen::CertificateParams::new(names).unwrap()
}

fn self_signed(names: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let der = params(names).self_signed(&key).unwrap().der().clone();
    Leaf { der, key }
}

/// A self-signed leaf that expired on 2000-01-01.
fn expired_self_signed(names: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(1999, 1, 1);
    p.not_after = rcgen::date_time_ymd(2000, 1, 1);
    let der = p.self_signed(&key).unwrap().der().clone();
    Leaf { der, key }
}

type Issuer = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut p = params(&[]);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p
}

fn root_ca() -> Issuer {
    Issuer::self_signed(ca_params("Test Root"), rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn intermediate_ca(root: &Issuer) -> Issuer {
    let key = rcgen::KeyPair::generate().unwrap();
    Issuer::signed_by(ca_params("Test Intermediate"), key, root).unwrap()
}

fn ca_spki(ca: &Issuer) -> Vec<u8> {
    ca.key().subject_public_key_info()
}

fn issued(issuer: &Issuer, names: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let der = params(names).signed_by(&key, issuer).unwrap().der().clone();
    Leaf { der, key }
}

fn expired_issued(issuer: &Issuer, names: &[&str]) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = params(names);
    p.not_before = rcgen::date_time_ymd(1999, 1, 1);
    p.not_after = rcgen::date_time_ymd(2000, 1, 1);
    let der = p.signed_by(&key, issuer).unwrap().der().clone();
    Leaf { der, key }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

/// Runs the verifier on a chain; returns whether rustls would accept it
/// and the recorded verdict.
fn verify(
    records: Vec<Tlsa>,
    reference: &[&str],
    enforce: bool,
    chain: &[CertificateDer<'static>],
    at: UnixTime,
) -> (Result<(), rustls::Error>, CertVerification) {
    let verifier = DaneVerifier::new(records, names(reference), provider(), enforce);
    let slot = verifier.slot();
    let sni = ServerName::try_from("sni.example.net").unwrap();
    let result = verifier
        .verify_server_cert(&chain[0], &chain[1..], &sni, &[], at)
        .map(|_| ());
    (result, take_verdict(&slot))
}

fn failed_with(verdict: &CertVerification, text: &str) -> bool {
    matches!(verdict, CertVerification::Failed(reason) if reason.contains(text))
}

// ---------------------------------------------------------------------------
// usable()

#[test]
fn usable_keeps_only_dane_usages_rfc7672_section_3_1_3() {
    let d = vec![7u8; 32];
    let records = vec![
        rec(0, 1, 1, d.clone()),
        rec(1, 1, 1, d.clone()),
        rec(2, 1, 1, d.clone()),
        rec(3, 1, 1, d.clone()),
        rec(4, 1, 1, d.clone()),
    ];
    assert_eq!(
        usable(&records),
        vec![rec(2, 1, 1, d.clone()), rec(3, 1, 1, d)]
    );
}

#[test]
fn usable_drops_unknown_parameters_and_bad_lengths_rfc6698_section_4_1() {
    let records = vec![
        rec(3, 2, 1, vec![1; 32]), // unknown selector
        rec(3, 1, 3, vec![1; 32]), // unknown matching type
        rec(3, 1, 1, vec![1; 31]), // short SHA-256
        rec(3, 1, 1, vec![1; 64]), // SHA-512 length under SHA-256
        rec(3, 0, 2, vec![1; 32]), // short SHA-512
        rec(3, 0, 0, Vec::new()),  // empty Full
        rec(3, 0, 0, vec![0x30]),  // non-empty Full: kept
        rec(2, 1, 1, vec![2; 32]), // good
        rec(2, 0, 2, vec![3; 64]), // good
    ];
    assert_eq!(
        usable(&records),
        vec![
            rec(3, 0, 0, vec![0x30]),
            rec(2, 1, 1, vec![2; 32]),
            rec(2, 0, 2, vec![3; 64]),
        ]
    );
}

#[test]
fn usable_keeps_full_and_strongest_digest_per_usage_and_selector_rfc7671_section_9() {
    let records = vec![
        rec(3, 1, 1, vec![1; 32]),
        rec(3, 1, 2, vec![2; 64]),
        rec(3, 1, 0, vec![0x30, 0]),
        rec(3, 0, 1, vec![4; 32]), // other selector: SHA-256 is its strongest
        rec(2, 1, 1, vec![5; 32]), // other usage: likewise
        rec(3, 1, 2, vec![6; 64]),
        rec(3, 1, 2, vec![2; 64]), // duplicate
    ];
    assert_eq!(
        usable(&records),
        vec![
            rec(3, 1, 2, vec![2; 64]),
            rec(3, 1, 0, vec![0x30, 0]),
            rec(3, 0, 1, vec![4; 32]),
            rec(2, 1, 1, vec![5; 32]),
            rec(3, 1, 2, vec![6; 64]),
        ]
    );
}

#[test]
fn usable_ignores_malformed_stronger_digest_rfc7671_section_9() {
    // A malformed SHA-512 record is unusable, so it cannot push out the
    // good SHA-256 one.
    let records = vec![rec(3, 1, 1, vec![1; 32]), rec(3, 1, 2, vec![2; 10])];
    assert_eq!(usable(&records), vec![rec(3, 1, 1, vec![1; 32])]);
}

// ---------------------------------------------------------------------------
// DANE-EE

#[test]
fn dane_ee_3_1_1_matches_leaf_spki_rfc7672_section_3_1_1() {
    let leaf = self_signed(&["mx.example.org"]);
    let records = vec![rec(3, 1, 1, sha256(&leaf.spki()))];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[test]
fn dane_ee_3_0_1_matches_whole_leaf_rfc7672_section_3_1_1() {
    let leaf = self_signed(&["mx.example.org"]);
    let records = vec![rec(3, 0, 1, sha256(&leaf.der))];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[test]
fn dane_ee_3_1_2_matches_leaf_spki_sha512_rfc7672_section_3_1_1() {
    let leaf = self_signed(&["mx.example.org"]);
    let records = vec![rec(3, 1, 2, sha512(&leaf.spki()))];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[test]
fn dane_ee_full_records_match_rfc6698_section_2_1_3() {
    let leaf = self_signed(&["mx.example.org"]);
    for record in [rec(3, 0, 0, leaf.der.to_vec()), rec(3, 1, 0, leaf.spki())] {
        let (result, verdict) = verify(
            vec![record],
            &[],
            true,
            std::slice::from_ref(&leaf.der),
            now(),
        );
        assert!(result.is_ok());
        assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
    }
}

#[test]
fn dane_ee_mismatch_fails_when_enforced_rfc7672_section_3_2() {
    let leaf = self_signed(&["mx.example.org"]);
    let other = self_signed(&["mx.example.org"]);
    let records = vec![
        rec(3, 1, 1, sha256(&other.spki())),
        rec(3, 0, 2, sha512(&other.der)),
    ];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert_eq!(
        result,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    );
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

#[test]
fn dane_ee_mismatch_recorded_but_accepted_without_enforcement_rfc8689_section_4_2_2() {
    let leaf = self_signed(&["mx.example.org"]);
    let records = vec![rec(3, 1, 1, vec![0; 32])];
    let (result, verdict) = verify(records, &["mx.example.org"], false, &[leaf.der], now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

#[test]
fn dane_ee_ignores_expiry_rfc7672_section_3_1_1() {
    let leaf = expired_self_signed(&["mx.example.org"]);
    let records = vec![rec(3, 1, 1, sha256(&leaf.spki()))];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[test]
fn dane_ee_ignores_names_rfc7672_section_3_1_1() {
    let leaf = self_signed(&["unrelated.example.net"]);
    let records = vec![rec(3, 1, 1, sha256(&leaf.spki()))];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[test]
fn dane_ee_compares_the_leaf_only_rfc7672_section_3_1_1() {
    // A DANE-EE record for the issuing CA does not authenticate the leaf.
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let records = vec![rec(3, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(result.is_err());
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

// ---------------------------------------------------------------------------
// DANE-TA

#[test]
fn dane_ta_2_1_1_issuing_ca_in_chain_rfc7672_section_3_1_2() {
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(result.is_ok(), "{verdict:?}");
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

#[test]
fn dane_ta_root_above_an_intermediate_rfc7672_section_3_1_2() {
    let root = root_ca();
    let intermediate = intermediate_ca(&root);
    let leaf = issued(&intermediate, &["mx.example.org"]);
    let records = vec![rec(2, 0, 1, sha256(root.der()))];
    let chain = [leaf.der, intermediate.der().clone(), root.der().clone()];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(result.is_ok(), "{verdict:?}");
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

#[test]
fn dane_ta_wrong_name_fails_rfc7672_section_3_2_2() {
    let ca = root_ca();
    let leaf = issued(&ca, &["other.example.net"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let reference = ["mx.example.org", "example.org"];
    let (result, verdict) = verify(records, &reference, true, &chain, now());
    assert!(result.is_err());
    assert_eq!(
        verdict,
        CertVerification::Failed(
            "DANE-TA: no reference name matched: mx.example.org, example.org".to_owned()
        )
    );
}

#[test]
fn dane_ta_any_reference_name_may_match_rfc7672_section_3_2_2() {
    // The leaf names the next-hop domain, not the MX host.
    let ca = root_ca();
    let leaf = issued(&ca, &["example.org"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let reference = ["mx.example.org", "example.org"];
    let (result, verdict) = verify(records, &reference, true, &chain, now());
    assert!(result.is_ok());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

#[test]
fn dane_ta_reference_names_tolerate_root_dot_and_case() {
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let (_, verdict) = verify(records, &["MX.Example.ORG."], true, &chain, now());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

#[test]
fn dane_ta_wildcard_left_most_label_only_rfc7672_section_3_2_3() {
    let ca = root_ca();
    let leaf = issued(&ca, &["*.example.org"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let one_label = verify(records.clone(), &["mx.example.org"], true, &chain, now());
    assert_eq!(one_label.1, CertVerification::Verified(AuthMethod::DaneTa));
    let two_labels = verify(records.clone(), &["a.mx.example.org"], true, &chain, now());
    assert!(failed_with(&two_labels.1, "no reference name matched"));
    let bare = verify(records, &["example.org"], true, &chain, now());
    assert!(failed_with(&bare.1, "no reference name matched"));
}

#[test]
fn dane_ta_not_presented_fails_rfc7672_section_3_1_2() {
    // The record names the issuing CA, but the server sends only its leaf.
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let records = vec![
        rec(2, 1, 1, sha256(&ca_spki(&ca))),
        rec(2, 0, 1, sha256(ca.der())),
    ];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_err());
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

#[test]
fn dane_ta_2_0_0_record_is_the_anchor_when_not_presented_rfc7672_section_3_1_2() {
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let records = vec![rec(2, 0, 0, ca.der().to_vec())];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &[leaf.der], now());
    assert!(result.is_ok(), "{verdict:?}");
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

#[test]
fn dane_ta_checks_dates_along_the_path_rfc7672_section_3_1_2() {
    let ca = root_ca();
    let leaf = expired_issued(&ca, &["mx.example.org"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(result.is_err());
    assert!(
        failed_with(&verdict, "DANE-TA: no valid path"),
        "{verdict:?}"
    );
}

#[test]
fn dane_ta_rejects_a_leaf_not_signed_by_the_anchor_rfc7672_section_3_1_2() {
    // The matching CA is presented, but the leaf was issued by another.
    let ca = root_ca();
    let other_ca = root_ca();
    let leaf = issued(&other_ca, &["mx.example.org"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let (result, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(result.is_err());
    assert!(
        failed_with(&verdict, "DANE-TA: no valid path"),
        "{verdict:?}"
    );
}

#[test]
fn dane_ta_failure_accepted_without_enforcement_rfc8689_section_4_2_2() {
    let ca = root_ca();
    let leaf = issued(&ca, &["other.example.net"]);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf.der, ca.der().clone()];
    let (result, verdict) = verify(records, &["mx.example.org"], false, &chain, now());
    assert!(result.is_ok());
    assert!(failed_with(&verdict, "no reference name matched"));
}

#[test]
fn dane_ee_record_does_not_serve_as_trust_anchor_rfc7672_section_3_1_1() {
    // `3 1 1` for the CA is not a DANE-TA record: the leaf it signed is
    // not authenticated by it.
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let records = vec![rec(3, 0, 1, sha256(ca.der()))];
    let chain = [leaf.der, ca.der().clone()];
    let (_, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

/// A leaf with no SAN and the given subject CN.
fn issued_cn_only(issuer: &Issuer, cn: &str) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = params(&[]);
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let der = p.signed_by(&key, issuer).unwrap().der().clone();
    Leaf { der, key }
}

#[test]
fn dane_ta_uses_cn_only_without_dns_ids_rfc7672_section_3_2_3() {
    let ca = root_ca();
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let cn_only = issued_cn_only(&ca, "mx.example.org");
    let chain = [cn_only.der, ca.der().clone()];
    let (_, verdict) = verify(records.clone(), &["mx.example.org"], true, &chain, now());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
    let (_, verdict) = verify(records.clone(), &["other.example.org"], true, &chain, now());
    assert!(failed_with(&verdict, "no reference name matched"));
}

#[test]
fn dane_ta_ignores_cn_when_dns_ids_exist_rfc7672_section_3_2_3() {
    let ca = root_ca();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = params(&["other.example.net"]);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "mx.example.org");
    let leaf = p.signed_by(&key, &ca).unwrap().der().clone();
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let chain = [leaf, ca.der().clone()];
    let (_, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(failed_with(&verdict, "no reference name matched"));
}

/// A root CA whose name constraints permit only `example.net`.
fn constrained_root_ca() -> Issuer {
    let mut p = ca_params("Constrained Root");
    p.name_constraints = Some(rcgen::NameConstraints {
        permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.net".to_owned())],
        excluded_subtrees: Vec::new(),
    });
    Issuer::self_signed(p, rcgen::KeyPair::generate().unwrap()).unwrap()
}

#[test]
fn dane_ta_cert_selector_applies_anchor_constraints_rfc7671_section_5_2() {
    let ca = constrained_root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let chain = [leaf.der, ca.der().clone()];
    let records = vec![rec(2, 0, 1, sha256(ca.der()))];
    let (_, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert!(
        failed_with(&verdict, "DANE-TA: no valid path"),
        "{verdict:?}"
    );
    // The same anchor matched by its key alone carries no constraints.
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let (_, verdict) = verify(records, &["mx.example.org"], true, &chain, now());
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

// ---------------------------------------------------------------------------
// Handshakes

fn server_config(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Runs a handshake against `server`; returns the client's result (with the
/// negotiated version) and the verdict.
async fn handshake(
    server: Arc<ServerConfig>,
    records: Vec<Tlsa>,
    reference: &[&str],
    enforce: bool,
    min_version: Option<TlsVersion>,
) -> (
    Result<rustls::ProtocolVersion, std::io::Error>,
    CertVerification,
) {
    let (client_io, server_io) = tokio::io::duplex(16 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move { acceptor.accept(server_io).await.map(|_| ()) });
    let (config, slot) = dane_client_config(records, names(reference), enforce, min_version)
        .expect("client configuration");
    let sni = ServerName::try_from("mx.example.org").unwrap();
    let result = TlsConnector::from(config)
        .connect(sni, client_io)
        .await
        .map(|tls| tls.get_ref().1.protocol_version().expect("negotiated"));
    // The server's outcome follows the client's; only the client matters.
    let _ = server_task.await;
    (result, take_verdict(&slot))
}

#[tokio::test]
async fn handshake_dane_ee_match_completes_rfc7672_section_3_1_1() {
    let leaf = self_signed(&["mx.example.org"]);
    let server = server_config(vec![leaf.der.clone()], &leaf.key);
    let records = vec![rec(3, 1, 1, sha256(&leaf.spki()))];
    let (result, verdict) = handshake(server, records, &["mx.example.org"], true, None).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[tokio::test]
async fn handshake_dane_ee_mismatch_fails_rfc7672_section_3_2() {
    let leaf = self_signed(&["mx.example.org"]);
    let server = server_config(vec![leaf.der.clone()], &leaf.key);
    let records = vec![rec(3, 1, 1, vec![0xab; 32])];
    let (result, verdict) = handshake(server, records, &["mx.example.org"], true, None).await;
    let err = result.expect_err("handshake must fail");
    assert!(
        err.to_string().contains("ApplicationVerificationFailure"),
        "{err}"
    );
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

#[tokio::test]
async fn handshake_dane_mismatch_completes_without_enforcement_rfc8689_section_4_2_2() {
    let leaf = self_signed(&["mx.example.org"]);
    let server = server_config(vec![leaf.der.clone()], &leaf.key);
    let records = vec![rec(3, 1, 1, vec![0xab; 32])];
    let (result, verdict) = handshake(server, records, &["mx.example.org"], false, None).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(verdict, CertVerification::Failed(NO_MATCH.to_owned()));
}

#[tokio::test]
async fn handshake_dane_ee_expired_leaf_completes_rfc7672_section_3_1_1() {
    let leaf = expired_self_signed(&["mx.example.org"]);
    let server = server_config(vec![leaf.der.clone()], &leaf.key);
    let records = vec![rec(3, 1, 1, sha256(&leaf.spki()))];
    let (result, verdict) = handshake(server, records, &["mx.example.org"], true, None).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneEe));
}

#[tokio::test]
async fn handshake_dane_ta_chain_completes_rfc7672_section_3_1_2() {
    let ca = root_ca();
    let leaf = issued(&ca, &["mx.example.org"]);
    let server = server_config(vec![leaf.der.clone(), ca.der().clone()], &leaf.key);
    let records = vec![rec(2, 1, 1, sha256(&ca_spki(&ca)))];
    let (result, verdict) = handshake(server, records, &["mx.example.org"], true, None).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(verdict, CertVerification::Verified(AuthMethod::DaneTa));
}

#[tokio::test]
async fn handshake_min_version_1_3_is_honoured_rfc9325_section_3_1() {
    let leaf = self_signed(&["mx.example.org"]);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
    let tls12_only = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    let tls12_only = Arc::new(tls12_only);
    let records = vec![rec(3, 1, 1, sha256(&leaf.spki()))];
    let (default_min, _) = handshake(
        tls12_only.clone(),
        records.clone(),
        &[],
        true,
        Some(TlsVersion::Tls12),
    )
    .await;
    assert_eq!(default_min.unwrap(), rustls::ProtocolVersion::TLSv1_2);
    let (tls13_min, _) = handshake(tls12_only, records, &[], true, Some(TlsVersion::Tls13)).await;
    assert!(tls13_min.is_err());
}
