//! The relayhost listener end to end: `smarthost serve` on a free
//! 127.0.0.1 port, driven over raw SMTP (plaintext and STARTTLS) by a
//! blocking client, relaying to the World's fake MX hosts; and
//! `sendmail -bs` driven with the dialogue Symfony Mailer speaks. Each
//! test is named after the RFC section it checks.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use support::daemon::{Daemon, SmtpClient};
use support::env::toml_string;
use support::world::{zone, World, MX1};
use support::{free_port_on, SignedZones};

const WAIT: Duration = Duration::from_secs(20);

/// The name the daemon's certificate is issued for (the World's hostname).
const RELAY_NAME: &str = "client.example.net";

/// Configures `[listen]` on a free 127.0.0.1 port with a certificate from
/// the World's CA (when `own_cert`) and `extra` lines, and starts the
/// daemon.
fn start(world: &World, own_cert: bool, extra: &str) -> Daemon {
    let port = free_port_on(&[Ipv4Addr::LOCALHOST]);
    let mut lines = format!("addresses = [\"127.0.0.1:{port}\"]\n{extra}\n");
    if own_cert {
        let cert = world.ca.issue(&[RELAY_NAME]);
        let dir = world.env.dir.path();
        let (cert_path, key_path) = (dir.join("relay-cert.pem"), dir.join("relay-key.pem"));
        std::fs::write(&cert_path, &cert.cert_pem).unwrap();
        std::fs::write(&key_path, &cert.key_pem).unwrap();
        lines.push_str(&format!(
            "cert_file = {}\nkey_file = {}\n",
            toml_string(&cert_path.to_string_lossy()),
            toml_string(&key_path.to_string_lossy())
        ));
    }
    world.add_to_table("listen", &lines);
    Daemon::start(&world.env, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

fn ca_pem(world: &World) -> PathBuf {
    world.env.dir.path().join("ca.pem")
}

fn code(reply: &str) -> String {
    reply
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Greeting and EHLO; returns the EHLO reply.
fn hello(client: &mut SmtpClient) -> String {
    let greeting = client.reply();
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = client.cmd("EHLO mta.example.net");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    ehlo
}

/// STARTTLS, the handshake (verified against `roots`) and EHLO again.
fn tls(mut client: SmtpClient, roots: &std::path::Path) -> (SmtpClient, String) {
    assert_eq!(code(&client.cmd("STARTTLS")), "220 2.0.0");
    let mut client = client.start_tls(RELAY_NAME, roots);
    let ehlo = client.cmd("EHLO mta.example.net");
    (client, ehlo)
}

fn queue_id(reply: &str) -> String {
    assert_eq!(code(reply), "250 2.0.0", "{reply}");
    reply
        .trim()
        .rsplit(' ')
        .next()
        .expect("queued as ID")
        .to_owned()
}

/// Sends one message; returns the reply to the final dot.
fn transaction(client: &mut SmtpClient, mail: &str, rcpts: &[&str], body: &str) -> String {
    let r = client.cmd(mail);
    assert_eq!(code(&r), "250 2.1.0", "{r}");
    for rcpt in rcpts {
        let r = client.cmd(rcpt);
        assert_eq!(code(&r), "250 2.1.5", "{r}");
    }
    assert!(client.cmd("DATA").starts_with("354 "));
    client.send(body.as_bytes());
    client.cmd(".")
}

fn stop(daemon: &mut Daemon) {
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT), 0, "{}", daemon.log());
}

#[test]
fn requiretls_is_offered_only_after_starttls_rfc8689_section_2_rfc3207_section_4_2() {
    // No certificate configured: a self-signed one is made beside the queue.
    let world = World::new(zone(), "");
    let daemon = start(&world, false, "");
    let cert = world.env.queue_dir.join("listener/cert.pem");
    assert!(cert.is_file(), "self-signed certificate kept in the queue");
    let mut client = daemon.connect();
    let ehlo = hello(&mut client);
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("REQUIRETLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let r = client.cmd("MAIL FROM:<alice@example.net> REQUIRETLS");
    assert_eq!(code(&r), "530 5.7.10", "{r}");
    let (mut client, ehlo) = tls(client, &cert);
    assert!(ehlo.contains("REQUIRETLS"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(code(&client.cmd("QUIT")), "221 2.0.0");
}

#[test]
fn pipelined_command_after_starttls_is_discarded_rfc3207_section_4_2() {
    let world = World::new(zone(), "");
    let daemon = start(&world, true, "");
    let mut client = daemon.connect();
    hello(&mut client);
    client.send(b"STARTTLS\r\nMAIL FROM:<injected@example.net>\r\n");
    assert_eq!(code(&client.reply()), "220 2.0.0");
    let mut client = client.start_tls(RELAY_NAME, &ca_pem(&world));
    // The session starts over: no EHLO yet, and no injected MAIL.
    assert_eq!(code(&client.cmd("RCPT TO:<bob@example.org>")), "503 5.5.1");
    client.cmd("EHLO mta.example.net");
    assert_eq!(code(&client.cmd("RCPT TO:<bob@example.org>")), "503 5.5.1");
    daemon.wait_for_log("discarded data pipelined after STARTTLS", WAIT);
}

#[test]
fn requiretls_over_tls_is_queued_tagged_and_relayed_with_requiretls_rfc8689_section_4_1() {
    let zones = SignedZones::new()
        .mx("example", 10, "mx1.example")
        .a("mx1.example", &MX1.to_string());
    let world = World::signed(zones, "");
    let mx = world.mx(MX1, "mx1.example").requiretls().start();
    let mut daemon = start(&world, true, "");
    let mut client = daemon.connect();
    hello(&mut client);
    let (mut client, _) = tls(client, &ca_pem(&world));
    let reply = transaction(
        &mut client,
        "MAIL FROM:<alice@example.net> REQUIRETLS",
        &["RCPT TO:<bob@example>"],
        "TLS-Required: No\r\nSubject: secret\r\n\r\nHello.\r\n",
    );
    let id = queue_id(&reply);
    client.cmd("QUIT");
    let got = mx.wait_for_messages(1, WAIT);
    assert!(
        got[0].mail_params.iter().any(|p| p == "REQUIRETLS"),
        "{:?}",
        got[0].mail_params
    );
    // The header is kept though the parameter overrides it.
    assert!(got[0].data_str().contains("TLS-Required: No\r\n"));
    assert!(got[0].data_str().contains("with ESMTPS id"));
    let log = daemon.wait_for_log("message accepted", WAIT);
    assert!(log.contains("requiretls=true"), "{log}");
    stop(&mut daemon);
    let out = world.env.run(&["queue", "show", "--json", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("queue show --json prints JSON");
    assert_eq!(json["envelope"]["security"]["requiretls"], true, "{json}");
    assert_eq!(
        json["envelope"]["security"]["tls_optional"], false,
        "{json}"
    );
}

#[test]
fn dsn_parameters_are_kept_and_relayed_over_verified_tls_rfc3461_section_5_2_1() {
    let world = World::new(zone(), "");
    world.add_to_table("tls", "level = \"verify\"");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let daemon = start(&world, true, "");
    let mut client = daemon.connect();
    hello(&mut client);
    let (mut client, _) = tls(client, &ca_pem(&world));
    let reply = transaction(
        &mut client,
        "MAIL FROM:<alice@example.net> RET=HDRS ENVID=env+2B1",
        &["RCPT TO:<bob@single.example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2B@single.example.org"],
        "Subject: dsn\r\n\r\nHello.\r\n",
    );
    queue_id(&reply);
    let got = mx.wait_for_messages(1, WAIT);
    let m = &got[0];
    assert!(m.tls.is_some(), "relayed over TLS");
    assert!(
        m.mail_params.iter().any(|p| p == "RET=HDRS"),
        "{:?}",
        m.mail_params
    );
    assert!(
        m.mail_params.iter().any(|p| p == "ENVID=env+2B1"),
        "{:?}",
        m.mail_params
    );
    let params = &m.rcpts[0].1;
    assert!(
        params.iter().any(|p| p == "NOTIFY=SUCCESS,FAILURE"),
        "{params:?}"
    );
    assert!(
        params
            .iter()
            .any(|p| p == "ORCPT=rfc822;Bob+2B@single.example.org"),
        "{params:?}"
    );
    let data = m.data_str();
    assert!(data.starts_with("Received: from mta.example.net ([127.0.0.1])\r\n\tby client.example.net (smarthost) with ESMTPS id "), "{data}");
    assert!(data.contains("Subject: dsn\r\n"));
    daemon.wait_for_log("delivered", WAIT);
}

#[test]
fn never_an_open_relay_rfc5321_section_7_1() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let daemon = start(&world, true, "allow = [\"127.0.0.1/32\"]");
    let stranger = Ipv4Addr::new(127, 0, 0, 2);
    let mut client = daemon.connect_from(stranger);
    hello(&mut client);
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "530 5.7.0"
    );
    assert_eq!(code(&client.cmd("RCPT TO:<bob@example.org>")), "503 5.5.1");
    assert_eq!(code(&client.cmd("DATA")), "503 5.5.1");
    // TLS alone changes nothing, and AUTH without an auth file is absent.
    let (mut client, ehlo) = tls(client, &ca_pem(&world));
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "530 5.7.0"
    );
    assert_eq!(
        code(&client.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")),
        "502 5.5.1"
    );
    drop(client);
    // The allowed address still relays.
    let mut ok = daemon.connect();
    hello(&mut ok);
    queue_id(&transaction(
        &mut ok,
        "MAIL FROM:<alice@example.net>",
        &["RCPT TO:<bob@example.org>"],
        "Subject: ok\r\n\r\nok\r\n",
    ));
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example.org"]);
}

fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"listener-test-salt").unwrap();
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

#[test]
fn auth_over_tls_lets_an_outside_client_relay_rfc4954_section_4() {
    use base64::Engine as _;
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let auth = world.env.dir.path().join("auth.toml");
    std::fs::write(&auth, format!("mta = {:?}\n", argon2_hash("s3cret"))).unwrap();
    let extra = format!(
        "allow = [\"127.0.0.1/32\"]\nauth_file = {}",
        toml_string(&auth.to_string_lossy())
    );
    let daemon = start(&world, true, &extra);
    let mut client = daemon.connect_from(Ipv4Addr::new(127, 0, 0, 2));
    let ehlo = hello(&mut client);
    assert!(!ehlo.contains("AUTH"), "no AUTH before TLS: {ehlo}");
    let plain = |user: &str, pass: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
    };
    let r = client.cmd(&format!("AUTH PLAIN {}", plain("mta", "s3cret")));
    assert_eq!(code(&r), "538 5.7.11", "{r}");
    let (mut client, ehlo) = tls(client, &ca_pem(&world));
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    let r = client.cmd(&format!("AUTH PLAIN {}", plain("mta", "wrong")));
    assert_eq!(code(&r), "535 5.7.8", "{r}");
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "530 5.7.0"
    );
    let r = client.cmd(&format!("AUTH PLAIN {}", plain("mta", "s3cret")));
    assert_eq!(code(&r), "235 2.7.0", "{r}");
    queue_id(&transaction(
        &mut client,
        "MAIL FROM:<alice@example.net>",
        &["RCPT TO:<bob@example.org>"],
        "Subject: auth\r\n\r\nok\r\n",
    ));
    let got = mx.wait_for_messages(1, WAIT);
    assert!(
        got[0].data_str().contains("with ESMTPSA id"),
        "{}",
        got[0].data_str()
    );
    assert!(!daemon.log().contains("s3cret"), "password never logged");
}

#[test]
fn bare_lf_long_lines_and_too_many_recipients_rfc5321_sections_2_3_8_and_4_5_3_1() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let daemon = start(&world, true, "max_recipients = 2");
    let mut client = daemon.connect();
    hello(&mut client);
    let long = format!("NOOP {}", "x".repeat(600));
    assert_eq!(code(&client.cmd(&long)), "500 5.5.2");
    client.cmd("MAIL FROM:<alice@example.net>");
    assert_eq!(code(&client.cmd("RCPT TO:<a@example.org>")), "250 2.1.5");
    assert_eq!(code(&client.cmd("RCPT TO:<b@example.org>")), "250 2.1.5");
    assert_eq!(code(&client.cmd("RCPT TO:<c@example.org>")), "452 4.5.3");
    assert!(client.cmd("DATA").starts_with("354 "));
    // A smuggling attempt: LF.LF followed by a second transaction.
    client.send(
        b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n",
    );
    assert_eq!(code(&client.reply()), "550 5.6.11");
    assert_eq!(code(&client.cmd("RCPT TO:<a@example.org>")), "503 5.5.1");
    client.cmd("QUIT");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mx.sessions(), 0, "nothing was relayed");
}

