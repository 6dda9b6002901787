//! Configuration: the TOML file, its defaults, and the secrets file.
//!
//! The file is `/etc/smarthost/smarthost.toml`, or the path given by
//! `-C FILE` or `SMARTHOST_CONFIG`. Every setting is optional, and a missing
//! default file is not an error: `sendmail` works with no file at all. An
//! unknown key or a bad value is an error that names the file, the line and
//! the key (exit status 78, EX_CONFIG).
//!
//! DNS settings (`[dns]`):
//!
//! * `nameservers = ["IP", "IP:port"]`: ask these instead of resolv.conf.
//! * `dnssec = "validate"` (the default): smarthost validates DNSSEC itself
//!   (RFC 4035 §5) and gives every answer a status for DANE (RFC 7672
//!   §2.1); the nameservers only have to pass DNSSEC records through.
//!   `"off"`: no validation, every answer counts as insecure, so DANE never
//!   applies. `"trust-ad"` (believe the nameserver's AD bit) is refused: the
//!   resolver library does not report that bit reliably.
//! * `trust_anchor = "FILE"`: DNSKEY records in zone-file presentation
//!   format, as `dig DNSKEY .` prints them (`;` comments and blank lines
//!   allowed), that replace the built-in IANA root keys; each key anchors
//!   its owner name. The path is used as written. A bad file is an error
//!   naming the file and the line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::smtp::tls::TlsVersion;

/// Where the configuration is read from when nothing else is given.
pub const DEFAULT_CONFIG: &str = "/etc/smarthost/smarthost.toml";
/// Where the secrets (relay credentials) are read from when nothing else is given.
pub const DEFAULT_SECRETS: &str = "/etc/smarthost/secrets.toml";
/// The system queue directory.
pub const SYSTEM_QUEUE_DIR: &str = "/var/spool/smarthost";
/// Default size limit for one message: 50 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 50 * 1024 * 1024;

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad key or value.
    #[error("{path}: line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted (`dns.nameservers`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The secrets file is readable by others than its owner.
    #[error("{path}: secrets file must not be readable by group or others (mode {mode:o}); run chmod 600")]
    SecretsPermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// How the connection to `relayhost` is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    /// STARTTLS is required and the certificate is verified against the relay's name.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314 §3), certificate verified.
    Implicit,
    /// Plaintext, for a relay on a trusted network.
    None,
}

/// Which address families outgoing connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// IPv6 and IPv4 addresses, in the order DNS gives them (IPv6 first).
    #[default]
    Any,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

/// Whether DNS answers are DNSSEC-validated (`[dns] dnssec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnssecMode {
    /// Validate every answer from the trust anchor (`"validate"`).
    #[default]
    Validate,
    /// No validation: every answer is insecure (`"off"`).
    Off,
}

/// Why `dnssec = "trust-ad"` is refused, in one line.
const TRUST_AD_REFUSED: &str = "\"trust-ad\" is not supported: hickory-resolver 0.26 does not \
    report the AD bit reliably (it reads false even for validated answers), so smarthost \
    validates DNSSEC itself; use \"validate\" (the default) or \"off\"";

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    queue_dir: Option<PathBuf>,
    hostname: Option<String>,
    domain: Option<String>,
    relayhost: Option<String>,
    #[serde(default)]
    relayhost_tls: RelayTls,
    #[serde(default)]
    submit_only: bool,
    max_message_size: Option<u64>,
    secrets_file: Option<PathBuf>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    dns: DnsSection,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    smtp: SmtpSection,
    #[serde(default)]
    queue: QueueSection,
    #[serde(default)]
    rule: Vec<FileRule>,
    delivered_retention: Option<DurationValue>,
    max_queue_lifetime: Option<DurationValue>,
    bounce_queue_lifetime: Option<DurationValue>,
    delay_warning_time: Option<DurationValue>,
    postmaster: Option<String>,
    #[serde(default)]
    listen: ListenSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenSection {
    addresses: Option<Vec<String>>,
    allow: Option<Vec<String>>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    auth_file: Option<PathBuf>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    command_timeout: Option<u64>,
    data_timeout: Option<u64>,
    #[serde(default)]
    requiretls_plaintext_loopback: bool,
}

