//! Checks the integration-test support code itself: the fake DNS server
//! answers as a resolver expects, the fake MX speaks SMTP and STARTTLS and
//! records what it received, and the test environment helpers behave.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Resolver, TokioResolver};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use support::env::run_command;
use support::{
    config_for, free_port_on, runtime, self_signed, FakeDns, FakeMx, SignedDns, SignedZones,
    TestCa, TestEnv, ZoneBuilder,
};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- DNS

#[test]
fn signed_root_signatures_start_in_the_past_and_last_days() {
    use hickory_resolver::proto::dnssec::rdata::DNSSECRData;
    use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
    use hickory_resolver::proto::rr::RData;

    let dns = SignedDns::start(SignedZones::new().a("host.example", "127.0.0.10"));
    let anchors: TrustAnchors = dns.root_dnskey().parse().expect("root DNSKEY parses");
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.addr().port();
    let ns = NameServerConfig::new(dns.addr().ip(), true, vec![udp]);
    let mut opts = ResolverOpts::default();
    opts.validate = true;
    let r = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .with_trust_anchor(Arc::new(anchors))
    .build()
    .expect("build resolver");
    let lookup = runtime()
        .block_on(r.lookup("host.example.", RecordType::A))
        .expect("A lookup");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let a = lookup
        .answers()
        .iter()
        .find(|rec| rec.record_type() == RecordType::A)
        .expect("an A record");
    assert_eq!(a.proof, Proof::Secure);
    let sig = lookup
        .answers()
        .iter()
        .find_map(|rec| match &rec.data {
            RData::DNSSEC(DNSSECRData::RRSIG(sig)) => Some(sig.input().clone()),
            _ => None,
        })
        .expect("an RRSIG over the A record");
    let inception = sig.sig_inception.get();
    let expiration = sig.sig_expiration.get();
    assert!(inception + 1800 < now, "inception {inception} vs now {now}");
    assert!(
        expiration > now + 6 * 24 * 3600,
        "expiration {expiration} vs now {now}"
    );
}

fn resolver(dns: &FakeDns, connections: Vec<ConnectionConfig>) -> TokioResolver {
    let connections = connections
        .into_iter()
        .map(|mut c| {
            c.port = dns.addr.port();
            c
        })
        .collect();
    let ns = NameServerConfig::new(dns.addr.ip(), true, connections);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(5);
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("build resolver")
}

fn test_zone() -> ZoneBuilder {
    ZoneBuilder::new("example.org.")
        .mx("example.org", 10, "mx1.example.org")
        .mx("example.org", 20, "mx2.example.org")
        .a("mx1.example.org", "127.0.0.10")
        .a("mx2.example.org", "127.0.0.11")
        .aaaa("mx2.example.org", "::1")
        .cname("alias.example.org", "mx1.example.org")
        .null_mx("nullmx.example.org")
        .txt("example.org", "v=spf1 -all")
        .servfail_for("broken.example.org")
}

/// Sorted textual RDATA of the answers of type `rtype`.
async fn answers(
    r: &TokioResolver,
    name: &str,
    rtype: RecordType,
) -> Result<Vec<String>, NetError> {
    let lookup = r.lookup(name, rtype).await?;
    let mut out: Vec<String> = lookup
        .answers()
        .iter()
        .filter(|rec| rec.record_type() == rtype)
        .map(|rec| rec.data.to_string())
        .collect();
    out.sort();
    Ok(out)
}

fn response_code(err: &NetError) -> Option<ResponseCode> {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Some(nr.response_code),
        NetError::Dns(DnsError::ResponseCode(code)) => Some(*code),
        _ => None,
    }
}

