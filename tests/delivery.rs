//! End to end: `smarthost sendmail` queues, `smarthost queue run` delivers
//! to fake MX hosts found through a fake DNS server, over STARTTLS where
//! offered, or to a relay host. Every server binds to 127.0.0.x; nothing
//! here needs the network.

mod support;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::env::{run_command, toml_string};
use support::world::{zone, World, MX1, MX2, MX3};
use support::{FakeMx, Output, TestEnv};

const SIMPLE: &str =
    "From: Alice <alice@example.net>\nTo: bob@example.org\nSubject: hello\n\nHello Bob.\n";

/// How long a test waits for a fake MX to see something.
const WAIT: Duration = Duration::from_secs(10);

/// The log lines of one kind (`"delivery attempt"`, `"failed"`, ...), in
/// order. A line's message comes before its fields.
fn log_lines<'a>(out: &'a Output, message: &str) -> Vec<&'a str> {
    let marker = format!(" {message} ");
    out.stderr
        .lines()
        .filter(|l| l.contains(&marker) || l.ends_with(&format!(" {message}")))
        .collect()
}

/// The `ip=` fields of the connection attempts a run logged, in order.
fn attempted_ips(out: &Output) -> Vec<String> {
    out.stderr
        .lines()
        .filter(|l| l.contains("delivery attempt"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("ip="))
                .map(str::to_string)
        })
        .collect()
}

