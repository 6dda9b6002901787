//! Session tests against a scripted SMTP server on an in-memory pipe.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::envelope::Ret;
use crate::smtp::error::Disposition;
use crate::smtp::reply::EnhancedCode;
use crate::smtp::AuthMethod;

// ---------------------------------------------------------------------------
// The scripted peer

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the fake server answers.
#[derive(Clone)]
struct Script {
    greeting: &'static str,
    /// Keyword lines of the EHLO reply before TLS.
    ehlo: Vec<&'static str>,
    /// Keyword lines of the EHLO reply after TLS.
    ehlo_tls: Vec<&'static str>,
    /// Replaces the whole EHLO reply (e.g. a refusal).
    ehlo_reply: Option<&'static str>,
    /// Server TLS configuration, for STARTTLS or implicit TLS.
    tls: Option<Arc<ServerConfig>>,
    implicit: bool,
    /// Sent verbatim (CRLF included) in reply to STARTTLS.
    starttls_reply: &'static str,
    auth_reply: &'static str,
    mail_reply: &'static str,
    rcpt_replies: HashMap<&'static str, &'static str>,
    data_reply: &'static str,
    dot_reply: &'static str,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            greeting: "220 mx.example.org ESMTP ready",
            ehlo: vec![],
            ehlo_tls: vec![],
            ehlo_reply: None,
            tls: None,
            implicit: false,
            starttls_reply: "220 2.0.0 go ahead\r\n",
            auth_reply: "235 2.7.0 authenticated",
            mail_reply: "250 2.1.0 sender ok",
            rcpt_replies: HashMap::new(),
            data_reply: "354 send it",
            dot_reply: "250 2.0.0 queued as 1",
        }
    }
}

/// What the fake server saw.
#[derive(Debug, Default)]
struct Transcript {
    /// Command lines, in order, without CRLF.
    lines: Vec<String>,
    /// The data lines as sent (still dot-stuffed), without the final dot.
    data: Vec<String>,
    /// MAIL arrived together with further commands (pipelined).
    pipelined: bool,
    /// A TLS session was established.
    tls: bool,
}

impl Transcript {
    fn count(&self, verb: &str) -> usize {
        self.lines.iter().filter(|l| l.starts_with(verb)).count()
    }

    fn line(&self, verb: &str) -> &str {
        self.lines
            .iter()
            .find(|l| l.starts_with(verb))
            .map_or("", |l| l.as_str())
    }
}

type Conn = BufReader<Box<dyn Io>>;

async fn send(conn: &mut Conn, text: &str) -> std::io::Result<()> {
    let mut text = text.to_owned();
    if !text.ends_with('\n') {
        text.push_str("\r\n");
    }
    conn.write_all(text.as_bytes()).await?;
    conn.flush().await
}

async fn read_line(conn: &mut Conn) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

async fn serve(stream: DuplexStream, script: Script) -> Transcript {
    let mut transcript = Transcript::default();
    // Errors end the conversation; the transcript says how far it got.
    let _ = serve_inner(stream, &script, &mut transcript).await;
    transcript
}

async fn serve_inner(
    stream: DuplexStream,
    script: &Script,
    t: &mut Transcript,
) -> std::io::Result<()> {
    let mut io: Box<dyn Io> = Box::new(stream);
    if script.implicit {
        io = Box::new(accept(io, script).await?);
        t.tls = true;
    }
    let mut conn = BufReader::new(io);
    send(&mut conn, script.greeting).await?;
    while let Some(line) = read_line(&mut conn).await? {
        t.lines.push(line.clone());
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => send(&mut conn, &ehlo_reply(script, t.tls)).await?,
            "HELO" => send(&mut conn, "250 mx.example.org").await?,
            "STARTTLS" => {
                send(&mut conn, script.starttls_reply).await?;
                if script.starttls_reply.starts_with("220 ") {
                    assert!(conn.buffer().is_empty(), "client pipelined after STARTTLS");
                    conn = BufReader::new(Box::new(accept(conn.into_inner(), script).await?));
                    t.tls = true;
                }
            }
            "AUTH" => auth(&mut conn, &line, script, t).await?,
            "MAIL" => {
                t.pipelined = !conn.buffer().is_empty();
                send(&mut conn, script.mail_reply).await?;
            }
            "RCPT" => {
                let address = line.split(['<', '>']).nth(1).unwrap_or_default();
                let reply = script.rcpt_replies.get(address).copied();
                send(&mut conn, reply.unwrap_or("250 2.1.5 recipient ok")).await?;
            }
            "DATA" => {
                send(&mut conn, script.data_reply).await?;
                if script.data_reply.starts_with("354") {
                    while let Some(data) = read_line(&mut conn).await? {
                        if data == "." {
                            break;
                        }
                        t.data.push(data);
                    }
                    send(&mut conn, script.dot_reply).await?;
                }
            }
            "QUIT" => {
                send(&mut conn, "221 2.0.0 bye").await?;
                break;
            }
            _ => send(&mut conn, "500 5.5.1 unknown command").await?,
        }
    }
    Ok(())
}

