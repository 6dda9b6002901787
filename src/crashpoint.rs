//! A test hook that stops the process at a named point of submission or
//! delivery, so that the crash tests (`tests/crash.rs`) can check what a
//! crash at that exact moment leaves behind.
//!
//! When the environment variable `SMARTHOST_TEST_CRASH_AT` names a point,
//! the process calls [`std::process::abort`] on reaching it: no destructor
//! runs, no buffer is flushed, no lock is released except by the kernel, as
//! with SIGKILL. Without the variable (the normal case) a point does
//! nothing. The hook only ever aborts; it changes no other behaviour.
//!
//! The points, in the order a message meets them:
//!
//! * `maildrop-written`: the maildrop temporary file is written, not yet
//!   fsynced.
//! * `maildrop-synced`: the temporary file is fsynced, not yet renamed.
//! * `maildrop-renamed`: renamed to its queue id, the directory not yet
//!   fsynced (`sendmail` has not exited 0).
//! * `pickup-renamed`: pickup moved the file into `messages/`, no store
//!   entry yet.
//! * `pickup-stored`: the store entry is written, not yet synced.
//! * `data-accepted`: the server answered 2xx to the end of DATA, the
//!   queue is not yet updated.
//! * `saved`: the delivery result is saved and synced.

use std::sync::OnceLock;

/// The environment variable naming the point to abort at.
pub const VARIABLE: &str = "SMARTHOST_TEST_CRASH_AT";

/// Aborts the process when `SMARTHOST_TEST_CRASH_AT` is `point`.
pub fn reached(point: &str) {
    static CHOSEN: OnceLock<Option<String>> = OnceLock::new();
    let chosen = CHOSEN.get_or_init(|| std::env::var(VARIABLE).ok());
    if chosen.as_deref() == Some(point) {
        std::process::abort();
    }
}
