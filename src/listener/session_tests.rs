//! The session state machine over `tokio::io::duplex`.

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;
use crate::envelope::Notify;

#[derive(Default)]
struct MemorySink {
    stored: Mutex<Vec<(Envelope, Vec<u8>)>>,
    fail: bool,
}

impl MessageSink for MemorySink {
    fn store(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        if self.fail {
            return Err(QueueError::NoQueueDir);
        }
        self.stored
            .lock()
            .unwrap()
            .push((envelope.clone(), message.to_vec()));
        Ok(())
    }
}

fn settings(listen: ListenConfig) -> Settings {
    Settings {
        hostname: "relay.example.net".into(),
        domain: "example.net".into(),
        max_message_size: 10_000,
        listen,
        tls: None,
        credentials: None,
    }
}

struct Peer {
    reader: BufReader<tokio::io::ReadHalf<DuplexStream>>,
    writer: tokio::io::WriteHalf<DuplexStream>,
    sink: Arc<MemorySink>,
    task: tokio::task::JoinHandle<Result<(), SessionEnd>>,
    _shutdown: watch::Sender<bool>,
}

fn start_with(settings: Settings, client: Client, allowed: bool, sink: MemorySink) -> Peer {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let sink = Arc::new(sink);
    let (tx, rx) = watch::channel(false);
    let dyn_sink: Arc<dyn MessageSink> = sink.clone();
    let mut session = Session::new(theirs, Arc::new(settings), client, allowed, dyn_sink, rx);
    let task = tokio::spawn(async move { session.run().await });
    let (r, w) = tokio::io::split(ours);
    Peer {
        reader: BufReader::new(r),
        writer: w,
        sink,
        task,
        _shutdown: tx,
    }
}

fn loopback() -> Client {
    Client::Tcp("127.0.0.1:40000".parse().unwrap())
}

fn start() -> Peer {
    start_with(
        settings(ListenConfig::default()),
        loopback(),
        true,
        MemorySink::default(),
    )
}

impl Peer {
    /// Reads one (possibly multi-line) reply, returned whole.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).await.unwrap();
            assert!(n > 0, "connection closed; so far: {all}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    async fn greet(&mut self) -> String {
        let greeting = self.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        self.cmd("EHLO client.example.net").await
    }

    fn stored(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.sink.stored.lock().unwrap().clone()
    }
}