/// A network in CIDR notation (`127.0.0.0/8`, `::1/128`; a bare address
/// is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` or `ADDRESS`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: expected an address or ADDRESS/PREFIX"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// True when `ip` is inside the network (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The relayhost listener (`smarthost serve`, `sendmail -bs`): `[listen]`.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Where `serve` listens.
    pub addresses: Vec<SocketAddr>,
    /// Clients that may relay without authenticating.
    pub allow: Vec<Cidr>,
    /// STARTTLS certificate chain (PEM); a self-signed one is made when unset.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `name = "<PHC hash>"` lines for AUTH over TLS.
    pub auth_file: Option<PathBuf>,
    /// Recipients accepted per message.
    pub max_recipients: usize,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_client: usize,
    /// Time allowed for a client command (RFC 5321 §4.5.3.2.7: 5 minutes).
    pub command_timeout: Duration,
    /// Time allowed for each piece of DATA (RFC 5321 §4.5.3.2.5: 3 minutes).
    pub data_timeout: Duration,
    /// Accept `MAIL ... REQUIRETLS` on a plaintext session from a loopback
    /// address (a deviation from RFC 8689 §2, off by default).
    pub requiretls_plaintext_loopback: bool,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            addresses: vec![
                SocketAddr::from(([127, 0, 0, 1], 10025)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 10025)),
            ],
            allow: vec![
                Cidr {
                    addr: IpAddr::from([127, 0, 0, 0]),
                    prefix: 8,
                },
                Cidr {
                    addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
            ],
            cert_file: None,
            key_file: None,
            auth_file: None,
            max_recipients: 1000,
            max_connections: 100,
            max_connections_per_client: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            requiretls_plaintext_loopback: false,
        }
    }
}

impl ListenSection {
    fn resolve(
        self,
        invalid: impl Fn(&str, String) -> ConfigError,
    ) -> Result<ListenConfig, ConfigError> {
        let mut listen = ListenConfig::default();
        if let Some(addresses) = self.addresses {
            listen.addresses = addresses
                .iter()
                .map(|a| {
                    a.trim()
                        .parse::<SocketAddr>()
                        .map_err(|_| format!("{a:?}: expected ADDRESS:PORT or [ADDRESS]:PORT"))
                })
                .collect::<Result<_, _>>()
                .map_err(|m| invalid("listen.addresses", m))?;
        }
        if let Some(allow) = self.allow {
            listen.allow = allow
                .iter()
                .map(|c| Cidr::parse(c))
                .collect::<Result<_, _>>()
                .map_err(|m| invalid("listen.allow", m))?;
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(
                "listen.cert_file",
                "cert_file and key_file must be given together".into(),
            ));
        }
        // The files are read by `serve` only (which names them when they
        // are unusable): every user's `sendmail` loads this configuration
        // and may not be able to see a private key's directory.
        listen.cert_file = self.cert_file;
        listen.key_file = self.key_file;
        listen.auth_file = self.auth_file;
        let positive = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(invalid(key, "must be at least 1".into())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        listen.max_recipients = positive(
            "listen.max_recipients",
            self.max_recipients,
            listen.max_recipients,
        )?;
        listen.max_connections = positive(
            "listen.max_connections",
            self.max_connections,
            listen.max_connections,
        )?;
        listen.max_connections_per_client = positive(
            "listen.max_connections_per_client",
            self.max_connections_per_client,
            listen.max_connections_per_client,
        )?;
        let secs = |key: &str, v: Option<u64>, default: Duration| match v {
            Some(0) => Err(invalid(key, "must be at least 1 second".into())),
            Some(n) => Ok(Duration::from_secs(n)),
            None => Ok(default),
        };
        listen.command_timeout = secs(
            "listen.command_timeout",
            self.command_timeout,
            listen.command_timeout,
        )?;
        listen.data_timeout = secs(
            "listen.data_timeout",
            self.data_timeout,
            listen.data_timeout,
        )?;
        listen.requiretls_plaintext_loopback = self.requiretls_plaintext_loopback;
        Ok(listen)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    #[serde(default)]
    nameservers: Vec<String>,
    dnssec: Option<String>,
    trust_anchor: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    ca_file: Option<PathBuf>,
    #[serde(default)]
    level: TlsLevel,
    min_version: Option<TlsVersion>,
    #[serde(default)]
    domain: BTreeMap<String, FileDomainTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDomainTls {
    level: Option<TlsLevel>,
    min_version: Option<TlsVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    sender_domain: Option<String>,
    recipient_domain: Option<String>,
    #[serde(default)]
    requiretls: bool,
    #[serde(default)]
    require_dnssec: bool,
    tls_verify: Option<crate::envelope::VerifyMethod>,
    tls_min: Option<TlsVersion>,
}

/// A duration: whole seconds, or a number with a unit (`90s`, `30m`,
/// `4h`, `7d`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    fn to_duration(&self) -> Result<Duration, String> {
        match self {
            Self::Seconds(s) => Ok(Duration::from_secs(*s)),
            Self::Text(t) => parse_duration(t),
        }
    }
}