#[test]
fn sigterm_finishes_the_open_transaction_and_exits_0_rfc5321_section_3_8() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let mut daemon = start(&world, true, "");
    let mut client = daemon.connect();
    hello(&mut client);
    client.cmd("MAIL FROM:<alice@example.net>");
    client.cmd("RCPT TO:<bob@example.org>");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_for_log("SIGTERM", WAIT);
    assert!(client.cmd("DATA").starts_with("354 "));
    client.send(b"Subject: last\r\n\r\nbody\r\n");
    queue_id(&client.cmd("."));
    // Between transactions the session is closed for the shutdown.
    assert_eq!(code(&client.reply()), "421 4.3.2");
    assert_eq!(daemon.wait_exit(WAIT), 0, "{}", daemon.log());
    // The message is safe in the queue and goes out with the next run.
    world.queue_run(&[]);
    assert_eq!(mx.wait_for_messages(1, WAIT).len(), 1);
}

#[test]
fn sendmail_bs_speaks_the_symfony_mailer_dialogue() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    // Symfony Mailer's SendmailTransport runs `sendmail -bs` and speaks
    // SMTP through the pipe: EHLO with an address literal, MAIL, RCPT,
    // DATA, the message with CRLF line ends, ".", QUIT.
    let dialogue = "EHLO [127.0.0.1]\r\n\
         MAIL FROM:<app@example.net>\r\n\
         RCPT TO:<bob@example.org>\r\n\
         DATA\r\n\
         From: app@example.net\r\nTo: bob@example.org\r\nSubject: Symfony\r\n\
         Message-ID: <1@example.net>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello from Symfony.\r\n..leading dot\r\n\
         .\r\n\
         QUIT\r\n";
    let out = world.env.sendmail(&["-bs"], dialogue.as_bytes());
    assert_eq!(out.status, 0, "{}", out.stderr);
    let replies: Vec<String> = out.stdout.lines().map(code).collect();
    assert!(out.stdout.starts_with("220 "), "{}", out.stdout);
    assert!(replies.contains(&"250 2.1.0".to_owned()), "{}", out.stdout);
    assert!(replies.contains(&"250 2.0.0".to_owned()), "{}", out.stdout);
    assert!(out.stdout.ends_with("221 2.0.0 Bye\r\n"), "{}", out.stdout);
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].mail_from, "app@example.net");
    let data = got[0].data_str();
    assert!(data.contains("Subject: Symfony\r\n"), "{data}");
    assert!(data.contains("\r\n.leading dot\r\n"), "{data}");
    assert!(data.contains("(from userid "), "{data}");
}

