//! Interoperability: real SMTP software on either side of `smarthost serve`.
//! swaks as a client, a private Postfix instance that uses `serve` as its
//! relayhost, and a scripted client for the parameters swaks cannot send;
//! the same client also talks to `sendmail -bs` over its pipes. Mail leaves
//! smarthost for a fake MX found through the World's fake DNS.
//!
//! Every test skips, with one `SKIPPED` line on stderr, when what it needs
//! is missing: `smarthost serve` or `sendmail -bs` itself (a binary without
//! them), swaks with TLS, or Postfix and root. `.ci/run` installs the tools.
//!
//! The harness tests at the end need no `serve`: they check the Postfix,
//! swaks and scripted-client helpers against a fake MX, so the helpers are
//! known to work before `serve` exists.

mod support;

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use support::postfix::{instance_processes, Postfix, POSTFIX_HOSTNAME};
use support::serve::{serve_unavailable, Serve};
use support::smtp_client::SmtpClient;
use support::tools::{skip, Swaks};
use support::world::{zone, World, MX1};
use support::{free_port_on, FakeMx, ReceivedMessage, TestEnv};

/// How long a test waits for mail to arrive at the fake MX.
const WAIT: Duration = Duration::from_secs(60);

/// The name `serve` uses for itself (set in the World's configuration).
const SERVE_HOSTNAME: &str = "client.example.net";

const MESSAGE: &str = "From: Alice <alice@example.net>\n\
    To: Bob <bob@example.org>\n\
    Subject: interop\n\
    Message-ID: <interop-1@example.net>\n\
    \n\
    Hello Bob.\n";

fn swaks_unavailable() -> Option<String> {
    Swaks::find().err()
}

fn postfix_unavailable() -> Option<String> {
    support::postfix::postfix_unavailable()
}

/// Why `sendmail -bs` cannot be tested, or `None` when it can: it can when
/// a session that only says QUIT gets a 220 greeting and exit status 0.
fn sendmail_bs_unavailable() -> Option<String> {
    let env = TestEnv::new();
    env.write_config("submit_only = true\n");
    let out = env.sendmail(&["-bs"], b"QUIT\r\n");
    if out.status == 0 && out.stdout.starts_with("220") {
        return None;
    }
    Some(format!(
        "this smarthost has no `sendmail -bs` (exit {}: {})",
        out.status,
        out.stderr.trim()
    ))
}

/// Whether `test` can run; when it cannot, says why and the test returns.
fn require(test: &str, needs: &[fn() -> Option<String>]) -> bool {
    match needs.iter().find_map(|need| need()) {
        Some(reason) => {
            skip(test, &reason);
            false
        }
        None => true,
    }
}

/// A World whose configuration has `serve` listen on 127.0.0.1 and a free
/// port, which is returned. `submit_only` is dropped: it is about what
/// `sendmail` does, and `serve` delivers what it accepts.
fn serve_world() -> (World, SocketAddr) {
    let world = World::new(zone(), "");
    let config = world.config().replace("submit_only = true\n", "");
    std::fs::write(&world.env.config_path, config).expect("write the test configuration");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port_on(&[Ipv4Addr::LOCALHOST])));
    world.add_to_table("listen", &format!("addresses = [\"{addr}\"]"));
    (world, addr)
}

/// Mail to `example.org` must go over TLS with a certificate verified
/// against the World's CA (PKIX), so arrival proves verified TLS.
fn require_verified_tls_to_example_org(world: &World) {
    world.add_to_table("tls.domain.\"example.org\"", "level = \"verify\"");
}

