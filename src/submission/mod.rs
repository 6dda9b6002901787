//! Submission: turning what an application hands to `sendmail` into an
//! envelope and a message ready for the queue.
//!
//! [`args`] parses sendmail's command line, [`read_message`] reads the
//! input, and [`prepare`] does what a submission agent does to a message
//! (RFC 6409 §8, as Postfix's cleanup and dma do for `sendmail`): it finds
//! the recipients, removes `Bcc:`, `Resent-Bcc:`, `Return-Path:` and
//! `Content-Length:`, qualifies bare local names, adds `Date:`,
//! `Message-ID:` and `From:` when missing, and makes every line fit the
//! 998-octet limit of RFC 5322 §2.1.1. Nothing else in the message is
//! rewritten.

pub mod address;
pub mod args;
pub mod header;
mod input;
mod lines;

use std::collections::BTreeMap;

pub use input::read_message;

use crate::envelope::DsnRequest;
use crate::exitcode;
use address::{AddressError, ParsedAddress};
use args::SendmailArgs;
use header::{Field, Message};

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Standard input could not be read.
    #[error("cannot read the message: {0}")]
    Read(#[source] std::io::Error),
    /// The input is larger than `max_message_size`.
    #[error("message is larger than max_message_size ({limit} bytes); nothing was queued")]
    TooBig {
        /// The limit.
        limit: u64,
    },
    /// An address is malformed.
    #[error("{origin}: {source}; nothing was queued")]
    BadAddress {
        /// Where it was found: "recipient argument", "-f", "To: header".
        origin: String,
        /// What is wrong with it.
        #[source]
        source: AddressError,
    },
    /// No recipient on the command line, nor in the headers with `-t`.
    #[error("no recipients (give them as arguments, or use -t to read To:, Cc: and Bcc:)")]
    NoRecipients,
    /// A configured alias is not an address.
    #[error("[aliases] {name}: {source}")]
    BadAlias {
        /// The alias.
        name: String,
        /// What is wrong with its value.
        #[source]
        source: AddressError,
    },
}

impl SubmitError {
    /// The sysexits status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Read(_) => exitcode::IOERR,
            Self::TooBig { .. } | Self::BadAddress { .. } => exitcode::DATAERR,
            Self::NoRecipients => exitcode::USAGE,
            Self::BadAlias { .. } => exitcode::CONFIG,
        }
    }
}

/// What submission needs to know about the system and the caller.
#[derive(Debug, Clone)]
pub struct SubmitContext {
    /// Domain for the default sender and for bare local names.
    pub domain: String,
    /// This host's name, for `Message-ID:`.
    pub hostname: String,
    /// `[aliases]`: bare local name (or `default`) to address list.
    pub aliases: BTreeMap<String, String>,
    /// The submitting user's login name, from the real uid.
    pub real_user: String,
    /// The user's full name from the password database, if any.
    pub gecos_name: Option<String>,
    /// `$NAME`, if set.
    pub env_name: Option<String>,
    /// The submission time, in local time.
    pub now: chrono::DateTime<chrono::FixedOffset>,
    /// The queue id the message will get.
    pub queue_id: String,
}

/// A message ready to be queued.
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    /// The message, CRLF line ends, not dot-stuffed.
    pub message: Vec<u8>,
    /// The envelope sender; empty for the null reverse-path.
    pub sender: String,
    /// Envelope recipients, de-duplicated, domains in A-labels.
    pub recipients: Vec<String>,
    /// DSN options from `-N`, `-R`, `-V`, `-B`.
    pub dsn: DsnRequest,
    /// The message carries `TLS-Required: No` (RFC 8689 §3).
    pub tls_required_no: bool,
    /// An envelope address has a UTF-8 local part (RFC 6531).
    pub smtputf8: bool,
    /// The message has octets above 127 (RFC 6152).
    pub eight_bit: bool,
}

/// Header fields that are always removed: blind copies must stay blind,
/// and the others describe a previous delivery (RFC 5321 §4.4 for
/// Return-Path) or a mailbox format.
const DROPPED_FIELDS: &[&str] = &["Bcc", "Resent-Bcc", "Return-Path", "Content-Length"];

/// Fields whose bare local names are qualified with the domain.
const ADDRESS_FIELDS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
];