#[test]
fn connection_limits_and_command_timeout_rfc5321_section_4_5_3_2_7() {
    let world = World::new(zone(), "");
    let daemon = start(
        &world,
        true,
        "max_connections_per_client = 1\ncommand_timeout = 1",
    );
    let mut first = daemon.connect();
    assert!(first.reply().starts_with("220 "));
    let mut second = daemon.connect();
    assert_eq!(code(&second.reply()), "421 4.7.0");
    // A client on another address still gets in.
    let mut other = daemon.connect_from(Ipv4Addr::new(127, 0, 0, 3));
    assert!(other.reply().starts_with("220 "));
    // The silent first client is dropped after command_timeout.
    assert_eq!(code(&first.reply()), "421 4.4.2");
    assert!(first.closed());
}

#[test]
fn sighup_reloads_the_configuration_and_cron_runs_stay_quiet() {
    let world = World::new(zone(), "");
    let mut daemon = start(&world, true, "allow = [\"127.0.0.1/32\"]");
    let stranger = Ipv4Addr::new(127, 0, 0, 2);
    let mut client = daemon.connect_from(stranger);
    hello(&mut client);
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "530 5.7.0"
    );
    drop(client);
    // A queue run from cron finds the queue held and exits quietly.
    let out = world.queue_run(&[]);
    assert!(
        out.stderr.contains("another smarthost process"),
        "{}",
        out.stderr
    );

    let config = world
        .config()
        .replace("allow = [\"127.0.0.1/32\"]", "allow = [\"127.0.0.0/8\"]");
    std::fs::write(&world.env.config_path, config).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log(
        "SIGHUP: configuration, certificate and auth file reloaded",
        WAIT,
    );
    let mut client = daemon.connect_from(stranger);
    hello(&mut client);
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "250 2.1.0"
    );
    drop(client);

    // A broken file keeps the old configuration in force.
    std::fs::write(&world.env.config_path, "no_such_key = 1\n").unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("configuration not reloaded", WAIT);
    let mut client = daemon.connect_from(stranger);
    hello(&mut client);
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "250 2.1.0"
    );
    drop(client);
    stop(&mut daemon);
}

