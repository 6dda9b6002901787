//! One SMTP client session over an established connection: greeting, EHLO,
//! STARTTLS, AUTH, one mail transaction, QUIT.
//!
//! The session is generic over the stream so that tests can run it over an
//! in-memory pipe; opening the connection (and its timeout) is the
//! caller's job. It does not choose the TLS policy or retry anything: it
//! runs the dialogue the [`SessionConfig`] and [`Transaction`] describe and
//! reports what happened.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tracing::{debug, trace, warn};

use super::command::{self, DotStuffer, MailOptions};
use super::ehlo::{parse_ehlo, Capabilities};
use super::error::{ErrorKind, SessionError, Stage};
use super::reply::{Reply, ReplyParser};
use super::tls::{self, CertVerification, TlsInfo, TlsVersion, VerifyPolicy};
use crate::envelope::{DsnRequest, Notify};

/// How much of the message is written to the peer at a time.
const DATA_CHUNK: usize = 64 * 1024;

/// How the session uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered; a certificate that does not verify still
    /// encrypts (recorded as unverified); plaintext when STARTTLS is not
    /// offered or is refused with a reply (RFC 3207 §4). A failed handshake
    /// is an error: the connection is unusable afterwards, and the caller
    /// may retry in plaintext on a new connection (see
    /// [`SessionError::is_tls_handshake_failure`]).
    Opportunistic,
    /// STARTTLS must be offered and succeed, and the certificate must
    /// verify (PKIX, name = [`SessionConfig::server_name`]).
    RequiredVerified,
    /// STARTTLS must be offered and succeed; the certificate is not
    /// checked (recorded as [`CertVerification::NotChecked`]).
    RequiredUnverified,
    /// TLS from the first byte (RFC 8314 §3, port 465); the certificate
    /// must verify.
    Implicit,
    /// Never STARTTLS.
    Plaintext,
}

/// How long to wait for the peer at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The greeting (RFC 5321 §4.5.3.2.1: 5 minutes).
    pub greeting: Duration,
    /// Replies to EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT (RFC 5321
    /// §4.5.3.2.2 and §4.5.3.2.3: 5 minutes), and each command write.
    pub command: Duration,
    /// The reply to DATA (RFC 5321 §4.5.3.2.4: 2 minutes).
    pub data_init: Duration,
    /// Each block of message data written (RFC 5321 §4.5.3.2.5: 3 minutes).
    pub data_block: Duration,
    /// The reply to the final dot (RFC 5321 §4.5.3.2.6: 10 minutes).
    pub data_end: Duration,
    /// The TLS handshake (not set by RFC 5321; 2 minutes).
    pub tls_handshake: Duration,
    /// The reply to QUIT, after which the session is over anyway.
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_end: Duration::from_secs(600),
            tls_handshake: Duration::from_secs(120),
            quit: Duration::from_secs(30),
        }
    }
}

/// What the session needs to know about the peer and the local side.
#[derive(Clone)]
pub struct SessionConfig {
    /// Our name for EHLO/HELO.
    pub ehlo_name: String,
    /// How TLS is used.
    pub tls_mode: TlsMode,
    /// The server's name, for SNI and the PKIX name check: the MX host
    /// name, or the relay's configured name.
    pub server_name: String,
    /// Trust anchors for PKIX (system roots plus any configured CA file).
    pub roots: Arc<rustls::RootCertStore>,
    /// User name and password for AUTH PLAIN or LOGIN (RFC 4954); sent
    /// only over TLS.
    pub credentials: Option<(String, String)>,
    /// Timeouts for each step.
    pub timeouts: Timeouts,
    /// Authenticate the server by DANE (RFC 7672) instead of PKIX: the
    /// usable TLSA records and the reference names for DANE-TA. The SNI is
    /// still [`SessionConfig::server_name`], which the caller sets to the
    /// TLSA base domain (RFC 7672 §8.1).
    pub dane: Option<DaneAuth>,
    /// The lowest TLS version to negotiate (1.2 when `None`).
    pub min_version: Option<TlsVersion>,
}