/// Parses `90`, `90s`, `30m`, `4h` or `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: unknown unit; use s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(factor)))
}

/// The TLS level for a destination. The names and meanings are Postfix's
/// `smtp_tls_security_level` where they agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsLevel {
    /// No TLS (unless a message requires it: REQUIRETLS is never weakened).
    None,
    /// Opportunistic: STARTTLS when offered, any certificate; plaintext
    /// when STARTTLS is missing or its handshake fails.
    May,
    /// TLS required, certificate not checked.
    Encrypt,
    /// Opportunistic DANE (RFC 7672): authenticated by TLSA where the
    /// records are DNSSEC-secure and usable, TLS required without
    /// authentication where they are secure but unusable, else as `may`.
    #[default]
    Dane,
    /// DANE required: a host without secure usable TLSA is not used.
    DaneOnly,
    /// TLS required and the certificate verified by PKIX against the host
    /// name (the MX name, or the domain for an implicit MX).
    Verify,
}

impl TlsLevel {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::May => "may",
            Self::Encrypt => "encrypt",
            Self::Dane => "dane",
            Self::DaneOnly => "dane-only",
            Self::Verify => "verify",
        }
    }
}

/// The administrator's TLS policy for one recipient domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainTls {
    /// The level.
    pub level: TlsLevel,
    /// The lowest acceptable TLS version, if raised above 1.2.
    pub min_version: Option<TlsVersion>,
}

/// A `[[rule]]`: TLS requirements added to messages by sender and/or
/// recipient domain (RFC 8689 §4.3 leaves the choice to local policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Applies to senders in this domain (exact, A-labels).
    pub sender_domain: Option<String>,
    /// Applies to recipients in this domain (exact, A-labels).
    pub recipient_domain: Option<String>,
    /// Adds REQUIRETLS.
    pub requiretls: bool,
    /// Requires a DNSSEC-validated MX.
    pub require_dnssec: bool,
    /// Restricts the certificate check to one method.
    pub tls_verify: Option<crate::envelope::VerifyMethod>,
    /// Raises the minimum TLS version.
    pub tls_min: Option<TlsVersion>,
}

impl Rule {
    /// True when the rule applies to mail from `sender_domain` to
    /// `recipient_domain`. A rule with neither condition applies to all.
    pub fn matches(&self, sender_domain: &str, recipient_domain: &str) -> bool {
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref()
                .is_none_or(|w| w.eq_ignore_ascii_case(have.trim_end_matches('.')))
        };
        eq(&self.sender_domain, sender_domain) && eq(&self.recipient_domain, recipient_domain)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpSection {
    port: Option<u16>,
    bind_address: Option<IpAddr>,
    #[serde(default)]
    ip_family: IpFamily,
    connect_timeout: Option<u64>,
    command_timeout: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_destination: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSection {
    retry_min: Option<u64>,
    retry_max: Option<u64>,
}

/// The next hop for every message, instead of MX lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHost {
    /// Host name or address literal, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Written without brackets: look up the MX records of `host` first, as
    /// Postfix does; with brackets: connect to `host` itself.
    pub mx_lookup: bool,
}

impl fmt::Display for RelayHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mx_lookup {
            write!(f, "{}:{}", self.host, self.port)
        } else {
            write!(f, "[{}]:{}", self.host, self.port)
        }
    }
}

