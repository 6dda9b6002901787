//! `smarthost serve`: starts the runtime and the daemon, maps its result
//! to an exit status.

use std::path::PathBuf;

use crate::config::Config;
use crate::exitcode;
use crate::listener::server::{self, ServeError};
use crate::logging::{self, LogTarget};
use crate::queue::QueueDir;

/// Runs the daemon until SIGTERM; 0 on a clean stop.
pub(super) fn main(config: &Config, explicit: Option<PathBuf>) -> i32 {
    let dir = QueueDir::locate(config).ok();
    // LIMITATION: the daemon logs to standard error only; under systemd
    // that reaches the journal anyway.
    logging::init(LogTarget::Stderr, "info", dir.as_ref().map(QueueDir::root));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smarthost: cannot start the runtime: {e}");
            return exitcode::OSERR;
        }
    };
    let reload = move || super::load_config(explicit.as_deref());
    let result = runtime.block_on(server::serve(config.clone(), reload));
    // Sessions cut off at exit may leave blocking tasks behind.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => exitcode::OK,
        Err(ServeError::Queue(e)) if e.is_busy() => {
            eprintln!("smarthost serve: another smarthost process holds the queue (a queue run or another serve); try again when it ends");
            exitcode::TEMPFAIL
        }
        Err(e) => {
            tracing::error!(error = %e, "smarthost serve cannot run");
            eprintln!("smarthost serve: {e}");
            if e.is_config() {
                exitcode::CONFIG
            } else {
                exitcode::TEMPFAIL
            }
        }
    }
}
