//! A scriptable SMTP server standing in for a recipient's MX host.
//!
//! It speaks enough of RFC 5321 for a delivery client (greeting, EHLO/HELO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT), offers STARTTLS (RFC 3207) when given
//! a certificate or speaks TLS from the first byte (RFC 8314 §3), offers
//! AUTH PLAIN and LOGIN (RFC 4954, RFC 4616) when given credentials, accepts
//! pipelined commands (RFC 2920), and records every command and every
//! completed transaction so that tests can assert on what the client sent.
//! Replies can be overridden per command and per recipient.
//!
//! The server runs on the shared test runtime; the API is blocking.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::certs::CertifiedKey;
use super::runtime;

/// Longest line the server buffers before answering 500; far above the
/// RFC 5321 §4.5.3.1 limits, it only guards the test process's memory.
const MAX_LINE: usize = 1 << 20;

/// Finds a TCP port that is free on every address in `ips`, so that several
/// fake MX hosts can listen on the same port (the binary dials one port).
///
/// The port is released before returning, so another process could take it in
/// between; collisions are unlikely with ephemeral ports. Within this test
/// process no port is handed out twice, so tests running in parallel never
/// share one (the kernel may give a released port to the next probe).
///
/// Candidate ports come from the kernel through a probe bound to
/// [`PROBE_IP`], an address no fake server uses, so that looking for a
/// port never binds, even for a moment, a port already handed to a
/// parallel test on the addresses its servers use.
pub fn free_port_on(ips: &[Ipv4Addr]) -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    assert!(!ips.is_empty(), "free_port_on needs an address");
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let probe = StdTcpListener::bind((PROBE_IP, 0)).expect("bind a loopback probe");
        let port = probe.local_addr().expect("probe address").port();
        if given.contains(&port) {
            continue;
        }
        let all: io::Result<Vec<_>> = ips
            .iter()
            .map(|ip| StdTcpListener::bind((*ip, port)))
            .collect();
        if all.is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no TCP port free on all of {ips:?} after 100 attempts");
}

/// Where [`free_port_on`] asks the kernel for candidate ports.
pub const PROBE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// One SMTP reply: code and text (the text may hold an enhanced status code).
#[derive(Clone, Debug)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn new(code: u16, text: &str) -> Self {
        Self {
            code,
            text: text.to_string(),
        }
    }

    fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    fn wire(&self) -> String {
        format!("{} {}\r\n", self.code, self.text)
    }
}

/// Credentials the server accepts, and the SASL mechanisms it offers.
#[derive(Clone, Debug)]
struct AuthSettings {
    user: String,
    password: String,
    mechanisms: Vec<String>,
}

/// Configures and starts a [`FakeMx`]; obtain it with [`FakeMx::builder`].
#[derive(Clone)]
pub struct FakeMxBuilder {
    ip: Ipv4Addr,
    port: u16,
    hostname: String,
    tls: Option<CertifiedKey>,
    implicit_tls: bool,
    tls12_only: bool,
    auth: Option<AuthSettings>,
    extensions: Vec<String>,
    requiretls: bool,
    greeting: Option<Reply>,
    fail_first: Option<(usize, Reply)>,
    mail_reply: Reply,
    rcpt_replies: HashMap<String, Reply>,
    data_reply: Reply,
    data_delay: Duration,
    data_delay_sessions: Option<usize>,
    max_rcpts: Option<usize>,
    close_on_rset: bool,
}

impl FakeMxBuilder {
    /// Address to listen on (must be in 127.0.0.0/8); default 127.0.0.1.
    pub fn ip(mut self, ip: Ipv4Addr) -> Self {
        assert!(
            ip.is_loopback(),
            "fake MX must listen on loopback, not {ip}"
        );
        self.ip = ip;
        self
    }