#[test]
fn auth_login_over_tls_rfc4954_section_4() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let world = World::new(zone(), "");
    let auth = world.env.dir.path().join("auth.toml");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&auth, format!("mta = {hash:?}\n")).unwrap();
    let extra = format!(
        "allow = []\nauth_file = {}",
        toml_string(&auth.to_string_lossy())
    );
    let daemon = start(&world, true, &extra);
    let mut client = daemon.connect();
    hello(&mut client);
    let (mut client, _) = tls(client, &ca_pem(&world));
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "530 5.7.0"
    );
    assert!(client.cmd("AUTH LOGIN").starts_with("334 VXNlcm5hbWU6"));
    assert!(client.cmd(&b64("mta")).starts_with("334 UGFzc3dvcmQ6"));
    assert_eq!(code(&client.cmd(&b64("pw"))), "235 2.7.0");
    assert_eq!(
        code(&client.cmd("MAIL FROM:<alice@example.net>")),
        "250 2.1.0"
    );
}

#[test]
fn queue_show_reads_a_delivered_message_while_serve_holds_the_queue() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    let mut daemon = start(&world, true, "");
    let mut client = daemon.connect();
    hello(&mut client);
    let reply = transaction(
        &mut client,
        "MAIL FROM:<alice@example.net>",
        &["RCPT TO:<bob@single.example.org>"],
        "Subject: record\r\n\r\nHello.\r\n",
    );
    let id = queue_id(&reply);
    mx.wait_for_messages(1, WAIT);
    daemon.wait_for_log("removed from the queue", WAIT);
    // The daemon still holds the store.
    let out = world.env.run(&["queue", "show", "--json", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["recipients"][0]["status"], "delivered", "{v}");
    assert!(v["finished_at"].is_i64(), "{v}");
    stop(&mut daemon);
}

