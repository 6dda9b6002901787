//! Reports: delivery status notifications to the envelope sender
//! (RFC 3461 §6, RFC 3464), decided after each delivery attempt and queued
//! like any other message, from the null sender.
//!
//! What is reported, per recipient, follows its `NOTIFY` (RFC 3461 §4.1,
//! §5.2): a failure unless NOTIFY names neither FAILURE nor is absent; a
//! delay once, after `delay_warning_time`, when NOTIFY is absent or names
//! DELAY; a success ("relayed", RFC 3461 §5.2.2) when NOTIFY names SUCCESS
//! and the receiving server did not take DSN requests on (when it did, it
//! reports itself). No report is ever sent about a message from the null
//! sender (RFC 3461 §6.2, RFC 5321 §6.1), except that a report smarthost
//! made and could not deliver goes, once, to the `postmaster` address.
//!
//! A report about a REQUIRETLS message returns the header only, whatever
//! RET asked (RFC 8689 §5), and is sent without the REQUIRETLS tag: that
//! is the redaction RFC 8689 §5 allows, so that the report is never lost
//! to a path without REQUIRETLS.

pub mod dsn;

use crate::config::Config;
use crate::envelope::{Notify, Ret, SecurityRecord};
use crate::queue::file::{Envelope, RecipientSpec, ReportKind, ENVELOPE_VERSION};
use crate::queue::record::{QueueEntry, RecipientStatus};
use dsn::{Action, RecipientReport, ReportContent, Returned};

/// A report ready to be queued.
#[derive(Debug, Clone)]
pub struct Report {
    /// Its envelope (null sender).
    pub envelope: Envelope,
    /// The message, CRLF line ends.
    pub message: Vec<u8>,
}

/// The state of each recipient before an attempt, to tell what changed.
pub type Before = Vec<RecipientStatus>;

/// The reports due after an attempt on `entry` (whose recipients were in
/// the states `before`). Marks the entry when a delay warning went out.
pub fn due(
    config: &Config,
    entry: &mut QueueEntry,
    before: &[RecipientStatus],
    original: &[u8],
    now: i64,
) -> Vec<Report> {
    let env = &entry.envelope;
    let to = match (env.sender.is_empty(), env.report) {
        (false, _) => env.sender.clone(),
        // A report smarthost made could not be delivered: the postmaster
        // hears of it, once.
        (true, Some(ReportKind::ToSender)) => config.postmaster.clone(),
        (true, _) => return Vec::new(),
    };
    let kind = if env.sender.is_empty() {
        ReportKind::ToPostmaster
    } else {
        ReportKind::ToSender
    };
    let mut failed = Vec::new();
    let mut relayed = Vec::new();
    for (i, r) in entry.recipients.iter().enumerate() {
        let was_pending = before.get(i) == Some(&RecipientStatus::Pending);
        if !was_pending {
            continue;
        }
        // Our own reports go out with NOTIFY=NEVER so that the next hops
        // send nothing back; their failures still reach the postmaster.
        let notify = match env.report {
            Some(_) => None,
            None => notify_of(env, &r.address),
        };
        match r.status {
            RecipientStatus::Failed if wants(&notify, Notify::Failure, true) => failed.push(i),
            RecipientStatus::Delivered
                if wants(&notify, Notify::Success, false)
                    && !r.last.as_ref().is_some_and(|l| l.remote_dsn) =>
            {
                relayed.push(i)
            }
            _ => {}
        }
    }
    let mut delayed = Vec::new();
    let warn_at = env.arrival.saturating_add(secs(config.delay_warning_time));
    if !entry.delay_warned && now >= warn_at && !config.delay_warning_time.is_zero() {
        for i in entry.pending() {
            let r = &entry.recipients[i];
            if wants(&notify_of(env, &r.address), Notify::Delay, true) {
                delayed.push(i);
            }
        }
        if !delayed.is_empty() {
            entry.delay_warned = true;
        }
    }
    let mut reports = Vec::new();
    let lifetime = lifetime(config, &entry.envelope);
    for (indexes, action) in [
        (failed, Action::Failed),
        (delayed, Action::Delayed),
        (relayed, Action::Relayed),
    ] {
        if indexes.is_empty() {
            continue;
        }
        let recipients: Vec<RecipientReport> = indexes
            .iter()
            .map(|&i| recipient_report(entry, i, action, lifetime))
            .collect();
        match build(config, entry, &to, kind, &recipients, action, original) {
            Ok(r) => reports.push(r),
            Err(e) => tracing::error!(queue_id = %entry.id(), error = %e, "no report sent"),
        }
    }
    reports
}

