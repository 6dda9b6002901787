//! `mailq`, `queue list`, `queue show`, `queue run` and `queue init`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::probe::ProbeVerdict;
use crate::delivery::run::{self, RunOptions};
use crate::delivery::{format_time, Agent};
use crate::exitcode;
use crate::logging::{self, LogTarget};
use crate::queue::record::{QueueEntry, RecipientStatus};
use crate::queue::{finished_record, Listing, Queue, QueueDir, QueueError};

fn locate(config: &Config) -> Result<QueueDir, i32> {
    QueueDir::locate(config).map_err(|e| {
        eprintln!("smarthost: {e}");
        exitcode::CONFIG
    })
}

fn queue_error(e: &QueueError) -> i32 {
    eprintln!("smarthost: {e}");
    if e.is_permission_denied() {
        exitcode::NOPERM
    } else {
        exitcode::TEMPFAIL
    }
}

/// Prints the queue, Postfix `mailq` style: one block per message.
pub(super) fn list(config: &Config) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match Listing::read(&dir) {
        Ok(listing) => {
            print!("{}", render_listing(&listing));
            exitcode::OK
        }
        Err(e) => queue_error(&e),
    }
}

fn render_listing(listing: &Listing) -> String {
    let mut out = String::new();
    if listing.entries.is_empty() && listing.waiting.is_empty() {
        out.push_str("Mail queue is empty\n");
        return out;
    }
    if let Some(t) = listing.snapshot_time {
        let _ = writeln!(
            out,
            "(a delivery run holds the queue; state as of {})",
            format_time(t)
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:>9}  {:<25}  SENDER",
        "QUEUE ID", "SIZE", "ARRIVAL"
    );
    for (envelope, size) in &listing.waiting {
        let _ = writeln!(
            out,
            "{:<20} {:>9}  {:<25}  <{}>",
            envelope.id,
            size,
            format_time(envelope.arrival),
            envelope.sender
        );
        if let Some(tls) = envelope.security.summary() {
            let _ = writeln!(out, "    {:<10} {tls}", "tls");
        }
        for r in &envelope.recipients {
            let _ = writeln!(out, "    {:<10} {}", "new", r.address);
        }
    }
    for entry in &listing.entries {
        render_entry(&mut out, entry);
    }
    let total: u64 = listing.entries.iter().map(|e| e.size).sum::<u64>()
        + listing.waiting.iter().map(|(_, s)| s).sum::<u64>();
    let count = listing.entries.len() + listing.waiting.len();
    let _ = writeln!(
        out,
        "-- {} Kbytes in {count} message{}.",
        total.div_ceil(1024),
        if count == 1 { "" } else { "s" }
    );
    out
}

fn render_entry(out: &mut String, entry: &QueueEntry) {
    let env = &entry.envelope;
    let _ = write!(
        out,
        "{:<20} {:>9}  {:<25}  <{}>",
        env.id,
        entry.size,
        format_time(env.arrival),
        env.sender
    );
    if entry.attempts > 0 {
        let _ = write!(
            out,
            "  attempts={} next={}",
            entry.attempts,
            format_time(entry.next_attempt)
        );
    }
    out.push('\n');
    if let Some(tls) = env.security.summary() {
        let _ = writeln!(out, "    {:<10} {tls}", "tls");
    }
    for r in &entry.recipients {
        let state = match r.status {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        };
        let _ = write!(out, "    {state:<10} {}", r.address);
        if let Some(last) = &r.last {
            let via = match (&last.host, &last.ip) {
                (Some(h), Some(ip)) => format!(" via {h} [{ip}]"),
                (Some(h), None) => format!(" via {h}"),
                _ => String::new(),
            };
            let what = last.reply.as_deref().unwrap_or(&last.detail);
            let _ = write!(out, "  ({}: {what}{via})", last.status);
        }
        out.push('\n');
    }
}

