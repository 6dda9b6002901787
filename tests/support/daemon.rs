//! `smarthost serve` as a child process, and a blocking SMTP client that
//! talks to it (plaintext, then TLS after STARTTLS).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::env::TestEnv;

/// A running `smarthost serve`; killed when dropped.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts `smarthost serve` with `env`'s configuration, which must
    /// listen on `addr`, and waits until it accepts connections.
    pub fn start(env: &TestEnv, addr: SocketAddr) -> Self {
        let mut child = env
            .cmd(&["serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start smarthost serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            }
        });
        let daemon = Self {
            child,
            stderr,
            addr,
        };
        daemon.wait_for_log("smarthost serve started", Duration::from_secs(30));
        daemon
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the log contains `text`; fails the test after `timeout`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "daemon never logged {text:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client connected from `127.0.0.1`.
    pub fn connect(&self) -> SmtpClient {
        SmtpClient::connect(self.addr, None)
    }

    /// A client connected from `from` (another 127.0.0.x address).
    pub fn connect_from(&self, from: Ipv4Addr) -> SmtpClient {
        SmtpClient::connect(self.addr, Some(from))
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the daemon");
    }

    /// Waits for the daemon to exit; its exit code (128 + signal when
    /// killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
    }
}

enum Stream {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<StreamOwned<ClientConnection, TcpStream>>>),
}

/// A blocking SMTP client for tests.
pub struct SmtpClient {
    stream: Stream,
}

impl SmtpClient {
    /// Connects to `addr`, from `from` when given.
    pub fn connect(addr: SocketAddr, from: Option<Ipv4Addr>) -> Self {
        let tcp = match from {
            None => TcpStream::connect(addr).expect("connect to the daemon"),
            Some(ip) => {
                let stream = super::runtime()
                    .block_on(async {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind(SocketAddr::from((ip, 0)))?;
                        socket.connect(addr).await?.into_std()
                    })
                    .expect("connect to the daemon from the given address");
                stream.set_nonblocking(false).expect("blocking socket");
                stream
            }
        };
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        Self {
            stream: Stream::Plain(BufReader::new(tcp)),
        }
    }

    fn reader(&mut self) -> &mut dyn BufRead {
        match &mut self.stream {
            Stream::Plain(r) => r,
            Stream::Tls(r) => r.as_mut(),
        }
    }

    /// Reads one reply (all its lines).
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader().read_line(&mut line).expect("read a reply");
            assert!(n > 0, "connection closed; so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// True when the server closed the connection (EOF before a reply).
    pub fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.reader().read_line(&mut line), Ok(0) | Err(_))
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        match &mut self.stream {
            Stream::Plain(r) => r.get_mut().write_all(bytes),
            Stream::Tls(r) => r.get_mut().write_all(bytes),
        }
        .expect("write to the daemon");
    }

    /// Sends one command line and reads the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Starts TLS over the connection (after a 220 to STARTTLS), verifying
    /// the server as `name` against `roots` (PEM certificates).
    pub fn start_tls(self, name: &str, roots_pem: &Path) -> Self {
        let Stream::Plain(reader) = self.stream else {
            panic!("TLS already active");
        };
        assert!(reader.buffer().is_empty(), "unread bytes before TLS");
        let tcp = reader.into_inner();
        let mut roots = RootCertStore::empty();
        let pem = std::fs::read(roots_pem).expect("read the root certificates");
        for cert in rustls_pemfile_certs(&pem) {
            roots.add(cert).expect("add a root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = ServerName::try_from(name.to_owned()).expect("server name");
        let conn = ClientConnection::new(Arc::new(config), server).expect("TLS client");
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake with the daemon");
        }
        Self {
            stream: Stream::Tls(Box::new(BufReader::new(stream))),
        }
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}