    /// Port to listen on; default 0 (an ephemeral port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Name in the greeting and the EHLO reply; default `mx.example.org`.
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = name.to_string();
        self
    }

    /// Offers STARTTLS with this certificate; `None` (the default) does not
    /// offer it.
    pub fn starttls(mut self, cert: Option<CertifiedKey>) -> Self {
        self.tls = cert;
        self.implicit_tls = false;
        self
    }

    /// Speaks TLS from the first byte with this certificate, as a
    /// submissions port does (RFC 8314 §3): the handshake comes before the
    /// greeting, and STARTTLS is not offered. A client that starts in
    /// plaintext fails the handshake (counted in [`FakeMx::tls_failures`]).
    pub fn implicit_tls(mut self, cert: CertifiedKey) -> Self {
        self.tls = Some(cert);
        self.implicit_tls = true;
        self
    }

    /// Speaks TLS 1.2 only (with the STARTTLS or implicit-TLS certificate),
    /// for clients that require TLS 1.3.
    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    /// Offers `AUTH PLAIN LOGIN` (RFC 4954) in every EHLO reply, encrypted
    /// or not, accepts only `user` with `password`, and refuses MAIL with
    /// 530 until the session has authenticated.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some(AuthSettings {
            user: user.to_string(),
            password: password.to_string(),
            mechanisms: vec!["PLAIN".to_string(), "LOGIN".to_string()],
        });
        self
    }

    /// Replaces the offered SASL mechanisms (after [`FakeMxBuilder::auth`]);
    /// only PLAIN and LOGIN are implemented, any other one is advertised but
    /// answered with 504.
    pub fn auth_mechanisms(mut self, mechanisms: &[&str]) -> Self {
        let auth = self
            .auth
            .as_mut()
            .expect("call auth() before auth_mechanisms()");
        auth.mechanisms = mechanisms.iter().map(|m| m.to_ascii_uppercase()).collect();
        self
    }

    /// Replaces the EHLO keywords (STARTTLS is added separately). A keyword
    /// listed here is advertised whether or not the session is encrypted.
    pub fn extensions(mut self, keywords: &[&str]) -> Self {
        self.extensions = keywords.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Advertises REQUIRETLS (RFC 8689), but only in the EHLO reply of an
    /// encrypted session, as RFC 8689 §2 makes it meaningful only there.
    pub fn requiretls(mut self) -> Self {
        self.requiretls = true;
        self
    }

    /// Reply to MAIL (default `250 2.1.0 Sender ok`).
    pub fn mail_reply(mut self, code: u16, text: &str) -> Self {
        self.mail_reply = Reply::new(code, text);
        self
    }

    /// Answers RSET with `421 4.4.2` and closes the connection, as a
    /// server does that has given up on an idle client.
    pub fn close_on_rset(mut self) -> Self {
        self.close_on_rset = true;
        self
    }

    /// Takes at most `n` recipients per transaction and answers the rest
    /// with `452 4.5.3` (RFC 5321 §4.5.3.1.10).
    pub fn max_rcpts_per_transaction(mut self, n: usize) -> Self {
        self.max_rcpts = Some(n);
        self
    }

    /// Reply to `RCPT TO:<addr>` (address compared case-insensitively;
    /// default `250 2.1.5 Recipient ok`).
    pub fn rcpt_reply(mut self, addr: &str, code: u16, text: &str) -> Self {
        self.rcpt_replies
            .insert(addr.to_ascii_lowercase(), Reply::new(code, text));
        self
    }

    /// Reply to the end-of-data dot (default `250 2.0.0 Queued`). Only a 2xx
    /// reply makes the transaction count as a received message.
    pub fn data_reply(mut self, code: u16, text: &str) -> Self {
        self.data_reply = Reply::new(code, text);
        self
    }

    /// Greeting for every session (default `220 <hostname> ESMTP`). A 421
    /// greeting closes the connection; any other non-220 greeting answers 503
    /// to everything but QUIT (RFC 5321 §3.1).
    pub fn greeting(mut self, code: u16, text: &str) -> Self {
        self.greeting = Some(Reply::new(code, text));
        self
    }

    /// Waits this long before answering the end-of-data dot.
    pub fn delay_data_reply(mut self, delay: Duration) -> Self {
        self.data_delay = delay;
        self.data_delay_sessions = None;
        self
    }

    /// Waits this long before answering the end-of-data dot, but only in
    /// the first `n` sessions; later sessions answer at once.
    pub fn delay_data_reply_in_first_sessions(mut self, n: usize, delay: Duration) -> Self {
        self.data_delay = delay;
        self.data_delay_sessions = Some(n);
        self
    }

    /// The first `n` sessions get this greeting instead of the normal one
    /// (with the same effects as [`FakeMxBuilder::greeting`]); later sessions
    /// are normal.
    pub fn fail_first_n_sessions(mut self, n: usize, code: u16, text: &str) -> Self {
        self.fail_first = Some((n, Reply::new(code, text)));
        self
    }

    /// Binds the listener and starts serving.
    pub fn start(self) -> FakeMx {
        let std_listener = StdTcpListener::bind((self.ip, self.port))
            .unwrap_or_else(|e| panic!("fake MX cannot bind {}:{}: {e}", self.ip, self.port));
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("listener address");
        let acceptor = self.tls.as_ref().map(|c| {
            TlsAcceptor::from(if self.tls12_only {
                c.server_config_tls12()
            } else {
                c.server_config()
            })
        });
        let shared = Arc::new(Shared::default());
        let config = Arc::new(ServerSettings {
            builder: self,
            acceptor,
        });
        let _guard = runtime().enter();
        let listener = TcpListener::from_std(std_listener).expect("register listener");
        let task = runtime().spawn(accept_loop(listener, config, shared.clone()));
        FakeMx { addr, shared, task }
    }
}

