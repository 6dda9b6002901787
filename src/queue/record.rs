//! The mutable state of a queued message, kept in the sled store.
//!
//! A [`QueueEntry`] holds the message's [`Envelope`] and, per recipient, its
//! state and the last result, plus the attempt counters. It is stored as
//! JSON with a version field so later versions can add fields and still read
//! old entries.

use serde::{Deserialize, Serialize};

use super::file::Envelope;

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Not yet delivered; will be tried (again).
    Pending,
    /// Accepted by the next hop.
    Delivered,
    /// Permanently failed.
    Failed,
}

/// What the TLS layer of an attempt achieved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSummary {
    /// Protocol version, as "TLSv1.3", or "plaintext".
    pub version: String,
    /// Cipher suite, empty for plaintext.
    #[serde(default)]
    pub cipher: String,
    /// Certificate outcome: "verified", "unverified: <reason>", "not checked".
    #[serde(default)]
    pub certificate: String,
}

/// The result of the last attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptResult {
    /// When, seconds since the Unix epoch.
    pub at: i64,
    /// The host that answered (MX or relay name), if one was reached.
    #[serde(default)]
    pub host: Option<String>,
    /// Its address.
    #[serde(default)]
    pub ip: Option<String>,
    /// What protection the connection had.
    #[serde(default)]
    pub tls: Option<TlsSummary>,
    /// The SMTP reply, one line, if the failure or success came with one.
    #[serde(default)]
    pub reply: Option<String>,
    /// Enhanced status code (RFC 3463) that describes the outcome.
    #[serde(default)]
    pub status: String,
    /// A human-readable account of the outcome.
    pub detail: String,
    /// The protection the attempt had, as the policy layer saw it.
    #[serde(default)]
    pub protection: Option<Protection>,
    /// The receiving server offered DSN (RFC 3461): it took the report
    /// requests on, so no "relayed" report is due from here.
    #[serde(default)]
    pub remote_dsn: bool,
}

/// What protected (or would have protected) a copy on its way to a host:
/// the facts a sender asks about after delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// The MX answer was DNSSEC-secure (for a relayhost: its address
    /// answer).
    pub mx_dnssec: bool,
    /// How the certificate was authenticated: `dane-ee`, `dane-ta`,
    /// `pkix`, or `none`.
    pub verification: String,
    /// What the policy aimed for: `dane`, `dane-unusable`, `pkix`,
    /// `encrypt`, `opportunistic`, `none`.
    pub policy: String,
    /// REQUIRETLS was sent on MAIL (RFC 8689 §4.2.1 step 6).
    pub requiretls: bool,
    /// The message carried `TLS-Required: No` and the sender's request was
    /// followed (RFC 8689 §4.2.2).
    #[serde(default)]
    pub tls_required_no: bool,
}

/// One recipient's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    /// The address.
    pub address: String,
    /// Its state.
    pub status: RecipientStatus,
    /// The last attempt's result.
    #[serde(default)]
    pub last: Option<AttemptResult>,
}

/// A message in the queue: envelope plus delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Format version of the record.
    pub version: u32,
    /// The envelope as submitted.
    pub envelope: Envelope,
    /// Size of the message content in bytes.
    pub size: u64,
    /// Recipient states, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Earliest time of the next attempt, seconds since the Unix epoch.
    #[serde(default)]
    pub next_attempt: i64,
    /// Time of the last attempt.
    #[serde(default)]
    pub last_attempt: Option<i64>,
    /// When the message left the queue (no recipient pending); set on the
    /// record kept after the content is removed.
    #[serde(default)]
    pub finished_at: Option<i64>,
    /// The delay warning (RFC 3464 `Action: delayed`) has been sent.
    #[serde(default)]
    pub delay_warned: bool,
    /// Put on hold by the administrator (`queue hold`): not attempted
    /// until released.
    #[serde(default)]
    pub held: bool,
}

/// Version of [`QueueEntry`] records written now. Version 2 added the
/// per-attempt [`Protection`] and `finished_at`; version 1 records read as
/// version 2 ones without them.
pub const ENTRY_VERSION: u32 = 2;

impl QueueEntry {
    /// A fresh entry for a newly picked-up message: every recipient pending,
    /// due at once.
    pub fn new(envelope: Envelope, size: u64) -> Self {
        let recipients = envelope
            .recipients
            .iter()
            .map(|r| RecipientState {
                address: r.address.clone(),
                status: RecipientStatus::Pending,
                last: None,
            })
            .collect();
        Self {
            version: ENTRY_VERSION,
            next_attempt: envelope.arrival,
            envelope,
            size,
            recipients,
            attempts: 0,
            last_attempt: None,
            finished_at: None,
            delay_warned: false,
            held: false,
        }
    }

    /// The queue id.
    pub fn id(&self) -> &str {
        &self.envelope.id
    }

    /// True when no recipient is pending: the message can leave the queue.
    pub fn is_finished(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status != RecipientStatus::Pending)
    }

    /// Indexes of pending recipients.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.status == RecipientStatus::Pending)
            .map(|(i, _)| i)
    }
}