/// Waits for the first message at `mx`; on timeout the test fails with
/// what `serve` (and Postfix, when given) logged.
fn wait_for_mail(mx: &FakeMx, serve: &Serve, postfix: Option<&Postfix>) -> ReceivedMessage {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(message) = mx.messages().into_iter().next() {
            return message;
        }
        if Instant::now() >= deadline {
            panic!(
                "no message at the fake MX within {WAIT:?}\nserve log:\n{}\n{}",
                serve.log(),
                postfix.map(Postfix::diagnostics).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `Received:` fields of `message`, unfolded, topmost (newest) first.
fn received_fields(message: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for line in message.lines().take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.trim_end().to_string());
        }
    }
    fields.retain(|f| f.to_ascii_lowercase().starts_with("received:"));
    fields
}

/// Sends `MESSAGE` from alice@example.net to bob@example.org over a plain
/// SMTP session to `addr`.
fn submit_plain(addr: SocketAddr) {
    let mut client = SmtpClient::connect(addr);
    client.command_expect("EHLO client.example.test", 250);
    client.command_expect("MAIL FROM:<alice@example.net>", 250);
    client.command_expect("RCPT TO:<bob@example.org>", 250);
    client.command_expect("DATA", 354);
    let reply = client.send_data(MESSAGE);
    assert_eq!(reply.code, 250, "DATA refused\n{}", client.transcript);
    client.command("QUIT");
}

fn has_param(params: &[String], wanted: &str) -> bool {
    params.iter().any(|p| p.eq_ignore_ascii_case(wanted))
}

#[test]
fn swaks_with_starttls_and_pipelining_through_serve_reaches_the_mx_over_verified_tls() {
    const TEST: &str = "swaks_with_starttls_and_pipelining_through_serve";
    if !require(TEST, &[serve_unavailable, swaks_unavailable]) {
        return;
    }
    let (world, addr) = serve_world();
    require_verified_tls_to_example_org(&world);
    let mx = world.mx(MX1, "mx1.example.org").start();
    let mut serve = Serve::start(&world.env, addr);
    let swaks = Swaks::find().expect("swaks was found above");

    let out = swaks.run(&[
        "--server",
        &addr.to_string(),
        "--tls",
        "--pipeline",
        "--to",
        "bob@example.org",
        "--from",
        "alice@example.net",
        "--helo",
        "client.example.test",
        "--header",
        "Subject: interop via swaks",
    ]);
    assert_eq!(
        out.status,
        0,
        "swaks failed:\n{}{}\nserve log:\n{}",
        out.stdout,
        out.stderr,
        serve.log()
    );
    assert!(
        out.stdout.contains("=== TLS started"),
        "no STARTTLS:\n{}",
        out.stdout
    );
    // swaks marks the lines it reads inside TLS with `<~`.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("<~") && l.contains("PIPELINING")),
        "serve offered no PIPELINING after STARTTLS (RFC 2920):\n{}",
        out.stdout
    );

    let message = wait_for_mail(&mx, &serve, None);
    assert_eq!(message.mail_from, "alice@example.net");
    assert_eq!(message.rcpt_addrs(), ["bob@example.org"]);
    assert!(message.tls.is_some(), "delivered in plaintext");
    assert!(
        message.data_str().contains("Subject: interop via swaks"),
        "{}",
        message.data_str()
    );
    assert_eq!(
        serve.stop(),
        0,
        "serve did not exit 0 on SIGTERM\n{}",
        serve.log()
    );
}

