//! The relayhost listener: an ESMTP server for the local MTA (Postfix,
//! Exim, an application speaking SMTP), and the same protocol on standard
//! input and output for `sendmail -bs`.
//!
//! A message comes in through a [`session`] (commands parsed by
//! [`command`], the DATA section decoded by [`data`], AUTH checked by
//! [`auth`], STARTTLS certificates from [`tls`]) and is left in the
//! maildrop exactly as `sendmail` leaves it; `smarthost serve`
//! ([`server`]) holds the queue, picks it up at once and delivers it.
//! Nothing here delivers mail or decides TLS policy for the next hop.
//!
//! Who may relay: clients whose address is in `[listen] allow` (loopback
//! by default), the local user of `sendmail -bs`, and clients that
//! authenticated over TLS with a user of `[listen] auth_file`. Every
//! recipient is relayed (there is no local delivery), so nobody else gets
//! past MAIL.

pub mod auth;
pub mod command;
pub mod data;
pub mod server;
pub mod session;
pub mod tls;

pub use session::{Client, MessageSink, Session, SessionEnd, Settings};

use std::sync::Arc;

use crate::queue::file::Envelope;
use crate::queue::{QueueDir, QueueError};

/// The maildrop as a [`MessageSink`]: each message is deposited (written,
/// fsynced, renamed, directory fsynced) as `sendmail` does, and the
/// delivery loop, when there is one, is woken.
pub struct Maildrop {
    dir: QueueDir,
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl Maildrop {
    /// A sink depositing into `dir`'s maildrop, waking `wake` after each
    /// message.
    pub fn new(dir: QueueDir, wake: Option<Arc<tokio::sync::Notify>>) -> Self {
        Self { dir, wake }
    }
}

impl MessageSink for Maildrop {
    fn store(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        self.dir.ensure_maildrop()?;
        self.dir.deposit(envelope, message)
    }

    fn accepted(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }
}
