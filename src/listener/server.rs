//! `smarthost serve`: the daemon. It holds the queue for its lifetime,
//! listens on `[listen] addresses`, runs a [`Session`] per connection
//! within the connection limits, and delivers: at once after each accepted
//! message, and otherwise every few seconds (mail dropped by `sendmail`,
//! retries that came due).
//!
//! SIGTERM (and SIGINT): stop accepting, let open transactions finish
//! (idle sessions get 421), stop delivering, exit 0. SIGHUP: read the
//! configuration, the certificate and the auth file again; on an error the
//! old ones stay in force.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, error, info, warn};

use super::auth::{AuthFileError, Credentials};
use super::session::{Client, Session, SessionEnd, Settings};
use super::tls::{self as listener_tls, CertError};
use super::Maildrop;
use crate::config::{Config, ConfigError};
use crate::delivery::run as queue_run;
use crate::delivery::{Agent, SetupError};
use crate::queue::{Queue, QueueDir, QueueError};

/// How often the maildrop and the retry schedule are looked at when no
/// message arrived through the listener.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// How often records of finished messages past their retention are removed.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// How long deliveries in progress may go on after SIGTERM.
const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The queue could not be opened (another process may hold it).
    #[error("{0}")]
    Queue(#[from] QueueError),
    /// The STARTTLS certificate is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The auth file is unusable.
    #[error(transparent)]
    Auth(#[from] AuthFileError),
    /// Delivery could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No address could be bound.
    #[error("no [listen] address could be bound")]
    NoListener,
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl ServeError {
    /// True for errors of the configuration or the files it names.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Cert(_) | Self::Auth(_) | Self::Setup(SetupError::Config(_))
        )
    }
}

/// What a reload replaces.
struct Live {
    settings: RwLock<Arc<Settings>>,
    agent: RwLock<Arc<Agent>>,
}

impl Live {
    fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn agent(&self) -> Arc<Agent> {
        self.agent.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Takes the queue; while a queue run holds it, waits for it to finish
/// (it exits once the maildrop is empty).
async fn open_queue(dir: &QueueDir) -> Result<Queue, ServeError> {
    let mut logged = false;
    loop {
        match Queue::open(dir) {
            Ok(q) => return Ok(q),
            Err(e) if e.is_busy() => {
                if !logged {
                    info!("another smarthost process holds the queue; waiting for it to finish");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Builds the session settings from the configuration.
fn settings_for(config: &Config, dir: &QueueDir) -> Result<Settings, ServeError> {
    let (cert, key) = listener_tls::certificate_files(config, dir)?;
    let tls = listener_tls::server_config(&cert, &key)?;
    let credentials = match &config.listen.auth_file {
        Some(path) => Some(Arc::new(Credentials::load(path)?)),
        None => None,
    };
    Ok(Settings {
        hostname: config.hostname.clone(),
        domain: config.domain.clone(),
        max_message_size: config.max_message_size,
        listen: config.listen.clone(),
        tls: Some(tls),
        credentials,
    })
}

/// Open connections per client address.
#[derive(Default)]
struct PerClient {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Binds every configured address. An IPv6 address that cannot be bound
/// because the host has no IPv6 is skipped with a log line.
async fn bind_all(addresses: &[SocketAddr]) -> Result<Vec<TcpListener>, ServeError> {
    let mut listeners = Vec::new();
    for &addr in addresses {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                info!(address = %addr, "listening");
                listeners.push(l);
            }
            Err(e) if addr.is_ipv6() && no_ipv6(&e) => {
                warn!(address = %addr, error = %e, "IPv6 is not available on this host; address skipped");
            }
            Err(source) => return Err(ServeError::Bind { addr, source }),
        }
    }
    if listeners.is_empty() {
        return Err(ServeError::NoListener);
    }
    Ok(listeners)
}

fn no_ipv6(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::AddrNotAvailable
        || e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
}

/// Everything the accept loops share.
struct Front {
    live: Arc<Live>,
    dir: QueueDir,
    wake: Arc<Notify>,
    total: Arc<Semaphore>,
    max_total: usize,
    per_client: Arc<PerClient>,
    shutdown: watch::Receiver<bool>,
}

/// Runs the daemon until SIGTERM. `reload` reads the configuration again
/// (for SIGHUP).
pub async fn serve(
    config: Config,
    reload: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
) -> Result<(), ServeError> {
    let dir = QueueDir::locate(&config)?;
    let queue = Arc::new(open_queue(&dir).await?);
    let settings = settings_for(&config, &dir)?;
    let agent = Arc::new(Agent::new(config.clone())?);
    let listeners = bind_all(&config.listen.addresses).await?;
    let live = Arc::new(Live {
        settings: RwLock::new(Arc::new(settings)),
        agent: RwLock::new(agent),
    });
    let (shutdown_tx, shutdown) = watch::channel(false);
    let front = Arc::new(Front {
        live: live.clone(),
        dir: dir.clone(),
        wake: Arc::new(Notify::new()),
        total: Arc::new(Semaphore::new(config.listen.max_connections)),
        max_total: config.listen.max_connections,
        per_client: Arc::new(PerClient::default()),
        shutdown: shutdown.clone(),
    });
    // LIMITATION: `addresses`, `max_connections` and
    // `max_connections_per_client` are read at start only; SIGHUP
    // reloads everything else.
    let per_client_limit = config.listen.max_connections_per_client;
    let mut accept_tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        accept_tasks.spawn(accept_loop(listener, front.clone(), per_client_limit));
    }
    crate::queue::admin::announce_daemon(queue.dir());
    let delivery = tokio::spawn(delivery_loop(
        queue.clone(),
        live.clone(),
        front.wake.clone(),
        shutdown.clone(),
    ));
    info!(queue = %dir.root().display(), "smarthost serve started");
    wait_for_stop(&dir, &live, reload).await?;
    info!("SIGTERM: no new connections; finishing open transactions");
    let _ = shutdown_tx.send(true);
    accept_tasks.shutdown().await;
    finish_sessions(&front, &config).await;
    let _ = delivery.await;
    if let Err(e) = queue.write_snapshot() {
        warn!(error = %e, "cannot write the queue listing");
    }
    info!("smarthost serve stopped");
    Ok(())
}

/// Waits for every session to end (each takes one connection permit),
/// at most as long as one transaction may take.
async fn finish_sessions(front: &Front, config: &Config) {
    let limit = config.listen.command_timeout + config.listen.data_timeout;
    let all = u32::try_from(front.max_total).unwrap_or(u32::MAX);
    if tokio::time::timeout(limit, front.total.acquire_many(all))
        .await
        .is_err()
    {
        warn!("sessions still open at exit were cut off");
    }
}

/// Handles SIGHUP until SIGTERM or SIGINT arrives.
async fn wait_for_stop(
    dir: &QueueDir,
    live: &Live,
    reload: impl Fn() -> Result<Config, ConfigError>,
) -> Result<(), ServeError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => reload_now(dir, live, &reload),
        }
    }
}

fn reload_now(dir: &QueueDir, live: &Live, reload: &impl Fn() -> Result<Config, ConfigError>) {
    let config = match reload() {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "SIGHUP: configuration not reloaded; the old one stays in force");
            return;
        }
    };
    let settings = match settings_for(&config, dir) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "SIGHUP: configuration not reloaded; the old one stays in force");
            return;
        }
    };
    let agent = match Agent::new(config) {
        Ok(a) => a,
        Err(e) => {
            error!(error = %e, "SIGHUP: configuration not reloaded; the old one stays in force");
            return;
        }
    };
    *live.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    *live.agent.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(agent);
    info!("SIGHUP: configuration, certificate and auth file reloaded");
}