#[test]
fn postfix_with_serve_as_relayhost_hands_mail_on_and_both_hops_add_received() {
    const TEST: &str = "postfix_with_serve_as_relayhost";
    if !require(TEST, &[serve_unavailable, postfix_unavailable]) {
        return;
    }
    let (world, addr) = serve_world();
    require_verified_tls_to_example_org(&world);
    let mx = world.mx(MX1, "mx1.example.org").start();
    let mut serve = Serve::start(&world.env, addr);
    let postfix = Postfix::start(addr, "").unwrap_or_else(|reason| panic!("{reason}"));

    submit_plain(postfix.smtpd);

    let message = wait_for_mail(&mx, &serve, Some(&postfix));
    assert_eq!(message.rcpt_addrs(), ["bob@example.org"]);
    assert!(message.tls.is_some(), "delivered in plaintext");
    // Postfix used STARTTLS towards serve (smtp_tls_security_level = may;
    // serve's certificate is self-signed, so Postfix calls it untrusted).
    assert!(
        postfix
            .log()
            .contains("TLS connection established to 127.0.0.1"),
        "Postfix did not use TLS towards serve\n{}",
        postfix.diagnostics()
    );
    // RFC 5321 §4.4: each hop adds its Received field on top.
    let data = message.data_str();
    let received = received_fields(&data);
    assert!(received.len() >= 2, "expected two Received fields:\n{data}");
    assert!(
        received[0].contains(&format!("by {SERVE_HOSTNAME}"))
            && received[0].contains(POSTFIX_HOSTNAME),
        "the top Received field is not serve's, from Postfix:\n{data}"
    );
    assert!(
        received[1].contains(&format!("by {POSTFIX_HOSTNAME}")),
        "the second Received field is not Postfix's:\n{data}"
    );
    assert_eq!(
        serve.stop(),
        0,
        "serve did not exit 0 on SIGTERM\n{}",
        serve.log()
    );
}

/// RFC 8689 §2: REQUIRETLS is offered, and may be used, only after
/// STARTTLS. Through a relayhost that offers REQUIRETLS and verifies by
/// PKIX, the option is passed on (RFC 8689 §4.2.1), and so are the DSN
/// parameters (RFC 3461 §4), since the fake MX offers DSN.
#[test]
fn requiretls_and_dsn_parameters_after_starttls_are_passed_on_through_the_relay() {
    const TEST: &str = "requiretls_and_dsn_parameters_after_starttls";
    if !require(TEST, &[serve_unavailable]) {
        return;
    }
    let (world, addr) = serve_world();
    world.use_relay("mx1.example.org", "starttls");
    let mx = world.mx(MX1, "mx1.example.org").requiretls().start();
    let mut serve = Serve::start(&world.env, addr);

    let mut client = SmtpClient::connect(addr);
    let before = client.command_expect("EHLO client.example.test", 250);
    assert!(before.has_capability("STARTTLS"), "{before:?}");
    assert!(
        !before.has_capability("REQUIRETLS"),
        "REQUIRETLS before STARTTLS: {before:?}"
    );
    client.starttls(SERVE_HOSTNAME);
    let after = client.command_expect("EHLO client.example.test", 250);
    for keyword in ["REQUIRETLS", "DSN", "PIPELINING", "8BITMIME", "SIZE"] {
        assert!(
            after.has_capability(keyword),
            "no {keyword} after STARTTLS: {after:?}"
        );
    }
    client.command_expect(
        "MAIL FROM:<alice@example.net> REQUIRETLS RET=HDRS ENVID=x",
        250,
    );
    client.command_expect(
        "RCPT TO:<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.org",
        250,
    );
    client.command_expect("DATA", 354);
    let reply = client.send_data(MESSAGE);
    assert_eq!(reply.code, 250, "DATA refused\n{}", client.transcript);
    client.command("QUIT");

    let message = wait_for_mail(&mx, &serve, None);
    assert!(message.tls.is_some(), "delivered in plaintext");
    for param in ["REQUIRETLS", "RET=HDRS", "ENVID=x"] {
        assert!(
            has_param(&message.mail_params, param),
            "MAIL lacks {param}: {:?}",
            message.mail_params
        );
    }
    let (rcpt, params) = &message.rcpts[0];
    assert_eq!(rcpt, "bob@example.org");
    for param in ["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@example.org"] {
        assert!(has_param(params, param), "RCPT lacks {param}: {params:?}");
    }
    assert_eq!(
        serve.stop(),
        0,
        "serve did not exit 0 on SIGTERM\n{}",
        serve.log()
    );
}

