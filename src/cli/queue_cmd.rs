//! `mailq`, `queue list`, `queue show`, `queue run` and `queue init`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::probe::ProbeVerdict;
use crate::delivery::run::{self, RunOptions};
use crate::delivery::{format_time, Agent};
use crate::exitcode;
use crate::logging::{self, LogTarget};
use crate::queue::admin::{self, AdminAction, AdminRequest};
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
    } else if e.is_damaged() {
        eprintln!("smarthost: the queue is damaged; `smarthost queue check` lists what is wrong");
        exitcode::DATAERR
    } else {
        exitcode::TEMPFAIL
    }
}

/// Prints the queue, Postfix `mailq` style: one block per message.
pub(super) fn list(config: &Config, json: bool) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match Listing::read(&dir) {
        Ok(listing) if json => {
            let value = serde_json::json!({
                "snapshot_time": listing.snapshot_time,
                "waiting": listing.waiting.iter().map(|(e, _)| e).collect::<Vec<_>>(),
                "entries": listing.entries,
            });
            outln!("{value:#}");
            exitcode::OK
        }
        Ok(listing) => {
            out!("{}", render_listing(&listing));
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
    if entry.held {
        out.push_str("  (on hold)");
    } else if entry.attempts > 0 {
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

/// Prints everything stored about one message: as text, or with `json`
/// the stored record itself.
pub(super) fn show(config: &Config, id: &str, json: bool) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let listing = match Listing::read(&dir) {
        Ok(l) => l,
        Err(e) => return queue_error(&e),
    };
    if let Some(entry) = listing.entries.iter().find(|e| e.id() == id) {
        let headers = read_headers(&dir.message_file(id));
        return print_entry(entry, headers.as_deref(), json, "queued");
    }
    if let Some((env, _)) = listing.waiting.iter().find(|(e, _)| e.id == id) {
        let entry = QueueEntry::new(env.clone(), 0);
        let headers = read_headers(&dir.maildrop().join(id));
        return print_entry(
            &entry,
            headers.as_deref(),
            json,
            "waiting in the maildrop for pickup",
        );
    }
    match finished_record(&dir, id) {
        Ok(Some(entry)) => print_entry(
            &entry,
            None,
            json,
            "no longer queued: the content was removed once no recipient was pending",
        ),
        Ok(None) => {
            eprintln!("smarthost: {id}: no such message in the queue");
            exitcode::DATAERR
        }
        Err(e) if e.is_busy() => {
            eprintln!(
                "smarthost: {id}: not queued; a queue run holds the records of finished messages, try again when it ends"
            );
            exitcode::TEMPFAIL
        }
        Err(e) => queue_error(&e),
    }
}

/// The header of a queue file's message, for `queue show`.
fn read_headers(path: &std::path::Path) -> Option<String> {
    let (_, message) = crate::queue::file::read(path, true).ok()?;
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    Some(String::from_utf8_lossy(&message[..end]).replace("\r\n", "\n"))
}

fn print_entry(entry: &QueueEntry, headers: Option<&str>, json: bool, state: &str) -> i32 {
    if json {
        let mut value = match serde_json::to_value(entry) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("smarthost: {}: {e}", entry.id());
                return exitcode::SOFTWARE;
            }
        };
        value["state"] = serde_json::Value::String(state.to_owned());
        outln!("{value:#}");
        return exitcode::OK;
    }
    out!("{}", render_entry_details(entry, headers, state));
    exitcode::OK
}

