//! A ready test world: a queue, a fake DNS server with the standard test
//! zone (or a DNSSEC-signed root, see [`World::signed`]), a CA the binary
//! trusts, and the one port every fake MX uses.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::env::{config_for_addr, toml_string};
use super::{
    config_for, free_port_on, FakeDns, FakeMx, FakeMxBuilder, Output, SignedDns, SignedZones,
    TestCa, TestEnv, ZoneBuilder,
};

/// `mx1.example.org`, the preferred MX host of `example.org`.
pub const MX1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
/// `mx2.example.org`, the second MX host of `example.org`.
pub const MX2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// `mx3.example.org`, the only MX host of `other.example.org`, and the
/// address of `relay.example.org`.
pub const MX3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);

/// A test world: a queue, a DNS server, a CA whose roots the binary trusts,
/// and the one port every fake MX listens on.
pub struct World {
    pub env: TestEnv,
    pub ca: TestCa,
    pub port: u16,
    _dns: Dns,
}

/// The world's DNS server, kept running for the world's life.
enum Dns {
    Plain(FakeDns),
    Signed(SignedDns),
}

impl World {
    /// A world serving `zone`, with `extra_config` (top-level keys only) in
    /// front of the configuration that points the binary at the fakes.
    pub fn new(zone: ZoneBuilder, extra_config: &str) -> Self {
        Self::new_with(extra_config, |_| zone)
    }

    /// Like [`World::new`], with the zone built once the world's SMTP port
    /// is known (TLSA names carry the port, RFC 7672 §2.2.3).
    pub fn new_with(extra_config: &str, zone: impl FnOnce(u16) -> ZoneBuilder) -> Self {
        let env = TestEnv::new();
        let ca = TestCa::new();
        let ca_path = env.dir.path().join("ca.pem");
        ca.write_pem(&ca_path);
        let port = free_port_on(&[MX1, MX2, MX3]);
        let dns = FakeDns::start(vec![zone(port)]);
        env.write_config(&format!(
            "{extra_config}\n{}",
            config_for(&dns, port, &ca_path)
        ));
        Self {
            env,
            ca,
            port,
            _dns: Dns::Plain(dns),
        }
    }

    /// A world whose DNS is a private signed root serving `zones`, with
    /// DNSSEC validation on and the root's key as `[dns] trust_anchor`.
    pub fn signed(zones: SignedZones, extra_config: &str) -> Self {
        Self::signed_with(extra_config, |_, _| zones)
    }

    /// Like [`World::signed`], with the zones made once the world's SMTP
    /// port and CA exist: TLSA records live at `_<port>._tcp.<host>`
    /// (RFC 7672 §2.2.3), and a DANE-TA record names the CA.
    pub fn signed_with(
        extra_config: &str,
        zones: impl FnOnce(u16, &TestCa) -> SignedZones,
    ) -> Self {
        let env = TestEnv::new();
        let ca = TestCa::new();
        let ca_path = env.dir.path().join("ca.pem");
        ca.write_pem(&ca_path);
        let port = free_port_on(&[MX1, MX2, MX3]);
        let dns = SignedDns::start(zones(port, &ca));
        let anchor = dns.trust_anchor_file(env.dir.path());
        let dns_lines = format!(
            "dnssec = \"validate\"\ntrust_anchor = {}",
            toml_string(&anchor.to_string_lossy())
        );
        env.write_config(&format!(
            "{extra_config}\n{}",
            config_for_addr(dns.addr(), &dns_lines, port, &ca_path)
        ));
        Self {
            env,
            ca,
            port,
            _dns: Dns::Signed(dns),
        }
    }

    /// A fake MX on `ip` and the world's port, offering STARTTLS with a
    /// certificate for `name` issued by the trusted CA.
    pub fn mx(&self, ip: Ipv4Addr, name: &str) -> FakeMxBuilder {
        self.plain_mx(ip, name)
            .starttls(Some(self.ca.issue(&[name])))
    }

    /// A fake MX on `ip` and the world's port that does not offer STARTTLS.
    pub fn plain_mx(&self, ip: Ipv4Addr, name: &str) -> FakeMxBuilder {
        FakeMx::builder().ip(ip).port(self.port).hostname(name)
    }