/// Starts `queue run` in the background with its log in `<dir>/<name>`.
fn spawn_queue_run(world: &World, name: &str) -> (Child, PathBuf) {
    let log = world.env.dir.path().join(name);
    let mut cmd = world.env.cmd(&["queue", "run"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("create the run log"));
    (cmd.spawn().expect("start queue run"), log)
}

/// Waits for a background run to exit 0.
fn wait_for_exit(child: &mut Child, log: &PathBuf, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll queue run") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "queue run did not finish within {timeout:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "queue run failed ({status}); log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------
// MX delivery and TLS
// ---------------------------------------------------------------------------

#[test]
fn queued_message_is_delivered_over_verified_starttls_rfc3207() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send(&["-t"], SIMPLE);
    let listing = world.mailq();
    assert!(listing.contains("bob@example.org"), "{listing}");
    assert_eq!(
        mx.sessions(),
        0,
        "submit_only: nothing delivered before the run"
    );
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example.org"]);
    assert_eq!(got[0].helo, "client.example.net", "EHLO uses `hostname`");
    assert_eq!(got[0].tls.as_deref(), Some("TLSv1_3"));
    assert_eq!(
        got[0].ehlo_count, 2,
        "EHLO again after STARTTLS (RFC 3207 §4.2)"
    );
    assert!(got[0].data_str().ends_with("\r\n\r\nHello Bob.\r\n"));
    let attempts = log_lines(&out, "delivery attempt");
    assert_eq!(
        attempts.len(),
        1,
        "one log line per attempt: {}",
        out.stderr
    );
    for field in [
        "mx=mx1.example.org",
        "ip=127.0.0.10",
        "tls=TLSv1.3",
        "certificate=verified",
    ] {
        assert!(attempts[0].contains(field), "{field} in {}", attempts[0]);
    }
    assert!(world.mailq().contains("Mail queue is empty"));
    mx.assert_no_open_sessions(WAIT);
}

#[test]
fn unverifiable_certificate_still_encrypts_and_is_logged_unverified() {
    let world = World::new(zone(), "");
    let mx = world
        .plain_mx(MX1, "mx1.example.org")
        .starttls(Some(support::self_signed(&["other.example.net"])))
        .start();
    world.send(&["bob@single.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].tls.is_some(), "opportunistic TLS still encrypts");
    assert_eq!(mx.sessions(), 1, "no plaintext retry was needed");
    assert_eq!(mx.tls_failures(), 0);
    assert!(
        out.stderr.contains("certificate=unverified"),
        "{}",
        out.stderr
    );
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn receiver_without_starttls_gets_plaintext_rfc3207_section_4() {
    let world = World::new(zone(), "");
    let mx = world.plain_mx(MX1, "mx1.example.org").start();
    world.send(&["bob@single.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].tls, None);
    assert!(
        !mx.commands().iter().any(|c| c.line == "STARTTLS"),
        "STARTTLS was not offered, so it must not be sent"
    );
    assert!(out.stderr.contains("tls=plaintext"), "{}", out.stderr);
}

#[test]
fn preferred_mx_rfc5321_section_5_1() {
    let world = World::new(zone(), "");
    let mx1 = world.mx(MX1, "mx1.example.org").start();
    let mx2 = world.mx(MX2, "mx2.example.org").start();
    world.send(&["bob@example.org"], SIMPLE);
    world.queue_run(&[]);
    mx1.wait_for_messages(1, WAIT);
    assert_eq!(mx2.sessions(), 0, "preference 10 is tried before 20");
}

#[test]
fn unreachable_first_mx_falls_back_to_the_second_rfc5321_section_5_1() {
    let world = World::new(zone(), "");
    // Nothing listens on MX1: connection refused.
    let mx2 = world.mx(MX2, "mx2.example.org").start();
    world.send(&["bob@example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = mx2.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example.org"]);
    assert_eq!(
        attempted_ips(&out),
        ["127.0.0.10", "127.0.0.11"],
        "{}",
        out.stderr
    );
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn first_mx_greeting_421_falls_back_to_the_second_in_the_same_run_rfc5321_section_3_8() {
    let world = World::new(zone(), "");
    let mx1 = world
        .mx(MX1, "mx1.example.org")
        .greeting(421, "4.3.2 mx1.example.org shutting down")
        .start();
    let mx2 = world.mx(MX2, "mx2.example.org").start();
    world.send(&["bob@example.org"], SIMPLE);
    world.queue_run(&[]);
    mx2.wait_for_messages(1, WAIT);
    assert_eq!(mx1.sessions(), 1);
    assert!(mx1.messages().is_empty());
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn implicit_mx_rfc5321_section_5_1() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "implicit.example.org").start();
    world.send(&["carol@implicit.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["carol@implicit.example.org"]);
    // The domain itself is the host, so its certificate name verifies.
    assert!(
        out.stderr.contains("certificate=verified"),
        "{}",
        out.stderr
    );
}

#[test]
fn null_mx_recipient_fails_at_once_without_a_connection_rfc7505_section_4_1() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    // -N never: no failure report, which would wait in the queue for the
    // sender's unresolvable domain (reports are tested in tests/reports.rs).
    world.send(
        &[
            "-N",
            "never",
            "dave@nullmx.example.org",
            "bob@single.example.org",
        ],
        SIMPLE,
    );
    let out = world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    assert_eq!(mx.messages()[0].rcpt_addrs(), ["bob@single.example.org"]);
    assert!(
        !mx.commands().iter().any(|c| c.line.contains("nullmx")),
        "no RCPT for the null-MX domain"
    );
    let failed = log_lines(&out, "failed");
    assert!(
        failed
            .iter()
            .any(|l| l.contains("dave@nullmx.example.org") && l.contains("5.1.10")),
        "{}",
        out.stderr
    );
    // After one run nothing is left: the null-MX recipient is not retried.
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn temporary_failure_then_success_on_the_next_run_rfc5321_section_4_5_4_1() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .fail_first_n_sessions(1, 421, "4.3.2 try again later")
        .start();
    world.send(&["bob@single.example.org"], SIMPLE);
    world.queue_run(&[]);
    assert!(mx.messages().is_empty());
    let listing = world.mailq();
    assert!(listing.contains("pending"), "{listing}");
    assert!(listing.contains("421"), "{listing}");
    // Not due yet: a plain run leaves it alone.
    world.queue_run(&[]);
    assert_eq!(mx.sessions(), 1);
    world.queue_run(&["--all"]);
    mx.wait_for_messages(1, WAIT);
    assert_eq!(mx.sessions(), 2);
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn dns_failure_defers_instead_of_failing() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send(&["erin@broken.example.org"], SIMPLE);
    world.queue_run(&[]);
    let listing = world.mailq();
    assert!(listing.contains("pending"), "{listing}");
    assert!(listing.contains("4.4.3"), "{listing}");
    assert_eq!(mx.sessions(), 0, "SERVFAIL is not an implicit MX");
}

#[test]
fn permanent_rcpt_rejection_fails_only_that_recipient_rfc5321_section_4_2_1() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .rcpt_reply("nobody@single.example.org", 550, "5.1.1 no such user")
        .start();
    // -N never: no failure report (see tests/reports.rs).
    world.send(
        &[
            "-N",
            "never",
            "nobody@single.example.org",
            "bob@single.example.org",
        ],
        SIMPLE,
    );
    let out = world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@single.example.org"]);
    assert!(mx
        .commands()
        .iter()
        .any(|c| c.line.contains("<nobody@single.example.org>")));
    let failed = log_lines(&out, "failed");
    assert!(
        failed
            .iter()
            .any(|l| l.contains("nobody@single.example.org") && l.contains("5.1.1")),
        "{}",
        out.stderr
    );
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn recipients_of_one_domain_share_one_transaction_rfc5321_section_4_5_4_1() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send(
        &[
            "a@single.example.org",
            "b@single.example.org",
            "c@single.example.org",
        ],
        SIMPLE,
    );
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1);
    let mut rcpts = got[0].rcpt_addrs();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "a@single.example.org",
            "b@single.example.org",
            "c@single.example.org"
        ]
    );
    assert_eq!(mx.sessions(), 1);
}

#[test]
fn recipients_in_two_domains_go_to_their_own_mx_hosts() {
    let world = World::new(zone(), "");
    let mx1 = world.mx(MX1, "mx1.example.org").start();
    let mx3 = world.mx(MX3, "mx3.example.org").start();
    world.send(
        &["bob@single.example.org", "carol@other.example.org"],
        SIMPLE,
    );
    world.queue_run(&[]);
    let at_mx1 = mx1.wait_for_messages(1, WAIT);
    let at_mx3 = mx3.wait_for_messages(1, WAIT);
    assert_eq!(at_mx1.len(), 1);
    assert_eq!(at_mx3.len(), 1);
    assert_eq!(at_mx1[0].rcpt_addrs(), ["bob@single.example.org"]);
    assert_eq!(at_mx3[0].rcpt_addrs(), ["carol@other.example.org"]);
    assert_eq!(at_mx1[0].data, at_mx3[0].data, "the same message to both");
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn dot_stuffing_on_the_wire_rfc5321_section_4_5_2() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let body = ".hidden\n..two dots\n.\n. space\nend\n";
    let message = format!("From: a@example.net\nTo: b@single.example.org\nSubject: dots\n\n{body}");
    world.send(&["-i", "b@single.example.org"], &message);
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    let raw = String::from_utf8_lossy(&got[0].raw_data).into_owned();
    for stuffed in [
        "\r\n..hidden\r\n",
        "\r\n...two dots\r\n",
        "\r\n..\r\n",
        "\r\n.. space\r\n",
    ] {
        assert!(raw.contains(stuffed), "{stuffed:?} on the wire: {raw:?}");
    }
    for line in raw.split("\r\n").filter(|l| l.starts_with('.')) {
        assert!(
            line.starts_with(".."),
            "unstuffed line on the wire: {line:?}"
        );
    }
    let crlf_body = body.replace('\n', "\r\n");
    assert!(
        got[0].data_str().ends_with(&format!("\r\n\r\n{crlf_body}")),
        "{:?}",
        got[0].data_str()
    );
}

// ---------------------------------------------------------------------------
// Relay host
// ---------------------------------------------------------------------------

#[test]
fn relayhost_with_required_verified_starttls() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "starttls");
    let relay = world.mx(MX3, "relay.example.org").start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = relay.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["someone@elsewhere.example.com"]);
    assert!(got[0].tls.is_some());
    assert!(
        out.stderr.contains("certificate=verified"),
        "{}",
        out.stderr
    );
}

#[test]
fn relayhost_with_bad_certificate_is_not_used_nor_retried_in_plaintext() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "starttls");
    let relay = world
        .plain_mx(MX3, "relay.example.org")
        .starttls(Some(support::self_signed(&["relay.example.org"])))
        .start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    assert!(relay.messages().is_empty());
    assert_eq!(
        relay.tls_failures(),
        1,
        "the client refused the certificate"
    );
    assert!(
        !relay.commands().iter().any(|c| c.line.starts_with("MAIL")),
        "no plaintext fallback to a relay that must verify"
    );
    assert!(world.mailq().contains("pending"));
}