/// `queue show` as text: the envelope, the security record, each
/// recipient with its state, attempts and last result with its protection,
/// and the message header.
fn render_entry_details(entry: &QueueEntry, headers: Option<&str>, state: &str) -> String {
    let env = &entry.envelope;
    let mut out = String::new();
    let _ = writeln!(out, "queue id:     {}", env.id);
    let _ = writeln!(
        out,
        "state:        {state}{}",
        if entry.held { " (on hold)" } else { "" }
    );
    let _ = writeln!(out, "sender:       <{}>", env.sender);
    let _ = writeln!(out, "arrival:      {}", format_time(env.arrival));
    let _ = writeln!(out, "size:         {}", entry.size);
    if !env.submitted_by.is_empty() {
        let _ = writeln!(out, "submitted by: {}", env.submitted_by);
    }
    let _ = writeln!(out, "attempts:     {}", entry.attempts);
    if let Some(t) = entry.last_attempt {
        let _ = writeln!(out, "last attempt: {}", format_time(t));
    }
    if entry.finished_at.is_none() && !entry.is_finished() && entry.attempts > 0 {
        let _ = writeln!(out, "next attempt: {}", format_time(entry.next_attempt));
    }
    if let Some(t) = entry.finished_at {
        let _ = writeln!(out, "finished:     {}", format_time(t));
    }
    let tls = env
        .security
        .summary()
        .unwrap_or_else(|| "the destination's policy".into());
    let _ = writeln!(out, "tls:          {tls}");
    let dsn = &env.dsn;
    if dsn.notify.is_some() || dsn.ret.is_some() || dsn.envid.is_some() {
        let _ = writeln!(
            out,
            "dsn:          notify={} ret={} envid={}",
            dsn.notify
                .as_ref()
                .map_or("-".into(), |n| format!("{n:?}").to_lowercase()),
            dsn.ret
                .map_or("-".into(), |r| format!("{r:?}").to_lowercase()),
            dsn.envid.as_deref().unwrap_or("-")
        );
    }
    out.push_str("recipients:\n");
    for r in &entry.recipients {
        let state = match r.status {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        };
        let _ = writeln!(out, "  {state:<10} {}", r.address);
        let Some(last) = &r.last else {
            continue;
        };
        let _ = writeln!(out, "    at:         {}", format_time(last.at));
        let _ = writeln!(out, "    status:     {} {}", last.status, last.detail);
        if let Some(host) = &last.host {
            let ip = last.ip.as_deref().unwrap_or("-");
            let _ = writeln!(out, "    host:       {host} [{ip}]");
        }
        if let Some(reply) = &last.reply {
            let _ = writeln!(out, "    reply:      {reply}");
        }
        if let Some(tls) = &last.tls {
            let _ = writeln!(
                out,
                "    tls:        {} {} (certificate {})",
                tls.version, tls.cipher, tls.certificate
            );
        }
        if let Some(p) = &last.protection {
            let _ = writeln!(
                out,
                "    protection: policy {}, verification {}, MX {}, REQUIRETLS {}{}",
                p.policy,
                p.verification,
                if p.mx_dnssec {
                    "DNSSEC-secure"
                } else {
                    "not DNSSEC-secure"
                },
                if p.requiretls { "sent" } else { "not sent" },
                if p.tls_required_no {
                    ", TLS-Required: No"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(h) = headers {
        out.push_str("header:\n");
        for line in h.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// An administrator's action on queued messages (`ids`, or all with
/// `all`), logged per message. The command takes the queue as its owner;
/// while `smarthost serve` holds it, the daemon carries the request out
/// (see [`crate::queue::admin`]). A queue run in progress makes it fail at
/// once with a message saying so.
pub(super) fn admin(config: &Config, action: AdminAction, ids: &[String], all: bool) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    logging::init(LogTarget::Stderr, "info", Some(dir.root()));
    let request = AdminRequest {
        action,
        ids: ids.to_vec(),
        all,
        user: real_user_name(),
    };
    let outcome = match Queue::open(&dir) {
        Ok(queue) => admin::apply(&queue, config, &request),
        Err(e) if e.is_busy() => match admin::through_daemon(&dir, &request, DAEMON_WAIT) {
            Ok(Some(outcome)) => {
                print_outcome(&outcome);
                return outcome.status;
            }
            Ok(None) => {
                eprintln!(
                    "smarthost: a queue run holds the queue (no daemon answered); try again when it ends"
                );
                return exitcode::TEMPFAIL;
            }
            Err(e) => return queue_error(&e),
        },
        Err(e) => return queue_error(&e),
    };
    print_outcome(&outcome);
    if action == AdminAction::Retry && outcome.status == exitcode::OK {
        let options = RunOptions {
            all,
            ids: if all { Vec::new() } else { ids.to_vec() },
            domains: Vec::new(),
        };
        return run(config, &options, false);
    }
    outcome.status
}

/// How long a command waits for `serve` to carry out its request: the
/// daemon looks between delivery passes, at least every few seconds.
const DAEMON_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn print_outcome(outcome: &admin::AdminOutcome) {
    for line in &outcome.done {
        outln!("{line}");
    }
    for line in &outcome.errors {
        eprintln!("smarthost: {line}");
    }
}

/// The name of the user running the command, for the log.
fn real_user_name() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
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
            outln!("queue ready in {}", dir.root().display());
            exitcode::OK
        }
        Err(e) => queue_error(&e),
    }
}

/// `queue check`: prints one line per problem found; exit 0 when there is
/// none, [`exitcode::DATAERR`] when there are some.
pub(super) fn check(config: &Config) -> i32 {
    let dir = match locate(config) {
        Ok(d) => d,
        Err(code) => return code,
    };
    match crate::queue::check::check(&dir) {
        Ok(problems) if problems.is_empty() => {
            println!("queue {}: no problems found", dir.root().display());
            exitcode::OK
        }
        Ok(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            eprintln!(
                "smarthost: queue {}: {} problem(s) found",
                dir.root().display(),
                problems.len()
            );
            exitcode::DATAERR
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
        out!("{}", report.text);
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
