//! DNSSEC-aware routing against a private signed root served on loopback:
//! which answers are secure, which insecure, and which are failures.
//!
//! Each test starts its own [`SignedDns`] (a fresh root key) and drives
//! `smarthost::routing::Router` directly, configured as a user would: the
//! server in `[dns] nameservers` and its root key in `[dns] trust_anchor`.
//! The last tests run the binary in a [`World::signed`].

mod support;

use std::net::IpAddr;
use std::path::Path;

use smarthost::config::{Config, IpFamily};
use smarthost::policy::tlsa::Tlsa;
use smarthost::routing::{RouteError, Router, Security};
use support::env::toml_string;
use support::world::{World, MX1, MX2};
use support::{SignedDns, SignedZones};

/// The association data of every test TLSA record (a made-up SHA-256).
const TLSA_DATA: [u8; 32] = [0xab; 32];

/// The test zones.
///
/// Signed root: `example` MX 10 `mx.example` (A, AAAA, TLSA 3 1 1);
/// `implicit.example` A only; `alias.example` CNAME `mx.example`;
/// `_25._tcp.alias-tlsa.example` CNAME `_25._tcp.mx.example`;
/// `notlsa.example` A only; `broken.example` SERVFAIL; `tlsafail.example`
/// A, with its TLSA name SERVFAIL; `toinsecure.example` CNAME
/// `mx.insecure`; `tobogus.example` CNAME `mx.bogus`.
///
/// Unsigned child `insecure` and bogus child `bogus`, each with MX, A and
/// TLSA like `example`; in `insecure` also `alias.insecure` CNAME
/// `mx.example` and `_25._tcp.alias.insecure` CNAME
/// `_25._tcp.notlsa.example` (a secure NXDOMAIN).
fn zones() -> SignedZones {
    SignedZones::new()
        .mx("example", 10, "mx.example")
        .a("mx.example", "127.0.0.10")
        .aaaa("mx.example", "::1")
        .tlsa("_25._tcp.mx.example", 3, 1, 1, &TLSA_DATA)
        .a("implicit.example", "127.0.0.10")
        .cname("alias.example", "mx.example")
        .cname("_25._tcp.alias-tlsa.example", "_25._tcp.mx.example")
        .a("notlsa.example", "127.0.0.12")
        .mx("broken.example", 10, "mx.example")
        .servfail_for("broken.example")
        .a("tlsafail.example", "127.0.0.13")
        .servfail_for("_25._tcp.tlsafail.example")
        .cname("toinsecure.example", "mx.insecure")
        .cname("tobogus.example", "mx.bogus")
        .insecure_child("insecure", |z| {
            z.mx("insecure", 10, "mx.insecure")
                .a("mx.insecure", "127.0.0.11")
                .tlsa("_25._tcp.mx.insecure", 3, 1, 1, &TLSA_DATA)
                .cname("alias.insecure", "mx.example")
                .cname("_25._tcp.alias.insecure", "_25._tcp.notlsa.example")
        })
        .bogus_child("bogus", |z| {
            z.mx("bogus", 10, "mx.bogus")
                .a("mx.bogus", "127.0.0.14")
                .tlsa("_25._tcp.mx.bogus", 3, 1, 1, &TLSA_DATA)
        })
}

/// A signed server for [`zones`] and a directory for its trust anchor.
struct Signed {
    dns: SignedDns,
    dir: tempfile::TempDir,
}