/// Prints everything stored about one message.
pub(super) fn show(config: &Config, id: &str) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let listing = match Listing::read(&dir) {
        Ok(l) => l,
        Err(e) => return queue_error(&e),
    };
    if let Some(entry) = listing.entries.iter().find(|e| e.id() == id) {
        match serde_json::to_string_pretty(entry) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("smarthost: {id}: {e}");
                return exitcode::SOFTWARE;
            }
        }
        return exitcode::OK;
    }
    if let Some((env, _)) = listing.waiting.iter().find(|(e, _)| e.id == id) {
        if let Ok(text) = serde_json::to_string_pretty(env) {
            println!("{text}");
        }
        println!("(waiting in the maildrop for pickup)");
        return exitcode::OK;
    }
    match finished_record(&dir, id) {
        Ok(Some(entry)) => {
            match serde_json::to_string_pretty(&entry) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("smarthost: {id}: {e}");
                    return exitcode::SOFTWARE;
                }
            }
            println!("(no longer queued: the content was removed once no recipient was pending)");
            return exitcode::OK;
        }
        Ok(None) => {}
        Err(e) if e.is_busy() => {
            eprintln!(
                "smarthost: {id}: not queued; a queue run holds the records of finished messages, try again when it ends"
            );
            return exitcode::TEMPFAIL;
        }
        Err(e) => return queue_error(&e),
    }
    eprintln!("smarthost: {id}: no such message in the queue");
    exitcode::DATAERR
}

/// Creates the system queue layout.
pub(super) fn init(config: &Config, group: Option<&str>) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let gid = match group {
        None => None,
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => Some(g.gid),
            _ => {
                eprintln!("smarthost: no such group: {name}");
                return exitcode::USAGE;
            }
        },
    };
    if let Err(e) = dir.init(gid) {
        return queue_error(&e);
    }
    // Opening the queue creates the store, owned by the caller.
    match Queue::open(&dir) {
        Ok(_) => {
            println!("queue ready in {}", dir.root().display());
            exitcode::OK
        }
        Err(e) => queue_error(&e),
    }
}

/// `smarthost probe`: prints what a delivery to `domain` would do.
pub(super) fn probe(
    config: &Config,
    domain: &str,
    sender: &str,
    record: &crate::envelope::SecurityRecord,
) -> i32 {
    let domain = match crate::config::normalise_domain(domain) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smarthost probe: {e}");
            return exitcode::USAGE;
        }
    };
    logging::init(LogTarget::Stderr, "off", None);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smarthost: cannot start the runtime: {e}");
            return exitcode::OSERR;
        }
    };
    runtime.block_on(async {
        let agent = match Agent::new(config.clone()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("smarthost: {e}");
                return exitcode::CONFIG;
            }
        };
        let report = agent.probe(&domain, sender, record).await;
        print!("{}", report.text);
        match report.verdict {
            ProbeVerdict::Deliverable => exitcode::OK,
            ProbeVerdict::Undeliverable => 1,
            ProbeVerdict::DnsFailure => exitcode::TEMPFAIL,
        }
    })
}

/// One delivery run.
pub(super) fn run(config: &Config, options: &RunOptions, detached: bool) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let target = if detached {
        LogTarget::Detached
    } else {
        LogTarget::Stderr
    };
    logging::init(target, "info", Some(dir.root()));
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
    runtime.block_on(async {
        let agent = match Agent::new(config.clone()) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                tracing::error!(error = %e, "cannot start delivery");
                eprintln!("smarthost: {e}");
                return exitcode::CONFIG;
            }
        };
        match run::run(agent, &dir, options).await {
            Ok(summary) => {
                if summary.busy {
                    tracing::info!("another smarthost process is delivering from this queue");
                }
                exitcode::OK
            }
            Err(e) => {
                tracing::error!(error = %e, "queue run failed");
                queue_error(&e)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_listing_says_so() {
        let listing = Listing {
            entries: Vec::new(),
            waiting: Vec::new(),
            snapshot_time: None,
        };
        assert_eq!(render_listing(&listing), "Mail queue is empty\n");
    }
}
