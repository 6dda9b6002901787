//! The queue file: one message's envelope and content, written once.
//!
//! The same format is used in the maildrop (written by `sendmail`) and in
//! the queue's `messages/` directory (moved there by pickup), so a message
//! can always be rebuilt from its file alone, whatever state the sled store
//! is in. The layout is a magic line, one line of JSON with the
//! [`Envelope`], then the message exactly as it goes on the wire before
//! dot-stuffing (CRLF line ends):
//!
//! ```text
//! SMARTHOST-QUEUE-FILE 1\n
//! {"version":1,"id":"...",...}\n
//! <message bytes>
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::envelope::{DsnRequest, Notify, SecurityRecord};

const MAGIC: &[u8] = b"SMARTHOST-QUEUE-FILE 1\n";

/// The stored format's version; readers accept this and older versions.
pub const ENVELOPE_VERSION: u32 = 1;

/// One recipient as submitted, with its per-recipient DSN options
/// (RFC 3461 §4.1, §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSpec {
    /// The address, domain in A-labels.
    pub address: String,
    /// `NOTIFY=` for this recipient.
    #[serde(default)]
    pub notify: Option<Vec<Notify>>,
    /// `ORCPT=` exactly as received (`rfc822;xtext`).
    #[serde(default)]
    pub orcpt: Option<String>,
}

/// Everything about a message that does not change after it is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`] when written.
    pub version: u32,
    /// Queue id.
    pub id: String,
    /// Envelope sender; empty for the null reverse-path.
    pub sender: String,
    /// Recipients in submission order.
    pub recipients: Vec<RecipientSpec>,
    /// Arrival time, seconds since the Unix epoch.
    pub arrival: i64,
    /// DSN options for the message.
    #[serde(default)]
    pub dsn: DsnRequest,
    /// TLS requirements that follow the message.
    #[serde(default)]
    pub security: SecurityRecord,
    /// An address needs SMTPUTF8 (RFC 6531).
    #[serde(default)]
    pub smtputf8: bool,
    /// The content has 8-bit octets (RFC 6152).
    #[serde(default)]
    pub eight_bit: bool,
    /// Local user who submitted it (from the real uid).
    #[serde(default)]
    pub submitted_by: String,
    /// Set on delivery reports smarthost made itself, so that a report
    /// about a report goes to the postmaster once and no further.
    #[serde(default)]
    pub report: Option<ReportKind>,
}

/// Who a report smarthost made is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportKind {
    /// The original message's sender.
    ToSender,
    /// The postmaster, about a report that could not be delivered.
    ToPostmaster,
}

/// A queue file that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a queue file.
    #[error("{path}: not a smarthost queue file: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl FileError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Writes a queue file at `path` (which must not exist) with mode `mode`,
/// and fsyncs it. The caller renames it into place and syncs the directory.
pub fn write_new(
    path: &Path,
    mode: u32,
    envelope: &Envelope,
    message: &[u8],
) -> Result<(), FileError> {
    let json = serde_json::to_vec(envelope).map_err(|e| FileError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| FileError::io(path, e))?;
    let mut head = Vec::with_capacity(MAGIC.len() + json.len() + 1);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&json);
    head.push(b'\n');
    file.write_all(&head)
        .and_then(|()| file.write_all(message))
        .map_err(|e| FileError::io(path, e))?;
    crate::crashpoint::reached("maildrop-written");
    file.sync_all().map_err(|e| FileError::io(path, e))?;
    crate::crashpoint::reached("maildrop-synced");
    Ok(())
}

/// Reads only the envelope of a queue file, and the size of its message.
pub fn read_envelope(path: &Path) -> Result<(Envelope, u64), FileError> {
    let (envelope, _, offset, len) = read_parts(path, false)?;
    Ok((envelope, len.saturating_sub(offset as u64)))
}

/// Reads a queue file: its envelope and, when `with_message`, the message.
pub fn read(path: &Path, with_message: bool) -> Result<(Envelope, Vec<u8>), FileError> {
    let (envelope, message, _, _) = read_parts(path, with_message)?;
    Ok((envelope, message))
}

type Parts = (Envelope, Vec<u8>, usize, u64);

fn read_parts(path: &Path, with_message: bool) -> Result<Parts, FileError> {
    let mut file = File::open(path).map_err(|e| FileError::io(path, e))?;
    let len = file.metadata().map_err(|e| FileError::io(path, e))?.len();
    let mut data = Vec::new();
    if with_message {
        file.read_to_end(&mut data)
            .map_err(|e| FileError::io(path, e))?;
    } else {
        // The envelope line is small; read until its newline only.
        let mut buf = [0u8; 8192];
        loop {
            let n = file.read(&mut buf).map_err(|e| FileError::io(path, e))?;
            data.extend_from_slice(&buf[..n]);
            let done = data.len() > MAGIC.len() && data[MAGIC.len()..].contains(&b'\n');
            if n == 0 || done || data.len() > 1 << 20 {
                break;
            }
        }
    }
    parse(path, data, with_message).map(|(e, m, offset)| (e, m, offset, len))
}

fn parse(
    path: &Path,
    mut data: Vec<u8>,
    with_message: bool,
) -> Result<(Envelope, Vec<u8>, usize), FileError> {
    let corrupt = |reason: &str| FileError::Corrupt {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    if !data.starts_with(MAGIC) {
        return Err(corrupt("bad magic line"));
    }
    let rest = &data[MAGIC.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("envelope line not terminated"))?;
    let envelope: Envelope =
        serde_json::from_slice(&rest[..end]).map_err(|e| corrupt(&format!("envelope: {e}")))?;
    if envelope.version > ENVELOPE_VERSION {
        return Err(corrupt(&format!(
            "envelope version {} is newer than this program understands",
            envelope.version
        )));
    }
    let offset = MAGIC.len() + end + 1;
    let message = if with_message {
        data.split_off(offset)
    } else {
        Vec::new()
    };
    Ok((envelope, message, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            id: "ABC".into(),
            sender: "a@example.org".into(),
            recipients: vec![RecipientSpec {
                address: "b@example.org".into(),
                notify: None,
                orcpt: None,
            }],
            arrival: 1,
            dsn: DsnRequest::default(),
            security: SecurityRecord::default(),
            smtputf8: false,
            eight_bit: true,
            submitted_by: "root".into(),
            report: None,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let msg = b"Subject: x\r\n\r\nbody \xff\r\n";
        write_new(&p, 0o600, &sample(), msg).unwrap();
        let (env, body) = read(&p, true).unwrap();
        assert_eq!(env, sample());
        assert_eq!(body, msg);
        assert_eq!(read_envelope(&p).unwrap(), (sample(), msg.len() as u64));
        // Never overwrites.
        assert!(write_new(&p, 0o600, &sample(), msg).is_err());
    }

    #[test]
    fn older_records_without_new_fields_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let json = br#"{"version":1,"id":"X","sender":"","recipients":[{"address":"b@example.org"}],"arrival":5}"#;
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(json);
        data.extend_from_slice(b"\nbody\r\n");
        std::fs::write(&p, data).unwrap();
        let (env, body) = read(&p, true).unwrap();
        assert_eq!(env.id, "X");
        assert!(!env.security.requiretls);
        assert_eq!(body, b"body\r\n");
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        for bad in [
            &b""[..],
            b"hello",
            b"SMARTHOST-QUEUE-FILE 1\n{",
            b"SMARTHOST-QUEUE-FILE 1\n{}\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(matches!(read(&p, true), Err(FileError::Corrupt { .. })));
        }
    }
}
