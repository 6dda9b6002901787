//! One ESMTP server session (RFC 5321), generic over the byte stream so
//! that it serves TCP clients and `sendmail -bs` on standard input and
//! output alike.
//!
//! The session owns the dialogue: greeting, EHLO/HELO, STARTTLS (RFC
//! 3207), AUTH PLAIN and LOGIN over TLS (RFC 4954, RFC 4616), MAIL, RCPT,
//! DATA, RSET, NOOP, VRFY, HELP, QUIT, with enhanced status codes (RFC
//! 3463, RFC 5248 registry). It decides who may relay, checks the
//! parameters, builds the [`Envelope`] and hands the message to a
//! [`MessageSink`], answering 250 to the final dot only once the sink says
//! the message is durable. It does not listen, count connections or
//! deliver; [`super::server`] does that.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use super::auth::Credentials;
use super::command::{self, line_limit, split_verb, MailParams, ParamError, Path};
use super::data::{Data, DataDecoder};
use crate::config::ListenConfig;
use crate::envelope::{DsnRequest, SecurityRecord};
use crate::queue::file::{Envelope, RecipientSpec, ENVELOPE_VERSION};
use crate::queue::{new_queue_id, QueueError};

/// Commands refused in a row or in all before the session is closed.
const MAX_ERRORS: usize = 20;

/// More than this many `Received:` fields is taken for a mail loop (RFC
/// 5321 §6.3 advises at least 100).
pub const MAX_RECEIVED: usize = 100;

/// Where an accepted message goes: the maildrop, durably.
pub trait MessageSink: Send + Sync {
    /// Stores the message; `Ok` only once it is on stable storage.
    fn store(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError>;
    /// Called after each stored message (wakes the delivery loop).
    fn accepted(&self) {}
}

/// Who is at the other end.
#[derive(Debug, Clone)]
pub enum Client {
    /// A TCP client.
    Tcp(SocketAddr),
    /// The local user running `sendmail -bs`.
    Local {
        /// Login name.
        user: String,
        /// Real uid.
        uid: u32,
    },
}

impl Client {
    fn is_loopback(&self) -> bool {
        match self {
            Self::Tcp(addr) => match addr.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
                IpAddr::V4(v4) => v4.is_loopback(),
            },
            Self::Local { .. } => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Tcp(addr) => addr.ip().to_string(),
            Self::Local { user, .. } => format!("local user {user}"),
        }
    }
}

/// What every session shares.
#[derive(Clone)]
pub struct Settings {
    /// Our name in the greeting, EHLO and `Received:`.
    pub hostname: String,
    /// Domain for bare local names from a local client.
    pub domain: String,
    /// Largest accepted message.
    pub max_message_size: u64,
    /// `[listen]`.
    pub listen: ListenConfig,
    /// STARTTLS is offered with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// AUTH is offered (over TLS) with these credentials.
    pub credentials: Option<Arc<Credentials>>,
}

/// Why a session ended other than by QUIT.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The client closed the connection.
    #[error("client closed the connection")]
    Closed,
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The client was silent longer than the timeout.
    #[error("timeout waiting for the client")]
    Timeout,
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// Too many refused commands.
    #[error("too many errors")]
    TooManyErrors,
    /// The server is shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// The connection, before and after STARTTLS.
enum Conn<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Self::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A mail transaction in progress.
#[derive(Debug, Default)]
struct Transaction {
    sender: String,
    params: MailParams,
    utf8: bool,
    recipients: Vec<RecipientSpec>,
}

/// The negotiated TLS session, for `Received:` and the log.
#[derive(Debug, Clone)]
struct TlsFacts {
    version: String,
    cipher: String,
}

/// What the session does after a command.
enum Flow {
    Continue,
    Quit,
}

/// A line read from the client.
enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

/// One SMTP session.
pub struct Session<S> {
    conn: Conn<S>,
    buf: Vec<u8>,
    settings: Arc<Settings>,
    client: Client,
    relay_allowed: bool,
    sink: Arc<dyn MessageSink>,
    shutdown: watch::Receiver<bool>,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<TlsFacts>,
    auth_user: Option<String>,
    tx: Option<Transaction>,
    errors: usize,
    discarding: bool,
    /// Queue ids of the messages accepted in this session.
    pub accepted: Vec<String>,
}

