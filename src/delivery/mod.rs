//! Delivery: one attempt at every pending recipient of a queued message.
//!
//! Recipients are grouped by domain (through a relayhost, by the TLS
//! requirements that apply to them) and each group goes out in one SMTP
//! transaction (RFC 5321 §4.5.4.1 asks for one transaction per
//! destination). For each group the [routing](crate::routing) layer gives
//! the hosts in preference order with the DNSSEC status of each answer;
//! the [policy](crate::policy) layer decides, host by host, whether the
//! message may use it and how (DANE, PKIX, opportunistic TLS, REQUIRETLS);
//! each address of a usable host is tried in turn until one session
//! reaches a verdict. Per recipient, a 2xx is delivered, a 5xx is failed,
//! and a 4xx or a connection that never got that far leaves it pending for
//! a later run. A REQUIRETLS message fails at once only when every host
//! was refused structurally (RFC 8689 §4.2.1: none offers REQUIRETLS after
//! STARTTLS, or the MX cannot be validated).
//!
//! The attempt writes one structured log line per connection (queue id,
//! domain, host, address, DNSSEC status of the MX, policy, TLS version and
//! cipher, verification method, REQUIRETLS, reply) and records the result
//! and the protection it had in each recipient's state.

mod connect;
pub mod probe;
pub mod run;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::config::{Config, ConfigError, DnssecMode, Secrets};
use crate::policy::{
    self, dane, Authentication, Dnssec, HostDecision, HostFacts, Refusal, Requirements, StartTls,
    TlsPlan, TlsaState,
};
use crate::queue::file::RecipientSpec;
use crate::queue::record::{AttemptResult, Protection, QueueEntry, RecipientStatus, TlsSummary};
use crate::routing::{Addresses, MxHost, MxSet, RouteError, Router, Security};
use crate::smtp::{
    self, CertVerification, Connection, DaneAuth, Delivered, Disposition, ErrorKind, SessionConfig,
    SessionError, Stage, Timeouts, TlsInfo, TlsMode, Transaction,
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

/// Where a group of recipients goes, and what the message needs there.
struct Destination {
    /// The recipient domain, or the relay's name.
    label: String,
    /// The recipient domain the requirements were worked out for.
    domain: String,
    /// Every recipient domain of the group, for logs (through a relayhost
    /// a group may hold several).
    domains: Vec<String>,
    /// The relay, when one is configured.
    relay: bool,
    /// The message's requirements for this destination.
    req: Requirements,
}

/// Delivers queued messages.
pub struct Agent {
    config: Config,
    router: Router,
    /// A resolver without validation, used for the whole run when
    /// validation was found not working, so that mail which does not need
    /// DNSSEC still goes out.
    fallback: Option<Router>,
    dnssec: OnceCell<Dnssec>,
    roots: Arc<rustls::RootCertStore>,
    credentials: Option<(String, String)>,
    /// Addresses whose last connection failed, and when: they are not
    /// dialled again for [`UNREACHABLE_FOR`], so that a dead MX host costs
    /// one timeout per run, not one per message (RFC 5321 §4.5.4.1 asks
    /// for a per-host memory of failures).
    unreachable: Mutex<HashMap<Address, Instant>>,
    /// One connection attempt at a time per address, so that parallel
    /// deliveries to a dead address learn from the first one.
    dialling: Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>,
    /// Sessions in progress per destination, bounded by
    /// `max_connections_per_destination`.
    per_destination: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Idle connections, by address and plan, for the next message to the
    /// same host.
    idle: Mutex<HashMap<String, Vec<IdleConnection>>>,
}

/// An open connection waiting for its next transaction, and since when.
type IdleConnection = (Connection<tokio::net::TcpStream>, Instant);

/// How long an idle connection is kept for reuse (well under the 5
/// minutes a server waits for the next command, RFC 5321 §4.5.3.2.7).
const IDLE_FOR: Duration = Duration::from_secs(10);

/// An address and port dialled for SMTP.
type Address = (IpAddr, u16);

/// How long an address that refused or timed out a connection is left
/// alone.
const UNREACHABLE_FOR: Duration = Duration::from_secs(300);

impl Agent {
    /// Builds an agent from the configuration: resolver, trusted roots
    /// (the system's and `[tls] ca_file`), and relay credentials.
    pub fn new(config: Config) -> Result<Self, SetupError> {
        let router = Router::new(&config)?;
        let fallback = if router.validating() {
            let mut plain = config.clone();
            plain.dnssec = DnssecMode::Off;
            Some(Router::new(&plain)?)
        } else {
            None
        };
        let roots = Arc::new(load_roots(config.ca_file.as_deref())?);
        let credentials = match (&config.relayhost, Secrets::load(&config.secrets_file)?) {
            (Some(_), Some(s)) => s.relay_user.zip(s.relay_password),
            _ => None,
        };
        Ok(Self {
            config,
            router,
            fallback,
            dnssec: OnceCell::new(),
            roots,
            credentials,
            unreachable: Mutex::new(HashMap::new()),
            dialling: Mutex::new(HashMap::new()),
            per_destination: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether DNSSEC validation works, checked once per agent (that is,
    /// per queue run): the trust anchor's DNSKEY RRset must come back
    /// secure. When it does not, mail that needs DNSSEC waits with a reason
    /// that says so, and other mail goes out through a resolver that does
    /// not validate.
    pub async fn dnssec(&self) -> &Dnssec {
        self.dnssec
            .get_or_init(|| async {
                if !self.router.validating() {
                    return Dnssec::Off;
                }
                match self.router.check_validation().await {
                    Ok(()) => Dnssec::Working,
                    Err(e) => {
                        tracing::error!(error = %e,
                            "DNSSEC validation is not working (the trust anchor's DNSKEY records \
                             did not validate: no DNS access, a resolver that strips DNSSEC \
                             records, or a wrong trust_anchor): mail that needs DNSSEC \
                             (REQUIRETLS to MX hosts, DANE required) waits; other mail goes out \
                             without it");
                        Dnssec::Broken(e.to_string())
                    }
                }
            })
            .await
    }

    /// The resolver for this run.
    pub async fn router(&self) -> &Router {
        match (self.dnssec().await, &self.fallback) {
            (Dnssec::Broken(_), Some(fallback)) => fallback,
            _ => &self.router,
        }
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

    /// Gives up on the recipients still pending once the message has been
    /// queued longer than its lifetime (`max_queue_lifetime`, or
    /// `bounce_queue_lifetime` for reports; RFC 5321 §4.5.4.1). A
    /// REQUIRETLS message fails with 5.7.10 (RFC 8689 §4.2.1: no host
    /// could be reached with the protection it needs), others with 5.4.7
    /// (RFC 3463: delivery time expired).
    pub fn expire(&self, entry: &mut QueueEntry, now: i64) {
        let lifetime = crate::reports::lifetime(&self.config, &entry.envelope);
        if now < entry.envelope.arrival.saturating_add(lifetime) {
            return;
        }
        let status = if entry.envelope.security.requiretls {
            "5.7.10"
        } else {
            "5.4.7"
        };
        let days = lifetime / 86400;
        let pending: Vec<usize> = entry.pending().collect();
        for i in pending {
            let rcpt = &mut entry.recipients[i];
            let mut result = rcpt
                .last
                .clone()
                .unwrap_or_else(|| result_without_host(status, String::new()));
            result.detail = if result.detail.is_empty() {
                format!("gave up after {days} days in the queue")
            } else {
                format!(
                    "gave up after {days} days in the queue; last: {}",
                    result.detail
                )
            };
            result.status = status.into();
            rcpt.status = RecipientStatus::Failed;
            tracing::info!(queue_id = %entry.envelope.id, to = %rcpt.address, status,
                detail = %result.detail, "failed");
            rcpt.last = Some(result);
        }
    }

    /// Exponential backoff from `retry_min`, capped at `retry_max`, with up to a tenth of random jitter either way, so that messages
    /// deferred together do not all come back at the same moment.
    fn retry_delay(&self, attempts: u32) -> i64 {
        let min = self.config.retry_min.as_secs();
        let max = self.config.retry_max.as_secs();
        let factor = 1u64 << attempts.saturating_sub(1).min(20);
        let base = min.saturating_mul(factor).min(max);
        let spread = base / 10;
        let jittered = base - spread + fastrand::u64(0..=spread.saturating_mul(2));
        i64::try_from(jittered.max(1)).unwrap_or(i64::MAX)
    }

    /// Pending recipients grouped by destination: by recipient domain for
    /// MX delivery; through a relayhost, by the requirements that apply
    /// (rules and levels may differ between recipient domains), so that
    /// recipients with the same needs share one transaction.
    fn groups(&self, entry: &QueueEntry) -> Vec<(Destination, Vec<usize>)> {
        let env = &entry.envelope;
        let mut groups: Vec<(Destination, Vec<usize>)> = Vec::new();
        for i in entry.pending() {
            let address = &entry.recipients[i].address;
            let domain = address
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase();
            let relay = self.config.relayhost.as_ref();
            let req = policy::requirements(
                &env.security,
                &self.config,
                &env.sender,
                &domain,
                relay.is_some(),
            );
            let same = |d: &Destination| match relay {
                Some(_) => d.req == req,
                None => d.domain == domain,
            };
            if let Some((d, members)) = groups.iter_mut().find(|(d, _)| same(d)) {
                members.push(i);
                if !d.domains.contains(&domain) {
                    d.domains.push(domain);
                }
                continue;
            }
            let label = relay.map_or_else(|| domain.clone(), |r| r.host.clone());
            let destination = Destination {
                label,
                domains: vec![domain.clone()],
                domain,
                relay: relay.is_some(),
                req,
            };
            groups.push((destination, vec![i]));
        }
        groups
    }

    async fn hosts_for(
        &self,
        router: &Router,
        destination: &Destination,
    ) -> Result<(MxSet, u16), RouteError> {
        match (&self.config.relayhost, destination.relay) {
            (Some(relay), true) if !relay.mx_lookup => Ok((
                MxSet {
                    hosts: vec![MxHost {
                        name: relay.host.clone(),
                        preference: 0,
                        implicit: false,
                    }],
                    security: Security::Insecure,
                },
                relay.port,
            )),
            (Some(relay), true) => Ok((router.mx_hosts(&relay.host).await?, relay.port)),
            _ => Ok((
                router.mx_hosts(&destination.label).await?,
                self.config.smtp_port,
            )),
        }
    }

    /// Tries the hosts of one destination in order until one session gives
    /// a verdict for the recipients. Each host is first put through the
    /// [policy](crate::policy): a host the message cannot use is passed
    /// over (RFC 8689 §4.2.1: try every MX host in turn; RFC 7672 §2.2:
    /// MX preference wins over security).
    async fn deliver_group(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        indexes: &[usize],
        message: &[u8],
    ) -> Vec<Verdict> {
        let dnssec = self.dnssec().await;
        let router = self.router().await;
        let req = &destination.req;
        let slots = self
            .per_destination
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(destination.label.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.config.max_connections_per_destination,
                ))
            })
            .clone();
        let _slot = slots.acquire_owned().await;
        if req.tls_optional {
            tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domain,
                "TLS-Required: No: the sender asked to set the recipient's TLS policy aside \
                 (RFC 8689 §4.2.2)");
        }
        let (mx, port) = match self.hosts_for(router, destination).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domains.join(","),
                    error = %e, "routing failed");
                return uniform(indexes.len(), route_verdict(&e));
            }
        };
        let mx_secure = mx.security == Security::Secure;
        let specs: Vec<RecipientSpec> = indexes.iter().map(|&i| recipient_spec(entry, i)).collect();
        let mut outcomes = Outcomes::default();
        for host in &mx.hosts {
            let addresses = match router.addresses(&host.name, self.config.ip_family).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domains.join(","),
                        mx = %host.name, error = %e, "no usable address");
                    outcomes.add(route_verdict(&e).into_transient(), false);
                    continue;
                }
            };
            let address_secure = addresses.security == Security::Secure;
            let trusted_name = destination.relay || mx_secure;
            let tlsa = self
                .host_tlsa(router, req, trusted_name, host, &addresses, port)
                .await;
            let facts = HostFacts {
                host: &host.name,
                recipient_domain: &destination.domain,
                mx_secure: trusted_name,
                address_secure,
                tlsa,
                dnssec,
                relay_tls: destination.relay.then_some(self.config.relayhost_tls),
            };
            let protection = Protection {
                mx_dnssec: if destination.relay {
                    address_secure
                } else {
                    mx_secure
                },
                verification: "none".into(),
                policy: String::new(),
                requiretls: false,
                tls_required_no: req.tls_optional,
            };
            let plan = match policy::decide(req, &facts) {
                HostDecision::Use(plan) => plan,
                HostDecision::Skip(refusal) => {
                    tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domains.join(","),
                        mx = %host.name, status = refusal.status, reason = %refusal.reason,
                        "host not used for this message");
                    outcomes.add(
                        refusal_verdict(&refusal, host, protection),
                        refusal.permanent,
                    );
                    continue;
                }
            };
            let protection = Protection {
                policy: plan.basis.into(),
                ..protection
            };
            let mut tried = false;
            for &ip in &addresses.ips {
                if !self.family_allowed(ip) {
                    continue;
                }
                tried = true;
                let target = Target {
                    host,
                    ip,
                    port,
                    plan: &plan,
                    protection: &protection,
                };
                match self
                    .attempt(entry, destination, &target, &specs, message)
                    .await
                {
                    Attempt::Final(verdicts) => {
                        return self
                            .more_transactions(
                                entry,
                                destination,
                                &target,
                                &specs,
                                message,
                                verdicts,
                            )
                            .await
                    }
                    Attempt::TryNext(verdict, structural) => outcomes.add(*verdict, structural),
                }
            }
            if !tried {
                outcomes.add(
                    Verdict {
                        status: RecipientStatus::Pending,
                        result: result_without_host(
                            "4.4.4",
                            format!("{}: no address usable from here", host.name),
                        ),
                    },
                    false,
                );
            }
        }
        outcomes.finish(indexes.len())
    }

    /// What the policy needs to know about a host's TLSA records: looked
    /// up where DANE can apply ([`policy::wants_tlsa`]). While DNSSEC
    /// validation is not working nothing is secure, but a host that
    /// publishes TLSA records still asks for DANE: such a host is reported
    /// as [`TlsaState::Unvalidated`] so that its mail waits instead of
    /// going out without DANE (an attacker who blocks validation must not
    /// turn DANE off).
    async fn host_tlsa(
        &self,
        router: &Router,
        req: &Requirements,
        trusted_name: bool,
        host: &MxHost,
        addresses: &Addresses,
        port: u16,
    ) -> TlsaState {
        let address_secure = addresses.security == Security::Secure;
        if policy::wants_tlsa(req, trusted_name, address_secure) {
            return self.tlsa_state(router, host, addresses, port).await;
        }
        let broken = matches!(self.dnssec().await, Dnssec::Broken(_));
        if broken && policy::wants_tlsa(req, true, true) && host.name.parse::<IpAddr>().is_err() {
            return match router.tlsa(&host.name, port).await {
                Ok(answer) if !answer.records.is_empty() => TlsaState::Unvalidated,
                Ok(_) => TlsaState::NotLooked,
                Err(e) => TlsaState::Failed(e.to_string()),
            };
        }
        TlsaState::NotLooked
    }

    /// The TLSA records for a host (RFC 7672 §2.2.2, §2.2.3): the
    /// CNAME-expanded name first, when the expansion was secure, then the
    /// original name; the first secure non-empty RRset gives the base
    /// domain. Any lookup failure makes the host unusable for DANE.
    async fn tlsa_state(
        &self,
        router: &Router,
        host: &MxHost,
        addresses: &Addresses,
        port: u16,
    ) -> TlsaState {
        let mut candidates = Vec::with_capacity(2);
        if addresses.canonical != host.name && addresses.security == Security::Secure {
            candidates.push(addresses.canonical.clone());
        }
        candidates.push(host.name.clone());
        for base in candidates {
            match router.tlsa(&base, port).await {
                Ok(answer) if answer.security == Security::Secure && !answer.records.is_empty() => {
                    return TlsaState::Secure {
                        usable: dane::usable(&answer.records),
                        base,
                    };
                }
                Ok(_) => {}
                Err(e) => return TlsaState::Failed(e.to_string()),
            }
        }
        TlsaState::None
    }

    fn family_allowed(&self, ip: IpAddr) -> bool {
        match self.config.bind_address {
            Some(bind) => bind.is_ipv4() == ip.is_ipv4(),
            None => true,
        }
    }

    /// One connection to one address, with a plaintext retry where the
    /// plan allows it.
    async fn attempt(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        target: &Target<'_>,
        specs: &[RecipientSpec],
        message: &[u8],
    ) -> Attempt {
        let result = self
            .with_plaintext_retry(target.plan, |mode| {
                self.session(entry, destination, target, specs, message, mode)
            })
            .await;
        match result {
            Ok(d) => Attempt::Final(verdicts_from(&d, target)),
            Err(e) => failed_attempt(target, &e, specs.len()),
        }
    }

    /// Connects and runs one SMTP session, logging one line for it.
    async fn session(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        target: &Target<'_>,
        specs: &[RecipientSpec],
        message: &[u8],
        tls_mode: TlsMode,
    ) -> Result<Delivered, SessionError> {
        let started = Instant::now();
        let plan = target.plan;
        let cfg = self.session_config(plan, tls_mode, destination.relay);
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
            requiretls: plan.requiretls,
        };
        // An idle connection to the same address, opened with the same
        // plan, carries the message (a connection opened for opportunistic
        // mail never carries a message that needs more: the plan is the
        // key). A server that closed it in the meantime makes the first
        // command fail; then a fresh connection is opened.
        let pool_key = format!(
            "{}|{}|{}|{tls_mode:?}|{plan:?}",
            target.ip, target.port, destination.relay
        );
        {
            while let Some(mut conn) = self.take_idle(&pool_key) {
                let result = conn.send(&txn).await;
                // A connection the server closed or gave up on while idle
                // fails at its RSET, before anything of this message was
                // sent: a fresh connection takes the message.
                let stale = result.is_err() && conn.reset_failed();
                if stale {
                    continue;
                }
                if conn.is_usable() {
                    self.put_idle(pool_key.clone(), conn);
                }
                tracing::debug!(queue_id = %entry.id(), mx = %target.host.name, ip = %target.ip,
                    "transaction on a reused connection");
                log_attempt(entry, destination, target, &result, started);
                return result;
            }
        }
        let key = (target.ip, target.port);
        let gate = self
            .dialling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let dialling = gate.lock().await;
        if let Some(since) = self.recently_unreachable(key) {
            let e = std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "not dialled: the last connection failed {}s ago",
                    since.as_secs()
                ),
            );
            let result = Err(SessionError::new(
                Stage::Connect,
                target.host.name.clone(),
                ErrorKind::Io(e),
            ));
            log_attempt(entry, destination, target, &result, started);
            return result;
        }
        let result = match connect::connect(
            target.ip,
            target.port,
            self.config.bind_address,
            self.config.connect_timeout,
        )
        .await
        {
            Ok(stream) => {
                self.lock_unreachable().remove(&key);
                drop(dialling);
                match smtp::establish(stream, cfg).await {
                    Ok(mut conn) => {
                        let result = conn.send(&txn).await;
                        if conn.is_usable() {
                            self.put_idle(pool_key, conn);
                        }
                        result
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                self.lock_unreachable().insert(key, Instant::now());
                drop(dialling);
                Err(SessionError::new(
                    Stage::Connect,
                    target.host.name.clone(),
                    ErrorKind::Io(e),
                ))
            }
        };
        log_attempt(entry, destination, target, &result, started);
        result
    }
}

