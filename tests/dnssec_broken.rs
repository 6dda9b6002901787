//! DNSSEC validation that does not work (a name server that does not pass
//! DNSSEC records through, or a trust anchor that does not match): the
//! check at the start of a queue run notices, mail that needs DNSSEC
//! waits, and other mail goes out without validation. A host that
//! publishes TLSA records still asks for DANE, so its mail waits too
//! (RFC 7672 §2.1.1: a validation failure is never "no records").

mod support;

use std::time::Duration;

use support::world::{World, MX1, MX3};
use support::ZoneBuilder;

const WAIT: Duration = Duration::from_secs(10);

const MESSAGE: &str = "From: alice@sender.example\nSubject: s\n\nhello\n";

/// The standard names, with TLSA records for `mx1` only, served by an
/// unsigned server: with validation on and the IANA root as the anchor,
/// nothing validates.
fn world() -> World {
    let world = World::new_with("", |port| {
        ZoneBuilder::new("example.org.")
            .mx("dane.example.org", 10, "mx1.example.org")
            .mx("plain.example.org", 10, "mx3.example.org")
            .a("mx1.example.org", "127.0.0.10")
            .a("mx3.example.org", "127.0.0.12")
            .tlsa(&format!("_{port}._tcp.mx1.example.org"), 3, 1, 1, &[7; 32])
    });
    let text = world
        .config()
        .replace("dnssec = \"off\"", "dnssec = \"validate\"");
    world.replace_config(&text);
    world
}

fn only_id(world: &World) -> String {
    let out = world.env.run(&["mailq"]);
    out.stdout
        .lines()
        .find_map(|l| {
            let id = l.split_whitespace().next()?;
            (id.len() == 20 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no queue id in {}", out.stdout))
}

#[test]
fn without_validation_mail_to_a_host_without_tlsa_still_goes_out_rfc7672_section_2_1_1() {
    let world = world();
    let mx = world.mx(MX3, "mx3.example.org").start();
    world.send(&["bob@plain.example.org"], MESSAGE);
    let out = world.queue_run(&[]);
    assert!(
        out.stderr.contains("DNSSEC validation is not working"),
        "the run says so: {}",
        out.stderr
    );
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@plain.example.org"]);
}

#[test]
fn without_validation_a_host_publishing_tlsa_is_not_used_without_dane_rfc7672_section_2_1_1() {
    let world = world();
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send(&["bob@dane.example.org"], MESSAGE);
    let id = only_id(&world);
    let out = world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0, "no connection: {}", out.stderr);
    let show = world.env.run(&["queue", "show", "--json", &id]);
    assert!(show.stdout.contains("\"pending\""), "{}", show.stdout);
    assert!(
        show.stdout.contains("cannot be validated"),
        "{}",
        show.stdout
    );
}

#[test]
fn without_validation_requiretls_mail_waits_with_the_reason_rfc8689_section_4_2_1() {
    let world = world();
    let mx = world.mx(MX3, "mx3.example.org").requiretls().start();
    world.send(&["--require-tls", "bob@plain.example.org"], MESSAGE);
    let id = only_id(&world);
    world.queue_run(&[]);
    assert_eq!(mx.sessions(), 0);
    let show = world.env.run(&["queue", "show", "--json", &id]);
    assert!(show.stdout.contains("\"pending\""), "{}", show.stdout);
    assert!(
        show.stdout.contains("DNSSEC validation is not working"),
        "{}",
        show.stdout
    );
}