fn ehlo_reply(script: &Script, tls: bool) -> String {
    if let Some(reply) = script.ehlo_reply {
        return reply.to_owned();
    }
    let keywords = if tls { &script.ehlo_tls } else { &script.ehlo };
    let mut reply = String::from("250");
    reply.push(if keywords.is_empty() { ' ' } else { '-' });
    reply.push_str("mx.example.org hello\r\n");
    for (i, keyword) in keywords.iter().enumerate() {
        let sep = if i + 1 == keywords.len() { ' ' } else { '-' };
        reply.push_str(&format!("250{sep}{keyword}\r\n"));
    }
    reply
}

async fn accept(
    io: Box<dyn Io>,
    script: &Script,
) -> std::io::Result<tokio_rustls::server::TlsStream<Box<dyn Io>>> {
    let config = script.tls.clone().expect("script has a TLS configuration");
    TlsAcceptor::from(config).accept(io).await
}

async fn auth(
    conn: &mut Conn,
    line: &str,
    script: &Script,
    t: &mut Transcript,
) -> std::io::Result<()> {
    if line.eq_ignore_ascii_case("AUTH LOGIN") {
        for prompt in ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"] {
            send(conn, prompt).await?;
            if let Some(answer) = read_line(conn).await? {
                t.lines.push(answer);
            }
        }
    }
    send(conn, script.auth_reply).await
}

// ---------------------------------------------------------------------------
// Certificates

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

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

/// A server configuration with a self-signed certificate for `mx.example.org`.
fn self_signed() -> Arc<ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["mx.example.org".to_owned()]).unwrap();
    server_config(vec![certified.cert.der().clone()], &certified.signing_key)
}

/// A test CA: its root store, and server configurations for names it signs.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        Arc::new(roots)
    }

    fn server(&self, name: &str) -> Arc<ServerConfig> {
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        server_config(vec![cert.der().clone()], &key)
    }
}

// ---------------------------------------------------------------------------
// Log capture

/// Collects formatted log output for redaction checks.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One process-wide subscriber capturing everything at TRACE, installed
/// before any session runs. (A per-test `set_default` is unreliable while
/// other tests register the same call sites on other threads.)
fn log_buffer() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // Fails only if another subscriber is installed; then the
        // redaction test fails visibly.
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
}

// ---------------------------------------------------------------------------
// Client-side helpers

const MESSAGE: &[u8] = b"From: a@example.org\r\nSubject: test\r\n\r\nhello\r\n";

fn config(tls_mode: TlsMode) -> SessionConfig {
    log_buffer();
    let short = Duration::from_secs(10);
    SessionConfig {
        ehlo_name: "client.example.org".to_owned(),
        tls_mode,
        server_name: "mx.example.org".to_owned(),
        roots: Arc::new(RootCertStore::empty()),
        credentials: None,
        dane: None,
        min_version: None,
        timeouts: Timeouts {
            greeting: short,
            command: short,
            data_init: short,
            data_block: short,
            data_end: short,
            tls_handshake: short,
            quit: short,
        },
    }
}

fn recipient(address: &str) -> RecipientSpec {
    RecipientSpec {
        address: address.to_owned(),
        notify: None,
        orcpt: None,
    }
}

fn transaction<'a>(dsn: &'a DsnRequest, recipients: &[&str]) -> Transaction<'a> {
    Transaction {
        sender: "a@example.org",
        recipients: recipients.iter().map(|r| recipient(r)).collect(),
        dsn,
        message: MESSAGE,
        eight_bit: false,
        smtputf8: false,
        requiretls: false,
    }
}

async fn run(
    script: Script,
    cfg: &SessionConfig,
    txn: &Transaction<'_>,
) -> (Result<Delivered, SessionError>, Transcript) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer = tokio::spawn(serve(server, script));
    let result = deliver(client, cfg, txn).await;
    let transcript = peer.await.unwrap();
    (result, transcript)
}

fn verbs(t: &Transcript) -> Vec<&str> {
    t.lines
        .iter()
        .map(|l| l.split([' ', ':']).next().unwrap_or_default())
        .collect()
}

// ---------------------------------------------------------------------------
// Plaintext transactions

