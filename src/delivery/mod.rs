//! Delivery: one attempt at every pending recipient of a queued message.
//!
//! Recipients are grouped by domain (or all together when a relayhost takes
//! everything) and each group goes out in one SMTP transaction (RFC 5321
//! §4.5.4.1 asks for one transaction per destination). For each group the
//! [routing](crate::routing) layer gives the hosts in preference order; each
//! address of each host is tried in turn until one session reaches a
//! verdict. Per recipient, a 2xx is delivered, a 5xx is failed, and a 4xx
//! or a connection that never got that far leaves it pending for a later
//! run.
//!
//! The attempt writes one structured log line per connection (queue id,
//! domain, host, address, TLS, certificate outcome, reply) and records the
//! result in each recipient's state.

mod connect;
pub mod run;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, ConfigError, RelayTls, Secrets};
use crate::queue::file::RecipientSpec;
use crate::queue::record::{AttemptResult, QueueEntry, RecipientStatus, TlsSummary};
use crate::routing::{MxHost, RouteError, Router};
use crate::smtp::{
    self, CertVerification, Delivered, Disposition, ErrorKind, SessionConfig, SessionError, Stage,
    Timeouts, TlsInfo, TlsMode, Transaction,
};

/// Errors that stop a delivery agent from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configuration or secrets could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The resolver could not be built.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Trusted roots could not be loaded.
    #[error("{path}: cannot load CA certificates: {reason}")]
    Roots {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone)]
struct Verdict {
    status: RecipientStatus,
    result: AttemptResult,
}

/// Where a group of recipients goes.
struct Destination {
    /// The recipient domain, or the relay's name.
    label: String,
    /// The relay, when one is configured.
    relay: bool,
}

/// Delivers queued messages.
pub struct Agent {
    config: Config,
    router: Router,
    roots: Arc<rustls::RootCertStore>,
    credentials: Option<(String, String)>,
}