impl Agent {
    /// An idle connection for `key` that is not too old.
    fn take_idle(&self, key: &str) -> Option<Connection<tokio::net::TcpStream>> {
        let mut pool = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = pool.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, key: String, conn: Connection<tokio::net::TcpStream>) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push((conn, Instant::now()));
    }

    /// Ends every idle connection with QUIT (at the end of a run).
    pub async fn close_idle(&self) {
        let all: Vec<_> = {
            let mut pool = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pool.drain().flat_map(|(_, list)| list).collect()
        };
        for (conn, _) in all {
            conn.quit().await;
        }
    }

    fn lock_unreachable(&self) -> std::sync::MutexGuard<'_, HashMap<Address, Instant>> {
        self.unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long ago a connection to `key` failed, when that is recent.
    fn recently_unreachable(&self, key: Address) -> Option<Duration> {
        let mut map = self.lock_unreachable();
        let since = map.get(&key)?.elapsed();
        if since < UNREACHABLE_FOR {
            Some(since)
        } else {
            map.remove(&key);
            None
        }
    }

    /// RFC 5321 §4.5.3.1.10: a server may take fewer recipients per
    /// transaction than it is given, answering the rest with 452. When it
    /// took some, the rest go in further transactions to the same address
    /// at once, until it takes none.
    async fn more_transactions(
        &self,
        entry: &QueueEntry,
        destination: &Destination,
        target: &Target<'_>,
        specs: &[RecipientSpec],
        message: &[u8],
        mut verdicts: Vec<Verdict>,
    ) -> Vec<Verdict> {
        loop {
            let too_many: Vec<usize> = verdicts
                .iter()
                .enumerate()
                .filter(|(_, v)| {
                    v.status == RecipientStatus::Pending
                        && v.result
                            .reply
                            .as_deref()
                            .is_some_and(|r| r.starts_with("452"))
                })
                .map(|(i, _)| i)
                .collect();
            let took_some = verdicts
                .iter()
                .any(|v| v.status == RecipientStatus::Delivered);
            if too_many.is_empty() || !took_some || too_many.len() == specs.len() {
                return verdicts;
            }
            let rest: Vec<RecipientSpec> = too_many.iter().map(|&i| specs[i].clone()).collect();
            tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domains.join(","),
                recipients = rest.len(), "further transaction for recipients refused with 452");
            let Attempt::Final(next) = self
                .attempt(entry, destination, target, &rest, message)
                .await
            else {
                return verdicts;
            };
            let progressed = next.iter().any(|v| v.status != RecipientStatus::Pending);
            for (slot, verdict) in too_many.iter().zip(next) {
                verdicts[*slot] = verdict;
            }
            if !progressed {
                return verdicts;
            }
        }
    }

    /// The session configuration for a plan: SNI and DANE records from the
    /// plan (none in plaintext), relay credentials only for the relayhost.
    fn session_config(&self, plan: &TlsPlan, tls_mode: TlsMode, relay: bool) -> SessionConfig {
        let dane = match (&plan.authentication, tls_mode) {
            (_, TlsMode::Plaintext) => None,
            (Authentication::Dane { records, names }, _) => Some(DaneAuth {
                records: records.clone(),
                names: names.clone(),
            }),
            _ => None,
        };
        SessionConfig {
            ehlo_name: self.config.hostname.clone(),
            tls_mode,
            server_name: plan.server_name.clone(),
            roots: self.roots.clone(),
            credentials: if relay {
                self.credentials.clone()
            } else {
                None
            },
            timeouts: Timeouts {
                greeting: self.config.command_timeout,
                command: self.config.command_timeout,
                ..Timeouts::default()
            },
            dane,
            min_version: plan.min_version,
        }
    }

    /// The first session per [`tls_mode`], then, when the plan allows it
    /// and the handshake failed, one more in plaintext on a new connection
    /// (RFC 3207 §4.1 leaves the fallback to the client; RFC 7672 §2.2 and
    /// RFC 8689 §4.2.1 forbid it for DANE and REQUIRETLS, which the plan
    /// reflects).
    async fn with_plaintext_retry<T, F, Fut>(
        &self,
        plan: &TlsPlan,
        run: F,
    ) -> Result<T, SessionError>
    where
        F: Fn(TlsMode) -> Fut,
        Fut: std::future::Future<Output = Result<T, SessionError>>,
    {
        let mode = tls_mode(plan);
        match run(mode).await {
            Err(e)
                if mode == TlsMode::Opportunistic
                    && plan.plaintext_retry
                    && e.is_tls_handshake_failure() =>
            {
                run(TlsMode::Plaintext).await
            }
            other => other,
        }
    }
}