#[tokio::test]
async fn happy_path_with_pipelining() {
    let script = Script {
        ehlo: vec![
            "PIPELINING",
            "SIZE 1000000",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ],
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org", "c@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Opportunistic), &txn).await;
    let delivered = result.unwrap();
    assert!(t.pipelined, "MAIL and RCPT should arrive as one group");
    assert_eq!(
        verbs(&t),
        vec!["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    );
    assert_eq!(t.lines[0], "EHLO client.example.org");
    assert_eq!(
        t.line("MAIL"),
        format!("MAIL FROM:<a@example.org> SIZE={}", MESSAGE.len())
    );
    assert_eq!(t.lines[2], "RCPT TO:<b@example.org>");
    assert_eq!(
        t.data,
        vec!["From: a@example.org", "Subject: test", "", "hello"]
    );
    assert!(delivered.tls.is_none());
    assert!(delivered.capabilities.pipelining);
    assert_eq!(delivered.data_reply.as_ref().map(|r| r.code), Some(250));
    assert_eq!(delivered.recipients.len(), 2);
    assert!(delivered.recipients.iter().all(|r| r.accepted));
    assert_eq!(delivered.recipients[1].address, "c@example.org");
    assert_eq!(
        delivered.recipients[1].final_reply.text(),
        "250 2.0.0 queued as 1"
    );
}

#[tokio::test]
async fn happy_path_lock_step() {
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org", "c@example.org"]);
    let (result, t) = run(Script::default(), &config(TlsMode::Opportunistic), &txn).await;
    let delivered = result.unwrap();
    assert!(!t.pipelined, "without PIPELINING, MAIL waits for its reply");
    assert_eq!(
        verbs(&t),
        vec!["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]
    );
    assert_eq!(t.line("MAIL"), "MAIL FROM:<a@example.org>");
    assert!(delivered.recipients.iter().all(|r| r.accepted));
}

#[tokio::test]
async fn dot_stuffing_on_the_wire() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.message = b"Subject: dots\r\n\r\n.\r\n.x\r\nmid.dot\r\nno final newline";
    let (result, t) = run(Script::default(), &config(TlsMode::Plaintext), &txn).await;
    result.unwrap();
    assert_eq!(
        t.data,
        vec![
            "Subject: dots",
            "",
            "..",
            "..x",
            "mid.dot",
            "no final newline"
        ]
    );
}

#[tokio::test]
async fn null_sender() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.sender = "";
    let (result, t) = run(Script::default(), &config(TlsMode::Plaintext), &txn).await;
    result.unwrap();
    assert_eq!(t.line("MAIL"), "MAIL FROM:<>");
}