/// The reply code and enhanced code, e.g. `550 5.6.11`.
fn code(reply: &str) -> String {
    reply
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn ehlo_keywords_on_plaintext_rfc8689_section_2() {
    let mut p = start();
    let ehlo = p.greet().await;
    for kw in [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
    ] {
        assert!(ehlo.contains(kw), "{kw} missing: {ehlo}");
    }
    assert!(!ehlo.contains("REQUIRETLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    // No certificate configured here: no STARTTLS.
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(code(&p.cmd("STARTTLS").await), "502 5.5.1");
    assert_eq!(code(&p.cmd("VRFY x").await), "252 2.5.0");
    assert!(p.cmd("HELP").await.starts_with("214 "));
    assert_eq!(code(&p.cmd("QUIT").await), "221 2.0.0");
    assert!(p.task.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_transaction_keeps_dsn_parameters_rfc3461_section_4() {
    let mut p = start();
    p.greet().await;
    p.send(
        "MAIL FROM:<a@example.net> RET=HDRS ENVID=id+2B1 BODY=8BITMIME\r\n\
         RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org\r\n\
         RCPT TO:<c@example.org>\r\nDATA\r\n",
    )
    .await;
    assert_eq!(code(&p.reply().await), "250 2.1.0");
    assert_eq!(code(&p.reply().await), "250 2.1.5");
    assert_eq!(code(&p.reply().await), "250 2.1.5");
    assert!(p.reply().await.starts_with("354 "));
    let done = p.cmd("Subject: hi\r\n\r\n..dot\r\n.").await;
    assert_eq!(code(&done), "250 2.0.0", "{done}");
    let stored = p.stored();
    let (env, message) = &stored[0];
    assert!(done.contains(&env.id));
    assert_eq!(env.sender, "a@example.net");
    assert_eq!(env.dsn.ret, Some(crate::envelope::Ret::Hdrs));
    assert_eq!(env.dsn.envid.as_deref(), Some("id+1"));
    assert_eq!(
        env.recipients[0].notify,
        Some(vec![Notify::Success, Notify::Failure])
    );
    assert_eq!(
        env.recipients[0].orcpt.as_deref(),
        Some("rfc822;b@example.org")
    );
    assert_eq!(env.recipients[1].notify, None);
    assert!(!env.security.requiretls);
    let text = String::from_utf8_lossy(message);
    assert!(text.starts_with("Received: from client.example.net ([127.0.0.1])\r\n\tby relay.example.net (smarthost) with ESMTP id "), "{text}");
    assert!(text.ends_with("Subject: hi\r\n\r\n.dot\r\n"), "{text}");
}

#[tokio::test]
async fn requiretls_on_plaintext_is_refused_rfc8689_section_2() {
    let mut p = start();
    p.greet().await;
    let r = p.cmd("MAIL FROM:<a@example.net> REQUIRETLS").await;
    assert_eq!(code(&r), "530 5.7.10", "{r}");
    assert_eq!(code(&p.cmd("RCPT TO:<b@example.org>").await), "503 5.5.1");
}

#[tokio::test]
async fn requiretls_on_plaintext_loopback_only_when_opted_in() {
    let listen = ListenConfig {
        requiretls_plaintext_loopback: true,
        ..ListenConfig::default()
    };
    let mut p = start_with(
        settings(listen.clone()),
        loopback(),
        true,
        MemorySink::default(),
    );
    p.greet().await;
    assert_eq!(
        code(&p.cmd("MAIL FROM:<a@example.net> REQUIRETLS").await),
        "250 2.1.0"
    );
    p.cmd("RCPT TO:<b@example.org>").await;
    p.cmd("DATA").await;
    let done = p
        .cmd("TLS-Required: No\r\nSubject: x\r\n\r\nbody\r\n.")
        .await;
    assert_eq!(code(&done), "250 2.0.0");
    let (env, message) = &p.stored()[0];
    // RFC 8689 §4.1: the parameter wins; the header is kept.
    assert!(env.security.requiretls && !env.security.tls_optional);
    assert!(String::from_utf8_lossy(message).contains("TLS-Required: No\r\n"));

    let remote = Client::Tcp("192.0.2.7:4000".parse().unwrap());
    let mut p = start_with(settings(listen), remote, true, MemorySink::default());
    p.greet().await;
    assert_eq!(
        code(&p.cmd("MAIL FROM:<a@example.net> REQUIRETLS").await),
        "530 5.7.10"
    );
}

#[tokio::test]
async fn tls_required_no_header_marks_the_message_rfc8689_section_4_1() {
    let mut p = start();
    p.greet().await;
    for (header, expected) in [
        ("TLS-Required: No\r\n", true),
        ("TLS-Required: No\r\nTLS-Required: No\r\n", false),
        ("TLS-Required: Yes\r\n", false),
    ] {
        p.cmd("MAIL FROM:<a@example.net>").await;
        p.cmd("RCPT TO:<b@example.org>").await;
        p.cmd("DATA").await;
        let done = p.cmd(&format!("{header}Subject: x\r\n\r\nbody\r\n.")).await;
        assert_eq!(code(&done), "250 2.0.0");
        let last = p.stored().pop().unwrap();
        assert_eq!(last.0.security.tls_optional, expected, "{header:?}");
    }
}

#[tokio::test]
async fn storage_failure_is_451_rfc5321_section_4_2_5() {
    let sink = MemorySink {
        fail: true,
        ..MemorySink::default()
    };
    let mut p = start_with(settings(ListenConfig::default()), loopback(), true, sink);
    p.greet().await;
    p.cmd("MAIL FROM:<a@example.net>").await;
    p.cmd("RCPT TO:<b@example.org>").await;
    p.cmd("DATA").await;
    assert_eq!(code(&p.cmd("x\r\n.").await), "451 4.3.0");
    // The transaction is over; the client may try again.
    assert_eq!(code(&p.cmd("MAIL FROM:<a@example.net>").await), "250 2.1.0");
}

#[tokio::test]
async fn bare_lf_is_refused_and_smuggled_commands_stay_data_rfc5321_section_2_3_8() {
    let mut p = start();
    p.greet().await;
    p.cmd("MAIL FROM:<a@example.net>").await;
    p.cmd("RCPT TO:<b@example.org>").await;
    p.cmd("DATA").await;
    p.send(
        "Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n.\r\n",
    )
    .await;
    let r = p.reply().await;
    assert_eq!(code(&r), "550 5.6.11", "{r}");
    assert_eq!(code(&p.cmd("NOOP").await), "250 2.0.0");
    assert!(p.stored().is_empty());
}

#[tokio::test]
async fn command_line_limit_rfc5321_section_4_5_3_1_4() {
    let mut p = start();
    p.greet().await;
    let long = format!("NOOP {}", "x".repeat(600));
    assert_eq!(code(&p.cmd(&long).await), "500 5.5.2");
    let huge = format!("NOOP {}", "x".repeat(20_000));
    assert_eq!(code(&p.cmd(&huge).await), "500 5.5.2");
    assert_eq!(code(&p.cmd("NOOP").await), "250 2.0.0");
    // MAIL may be longer by the bytes its parameters add (RFC 8689 §2).
    let local = "l".repeat(250);
    let domain = vec!["d".repeat(59); 4].join(".");
    let mail = format!("MAIL FROM:<{local}@{domain}.example> REQUIRETLS");
    assert!(mail.len() + 2 > 512);
    assert_eq!(code(&p.cmd(&mail).await), "530 5.7.10");
}

#[tokio::test]
async fn too_many_recipients_rfc5321_section_4_5_3_1_10() {
    let listen = ListenConfig {
        max_recipients: 2,
        ..ListenConfig::default()
    };
    let mut p = start_with(settings(listen), loopback(), true, MemorySink::default());
    p.greet().await;
    p.cmd("MAIL FROM:<a@example.net>").await;
    assert_eq!(code(&p.cmd("RCPT TO:<b1@example.org>").await), "250 2.1.5");
    assert_eq!(code(&p.cmd("RCPT TO:<b2@example.org>").await), "250 2.1.5");
    assert_eq!(code(&p.cmd("RCPT TO:<b3@example.org>").await), "452 4.5.3");
}

#[tokio::test]
async fn strangers_cannot_relay() {
    let stranger = Client::Tcp("192.0.2.9:4000".parse().unwrap());
    let mut p = start_with(
        settings(ListenConfig::default()),
        stranger,
        false,
        MemorySink::default(),
    );
    p.greet().await;
    assert_eq!(code(&p.cmd("MAIL FROM:<a@example.net>").await), "530 5.7.0");
    assert_eq!(code(&p.cmd("RCPT TO:<b@example.org>").await), "503 5.5.1");
    assert_eq!(code(&p.cmd("DATA").await), "503 5.5.1");
    // AUTH needs TLS first.
    assert_eq!(code(&p.cmd("AUTH PLAIN AGFAYg==").await), "538 5.7.11");
    assert!(p.stored().is_empty());
}

#[tokio::test]
async fn mail_loops_are_refused_rfc5321_section_6_3() {
    let mut p = start();
    p.greet().await;
    p.cmd("MAIL FROM:<a@example.net>").await;
    p.cmd("RCPT TO:<b@example.org>").await;
    p.cmd("DATA").await;
    let hops = "Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n".repeat(101);
    assert_eq!(
        code(&p.cmd(&format!("{hops}\r\nbody\r\n.")).await),
        "554 5.4.6"
    );
}

#[tokio::test]
async fn sequence_errors_and_syntax_rfc5321_section_4_1_4() {
    let mut p = start();
    p.reply().await;
    assert_eq!(code(&p.cmd("MAIL FROM:<a@example.net>").await), "503 5.5.1");
    assert_eq!(code(&p.cmd("EHLO").await), "501 5.5.4");
    p.cmd("EHLO c.example").await;
    assert_eq!(code(&p.cmd("MAIL FROM:a@example.net").await), "501 5.5.4");
    assert_eq!(
        code(&p.cmd("MAIL FROM:<a@example.net> FOO=1").await),
        "555 5.5.4"
    );
    assert_eq!(code(&p.cmd("MAIL FROM:<a>").await), "553 5.1.7");
    assert_eq!(code(&p.cmd("MAIL FROM:<>").await), "250 2.1.0");
    assert_eq!(code(&p.cmd("MAIL FROM:<>").await), "503 5.5.1");
    assert_eq!(
        code(&p.cmd("RCPT TO:<jürgen@example.org>").await),
        "553 5.6.7"
    );
    assert_eq!(code(&p.cmd("RCPT TO:<bob>").await), "553 5.1.3");
    assert_eq!(code(&p.cmd("RCPT TO:<Postmaster>").await), "250 2.1.5");
    assert_eq!(code(&p.cmd("RSET").await), "250 2.0.0");
    assert_eq!(code(&p.cmd("DATA").await), "503 5.5.1");
    assert_eq!(code(&p.cmd("FROB").await), "500 5.5.1");
}

#[tokio::test]
async fn local_client_is_trusted_and_bare_names_are_qualified() {
    let client = Client::Local {
        user: "alice".into(),
        uid: 1000,
    };
    let mut p = start_with(
        settings(ListenConfig::default()),
        client,
        true,
        MemorySink::default(),
    );
    let ehlo = p.greet().await;
    assert!(ehlo.contains("REQUIRETLS"), "{ehlo}");
    assert_eq!(
        code(&p.cmd("MAIL FROM:<alice> REQUIRETLS").await),
        "250 2.1.0"
    );
    assert_eq!(code(&p.cmd("RCPT TO:<bob>").await), "250 2.1.5");
    p.cmd("DATA").await;
    assert_eq!(code(&p.cmd("x\r\n.").await), "250 2.0.0");
    let (env, message) = &p.stored()[0];
    assert_eq!(env.sender, "alice@example.net");
    assert_eq!(env.recipients[0].address, "bob@example.net");
    assert_eq!(env.submitted_by, "alice");
    assert!(env.security.requiretls);
    assert!(String::from_utf8_lossy(message).contains("(from userid 1000)"));
}

#[tokio::test]
async fn shutdown_between_transactions_is_421() {
    let (ours, theirs) = tokio::io::duplex(4096);
    let (tx, rx) = watch::channel(false);
    let sink: Arc<dyn MessageSink> = Arc::new(MemorySink::default());
    let mut session = Session::new(
        theirs,
        Arc::new(settings(ListenConfig::default())),
        loopback(),
        true,
        sink,
        rx,
    );
    let task = tokio::spawn(async move { session.run().await });
    let mut reader = BufReader::new(ours);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    tx.send(true).unwrap();
    line.clear();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("421 4.3.2"), "{line}");
    assert!(matches!(task.await.unwrap(), Err(SessionEnd::Shutdown)));
}

#[tokio::test]
async fn size_parameter_and_limit_rfc1870() {
    let mut p = start();
    p.greet().await;
    assert_eq!(
        code(&p.cmd("MAIL FROM:<a@example.net> SIZE=20000").await),
        "552 5.3.4"
    );
    p.cmd("MAIL FROM:<a@example.net> SIZE=100").await;
    p.cmd("RCPT TO:<b@example.org>").await;
    p.cmd("DATA").await;
    let big = "x".repeat(11_000);
    assert_eq!(code(&p.cmd(&format!("{big}\r\n.")).await), "552 5.3.4");
}