#[test]
fn relayhost_starttls_mode_refuses_a_relay_without_starttls() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "starttls");
    let relay = world.plain_mx(MX3, "relay.example.org").start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    assert_eq!(relay.sessions(), 1);
    assert!(relay.messages().is_empty());
    assert!(!relay.commands().iter().any(|c| c.line.starts_with("MAIL")));
    assert!(world.mailq().contains("pending"));
}

#[test]
fn relayhost_tls_none_delivers_in_plaintext_to_a_trusted_relay() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "none");
    let relay = world.plain_mx(MX3, "relay.example.org").start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = relay.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["someone@elsewhere.example.com"]);
    assert_eq!(got[0].tls, None);
    assert!(out.stderr.contains("tls=plaintext"), "{}", out.stderr);
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn relayhost_implicit_tls_from_the_first_byte_rfc8314_section_3() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "implicit");
    let relay = world
        .plain_mx(MX3, "relay.example.org")
        .implicit_tls(world.ca.issue(&["relay.example.org"]))
        .start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    let out = world.queue_run(&[]);
    let got = relay.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["someone@elsewhere.example.com"]);
    assert_eq!(got[0].tls.as_deref(), Some("TLSv1_3"));
    assert_eq!(relay.tls_failures(), 0);
    let commands = relay.commands();
    assert!(commands.iter().all(|c| c.tls), "every command inside TLS");
    assert!(!commands.iter().any(|c| c.line == "STARTTLS"));
    assert!(
        out.stderr.contains("certificate=verified"),
        "{}",
        out.stderr
    );
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn relayhost_implicit_tls_with_untrusted_certificate_is_not_used_rfc8314_section_3() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "implicit");
    let relay = world
        .plain_mx(MX3, "relay.example.org")
        .implicit_tls(support::self_signed(&["relay.example.org"]))
        .start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    assert_eq!(
        relay.tls_failures(),
        1,
        "the client refused the certificate"
    );
    assert!(relay.commands().is_empty(), "nothing sent outside TLS");
    assert!(relay.messages().is_empty());
    assert!(world.mailq().contains("pending"));
}