/// The effective configuration, with every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Queue directory, when set in the file.
    pub queue_dir: Option<PathBuf>,
    /// Name used in EHLO, Message-ID and Received.
    pub hostname: String,
    /// Domain for the default sender and for qualifying bare names.
    pub domain: String,
    /// Upstream relay, when all mail goes through one.
    pub relayhost: Option<RelayHost>,
    /// Protection of the relay connection.
    pub relayhost_tls: RelayTls,
    /// Queue only; do not start a delivery pass after submission.
    pub submit_only: bool,
    /// Largest accepted message, in bytes.
    pub max_message_size: u64,
    /// The secrets file (relay credentials).
    pub secrets_file: PathBuf,
    /// Redirections for bare local names (`root`, and `default`).
    pub aliases: BTreeMap<String, String>,
    /// Nameservers to ask instead of the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// DNSSEC validation of DNS answers.
    pub dnssec: DnssecMode,
    /// DNSKEY records that replace the IANA root trust anchor.
    pub trust_anchor: Option<PathBuf>,
    /// Extra trusted root certificates (PEM), beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Destination port for MX delivery.
    pub smtp_port: u16,
    /// Local address for outgoing connections.
    pub bind_address: Option<IpAddr>,
    /// Address families for outgoing connections.
    pub ip_family: IpFamily,
    /// Time allowed to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed for each SMTP reply (RFC 5321 §4.5.3.2 asks for minutes).
    pub command_timeout: Duration,
    /// Deliveries (outgoing SMTP sessions) at the same time in one run.
    pub max_connections: usize,
    /// Of those, at most this many to one destination (recipient domain
    /// or relayhost).
    pub max_connections_per_destination: usize,
    /// First retry interval after a temporary failure.
    pub retry_min: Duration,
    /// Longest retry interval.
    pub retry_max: Duration,
    /// The TLS level for destinations without their own.
    pub tls_level: TlsLevel,
    /// The lowest acceptable TLS version for all destinations, if raised.
    pub tls_min_version: Option<TlsVersion>,
    /// Per recipient domain overrides (`[tls.domain."example.org"]`),
    /// keyed by A-label domain.
    pub tls_domains: BTreeMap<String, DomainTls>,
    /// `[[rule]]` entries, in file order.
    pub rules: Vec<Rule>,
    /// How long the record of a finished message is kept for `queue show`.
    pub delivered_retention: Duration,
    /// How long a message is retried before its pending recipients fail
    /// (RFC 5321 §4.5.4.1 asks for at least 4 to 5 days).
    pub max_queue_lifetime: Duration,
    /// The same for messages from the null sender (reports).
    pub bounce_queue_lifetime: Duration,
    /// When a delay warning goes out (once); zero for never.
    pub delay_warning_time: Duration,
    /// Where reports that cannot be delivered go.
    pub postmaster: String,
    /// The relayhost listener (`[listen]`).
    pub listen: ListenConfig,
}

impl Config {
    /// The administrator's TLS policy for a recipient domain: its own entry,
    /// else the defaults of `[tls]`.
    pub fn domain_tls(&self, domain: &str) -> DomainTls {
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        self.tls_domains.get(&key).copied().unwrap_or(DomainTls {
            level: self.tls_level,
            min_version: self.tls_min_version,
        })
    }