#[tokio::test]
async fn recipients_partially_refused() {
    let script = Script {
        rcpt_replies: HashMap::from([("b@example.org", "550 5.1.1 no such user")]),
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org", "c@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let delivered = result.unwrap();
    assert_eq!(t.count("DATA"), 1);
    let refused = &delivered.recipients[0];
    assert!(!refused.accepted);
    assert_eq!(refused.rcpt_reply.code, 550);
    assert_eq!(
        refused.rcpt_reply.enhanced,
        Some(EnhancedCode {
            class: 5,
            subject: 1,
            detail: 1
        })
    );
    assert_eq!(refused.final_reply.text(), "550 5.1.1 no such user");
    let accepted = &delivered.recipients[1];
    assert!(accepted.accepted);
    assert_eq!(accepted.rcpt_reply.code, 250);
    assert_eq!(accepted.final_reply.code, 250);
}

#[tokio::test]
async fn all_recipients_refused_means_no_data() {
    let script = Script {
        ehlo: vec!["PIPELINING"],
        rcpt_replies: HashMap::from([
            ("b@example.org", "550 5.1.1 no such user"),
            ("c@example.org", "450 4.2.1 mailbox busy"),
        ]),
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org", "c@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let delivered = result.unwrap();
    assert_eq!(verbs(&t), vec!["EHLO", "MAIL", "RCPT", "RCPT", "QUIT"]);
    assert!(delivered.data_reply.is_none());
    assert!(delivered.recipients.iter().all(|r| !r.accepted));
    assert!(delivered.recipients[1].final_reply.is_transient());
}

#[tokio::test]
async fn data_refused_after_dot() {
    let script = Script {
        dot_reply: "554 5.7.1 content rejected",
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, _) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let delivered = result.unwrap();
    assert_eq!(delivered.data_reply.as_ref().map(|r| r.code), Some(554));
    assert!(!delivered.recipients[0].accepted);
    assert_eq!(delivered.recipients[0].rcpt_reply.code, 250);
    assert_eq!(delivered.recipients[0].final_reply.code, 554);
}

#[tokio::test]
async fn mail_refused_is_a_transient_error() {
    for pipelining in [false, true] {
        let script = Script {
            ehlo: if pipelining {
                vec!["PIPELINING"]
            } else {
                vec![]
            },
            mail_reply: "451 4.3.0 try again later",
            ..Script::default()
        };
        let dsn = DsnRequest::default();
        let txn = transaction(&dsn, &["b@example.org"]);
        let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
        let err = result.unwrap_err();
        assert_eq!(err.stage, Stage::MailFrom);
        assert_eq!(err.disposition(), Disposition::Transient);
        assert_eq!(err.reply().map(|r| r.code), Some(451));
        assert_eq!(t.count("DATA"), 0);
        assert_eq!(t.count("QUIT"), 1, "pipelining {pipelining}");
    }
}

#[tokio::test]
async fn greeting_refused() {
    let script = Script {
        greeting: "554 5.3.2 no service here",
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let err = result.unwrap_err();
    assert_eq!(err.stage, Stage::Greeting);
    assert_eq!(err.disposition(), Disposition::Permanent);
    // RFC 5321 §3.1: after a 554 greeting the client sends QUIT.
    assert_eq!(verbs(&t), vec!["QUIT"]);
}

#[tokio::test]
async fn helo_fallback() {
    let script = Script {
        ehlo_reply: Some("502 5.5.1 EHLO not implemented"),
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Opportunistic), &txn).await;
    let delivered = result.unwrap();
    assert_eq!(
        &t.lines[..2],
        ["EHLO client.example.org", "HELO client.example.org"]
    );
    assert_eq!(delivered.capabilities, Capabilities::default());
    assert!(delivered.recipients[0].accepted);
}

#[tokio::test]
async fn greeting_timeout() {
    let (client, _server) = tokio::io::duplex(1024);
    let mut cfg = config(TlsMode::Plaintext);
    cfg.timeouts.greeting = Duration::from_millis(50);
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let err = deliver(client, &cfg, &txn).await.unwrap_err();
    assert_eq!(err.stage, Stage::Greeting);
    assert!(matches!(err.kind, ErrorKind::Timeout(_)));
    assert_eq!(err.disposition(), Disposition::Transient);
}

#[tokio::test]
async fn connection_closed_mid_session() {
    let (client, server) = tokio::io::duplex(1024);
    let peer = tokio::spawn(async move {
        let mut conn: Conn = BufReader::new(Box::new(server));
        send(&mut conn, "220 mx.example.org").await.unwrap();
        read_line(&mut conn).await.unwrap();
        // Drop the connection instead of answering EHLO.
    });
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let err = deliver(client, &config(TlsMode::Plaintext), &txn)
        .await
        .unwrap_err();
    peer.await.unwrap();
    assert_eq!(err.stage, Stage::Ehlo);
    assert!(matches!(&err.kind, ErrorKind::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
    // The source chain leads from the session error to the io::Error.
    let kind = err.source().unwrap();
    assert!(kind
        .source()
        .unwrap()
        .downcast_ref::<std::io::Error>()
        .is_some());
}

#[tokio::test]
async fn malformed_reply_is_a_protocol_error() {
    let script = Script {
        ehlo_reply: Some("250-mx.example.org\r\n251 mixed"),
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Protocol(_)));
    assert_eq!(err.stage, Stage::Ehlo);
    // The session is abandoned without QUIT.
    assert_eq!(verbs(&t), vec!["EHLO"]);
}

#[tokio::test]
async fn unsafe_envelope_is_refused_before_sending() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org\r\nRCPT TO:<c@example.org>"]);
    let (result, t) = run(Script::default(), &config(TlsMode::Plaintext), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(
        err.kind,
        ErrorKind::InvalidEnvelope {
            field: "recipient",
            ..
        }
    ));
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(t.lines.is_empty());
    txn.recipients = vec![recipient("b@example.org")];
    txn.sender = "a@example.org> SMTPUTF8";
    let (result, _) = run(Script::default(), &config(TlsMode::Plaintext), &txn).await;
    assert_eq!(result.unwrap_err().stage, Stage::MailFrom);
}

// ---------------------------------------------------------------------------
// Parameters

#[tokio::test]
async fn dsn_parameters_only_when_offered() {
    let dsn = DsnRequest {
        notify: Some(vec![Notify::Success, Notify::Failure]),
        ret: Some(Ret::Hdrs),
        envid: Some("id+1=x".to_owned()),
        body: None,
    };
    let mut txn = transaction(&dsn, &["b@example.org", "c@example.org"]);
    txn.recipients[0].orcpt = Some("rfc822;b+2Bx@example.org".to_owned());
    txn.recipients[1].notify = Some(vec![Notify::Never]);
    // Offered.
    let script = Script {
        ehlo: vec!["DSN"],
        ..Script::default()
    };
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    result.unwrap();
    assert_eq!(
        t.line("MAIL"),
        "MAIL FROM:<a@example.org> RET=HDRS ENVID=id+2B1+3Dx"
    );
    assert_eq!(
        t.lines[2],
        "RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.org"
    );
    assert_eq!(t.lines[3], "RCPT TO:<c@example.org> NOTIFY=NEVER");
    // Not offered: none of them (RFC 3461 §5.2.2).
    let (result, t) = run(Script::default(), &config(TlsMode::Plaintext), &txn).await;
    result.unwrap();
    assert_eq!(t.line("MAIL"), "MAIL FROM:<a@example.org>");
    assert_eq!(t.lines[2], "RCPT TO:<b@example.org>");
    assert_eq!(t.lines[3], "RCPT TO:<c@example.org>");
}

#[tokio::test]
async fn invalid_orcpt_is_left_out() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.recipients[0].orcpt = Some("rfc822;b x@example.org".to_owned());
    let script = Script {
        ehlo: vec!["DSN"],
        ..Script::default()
    };
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    result.unwrap();
    assert_eq!(t.lines[2], "RCPT TO:<b@example.org>");
}

#[tokio::test]
async fn body_and_smtputf8_parameters() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.eight_bit = true;
    txn.smtputf8 = true;
    let script = Script {
        ehlo: vec!["8BITMIME", "SMTPUTF8"],
        ..Script::default()
    };
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    result.unwrap();
    assert_eq!(
        t.line("MAIL"),
        "MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8"
    );
    // 8-bit content never goes to a server without 8BITMIME (RFC 6152 §3).
    txn.smtputf8 = false;
    let (result, t) = run(Script::default(), &config(TlsMode::Plaintext), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::EightBitNotOffered), "{err}");
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(
        !t.lines.iter().any(|l| l.starts_with("MAIL")),
        "{:?}",
        t.lines
    );
}