impl Agent {
    /// Builds an agent from the configuration: resolver, trusted roots
    /// (the system's and `[tls] ca_file`), and relay credentials.
    pub fn new(config: Config) -> Result<Self, SetupError> {
        let router = Router::new(&config)?;
        let roots = Arc::new(load_roots(config.ca_file.as_deref())?);
        let credentials = match (&config.relayhost, Secrets::load(&config.secrets_file)?) {
            (Some(_), Some(s)) => s.relay_user.zip(s.relay_password),
            _ => None,
        };
        Ok(Self {
            config,
            router,
            roots,
            credentials,
        })
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Makes one attempt at every pending recipient of `entry` and updates
    /// its state; schedules the next attempt when some remain pending.
    pub async fn deliver(&self, entry: &mut QueueEntry, message: &[u8]) {
        let now = now();
        entry.attempts += 1;
        entry.last_attempt = Some(now);
        for (destination, indexes) in self.groups(entry) {
            let verdicts = self
                .deliver_group(entry, &destination, &indexes, message)
                .await;
            for (i, verdict) in indexes.iter().zip(verdicts) {
                let rcpt = &mut entry.recipients[*i];
                log_lifecycle(entry.envelope.id.as_str(), &rcpt.address, &verdict);
                rcpt.status = verdict.status;
                rcpt.last = Some(verdict.result);
            }
        }
        if !entry.is_finished() {
            let delay = self.retry_delay(entry.attempts);
            entry.next_attempt = now + delay;
            tracing::info!(queue_id = %entry.id(), next_attempt = %format_time(entry.next_attempt),
                "deferred");
        }
    }

    /// Exponential backoff from `retry_min`, capped at `retry_max`.
    fn retry_delay(&self, attempts: u32) -> i64 {
        let min = self.config.retry_min.as_secs();
        let max = self.config.retry_max.as_secs();
        let factor = 1u64 << attempts.saturating_sub(1).min(20);
        i64::try_from(min.saturating_mul(factor).min(max)).unwrap_or(i64::MAX)
    }

    /// Pending recipients grouped by destination.
    fn groups(&self, entry: &QueueEntry) -> Vec<(Destination, Vec<usize>)> {
        if let Some(relay) = &self.config.relayhost {
            let all: Vec<usize> = entry.pending().collect();
            if all.is_empty() {
                return Vec::new();
            }
            let destination = Destination {
                label: relay.host.clone(),
                relay: true,
            };
            return vec![(destination, all)];
        }
        let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in entry.pending() {
            let address = &entry.recipients[i].address;
            let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
            by_domain
                .entry(domain.to_ascii_lowercase())
                .or_default()
                .push(i);
        }
        by_domain
            .into_iter()
            .map(|(label, idx)| {
                (
                    Destination {
                        label,
                        relay: false,
                    },
                    idx,
                )
            })
            .collect()
    }

    async fn hosts_for(&self, destination: &Destination) -> Result<(Vec<MxHost>, u16), RouteError> {
        match (&self.config.relayhost, destination.relay) {
            (Some(relay), true) if !relay.mx_lookup => Ok((
                vec![MxHost {
                    name: relay.host.clone(),
                    preference: 0,
                    implicit: false,
                }],
                relay.port,
            )),
            (Some(relay), true) => Ok((self.router.mx_hosts(&relay.host).await?.hosts, relay.port)),
            _ => Ok((
                self.router.mx_hosts(&destination.label).await?.hosts,
                self.config.smtp_port,
            )),
        }
    }

    /// Tries the hosts of one destination in order until one session gives
    /// a verdict for the recipients.
    async fn deliver_group(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        indexes: &[usize],
        message: &[u8],
    ) -> Vec<Verdict> {
        let (hosts, port) = match self.hosts_for(destination).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.label,
                    error = %e, "routing failed");
                return uniform(indexes.len(), route_verdict(&e));
            }
        };
        let specs: Vec<RecipientSpec> = indexes.iter().map(|&i| recipient_spec(entry, i)).collect();
        let mut last = None;
        for host in &hosts {
            let addresses = match self
                .router
                .addresses(&host.name, self.config.ip_family)
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.label,
                        mx = %host.name, error = %e, "no usable address");
                    last = Some(route_verdict(&e).into_transient());
                    continue;
                }
            };
            for ip in addresses.ips {
                if !self.family_allowed(ip) {
                    continue;
                }
                match self
                    .attempt(entry, destination, host, ip, port, &specs, message)
                    .await
                {
                    Attempt::Final(verdicts) => return verdicts,
                    Attempt::TryNext(verdict) => last = Some(*verdict),
                }
            }
        }
        let verdict = last.unwrap_or_else(|| Verdict {
            status: RecipientStatus::Pending,
            result: result_without_host("4.4.4", "no usable address for any MX host".into()),
        });
        uniform(indexes.len(), verdict)
    }

    fn family_allowed(&self, ip: IpAddr) -> bool {
        match self.config.bind_address {
            Some(bind) => bind.is_ipv4() == ip.is_ipv4(),
            None => true,
        }
    }

    fn tls_mode(&self, destination: &Destination) -> TlsMode {
        if !destination.relay {
            return TlsMode::Opportunistic;
        }
        match self.config.relayhost_tls {
            RelayTls::Starttls => TlsMode::RequiredVerified,
            RelayTls::Implicit => TlsMode::Implicit,
            RelayTls::None => TlsMode::Plaintext,
        }
    }

    /// One connection to one address, with a plaintext retry when an
    /// opportunistic handshake fails (the peer offered STARTTLS but could
    /// not complete it; RFC 3207 §4.1 leaves the fallback to the client, and
    /// nothing in this message's policy forbids it).
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        host: &MxHost,
        ip: IpAddr,
        port: u16,
        specs: &[RecipientSpec],
        message: &[u8],
    ) -> Attempt {
        let mode = self.tls_mode(destination);
        let first = self
            .session(entry, destination, host, ip, port, specs, message, mode)
            .await;
        match first {
            Err(e) if mode == TlsMode::Opportunistic && e.is_tls_handshake_failure() => self
                .session(
                    entry,
                    destination,
                    host,
                    ip,
                    port,
                    specs,
                    message,
                    TlsMode::Plaintext,
                )
                .await
                .map_or_else(
                    |e| self.failed_attempt(host, ip, &e, specs.len()),
                    |d| Attempt::Final(verdicts_from(&d, host, ip)),
                ),
            Err(e) => self.failed_attempt(host, ip, &e, specs.len()),
            Ok(d) => Attempt::Final(verdicts_from(&d, host, ip)),
        }
    }

    /// Connects and runs one SMTP session, logging one line for it.
    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        host: &MxHost,
        ip: IpAddr,
        port: u16,
        specs: &[RecipientSpec],
        message: &[u8],
        tls_mode: TlsMode,
    ) -> Result<Delivered, SessionError> {
        let started = Instant::now();
        let cfg = SessionConfig {
            ehlo_name: self.config.hostname.clone(),
            tls_mode,
            server_name: host.name.clone(),
            roots: self.roots.clone(),
            credentials: if destination.relay {
                self.credentials.clone()
            } else {
                None
            },
            timeouts: Timeouts {
                greeting: self.config.command_timeout,
                command: self.config.command_timeout,
                ..Timeouts::default()
            },
            dane: None,
            min_version: None,
        };
        let txn = Transaction {
            sender: &entry.envelope.sender,
            recipients: specs
                .iter()
                .map(|s| smtp::RecipientSpec {
                    address: s.address.clone(),
                    notify: s.notify.clone(),
                    orcpt: s.orcpt.clone(),
                })
                .collect(),
            dsn: &entry.envelope.dsn,
            message,
            eight_bit: entry.envelope.eight_bit,
            smtputf8: entry.envelope.smtputf8,
            requiretls: entry.envelope.security.requiretls,
        };
        let result = match connect::connect(
            ip,
            port,
            self.config.bind_address,
            self.config.connect_timeout,
        )
        .await
        {
            Ok(stream) => smtp::deliver(stream, &cfg, &txn).await,
            Err(e) => Err(SessionError::new(
                Stage::Connect,
                host.name.clone(),
                ErrorKind::Io(e),
            )),
        };
        log_attempt(entry, destination, host, ip, &result, started);
        result
    }

    fn failed_attempt(&self, host: &MxHost, ip: IpAddr, e: &SessionError, n: usize) -> Attempt {
        let permanent = e.disposition() == Disposition::Permanent;
        let result = AttemptResult {
            at: now(),
            host: Some(host.name.clone()),
            ip: Some(ip.to_string()),
            tls: None,
            reply: e.reply().map(|r| r.text()),
            status: status_of_error(e),
            detail: e.to_string(),
            protection: None,
        };
        // A permanent refusal of the sender or the message ends the attempt
        // for every recipient; anything else moves on to the next address.
        if permanent && ends_transaction(e) {
            Attempt::Final(uniform(
                n,
                Verdict {
                    status: RecipientStatus::Failed,
                    result,
                },
            ))
        } else {
            Attempt::TryNext(Box::new(Verdict {
                status: RecipientStatus::Pending,
                result,
            }))
        }
    }
}