/// A completed mail transaction: the server answered 2xx to the final dot.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// Argument of the last EHLO or HELO before the transaction.
    pub helo: String,
    /// Reverse-path without the angle brackets (empty for `<>`).
    pub mail_from: String,
    /// MAIL parameters as sent, e.g. `SIZE=1234`, `REQUIRETLS`.
    pub mail_params: Vec<String>,
    /// Accepted forward-paths (without brackets) with their parameters.
    pub rcpts: Vec<(String, Vec<String>)>,
    /// Message content with dot-stuffing removed, line endings as sent,
    /// without the final `.` line.
    pub data: Vec<u8>,
    /// The content exactly as it came over the wire: still dot-stuffed
    /// (RFC 5321 §4.5.2), without the final `.` line.
    pub raw_data: Vec<u8>,
    /// The user name the session authenticated as, if it did.
    pub auth_user: Option<String>,
    /// The client's address and port.
    pub peer: SocketAddr,
    /// Negotiated TLS version (e.g. `TLSv1_3`), `None` for plaintext.
    pub tls: Option<String>,
    /// How many EHLO/HELO commands the session had seen so far.
    pub ehlo_count: usize,
}

impl ReceivedMessage {
    /// The accepted recipient addresses, without parameters.
    pub fn rcpt_addrs(&self) -> Vec<String> {
        self.rcpts.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The content as (lossy) UTF-8 text.
    pub fn data_str(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// One command line as the server received it.
#[derive(Clone, Debug)]
pub struct CommandRecord {
    /// Number of the session (0 for the first accepted connection).
    pub session: usize,
    /// Whether the session was encrypted when the command arrived.
    pub tls: bool,
    /// The line without its CRLF.
    pub line: String,
}

#[derive(Default)]
struct Records {
    messages: Vec<ReceivedMessage>,
    commands: Vec<CommandRecord>,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Records>,
    changed: Condvar,
    sessions: AtomicUsize,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    tls_failures: AtomicUsize,
    auth_failures: AtomicUsize,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Records)) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut records);
        self.changed.notify_all();
    }
}

struct ServerSettings {
    builder: FakeMxBuilder,
    acceptor: Option<TlsAcceptor>,
}

/// A running fake MX host; it stops when dropped.
pub struct FakeMx {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeMx {
    /// A builder with the defaults described on each method.
    pub fn builder() -> FakeMxBuilder {
        FakeMxBuilder {
            ip: Ipv4Addr::LOCALHOST,
            port: 0,
            hostname: "mx.example.org".to_string(),
            tls: None,
            implicit_tls: false,
            tls12_only: false,
            auth: None,
            extensions: [
                "PIPELINING",
                "8BITMIME",
                "SMTPUTF8",
                "DSN",
                "SIZE 52428800",
                "ENHANCEDSTATUSCODES",
            ]
            .iter()
            .map(|k| k.to_string())
            .collect(),
            requiretls: false,
            greeting: None,
            fail_first: None,
            mail_reply: Reply::new(250, "2.1.0 Sender ok"),
            rcpt_replies: HashMap::new(),
            data_reply: Reply::new(250, "2.0.0 Queued"),
            data_delay: Duration::ZERO,
            data_delay_sessions: None,
            max_rcpts: None,
            close_on_rset: false,
        }
    }

    /// Transactions completed so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.lock().messages.clone()
    }

    /// Every command line received so far, in arrival order.
    pub fn commands(&self) -> Vec<CommandRecord> {
        self.lock().commands.clone()
    }