    /// Loads the configuration from an explicit path (which must exist) or
    /// from the default path (which may be missing).
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        match explicit {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml(&text, Some(path))
            }
            None => match std::fs::read_to_string(DEFAULT_CONFIG) {
                Ok(text) => Self::from_toml(&text, Some(Path::new(DEFAULT_CONFIG))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::from_toml("", None),
                Err(source) => Err(ConfigError::Read {
                    path: DEFAULT_CONFIG.into(),
                    source,
                }),
            },
        }
    }

    /// Parses configuration text; `path` is used in error messages.
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        let shown = path.map_or_else(|| PathBuf::from("(built-in defaults)"), Path::to_owned);
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            let message = e.message().trim().to_owned();
            // A bad value's message names the value, not the key: add the
            // key written on that line.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim().trim_matches('"'))
                .filter(|k| !k.is_empty() && !message.contains(k));
            ConfigError::Parse {
                line,
                message: key.map_or_else(|| message.clone(), |k| format!("{k}: {message}")),
                path: shown.clone(),
            }
        })?;
        Self::resolve(file, path, &shown)
    }

    fn resolve(file: FileConfig, path: Option<&Path>, shown: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: shown.to_owned(),
            key: key.to_owned(),
            message,
        };
        let hostname = match file.hostname {
            Some(h) => normalise_domain(&h).map_err(|m| invalid("hostname", m))?,
            None => system_hostname(),
        };
        let domain = match file.domain {
            Some(d) => normalise_domain(&d).map_err(|m| invalid("domain", m))?,
            None => hostname.clone(),
        };
        let relayhost = file
            .relayhost
            .as_deref()
            .map(parse_relayhost)
            .transpose()
            .map_err(|m| invalid("relayhost", m))?;
        let nameservers = file
            .dns
            .nameservers
            .iter()
            .map(|s| parse_nameserver(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| invalid("dns.nameservers", m))?;
        let dnssec = match file.dns.dnssec.as_deref() {
            None | Some("validate") => DnssecMode::Validate,
            Some("off") => DnssecMode::Off,
            Some("trust-ad") => return Err(invalid("dns.dnssec", TRUST_AD_REFUSED.into())),
            Some(other) => {
                return Err(invalid(
                    "dns.dnssec",
                    format!("{other:?}: expected \"validate\" or \"off\""),
                ))
            }
        };
        if let Some(anchor) = &file.dns.trust_anchor {
            if dnssec == DnssecMode::Off {
                return Err(invalid(
                    "dns.trust_anchor",
                    "has no effect with dns.dnssec = \"off\"".into(),
                ));
            }
            crate::routing::TrustAnchor::load(anchor)
                .map_err(|m| invalid("dns.trust_anchor", m))?;
        }
        if let Some(ca) = &file.tls.ca_file {
            if !ca.is_file() {
                return Err(invalid(
                    "tls.ca_file",
                    format!("{} is not a file", ca.display()),
                ));
            }
        }
        let retry_min = Duration::from_secs(file.queue.retry_min.unwrap_or(300));
        let retry_max = Duration::from_secs(file.queue.retry_max.unwrap_or(3600));
        if retry_min.is_zero() || retry_max < retry_min {
            return Err(invalid(
                "queue.retry_max",
                "must be at least queue.retry_min, which must be over 0".into(),
            ));
        }
        let mut tls_domains = BTreeMap::new();
        for (name, d) in &file.tls.domain {
            let key = format!("tls.domain.{name:?}");
            let domain = normalise_domain(name).map_err(|m| invalid(&key, m))?;
            tls_domains.insert(
                domain,
                DomainTls {
                    level: d.level.unwrap_or(file.tls.level),
                    min_version: d.min_version.or(file.tls.min_version),
                },
            );
        }
        let mut rules = Vec::new();
        for (n, r) in file.rule.iter().enumerate() {
            let key = format!("rule[{n}]");
            let domain = |d: &Option<String>| {
                d.as_deref()
                    .map(normalise_domain)
                    .transpose()
                    .map_err(|m| invalid(&key, m))
            };
            let rule = Rule {
                sender_domain: domain(&r.sender_domain)?,
                recipient_domain: domain(&r.recipient_domain)?,
                requiretls: r.requiretls,
                require_dnssec: r.require_dnssec,
                tls_verify: r.tls_verify,
                tls_min: r.tls_min,
            };
            if !rule.requiretls
                && !rule.require_dnssec
                && rule.tls_verify.is_none()
                && rule.tls_min.is_none()
            {
                return Err(invalid(&key, "the rule requires nothing".into()));
            }
            rules.push(rule);
        }
        let delivered_retention = file
            .delivered_retention
            .as_ref()
            .map(DurationValue::to_duration)
            .transpose()
            .map_err(|m| invalid("delivered_retention", m))?
            .unwrap_or(Duration::from_secs(7 * 86400));
        let duration = |value: &Option<DurationValue>, key: &str, default: u64| {
            value
                .as_ref()
                .map(DurationValue::to_duration)
                .transpose()
                .map_err(|m| invalid(key, m))
                .map(|d| d.unwrap_or(Duration::from_secs(default)))
        };
        let max_queue_lifetime =
            duration(&file.max_queue_lifetime, "max_queue_lifetime", 5 * 86400)?;
        let bounce_queue_lifetime = duration(
            &file.bounce_queue_lifetime,
            "bounce_queue_lifetime",
            2 * 86400,
        )?;
        let delay_warning_time =
            duration(&file.delay_warning_time, "delay_warning_time", 4 * 3600)?;
        let postmaster = match &file.postmaster {
            Some(p) => {
                let p = p.trim();
                match p.rsplit_once('@') {
                    Some((local, d)) if !local.is_empty() => {
                        let d = normalise_domain(d).map_err(|m| invalid("postmaster", m))?;
                        format!("{local}@{d}")
                    }
                    _ => {
                        return Err(invalid(
                            "postmaster",
                            format!("{p:?} is not an address (local@domain)"),
                        ))
                    }
                }
            }
            None => format!("postmaster@{domain}"),
        };
        let listen = file.listen.resolve(invalid)?;
        let max_connections = file.smtp.max_connections.unwrap_or(8);
        let max_connections_per_destination =
            file.smtp.max_connections_per_destination.unwrap_or(4);
        if max_connections == 0 || max_connections_per_destination == 0 {
            return Err(invalid(
                "smtp.max_connections",
                "connection limits must be at least 1".into(),
            ));
        }
        Ok(Self {
            source: path.map(Path::to_owned),
            queue_dir: file.queue_dir,
            hostname,
            domain,
            relayhost,
            relayhost_tls: file.relayhost_tls,
            submit_only: file.submit_only,
            max_message_size: file.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            secrets_file: file.secrets_file.unwrap_or_else(|| DEFAULT_SECRETS.into()),
            // Local names are matched without regard to case, as the
            // submission side lower-cases the name it looks up.
            aliases: file
                .aliases
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            nameservers,
            dnssec,
            trust_anchor: file.dns.trust_anchor,
            ca_file: file.tls.ca_file,
            smtp_port: file.smtp.port.unwrap_or(25),
            bind_address: file.smtp.bind_address,
            ip_family: file.smtp.ip_family,
            connect_timeout: Duration::from_secs(file.smtp.connect_timeout.unwrap_or(30)),
            command_timeout: Duration::from_secs(file.smtp.command_timeout.unwrap_or(300)),
            max_connections,
            max_connections_per_destination,
            retry_min,
            retry_max,
            tls_level: file.tls.level,
            tls_min_version: file.tls.min_version,
            tls_domains,
            rules,
            delivered_retention,
            max_queue_lifetime,
            bounce_queue_lifetime,
            delay_warning_time,
            postmaster,
            listen,
        })
    }
}