// ---------------------------------------------------------------------------
// AUTH to the relay, with credentials from the secrets file
// ---------------------------------------------------------------------------

const RELAY_USER: &str = "mailer@example.org";
const RELAY_PASSWORD: &str = "c0rrect horse";

fn secrets(password: &str) -> String {
    format!("relay_user = \"{RELAY_USER}\"\nrelay_password = \"{password}\"\n")
}

/// A world whose relay (STARTTLS, trusted certificate) wants AUTH with
/// the given mechanisms.
fn auth_world(mechanisms: &[&str], password_in_secrets: &str) -> (World, FakeMx) {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "starttls");
    world.write_secrets(&secrets(password_in_secrets), 0o600);
    let relay = world
        .mx(MX3, "relay.example.org")
        .auth(RELAY_USER, RELAY_PASSWORD)
        .auth_mechanisms(mechanisms)
        .start();
    (world, relay)
}

fn assert_auth_only_inside_tls(relay: &FakeMx) {
    let commands = relay.commands();
    let auth: Vec<_> = commands
        .iter()
        .filter(|c| c.line.to_ascii_uppercase().starts_with("AUTH"))
        .collect();
    assert_eq!(auth.len(), 1, "one AUTH command: {commands:?}");
    assert!(commands
        .iter()
        .filter(|c| !c.tls)
        .all(|c| !c.line.starts_with("AUTH")));
    assert!(auth[0].tls, "AUTH only after STARTTLS");
}

