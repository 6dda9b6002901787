//! Logging setup: human-readable lines on standard error for commands run
//! by hand, the systemd journal (or a log file in the queue directory when
//! there is no journal) for detached delivery passes.
//!
//! The level comes from `SMARTHOST_LOG` (a `tracing` filter such as `debug`
//! or `smarthost=trace`), default `info`.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error.
    Stderr,
    /// The journal when available, else `<queue_dir>/smarthost.log`.
    Detached,
}

/// `SMARTHOST_LOG` when set (an `EnvFilter` directive such as `debug` or
/// `smarthost=trace`), else `default` for smarthost's own lines. The DNS
/// library's own messages are shown only when they are errors: its
/// warnings describe single answers that smarthost already classifies and
/// reports in its own words.
fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("SMARTHOST_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},hickory_proto=error,hickory_resolver=error,hickory_net=error"
        ))
    })
}

/// Installs the global subscriber. `default_level` applies when
/// `SMARTHOST_LOG` is unset. Calling it twice is harmless.
pub fn init(target: LogTarget, default_level: &str, queue_dir: Option<&Path>) {
    let registry = tracing_subscriber::registry().with(filter(default_level));
    match target {
        LogTarget::Stderr => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_target(false),
                )
                .try_init();
        }
        LogTarget::Detached => {
            if Path::new("/run/systemd/journal/socket").exists() {
                if let Ok(journald) = tracing_journald::layer() {
                    let _ = registry
                        .with(journald.with_syslog_identifier("smarthost".into()))
                        .try_init();
                    return;
                }
            }
            let file = queue_dir.and_then(|d| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join("smarthost.log"))
                    .ok()
            });
            match file {
                Some(file) => {
                    let _ = registry
                        .with(
                            tracing_subscriber::fmt::layer()
                                .with_writer(std::sync::Mutex::new(file))
                                .with_ansi(false),
                        )
                        .try_init();
                }
                None => {
                    let _ = registry
                        .with(
                            tracing_subscriber::fmt::layer()
                                .with_writer(std::io::stderr)
                                .with_ansi(false),
                        )
                        .try_init();
                }
            }
        }
    }
}