    /// Waits until at least `n` transactions have completed and returns them.
    ///
    /// # Panics
    /// When `timeout` passes first, with what was received in the message.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        let mut records = self.lock();
        while records.messages.len() < n {
            let now = Instant::now();
            if now >= deadline {
                let commands: Vec<&str> = records.commands.iter().map(|c| &*c.line).collect();
                panic!(
                    "fake MX {} received {} of {n} messages within {timeout:?}; commands: {commands:?}",
                    self.addr,
                    records.messages.len(),
                );
            }
            records = self
                .shared
                .changed
                .wait_timeout(records, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        records.messages.clone()
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open_sessions(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at the same time.
    pub fn peak_open_sessions(&self) -> usize {
        self.shared.peak_open.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (for example because the client
    /// rejected the certificate, or spoke plaintext to an implicit-TLS
    /// server).
    pub fn tls_failures(&self) -> usize {
        self.shared.tls_failures.load(Ordering::SeqCst)
    }

    /// AUTH exchanges that ended in 535 (wrong credentials).
    pub fn auth_failures(&self) -> usize {
        self.shared.auth_failures.load(Ordering::SeqCst)
    }

    /// Waits until a command line starting with `prefix` (compared
    /// case-insensitively) has arrived and returns it.
    ///
    /// # Panics
    /// When `timeout` passes first.
    pub fn wait_for_command(&self, prefix: &str, timeout: Duration) -> CommandRecord {
        let deadline = Instant::now() + timeout;
        let matches = |c: &CommandRecord| {
            c.line
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        let mut records = self.lock();
        loop {
            if let Some(found) = records.commands.iter().find(|c| matches(c)) {
                return found.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let commands: Vec<&str> = records.commands.iter().map(|c| &*c.line).collect();
                panic!(
                    "fake MX {} saw no {prefix:?} command within {timeout:?}; commands: {commands:?}",
                    self.addr
                );
            }
            records = self
                .shared
                .changed
                .wait_timeout(records, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until no session is open (the client has quit and the server
    /// side has finished), so that a test can check for leaked connections.
    ///
    /// # Panics
    /// When sessions are still open after `timeout`.
    pub fn assert_no_open_sessions(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.open_sessions() > 0 {
            assert!(
                Instant::now() < deadline,
                "fake MX {} still has {} open session(s) after {timeout:?}",
                self.addr,
                self.open_sessions()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeMx {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every session.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, config: Arc<ServerSettings>, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let number = shared.sessions.fetch_add(1, Ordering::SeqCst);
        let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_open.fetch_max(now_open, Ordering::SeqCst);
        let guard = OpenGuard(shared.clone());
        let session = Session::new(number, config.clone(), shared.clone(), stream, peer);
        sessions.spawn(async move {
            let _guard = guard;
            // A client that disconnects mid-session is normal in tests.
            let _ = session.run().await;
        });
    }
}

/// Decrements the open-session count however the session task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Closed,
}

/// The connection with its read buffer; lines are split out of `buf`.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk).await?,
            Stream::Tls(s) => s.read(&mut chunk).await?,
            Stream::Closed => 0,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next line including its LF; `None` at end of stream.
    async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.buf.drain(..=pos).collect()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn write(&mut self, text: &str) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => {
                s.write_all(text.as_bytes()).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(text.as_bytes()).await?;
                s.flush().await
            }
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Replaces the plaintext stream with a TLS one. Input already buffered
    /// is discarded first: RFC 3207 §4.2 forbids acting on anything the
    /// client sent before the handshake.
    async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<String> {
        self.buf.clear();
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(io::Error::other("STARTTLS on a non-plaintext stream"));
        };
        let tls = acceptor.accept(tcp).await?;
        let version = tls
            .get_ref()
            .1
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        self.stream = Stream::Tls(Box::new(tls));
        Ok(version)
    }
}

/// What `handle` tells the command loop to do next.
enum Next {
    Continue,
    Close,
}

struct Session {
    number: usize,
    config: Arc<ServerSettings>,
    shared: Arc<Shared>,
    conn: Conn,
    peer: SocketAddr,
    helo: Option<String>,
    auth_user: Option<String>,
    ehlo_count: usize,
    tls: Option<String>,
    mail: Option<(String, Vec<String>)>,
    rcpts: Vec<(String, Vec<String>)>,
}

impl Session {
    fn new(
        number: usize,
        config: Arc<ServerSettings>,
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Self {
        Self {
            number,
            config,
            shared,
            conn: Conn {
                stream: Stream::Plain(stream),
                buf: Vec::new(),
            },
            peer,
            helo: None,
            auth_user: None,
            ehlo_count: 0,
            tls: None,
            mail: None,
            rcpts: Vec::new(),
        }
    }

    fn settings(&self) -> &FakeMxBuilder {
        &self.config.builder
    }

    async fn run(mut self) -> io::Result<()> {
        if self.settings().implicit_tls {
            let acceptor = self
                .config
                .acceptor
                .clone()
                .expect("implicit TLS has a certificate");
            match self.conn.start_tls(&acceptor).await {
                Ok(version) => self.tls = Some(version),
                Err(e) => {
                    self.shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        let greeting = self.greeting();
        self.conn.write(&greeting.wire()).await?;
        if greeting.code == 421 {
            return Ok(());
        }
        let refused = greeting.code != 220;
        while let Some(raw) = self.conn.read_line().await? {
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            self.record_command(&line);
            let next = if refused {
                self.refused(&line).await?
            } else {
                self.handle(&line).await?
            };
            if let Next::Close = next {
                break;
            }
        }
        Ok(())
    }

    fn record_command(&self, line: &str) {
        let (tls, session) = (self.conn.is_tls(), self.number);
        self.shared.record(|r| {
            r.commands.push(CommandRecord {
                session,
                tls,
                line: line.to_string(),
            })
        });
    }

    fn greeting(&self) -> Reply {
        let s = self.settings();
        if let Some((n, reply)) = &s.fail_first {
            if self.number < *n {
                return reply.clone();
            }
        }
        s.greeting.clone().unwrap_or_else(|| {
            Reply::new(220, &format!("{} ESMTP smarthost test peer", s.hostname))
        })
    }

    /// After a refusing greeting only QUIT is served (RFC 5321 §3.1).
    async fn refused(&mut self, line: &str) -> io::Result<Next> {
        if verb(line) == "QUIT" {
            self.conn.write("221 2.0.0 Bye\r\n").await?;
            return Ok(Next::Close);
        }
        self.conn.write("503 5.5.1 No service\r\n").await?;
        Ok(Next::Continue)
    }

    async fn handle(&mut self, line: &str) -> io::Result<Next> {
        let verb = verb(line);
        let arg = line.get(verb.len()..).unwrap_or("").trim();
        match verb.as_str() {
            "EHLO" | "HELO" => self.hello(verb == "EHLO", arg).await?,
            "STARTTLS" => return self.starttls().await,
            "AUTH" => self.authenticate(arg).await?,
            "MAIL" => self.mail(line).await?,
            "RCPT" => self.rcpt(line).await?,
            "DATA" => self.data().await?,
            "RSET" if self.settings().close_on_rset => {
                self.conn
                    .write("421 4.4.2 Idle too long, closing\r\n")
                    .await?;
                return Ok(Next::Close);
            }
            "RSET" => {
                self.reset();
                self.conn.write("250 2.0.0 Ok\r\n").await?;
            }
            "NOOP" => self.conn.write("250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                self.conn.write("221 2.0.0 Bye\r\n").await?;
                return Ok(Next::Close);
            }
            _ => {
                self.conn
                    .write("500 5.5.2 Command not recognized\r\n")
                    .await?
            }
        }
        Ok(Next::Continue)
    }

    fn reset(&mut self) {
        self.mail = None;
        self.rcpts.clear();
    }

    /// RFC 5321 §4.1.1.1: EHLO answers with the keyword list, HELO without;
    /// both reset any transaction.
    async fn hello(&mut self, extended: bool, arg: &str) -> io::Result<()> {
        if arg.is_empty() {
            return self.conn.write("501 5.5.4 Hostname required\r\n").await;
        }
        self.reset();
        self.helo = Some(arg.to_string());
        self.ehlo_count += 1;
        let host = self.settings().hostname.clone();
        if !extended {
            return self.conn.write(&format!("250 {host}\r\n")).await;
        }
        let mut lines = vec![format!("{host} greets {arg}")];
        lines.extend(self.settings().extensions.iter().cloned());
        if self.settings().requiretls && self.conn.is_tls() {
            lines.push("REQUIRETLS".to_string());
        }
        if let Some(auth) = &self.settings().auth {
            lines.push(format!("AUTH {}", auth.mechanisms.join(" ")));
        }
        if self.config.acceptor.is_some() && !self.conn.is_tls() {
            lines.push("STARTTLS".to_string());
        }
        let mut reply = String::new();
        for (i, text) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            reply.push_str(&format!("250{sep}{text}\r\n"));
        }
        self.conn.write(&reply).await
    }

    /// RFC 3207 §4.2: after the handshake the session starts over; the
    /// client must send EHLO again.
    async fn starttls(&mut self) -> io::Result<Next> {
        let Some(acceptor) = self.config.acceptor.clone() else {
            self.conn
                .write("502 5.5.1 STARTTLS not offered\r\n")
                .await?;
            return Ok(Next::Continue);
        };
        if self.conn.is_tls() {
            self.conn.write("503 5.5.1 TLS already active\r\n").await?;
            return Ok(Next::Continue);
        }
        self.conn.write("220 2.0.0 Ready to start TLS\r\n").await?;
        match self.conn.start_tls(&acceptor).await {
            Ok(version) => {
                self.tls = Some(version);
                self.helo = None;
                self.auth_user = None;
                self.reset();
                Ok(Next::Continue)
            }
            Err(_) => {
                self.shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                Ok(Next::Close)
            }
        }
    }

    /// RFC 4954 §4: `AUTH mechanism [initial-response]`, then 334
    /// challenges until the client has given what the mechanism needs;
    /// `*` cancels. PLAIN is RFC 4616 (`authzid NUL authcid NUL passwd`),
    /// LOGIN the common user-name-then-password exchange.
    async fn authenticate(&mut self, arg: &str) -> io::Result<()> {
        let Some(auth) = self.settings().auth.clone() else {
            return self.conn.write("502 5.5.1 AUTH not offered\r\n").await;
        };
        if self.helo.is_none() {
            return self.conn.write("503 5.5.1 Say EHLO first\r\n").await;
        }
        if self.auth_user.is_some() {
            return self.conn.write("503 5.5.1 Already authenticated\r\n").await;
        }
        if self.mail.is_some() {
            return self
                .conn
                .write("503 5.5.1 AUTH not allowed during a transaction\r\n")
                .await;
        }
        let mut words = arg.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_string);
        if !auth.mechanisms.contains(&mechanism) {
            return self
                .conn
                .write("504 5.5.4 Unrecognized authentication type\r\n")
                .await;
        }
        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => Some(r),
                    None => self.challenge("").await?,
                };
                response.map(|r| plain_credentials(&r))
            }
            "LOGIN" => {
                let user = match initial {
                    Some(r) => Some(r),
                    None => self.challenge("VXNlcm5hbWU6").await?,
                };
                let password = match user {
                    Some(_) => self.challenge("UGFzc3dvcmQ6").await?,
                    None => None,
                };
                user.zip(password)
                    .map(|(u, p)| decode_text(&u).zip(decode_text(&p)))
            }
            // Offered (to see what a client picks) but not implemented.
            _ => {
                return self
                    .conn
                    .write("504 5.5.4 Mechanism not implemented here\r\n")
                    .await
            }
        };
        let Some(credentials) = credentials else {
            return self
                .conn
                .write("501 5.7.0 Authentication cancelled\r\n")
                .await;
        };
        match credentials {
            Some((user, password)) if user == auth.user && password == auth.password => {
                self.auth_user = Some(user);
                self.conn
                    .write("235 2.7.0 Authentication successful\r\n")
                    .await
            }
            _ => {
                self.shared.auth_failures.fetch_add(1, Ordering::SeqCst);
                self.conn
                    .write("535 5.7.8 Authentication credentials invalid\r\n")
                    .await
            }
        }
    }

    /// Sends a 334 challenge and reads the answer line (recorded like a
    /// command); `None` when the client cancels with `*`.
    async fn challenge(&mut self, text: &str) -> io::Result<Option<String>> {
        self.conn.write(&format!("334 {text}\r\n")).await?;
        let Some(raw) = self.conn.read_line().await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let line = String::from_utf8_lossy(&raw)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        self.record_command(&line);
        Ok((line != "*").then_some(line))
    }

    async fn mail(&mut self, line: &str) -> io::Result<()> {
        if self.helo.is_none() {
            return self.conn.write("503 5.5.1 Say EHLO first\r\n").await;
        }
        if self.settings().auth.is_some() && self.auth_user.is_none() {
            return self
                .conn
                .write("530 5.7.0 Authentication required\r\n")
                .await;
        }
        if self.mail.is_some() {
            return self.conn.write("503 5.5.1 Nested MAIL\r\n").await;
        }
        let Some((path, params)) = parse_path(line, "MAIL FROM:") else {
            return self
                .conn
                .write("501 5.5.2 Syntax: MAIL FROM:<path>\r\n")
                .await;
        };
        let reply = self.settings().mail_reply.clone();
        if reply.is_positive() {
            self.mail = Some((path, params));
        }
        self.conn.write(&reply.wire()).await
    }

    async fn rcpt(&mut self, line: &str) -> io::Result<()> {
        if self.mail.is_none() {
            return self.conn.write("503 5.5.1 Need MAIL first\r\n").await;
        }
        let Some((path, params)) = parse_path(line, "RCPT TO:") else {
            return self
                .conn
                .write("501 5.5.2 Syntax: RCPT TO:<path>\r\n")
                .await;
        };
        let full = self
            .settings()
            .max_rcpts
            .is_some_and(|n| self.rcpts.len() >= n);
        let reply = if full {
            Reply::new(452, "4.5.3 Too many recipients")
        } else {
            self.settings()
                .rcpt_replies
                .get(&path.to_ascii_lowercase())
                .cloned()
                .unwrap_or_else(|| Reply::new(250, "2.1.5 Recipient ok"))
        };
        if reply.is_positive() {
            self.rcpts.push((path, params));
        }
        self.conn.write(&reply.wire()).await
    }

    /// RFC 5321 §3.3 and §4.5.2: content ends at CRLF.CRLF and a leading dot
    /// on any other line is removed.
    async fn data(&mut self) -> io::Result<()> {
        if self.mail.is_none() {
            return self.conn.write("503 5.5.1 Need MAIL first\r\n").await;
        }
        if self.rcpts.is_empty() {
            return self.conn.write("554 5.5.1 No valid recipients\r\n").await;
        }
        self.conn
            .write("354 Start mail input; end with <CRLF>.<CRLF>\r\n")
            .await?;
        let mut data = Vec::new();
        let mut raw = Vec::new();
        loop {
            let Some(line) = self.conn.read_line().await? else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            if line == b".\r\n" {
                break;
            }
            raw.extend_from_slice(&line);
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            data.extend_from_slice(unstuffed);
        }
        let s = self.settings();
        let delayed = s.data_delay_sessions.is_none_or(|n| self.number < n);
        if delayed && !s.data_delay.is_zero() {
            tokio::time::sleep(s.data_delay).await;
        }
        let reply = self.settings().data_reply.clone();
        if reply.is_positive() {
            self.store(data, raw);
        }
        self.reset();
        self.conn.write(&reply.wire()).await
    }

    fn store(&self, data: Vec<u8>, raw_data: Vec<u8>) {
        let Some((mail_from, mail_params)) = self.mail.clone() else {
            return;
        };
        let message = ReceivedMessage {
            helo: self.helo.clone().unwrap_or_default(),
            mail_from,
            mail_params,
            rcpts: self.rcpts.clone(),
            data,
            raw_data,
            auth_user: self.auth_user.clone(),
            peer: self.peer,
            tls: self.tls.clone(),
            ehlo_count: self.ehlo_count,
        };
        self.shared.record(|r| r.messages.push(message));
    }
}

/// The command verb in upper case.
fn verb(line: &str) -> String {
    line.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Splits `MAIL FROM:<path> params` / `RCPT TO:<path> params` into the path
/// (without brackets) and the parameters. Tolerates a space after the colon.
fn parse_path(line: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = line[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = rest[..end].to_string();
    let params = rest[end + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((path, params))
}

/// Decodes one base64 SASL answer as UTF-8.
fn decode_text(answer: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The authentication identity and password of an RFC 4616 PLAIN
/// response; `None` when it is malformed.
fn plain_credentials(response: &str) -> Option<(String, String)> {
    let text = decode_text(response)?;
    let mut fields = text.split('\0');
    let (_authzid, user, password) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some((user.to_string(), password.to_string()))
}