/// A permanent error at these stages is about this message or its sender,
/// not about the host: another MX host would answer the same. Permanent
/// errors before MAIL (a 554 greeting, a refused EHLO) and refused
/// credentials move on to the next host or a later run instead, as
/// Postfix's soft bounce on authentication failure does.
fn ends_transaction(e: &SessionError) -> bool {
    match e.stage {
        Stage::MailFrom | Stage::RcptTo | Stage::Data | Stage::DataEnd => true,
        Stage::Connect
        | Stage::Greeting
        | Stage::Ehlo
        | Stage::StartTls
        | Stage::TlsHandshake
        | Stage::Auth
        | Stage::Quit => false,
    }
}

enum Attempt {
    /// The recipients have their verdicts.
    Final(Vec<Verdict>),
    /// This address gave no verdict; the reason, if nothing better follows.
    TryNext(Box<Verdict>),
}

impl Verdict {
    fn into_transient(mut self) -> Self {
        self.status = RecipientStatus::Pending;
        self
    }
}

fn uniform(n: usize, verdict: Verdict) -> Vec<Verdict> {
    vec![verdict; n]
}

fn recipient_spec(entry: &QueueEntry, index: usize) -> RecipientSpec {
    let address = &entry.recipients[index].address;
    entry
        .envelope
        .recipients
        .iter()
        .find(|r| &r.address == address)
        .cloned()
        .unwrap_or_else(|| RecipientSpec {
            address: address.clone(),
            notify: None,
            orcpt: None,
        })
}

fn route_verdict(e: &RouteError) -> Verdict {
    Verdict {
        status: if e.is_permanent() {
            RecipientStatus::Failed
        } else {
            RecipientStatus::Pending
        },
        result: result_without_host(e.status(), e.to_string()),
    }
}

fn result_without_host(status: &str, detail: String) -> AttemptResult {
    AttemptResult {
        at: now(),
        host: None,
        ip: None,
        tls: None,
        reply: None,
        status: status.into(),
        detail,
        protection: None,
    }
}