/// One host and address to try, and how.
struct Target<'a> {
    host: &'a MxHost,
    ip: IpAddr,
    port: u16,
    plan: &'a TlsPlan,
    /// What the policy knew before connecting (DNSSEC, plan).
    protection: &'a Protection,
}

/// The session's TLS mode for a plan.
fn tls_mode(plan: &TlsPlan) -> TlsMode {
    match plan.starttls {
        StartTls::Never => TlsMode::Plaintext,
        StartTls::Opportunistic => TlsMode::Opportunistic,
        StartTls::Implicit => TlsMode::Implicit,
        StartTls::Required => match (&plan.authentication, plan.enforce) {
            (Authentication::None, _) | (_, false) => TlsMode::RequiredUnverified,
            _ => TlsMode::RequiredVerified,
        },
    }
}

/// The results of the hosts tried for one destination, when none gave a
/// final verdict.
#[derive(Default)]
struct Outcomes {
    /// The first structural refusal, reported when every host was refused
    /// that way.
    first_structural: Option<Verdict>,
    /// The latest transient result.
    last: Option<Verdict>,
    /// Some host failed in a way a retry may cure.
    any_transient: bool,
}

impl Outcomes {
    fn add(&mut self, verdict: Verdict, structural: bool) {
        if structural {
            self.first_structural.get_or_insert(verdict);
        } else {
            self.any_transient = true;
            self.last = Some(verdict);
        }
    }