/// Prepares a message read by [`read_message`] for the queue.
pub fn prepare(
    args: &SendmailArgs,
    raw: Vec<u8>,
    ctx: &SubmitContext,
) -> Result<PreparedMessage, SubmitError> {
    let mut message = Message::parse(&raw);
    drop(raw);

    let sender = envelope_sender(args, ctx)?;
    let recipients = envelope_recipients(args, &message, ctx)?;

    message.remove(DROPPED_FIELDS);
    for field in &mut message.fields {
        if ADDRESS_FIELDS.iter().any(|n| field.is(n)) {
            qualify_field(field, &ctx.domain);
        }
    }
    add_missing_fields(&mut message, args, ctx, &sender);

    let tls_required_no = tls_required_no(&message);

    let message = lines::fit_line_length(message.to_bytes());
    let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
    let eight_bit = message.iter().any(|&b| b >= 0x80);
    Ok(PreparedMessage {
        message,
        sender,
        recipients,
        dsn: args.dsn.clone(),
        tls_required_no,
        smtputf8,
        eight_bit,
    })
}

/// True when the header has exactly one `TLS-Required:` field and its
/// value is `No` (RFC 8689 §3, the only value defined). A repeated field or
/// another value is treated as absent, so that nothing but a clear request
/// weakens the delivery policy. Used by submission and the SMTP listener.
pub fn tls_required_no(message: &Message) -> bool {
    let tls_required: Vec<&Field> = message
        .fields
        .iter()
        .filter(|f| f.is("TLS-Required"))
        .collect();
    matches!(tls_required.as_slice(), [only]
        if String::from_utf8_lossy(only.value_bytes()).trim().eq_ignore_ascii_case("no"))
}

/// `-f`/`-r` (its first address; `<>` or empty is the null sender), else
/// the real user at the domain.
fn envelope_sender(args: &SendmailArgs, ctx: &SubmitContext) -> Result<String, SubmitError> {
    let Some(given) = &args.sender else {
        return Ok(format!("{}@{}", ctx.real_user, ctx.domain));
    };
    if given.trim().is_empty() {
        return Ok(String::new());
    }
    let bad = |source| SubmitError::BadAddress {
        origin: "sender (-f)".into(),
        source,
    };
    let list = address::parse_list(given, true).map_err(bad)?;
    let first = list.first().ok_or_else(|| {
        bad(AddressError {
            text: given.clone(),
            reason: "no address".into(),
        })
    })?;
    if first.is_null() {
        return Ok(String::new());
    }
    canonical(first, &ctx.domain, given).map_err(bad)
}

/// `local@domain` with the domain in A-labels; a bare name gets `domain`.
fn canonical(addr: &ParsedAddress, domain: &str, whole: &str) -> Result<String, AddressError> {
    match &addr.domain {
        Some(d) => Ok(format!(
            "{}@{}",
            addr.local,
            address::normalise_domain(whole, d)?
        )),
        None => Ok(format!("{}@{domain}", addr.local)),
    }
}

/// The command-line recipients and, with `-t`, those of the header: the
/// `Resent-To/Cc/Bcc` of the newest resent block when there is one (RFC
/// 5322 §3.6.6), else `To`, `Cc` and `Bcc`. The union, without duplicates,
/// in order of appearance.
fn envelope_recipients(
    args: &SendmailArgs,
    message: &Message,
    ctx: &SubmitContext,
) -> Result<Vec<String>, SubmitError> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |list: Vec<ParsedAddress>, text: &str, origin: &str| {
        for addr in list {
            for a in resolve_recipient(&addr, text, ctx, origin)? {
                if !out.iter().any(|o| same_address(o, &a)) {
                    out.push(a);
                }
            }
        }
        Ok::<_, SubmitError>(())
    };
    for word in &args.recipients {
        let list = address::parse_list(word, false).map_err(|source| SubmitError::BadAddress {
            origin: "recipient argument".into(),
            source,
        })?;
        add(list, word, "recipient argument")?;
    }
    if args.extract_recipients {
        for field in recipient_fields(message) {
            let text = String::from_utf8_lossy(field.value_bytes()).into_owned();
            let origin = format!("{}: header", field.name);
            let list =
                address::parse_list(&text, false).map_err(|source| SubmitError::BadAddress {
                    origin: origin.clone(),
                    source,
                })?;
            add(list, &text, &origin)?;
        }
    }
    if out.is_empty() {
        return Err(SubmitError::NoRecipients);
    }
    Ok(out)
}