/// Per-recipient verdicts from a completed session.
fn verdicts_from(d: &Delivered, host: &MxHost, ip: IpAddr) -> Vec<Verdict> {
    let tls = Some(tls_summary(d.tls.as_ref()));
    d.recipients
        .iter()
        .map(|r| {
            let reply = &r.final_reply;
            let status = if r.accepted {
                RecipientStatus::Delivered
            } else if reply.is_permanent() {
                RecipientStatus::Failed
            } else {
                RecipientStatus::Pending
            };
            Verdict {
                status,
                result: AttemptResult {
                    at: now(),
                    host: Some(host.name.clone()),
                    ip: Some(ip.to_string()),
                    tls: tls.clone(),
                    reply: Some(reply.text()),
                    status: reply
                        .enhanced
                        .map_or_else(|| class_status(reply.code).into(), |c| c.to_string()),
                    detail: match status {
                        RecipientStatus::Delivered => "delivered".into(),
                        RecipientStatus::Failed => "refused by the receiving server".into(),
                        RecipientStatus::Pending => "temporarily refused".into(),
                    },
                    protection: None,
                },
            }
        })
        .collect()
}

fn class_status(code: u16) -> &'static str {
    match code / 100 {
        2 => "2.0.0",
        4 => "4.0.0",
        _ => "5.0.0",
    }
}

fn status_of_error(e: &SessionError) -> String {
    if let Some(reply) = e.reply() {
        return reply
            .enhanced
            .map_or_else(|| class_status(reply.code).into(), |c| c.to_string());
    }
    match e.disposition() {
        Disposition::Permanent => "5.0.0".into(),
        Disposition::Transient => "4.4.1".into(),
    }
}

fn tls_summary(tls: Option<&TlsInfo>) -> TlsSummary {
    match tls {
        None => TlsSummary {
            version: "plaintext".into(),
            cipher: String::new(),
            certificate: "none".into(),
        },
        Some(t) => TlsSummary {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            certificate: match &t.verification {
                CertVerification::Verified(m) => format!("verified ({m})"),
                CertVerification::Failed(reason) => format!("unverified: {reason}"),
                CertVerification::NotChecked => "not checked".into(),
            },
        },
    }
}

/// The one line per connection attempt.
fn log_attempt(
    entry: &QueueEntry,
    destination: &Destination,
    host: &MxHost,
    ip: IpAddr,
    result: &Result<Delivered, SessionError>,
    started: Instant,
) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(d) => {
            let tls = tls_summary(d.tls.as_ref());
            let reply = d
                .data_reply
                .as_ref()
                .or_else(|| d.recipients.first().map(|r| &r.rcpt_reply))
                .map(|r| r.text())
                .unwrap_or_default();
            let accepted = d.recipients.iter().filter(|r| r.accepted).count();
            tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.label, mx = %host.name,
                %ip, tls = %tls.version, cipher = %tls.cipher, certificate = %tls.certificate,
                accepted, recipients = d.recipients.len(), %reply, elapsed_ms, "delivery attempt");
        }
        Err(e) => {
            let reply = e.reply().map(|r| r.text()).unwrap_or_default();
            tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.label, mx = %host.name,
                %ip, stage = %e.stage, disposition = ?e.disposition(), %reply, error = %e, elapsed_ms,
                "delivery attempt failed");
        }
    }
}

fn log_lifecycle(id: &str, address: &str, verdict: &Verdict) {
    let r = &verdict.result;
    let relay = r.host.as_deref().unwrap_or("none");
    match verdict.status {
        RecipientStatus::Delivered => {
            tracing::info!(queue_id = %id, to = %address, %relay, status = %r.status, "delivered")
        }
        RecipientStatus::Failed => {
            tracing::info!(queue_id = %id, to = %address, %relay, status = %r.status, detail = %r.detail, "failed")
        }
        RecipientStatus::Pending => {
            tracing::debug!(queue_id = %id, to = %address, %relay, status = %r.status, detail = %r.detail, "still pending")
        }
    }
}

/// The system's trusted roots plus those in `ca_file`.
fn load_roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, SetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system CA certificate could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| SetupError::Roots {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(SetupError::Roots {
                path: shown,
                reason: "no certificate in the file".into(),
            });
        }
    }
    Ok(roots)
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A timestamp for logs and listings, in local time.
pub fn format_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| {
            d.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %z")
                .to_string()
        })
        .unwrap_or_else(|| t.to_string())
}