#[tokio::test]
async fn smtputf8_not_offered_is_permanent() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.smtputf8 = true;
    let script = Script {
        ehlo: vec!["8BITMIME"],
        ..Script::default()
    };
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::SmtpUtf8NotOffered));
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert_eq!(verbs(&t), vec!["EHLO", "QUIT"]);
}

#[tokio::test]
async fn message_over_the_size_limit() {
    let script = Script {
        ehlo: vec!["SIZE 10"],
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(
        err.kind,
        ErrorKind::MessageTooLarge { limit: 10, .. }
    ));
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert_eq!(t.count("MAIL"), 0);
}

// ---------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn opportunistic_with_self_signed_certificate_records_failure_and_delivers() {
    let ca = TestCa::new();
    let script = Script {
        ehlo: vec!["STARTTLS"],
        // Only the post-TLS EHLO offers PIPELINING: its use shows that the
        // second EHLO's capabilities replaced the first's.
        ehlo_tls: vec!["PIPELINING", "8BITMIME"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::Opportunistic);
    cfg.roots = ca.roots();
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &cfg, &txn).await;
    let delivered = result.unwrap();
    assert!(t.tls);
    assert_eq!(t.count("EHLO"), 2, "EHLO again after STARTTLS");
    assert_eq!(verbs(&t)[..3], ["EHLO", "STARTTLS", "EHLO"]);
    assert!(t.pipelined);
    assert!(!delivered.capabilities.starttls);
    let tls = delivered.tls.unwrap();
    assert_eq!(tls.version, "TLSv1.3");
    assert!(tls.cipher.starts_with("TLS13_"), "{}", tls.cipher);
    assert_eq!(tls.peer_certificates.len(), 1);
    match tls.verification {
        CertVerification::Failed(reason) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("expected a failed verification, got {other:?}"),
    }
    assert!(delivered.recipients[0].accepted);
}

#[tokio::test]
async fn required_verified_rejects_self_signed_certificate() {
    let ca = TestCa::new();
    let script = Script {
        ehlo: vec!["STARTTLS"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredVerified);
    cfg.roots = ca.roots();
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &cfg, &txn).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err.kind, ErrorKind::CertificateRejected { reason } if reason.contains("UnknownIssuer"))
    );
    assert_eq!(err.stage, Stage::TlsHandshake);
    assert!(err.is_tls_handshake_failure());
    assert_eq!(err.disposition(), Disposition::Transient);
    assert!(!t.tls);
    assert_eq!(verbs(&t), vec!["EHLO", "STARTTLS"]);
}

#[tokio::test]
async fn required_verified_checks_the_name() {
    let ca = TestCa::new();
    let script = Script {
        ehlo: vec!["STARTTLS"],
        tls: Some(ca.server("other.example.org")),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredVerified);
    cfg.roots = ca.roots();
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, _) = run(script, &cfg, &txn).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err.kind, ErrorKind::CertificateRejected { reason } if reason.contains("not valid for name")),
        "{err}"
    );
}

#[tokio::test]
async fn certificate_from_trusted_ca_verifies() {
    let ca = TestCa::new();
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["ENHANCEDSTATUSCODES"],
        tls: Some(ca.server("mx.example.org")),
        ..Script::default()
    };
    for mode in [TlsMode::RequiredVerified, TlsMode::Opportunistic] {
        let mut cfg = config(mode);
        cfg.roots = ca.roots();
        let dsn = DsnRequest::default();
        let txn = transaction(&dsn, &["b@example.org"]);
        let (result, t) = run(script.clone(), &cfg, &txn).await;
        let tls = result.unwrap().tls.unwrap();
        assert_eq!(
            tls.verification,
            CertVerification::Verified(AuthMethod::Pkix),
            "{mode:?}"
        );
        assert_eq!(tls.version, "TLSv1.3");
        assert_eq!(t.count("EHLO"), 2);
    }
}

