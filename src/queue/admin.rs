//! Administration of queued messages (`queue delete`, `bounce`, `hold`,
//! `release`, `retry`), on a queue the caller holds.
//!
//! The queue has one owner at a time. A command that finds the queue held
//! by `smarthost serve` hands its request to the daemon instead: it leaves
//! the request as a file in `control/` (private to the queue owner), the
//! daemon carries it out between delivery passes with the same code, and
//! leaves the outcome beside it for the command to print.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::{AttemptResult, QueueEntry, RecipientStatus};
use super::{Queue, QueueDir, QueueError};
use crate::config::Config;
use crate::exitcode;

/// What an administrator does to messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAction {
    /// Remove them, with no report.
    Delete,
    /// Fail every pending recipient and report it to the sender.
    Bounce,
    /// Stop attempting them.
    Hold,
    /// Attempt them again on schedule.
    Release,
    /// Make them due now.
    Retry,
}

impl AdminAction {
    fn verb(self) -> &'static str {
        match self {
            Self::Delete => "deleted",
            Self::Bounce => "returned to the sender",
            Self::Hold => "put on hold",
            Self::Release => "released",
            Self::Retry => "due now",
        }
    }
}

/// One administrator's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRequest {
    /// The action.
    pub action: AdminAction,
    /// The queue ids, unless `all`.
    pub ids: Vec<String>,
    /// Every queued message.
    pub all: bool,
    /// Who asked, for the log.
    pub user: String,
}

/// What a request did: lines for standard output and standard error, and
/// the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOutcome {
    /// One line per message acted on.
    pub done: Vec<String>,
    /// One line per problem.
    pub errors: Vec<String>,
    /// A sysexits status.
    pub status: i32,
}

/// Carries out `request` on a queue the caller holds. Each action is
/// logged with the queue id and the user.
pub fn apply(queue: &Queue, config: &Config, request: &AdminRequest) -> AdminOutcome {
    let mut outcome = AdminOutcome::default();
    let fail = |outcome: &mut AdminOutcome, line: String, status: i32| {
        outcome.errors.push(line);
        outcome.status = status;
    };
    // Messages still in the maildrop can be acted on too.
    if let Err(e) = queue.pickup() {
        fail(&mut outcome, e.to_string(), exitcode::TEMPFAIL);
        return outcome;
    }
    let entries = match queue.entries() {
        Ok(e) => e,
        Err(e) => {
            fail(&mut outcome, e.to_string(), exitcode::TEMPFAIL);
            return outcome;
        }
    };
    let mut chosen = Vec::new();
    if request.all {
        chosen.extend(entries.iter().cloned());
    } else {
        for id in &request.ids {
            match entries.iter().find(|e| e.id() == id) {
                Some(e) => chosen.push(e.clone()),
                None => fail(
                    &mut outcome,
                    format!("{id}: no such message in the queue"),
                    exitcode::DATAERR,
                ),
            }
        }
    }
    let action = request.action;
    for mut entry in chosen {
        let id = entry.id().to_owned();
        let result = match action {
            AdminAction::Delete => queue.delete(&id).map(|_| ()),
            AdminAction::Bounce => bounce(config, queue, &mut entry),
            AdminAction::Hold | AdminAction::Release => {
                entry.held = action == AdminAction::Hold;
                queue.save(&entry)
            }
            AdminAction::Retry => {
                entry.held = false;
                entry.next_attempt = crate::delivery::now();
                queue.save(&entry)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(queue_id = %id, action = ?action, user = %request.user,
                    "administrator action");
                outcome.done.push(format!("{id}: {}", action.verb()));
            }
            Err(e) => fail(&mut outcome, format!("{id}: {e}"), exitcode::TEMPFAIL),
        }
    }
    if let Err(e) = queue.write_snapshot() {
        tracing::warn!(error = %e, "cannot write the queue listing");
    }
    outcome
}