#[test]
fn dns_positive_answers() {
    let dns = FakeDns::start(vec![test_zone()]);
    let r = resolver(&dns, vec![ConnectionConfig::udp()]);
    runtime().block_on(async {
        let mx = answers(&r, "example.org.", RecordType::MX).await.unwrap();
        assert_eq!(mx, ["10 mx1.example.org.", "20 mx2.example.org."]);
        let a = answers(&r, "mx1.example.org.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(a, ["127.0.0.10"]);
        let aaaa = answers(&r, "mx2.example.org.", RecordType::AAAA)
            .await
            .unwrap();
        assert_eq!(aaaa, ["::1"]);
        let null = answers(&r, "nullmx.example.org.", RecordType::MX)
            .await
            .unwrap();
        assert_eq!(null, ["0 ."]);
        let txt = answers(&r, "example.org.", RecordType::TXT).await.unwrap();
        assert_eq!(txt, ["v=spf1 -all"]);
        let cname = r.lookup("alias.example.org.", RecordType::A).await.unwrap();
        let types: Vec<RecordType> = cname.answers().iter().map(|x| x.record_type()).collect();
        assert!(types.contains(&RecordType::CNAME), "{types:?}");
        assert!(types.contains(&RecordType::A), "{types:?}");
    });
}

#[test]
fn dns_negative_answers() {
    let dns = FakeDns::start(vec![test_zone()]);
    let r = resolver(&dns, vec![ConnectionConfig::udp()]);
    runtime().block_on(async {
        let nx = answers(&r, "nosuch.example.org.", RecordType::MX)
            .await
            .unwrap_err();
        assert_eq!(response_code(&nx), Some(ResponseCode::NXDomain), "{nx:?}");
        assert!(
            matches!(nx, NetError::Dns(DnsError::NoRecordsFound(_))),
            "{nx:?}"
        );

        let nodata = answers(&r, "mx1.example.org.", RecordType::AAAA)
            .await
            .unwrap_err();
        assert!(
            matches!(nodata, NetError::Dns(DnsError::NoRecordsFound(_))),
            "{nodata:?}"
        );
        assert_eq!(
            response_code(&nodata),
            Some(ResponseCode::NoError),
            "{nodata:?}"
        );

        for name in ["broken.example.org.", "mx.broken.example.org."] {
            let fail = answers(&r, name, RecordType::MX).await.unwrap_err();
            assert_eq!(
                response_code(&fail),
                Some(ResponseCode::ServFail),
                "{name}: {fail:?}"
            );
        }

        let outside = answers(&r, "example.net.", RecordType::MX)
            .await
            .unwrap_err();
        assert_eq!(
            response_code(&outside),
            Some(ResponseCode::Refused),
            "{outside:?}"
        );
    });
}

#[test]
fn dns_over_tcp_and_several_zones() {
    let second = ZoneBuilder::new("mail.test").mx("mail.test", 5, "mx.example.org");
    let dns = FakeDns::start(vec![test_zone(), second]);
    let r = resolver(&dns, vec![ConnectionConfig::tcp()]);
    runtime().block_on(async {
        let mx = answers(&r, "mail.test.", RecordType::MX).await.unwrap();
        assert_eq!(mx, ["5 mx.example.org."]);
        let a = answers(&r, "mx2.example.org.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(a, ["127.0.0.11"]);
    });
}

#[test]
#[should_panic(expected = "outside zone")]
fn zone_builder_rejects_foreign_names() {
    let _ = ZoneBuilder::new("example.org").a("mx.example.net", "127.0.0.1");
}

// ---------------------------------------------------------------- SMTP client

/// A minimal SMTP client for driving the fake MX by hand.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Self {
            io: BufReader::new(stream),
        }
    }

    async fn send(&mut self, text: &str) {
        self.io.get_mut().write_all(text.as_bytes()).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// Reads one (possibly multi-line) reply: code and the text of each line.
    async fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.io.read_line(&mut line).await.unwrap();
            assert!(
                n > 0,
                "connection closed while reading a reply; so far {lines:?}"
            );
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code: u16 = line[..3].parse().unwrap();
            lines.push(line[4..].trim_end().to_string());
            if line.as_bytes()[3] == b' ' {
                return (code, lines);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    async fn expect_closed(&mut self) {
        let mut rest = String::new();
        let n = tokio::time::timeout(WAIT, self.io.read_line(&mut rest))
            .await
            .expect("server should close the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "expected end of stream, got {rest:?}");
    }
}

async fn connect(mx: &FakeMx) -> Client<TcpStream> {
    Client::new(TcpStream::connect(mx.addr).await.unwrap())
}

fn client_config(ca: &TestCa) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- fake MX

#[test]
fn plaintext_dialogue_records_transaction() {
    let mx = FakeMx::builder()
        .hostname("mx1.example.org")
        .rcpt_reply("Bad@example.org", 550, "5.1.1 No such user")
        .rcpt_reply("later@example.org", 450, "4.2.1 Try later")
        .start();
    runtime().block_on(async {
        let mut c = connect(&mx).await;
        let (code, greet) = c.reply().await;
        assert_eq!(code, 220);
        assert!(greet[0].starts_with("mx1.example.org"), "{greet:?}");

        assert_eq!(
            c.cmd("MAIL FROM:<a@example.net>").await.0,
            503,
            "MAIL before EHLO"
        );
        let (code, ehlo) = c.cmd("EHLO client.example.net").await;
        assert_eq!(code, 250);
        assert!(ehlo[0].starts_with("mx1.example.org"), "{ehlo:?}");
        for kw in [
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "SIZE 52428800",
            "ENHANCEDSTATUSCODES",
        ] {
            assert!(ehlo.iter().any(|l| l == kw), "{kw} missing from {ehlo:?}");
        }
        assert!(
            !ehlo.iter().any(|l| l == "STARTTLS" || l == "REQUIRETLS"),
            "{ehlo:?}"
        );
        assert_eq!(c.cmd("STARTTLS").await.0, 502);
        assert_eq!(c.cmd("VRFY someone").await.0, 500);
        assert_eq!(c.cmd("NOOP").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 503, "DATA without MAIL");

        // RFC 2920: the whole envelope in one write, replies read afterwards.
        c.send(concat!(
            "MAIL FROM:<a@example.net> SIZE=100 BODY=8BITMIME\r\n",
            "RCPT TO:<ok@example.org> NOTIFY=FAILURE ORCPT=rfc822;ok@example.org\r\n",
            "RCPT TO:<bad@example.org>\r\n",
            "RCPT TO:<later@example.org>\r\n",
            "RCPT TO: <second@example.org>\r\n",
            "DATA\r\n",
        ))
        .await;
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(c.reply().await.0);
        }
        assert_eq!(got, [250, 250, 550, 450, 250, 354]);
        c.send("Subject: t\r\n\r\n..leading dot\r\n..\r\nline\r\n.\r\n")
            .await;
        assert_eq!(c.reply().await.0, 250);
        assert_eq!(c.cmd("RSET").await.0, 250);
        assert_eq!(c.cmd("QUIT").await.0, 221);
        c.expect_closed().await;
    });

    let msgs = mx.wait_for_messages(1, WAIT);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.helo, "client.example.net");
    assert_eq!(m.mail_from, "a@example.net");
    assert_eq!(m.mail_params, ["SIZE=100", "BODY=8BITMIME"]);
    assert_eq!(m.rcpt_addrs(), ["ok@example.org", "second@example.org"]);
    assert_eq!(
        m.rcpts[0].1,
        ["NOTIFY=FAILURE", "ORCPT=rfc822;ok@example.org"]
    );
    assert_eq!(m.data, b"Subject: t\r\n\r\n.leading dot\r\n.\r\nline\r\n");
    assert_eq!(m.tls, None);
    assert_eq!(m.ehlo_count, 1);
    assert_eq!(mx.sessions(), 1);
    wait_until("session close", || mx.open_sessions() == 0);
    let commands = mx.commands();
    assert_eq!(
        commands.first().map(|c| c.line.as_str()),
        Some("MAIL FROM:<a@example.net>")
    );
    assert!(commands.iter().all(|c| !c.tls && c.session == 0));
}

