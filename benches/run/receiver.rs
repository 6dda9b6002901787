//! A fast SMTP sink for the delivery benchmark: STARTTLS (RFC 3207) with a
//! certificate from the bench CA, PIPELINING (RFC 2920), and nothing kept but
//! a count of accepted messages and bytes.
//!
//! It is not the test suite's `FakeMx`: that one records every command and
//! every message for assertions, which costs memory and a lock per line.
//! Replies are buffered and written once the client's pipelined commands have
//! all been read, as a real server does.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::support::{runtime, CertifiedKey};

/// What the sink has seen so far.
#[derive(Default)]
pub struct Counters {
    /// Transactions answered 250 after the final dot.
    pub messages: AtomicU64,
    /// Connections accepted.
    pub sessions: AtomicU64,
    /// Content bytes received, dot-stuffing included.
    pub bytes: AtomicU64,
}

/// A running sink; it stops with the bench process.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub counters: Arc<Counters>,
}

impl Receiver {
    /// Listens on 127.0.0.1, on an ephemeral port, presenting `cert`.
    pub fn start(cert: &CertifiedKey) -> Self {
        let std_listener =
            StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the bench receiver");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("receiver address");
        let acceptor = TlsAcceptor::from(cert.server_config());
        let counters = Arc::new(Counters::default());
        let _guard = runtime().enter();
        let listener = TcpListener::from_std(std_listener).expect("register the listener");
        runtime().spawn(accept_loop(listener, acceptor, counters.clone()));
        Self { addr, counters }
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> u64 {
        self.counters.messages.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn sessions(&self) -> u64 {
        self.counters.sessions.load(Ordering::Relaxed)
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, counters: Arc<Counters>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        counters.sessions.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            // A session that breaks off is the client's business; the count
            // of accepted messages tells the bench what arrived.
            let _ = session(stream, acceptor, &counters).await;
        });
    }
}

/// What ended one half of a session.
enum End {
    Quit,
    StartTls,
}

async fn session(stream: TcpStream, acceptor: TlsAcceptor, counters: &Counters) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut plain = BufReader::new(stream);
    plain
        .get_mut()
        .write_all(b"220 sink.example.org ESMTP\r\n")
        .await?;
    if let End::Quit = dialogue(&mut plain, false, counters).await? {
        return Ok(());
    }
    // The client waits for the 220 before its handshake (RFC 3207 §4), so
    // nothing it sent is left in the plaintext buffer.
    let tls = acceptor.accept(plain.into_inner()).await?;
    let mut tls = BufReader::new(tls);
    dialogue(&mut tls, true, counters).await?;
    Ok(())
}

/// Answers commands until QUIT, end of input or STARTTLS.
async fn dialogue<S>(io: &mut BufReader<S>, tls: bool, counters: &Counters) -> io::Result<End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(1024);
    loop {
        line.clear();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Ok(End::Quit);
        }
        let verb = command_verb(&line);
        let end = match verb.as_str() {
            "EHLO" => {
                out.extend_from_slice(ehlo_reply(tls));
                None
            }
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => {
                out.extend_from_slice(b"250 2.0.0 Ok\r\n");
                None
            }
            "STARTTLS" if !tls => {
                out.extend_from_slice(b"220 2.0.0 Ready to start TLS\r\n");
                Some(End::StartTls)
            }
            "DATA" => {
                out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                io.get_mut().write_all(&out).await?;
                out.clear();
                let bytes = read_data(io, &mut line).await?;
                counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                counters.messages.fetch_add(1, Ordering::Relaxed);
                out.extend_from_slice(b"250 2.0.0 Queued\r\n");
                None
            }
            "QUIT" => {
                out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                Some(End::Quit)
            }
            _ => {
                out.extend_from_slice(b"502 5.5.1 Not implemented\r\n");
                None
            }
        };
        // Pipelined commands still buffered get their replies in the same
        // write (RFC 2920 §3.2).
        if end.is_some() || io.buffer().is_empty() {
            io.get_mut().write_all(&out).await?;
            io.get_mut().flush().await?;
            out.clear();
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

fn command_verb(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let word = text.split([' ', '\r', '\n']).next().unwrap_or("");
    word.to_ascii_uppercase()
}

fn ehlo_reply(tls: bool) -> &'static [u8] {
    if tls {
        b"250-sink.example.org\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
          250-SIZE 52428800\r\n250 ENHANCEDSTATUSCODES\r\n"
    } else {
        b"250-sink.example.org\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
          250-SIZE 52428800\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n"
    }
}

/// Reads message content up to the final dot line; returns its length.
async fn read_data<S>(io: &mut BufReader<S>, line: &mut Vec<u8>) -> io::Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut bytes = 0;
    loop {
        line.clear();
        if io.read_until(b'\n', line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(bytes);
        }
        bytes += line.len() as u64;
    }
}
