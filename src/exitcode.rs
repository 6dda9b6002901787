//! Process exit statuses from `sysexits.h`, the codes sendmail callers read.
//!
//! PHP's `mail()` treats both 0 and [`TEMPFAIL`] as success, so `TEMPFAIL`
//! is only returned where nothing was stored and a retry by the caller is the
//! right thing; a message that could not be written is [`CANTCREAT`].

/// Success: the message is durable in the queue, or the command completed.
pub const OK: i32 = 0;
/// Command line usage error, including "no recipients".
pub const USAGE: i32 = 64;
/// The input message or an address in it is malformed.
pub const DATAERR: i32 = 65;
/// Cannot read the input.
pub const NOINPUT: i32 = 66;
/// A service (the queue owner, a helper) is not available.
pub const UNAVAILABLE: i32 = 69;
/// Internal software error.
pub const SOFTWARE: i32 = 70;
/// Operating system error (no user name for the uid, fork failed).
pub const OSERR: i32 = 71;
/// The queue or a spool file cannot be created or written.
pub const CANTCREAT: i32 = 73;
/// Input/output error.
pub const IOERR: i32 = 74;
/// Temporary failure; nothing was stored and the caller should retry.
pub const TEMPFAIL: i32 = 75;
/// Permission denied.
pub const NOPERM: i32 = 77;
/// Configuration error.
pub const CONFIG: i32 = 78;
