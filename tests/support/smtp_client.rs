//! A scripted, blocking SMTP client for saying exactly what a test needs on
//! the wire: commands swaks cannot send (REQUIRETLS, DSN parameters), a
//! message handed to a Postfix smtpd, or a session with `sendmail -bs` over
//! its standard input and output.
//!
//! STARTTLS accepts any server certificate: the servers this client talks
//! to make their own self-signed ones, and what is tested is what they do
//! after the handshake, not who they are.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{ChildStdin, ChildStdout};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// How long the client waits for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One SMTP reply: the code and the text of each line.
#[derive(Clone, Debug)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// Whether any line of the reply is `keyword` or starts with
    /// `keyword ` (an EHLO capability, RFC 5321 §4.1.1.1).
    pub fn has_capability(&self, keyword: &str) -> bool {
        self.lines.iter().any(|l| {
            let l = l.to_ascii_uppercase();
            l == keyword || l.starts_with(&format!("{keyword} "))
        })
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// A child's standard output (its replies) and input (our commands).
    Pipes(ChildStdout, ChildStdin),
    /// Only while STARTTLS swaps one for the other.
    Gone,
}

/// A client connection; every exchange is kept in `transcript`.
pub struct SmtpClient {
    stream: Stream,
    buffer: Vec<u8>,
    /// `C: ` and `S: ` lines, for failure messages.
    pub transcript: String,
}

impl SmtpClient {
    /// Connects to `addr` and reads the greeting, which must be 220.
    pub fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("set the read timeout");
        Self::greeted(Stream::Plain(tcp))
    }

    /// Talks to a child process, such as `sendmail -bs`, over its pipes, and
    /// reads the greeting, which must be 220. A reply that never comes
    /// blocks the test; the child's own timeout should end it.
    pub fn over_pipes(replies: ChildStdout, commands: ChildStdin) -> Self {
        Self::greeted(Stream::Pipes(replies, commands))
    }

    fn greeted(stream: Stream) -> Self {
        let mut client = Self {
            stream,
            buffer: Vec::new(),
            transcript: String::new(),
        };
        client.expect(220);
        client
    }

    /// Sends one command line (CRLF is added) and reads its reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.send_line(line);
        self.read_reply()
    }

    /// Sends `line` and fails the test unless the reply has `code`.
    pub fn command_expect(&mut self, line: &str, code: u16) -> Reply {
        self.send_line(line);
        self.expect(code)
    }

    /// Sends one line without waiting for a reply (for pipelining).
    pub fn send_line(&mut self, line: &str) {
        self.transcript.push_str(&format!("C: {line}\n"));
        self.write_all(format!("{line}\r\n").as_bytes());
    }

    /// Sends `message` as the DATA content: LF becomes CRLF, lines starting
    /// with `.` are dot-stuffed, and the final `.` line is added. Then reads
    /// the reply.
    pub fn send_data(&mut self, message: &str) -> Reply {
        let mut wire = String::new();
        for line in message.lines() {
            if line.starts_with('.') {
                wire.push('.');
            }
            wire.push_str(line);
            wire.push_str("\r\n");
        }
        wire.push_str(".\r\n");
        self.transcript
            .push_str(&format!("C: <{} bytes of data>\n", wire.len()));
        self.write_all(wire.as_bytes());
        self.read_reply()
    }

    /// Reads one reply and fails the test unless it has `code`.
    pub fn expect(&mut self, code: u16) -> Reply {
        let reply = self.read_reply();
        assert_eq!(
            reply.code, code,
            "expected {code}, got {reply:?}\ntranscript:\n{}",
            self.transcript
        );
        reply
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            self.transcript.push_str(&format!("S: {line}\n"));
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or_else(|| panic!("not a reply line: {line:?}\n{}", self.transcript));
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, lines };
            }
        }
    }

    /// Sends STARTTLS, expects 220, and does the TLS handshake.
    pub fn starttls(&mut self, server_name: &str) {
        self.command_expect("STARTTLS", 220);
        assert!(
            self.buffer.is_empty(),
            "the server sent data after its 220 to STARTTLS (RFC 3207 §5)"
        );
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            panic!("STARTTLS on a connection that is not plaintext");
        };
        let name = ServerName::try_from(server_name.to_string()).expect("a valid server name");
        let conn =
            ClientConnection::new(any_certificate_config(), name).expect("start the TLS client");
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .unwrap_or_else(|e| panic!("TLS handshake: {e}\n{}", self.transcript));
        }
        self.transcript.push_str("-- TLS started\n");
        self.stream = Stream::Tls(Box::new(tls));
    }

    /// Whether the connection is TLS now.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    fn read_line(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).take(end).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("reading a reply: {e}\n{}", self.transcript));
            assert!(
                n > 0,
                "the server closed the connection\n{}",
                self.transcript
            );
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Pipes(replies, _) => replies.read(buf),
            Stream::Gone => unreachable!("no stream during STARTTLS"),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) {
        let result = match &mut self.stream {
            Stream::Plain(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Stream::Pipes(_, commands) => commands.write_all(bytes).and_then(|()| commands.flush()),
            Stream::Gone => unreachable!("no stream during STARTTLS"),
        };
        result.unwrap_or_else(|e| panic!("writing to the server: {e}\n{}", self.transcript));
    }
}

/// A TLS client configuration that takes any certificate but still checks
/// the handshake signatures.
fn any_certificate_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