/// The 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Lower-cases a domain and converts it to A-labels (RFC 5890).
pub fn normalise_domain(name: &str) -> Result<String, String> {
    let trimmed = name.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err("empty domain name".into());
    }
    idna::domain_to_ascii(trimmed).map_err(|_| format!("{name:?} is not a valid domain name"))
}

/// The machine's name, as the kernel reports it (falls back to `localhost`).
fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| normalise_domain(&h).ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Parses `[host]:port`, `[host]`, `host:port` or `host` as Postfix's
/// `relayhost` does: brackets turn off the MX lookup.
fn parse_relayhost(value: &str) -> Result<RelayHost, String> {
    let value = value.trim();
    let (host, rest, mx_lookup) = if let Some(inner) = value.strip_prefix('[') {
        let end = inner
            .find(']')
            .ok_or_else(|| format!("{value:?}: missing ']'"))?;
        (&inner[..end], &inner[end + 1..], false)
    } else {
        let host_end = value.rfind(':').unwrap_or(value.len());
        (&value[..host_end], &value[host_end..], true)
    };
    let port = match rest.strip_prefix(':') {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{value:?}: bad port {p:?}"))?,
        None if rest.is_empty() => 25,
        None => return Err(format!("{value:?}: unexpected {rest:?} after the host")),
    };
    if host.is_empty() {
        return Err(format!("{value:?}: empty host"));
    }
    let host = if host.parse::<IpAddr>().is_ok() {
        host.to_owned()
    } else {
        normalise_domain(host)?
    };
    Ok(RelayHost {
        host,
        port,
        mx_lookup,
    })
}

/// Parses `IP` or `IP:port` (`[v6]:port` for IPv6); the port defaults to 53.
fn parse_nameserver(value: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = value.parse::<SocketAddr>() {
        return Ok(sa);
    }
    value
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{value:?} is not IP or IP:port"))
}