    /// The configuration file as it is now.
    pub fn config(&self) -> String {
        std::fs::read_to_string(&self.env.config_path).expect("read the test configuration")
    }

    /// Replaces the configuration file.
    pub fn replace_config(&self, text: &str) {
        std::fs::write(&self.env.config_path, text).expect("write the test configuration");
    }

    /// Puts top-level keys in front of the configuration.
    pub fn add_config(&self, top_level: &str) {
        self.replace_config(&format!("{top_level}\n{}", self.config()));
    }

    /// Appends `text` (tables such as `[[rule]]`) to the configuration.
    pub fn append_config(&self, text: &str) {
        self.replace_config(&format!("{}\n{text}\n", self.config()));
    }

    /// Adds keys to `[table]`, creating the table when it is missing.
    pub fn add_to_table(&self, table: &str, lines: &str) {
        let header = format!("[{table}]");
        let text = self.config();
        let mut out = String::new();
        let mut added = false;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if !added && line.trim() == header {
                out.push_str(lines);
                out.push('\n');
                added = true;
            }
        }
        if !added {
            out.push_str(&format!("{header}\n{lines}\n"));
        }
        self.replace_config(&out);
    }

    /// Sends all mail to `[name]:<port>` with `relayhost_tls = tls`.
    pub fn use_relay(&self, name: &str, tls: &str) {
        self.add_config(&format!(
            "relayhost = \"[{name}]:{}\"\nrelayhost_tls = \"{tls}\"",
            self.port
        ));
    }

    /// Writes a secrets file with `text` and permission bits `mode`, and
    /// points `secrets_file` at it.
    pub fn write_secrets(&self, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.env.dir.path().join("secrets.toml");
        std::fs::write(&path, text).expect("write the secrets file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("set the secrets file's mode");
        self.add_config(&format!(
            "secrets_file = {}",
            toml_string(&path.to_string_lossy())
        ));
        path
    }

    /// Submits `message` with `sendmail <args>`; the submission must succeed.
    pub fn send(&self, args: &[&str], message: &str) {
        self.send_bytes(args, message.as_bytes());
    }

    /// Submits raw bytes with `sendmail <args>`; the submission must succeed.
    pub fn send_bytes(&self, args: &[&str], message: &[u8]) {
        let out = self.env.sendmail(args, message);
        assert_eq!(out.status, 0, "sendmail failed: {}", out.stderr);
    }

    /// `queue run <args>`; the run must exit 0.
    pub fn queue_run(&self, args: &[&str]) -> Output {
        let mut all = vec!["queue", "run"];
        all.extend_from_slice(args);
        let out = self.env.run(&all);
        assert_eq!(out.status, 0, "queue run failed: {}", out.stderr);
        out
    }

    /// `mailq`; it must exit 0.
    pub fn mailq(&self) -> String {
        let out = self.env.run(&["mailq"]);
        assert_eq!(out.status, 0, "mailq failed: {}", out.stderr);
        out.stdout
    }
}

/// The standard test zone.
///
/// * `example.org`: MX 10 `mx1` (127.0.0.10), MX 20 `mx2` (127.0.0.11)
/// * `single.example.org`: MX 10 `mx1`
/// * `other.example.org`: MX 10 `mx3` (127.0.0.12)
/// * `implicit.example.org`: no MX, A 127.0.0.10 (RFC 5321 §5.1)
/// * `nullmx.example.org`: null MX (RFC 7505)
/// * `broken.example.org`: SERVFAIL
/// * `relay.example.org`: A 127.0.0.12
pub fn zone() -> ZoneBuilder {
    ZoneBuilder::new("example.org.")
        .mx("example.org", 10, "mx1.example.org")
        .mx("example.org", 20, "mx2.example.org")
        .a("mx1.example.org", "127.0.0.10")
        .a("mx2.example.org", "127.0.0.11")
        .a("mx3.example.org", "127.0.0.12")
        .mx("single.example.org", 10, "mx1.example.org")
        .mx("other.example.org", 10, "mx3.example.org")
        .a("implicit.example.org", "127.0.0.10")
        .null_mx("nullmx.example.org")
        .mx("broken.example.org", 10, "mx1.example.org")
        .servfail_for("broken.example.org")
        .a("relay.example.org", "127.0.0.12")
}
