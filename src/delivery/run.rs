//! A queue run: take the queue, pick up new mail, deliver what is due, and
//! let go, making sure no message is left waiting in the maildrop.
//!
//! Only one process holds the queue at a time. A run that finds it held
//! exits quietly: the holder sees everything in the maildrop before it lets
//! go, and looks once more after letting go (taking the queue again when
//! something arrived in between), so a message dropped at any moment is
//! picked up by the current holder or the next one, and each message is
//! delivered by exactly one process.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{now, Agent};
use crate::queue::record::{QueueEntry, RecipientStatus};
use crate::queue::{Queue, QueueDir, QueueError};
use crate::reports;

/// Which messages a run attempts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Attempt every queued message, due or not (`queue run --all`,
    /// Postfix's `postqueue -f`). Each message is still attempted once.
    pub all: bool,
    /// Attempt only these queue ids (due or not).
    pub ids: Vec<String>,
    /// Attempt only messages with a recipient in one of these domains.
    pub domains: Vec<String>,
}

impl RunOptions {
    fn selects(&self, entry: &QueueEntry, now: i64) -> bool {
        if entry.held {
            return false;
        }
        if !self.ids.is_empty() {
            return self.ids.iter().any(|id| id == entry.id());
        }
        if !self.domains.is_empty() {
            let wanted = |addr: &str| {
                let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
                self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
            };
            return entry
                .pending()
                .any(|i| wanted(&entry.recipients[i].address));
        }
        self.all || entry.next_attempt <= now
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Another process held the queue; this run did nothing.
    pub busy: bool,
    /// Messages taken from the maildrop.
    pub picked_up: usize,
    /// Messages attempted.
    pub attempted: usize,
}

/// Runs the queue once, as described in the module documentation.
pub async fn run(
    agent: Arc<Agent>,
    dir: &QueueDir,
    options: &RunOptions,
) -> Result<RunSummary, QueueError> {
    let mut summary = RunSummary::default();
    let mut attempted = BTreeSet::new();
    let mut first = true;
    loop {
        let queue = match Queue::open(dir) {
            Ok(q) => q,
            Err(e) if e.is_busy() => {
                tracing::debug!("another smarthost process holds the queue; it will deliver");
                summary.busy = first;
                return Ok(summary);
            }
            Err(e) => return Err(e),
        };
        if first {
            if let Err(e) = queue.purge_finished(agent.config().delivered_retention) {
                tracing::warn!(error = %e, "cannot remove expired records of finished messages");
            }
        }
        first = false;
        let queue = Arc::new(queue);
        drain(&agent, &queue, options, &mut attempted, &mut summary).await?;
        queue.write_snapshot()?;
        agent.close_idle().await;
        drop(queue);
        // Let go, then look once more: a submission that found the queue
        // held while we were finishing relies on this.
        if dir.maildrop_files()?.is_empty() {
            return Ok(summary);
        }
    }
}

/// One pass over a queue the caller already holds (the daemon keeps it
/// open for its lifetime): pick up, deliver what `options` selects and is
/// due, each message at most once, until nothing new is due; then write
/// the listing for `mailq`.
pub async fn pass(
    agent: Arc<Agent>,
    queue: &Arc<Queue>,
    options: &RunOptions,
) -> Result<RunSummary, QueueError> {
    let mut summary = RunSummary::default();
    let mut attempted = BTreeSet::new();
    drain(&agent, queue, options, &mut attempted, &mut summary).await?;
    queue.write_snapshot()?;
    agent.close_idle().await;
    Ok(summary)
}

/// Picks up and delivers until nothing new is due.
async fn drain(
    agent: &Arc<Agent>,
    queue: &Arc<Queue>,
    options: &RunOptions,
    attempted: &mut BTreeSet<String>,
    summary: &mut RunSummary,
) -> Result<(), QueueError> {
    loop {
        let picked = queue.pickup()?;
        summary.picked_up += picked.len();
        let now = now();
        let due: Vec<QueueEntry> = queue
            .entries()?
            .into_iter()
            .filter(|e| !attempted.contains(e.id()))
            .filter(|e| options.selects(e, now) || picked.iter().any(|p| p == e.id()))
            .collect();
        queue.write_snapshot()?;
        if due.is_empty() {
            return Ok(());
        }
        summary.attempted += due.len();
        attempted.extend(due.iter().map(|e| e.id().to_owned()));
        deliver_batch(agent, queue, due).await?;
    }
}

/// Delivers a batch of entries, several at a time, saving each result as
/// soon as it is known.
async fn deliver_batch(
    agent: &Arc<Agent>,
    queue: &Arc<Queue>,
    due: Vec<QueueEntry>,
) -> Result<(), QueueError> {
    // At most `max_connections` messages are in flight: a task (and its
    // future's state) exists only for a message being delivered, so
    // memory does not grow with the number of messages due.
    let limit = agent.config().max_connections.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    let mut first_error = None;
    for mut entry in due {
        while tasks.len() >= limit {
            if let Some(joined) = tasks.join_next().await {
                note_result(joined, &mut first_error);
            }
        }
        let agent = agent.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            let message = match queue.message(entry.id()) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(queue_id = %entry.id(), error = %e, "cannot read the queued message");
                    return Ok(());
                }
            };
            let before: Vec<RecipientStatus> = entry.recipients.iter().map(|r| r.status).collect();
            agent.deliver(&mut entry, &message).await;
            let now = now();
            agent.expire(&mut entry, now);
            // Reports are queued before the entry is saved: a crash in
            // between repeats a report rather than losing it.
            for report in reports::due(agent.config(), &mut entry, &before, &message, now) {
                if let Err(e) = queue.dir().deposit(&report.envelope, &report.message) {
                    tracing::error!(queue_id = %entry.id(), report_id = %report.envelope.id,
                        error = %e, "cannot queue the delivery report");
                }
            }
            queue.save(&entry)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        note_result(joined, &mut first_error);
    }
    first_error.map_or(Ok(()), Err)
}

/// Logs a finished delivery task's outcome and keeps the first error.
fn note_result(
    joined: Result<Result<(), QueueError>, tokio::task::JoinError>,
    first_error: &mut Option<QueueError>,
) {
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot record a delivery result");
            first_error.get_or_insert(e);
        }
        Err(e) => tracing::error!(error = %e, "a delivery task failed"),
    }
}