#[test]
fn relay_auth_plain_with_credentials_from_the_secrets_file_rfc4954_rfc4616() {
    let (world, relay) = auth_world(&["PLAIN"], RELAY_PASSWORD);
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    let got = relay.wait_for_messages(1, WAIT);
    assert_eq!(got[0].auth_user.as_deref(), Some(RELAY_USER));
    assert_eq!(relay.auth_failures(), 0);
    assert_auth_only_inside_tls(&relay);
    assert!(relay
        .commands()
        .iter()
        .any(|c| c.line.starts_with("AUTH PLAIN ")));
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn relay_auth_login_when_only_login_is_offered_rfc4954_section_4() {
    let (world, relay) = auth_world(&["LOGIN"], RELAY_PASSWORD);
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    let got = relay.wait_for_messages(1, WAIT);
    assert_eq!(got[0].auth_user.as_deref(), Some(RELAY_USER));
    assert_auth_only_inside_tls(&relay);
    assert!(relay.commands().iter().any(|c| c.line == "AUTH LOGIN"));
}

#[test]
fn relay_refusing_the_credentials_535_leaves_the_message_pending_rfc4954_section_6() {
    let (world, relay) = auth_world(&["PLAIN", "LOGIN"], "wrong password");
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    assert_eq!(relay.auth_failures(), 1);
    assert!(relay.messages().is_empty());
    let listing = world.mailq();
    assert!(listing.contains("pending"), "{listing}");
    assert!(listing.contains("535"), "{listing}");
}

#[test]
fn secrets_file_readable_by_others_is_refused_with_ex_config() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "starttls");
    let path = world.write_secrets(&secrets(RELAY_PASSWORD), 0o644);
    let relay = world
        .mx(MX3, "relay.example.org")
        .auth(RELAY_USER, RELAY_PASSWORD)
        .start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    let out = world.env.run(&["queue", "run"]);
    assert_eq!(out.status, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains(&*path.to_string_lossy()),
        "the error names the file: {}",
        out.stderr
    );
    assert!(!out.stderr.contains(RELAY_PASSWORD));
    assert_eq!(relay.sessions(), 0);
    assert!(world.mailq().contains("someone@elsewhere.example.com"));
}

#[test]
fn relay_credentials_never_go_over_plaintext_rfc4616_section_6() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "none");
    world.write_secrets(&secrets(RELAY_PASSWORD), 0o600);
    // Offers AUTH without TLS, and wants it before MAIL.
    let relay = world
        .plain_mx(MX3, "relay.example.org")
        .auth(RELAY_USER, RELAY_PASSWORD)
        .start();
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    world.queue_run(&[]);
    let commands = relay.commands();
    assert!(
        !commands
            .iter()
            .any(|c| c.line.to_ascii_uppercase().starts_with("AUTH")),
        "{commands:?}"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded = b64.encode(RELAY_PASSWORD);
    assert!(!commands.iter().any(|c| c.line.contains(&encoded)));
    assert!(relay.messages().is_empty());
    assert!(world.mailq().contains("pending"));
}