/// What a DANE check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneAuth {
    /// Usable TLSA records (RFC 7672 §3.1.3).
    pub records: Vec<crate::policy::tlsa::Tlsa>,
    /// Reference identifiers for DANE-TA (RFC 7672 §3.2.2).
    pub names: Vec<String>,
}

impl fmt::Debug for SessionConfig {
    /// Shows the user name but never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("ehlo_name", &self.ehlo_name)
            .field("tls_mode", &self.tls_mode)
            .field("server_name", &self.server_name)
            .field("roots", &self.roots.len())
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("timeouts", &self.timeouts)
            .field("dane", &self.dane)
            .field("min_version", &self.min_version)
            .finish()
    }
}

/// One recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientSpec {
    /// The forward path, without angle brackets.
    pub address: String,
    /// `NOTIFY=` for this recipient (RFC 3461 §4.1); `None` uses the
    /// message-wide [`DsnRequest::notify`].
    pub notify: Option<Vec<Notify>>,
    /// `ORCPT=` exactly as it goes on the wire, `addr-type;xtext`
    /// (RFC 3461 §4.2). A value that is not valid xtext is left out.
    pub orcpt: Option<String>,
}

/// One mail transaction: the envelope and the content.
#[derive(Clone)]
pub struct Transaction<'a> {
    /// The reverse path; empty for the null path `<>`.
    pub sender: &'a str,
    /// The recipients, in the order RCPT commands are sent.
    pub recipients: Vec<RecipientSpec>,
    /// DSN options; RET and ENVID (and NOTIFY, ORCPT) are sent only when
    /// the peer offers DSN (RFC 3461 §5.2.1, §5.2.2).
    pub dsn: &'a DsnRequest,
    /// The message with CRLF line endings, not dot-stuffed: the session
    /// dot-stuffs it (RFC 5321 §4.5.2) and ends the data.
    pub message: &'a [u8],
    /// The message has 8-bit content: BODY=8BITMIME is sent, and a server
    /// without 8BITMIME is refused the message.
    // LIMITATION: there is no conversion to 7 bits (RFC 6152 §3 point 5
    // allows either); such a recipient fails with 5.6.3.
    pub eight_bit: bool,
    /// The message needs SMTPUTF8; a server without it fails the
    /// transaction permanently (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// Send REQUIRETLS on MAIL. The session then insists on TLS with a
    /// verified certificate and on REQUIRETLS in the post-TLS EHLO
    /// (RFC 8689 §4.2.1 steps 3 to 5), and quits otherwise.
    pub requiretls: bool,
}

impl fmt::Debug for Transaction<'_> {
    /// Shows the message's size, never its content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("sender", &self.sender)
            .field("recipients", &self.recipients)
            .field("dsn", &self.dsn)
            .field("message_bytes", &self.message.len())
            .field("eight_bit", &self.eight_bit)
            .field("smtputf8", &self.smtputf8)
            .field("requiretls", &self.requiretls)
            .finish()
    }
}

/// The result of a session that reached the mail transaction.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The TLS session, if any.
    pub tls: Option<TlsInfo>,
    /// The capabilities the transaction used (after STARTTLS, the post-TLS
    /// EHLO's).
    pub capabilities: Capabilities,
    /// One outcome per recipient, in transaction order.
    pub recipients: Vec<RecipientOutcome>,
    /// The reply that settled the data: the refusal of DATA, or the reply
    /// to the final dot. `None` when no recipient was accepted and DATA was
    /// not sent.
    pub data_reply: Option<Reply>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// The recipient's address.
    pub address: String,
    /// The reply to its RCPT command.
    pub rcpt_reply: Reply,
    /// True when both RCPT and the data were accepted: the server has
    /// taken responsibility for this recipient (RFC 5321 §4.1.1.4).
    pub accepted: bool,
    /// The reply that decided: the RCPT reply when RCPT was refused,
    /// otherwise the data reply.
    pub final_reply: Reply,
}