async fn accept_loop(listener: TcpListener, front: Arc<Front>, per_client_limit: usize) {
    let mut shutdown = front.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => admit(stream, peer, &front, per_client_limit),
            Err(e) => {
                // EMFILE and the like: wait a little instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Starts a session for a new connection, or turns it away with 421 when
/// a connection limit is reached.
fn admit(stream: TcpStream, peer: SocketAddr, front: &Arc<Front>, per_client_limit: usize) {
    let total = front.total.clone().try_acquire_owned().ok();
    let slot = front.per_client.take(peer.ip(), per_client_limit);
    let (Some(permit), Some(slot)) = (total, slot) else {
        warn!(client = %peer.ip(), "connection limit reached; turned away");
        tokio::spawn(turn_away(stream));
        return;
    };
    let settings = front.live.settings();
    let allowed = settings.listen.allow.iter().any(|n| n.contains(peer.ip()));
    let sink = Arc::new(Maildrop::new(front.dir.clone(), Some(front.wake.clone())));
    let shutdown = front.shutdown.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _slot = slot;
        debug!(client = %peer, relay_allowed = allowed, "connection");
        let mut session =
            Session::new(stream, settings, Client::Tcp(peer), allowed, sink, shutdown);
        match session.run().await {
            Ok(()) | Err(SessionEnd::Closed | SessionEnd::Shutdown) => {}
            Err(e) => info!(client = %peer, error = %e, "session ended"),
        }
    });
}

async fn turn_away(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n"),
    )
    .await;
    let _ = stream.shutdown().await;
}

/// Resolves when an administrator's request is waiting in `control/`
/// (looked for every quarter second), so the daemon answers quickly.
async fn control_request(queue: &Queue) {
    let control = queue.dir().root().join("control");
    loop {
        let waiting = std::fs::read_dir(&control).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".request"))
        });
        if waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A fresh delivery agent with the same configuration, so that the
/// DNSSEC self-check (made once per agent, as once per `queue run`) is
/// made again every hour in a long-running daemon.
fn renew_agent(live: &Live) {
    let config = live.agent().config().clone();
    match Agent::new(config) {
        Ok(agent) => *live.agent.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(agent),
        Err(e) => warn!(error = %e, "cannot renew the delivery agent; the current one stays"),
    }
}

/// Delivers what is due, then waits for a new message, the poll interval
/// or shutdown.
async fn delivery_loop(
    queue: Arc<Queue>,
    live: Arc<Live>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_purge: Option<tokio::time::Instant> = None;
    loop {
        if last_purge.is_none_or(|t| t.elapsed() >= PURGE_INTERVAL) {
            if last_purge.is_some() {
                renew_agent(&live);
            }
            let retention = live.agent().config().delivered_retention;
            if let Err(e) = queue.purge_finished(retention) {
                warn!(error = %e, "cannot remove expired records of finished messages");
            }
            last_purge = Some(tokio::time::Instant::now());
        }
        let agent = live.agent();
        // Administrators' requests first: a retry makes its messages due
        // for the pass that follows.
        crate::queue::admin::serve_requests(&queue, agent.config());
        let options = queue_run::RunOptions::default();
        let pass = queue_run::pass(agent, &queue, &options);
        tokio::pin!(pass);
        tokio::select! {
            result = &mut pass => {
                if let Err(e) = result {
                    error!(error = %e, "delivery pass failed; trying again shortly");
                }
            }
            _ = shutdown.changed() => {
                if tokio::time::timeout(DELIVERY_GRACE, pass).await.is_err() {
                    warn!("deliveries still running at exit; they stay pending and are retried");
                }
                return;
            }
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = control_request(&queue) => {}
            _ = shutdown.changed() => return,
        }
    }
}