#[test]
fn sendmail_bs_takes_alpines_arguments_and_plain_lf_dialogue() {
    let world = World::new(zone(), "");
    let mx = world.mx(MX1, "mx1.example.org").start();
    // Alpine runs `/usr/lib/sendmail -bs -odb -oem` (SENDMAIL-NOTES §7).
    let dialogue = "EHLO alpine.example.net\r\n\
         MAIL FROM:<me@example.net>\r\n\
         RCPT TO:<bob@example.org>\r\n\
         DATA\r\n\
         Subject: from Alpine\r\n\r\nHi.\r\n\
         .\r\n\
         QUIT\r\n";
    let out = world
        .env
        .sendmail(&["-bs", "-odb", "-oem"], dialogue.as_bytes());
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("250 2.0.0"), "{}", out.stdout);
    world.queue_run(&[]);
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpt_addrs(), ["bob@example.org"]);
    assert!(got[0].data_str().contains("Subject: from Alpine\r\n"));
}

#[test]
fn queue_administration_goes_through_the_daemon_while_it_holds_the_queue() {
    let world = World::new(zone(), "");
    let mx = world
        .mx(MX1, "mx1.example.org")
        .fail_first_n_sessions(1, 451, "4.3.0 try later")
        .start();
    let mut daemon = start(&world, true, "");
    let out = world.env.sendmail(
        &["-v", "-N", "never", "bob@single.example.org"],
        b"Subject: admin\n\nbody\n",
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let id = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("sendmail: queued as "))
        .expect("queue id")
        .trim()
        .to_owned();
    daemon.wait_for_log("deferred", WAIT);
    // The daemon holds the store; the command hands its request over.
    let hold = world.env.run(&["queue", "hold", &id]);
    assert_eq!(hold.status, 0, "{}", hold.stderr);
    assert!(hold.stdout.contains("put on hold"), "{}", hold.stdout);
    assert!(world.mailq().contains("(on hold)"));
    let retry = world.env.run(&["queue", "retry", &id]);
    assert_eq!(retry.status, 0, "{}", retry.stderr);
    assert_eq!(mx.wait_for_messages(1, WAIT).len(), 1, "retry delivered it");
    let missing = world.env.run(&["queue", "delete", &id]);
    assert_eq!(missing.status, 65, "{}", missing.stderr);
    daemon.wait_for_log("administrator action", WAIT);
    stop(&mut daemon);
}