#[test]
fn sendmail_bs_takes_a_message_over_smtp_on_its_pipes_and_queue_run_delivers_it() {
    const TEST: &str = "sendmail_bs_takes_a_message_over_smtp";
    if !require(TEST, &[sendmail_bs_unavailable]) {
        return;
    }
    let world = World::new(zone(), "");
    require_verified_tls_to_example_org(&world);
    let mx = world.mx(MX1, "mx1.example.org").start();
    let log_path = world.env.dir.path().join("sendmail-bs.log");
    let mut child = world
        .env
        .cmd(&["sendmail", "-bs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&log_path).expect("create the sendmail log"))
        .spawn()
        .expect("start sendmail -bs");
    let replies = child.stdout.take().expect("piped stdout");
    let commands = child.stdin.take().expect("piped stdin");

    let mut client = SmtpClient::over_pipes(replies, commands);
    let ehlo = client.command_expect("EHLO client.example.test", 250);
    for keyword in ["PIPELINING", "DSN", "8BITMIME", "SIZE"] {
        assert!(ehlo.has_capability(keyword), "no {keyword}: {ehlo:?}");
    }
    client.command_expect("MAIL FROM:<alice@example.net> RET=HDRS ENVID=bs-1", 250);
    client.command_expect("RCPT TO:<bob@example.org> NOTIFY=SUCCESS", 250);
    client.command_expect("DATA", 354);
    let reply = client.send_data(MESSAGE);
    assert_eq!(reply.code, 250, "DATA refused\n{}", client.transcript);
    client.command_expect("QUIT", 221);
    drop(client);

    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sendmail -bs") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sendmail -bs did not exit after QUIT");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "sendmail -bs: {status}\n{log}");

    world.queue_run(&[]);
    let message = &mx.wait_for_messages(1, WAIT)[0];
    assert_eq!(message.mail_from, "alice@example.net");
    assert_eq!(message.rcpt_addrs(), ["bob@example.org"]);
    assert!(message.tls.is_some(), "delivered in plaintext");
    assert!(
        has_param(&message.mail_params, "ENVID=bs-1"),
        "{:?}",
        message.mail_params
    );
    assert!(
        has_param(&message.rcpts[0].1, "NOTIFY=SUCCESS"),
        "{:?}",
        message.rcpts
    );
}

// The harness itself, without `serve`.

#[test]
fn harness_swaks_sends_with_starttls_and_pipelining_to_a_fake_mx() {
    const TEST: &str = "harness_swaks_sends_with_starttls_and_pipelining";
    if !require(TEST, &[swaks_unavailable]) {
        return;
    }
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let swaks = Swaks::find().expect("swaks was found above");
    let out = swaks.run(&[
        "--server",
        &mx.addr.to_string(),
        "--tls",
        "--pipeline",
        "--to",
        "bob@example.org",
        "--from",
        "alice@example.net",
    ]);
    assert_eq!(out.status, 0, "swaks failed:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("=== TLS started"), "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("<~") && l.contains("PIPELINING")),
        "{}",
        out.stdout
    );
    let message = &mx.wait_for_messages(1, WAIT)[0];
    assert_eq!(message.mail_from, "alice@example.net");
    assert!(message.tls.is_some());
}

#[test]
fn harness_postfix_relays_to_a_fake_mx_and_leaves_no_process_behind() {
    const TEST: &str = "harness_postfix_relays_to_a_fake_mx";
    if !require(TEST, &[postfix_unavailable]) {
        return;
    }
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let postfix = Postfix::start(mx.addr, "").unwrap_or_else(|reason| panic!("{reason}"));
    let config_dir = postfix.config_dir().to_path_buf();
    assert!(
        !instance_processes(&config_dir).is_empty(),
        "no Postfix processes found"
    );

    submit_plain(postfix.smtpd);
    let deadline = Instant::now() + WAIT;
    while mx.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "Postfix relayed nothing\n{}",
            postfix.diagnostics()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let message = &mx.messages()[0];
    assert_eq!(message.rcpt_addrs(), ["bob@example.org"]);
    assert!(
        message.tls.is_some(),
        "Postfix did not use STARTTLS\n{}",
        postfix.log()
    );
    // The log line the test through `serve` looks for.
    let established = format!("TLS connection established to {}", mx.addr.ip());
    assert!(postfix.log().contains(&established), "{}", postfix.log());
    let received = received_fields(&message.data_str());
    assert!(
        received
            .first()
            .is_some_and(|r| r.contains(&format!("by {POSTFIX_HOSTNAME}"))),
        "{received:?}"
    );

    drop(postfix);
    let left = instance_processes(&config_dir);
    assert!(left.is_empty(), "Postfix processes left behind: {left:?}");
}