/// Replies are written with CRLF; `text` may hold several lines.
fn reply_bytes(code: u16, text: &str) -> Vec<u8> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
    }
    out
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A session on `stream` with `client`. `relay_allowed`: the client may
    /// relay without AUTH (its address is in `[listen] allow`, or it is
    /// the local user). `shutdown` turning true ends the session between
    /// transactions with 421.
    pub fn new(
        stream: S,
        settings: Arc<Settings>,
        client: Client,
        relay_allowed: bool,
        sink: Arc<dyn MessageSink>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            conn: Conn::Plain(stream),
            buf: Vec::new(),
            settings,
            client,
            relay_allowed,
            sink,
            shutdown,
            helo: None,
            esmtp: false,
            tls: None,
            auth_user: None,
            tx: None,
            errors: 0,
            discarding: false,
            accepted: Vec::new(),
        }
    }

    /// Runs the session to its end: `Ok` after QUIT.
    pub async fn run(&mut self) -> Result<(), SessionEnd> {
        let greeting = format!("{} ESMTP smarthost", self.settings.hostname);
        self.reply(220, &greeting).await?;
        let result = self.command_loop().await;
        match &result {
            Err(SessionEnd::Timeout) => {
                let _ = self
                    .reply(421, "4.4.2 Timeout, closing the connection")
                    .await;
            }
            Err(SessionEnd::TooManyErrors) => {
                let _ = self
                    .reply(421, "4.7.0 Too many errors, closing the connection")
                    .await;
            }
            Err(SessionEnd::Shutdown) => {
                let _ = self.reply(421, "4.3.2 Service shutting down").await;
            }
            _ => {}
        }
        let _ = self.conn.shutdown().await;
        result
    }

    async fn command_loop(&mut self) -> Result<(), SessionEnd> {
        loop {
            let line = self.next_command().await?;
            let flow = match line {
                Line::TooLong => self.refuse(500, "5.5.2 Line too long").await?,
                Line::NotUtf8 => self.refuse(500, "5.5.2 Command is not valid UTF-8").await?,
                Line::Text(text) => self.dispatch(&text).await?,
            };
            if let Flow::Quit = flow {
                return Ok(());
            }
            if self.errors >= MAX_ERRORS {
                return Err(SessionEnd::TooManyErrors);
            }
        }
    }

    /// Reads the next command, ending the session on shutdown when no
    /// transaction is open.
    async fn next_command(&mut self) -> Result<Line, SessionEnd> {
        let timeout = self.settings.listen.command_timeout;
        if self.tx.is_some() || self.has_line() {
            return self.read_line(timeout).await;
        }
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return Err(SessionEnd::Shutdown);
        }
        tokio::select! {
            line = self.read_line(timeout) => line,
            _ = wait_true(&mut shutdown) => Err(SessionEnd::Shutdown),
        }
    }

    fn has_line(&self) -> bool {
        self.buf.contains(&b'\n')
    }

    async fn fill(&mut self, timeout: Duration) -> Result<(), SessionEnd> {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(timeout, self.conn.read(&mut chunk))
            .await
            .map_err(|_| SessionEnd::Timeout)??;
        if n == 0 {
            return Err(SessionEnd::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One command line, CRLF (or a bare LF) removed. A line longer than
    /// any command may be is skipped up to its end and reported as
    /// [`Line::TooLong`].
    async fn read_line(&mut self, timeout: Duration) -> Result<Line, SessionEnd> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=nl).collect();
                if std::mem::take(&mut self.discarding) {
                    return Ok(Line::TooLong);
                }
                return Ok(check_line(raw));
            }
            if self.buf.len() > command::MAX_AUTH_LINE {
                self.buf.clear();
                self.discarding = true;
            }
            self.fill(timeout).await?;
        }
    }

    async fn reply(&mut self, code: u16, text: &str) -> Result<(), SessionEnd> {
        debug!(client = %self.client.describe(), code, text, "reply");
        self.conn.write_all(&reply_bytes(code, text)).await?;
        self.conn.flush().await?;
        Ok(())
    }

    async fn ok(&mut self, code: u16, text: &str) -> Result<Flow, SessionEnd> {
        self.reply(code, text).await?;
        Ok(Flow::Continue)
    }

    async fn refuse(&mut self, code: u16, text: &str) -> Result<Flow, SessionEnd> {
        self.errors += 1;
        self.ok(code, text).await
    }

    async fn dispatch(&mut self, line: &str) -> Result<Flow, SessionEnd> {
        let (verb, rest) = split_verb(line);
        if line.len() + 2 > line_limit(&verb) {
            return self.refuse(500, "5.5.2 Line too long").await;
        }
        if verb == "AUTH" {
            debug!(client = %self.client.describe(), "command AUTH (credentials not logged)");
        } else {
            debug!(client = %self.client.describe(), command = line, "command");
        }
        match verb.as_str() {
            "EHLO" | "HELO" => self.helo(&verb, rest).await,
            "STARTTLS" => self.starttls(rest).await,
            "AUTH" => self.auth(rest).await,
            "MAIL" => self.mail(rest).await,
            "RCPT" => self.rcpt(rest).await,
            "DATA" => self.data(rest).await,
            "RSET" => {
                self.tx = None;
                self.ok(250, "2.0.0 Ok").await
            }
            "NOOP" => self.ok(250, "2.0.0 Ok").await,
            "QUIT" => {
                self.reply(221, "2.0.0 Bye").await?;
                Ok(Flow::Quit)
            }
            // RFC 5321 §3.5.3: 252 when the address is not checked.
            "VRFY" => {
                self.ok(252, "2.5.0 Cannot VRFY user, but will accept the message")
                    .await
            }
            "HELP" => {
                self.ok(
                    214,
                    "2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
                )
                .await
            }
            "EXPN" | "TURN" | "ETRN" | "BDAT" => {
                self.refuse(502, "5.5.1 Command not implemented").await
            }
            _ => self.refuse(500, "5.5.1 Command unrecognized").await,
        }
    }

    /// The channel protects the message as TLS would: a TLS session, or
    /// the local pipe of `sendmail -bs`, which never crosses a network.
    fn secure(&self) -> bool {
        self.tls.is_some() || matches!(self.client, Client::Local { .. })
    }

    fn auth_offered(&self) -> bool {
        self.tls.is_some() && self.settings.credentials.is_some()
    }

    async fn helo(&mut self, verb: &str, rest: &str) -> Result<Flow, SessionEnd> {
        let name = rest.trim();
        if name.is_empty() || name.contains(' ') {
            return self
                .refuse(501, &format!("5.5.4 Syntax: {verb} hostname"))
                .await;
        }
        // RFC 5321 §4.1.4: EHLO/HELO also resets the transaction.
        self.tx = None;
        self.helo = Some(name.to_owned());
        self.esmtp = verb == "EHLO";
        if verb == "HELO" {
            let text = self.settings.hostname.clone();
            return self.ok(250, &text).await;
        }
        let mut lines = vec![
            format!("{} greets {name}", self.settings.hostname),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.settings.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "DSN".to_owned(),
        ];
        // LIMITATION: CHUNKING (RFC 3030, BDAT) is not offered; clients
        // fall back to DATA, which every client implements.
        if self.settings.tls.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        // RFC 8689 §2: REQUIRETLS only where the session is protected.
        if self.secure() {
            lines.push("REQUIRETLS".to_owned());
        }
        self.ok(250, &lines.join("\n")).await
    }

    async fn starttls(&mut self, rest: &str) -> Result<Flow, SessionEnd> {
        let Some(config) = self.settings.tls.clone() else {
            return self.refuse(502, "5.5.1 STARTTLS not available").await;
        };
        if self.tls.is_some() {
            return self.refuse(503, "5.5.1 TLS already active").await;
        }
        if !rest.trim().is_empty() {
            return self.refuse(501, "5.5.4 Syntax: STARTTLS").await;
        }
        self.reply(220, "2.0.0 Ready to start TLS").await?;
        // RFC 3207 §4.2: anything the client sent after STARTTLS and
        // before the handshake is thrown away, never read as a command
        // inside the TLS session (command injection).
        if !self.buf.is_empty() {
            warn!(client = %self.client.describe(), bytes = self.buf.len(),
                "discarded data pipelined after STARTTLS");
            self.buf.clear();
        }
        let Conn::Plain(stream) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            return Err(SessionEnd::Closed);
        };
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
        let tls = tokio::time::timeout(self.settings.listen.command_timeout, accept)
            .await
            .map_err(|_| SessionEnd::Timeout)?
            .map_err(SessionEnd::Handshake)?;
        let (_, conn) = tls.get_ref();
        self.tls = Some(TlsFacts {
            version: crate::smtp::tls::version_name(conn.protocol_version()),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(String::new, |c| format!("{:?}", c.suite())),
        });
        self.conn = Conn::Tls(Box::new(tls));
        // RFC 3207 §4.2: the session starts over; the client must EHLO.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.auth_user = None;
        Ok(Flow::Continue)
    }

    async fn auth(&mut self, rest: &str) -> Result<Flow, SessionEnd> {
        if self.helo.is_none() || !self.esmtp {
            return self.refuse(503, "5.5.1 EHLO first").await;
        }
        if self.tls.is_none() {
            return self
                .refuse(
                    538,
                    "5.7.11 Encryption required for requested authentication mechanism",
                )
                .await;
        }
        let Some(credentials) = self.settings.credentials.clone() else {
            return self.refuse(502, "5.5.1 AUTH not available").await;
        };
        if self.auth_user.is_some() || self.tx.is_some() {
            return self.refuse(503, "5.5.1 AUTH not allowed now").await;
        }
        let (mechanism, initial) = rest.split_once(' ').unwrap_or((rest, ""));
        let pair = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => self.auth_plain(initial.trim()).await?,
            "LOGIN" => self.auth_login(initial.trim()).await?,
            _ => {
                return self
                    .refuse(504, "5.5.4 Unrecognized authentication mechanism")
                    .await
            }
        };
        let Some((user, password)) = pair else {
            return self
                .refuse(501, "5.5.2 Authentication cancelled or malformed")
                .await;
        };
        // LIMITATION: failed attempts are limited only by MAX_ERRORS per
        // session and the connection limits; there is no delay or
        // per-address lockout after repeated failures.
        let check_user = user.clone();
        let ok = tokio::task::spawn_blocking(move || credentials.verify(&check_user, &password))
            .await
            .unwrap_or(false);
        if ok {
            info!(client = %self.client.describe(), user = %user, "authenticated");
            self.auth_user = Some(user);
            self.ok(235, "2.7.0 Authentication successful").await
        } else {
            warn!(client = %self.client.describe(), user = %user, "authentication failed");
            self.refuse(535, "5.7.8 Authentication credentials invalid")
                .await
        }
    }

    /// A base64 answer to a 334 challenge; `None` for `*` or bad base64.
    async fn challenge(&mut self, prompt: &str) -> Result<Option<Vec<u8>>, SessionEnd> {
        self.reply(334, prompt).await?;
        let timeout = self.settings.listen.command_timeout;
        match self.read_line(timeout).await? {
            Line::Text(t) if t.trim() != "*" => Ok(decode64(t.trim())),
            _ => Ok(None),
        }
    }

    /// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`.
    async fn auth_plain(&mut self, initial: &str) -> Result<Option<(String, String)>, SessionEnd> {
        let raw = if initial.is_empty() {
            self.challenge("").await?
        } else if initial == "=" {
            Some(Vec::new())
        } else {
            decode64(initial)
        };
        let Some(raw) = raw else { return Ok(None) };
        let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
        let [authz, user, pass] = parts.as_slice() else {
            return Ok(None);
        };
        let (Ok(authz), Ok(user), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(user),
            std::str::from_utf8(pass),
        ) else {
            return Ok(None);
        };
        if !authz.is_empty() && authz != user {
            return Ok(None);
        }
        Ok(Some((user.to_owned(), pass.to_owned())))
    }

    async fn auth_login(&mut self, initial: &str) -> Result<Option<(String, String)>, SessionEnd> {
        let user = if initial.is_empty() {
            self.challenge("VXNlcm5hbWU6").await?
        } else {
            decode64(initial)
        };
        let Some(user) = user.and_then(|u| String::from_utf8(u).ok()) else {
            return Ok(None);
        };
        let pass = self.challenge("UGFzc3dvcmQ6").await?;
        Ok(pass
            .and_then(|p| String::from_utf8(p).ok())
            .map(|p| (user, p)))
    }

    /// True when the client may relay: its address is allowed, it is the
    /// local user, or it authenticated.
    fn may_relay(&self) -> bool {
        self.relay_allowed || self.auth_user.is_some()
    }

    async fn mail(&mut self, rest: &str) -> Result<Flow, SessionEnd> {
        if self.helo.is_none() {
            return self.refuse(503, "5.5.1 EHLO or HELO first").await;
        }
        if self.tx.is_some() {
            return self.refuse(503, "5.5.1 Nested MAIL command").await;
        }
        if !self.may_relay() {
            return self.refuse(530, "5.7.0 Authentication required").await;
        }
        let (path, words) = match command::parse_path_and_params(rest, "FROM") {
            Ok(p) => p,
            Err(e) => return self.param_error(&e, "5.1.7").await,
        };
        if !self.esmtp && !words.is_empty() {
            return self.refuse(555, "5.5.4 MAIL parameters need EHLO").await;
        }
        let params = match command::parse_mail_params(&words) {
            Ok(p) => p,
            Err(e) => return self.param_error(&e, "5.5.4").await,
        };
        if params.requiretls && !self.secure() && !self.plaintext_requiretls_allowed() {
            // RFC 8689 §2: REQUIRETLS only on a TLS-protected session;
            // RFC 3207 §4 gives 530 for "TLS first".
            return self
                .refuse(
                    530,
                    "5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first",
                )
                .await;
        }
        if params
            .size
            .is_some_and(|s| s > self.settings.max_message_size)
        {
            return self
                .refuse(552, "5.3.4 Message size exceeds fixed limit")
                .await;
        }
        let sender = match self.qualify(path, true) {
            Ok(s) => s,
            Err(text) => return self.refuse(553, &text).await,
        };
        let utf8 = !sender.is_ascii();
        if utf8 && !params.smtputf8 {
            return self
                .refuse(553, "5.6.7 Non-ASCII address needs the SMTPUTF8 parameter")
                .await;
        }
        self.tx = Some(Transaction {
            sender,
            params,
            utf8,
            recipients: Vec::new(),
        });
        self.ok(250, "2.1.0 Ok").await
    }

    fn plaintext_requiretls_allowed(&self) -> bool {
        self.settings.listen.requiretls_plaintext_loopback && self.client.is_loopback()
    }

    async fn param_error(&mut self, e: &ParamError, addr_code: &str) -> Result<Flow, SessionEnd> {
        match e {
            ParamError::Syntax(m) => self.refuse(501, &format!("5.5.4 {m}")).await,
            ParamError::BadAddress(m) => self.refuse(553, &format!("{addr_code} {m}")).await,
            ParamError::Unknown(m) => self.refuse(555, &format!("5.5.4 {m}")).await,
        }
    }

    /// The address as queued. A bare local name is qualified for the local
    /// user (as `sendmail` does); from the network only `postmaster` may
    /// be bare (RFC 5321 §4.1.1.3).
    fn qualify(&self, path: Path, sender: bool) -> Result<String, String> {
        if !path.bare {
            return Ok(path.address);
        }
        let local = matches!(self.client, Client::Local { .. });
        if local || (!sender && path.address.eq_ignore_ascii_case("postmaster")) {
            return Ok(format!("{}@{}", path.address, self.settings.domain));
        }
        let code = if sender { "5.1.7" } else { "5.1.3" };
        Err(format!("{code} Address must have a domain"))
    }

    async fn rcpt(&mut self, rest: &str) -> Result<Flow, SessionEnd> {
        let Some(count) = self.tx.as_ref().map(|t| t.recipients.len()) else {
            return self.refuse(503, "5.5.1 MAIL first").await;
        };
        // Every recipient is relayed (there is no local delivery); checked
        // again here so that no path past MAIL relays for a stranger.
        if !self.may_relay() {
            return self.refuse(554, "5.7.1 Relay access denied").await;
        }
        let (path, words) = match command::parse_path_and_params(rest, "TO") {
            Ok(p) => p,
            Err(e) => return self.param_error(&e, "5.1.3").await,
        };
        if !self.esmtp && !words.is_empty() {
            return self.refuse(555, "5.5.4 RCPT parameters need EHLO").await;
        }
        let params = match command::parse_rcpt_params(&words) {
            Ok(p) => p,
            Err(e) => return self.param_error(&e, "5.1.3").await,
        };
        if path.address.is_empty() {
            return self.refuse(553, "5.1.3 Empty recipient").await;
        }
        let address = match self.qualify(path, false) {
            Ok(a) => a,
            Err(text) => return self.refuse(553, &text).await,
        };
        let Some(tx) = self.tx.as_mut() else {
            return self.refuse(503, "5.5.1 MAIL first").await;
        };
        if !address.is_ascii() && !tx.params.smtputf8 {
            return self
                .refuse(553, "5.6.7 Non-ASCII address needs the SMTPUTF8 parameter")
                .await;
        }
        if count >= self.settings.listen.max_recipients {
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients.
            return self.ok(452, "4.5.3 Too many recipients").await;
        }
        tx.utf8 |= !address.is_ascii();
        if !tx.recipients.iter().any(|r| r.address == address) {
            tx.recipients.push(RecipientSpec {
                address,
                notify: params.notify,
                orcpt: params.orcpt,
            });
        }
        self.ok(250, "2.1.5 Ok").await
    }

    async fn data(&mut self, rest: &str) -> Result<Flow, SessionEnd> {
        if !rest.trim().is_empty() {
            return self.refuse(501, "5.5.4 Syntax: DATA").await;
        }
        match self.tx.as_ref().map(|t| t.recipients.is_empty()) {
            None => return self.refuse(503, "5.5.1 MAIL first").await,
            Some(true) => return self.refuse(554, "5.5.1 No valid recipients").await,
            Some(false) => {}
        }
        self.reply(354, "End data with <CR><LF>.<CR><LF>").await?;
        let data = self.read_data().await?;
        let Some(tx) = self.tx.take() else {
            return Err(SessionEnd::Closed);
        };
        if data.bare_line_end {
            return self
                .refuse(
                    550,
                    "5.6.11 Bare CR or LF in the message; lines must end with CRLF",
                )
                .await;
        }
        if data.too_big {
            return self
                .refuse(552, "5.3.4 Message size exceeds fixed limit")
                .await;
        }
        if count_received(&data.message) > MAX_RECEIVED {
            warn!(client = %self.client.describe(), "too many Received: fields; mail loop refused");
            return self.refuse(554, "5.4.6 Too many hops: mail loop").await;
        }
        self.store(tx, data).await
    }

    async fn read_data(&mut self) -> Result<Data, SessionEnd> {
        let mut decoder = DataDecoder::new(self.settings.max_message_size);
        loop {
            if !self.buf.is_empty() {
                if let Some(used) = decoder.feed(&self.buf) {
                    self.buf.drain(..used);
                    return Ok(decoder.finish());
                }
                self.buf.clear();
            }
            self.fill(self.settings.listen.data_timeout).await?;
        }
    }

    async fn store(&mut self, tx: Transaction, data: Data) -> Result<Flow, SessionEnd> {
        let id = new_queue_id();
        let envelope = self.envelope(&id, tx, &data);
        let mut message = self.received_field(&id, &envelope).into_bytes();
        message.extend_from_slice(&data.message);
        let sink = self.sink.clone();
        let env = envelope.clone();
        let stored = tokio::task::spawn_blocking(move || sink.store(&env, &message)).await;
        match stored {
            Ok(Ok(())) => {
                self.sink.accepted();
                info!(
                    queue_id = %id,
                    client = %self.client.describe(),
                    helo = self.helo.as_deref().unwrap_or(""),
                    user = self.auth_user.as_deref().unwrap_or(""),
                    tls = self.tls.as_ref().map_or("none", |t| t.version.as_str()),
                    requiretls = envelope.security.requiretls,
                    tls_required_no = envelope.security.tls_optional,
                    sender = %envelope.sender,
                    recipients = envelope.recipients.len(),
                    size = data.size,
                    "message accepted"
                );
                self.accepted.push(id.clone());
                self.ok(250, &format!("2.0.0 Ok: queued as {id}")).await
            }
            Ok(Err(e)) => {
                tracing::error!(client = %self.client.describe(), error = %e,
                    "cannot store an incoming message; answered 451");
                self.ok(451, "4.3.0 Cannot store the message now; try again later")
                    .await
            }
            Err(e) => {
                tracing::error!(error = %e, "the storing task failed; answered 451");
                self.ok(451, "4.3.0 Cannot store the message now; try again later")
                    .await
            }
        }
    }

    fn envelope(&self, id: &str, tx: Transaction, data: &Data) -> Envelope {
        let p = &tx.params;
        // RFC 8689 §4.1: with the REQUIRETLS parameter the header is
        // ignored for policy (but kept in the message); without it, one
        // `TLS-Required: No` field marks the message TLS-optional.
        let tls_optional = !p.requiretls && tls_required_no(&data.message);
        let submitted_by = match (&self.client, &self.auth_user) {
            (Client::Local { user, .. }, _) => user.clone(),
            (Client::Tcp(_), Some(user)) => format!("smtp-auth:{user}"),
            (Client::Tcp(addr), None) => format!("smtp:{}", addr.ip()),
        };
        Envelope {
            version: ENVELOPE_VERSION,
            id: id.to_owned(),
            sender: tx.sender,
            recipients: tx.recipients,
            arrival: chrono::Utc::now().timestamp(),
            dsn: DsnRequest {
                notify: None,
                ret: p.ret,
                envid: p.envid.clone(),
                body: p.body,
            },
            security: SecurityRecord {
                requiretls: p.requiretls,
                tls_optional,
                ..SecurityRecord::default()
            },
            smtputf8: tx.utf8 || p.smtputf8,
            eight_bit: data.message.iter().any(|&b| b >= 0x80),
            submitted_by,
            report: None,
        }
    }

    /// The `Received:` field (RFC 5321 §4.4) with the protocol of RFC
    /// 3848: ESMTP, plus S for TLS and A for AUTH; SMTP after HELO.
    fn received_field(&self, id: &str, envelope: &Envelope) -> String {
        let proto = match (self.esmtp, self.tls.is_some(), self.auth_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let from = match &self.client {
            Client::Tcp(addr) => match addr.ip() {
                IpAddr::V4(v4) => format!("{helo} ([{v4}])"),
                IpAddr::V6(v6) => format!("{helo} ([IPv6:{v6}])"),
            },
            Client::Local { uid, .. } => format!("{helo} (from userid {uid})"),
        };
        let tls = self.tls.as_ref().map_or_else(String::new, |t| {
            format!("\r\n\t(using {} with cipher {})", t.version, t.cipher)
        });
        let rcpt = match envelope.recipients.as_slice() {
            [one] => format!("\r\n\tfor <{}>", one.address),
            _ => String::new(),
        };
        format!(
            "Received: from {from}\r\n\tby {} (smarthost) with {proto} id {id}{tls}{rcpt};\r\n\t{}\r\n",
            self.settings.hostname,
            chrono::Local::now().to_rfc2822()
        )
    }
}

/// Waits until the flag is true (or its sender is gone, which never
/// happens while the server runs).
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn check_line(mut raw: Vec<u8>) -> Line {
    raw.pop();
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    if raw.len() + 2 > command::MAX_AUTH_LINE {
        return Line::TooLong;
    }
    match String::from_utf8(raw) {
        Ok(t) if !t.contains(['\r', '\0']) => Line::Text(t),
        _ => Line::NotUtf8,
    }
}

fn decode64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// The header section of a CRLF message.
fn header_section(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message, |p| &message[..p + 2])
}

fn count_received(message: &[u8]) -> usize {
    let header = crate::submission::header::Message::parse(header_section(message));
    header.fields.iter().filter(|f| f.is("Received")).count()
}

fn tls_required_no(message: &[u8]) -> bool {
    let header = crate::submission::header::Message::parse(header_section(message));
    crate::submission::tls_required_no(&header)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