/// How long a message may stay queued: `bounce_queue_lifetime` for
/// messages from the null sender (reports), `max_queue_lifetime` for the
/// rest.
pub fn lifetime(config: &Config, envelope: &Envelope) -> i64 {
    if envelope.sender.is_empty() {
        secs(config.bounce_queue_lifetime)
    } else {
        secs(config.max_queue_lifetime)
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn notify_of(env: &Envelope, address: &str) -> Option<Vec<Notify>> {
    env.recipients
        .iter()
        .find(|r| r.address == address)
        .and_then(|r| r.notify.clone())
        .or_else(|| env.dsn.notify.clone())
}

/// RFC 3461 §4.1: NEVER asks for nothing; an absent NOTIFY means FAILURE
/// (and DELAY at the MTA's choice, which smarthost makes).
fn wants(notify: &Option<Vec<Notify>>, what: Notify, by_default: bool) -> bool {
    match notify {
        None => by_default,
        Some(list) => list.contains(&what),
    }
}

fn recipient_report(
    entry: &QueueEntry,
    i: usize,
    action: Action,
    lifetime: i64,
) -> RecipientReport {
    let r = &entry.recipients[i];
    let last = r.last.as_ref();
    let orcpt = entry
        .envelope
        .recipients
        .iter()
        .find(|s| s.address == r.address)
        .and_then(|s| s.orcpt.clone());
    let protection = match (action, last.and_then(|l| l.protection.as_ref())) {
        (Action::Relayed | Action::Delivered, Some(p)) => {
            let tls = last
                .and_then(|l| l.tls.as_ref())
                .map_or("plaintext".to_owned(), |t| {
                    format!("{} {}", t.version, t.cipher).trim().to_owned()
                });
            Some(format!(
                "{tls}; certificate {}; MX {}; REQUIRETLS {}",
                p.verification,
                if p.mx_dnssec {
                    "DNSSEC-secure"
                } else {
                    "not DNSSEC-secure"
                },
                if p.requiretls { "sent" } else { "not sent" }
            ))
        }
        _ => None,
    };
    RecipientReport {
        address: r.address.clone(),
        orcpt,
        action,
        status: last.map_or_else(
            || match action {
                Action::Failed => "5.0.0".into(),
                Action::Delayed => "4.0.0".into(),
                _ => "2.0.0".into(),
            },
            |l| l.status.clone(),
        ),
        remote_mta: last.and_then(|l| l.host.clone()),
        diagnostic: last.and_then(|l| l.reply.clone()),
        detail: last.map_or_else(String::new, |l| l.detail.clone()),
        protection,
        last_attempt: last.map(|l| l.at),
        will_retry_until: (action == Action::Delayed)
            .then(|| entry.envelope.arrival.saturating_add(lifetime)),
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    config: &Config,
    entry: &QueueEntry,
    to: &str,
    kind: ReportKind,
    recipients: &[RecipientReport],
    action: Action,
    original: &[u8],
) -> Result<Report, dsn::ReportError> {
    let env = &entry.envelope;
    // RFC 8689 §5: headers only for REQUIRETLS messages; RFC 3461 §4.3:
    // RET as asked otherwise; without RET, a failure returns the message
    // and a delay or success report only its header.
    let returned = match (env.security.requiretls, env.dsn.ret, action) {
        (true, _, _) => Returned::Headers,
        (false, Some(Ret::Hdrs), _) => Returned::Headers,
        (false, Some(Ret::Full), _) => Returned::Full,
        (false, None, Action::Failed) => Returned::Full,
        (false, None, _) => Returned::Headers,
    };
    let tls_required_no = env.security.tls_optional && !env.security.requiretls;
    let message = dsn::build(&ReportContent {
        reporting_mta: &config.hostname,
        to,
        envid: env.dsn.envid.as_deref(),
        arrival: env.arrival,
        recipients,
        original,
        returned,
        tls_required_no,
    })?;
    let report_id = crate::queue::new_queue_id();
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        id: report_id,
        sender: String::new(),
        recipients: vec![RecipientSpec {
            address: to.to_owned(),
            // RFC 3461 §6.2: a report asks for no reports.
            notify: Some(vec![Notify::Never]),
            orcpt: None,
        }],
        arrival: chrono::Utc::now().timestamp(),
        dsn: Default::default(),
        security: SecurityRecord {
            tls_optional: tls_required_no,
            ..Default::default()
        },
        smtputf8: !to.is_ascii(),
        eight_bit: !message.is_ascii(),
        submitted_by: String::new(),
        report: Some(kind),
    };
    tracing::info!(queue_id = %env.id, report_id = %envelope.id, to = %to,
        action = ?action, recipients = recipients.len(), "delivery report queued");
    Ok(Report { envelope, message })
}

#[cfg(test)]
mod tests;