impl Signed {
    fn start() -> Self {
        Self {
            dns: SignedDns::start(zones()),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// A router that trusts the server's root key.
    fn router(&self) -> Router {
        let anchor = self.dns.trust_anchor_file(self.dir.path());
        self.router_with(&format!("trust_anchor = {}", path_value(&anchor)))
    }

    /// A router with extra `[dns]` lines.
    fn router_with(&self, dns_lines: &str) -> Router {
        let text = format!(
            "[dns]\nnameservers = [\"{}\"]\n{dns_lines}\n",
            self.dns.addr()
        );
        let config = Config::from_toml(&text, None).expect("test configuration");
        Router::new(&config).expect("router")
    }
}

fn path_value(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}

fn expect_bogus<T: std::fmt::Debug>(result: Result<T, RouteError>, what: &str) {
    match result {
        Err(e @ RouteError::Bogus { .. }) => {
            assert!(!e.is_permanent(), "{what}: bogus must defer, not bounce");
            assert_eq!(e.status(), "4.4.3", "{what}");
        }
        other => panic!("{what}: expected a Bogus error, got {other:?}"),
    }
}

#[tokio::test]
async fn secure_mx_rrset_rfc7672_section_2_2_1() {
    let w = Signed::start();
    let mx = w.router().mx_hosts("example").await.unwrap();
    assert_eq!(mx.security, Security::Secure);
    assert_eq!(mx.hosts.len(), 1);
    assert_eq!(mx.hosts[0].name, "mx.example");
    assert!(!mx.hosts[0].implicit);
}

#[tokio::test]
async fn secure_addresses_aaaa_and_a_rfc7672_section_2_2_2() {
    let w = Signed::start();
    let router = w.router();
    let a = router.addresses("mx.example", IpFamily::Any).await.unwrap();
    assert_eq!(a.security, Security::Secure);
    assert_eq!(
        a.ips,
        vec![
            "::1".parse::<IpAddr>().unwrap(),
            "127.0.0.10".parse().unwrap()
        ]
    );
    assert_eq!(a.canonical, "mx.example");
    let v4 = router
        .addresses("mx.example", IpFamily::Ipv4)
        .await
        .unwrap();
    assert_eq!(v4.ips, vec!["127.0.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(v4.security, Security::Secure);
}

#[tokio::test]
async fn secure_tlsa_rrset_rfc7672_section_2_2_3() {
    let w = Signed::start();
    let tlsa = w.router().tlsa("mx.example", 25).await.unwrap();
    assert_eq!(tlsa.security, Security::Secure);
    assert_eq!(
        tlsa.records,
        vec![Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: TLSA_DATA.to_vec(),
        }]
    );
}

#[tokio::test]
async fn tlsa_port_is_part_of_the_name_rfc7672_section_2_2_3() {
    let w = Signed::start();
    let tlsa = w.router().tlsa("mx.example", 587).await.unwrap();
    assert!(tlsa.records.is_empty(), "{tlsa:?}");
    assert_eq!(tlsa.security, Security::Secure);
}

#[tokio::test]
async fn secure_nxdomain_for_tlsa_is_no_records_rfc7672_section_2_1_1() {
    let w = Signed::start();
    let tlsa = w.router().tlsa("notlsa.example", 25).await.unwrap();
    assert!(tlsa.records.is_empty());
    assert_eq!(tlsa.security, Security::Secure);
}

#[tokio::test]
async fn implicit_mx_carries_the_security_of_the_nodata_proof_rfc5321_section_5_1() {
    let w = Signed::start();
    let mx = w.router().mx_hosts("implicit.example").await.unwrap();
    assert_eq!(mx.hosts.len(), 1);
    assert!(mx.hosts[0].implicit);
    assert_eq!(mx.hosts[0].name, "implicit.example");
    assert_eq!(mx.security, Security::Secure);
}

#[tokio::test]
async fn secure_nxdomain_for_mx_is_not_found_rfc7672_section_2_1_1() {
    let w = Signed::start();
    let e = w.router().mx_hosts("nowhere.example").await.unwrap_err();
    assert!(matches!(e, RouteError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn unsigned_child_zone_is_insecure_rfc4035_section_5_2() {
    let w = Signed::start();
    let router = w.router();
    let mx = router.mx_hosts("insecure").await.unwrap();
    assert_eq!(mx.security, Security::Insecure);
    assert_eq!(mx.hosts[0].name, "mx.insecure");
    let a = router
        .addresses("mx.insecure", IpFamily::Any)
        .await
        .unwrap();
    assert_eq!(a.security, Security::Insecure);
    assert_eq!(a.ips, vec!["127.0.0.11".parse::<IpAddr>().unwrap()]);
    let tlsa = router.tlsa("mx.insecure", 25).await.unwrap();
    assert_eq!(tlsa.security, Security::Insecure);
    assert_eq!(tlsa.records.len(), 1);
    // An insecure denial is still "no records", just not a secure one.
    let none = router.tlsa("nothing.insecure", 25).await.unwrap();
    assert!(none.records.is_empty());
    assert_eq!(none.security, Security::Insecure);
}

#[tokio::test]
async fn bogus_mx_is_a_failure_not_no_records_rfc7672_section_2_1_1() {
    let w = Signed::start();
    let router = w.router();
    expect_bogus(router.mx_hosts("bogus").await, "MX");
    expect_bogus(router.addresses("mx.bogus", IpFamily::Any).await, "A/AAAA");
    expect_bogus(router.tlsa("mx.bogus", 25).await, "TLSA");
    // A denial from the bogus zone is no proof either.
    expect_bogus(router.tlsa("nothing.bogus", 25).await, "TLSA denial");
}

#[tokio::test]
async fn servfail_is_a_temporary_failure_rfc7672_section_2_1_1() {
    let w = Signed::start();
    let router = w.router();
    let e = router.mx_hosts("broken.example").await.unwrap_err();
    assert!(matches!(e, RouteError::Temporary { .. }), "{e:?}");
    assert!(!e.is_permanent());
    // The host's addresses are fine; only its TLSA lookup fails, and that
    // must not read as "no TLSA records" (RFC 7672 §2.1.2).
    let a = router
        .addresses("tlsafail.example", IpFamily::Any)
        .await
        .unwrap();
    assert_eq!(a.security, Security::Secure);
    let e = router.tlsa("tlsafail.example", 25).await.unwrap_err();
    assert!(
        matches!(e, RouteError::Temporary { rtype: "TLSA", .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn cname_to_a_secure_target_gives_the_canonical_name_rfc7672_section_2_2_2() {
    let w = Signed::start();
    let router = w.router();
    let a = router
        .addresses("alias.example", IpFamily::Ipv4)
        .await
        .unwrap();
    assert_eq!(a.security, Security::Secure);
    assert_eq!(a.canonical, "mx.example");
    assert_eq!(a.ips, vec!["127.0.0.10".parse::<IpAddr>().unwrap()]);
    // Without a CNAME the canonical name is the host itself.
    let a = router
        .addresses("mx.example", IpFamily::Ipv4)
        .await
        .unwrap();
    assert_eq!(a.canonical, "mx.example");
}

#[tokio::test]
async fn cname_at_the_tlsa_name_is_followed_rfc7672_section_2_2_3() {
    let w = Signed::start();
    let tlsa = w.router().tlsa("alias-tlsa.example", 25).await.unwrap();
    assert_eq!(tlsa.security, Security::Secure);
    assert_eq!(tlsa.records.len(), 1);
    assert_eq!(tlsa.records[0].data, TLSA_DATA);
}

#[tokio::test]
async fn secure_cname_to_an_insecure_target_is_insecure_rfc7672_section_2_1_3() {
    let w = Signed::start();
    let a = w
        .router()
        .addresses("toinsecure.example", IpFamily::Ipv4)
        .await
        .unwrap();
    assert_eq!(a.security, Security::Insecure);
    assert_eq!(a.canonical, "mx.insecure");
}

#[tokio::test]
async fn insecure_cname_to_a_secure_target_is_insecure_rfc7672_section_2_1_3() {
    let w = Signed::start();
    let router = w.router();
    let a = router
        .addresses("alias.insecure", IpFamily::Ipv4)
        .await
        .unwrap();
    assert_eq!(a.security, Security::Insecure);
    assert_eq!(a.canonical, "mx.example");
    // The same when the chain ends in a secure denial: the insecure CNAME
    // leading to it spoils the proof.
    let tlsa = router.tlsa("alias.insecure", 25).await.unwrap();
    assert!(tlsa.records.is_empty());
    assert_eq!(tlsa.security, Security::Insecure);
}

#[tokio::test]
async fn cname_to_a_bogus_target_fails_the_lookup_rfc7672_section_2_1_3() {
    let w = Signed::start();
    expect_bogus(
        w.router()
            .addresses("tobogus.example", IpFamily::Ipv4)
            .await,
        "CNAME to bogus",
    );
}

#[tokio::test]
async fn check_validation_succeeds_with_the_right_anchor_rfc4035_section_4_4() {
    let w = Signed::start();
    let router = w.router();
    assert!(router.validating());
    router.check_validation().await.unwrap();
}

#[tokio::test]
async fn wrong_trust_anchor_makes_everything_bogus_rfc4035_section_5() {
    let w = Signed::start();
    let wrong = SignedDns::wrong_trust_anchor_file(w.dir.path());
    let router = w.router_with(&format!("trust_anchor = {}", path_value(&wrong)));
    let e = router.check_validation().await.unwrap_err();
    assert!(matches!(e, RouteError::Bogus { .. }), "{e:?}");
    assert!(e.to_string().contains("DNSKEY"), "{e}");
    expect_bogus(router.mx_hosts("example").await, "MX");
    expect_bogus(
        router.addresses("mx.example", IpFamily::Any).await,
        "A/AAAA",
    );
    expect_bogus(router.tlsa("mx.example", 25).await, "TLSA");
    // Even a denial cannot be trusted.
    expect_bogus(router.tlsa("notlsa.example", 25).await, "TLSA denial");
}

#[tokio::test]
async fn default_iana_anchor_cannot_validate_a_private_root_rfc4035_section_5() {
    let w = Signed::start();
    let router = w.router_with("");
    let e = router.check_validation().await.unwrap_err();
    assert!(matches!(e, RouteError::Bogus { .. }), "{e:?}");
}

#[tokio::test]
async fn dnssec_off_reports_everything_insecure() {
    let w = Signed::start();
    let router = w.router_with("dnssec = \"off\"");
    assert!(!router.validating());
    let mx = router.mx_hosts("example").await.unwrap();
    assert_eq!(mx.security, Security::Insecure);
    let tlsa = router.tlsa("mx.example", 25).await.unwrap();
    assert_eq!(tlsa.security, Security::Insecure);
    assert_eq!(tlsa.records.len(), 1);
    // Nothing is checked, so the bogus zone answers like any other.
    let mx = router.mx_hosts("bogus").await.unwrap();
    assert_eq!(mx.security, Security::Insecure);
    assert!(router.check_validation().await.is_err());
}

#[tokio::test]
async fn address_literal_is_insecure_rfc7672_section_2_2() {
    let w = Signed::start();
    let router = w.router();
    let mx = router.mx_hosts("[127.0.0.1]").await.unwrap();
    assert_eq!(mx.security, Security::Insecure);
    let a = router.addresses("127.0.0.1", IpFamily::Any).await.unwrap();
    assert_eq!(a.security, Security::Insecure);
    assert_eq!(a.canonical, "127.0.0.1");
}

const MESSAGE: &str = "From: alice@example.net\nTo: bob@example\nSubject: hi\n\nHello.\n";

/// `example` MX `mx1.example` (MX1), `bogus` MX `mx.bogus` (MX2).
fn world_zones() -> SignedZones {
    SignedZones::new()
        .mx("example", 10, "mx1.example")
        .a("mx1.example", &MX1.to_string())
        .bogus_child("bogus", |z| {
            z.mx("bogus", 10, "mx.bogus")
                .a("mx.bogus", &MX2.to_string())
        })
}

#[test]
fn binary_delivers_to_a_secure_mx_through_the_validating_resolver() {
    let world = World::signed(world_zones(), "");
    let mx = world.mx(MX1, "mx1.example").start();
    world.send(&["bob@example"], MESSAGE);
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, std::time::Duration::from_secs(10));
    assert_eq!(got[0].rcpt_addrs(), ["bob@example"]);
}

#[test]
fn binary_defers_a_bogus_mx_instead_of_bouncing_rfc7672_section_2_1_2() {
    let world = World::signed(world_zones(), "");
    let mx = world.mx(MX2, "mx.bogus").start();
    world.send(&["bob@bogus"], MESSAGE);
    world.queue_run(&[]);
    let listing = world.mailq();
    assert!(listing.contains("pending"), "{listing}");
    assert!(listing.contains("4.4.3"), "{listing}");
    assert_eq!(
        mx.sessions(),
        0,
        "no connection to a host found by a bogus MX"
    );
}

#[test]
fn binary_refuses_dnssec_trust_ad_with_ex_config() {
    let world = World::signed(world_zones(), "");
    let config = world
        .config()
        .replace("dnssec = \"validate\"", "dnssec = \"trust-ad\"");
    assert!(config.contains("trust-ad"));
    world.env.write_config(&config);
    let out = world.env.run(&["queue", "run"]);
    assert_eq!(out.status, 78, "{}", out.stderr);
    assert!(out.stderr.contains("not supported"), "{}", out.stderr);
    assert!(out.stderr.contains("dns.dnssec"), "{}", out.stderr);
}

#[test]
fn binary_refuses_a_bad_trust_anchor_naming_file_and_line() {
    let world = World::signed(world_zones(), "");
    let anchor = world.env.dir.path().join("root.key");
    std::fs::write(&anchor, "; test\n. 3600 IN DNSKEY 257 3 15 @@@\n").unwrap();
    let out = world.env.run(&["queue", "run"]);
    assert_eq!(out.status, 78, "{}", out.stderr);
    let expected = format!("{}: line 2:", anchor.display());
    assert!(
        out.stderr.contains(&expected),
        "{expected} in {}",
        out.stderr
    );
}

#[tokio::test]
async fn unsigned_answers_without_a_chain_of_trust_are_bogus_rfc4035_section_5_5() {
    // What a name server that strips DNSSEC records looks like to a
    // validating resolver: no signed root above the answers.
    let dns = support::FakeDns::start(vec![support::world::zone()]);
    let text = format!("[dns]\nnameservers = [\"{}\"]\n", dns.addr);
    let router = Router::new(&Config::from_toml(&text, None).unwrap()).unwrap();
    let e = router.check_validation().await.unwrap_err();
    assert!(!e.is_permanent(), "{e:?}");
    expect_bogus(router.mx_hosts("example.org").await, "MX");
}