/// Runs one session: greeting, EHLO (HELO when EHLO gets a 5xx), STARTTLS
/// per [`TlsMode`] followed by a fresh EHLO (RFC 3207 §4.2), AUTH when
/// credentials are configured, MAIL, RCPT for each recipient, DATA, QUIT.
///
/// MAIL and the RCPTs go out as one group when the peer offers PIPELINING
/// (RFC 2920 §3.1), one at a time otherwise. When no RCPT is accepted, DATA
/// is not sent. A refused MAIL, and any failure before it, is an error;
/// after MAIL, refusals are reported per recipient in [`Delivered`].
pub async fn deliver<S>(
    stream: S,
    cfg: &SessionConfig,
    txn: &Transaction<'_>,
) -> Result<Delivered, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    validate(cfg, txn)?;
    let mut session = Session {
        stream: Some(Stream::Plain(stream)),
        parser: ReplyParser::new(),
        cfg: cfg.clone(),
        tls: None,
    };
    let result = session.run(txn).await;
    session.quit().await;
    result
}

/// What a probe session learnt.
#[derive(Debug, Clone)]
pub struct Probed {
    /// The TLS session, if any.
    pub tls: Option<TlsInfo>,
    /// The capabilities a transaction would use (after STARTTLS, the
    /// post-TLS EHLO's).
    pub capabilities: Capabilities,
}

/// Runs a session up to the point where a transaction would start
/// (greeting, EHLO, STARTTLS per [`TlsMode`], EHLO again) and quits,
/// sending no mail: what `smarthost probe` uses to show what a delivery
/// would get.
pub async fn probe<S>(stream: S, cfg: &SessionConfig) -> Result<Probed, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session {
        stream: Some(Stream::Plain(stream)),
        parser: ReplyParser::new(),
        cfg: cfg.clone(),
        tls: None,
    };
    let result = async {
        if session.cfg.tls_mode == TlsMode::Implicit {
            session.handshake(VerifyPolicy::Enforce).await?;
        }
        session.greeting().await?;
        let caps = session.hello().await?;
        let capabilities = session.negotiate_tls(caps).await?;
        Ok(Probed {
            tls: session.tls.clone(),
            capabilities,
        })
    }
    .await;
    session.quit().await;
    result
}

/// Refuses values that would change the commands they are put in.
fn validate(cfg: &SessionConfig, txn: &Transaction<'_>) -> Result<(), SessionError> {
    let invalid = |stage, field, value: &str| {
        SessionError::new(
            stage,
            &cfg.server_name,
            ErrorKind::InvalidEnvelope {
                field,
                value: value.to_owned(),
            },
        )
    };
    let name = &cfg.ehlo_name;
    if name.is_empty() || name.contains(' ') || !command::is_safe_for_command(name) {
        return Err(invalid(Stage::Ehlo, "EHLO name", &cfg.ehlo_name));
    }
    if !command::is_safe_path(txn.sender) {
        return Err(invalid(Stage::MailFrom, "sender", txn.sender));
    }
    for rcpt in &txn.recipients {
        if rcpt.address.is_empty() || !command::is_safe_path(&rcpt.address) {
            return Err(invalid(Stage::RcptTo, "recipient", &rcpt.address));
        }
    }
    Ok(())
}

/// The connection, before or after TLS.
enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream<S> {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf).await,
            Self::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Self::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

struct Session<S> {
    /// `None` once the connection is unusable (a failed read, write or
    /// handshake).
    stream: Option<Stream<S>>,
    parser: ReplyParser,
    cfg: SessionConfig,
    tls: Option<TlsInfo>,
}

/// An established session, ready for mail transactions: greeting, EHLO,
/// STARTTLS per the [`TlsMode`] and AUTH are done. Several transactions
/// may go over it one after another (RFC 5321 §4.1.4: after a completed
/// transaction, or RSET, the next MAIL may follow), which is how several
/// messages to the same host share one connection.
pub struct Connection<S> {
    session: Session<S>,
    caps: Capabilities,
    transactions: u32,
    /// The RSET before the last transaction failed: the server had closed
    /// or given up on the connection, and nothing of the message was sent.
    reset_failed: bool,
}