#[tokio::test]
async fn required_unverified_does_not_check() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, _) = run(script, &config(TlsMode::RequiredUnverified), &txn).await;
    let tls = result.unwrap().tls.unwrap();
    assert_eq!(tls.verification, CertVerification::NotChecked);
}

#[tokio::test]
async fn starttls_not_offered() {
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    // Opportunistic: plaintext delivery.
    let (result, t) = run(Script::default(), &config(TlsMode::Opportunistic), &txn).await;
    let delivered = result.unwrap();
    assert!(delivered.tls.is_none());
    assert_eq!(t.count("STARTTLS"), 0);
    // Required: refused, nothing sent.
    for mode in [TlsMode::RequiredVerified, TlsMode::RequiredUnverified] {
        let (result, t) = run(Script::default(), &config(mode), &txn).await;
        let err = result.unwrap_err();
        assert!(matches!(err.kind, ErrorKind::StartTlsNotOffered));
        assert_eq!(err.stage, Stage::StartTls);
        assert!(!err.is_tls_handshake_failure());
        assert_eq!(verbs(&t), vec!["EHLO", "QUIT"]);
    }
}

#[tokio::test]
async fn plaintext_mode_ignores_starttls() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Plaintext), &txn).await;
    assert!(result.unwrap().tls.is_none());
    assert_eq!(t.count("STARTTLS"), 0);
}

#[tokio::test]
async fn starttls_refused_by_reply() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        starttls_reply: "454 4.7.0 TLS not available\r\n",
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    // Opportunistic: RFC 3207 §4 lets the client continue in plaintext.
    let (result, t) = run(script.clone(), &config(TlsMode::Opportunistic), &txn).await;
    assert!(result.unwrap().tls.is_none());
    assert_eq!(
        verbs(&t),
        vec!["EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "QUIT"]
    );
    // Required: the reply is the error.
    let (result, _) = run(script, &config(TlsMode::RequiredVerified), &txn).await;
    let err = result.unwrap_err();
    assert_eq!(err.stage, Stage::StartTls);
    assert_eq!(err.reply().map(|r| r.code), Some(454));
}

#[tokio::test]
async fn data_after_starttls_reply_is_refused() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        starttls_reply: "220 2.0.0 go ahead\r\n250 injected\r\n",
        tls: Some(self_signed()),
        ..Script::default()
    };
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &config(TlsMode::Opportunistic), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::DataAfterStartTls));
    assert!(!t.tls);
}

#[tokio::test]
async fn handshake_failure_is_reported_as_such() {
    // The server answers 220 to STARTTLS but then speaks plaintext.
    let script = Script {
        ehlo: vec!["STARTTLS"],
        starttls_reply: "220 2.0.0 go ahead\r\n",
        tls: None,
        ..Script::default()
    };
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer = tokio::spawn(async move {
        let mut conn: Conn = BufReader::new(Box::new(server));
        send(&mut conn, script.greeting).await.unwrap();
        read_line(&mut conn).await.unwrap();
        send(&mut conn, &ehlo_reply(&script, false)).await.unwrap();
        read_line(&mut conn).await.unwrap();
        send(&mut conn, script.starttls_reply).await.unwrap();
        // Wait for the ClientHello, then answer with something else.
        let mut hello = [0u8; 512];
        let _ = conn.read(&mut hello).await.unwrap();
        send(&mut conn, "this is not TLS").await.unwrap();
    });
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let err = deliver(client, &config(TlsMode::Opportunistic), &txn)
        .await
        .unwrap_err();
    peer.await.unwrap();
    assert!(err.is_tls_handshake_failure());
    assert!(matches!(err.kind, ErrorKind::Tls(_)), "{err}");
    assert_eq!(err.disposition(), Disposition::Transient);
}

#[tokio::test]
async fn implicit_tls() {
    let ca = TestCa::new();
    let script = Script {
        implicit: true,
        tls: Some(ca.server("mx.example.org")),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::Implicit);
    cfg.roots = ca.roots();
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script.clone(), &cfg, &txn).await;
    let delivered = result.unwrap();
    assert_eq!(
        delivered.tls.unwrap().verification,
        CertVerification::Verified(AuthMethod::Pkix)
    );
    assert_eq!(verbs(&t), vec!["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]);
    // Implicit TLS always verifies.
    let script = Script {
        tls: Some(self_signed()),
        ..script
    };
    let (result, _) = run(script, &cfg, &txn).await;
    assert!(matches!(
        result.unwrap_err().kind,
        ErrorKind::CertificateRejected { .. }
    ));
}

// ---------------------------------------------------------------------------
// REQUIRETLS

#[tokio::test]
async fn requiretls_sent_when_offered_after_tls() {
    let ca = TestCa::new();
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["REQUIRETLS"],
        tls: Some(ca.server("mx.example.org")),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredVerified);
    cfg.roots = ca.roots();
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.requiretls = true;
    let (result, t) = run(script, &cfg, &txn).await;
    result.unwrap();
    assert_eq!(t.line("MAIL"), "MAIL FROM:<a@example.org> REQUIRETLS");
}