    /// RFC 8689 §4.2.1 with the split of transient and structural failures:
    /// when every host was refused structurally (none offers REQUIRETLS,
    /// the MX cannot be validated), the recipients fail now; otherwise
    /// they wait for the next run.
    fn finish(self, n: usize) -> Vec<Verdict> {
        let verdict = match (self.first_structural, self.any_transient, self.last) {
            (Some(mut v), false, _) => {
                v.status = RecipientStatus::Failed;
                v
            }
            // Some host may still work later; the structural reason, when
            // there is one, says more than a connection failure elsewhere.
            (Some(v), true, _) => v.into_transient(),
            (None, _, Some(last)) => last.into_transient(),
            (None, _, None) => Verdict {
                status: RecipientStatus::Pending,
                result: result_without_host("4.4.4", "no usable address for any MX host".into()),
            },
        };
        uniform(n, verdict)
    }
}

/// A failed session: a permanent refusal of the sender or the message ends
/// the attempt for every recipient; a missing REQUIRETLS is structural for
/// this host (the next host may have it); anything else moves on to the
/// next address.
fn failed_attempt(target: &Target<'_>, e: &SessionError, n: usize) -> Attempt {
    let permanent = e.disposition() == Disposition::Permanent;
    let mut protection = target.protection.clone();
    protection.requiretls = target.plan.requiretls;
    let result = AttemptResult {
        at: now(),
        host: Some(target.host.name.clone()),
        ip: Some(target.ip.to_string()),
        tls: None,
        reply: e.reply().map(|r| r.text()),
        status: status_of_error(e),
        detail: e.to_string(),
        protection: Some(protection),
        remote_dsn: false,
    };
    let verdict = |status| Verdict { status, result };
    match &e.kind {
        ErrorKind::RequireTlsNotOffered => {
            Attempt::TryNext(Box::new(verdict(RecipientStatus::Pending)), true)
        }
        _ if permanent && ends_transaction(e) => {
            Attempt::Final(uniform(n, verdict(RecipientStatus::Failed)))
        }
        _ => Attempt::TryNext(Box::new(verdict(RecipientStatus::Pending)), false),
    }
}