#[test]
fn rejected_mail_and_data_are_not_recorded() {
    let mx = FakeMx::builder().mail_reply(451, "4.3.0 Try later").start();
    let mx2 = FakeMx::builder().data_reply(554, "5.6.0 Rejected").start();
    runtime().block_on(async {
        let mut c = connect(&mx).await;
        c.reply().await;
        c.cmd("HELO client.example.net").await;
        assert_eq!(c.cmd("MAIL FROM:<>").await.0, 451);
        assert_eq!(c.cmd("RCPT TO:<x@example.org>").await.0, 503);

        let mut c = connect(&mx2).await;
        c.reply().await;
        let (code, lines) = c.cmd("HELO client.example.net").await;
        assert_eq!((code, lines.len()), (250, 1), "HELO has no keyword list");
        assert_eq!(c.cmd("MAIL FROM:<>").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<x@example.org>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        assert_eq!(c.cmd("body\r\n.").await.0, 554);
        // The transaction was reset by the final reply.
        assert_eq!(c.cmd("RCPT TO:<x@example.org>").await.0, 503);
    });
    assert!(mx.messages().is_empty());
    assert!(mx2.messages().is_empty());
}

#[test]
fn starttls_resets_session_and_records_tls() {
    let ca = TestCa::new();
    let mx = FakeMx::builder()
        .hostname("mx1.example.org")
        .starttls(Some(ca.issue(&["mx1.example.org", "127.0.0.1"])))
        .requiretls()
        .start();
    runtime().block_on(async {
        let mut c = connect(&mx).await;
        c.reply().await;
        let (_, ehlo) = c.cmd("EHLO client.example.net").await;
        assert!(ehlo.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
        assert!(
            !ehlo.iter().any(|l| l == "REQUIRETLS"),
            "REQUIRETLS before TLS: {ehlo:?}"
        );
        // A command pipelined behind STARTTLS must be discarded (RFC 3207 §4.2).
        c.send("STARTTLS\r\nMAIL FROM:<injected@example.net>\r\n")
            .await;
        assert_eq!(c.reply().await.0, 220);
        assert!(c.io.buffer().is_empty());
        let tcp = c.io.into_inner();
        let name = ServerName::try_from("mx1.example.org").unwrap();
        let tls = TlsConnector::from(client_config(&ca))
            .connect(name, tcp)
            .await
            .unwrap();
        let mut c = Client::new(tls);

        assert_eq!(
            c.cmd("MAIL FROM:<a@example.net>").await.0,
            503,
            "EHLO required after TLS"
        );
        let (_, ehlo) = c.cmd("EHLO client.example.net").await;
        assert!(!ehlo.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
        assert!(ehlo.iter().any(|l| l == "REQUIRETLS"), "{ehlo:?}");
        assert_eq!(c.cmd("STARTTLS").await.0, 503);
        assert_eq!(c.cmd("MAIL FROM:<a@example.net> REQUIRETLS").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        assert_eq!(c.cmd("hello\r\n.").await.0, 250);
        assert_eq!(c.cmd("QUIT").await.0, 221);
    });
    let m = &mx.wait_for_messages(1, WAIT)[0];
    assert_eq!(m.tls.as_deref(), Some("TLSv1_3"));
    assert_eq!(m.mail_params, ["REQUIRETLS"]);
    assert_eq!(m.ehlo_count, 2);
    let commands = mx.commands();
    assert!(
        commands.iter().all(|c| !c.line.contains("injected")),
        "{commands:?}"
    );
    let first_tls = commands.iter().position(|c| c.tls).unwrap();
    assert_eq!(commands[first_tls - 1].line, "STARTTLS");
    assert!(commands[first_tls..].iter().all(|c| c.tls));
    assert_eq!(mx.tls_failures(), 0);
}

#[test]
fn untrusted_certificate_counts_as_tls_failure() {
    let ca = TestCa::new();
    let mx = FakeMx::builder()
        .starttls(Some(self_signed(&["mx1.example.org"])))
        .start();
    runtime().block_on(async {
        let mut c = connect(&mx).await;
        c.reply().await;
        c.cmd("EHLO client.example.net").await;
        assert_eq!(c.cmd("STARTTLS").await.0, 220);
        let name = ServerName::try_from("mx1.example.org").unwrap();
        let result = TlsConnector::from(client_config(&ca))
            .connect(name, c.io.into_inner())
            .await;
        assert!(result.is_err(), "a self-signed certificate must not verify");
    });
    wait_until("TLS failure", || mx.tls_failures() == 1);
    wait_until("session close", || mx.open_sessions() == 0);
}

#[test]
fn greeting_overrides() {
    let mx = FakeMx::builder()
        .fail_first_n_sessions(2, 421, "4.3.2 Busy")
        .start();
    let refusing = FakeMx::builder().greeting(554, "5.3.2 No service").start();
    runtime().block_on(async {
        for _ in 0..2 {
            let mut c = connect(&mx).await;
            assert_eq!(c.reply().await.0, 421);
            c.expect_closed().await;
        }
        let mut c = connect(&mx).await;
        assert_eq!(c.reply().await.0, 220);

        let mut c = connect(&refusing).await;
        assert_eq!(c.reply().await, (554, vec!["5.3.2 No service".to_string()]));
        assert_eq!(c.cmd("EHLO client.example.net").await.0, 503);
        assert_eq!(c.cmd("QUIT").await.0, 221);
        c.expect_closed().await;
    });
    assert_eq!(mx.sessions(), 3);
}

#[test]
fn delayed_data_reply() {
    let delay = Duration::from_millis(300);
    let mx = FakeMx::builder().delay_data_reply(delay).start();
    runtime().block_on(async {
        let mut c = connect(&mx).await;
        c.reply().await;
        c.cmd("EHLO c.example.net").await;
        c.cmd("MAIL FROM:<>").await;
        c.cmd("RCPT TO:<x@example.org>").await;
        c.cmd("DATA").await;
        let start = Instant::now();
        assert_eq!(c.cmd("x\r\n.").await.0, 250);
        assert!(start.elapsed() >= delay);
    });
}

#[test]
fn two_fakes_share_a_port() {
    let ips = [Ipv4Addr::new(127, 0, 0, 10), Ipv4Addr::new(127, 0, 0, 11)];
    let port = free_port_on(&ips);
    let one = FakeMx::builder()
        .ip(ips[0])
        .port(port)
        .hostname("mx1.example.org")
        .start();
    let two = FakeMx::builder()
        .ip(ips[1])
        .port(port)
        .hostname("mx2.example.org")
        .start();
    assert_eq!(one.addr.port(), port);
    assert_eq!(two.addr.port(), port);
    runtime().block_on(async {
        for (mx, name) in [(&one, "mx1"), (&two, "mx2")] {
            let mut c = connect(mx).await;
            let (_, greet) = c.reply().await;
            assert!(greet[0].starts_with(name), "{greet:?}");
        }
        let mut c = connect(&two).await;
        c.reply().await;
    });
    assert_eq!((one.sessions(), two.sessions()), (1, 2));
}

#[test]
#[should_panic(expected = "received 0 of 1 messages")]
fn wait_for_messages_panics_on_timeout() {
    let mx = FakeMx::builder().start();
    mx.wait_for_messages(1, Duration::from_millis(50));
}

#[test]
fn dropping_the_fake_closes_sessions() {
    let mx = FakeMx::builder().start();
    let addr = mx.addr;
    runtime().block_on(async {
        let mut c = connect(&mx).await;
        c.reply().await;
        drop(mx);
        c.expect_closed().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener still open"
        );
    });
}

// ---------------------------------------------------------------- certificates

#[test]
fn issued_certificate_verifies_for_its_names_only() {
    use rustls::client::danger::ServerCertVerifier;
    let ca = TestCa::new();
    let leaf = ca.issue(&["mx1.example.org", "127.0.0.10"]);
    assert_eq!(leaf.cert_chain.len(), 2);
    assert!(leaf.cert_pem.matches("BEGIN CERTIFICATE").count() == 2);
    assert!(leaf.key_pem.contains("PRIVATE KEY"));
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let now = rustls::pki_types::UnixTime::now();
    let check = |name: &str| {
        verifier
            .verify_server_cert(
                leaf.leaf(),
                &leaf.cert_chain[1..],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                now,
            )
            .is_ok()
    };
    assert!(check("mx1.example.org"));
    assert!(check("127.0.0.10"));
    assert!(!check("mx2.example.org"));
    let other = self_signed(&["mx1.example.org"]);
    assert!(verifier
        .verify_server_cert(
            other.leaf(),
            &[],
            &ServerName::try_from("mx1.example.org").unwrap(),
            &[],
            now
        )
        .is_err());

    let env = TestEnv::new();
    let path = env.dir.path().join("ca.pem");
    ca.write_pem(&path);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.ca_pem);
}

// ---------------------------------------------------------------- environment

#[test]
fn write_config_adds_queue_dir_unless_set() {
    let env = TestEnv::new();
    env.write_config("hostname = \"client.example.net\"\n[smtp]\nport = 25\n");
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let table: toml::Table = text.parse().unwrap();
    assert_eq!(
        table["queue_dir"].as_str(),
        Some(&*env.queue_dir.to_string_lossy())
    );
    assert_eq!(table["smtp"]["port"].as_integer(), Some(25));

    env.write_config("queue_dir = \"/elsewhere\"\n");
    let table: toml::Table = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(table["queue_dir"].as_str(), Some("/elsewhere"));

    // A `queue_dir` key inside a table is not the top-level one.
    env.write_config("[other]\nqueue_dir = \"x\"\n");
    let table: toml::Table = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .parse()
        .unwrap();
    assert!(table.contains_key("queue_dir"));
}

#[test]
fn config_for_points_at_fakes() {
    let dns = FakeDns::start(vec![test_zone()]);
    let env = TestEnv::new();
    let ca_path = env.dir.path().join("ca \"quoted\".pem");
    let snippet = config_for(&dns, 2525, &ca_path);
    env.write_config(&snippet);
    let table: toml::Table = std::fs::read_to_string(&env.config_path)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(table["hostname"].as_str(), Some("client.example.net"));
    assert_eq!(table["submit_only"].as_bool(), Some(true));
    let ns = table["dns"]["nameservers"].as_array().unwrap();
    assert_eq!(ns[0].as_str(), Some(&*dns.addr.to_string()));
    assert_eq!(dns.addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(table["smtp"]["port"].as_integer(), Some(2525));
    assert_eq!(
        table["tls"]["ca_file"].as_str(),
        Some(&*ca_path.to_string_lossy())
    );
}

#[test]
fn cmd_sets_config_and_clears_log_filter() {
    let env = TestEnv::new();
    let cmd = env.cmd(&["queue", "run"]);
    assert!(cmd.get_program().to_string_lossy().ends_with("smarthost"));
    let args: Vec<_> = cmd.get_args().collect();
    assert_eq!(args, ["queue", "run"]);
    let envs: Vec<_> = cmd.get_envs().collect();
    assert!(envs.contains(&(
        "SMARTHOST_CONFIG".as_ref(),
        Some(env.config_path.as_os_str())
    )));
    assert!(envs.contains(&("RUST_LOG".as_ref(), None)));
}

#[test]
fn run_command_feeds_input_and_collects_output() {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "cat; echo oops >&2; exit 3"]);
    let input = vec![b'x'; 1 << 20];
    let out = run_command(cmd, &input);
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout.len(), input.len());
    assert_eq!(out.stderr, "oops\n");

    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "kill -9 $$"]);
    assert_eq!(run_command(cmd, b"").status, 128 + 9);
}

#[test]
fn test_dir_is_kept_when_the_test_panics() {
    let kept = std::thread::spawn(|| {
        let env = TestEnv::new();
        let path = env.dir.path().to_path_buf();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _env = env;
            panic!("deliberate");
        }));
        assert!(result.is_err());
        path
    })
    .join()
    .unwrap();
    assert!(kept.exists(), "{} was removed", kept.display());
    std::fs::remove_dir_all(&kept).unwrap();

    let env = TestEnv::new();
    let path = env.dir.path().to_path_buf();
    drop(env);
    assert!(!path.exists());
}