/// Credentials for the relay, from the secrets file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// User name for AUTH at the relay.
    pub relay_user: Option<String>,
    /// Password for AUTH at the relay.
    pub relay_password: Option<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("relay_user", &self.relay_user)
            .field(
                "relay_password",
                &self.relay_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Secrets {
    /// Reads the secrets file; a missing file means no credentials. The file
    /// must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Option<Self>, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::SecretsPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| ConfigError::Parse {
                line: e.span().map_or(1, |s| line_of(&text, s.start)),
                message: e.message().trim().to_owned(),
                path: path.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_defaults_and_values() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.listen.addresses.len(), 2);
        assert_eq!(c.listen.max_recipients, 1000);
        assert!(c
            .listen
            .allow
            .iter()
            .any(|n| n.contains("127.0.0.5".parse().unwrap())));
        assert!(c
            .listen
            .allow
            .iter()
            .any(|n| n.contains("::1".parse().unwrap())));
        assert!(!c
            .listen
            .allow
            .iter()
            .any(|n| n.contains("10.0.0.1".parse().unwrap())));
        let c = Config::from_toml(
            "[listen]\naddresses = [\"127.0.0.2:2525\"]\nallow = [\"192.0.2.0/24\", \"2001:db8::1\"]\n\
             max_recipients = 5\ncommand_timeout = 10\nrequiretls_plaintext_loopback = true\n",
            None,
        )
        .unwrap();
        assert_eq!(c.listen.addresses, ["127.0.0.2:2525".parse().unwrap()]);
        assert!(c.listen.allow[0].contains("192.0.2.200".parse().unwrap()));
        assert!(c.listen.allow[0].contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!c.listen.allow[0].contains("192.0.3.1".parse().unwrap()));
        assert!(c.listen.allow[1].contains("2001:db8::1".parse().unwrap()));
        assert_eq!(c.listen.max_recipients, 5);
        assert_eq!(c.listen.command_timeout, Duration::from_secs(10));
        assert!(c.listen.requiretls_plaintext_loopback);
    }

    #[test]
    fn bad_listen_values_name_the_key() {
        for (text, key) in [
            ("[listen]\nallow = [\"10.0.0.0/33\"]", "listen.allow"),
            ("[listen]\naddresses = [\"localhost\"]", "listen.addresses"),
            ("[listen]\nmax_connections = 0", "listen.max_connections"),
            ("[listen]\ndata_timeout = 0", "listen.data_timeout"),
            (
                "[listen]\ncert_file = \"/etc/cert.pem\"",
                "listen.cert_file",
            ),
        ] {
            let e = Config::from_toml(text, Some(Path::new("f.toml"))).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let e = Config::from_toml(
            "[listen]\nmax_recipients = \"x\"",
            Some(Path::new("f.toml")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.smtp_port, 25);
        assert_eq!(c.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(c.domain, c.hostname);
        assert!(c.relayhost.is_none());
        assert!(!c.submit_only);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "hostname = \"a.example.org\"\n\n[smtp]\nprot = 25\n";
        let e = Config::from_toml(text, Some(Path::new("/x.toml"))).unwrap_err();
        let shown = e.to_string();
        assert!(shown.starts_with("/x.toml: line 4:"), "{shown}");
        assert!(shown.contains("prot"), "{shown}");
    }

    #[test]
    fn bad_value_type_is_an_error() {
        let e = Config::from_toml("submit_only = \"maybe\"\n", None).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn relayhost_forms() {
        let r = parse_relayhost("[smtp.example.org]:587").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.mx_lookup),
            ("smtp.example.org", 587, false)
        );
        let r = parse_relayhost("[192.0.2.1]").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.mx_lookup),
            ("192.0.2.1", 25, false)
        );
        let r = parse_relayhost("Example.ORG").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.mx_lookup),
            ("example.org", 25, true)
        );
        let r = parse_relayhost("example.org:2525").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.mx_lookup),
            ("example.org", 2525, true)
        );
        assert!(parse_relayhost("[x.example.org").is_err());
        assert!(parse_relayhost("[x.example.org]:99999").is_err());
    }

    #[test]
    fn nameservers_parse_with_default_port() {
        let c = Config::from_toml(
            "[dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\", \"[::1]:54\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(c.nameservers[0], "127.0.0.1:5353".parse().unwrap());
        assert_eq!(c.nameservers[1], "[::1]:53".parse().unwrap());
        assert_eq!(c.nameservers[2], "[::1]:54".parse().unwrap());
        assert!(Config::from_toml("[dns]\nnameservers = [\"nope\"]\n", None).is_err());
    }

    #[test]
    fn dnssec_modes() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.dnssec, DnssecMode::Validate);
        assert!(c.trust_anchor.is_none());
        let c = Config::from_toml("[dns]\ndnssec = \"validate\"\n", None).unwrap();
        assert_eq!(c.dnssec, DnssecMode::Validate);
        let c = Config::from_toml("[dns]\ndnssec = \"off\"\n", None).unwrap();
        assert_eq!(c.dnssec, DnssecMode::Off);
        let e = Config::from_toml("[dns]\ndnssec = \"maybe\"\n", None).unwrap_err();
        assert!(e.to_string().contains("dns.dnssec"), "{e}");
    }

    #[test]
    fn trust_ad_is_refused_with_the_reason() {
        let e = Config::from_toml("[dns]\ndnssec = \"trust-ad\"\n", Some(Path::new("/x.toml")))
            .unwrap_err();
        let shown = e.to_string();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{shown}");
        assert!(shown.starts_with("/x.toml: dns.dnssec: "), "{shown}");
        assert!(
            shown.contains("not supported") && shown.contains("AD bit"),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "one line: {shown}");
    }

    #[test]
    fn trust_anchor_file_is_checked_and_kept_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("root.key");
        let key = hickory_resolver::proto::dnssec::TrustAnchors::default()
            .get(0)
            .unwrap()
            .clone();
        let dnskey = hickory_resolver::proto::dnssec::rdata::DNSKEY::with_flags(257, key);
        std::fs::write(&good, format!("; root\n. 172800 IN DNSKEY {dnskey}\n")).unwrap();
        let text = format!("[dns]\ntrust_anchor = {:?}\n", good.to_str().unwrap());
        let c = Config::from_toml(&text, None).unwrap();
        assert_eq!(c.trust_anchor.as_deref(), Some(good.as_path()));

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "; root\n\n. 172800 IN DNSKEY 257 3 8 @@@\n").unwrap();
        let text = format!("[dns]\ntrust_anchor = {:?}\n", bad.to_str().unwrap());
        let e = Config::from_toml(&text, None).unwrap_err().to_string();
        assert!(e.contains(&format!("{}: line 3:", bad.display())), "{e}");

        let missing = format!("[dns]\ntrust_anchor = {:?}\n", "/nonexistent/anchor");
        let e = Config::from_toml(&missing, None).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/anchor"), "{e}");

        let off = format!(
            "[dns]\ndnssec = \"off\"\ntrust_anchor = {:?}\n",
            good.to_str().unwrap()
        );
        assert!(Config::from_toml(&off, None).is_err());
    }

    #[test]
    fn idn_domain_becomes_a_labels() {
        let c = Config::from_toml("domain = \"Bücher.example\"\n", None).unwrap();
        assert_eq!(c.domain, "xn--bcher-kva.example");
    }

    #[test]
    fn secrets_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.toml");
        std::fs::write(&p, "relay_user = \"u\"\nrelay_password = \"p\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Secrets::load(&p),
            Err(ConfigError::SecretsPermissions { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secrets::load(&p).unwrap().unwrap();
        assert_eq!(s.relay_password.as_deref(), Some("p"));
        assert!(!format!("{s:?}").contains("\"p\""));
        assert!(Secrets::load(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn tls_levels_per_domain_rules_and_retention() {
        let text = r#"
delivered_retention = "3d"
[tls]
level = "may"
min_version = "1.3"
[tls.domain."Bücher.example"]
level = "dane-only"
[tls.domain."bank.example"]
level = "verify"
min_version = "1.2"

[[rule]]
sender_domain = "hr.example.org"
requiretls = true

[[rule]]
recipient_domain = "partner.example"
tls_verify = "dane"
"#;
        let c = Config::from_toml(text, None).unwrap();
        assert_eq!(c.delivered_retention, Duration::from_secs(3 * 86400));
        assert_eq!(c.domain_tls("other.example").level, TlsLevel::May);
        assert_eq!(
            c.domain_tls("other.example").min_version,
            Some(TlsVersion::Tls13)
        );
        let idn = c.domain_tls("xn--bcher-kva.example");
        assert_eq!(idn.level, TlsLevel::DaneOnly);
        assert_eq!(idn.min_version, Some(TlsVersion::Tls13), "inherits [tls]");
        assert_eq!(c.domain_tls("BANK.example.").level, TlsLevel::Verify);
        assert_eq!(
            c.domain_tls("bank.example").min_version,
            Some(TlsVersion::Tls12)
        );
        assert_eq!(c.rules.len(), 2);
        assert!(c.rules[0].matches("hr.example.org", "anything.example"));
        assert!(!c.rules[0].matches("example.org", "anything.example"));
        assert!(c.rules[1].matches("x.example", "partner.example"));
    }

    #[test]
    fn alias_names_match_without_regard_to_case() {
        let c = Config::from_toml("[aliases]\nRoot = \"admin@example.org\"\n", None).unwrap();
        assert_eq!(
            c.aliases.get("root").map(String::as_str),
            Some("admin@example.org")
        );
    }

    #[test]
    fn tls_defaults_are_dane_and_seven_days() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.tls_level, TlsLevel::Dane);
        assert_eq!(c.domain_tls("example.org").min_version, None);
        assert_eq!(c.delivered_retention, Duration::from_secs(7 * 86400));
        assert!(c.rules.is_empty());
    }

    #[test]
    fn bad_tls_settings_name_the_key() {
        let e = Config::from_toml("[tls]\nlevel = \"secure\"\n", None).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(e.to_string().contains("level: unknown variant"), "{e}");
        let e = Config::from_toml("[[rule]]\nsender_domain = \"a.example\"\n", None).unwrap_err();
        assert!(e.to_string().contains("rule[0]"), "{e}");
        let e = Config::from_toml("delivered_retention = \"7w\"\n", None).unwrap_err();
        assert!(e.to_string().contains("delivered_retention"), "{e}");
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("4h").unwrap(), Duration::from_secs(14400));
    }
}