/// Runs a delivery through an AUTH relay with wire tracing on and checks
/// that the trace shows the AUTH command but none of the secret material.
fn auth_trace_is_redacted(mechanism: &str) {
    let (world, relay) = auth_world(&[mechanism], RELAY_PASSWORD);
    world.send(&["someone@elsewhere.example.com"], SIMPLE);
    let mut cmd = world.env.cmd(&["queue", "run"]);
    cmd.env("SMARTHOST_LOG", "smarthost=trace");
    let out = run_command(cmd, b"");
    assert_eq!(out.status, 0, "{}", out.stderr);
    relay.wait_for_messages(1, WAIT);
    assert!(
        out.stderr.contains(&format!("AUTH {mechanism}")),
        "the trace shows the dialogue: {}",
        out.stderr
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for secret in [
        RELAY_PASSWORD.to_string(),
        b64.encode(RELAY_PASSWORD),
        b64.encode(format!("\0{RELAY_USER}\0{RELAY_PASSWORD}")),
    ] {
        assert!(
            !out.stderr.contains(&secret),
            "{secret:?} in the log: {}",
            out.stderr
        );
    }
}

#[test]
fn auth_plain_payload_is_not_in_the_trace_log() {
    auth_trace_is_redacted("PLAIN");
}

#[test]
fn auth_login_answers_are_not_in_the_trace_log() {
    auth_trace_is_redacted("LOGIN");
}

// ---------------------------------------------------------------------------
// Outgoing connections: address family and source address
// ---------------------------------------------------------------------------

/// `dual.example.org` has one MX host with an IPv6 address (::1, where
/// nothing listens on the test port) and an IPv4 address (MX1).
fn dual_stack_world(smtp_settings: &str) -> World {
    let zone = zone()
        .mx("dual.example.org", 10, "dualmx.example.org")
        .aaaa("dualmx.example.org", "::1")
        .a("dualmx.example.org", "127.0.0.10");
    let world = World::new(zone, "");
    world.add_to_table("smtp", smtp_settings);
    world
}

#[test]
fn ip_family_any_tries_ipv6_then_ipv4() {
    let world = dual_stack_world("ip_family = \"any\"");
    let mx = world.mx(MX1, "dualmx.example.org").start();
    world.send(&["bob@dual.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    assert_eq!(attempted_ips(&out), ["::1", "127.0.0.10"], "{}", out.stderr);
}

#[test]
fn ip_family_ipv4_never_dials_an_ipv6_address() {
    let world = dual_stack_world("ip_family = \"ipv4\"");
    let mx = world.mx(MX1, "dualmx.example.org").start();
    world.send(&["bob@dual.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    mx.wait_for_messages(1, WAIT);
    assert_eq!(attempted_ips(&out), ["127.0.0.10"], "{}", out.stderr);
}

#[test]
fn ip_family_ipv6_never_dials_an_ipv4_address() {
    let world = dual_stack_world("ip_family = \"ipv6\"");
    let mx = world.mx(MX1, "dualmx.example.org").start();
    world.send(&["bob@dual.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    assert_eq!(attempted_ips(&out), ["::1"], "{}", out.stderr);
    assert_eq!(mx.sessions(), 0);
    assert!(world.mailq().contains("pending"));
}

#[test]
fn bind_address_is_the_source_of_outgoing_connections() {
    let world = World::new(zone(), "");
    world.add_to_table("smtp", "bind_address = \"127.0.0.5\"");
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send(&["bob@single.example.org"], SIMPLE);
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
}

// ---------------------------------------------------------------------------
// The queue while a run holds it
// ---------------------------------------------------------------------------

#[test]
fn mailq_answers_while_a_slow_queue_run_holds_the_store() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .delay_data_reply_in_first_sessions(1, Duration::from_secs(5))
        .start();
    world.send(&["first@single.example.org"], SIMPLE);
    let (mut runner, log) = spawn_queue_run(&world, "run.log");
    // Once DATA has arrived the run is inside the delivery, holding the store.
    mx.wait_for_command("DATA", WAIT);
    world.send(&["second@single.example.org"], SIMPLE);
    let started = Instant::now();
    let listing = world.mailq();
    let took = started.elapsed();
    assert!(
        runner.try_wait().expect("poll queue run").is_none(),
        "mailq returned only after the run let go (took {took:?})"
    );
    assert!(listing.contains("first@single.example.org"), "{listing}");
    assert!(
        listing.contains("second@single.example.org"),
        "the maildrop is listed too: {listing}"
    );
    assert!(listing.contains("holds the queue"), "{listing}");
    wait_for_exit(&mut runner, &log, Duration::from_secs(60));
    let got = mx.wait_for_messages(2, WAIT);
    assert_eq!(got.len(), 2);
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn parallel_submissions_during_a_slow_delivery_are_each_delivered_once() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .delay_data_reply_in_first_sessions(1, Duration::from_secs(6))
        .start();
    world.send(&["first@single.example.org"], SIMPLE);
    let (mut runner, log) = spawn_queue_run(&world, "run.log");
    mx.wait_for_command("DATA", WAIT);
    let senders: Vec<_> = (0..20)
        .map(|i| {
            let cmd = world
                .env
                .cmd(&["sendmail", &format!("r{i}@single.example.org")]);
            std::thread::spawn(move || {
                let started = Instant::now();
                (run_command(cmd, SIMPLE.as_bytes()), started.elapsed())
            })
        })
        .collect();
    for s in senders {
        let (out, took) = s.join().expect("sender thread");
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert!(
            took < Duration::from_secs(5),
            "a submission waited {took:?}"
        );
    }
    assert!(
        runner.try_wait().expect("poll queue run").is_none(),
        "the submissions finished while the run still held the store"
    );
    wait_for_exit(&mut runner, &log, Duration::from_secs(60));
    // The holder picks up what arrived while it ran, before it lets go: no
    // second run is needed.
    let got = mx.wait_for_messages(21, WAIT);
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpt_addrs()).collect();
    rcpts.sort();
    let before = rcpts.len();
    rcpts.dedup();
    assert_eq!(before, rcpts.len(), "a message was delivered twice");
    assert_eq!(rcpts.len(), 21);
    assert!(world.mailq().contains("Mail queue is empty"));
    world.queue_run(&["--all"]);
    assert_eq!(mx.messages().len(), 21, "nothing is delivered again");
}

#[test]
fn submission_starts_a_delivery_pass_without_cron() {
    let world = World::new(zone(), "");
    let text = world
        .config()
        .replace("submit_only = true", "submit_only = false");
    std::fs::write(&world.env.config_path, text).unwrap();
    let mx = world.mx(MX1, "mx1.example.org").start();
    world.send(&["bob@single.example.org"], SIMPLE);
    let got = mx.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(got[0].rcpt_addrs(), ["bob@single.example.org"]);
}

// ---------------------------------------------------------------------------
// Exit statuses
// ---------------------------------------------------------------------------

#[test]
fn config_error_is_ex_config_with_file_line_and_key() {
    let env = TestEnv::new();
    env.write_config(&format!(
        "queue_dir = {}\nhostname = \"a.example.org\"\n[smtp]\nprot = 25\n",
        toml_string(&env.queue_dir.to_string_lossy())
    ));
    let out = env.sendmail(&["bob@example.org"], SIMPLE.as_bytes());
    assert_eq!(out.status, 78, "{}", out.stderr);
    for part in [&*env.config_path.to_string_lossy(), "line 4", "prot"] {
        assert!(out.stderr.contains(part), "{part} in {}", out.stderr);
    }
    let out = env.run(&["queue", "run"]);
    assert_eq!(out.status, 78);
}

#[test]
fn unwritable_queue_dir_is_ex_cantcreat_73() {
    let env = TestEnv::new();
    // A directory below a regular file cannot be created, even by root.
    let file = env.dir.path().join("file");
    std::fs::write(&file, "not a directory\n").unwrap();
    let queue_dir = file.join("queue");
    env.write_config(&format!(
        "queue_dir = {}\nhostname = \"client.example.net\"\nsubmit_only = true\n",
        toml_string(&queue_dir.to_string_lossy())
    ));
    let out = env.sendmail(&["bob@example.org"], SIMPLE.as_bytes());
    assert_eq!(out.status, 73, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one line names the reason: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&*file.to_string_lossy()),
        "{}",
        out.stderr
    );
}

#[test]
fn eight_bit_message_is_not_sent_to_a_server_without_8bitmime_rfc6152_section_3() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .extensions(&["PIPELINING", "ENHANCEDSTATUSCODES"])
        .start();
    world.send(
        &["-N", "never", "bob@single.example.org"],
        "Subject: Grüße\n\nÜberprüfung\n",
    );
    let out = world.queue_run(&[]);
    assert!(mx.messages().is_empty(), "no 8-bit data to a 7-bit server");
    assert!(
        log_lines(&out, "failed")
            .iter()
            .any(|l| l.contains("5.6.3")),
        "{}",
        out.stderr
    );
}

#[test]
fn utf8_address_is_not_sent_to_a_server_without_smtputf8_rfc6531_section_3_4() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .extensions(&["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"])
        .start();
    world.send(&["-N", "never", "jürgen@single.example.org"], SIMPLE);
    let out = world.queue_run(&[]);
    assert!(mx.messages().is_empty());
    assert!(
        log_lines(&out, "failed")
            .iter()
            .any(|l| l.contains("5.6.7")),
        "{}",
        out.stderr
    );
}

#[test]
fn recipients_refused_with_452_go_in_further_transactions_rfc5321_section_4_5_3_1_10() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .max_rcpts_per_transaction(2)
        .start();
    let rcpts: Vec<String> = (1..=5)
        .map(|i| format!("u{i}@single.example.org"))
        .collect();
    let mut args = vec!["-N", "never"];
    args.extend(rcpts.iter().map(String::as_str));
    world.send(&args, SIMPLE);
    world.queue_run(&[]);
    let got = mx.wait_for_messages(3, WAIT);
    let mut delivered: Vec<String> = got.iter().flat_map(|m| m.rcpt_addrs()).collect();
    delivered.sort();
    assert_eq!(delivered, rcpts, "all five in one run");
    assert_eq!(got.len(), 3, "2 + 2 + 1 recipients");
    assert!(world.mailq().contains("Mail queue is empty"));
}

#[test]
fn a_dead_address_is_dialled_once_per_run_not_once_per_message_rfc5321_section_4_5_4_1() {
    let world = World::new(zone(), "");
    // Nothing listens for single.example.org (mx1).
    // Several messages, delivered in parallel within the run.
    for _ in 0..6 {
        world.send(&["-N", "never", "bob@single.example.org"], SIMPLE);
    }
    let out = world.queue_run(&[]);
    let failed = log_lines(&out, "delivery attempt failed");
    assert_eq!(failed.len(), 6, "{}", out.stderr);
    let dialled = failed.iter().filter(|l| !l.contains("not dialled")).count();
    assert_eq!(dialled, 1, "{}", out.stderr);
    assert!(world.mailq().contains("pending"));
}

#[test]
fn sessions_to_one_destination_are_limited_by_max_connections_per_destination() {
    let world = World::new(zone(), "");
    world.add_to_table("smtp", "max_connections_per_destination = 2");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .delay_data_reply(Duration::from_millis(300))
        .start();
    for _ in 0..6 {
        world.send(&["-N", "never", "bob@single.example.org"], SIMPLE);
    }
    world.queue_run(&[]);
    assert_eq!(mx.wait_for_messages(6, WAIT).len(), 6);
    assert!(
        mx.peak_open_sessions() <= 2,
        "peak {}",
        mx.peak_open_sessions()
    );
    assert!(
        mx.peak_open_sessions() >= 2,
        "deliveries still run side by side"
    );
}

#[test]
fn messages_to_one_host_share_a_connection_rfc5321_section_4_1_4() {
    let world = World::new(zone(), "");
    world.add_to_table("smtp", "max_connections_per_destination = 1");
    let mx = world.mx(MX1, "mx1.example.org").start();
    for i in 0..5 {
        world.send(
            &["-N", "never", &format!("u{i}@single.example.org")],
            SIMPLE,
        );
    }
    world.queue_run(&[]);
    assert_eq!(mx.wait_for_messages(5, WAIT).len(), 5);
    assert_eq!(mx.sessions(), 1, "one connection for the five messages");
    let rsets = mx.commands().iter().filter(|c| c.line == "RSET").count();
    assert_eq!(rsets, 4, "RSET between transactions");
    assert!(world.mailq().contains("Mail queue is empty"));
    mx.assert_no_open_sessions(WAIT);
}

#[test]
fn a_connection_for_opportunistic_mail_never_carries_requiretls_mail_rfc8689_section_4_2_1() {
    let world = World::new(zone(), "");
    world.use_relay("relay.example.org", "starttls");
    world.add_to_table("smtp", "max_connections_per_destination = 1");
    let relay = world
        .mx(support::world::MX3, "relay.example.org")
        .requiretls()
        .start();
    world.send(&["-N", "never", "a@single.example.org"], SIMPLE);
    world.send(
        &["-N", "never", "--require-tls", "b@single.example.org"],
        SIMPLE,
    );
    world.queue_run(&[]);
    let got = relay.wait_for_messages(2, WAIT);
    let with_tag = got
        .iter()
        .filter(|m| m.mail_params.iter().any(|p| p == "REQUIRETLS"))
        .count();
    assert_eq!(with_tag, 1);
    assert_eq!(relay.sessions(), 2, "each plan has its own connection");
}

#[test]
fn a_reused_connection_the_server_gave_up_on_is_replaced_by_a_fresh_one_rfc5321_section_4_1_4() {
    let world = World::new(zone(), "");
    world.add_to_table("smtp", "max_connections_per_destination = 1");
    let mx = world.mx(MX1, "mx1.example.org").close_on_rset().start();
    for i in 0..3 {
        world.send(
            &["-N", "never", &format!("u{i}@single.example.org")],
            SIMPLE,
        );
    }
    world.queue_run(&[]);
    assert_eq!(mx.wait_for_messages(3, WAIT).len(), 3, "none left pending");
    assert_eq!(
        mx.sessions(),
        3,
        "a fresh connection after each refused RSET"
    );
    assert!(world.mailq().contains("Mail queue is empty"));
}