#[tokio::test]
async fn requiretls_not_offered_after_tls() {
    let ca = TestCa::new();
    let script = Script {
        // Offered before TLS only: that does not count (RFC 8689 §4.2.1).
        ehlo: vec!["STARTTLS", "REQUIRETLS"],
        ehlo_tls: vec!["PIPELINING"],
        tls: Some(ca.server("mx.example.org")),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredVerified);
    cfg.roots = ca.roots();
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.requiretls = true;
    let (result, t) = run(script, &cfg, &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::RequireTlsNotOffered));
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert_eq!(verbs(&t), vec!["EHLO", "STARTTLS", "EHLO", "QUIT"]);
}

#[tokio::test]
async fn requiretls_needs_verified_tls() {
    let dsn = DsnRequest::default();
    let mut txn = transaction(&dsn, &["b@example.org"]);
    txn.requiretls = true;
    // Unverified certificate.
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["REQUIRETLS"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let (result, t) = run(script, &config(TlsMode::Opportunistic), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(
        err.kind,
        ErrorKind::RequireTlsUnverified {
            verification: Some(CertVerification::Failed(_))
        }
    ));
    assert_eq!(t.count("MAIL"), 0);
    // No TLS at all.
    let script = Script {
        ehlo: vec!["REQUIRETLS"],
        ..Script::default()
    };
    let (result, _) = run(script, &config(TlsMode::Opportunistic), &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(
        err.kind,
        ErrorKind::RequireTlsUnverified { verification: None }
    ));
    assert_eq!(err.disposition(), Disposition::Transient);
}

// ---------------------------------------------------------------------------
// AUTH

#[tokio::test]
async fn auth_plain_over_tls_is_redacted_in_logs() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["AUTH LOGIN PLAIN"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::Opportunistic);
    // A name of its own picks this session's lines out of the shared log.
    cfg.server_name = "redact.example.org".to_owned();
    cfg.credentials = Some(("user@example.org".to_owned(), "s3cret".to_owned()));
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &cfg, &txn).await;
    result.unwrap();
    let auth = t.line("AUTH");
    let payload = auth.strip_prefix("AUTH PLAIN ").expect("AUTH PLAIN sent");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .unwrap();
    assert_eq!(decoded, b"\0user@example.org\0s3cret");
    assert_eq!(verbs(&t)[3], "AUTH", "AUTH after the post-TLS EHLO");

    let logs = String::from_utf8(log_buffer().0.lock().unwrap().clone()).unwrap();
    let logs: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("server=redact.example.org"))
        .collect();
    let logs = logs.join("\n");
    assert!(logs.contains("AUTH PLAIN <redacted>"), "{logs}");
    assert!(!logs.contains(payload));
    assert!(logs.contains("EHLO client.example.org"));
    // Message content is never logged.
    assert!(!logs.contains("Subject: test"));
}

#[tokio::test]
async fn auth_login_over_tls() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["AUTH LOGIN"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredUnverified);
    cfg.credentials = Some(("user".to_owned(), "pw".to_owned()));
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &cfg, &txn).await;
    result.unwrap();
    let at = t.lines.iter().position(|l| l == "AUTH LOGIN").unwrap();
    assert_eq!(t.lines[at + 1], "dXNlcg=="); // "user"
    assert_eq!(t.lines[at + 2], "cHc="); // "pw"
}

#[tokio::test]
async fn auth_refused_by_server() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["AUTH PLAIN"],
        tls: Some(self_signed()),
        auth_reply: "535 5.7.8 authentication credentials invalid",
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredUnverified);
    cfg.credentials = Some(("user".to_owned(), "wrong".to_owned()));
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &cfg, &txn).await;
    let err = result.unwrap_err();
    assert_eq!(err.stage, Stage::Auth);
    assert_eq!(err.reply().map(|r| r.code), Some(535));
    assert_eq!(t.count("MAIL"), 0);
}

#[tokio::test]
async fn auth_never_over_plaintext() {
    let script = Script {
        ehlo: vec!["AUTH PLAIN LOGIN"],
        ..Script::default()
    };
    let mut cfg = config(TlsMode::Opportunistic);
    cfg.credentials = Some(("user".to_owned(), "secret".to_owned()));
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(script, &cfg, &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::AuthOverPlaintext));
    assert_eq!(err.stage, Stage::Auth);
    assert_eq!(t.count("AUTH"), 0);
    assert_eq!(verbs(&t), vec!["EHLO", "QUIT"]);
}

#[tokio::test]
async fn auth_without_a_supported_mechanism() {
    let script = Script {
        ehlo: vec!["STARTTLS"],
        ehlo_tls: vec!["AUTH CRAM-MD5"],
        tls: Some(self_signed()),
        ..Script::default()
    };
    let mut cfg = config(TlsMode::RequiredUnverified);
    cfg.credentials = Some(("user".to_owned(), "secret".to_owned()));
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, _) = run(script, &cfg, &txn).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err.kind, ErrorKind::AuthMechanismUnsupported { offered } if offered == &["CRAM-MD5"])
    );
    assert!(err.to_string().contains("CRAM-MD5"));
}