/// Opens a session over `stream` for transactions (see [`Connection`]).
pub async fn establish<S>(stream: S, cfg: SessionConfig) -> Result<Connection<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session {
        stream: Some(Stream::Plain(stream)),
        parser: ReplyParser::new(),
        cfg,
        tls: None,
    };
    match session.open().await {
        Ok(caps) => Ok(Connection {
            session,
            caps,
            transactions: 0,
            reset_failed: false,
        }),
        Err(e) => {
            session.quit().await;
            Err(e)
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    /// One mail transaction. Before the second and later ones, RSET clears
    /// whatever the last one left (RFC 5321 §4.1.1.5). After an error the
    /// connection may be unusable: see [`Connection::is_usable`].
    pub async fn send(&mut self, txn: &Transaction<'_>) -> Result<Delivered, SessionError> {
        validate(&self.session.cfg, txn)?;
        if self.transactions > 0 {
            let reply = match self.session.command("RSET", Stage::MailFrom).await {
                Ok(reply) => reply,
                Err(e) => {
                    self.reset_failed = true;
                    return Err(e);
                }
            };
            if !reply.is_positive() {
                self.reset_failed = true;
                self.session.stream = None;
                return Err(self.session.error(Stage::MailFrom, ErrorKind::Reply(reply)));
            }
        }
        self.transactions += 1;
        let caps = self.caps.clone();
        self.session.transaction(txn, caps).await
    }

    /// True when the last [`Connection::send`] failed at the RSET that
    /// opens it: the connection was stale, and the message can go over a
    /// fresh one.
    pub fn reset_failed(&self) -> bool {
        self.reset_failed
    }

    /// False once the connection cannot carry another transaction.
    pub fn is_usable(&self) -> bool {
        self.session.stream.is_some()
    }

    /// What the TLS session is, if any.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.session.tls.as_ref()
    }

    /// Transactions sent so far.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    /// Ends the session with QUIT.
    pub async fn quit(mut self) {
        self.session.quit().await;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Greeting, EHLO, TLS and AUTH; the capabilities transactions use.
    async fn open(&mut self) -> Result<Capabilities, SessionError> {
        if self.cfg.tls_mode == TlsMode::Implicit {
            self.handshake(VerifyPolicy::Enforce).await?;
        }
        self.greeting().await?;
        let caps = self.hello().await?;
        let caps = self.negotiate_tls(caps).await?;
        if let Some((user, password)) = self.cfg.credentials.clone() {
            self.authenticate(&caps, &user, &password).await?;
        }
        Ok(caps)
    }

    async fn run(&mut self, txn: &Transaction<'_>) -> Result<Delivered, SessionError> {
        let caps = self.open().await?;
        self.transaction(txn, caps).await
    }

    async fn transaction(
        &mut self,
        txn: &Transaction<'_>,
        caps: Capabilities,
    ) -> Result<Delivered, SessionError> {
        self.check_requirements(txn, &caps)?;
        let rcpt_replies = self.envelope(txn, &caps).await?;
        let data_reply = if rcpt_replies.iter().any(Reply::is_positive) {
            Some(self.data(txn).await?)
        } else {
            debug!(server = %self.cfg.server_name, "no recipient accepted; DATA not sent");
            None
        };
        let recipients = txn
            .recipients
            .iter()
            .zip(rcpt_replies)
            .map(|(spec, rcpt_reply)| outcome(spec, rcpt_reply, data_reply.as_ref()))
            .collect();
        Ok(Delivered {
            tls: self.tls.clone(),
            capabilities: caps,
            recipients,
            data_reply,
        })
    }

    fn error(&self, stage: Stage, kind: ErrorKind) -> SessionError {
        SessionError::new(stage, &self.cfg.server_name, kind)
    }

    /// Writes bytes and flushes; a failure leaves the connection unusable.
    async fn write(
        &mut self,
        bytes: &[u8],
        stage: Stage,
        limit: Duration,
    ) -> Result<(), SessionError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.error(stage, ErrorKind::Io(closed())));
        };
        let result = tokio::time::timeout(limit, stream.write_all_flush(bytes)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                self.stream = None;
                Err(self.error(stage, ErrorKind::Io(err)))
            }
            Err(_) => {
                self.stream = None;
                Err(self.error(stage, ErrorKind::Timeout(limit)))
            }
        }
    }

    /// Sends one command line; `shown` replaces it in the trace log when it
    /// carries a secret.
    async fn send(
        &mut self,
        line: &str,
        shown: Option<&str>,
        stage: Stage,
    ) -> Result<(), SessionError> {
        trace!(server = %self.cfg.server_name, ">>> {}", shown.unwrap_or(line));
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes, stage, self.cfg.timeouts.command).await
    }

    /// Reads one complete reply within `limit`.
    async fn read_reply(&mut self, stage: Stage, limit: Duration) -> Result<Reply, SessionError> {
        let result = tokio::time::timeout(limit, self.read_reply_inner()).await;
        let reply = match result {
            Ok(Ok(reply)) => reply,
            Ok(Err(kind)) => {
                self.stream = None;
                return Err(self.error(stage, kind));
            }
            Err(_) => {
                self.stream = None;
                return Err(self.error(stage, ErrorKind::Timeout(limit)));
            }
        };
        trace!(server = %self.cfg.server_name, "<<< {reply}");
        Ok(reply)
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, ErrorKind> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(reply) = self.parser.next_reply().map_err(ErrorKind::Protocol)? {
                return Ok(reply);
            }
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| ErrorKind::Io(closed()))?;
            let n = stream.read(&mut buf).await.map_err(ErrorKind::Io)?;
            if n == 0 {
                return Err(ErrorKind::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                )));
            }
            self.parser.feed(&buf[..n]);
        }
    }

    /// Sends a command and reads its reply with the command timeout.
    async fn command(&mut self, line: &str, stage: Stage) -> Result<Reply, SessionError> {
        self.send(line, None, stage).await?;
        self.read_reply(stage, self.cfg.timeouts.command).await
    }

    /// Reads the greeting (RFC 5321 §3.1: 220, or 554 for "no service").
    async fn greeting(&mut self) -> Result<(), SessionError> {
        let reply = self
            .read_reply(Stage::Greeting, self.cfg.timeouts.greeting)
            .await?;
        if reply.is_positive() {
            Ok(())
        } else {
            Err(self.error(Stage::Greeting, ErrorKind::Reply(reply)))
        }
    }

    /// EHLO, or HELO when the server refuses EHLO permanently (RFC 5321
    /// §3.2); a HELO session has no extensions.
    async fn hello(&mut self) -> Result<Capabilities, SessionError> {
        let line = format!("EHLO {}", self.cfg.ehlo_name);
        let reply = self.command(&line, Stage::Ehlo).await?;
        if reply.is_positive() {
            return Ok(parse_ehlo(&reply));
        }
        if !reply.is_permanent() {
            return Err(self.error(Stage::Ehlo, ErrorKind::Reply(reply)));
        }
        debug!(server = %self.cfg.server_name, %reply, "EHLO refused; falling back to HELO");
        let line = format!("HELO {}", self.cfg.ehlo_name);
        let reply = self.command(&line, Stage::Ehlo).await?;
        if reply.is_positive() {
            Ok(Capabilities::default())
        } else {
            Err(self.error(Stage::Ehlo, ErrorKind::Reply(reply)))
        }
    }

    /// Applies the TLS mode after the first EHLO; returns the capabilities
    /// the rest of the session uses.
    async fn negotiate_tls(&mut self, caps: Capabilities) -> Result<Capabilities, SessionError> {
        let policy = match self.cfg.tls_mode {
            TlsMode::Implicit => return Ok(caps),
            TlsMode::Plaintext => {
                debug!(server = %self.cfg.server_name, "STARTTLS skipped: plaintext mode");
                return Ok(caps);
            }
            TlsMode::Opportunistic if !caps.starttls => {
                debug!(server = %self.cfg.server_name, "STARTTLS not offered; continuing in plaintext");
                return Ok(caps);
            }
            TlsMode::RequiredVerified | TlsMode::RequiredUnverified if !caps.starttls => {
                return Err(self.error(Stage::StartTls, ErrorKind::StartTlsNotOffered));
            }
            TlsMode::Opportunistic => VerifyPolicy::RecordOnly,
            TlsMode::RequiredVerified => VerifyPolicy::Enforce,
            TlsMode::RequiredUnverified => VerifyPolicy::Skip,
        };
        let reply = self.command("STARTTLS", Stage::StartTls).await?;
        if reply.code != 220 {
            // RFC 3207 §4: after a refused STARTTLS the client decides
            // whether to go on; opportunistic TLS goes on in plaintext.
            if self.cfg.tls_mode == TlsMode::Opportunistic && !reply.is_intermediate() {
                warn!(server = %self.cfg.server_name, %reply, "STARTTLS refused; continuing in plaintext");
                return Ok(caps);
            }
            return Err(self.error(Stage::StartTls, ErrorKind::Reply(reply)));
        }
        if self.parser.has_buffered() {
            self.stream = None;
            return Err(self.error(Stage::StartTls, ErrorKind::DataAfterStartTls));
        }
        self.handshake(policy).await?;
        // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
        self.hello().await
    }

    /// Runs the TLS handshake on the plaintext stream.
    async fn handshake(&mut self, policy: VerifyPolicy) -> Result<(), SessionError> {
        let stage = Stage::TlsHandshake;
        let name =
            rustls_pki_types::ServerName::try_from(self.cfg.server_name.clone()).map_err(|_| {
                let name = self.cfg.server_name.clone();
                self.error(stage, ErrorKind::InvalidServerName { name })
            })?;
        let built = match &self.cfg.dane {
            Some(dane) => tls::dane_client_config(
                dane.records.clone(),
                dane.names.clone(),
                policy == VerifyPolicy::Enforce,
                self.cfg.min_version,
            ),
            None => tls::client_config(self.cfg.roots.clone(), policy, self.cfg.min_version),
        };
        let (config, slot) = built.map_err(|e| self.error(stage, ErrorKind::TlsConfig(e)))?;
        let plain = match self.stream.take() {
            Some(Stream::Plain(plain)) => plain,
            other => {
                self.stream = other;
                let err = io::Error::other("TLS is already active");
                return Err(self.error(stage, ErrorKind::Tls(err)));
            }
        };
        let connect = TlsConnector::from(config).connect(name, plain);
        let limit = self.cfg.timeouts.tls_handshake;
        let tls_stream = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(err)) => {
                let kind = match (policy, tls::take_verdict(&slot)) {
                    (VerifyPolicy::Enforce, CertVerification::Failed(reason)) => {
                        ErrorKind::CertificateRejected { reason }
                    }
                    _ => ErrorKind::Tls(err),
                };
                return Err(self.error(stage, kind));
            }
            Err(_) => return Err(self.error(stage, ErrorKind::Timeout(limit))),
        };
        let info = tls::tls_info(tls_stream.get_ref().1, tls::take_verdict(&slot));
        debug!(
            server = %self.cfg.server_name,
            version = %info.version,
            cipher = %info.cipher,
            verification = ?info.verification,
            "TLS established"
        );
        self.tls = Some(info);
        self.stream = Some(Stream::Tls(Box::new(tls_stream)));
        Ok(())
    }

    /// Checks what the message needs against what the session offers,
    /// before MAIL.
    fn check_requirements(
        &self,
        txn: &Transaction<'_>,
        caps: &Capabilities,
    ) -> Result<(), SessionError> {
        let fail = |kind| Err(self.error(Stage::MailFrom, kind));
        if txn.requiretls {
            // RFC 8689 §4.2.1: TLS with a verified certificate (steps 3, 4)
            // and REQUIRETLS in the post-TLS EHLO (step 5).
            match &self.tls {
                None => return fail(ErrorKind::RequireTlsUnverified { verification: None }),
                Some(info) if !matches!(info.verification, CertVerification::Verified(_)) => {
                    let verification = Some(info.verification.clone());
                    return fail(ErrorKind::RequireTlsUnverified { verification });
                }
                Some(_) if !caps.requiretls => return fail(ErrorKind::RequireTlsNotOffered),
                Some(_) => {}
            }
        }
        if txn.smtputf8 && !caps.smtputf8 {
            return fail(ErrorKind::SmtpUtf8NotOffered);
        }
        // RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME
        // (SMTPUTF8 implies it, RFC 6531 §3.1).
        if txn.eight_bit && !caps.eightbitmime && !caps.smtputf8 {
            return fail(ErrorKind::EightBitNotOffered);
        }
        let size = u64::try_from(txn.message.len()).unwrap_or(u64::MAX);
        match caps.size {
            // RFC 1870 §6.1: do not send a message over the announced limit.
            Some(limit) if limit > 0 && size > limit => {
                fail(ErrorKind::MessageTooLarge { size, limit })
            }
            _ => Ok(()),
        }
    }

    /// AUTH PLAIN (preferred) or LOGIN, only over TLS (RFC 4954 §4).
    async fn authenticate(
        &mut self,
        caps: &Capabilities,
        user: &str,
        password: &str,
    ) -> Result<(), SessionError> {
        let stage = Stage::Auth;
        if self.tls.is_none() {
            return Err(self.error(stage, ErrorKind::AuthOverPlaintext));
        }
        let offers = |m: &str| caps.auth.iter().any(|a| a == m);
        let reply = if offers("PLAIN") {
            let line = format!("AUTH PLAIN {}", command::auth_plain(user, password));
            self.send(&line, Some("AUTH PLAIN <redacted>"), stage)
                .await?;
            self.read_reply(stage, self.cfg.timeouts.command).await?
        } else if offers("LOGIN") {
            let mut reply = self.command("AUTH LOGIN", stage).await?;
            for answer in [user, password] {
                if reply.code != 334 {
                    return Err(self.error(stage, ErrorKind::Reply(reply)));
                }
                let line = command::auth_login_answer(answer);
                self.send(&line, Some("<redacted>"), stage).await?;
                reply = self.read_reply(stage, self.cfg.timeouts.command).await?;
            }
            reply
        } else {
            let offered = caps.auth.clone();
            return Err(self.error(stage, ErrorKind::AuthMechanismUnsupported { offered }));
        };
        if reply.is_positive() {
            Ok(())
        } else {
            Err(self.error(stage, ErrorKind::Reply(reply)))
        }
    }

    /// MAIL and the RCPTs; returns one reply per recipient.
    async fn envelope(
        &mut self,
        txn: &Transaction<'_>,
        caps: &Capabilities,
    ) -> Result<Vec<Reply>, SessionError> {
        let opts = MailOptions {
            sender: txn.sender,
            size: txn.message.len(),
            eight_bit: txn.eight_bit,
            smtputf8: txn.smtputf8,
            requiretls: txn.requiretls,
            dsn: txn.dsn,
        };
        let mail = command::mail_command(&opts, caps);
        let rcpts: Vec<String> = txn
            .recipients
            .iter()
            .map(|r| rcpt_line(r, txn.dsn, caps))
            .collect();
        let limit = self.cfg.timeouts.command;
        let (mail_reply, rcpt_replies) = if caps.pipelining {
            // RFC 2920 §3.1: MAIL and RCPT may be sent as one group; the
            // replies come back in the same order.
            let mut batch = String::new();
            for line in std::iter::once(&mail).chain(&rcpts) {
                trace!(server = %self.cfg.server_name, ">>> {line}");
                batch.push_str(line);
                batch.push_str("\r\n");
            }
            self.write(batch.as_bytes(), Stage::MailFrom, limit).await?;
            let mail_reply = self.read_reply(Stage::MailFrom, limit).await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                replies.push(self.read_reply(Stage::RcptTo, limit).await?);
            }
            (mail_reply, replies)
        } else {
            let mail_reply = self.command(&mail, Stage::MailFrom).await?;
            let mut replies = Vec::with_capacity(rcpts.len());
            if mail_reply.is_positive() {
                for line in &rcpts {
                    replies.push(self.command(line, Stage::RcptTo).await?);
                }
            }
            (mail_reply, replies)
        };
        if mail_reply.is_positive() {
            Ok(rcpt_replies)
        } else {
            Err(self.error(Stage::MailFrom, ErrorKind::Reply(mail_reply)))
        }
    }

    /// DATA, the dot-stuffed message and the final dot; returns the reply
    /// that settles the data (a refused DATA, or the final reply).
    async fn data(&mut self, txn: &Transaction<'_>) -> Result<Reply, SessionError> {
        self.send("DATA", None, Stage::Data).await?;
        let reply = self
            .read_reply(Stage::Data, self.cfg.timeouts.data_init)
            .await?;
        if reply.code != 354 {
            if reply.is_transient() || reply.is_permanent() {
                return Ok(reply);
            }
            return Err(self.error(Stage::Data, ErrorKind::Reply(reply)));
        }
        trace!(server = %self.cfg.server_name, ">>> (message of {} bytes)", txn.message.len());
        let block = self.cfg.timeouts.data_block;
        let mut stuffer = DotStuffer::new(txn.message, DATA_CHUNK);
        while let Some(chunk) = stuffer.next_chunk() {
            self.write(&chunk, Stage::Data, block).await?;
        }
        trace!(server = %self.cfg.server_name, ">>> .");
        self.write(command::end_of_data(txn.message), Stage::DataEnd, block)
            .await?;
        let reply = self
            .read_reply(Stage::DataEnd, self.cfg.timeouts.data_end)
            .await?;
        if reply.is_intermediate() {
            return Err(self.error(Stage::DataEnd, ErrorKind::Reply(reply)));
        }
        if reply.is_positive() {
            crate::crashpoint::reached("data-accepted");
        }
        Ok(reply)
    }

    /// Ends the session politely when the connection is still usable; its
    /// outcome changes nothing.
    async fn quit(&mut self) {
        if self.stream.is_none() {
            return;
        }
        let limit = self.cfg.timeouts.quit;
        let result = async {
            self.send("QUIT", None, Stage::Quit).await?;
            self.read_reply(Stage::Quit, limit).await
        }
        .await;
        if let Err(err) = result {
            debug!(server = %self.cfg.server_name, %err, "QUIT failed");
        }
        self.stream = None;
    }
}

/// The RCPT line for one recipient, leaving out an ORCPT that is not valid
/// xtext rather than sending a malformed command.
fn rcpt_line(rcpt: &RecipientSpec, dsn: &DsnRequest, caps: &Capabilities) -> String {
    let notify = rcpt.notify.as_deref().or(dsn.notify.as_deref());
    let orcpt = rcpt.orcpt.as_deref().filter(|orcpt| {
        let valid = command::is_xtext(orcpt);
        if !valid {
            warn!(recipient = %rcpt.address, orcpt, "ORCPT is not valid xtext; left out");
        }
        valid
    });
    command::rcpt_command(&rcpt.address, notify, orcpt, caps)
}

fn outcome(
    spec: &RecipientSpec,
    rcpt_reply: Reply,
    data_reply: Option<&Reply>,
) -> RecipientOutcome {
    let (accepted, final_reply) = match data_reply {
        Some(data) if rcpt_reply.is_positive() => (data.is_positive(), data.clone()),
        _ => (false, rcpt_reply.clone()),
    };
    RecipientOutcome {
        address: spec.address.clone(),
        rcpt_reply,
        accepted,
        final_reply,
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection already closed")
}

#[cfg(test)]
mod tests;