fn refusal_verdict(refusal: &Refusal, host: &MxHost, protection: Protection) -> Verdict {
    Verdict {
        status: RecipientStatus::Pending,
        result: AttemptResult {
            at: now(),
            host: Some(host.name.clone()),
            ip: None,
            tls: None,
            reply: None,
            status: refusal.status.into(),
            detail: refusal.reason.clone(),
            protection: Some(protection),
            remote_dsn: false,
        },
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
    /// This address gave no verdict; the reason, if nothing better follows,
    /// and whether it is structural (see [`Outcomes`]).
    TryNext(Box<Verdict>, bool),
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
        remote_dsn: false,
    }
}

/// Per-recipient verdicts from a completed session.
fn verdicts_from(d: &Delivered, target: &Target<'_>) -> Vec<Verdict> {
    let tls = Some(tls_summary(d.tls.as_ref()));
    let protection = Protection {
        verification: verification_of(d.tls.as_ref()).into(),
        requiretls: target.plan.requiretls,
        ..target.protection.clone()
    };
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
                    host: Some(target.host.name.clone()),
                    ip: Some(target.ip.to_string()),
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
                    protection: Some(protection.clone()),
                    remote_dsn: d.capabilities.dsn,
                },
            }
        })
        .collect()
}

/// The authentication method a session achieved: `dane-ee`, `dane-ta`,
/// `pkix`, or `none`.
fn verification_of(tls: Option<&TlsInfo>) -> &'static str {
    match tls.map(|t| &t.verification) {
        Some(CertVerification::Verified(method)) => method.as_str(),
        _ => "none",
    }
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
    // RFC 3463 and the RFC 5248 registry: X.7.30 REQUIRETLS support
    // required (RFC 8689 §7), X.7.10 encryption needed, X.7.5
    // cryptographic failure.
    match &e.kind {
        ErrorKind::RequireTlsNotOffered => return "5.7.30".into(),
        ErrorKind::EightBitNotOffered => return "5.6.3".into(),
        ErrorKind::SmtpUtf8NotOffered => return "5.6.7".into(),
        ErrorKind::StartTlsNotOffered | ErrorKind::RequireTlsUnverified { .. } => {
            return "4.7.10".into()
        }
        ErrorKind::CertificateRejected { .. } | ErrorKind::Tls(_) => return "4.7.5".into(),
        _ => {}
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

/// The one line per connection attempt: where, how protected, and what
/// the server said.
fn log_attempt(
    entry: &QueueEntry,
    destination: &Destination,
    target: &Target<'_>,
    result: &Result<Delivered, SessionError>,
    started: Instant,
) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let mx = &target.host.name;
    let ip = target.ip;
    let mx_dnssec = target.protection.mx_dnssec;
    let policy = target.plan.basis;
    let requiretls = target.plan.requiretls;
    match result {
        Ok(d) => {
            let tls = tls_summary(d.tls.as_ref());
            let verification = verification_of(d.tls.as_ref());
            let reply = d
                .data_reply
                .as_ref()
                .or_else(|| d.recipients.first().map(|r| &r.rcpt_reply))
                .map(|r| r.text())
                .unwrap_or_default();
            let accepted = d.recipients.iter().filter(|r| r.accepted).count();
            tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domains.join(","), %mx, %ip,
                mx_dnssec, policy, tls = %tls.version, cipher = %tls.cipher,
                certificate = %tls.certificate, verification, requiretls, accepted,
                recipients = d.recipients.len(), %reply, elapsed_ms, "delivery attempt");
        }
        Err(e) => {
            let reply = e.reply().map(|r| r.text()).unwrap_or_default();
            tracing::info!(queue_id = %entry.id(), rcpt_domain = %destination.domains.join(","), %mx, %ip,
                mx_dnssec, policy, requiretls, stage = %e.stage, disposition = ?e.disposition(),
                %reply, error = %e, elapsed_ms, "delivery attempt failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_to_the_cap_with_a_tenth_of_jitter() {
        let config = Config::from_toml(
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\ndnssec = \"off\"\n",
            None,
        )
        .unwrap();
        let agent = Agent::new(config).unwrap();
        for (attempts, base) in [
            (1, 300),
            (2, 600),
            (3, 1200),
            (4, 2400),
            (5, 3600),
            (9, 3600),
        ] {
            for _ in 0..50 {
                let d = agent.retry_delay(attempts);
                assert!(
                    (base - base / 10..=base + base / 10).contains(&d),
                    "attempt {attempts}: {d}"
                );
            }
        }
    }
}