/// Fails every pending recipient of `entry` and queues the failure report
/// (as NOTIFY allows), then records the entry.
fn bounce(config: &Config, queue: &Queue, entry: &mut QueueEntry) -> Result<(), QueueError> {
    let before: Vec<RecipientStatus> = entry.recipients.iter().map(|r| r.status).collect();
    let now = crate::delivery::now();
    for i in entry.pending().collect::<Vec<_>>() {
        let rcpt = &mut entry.recipients[i];
        rcpt.status = RecipientStatus::Failed;
        rcpt.last = Some(AttemptResult {
            at: now,
            host: None,
            ip: None,
            tls: None,
            reply: None,
            status: "5.0.0".into(),
            detail: "returned to the sender by the mail administrator".into(),
            protection: None,
            remote_dsn: false,
        });
    }
    let message = queue.message(entry.id())?;
    for report in crate::reports::due(config, entry, &before, &message, now) {
        queue.dir().deposit(&report.envelope, &report.message)?;
    }
    queue.save(entry)
}

fn control_dir(dir: &QueueDir) -> PathBuf {
    dir.root().join("control")
}

/// The file where a running daemon leaves its process id.
fn daemon_file(dir: &QueueDir) -> PathBuf {
    control_dir(dir).join("daemon.pid")
}

/// Marks the daemon as the one that takes administrators' requests (at its
/// start, once it holds the queue).
pub fn announce_daemon(dir: &QueueDir) {
    let control = control_dir(dir);
    let written = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&control)
        .and_then(|()| fs::write(daemon_file(dir), std::process::id().to_string()));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot announce the daemon for administrators' requests");
    }
}

/// True when the process named in the daemon file is alive.
fn daemon_running(dir: &QueueDir) -> bool {
    let Ok(text) = fs::read_to_string(daemon_file(dir)) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Hands `request` to the daemon that holds the queue and waits up to
/// `wait` for its outcome. `None` when no daemon runs or none answered in
/// time (then the request is withdrawn).
pub fn through_daemon(
    dir: &QueueDir,
    request: &AdminRequest,
    wait: Duration,
) -> Result<Option<AdminOutcome>, QueueError> {
    if !daemon_running(dir) {
        return Ok(None);
    }
    let control = control_dir(dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&control)
        .map_err(|e| QueueError::io(&control, e))?;
    let name = super::new_queue_id();
    let tmp = control.join(format!(".tmp.{name}"));
    let path = control.join(format!("{name}.request"));
    let done = control.join(format!("{name}.done"));
    let json =
        serde_json::to_vec(request).map_err(|e| QueueError::io(&path, std::io::Error::other(e)))?;
    fs::write(&tmp, json)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| QueueError::io(&path, e))?;
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Ok(bytes) = fs::read(&done) {
            let _ = fs::remove_file(&done);
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| QueueError::io(&done, std::io::Error::other(e)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Withdraw it; if the daemon took it meanwhile, its outcome is lost
    // but the action is still logged.
    let _ = fs::remove_file(&path);
    Ok(None)
}

/// Carries out the requests waiting in `control/` (the daemon calls this
/// between passes). Returns how many there were.
pub fn serve_requests(queue: &Queue, config: &Config) -> usize {
    let control = control_dir(queue.dir());
    let Ok(entries) = fs::read_dir(&control) else {
        return 0;
    };
    let mut handled = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".request"))
            .map(str::to_owned)
        else {
            continue;
        };
        let outcome = match fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<AdminRequest>(&b).ok())
        {
            Some(request) => apply(queue, config, &request),
            None => AdminOutcome {
                done: Vec::new(),
                errors: vec!["unreadable request".into()],
                status: exitcode::DATAERR,
            },
        };
        let _ = fs::remove_file(&path);
        let tmp = control.join(format!(".tmp.{name}.done"));
        let done = control.join(format!("{name}.done"));
        let written = serde_json::to_vec(&outcome)
            .map_err(std::io::Error::other)
            .and_then(|json| fs::write(&tmp, json))
            .and_then(|()| fs::rename(&tmp, &done));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot leave the outcome of an administrator's request");
        }
        handled += 1;
    }
    handled
}