// ---------------------------------------------------------------------------
// Errors

fn reply(code: u16, text: &str) -> Reply {
    Reply {
        code,
        enhanced: None,
        lines: vec![text.to_owned()],
    }
}

#[test]
fn disposition_table() {
    use Disposition::{Permanent, Transient};
    let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    let cases: Vec<(ErrorKind, Disposition)> = vec![
        (ErrorKind::Io(io()), Transient),
        (ErrorKind::Timeout(Duration::from_secs(300)), Transient),
        (ErrorKind::Reply(reply(550, "no such user")), Permanent),
        (ErrorKind::Reply(reply(554, "rejected")), Permanent),
        (ErrorKind::Reply(reply(451, "later")), Transient),
        (ErrorKind::Reply(reply(421, "closing")), Transient),
        (ErrorKind::Reply(reply(250, "unexpected")), Transient),
        (
            ErrorKind::Protocol(crate::smtp::ReplyError::LineTooLong),
            Transient,
        ),
        (ErrorKind::DataAfterStartTls, Transient),
        (ErrorKind::Tls(io()), Transient),
        (
            ErrorKind::TlsConfig(rustls::Error::General("bad".into())),
            Transient,
        ),
        (
            ErrorKind::InvalidServerName {
                name: "bad name".into(),
            },
            Permanent,
        ),
        (ErrorKind::StartTlsNotOffered, Transient),
        (
            ErrorKind::CertificateRejected {
                reason: "expired".into(),
            },
            Transient,
        ),
        (ErrorKind::RequireTlsNotOffered, Permanent),
        (
            ErrorKind::RequireTlsUnverified { verification: None },
            Transient,
        ),
        (ErrorKind::SmtpUtf8NotOffered, Permanent),
        (ErrorKind::MessageTooLarge { size: 2, limit: 1 }, Permanent),
        (ErrorKind::AuthOverPlaintext, Transient),
        (
            ErrorKind::AuthMechanismUnsupported { offered: vec![] },
            Transient,
        ),
        (
            ErrorKind::InvalidEnvelope {
                field: "sender",
                value: "a\r\n".into(),
            },
            Permanent,
        ),
    ];
    for (kind, expected) in cases {
        let shown = kind.to_string();
        let err = SessionError::new(Stage::MailFrom, "mx.example.org", kind);
        assert_eq!(err.disposition(), expected, "{shown}");
    }
}

#[test]
fn display_names_stage_host_and_reply() {
    let mut parser = crate::smtp::ReplyParser::new();
    parser.feed(b"451-4.3.0 temporary failure\r\n451 4.3.0 try later\r\n");
    let reply = parser.next_reply().unwrap().unwrap();
    let err = SessionError::new(Stage::MailFrom, "mx.example.org", ErrorKind::Reply(reply));
    assert_eq!(
        err.to_string(),
        "MAIL FROM with mx.example.org: server replied 451 4.3.0 temporary failure / try later"
    );
    assert_eq!(err.reply().map(|r| r.code), Some(451));
    let err = SessionError::new(
        Stage::Ehlo,
        "mx.example.org",
        ErrorKind::RequireTlsUnverified {
            verification: Some(CertVerification::Failed("UnknownIssuer".into())),
        },
    );
    assert!(err.to_string().contains("did not verify: UnknownIssuer"));
    assert!(err.reply().is_none());
    assert!(!err.is_tls_handshake_failure());
}

#[test]
fn debug_output_hides_secrets_and_content() {
    let mut cfg = config(TlsMode::RequiredVerified);
    cfg.credentials = Some(("relay-user".to_owned(), "hunter2-secret".to_owned()));
    let shown = format!("{cfg:?}");
    assert!(shown.contains("relay-user"));
    assert!(!shown.contains("hunter2-secret"));
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let shown = format!("{txn:?}");
    assert!(shown.contains(&format!("message_bytes: {}", MESSAGE.len())));
    // No byte dump of the message ("From" is 70, 114, 111, 109).
    assert!(!shown.contains("70, 114, 111, 109"));
}

#[tokio::test]
async fn empty_ehlo_name_is_refused() {
    let mut cfg = config(TlsMode::Plaintext);
    cfg.ehlo_name = String::new();
    let dsn = DsnRequest::default();
    let txn = transaction(&dsn, &["b@example.org"]);
    let (result, t) = run(Script::default(), &cfg, &txn).await;
    let err = result.unwrap_err();
    assert!(matches!(
        err.kind,
        ErrorKind::InvalidEnvelope {
            field: "EHLO name",
            ..
        }
    ));
    assert!(t.lines.is_empty());
}