fn recipient_fields(message: &Message) -> Vec<&Field> {
    let resent_start = message
        .fields
        .iter()
        .position(|f| f.name.len() > 7 && f.name[..7].eq_ignore_ascii_case("resent-"));
    if let Some(start) = resent_start {
        // The newest block is the first run of Resent-* fields; trace
        // fields may sit among them (RFC 5322 §3.6.6, §3.6.7).
        let block = message.fields[start..].iter().take_while(|f| {
            (f.name.len() > 7 && f.name[..7].eq_ignore_ascii_case("resent-"))
                || f.is("Received")
                || f.is("Return-Path")
        });
        let wanted: Vec<&Field> = block
            .filter(|f| f.is("Resent-To") || f.is("Resent-Cc") || f.is("Resent-Bcc"))
            .collect();
        if !wanted.is_empty() {
            return wanted;
        }
    }
    message
        .fields
        .iter()
        .filter(|f| f.is("To") || f.is("Cc") || f.is("Bcc"))
        .collect()
}

/// One recipient as the envelope gets it: a bare local name goes to its
/// `[aliases]` entry (or the `default` one), else to the name at the
/// domain.
fn resolve_recipient(
    addr: &ParsedAddress,
    text: &str,
    ctx: &SubmitContext,
    origin: &str,
) -> Result<Vec<String>, SubmitError> {
    if addr.domain.is_none() {
        let name = addr.local.to_ascii_lowercase();
        if let Some((alias, target)) = ctx
            .aliases
            .get_key_value(&name)
            .or_else(|| ctx.aliases.get_key_value("default"))
        {
            let bad = |source| SubmitError::BadAlias {
                name: alias.clone(),
                source,
            };
            let list = address::parse_list(target, false).map_err(bad)?;
            return list
                .iter()
                .map(|a| canonical(a, &ctx.domain, target).map_err(bad))
                .collect();
        }
    }
    canonical(addr, &ctx.domain, text)
        .map(|a| vec![a])
        .map_err(|source| SubmitError::BadAddress {
            origin: origin.to_owned(),
            source,
        })
}

/// Addresses are the same when the local parts are equal and the domains
/// equal ignoring case (RFC 5321 §2.4: only the receiving host may treat
/// local parts as case-insensitive).
fn same_address(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((la, da)), Some((lb, db))) => la == lb && da.eq_ignore_ascii_case(db),
        _ => a == b,
    }
}

/// Appends `@domain` to every bare local name in an address field, leaving
/// the rest of the field as written. A field that does not parse is left
/// alone: it is the author's text, and delivery does not depend on it.
fn qualify_field(field: &mut Field, domain: &str) {
    let offset = field.value_offset();
    let Ok(value) = std::str::from_utf8(field.value_bytes()) else {
        return;
    };
    let Ok(list) = address::parse_list(value, false) else {
        return;
    };
    let mut raw = field.raw.clone();
    for addr in list.iter().rev().filter(|a| a.domain.is_none()) {
        let at = offset + addr.span.end;
        raw.splice(at..at, format!("@{domain}").into_bytes());
    }
    field.raw = raw;
}

fn add_missing_fields(
    message: &mut Message,
    args: &SendmailArgs,
    ctx: &SubmitContext,
    sender: &str,
) {
    if message.get("From").is_none() {
        let address = if sender.is_empty() {
            format!("{}@{}", ctx.real_user, ctx.domain)
        } else {
            sender.to_owned()
        };
        let name = args
            .full_name
            .clone()
            .or_else(|| ctx.env_name.clone())
            .or_else(|| ctx.gecos_name.clone());
        message.fields.push(from_field(name.as_deref(), &address));
    }
    if message.get("Date").is_none() {
        message
            .fields
            .push(Field::new("Date", &ctx.now.to_rfc2822()));
    }
    if message.get("Message-ID").is_none() {
        let id = format!(
            "<{}.{:08x}@{}>",
            ctx.queue_id,
            fastrand::u32(..),
            ctx.hostname
        );
        message.fields.push(Field::new("Message-ID", &id));
    }
}

/// `From: Full Name <address>`, the name quoted or RFC 2047-encoded as
/// needed. lettre does the encoding; an address lettre's stricter syntax
/// refuses (a quoted local part, say) is written without a name.
fn from_field(name: Option<&str>, address: &str) -> Field {
    use lettre::message::header::{From, Headers};
    use lettre::message::{Mailbox, Mailboxes};
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if let (Some(name), Ok(addr)) = (name, address.parse::<lettre::Address>()) {
        let mut headers = Headers::new();
        headers.set(From::from(Mailboxes::from(Mailbox::new(
            Some(name.to_owned()),
            addr,
        ))));
        let rendered = headers.to_string();
        if let Some(value) = rendered
            .strip_prefix("From:")
            .and_then(|r| r.strip_suffix("\r\n"))
        {
            return Field::new("From", value.trim_start());
        }
    }
    Field::new("From", address)
}

#[cfg(test)]
mod tests;