/// Both ways into Postfix, its own `sendmail -C DIR` and `sendmail -bs`
/// spoken to over its pipes (which also checks the client's pipe mode).
#[test]
fn harness_postfix_sendmail_and_sendmail_bs_inject_into_the_instance() {
    const TEST: &str = "harness_postfix_sendmail_and_sendmail_bs";
    if !require(TEST, &[postfix_unavailable]) {
        return;
    }
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let postfix = Postfix::start(mx.addr, "").unwrap_or_else(|reason| panic!("{reason}"));

    let out = postfix.sendmail(
        &["-f", "alice@example.net", "bob@example.org"],
        MESSAGE.as_bytes(),
    );
    assert_eq!(out.status, 0, "Postfix sendmail: {}", out.stderr);

    let mut child = postfix
        .sendmail_command(&["-bs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Postfix's sendmail -bs");
    let replies = child.stdout.take().expect("piped stdout");
    let commands = child.stdin.take().expect("piped stdin");
    let mut client = SmtpClient::over_pipes(replies, commands);
    client.command_expect("EHLO client.example.test", 250);
    client.command_expect("MAIL FROM:<carol@example.net>", 250);
    client.command_expect("RCPT TO:<dave@example.org>", 250);
    client.command_expect("DATA", 354);
    let reply = client.send_data(MESSAGE);
    assert_eq!(reply.code, 250, "{}", client.transcript);
    client.command_expect("QUIT", 221);
    drop(client);
    assert!(child.wait().expect("wait for sendmail -bs").success());

    let deadline = Instant::now() + WAIT;
    while mx.messages().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "Postfix relayed {} of 2 messages\n{}",
            mx.messages().len(),
            postfix.diagnostics()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let mut senders: Vec<String> = mx.messages().into_iter().map(|m| m.mail_from).collect();
    senders.sort();
    assert_eq!(senders, ["alice@example.net", "carol@example.net"]);
}

#[test]
fn harness_client_sends_requiretls_and_dsn_parameters_after_starttls() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").requiretls().start();
    let mut client = SmtpClient::connect(mx.addr);
    let before = client.command_expect("EHLO client.example.test", 250);
    assert!(!before.has_capability("REQUIRETLS"), "{before:?}");
    client.starttls("mx1.example.org");
    assert!(client.is_tls());
    let after = client.command_expect("EHLO client.example.test", 250);
    assert!(after.has_capability("REQUIRETLS"), "{after:?}");
    client.command_expect(
        "MAIL FROM:<alice@example.net> REQUIRETLS RET=HDRS ENVID=x",
        250,
    );
    client.command_expect(
        "RCPT TO:<bob@example.org> NOTIFY=SUCCESS ORCPT=rfc822;bob@example.org",
        250,
    );
    client.command_expect("DATA", 354);
    let reply = client.send_data(".leading dot\nbody\n");
    assert_eq!(reply.code, 250, "{}", client.transcript);
    client.command("QUIT");

    let message = &mx.wait_for_messages(1, WAIT)[0];
    assert!(has_param(&message.mail_params, "REQUIRETLS"));
    assert!(has_param(&message.rcpts[0].1, "NOTIFY=SUCCESS"));
    assert!(
        message.data_str().starts_with(".leading dot\r\n"),
        "{:?}",
        message.data_str()
    );
}
