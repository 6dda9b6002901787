//! `smarthost queue check`: a read-only look for damage in the queue.
//!
//! Nothing here repairs or moves anything; it lists what a person should
//! look at. The store is opened (so a running owner makes the check fail
//! as busy) but only read.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::file;
use super::store::Store;
use super::{list_queue_files, QueueDir, QueueError};

/// A maildrop temporary file older than this is reported: a submission
/// writes and renames its file within moments of reading its input.
const TEMPORARY_AGE_SECS: u64 = 600;

/// One thing wrong with the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A queue entry in the store cannot be decoded.
    UnreadableEntry {
        /// Its key.
        id: String,
        /// Why.
        reason: String,
    },
    /// A finished message's record cannot be decoded.
    UnreadableFinished {
        /// Its key.
        id: String,
        /// Why.
        reason: String,
    },
    /// A store entry whose queue file is missing; the next queue run drops
    /// the entry, taking the message as finished.
    EntryWithoutFile {
        /// The queue id.
        id: String,
    },
    /// A queue file in `messages/` without a store entry; the next queue
    /// run enters it again from its envelope.
    FileWithoutEntry {
        /// The file.
        path: PathBuf,
    },
    /// A queue file (in `messages/` or the maildrop) that cannot be read.
    UnreadableFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file set aside in `corrupt/`.
    Quarantined {
        /// The file.
        path: PathBuf,
    },
    /// A maildrop temporary file left by a submission that did not finish.
    StaleTemporary {
        /// The file.
        path: PathBuf,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnreadableEntry { id, reason } => {
                write!(f, "store entry {id} cannot be read: {reason}")
            }
            Self::UnreadableFinished { id, reason } => {
                write!(f, "finished record {id} cannot be read: {reason}")
            }
            Self::EntryWithoutFile { id } => write!(
                f,
                "store entry {id} has no queue file (the next queue run removes the entry)"
            ),
            Self::FileWithoutEntry { path } => write!(
                f,
                "{}: queue file without a store entry (the next queue run enters it again)",
                path.display()
            ),
            Self::UnreadableFile { path, reason } => {
                write!(f, "{}: unreadable queue file: {reason}", path.display())
            }
            Self::Quarantined { path } => {
                write!(f, "{}: set aside as unreadable", path.display())
            }
            Self::StaleTemporary { path } => write!(
                f,
                "{}: temporary file of a submission that did not finish",
                path.display()
            ),
        }
    }
}

/// Looks through the whole queue and returns every problem found. An error
/// means the check itself could not be made (the store is held by another
/// process, or a directory cannot be read).
pub fn check(dir: &QueueDir) -> Result<Vec<Problem>, QueueError> {
    let mut problems = Vec::new();
    let mut ids = Vec::new();
    if dir.store().is_dir() {
        let store = Store::open(&dir.store())?;
        for (id, record) in store.raw_entries()? {
            if let Err(e) = record {
                problems.push(Problem::UnreadableEntry {
                    id: id.clone(),
                    reason: e.to_string(),
                });
            }
            ids.push(id);
        }
        for (id, record) in store.raw_finished()? {
            if let Err(e) = record {
                problems.push(Problem::UnreadableFinished {
                    id,
                    reason: e.to_string(),
                });
            }
        }
    }
    for path in list_queue_files(&dir.messages())? {
        let id = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(problem) = unreadable(&path) {
            problems.push(problem);
        } else if !id.is_some_and(|id| ids.contains(&id)) {
            problems.push(Problem::FileWithoutEntry { path });
        }
    }
    for id in ids {
        if !dir.message_file(&id).exists() {
            problems.push(Problem::EntryWithoutFile { id });
        }
    }
    for path in list_queue_files(&dir.maildrop())? {
        problems.extend(unreadable(&path));
    }
    problems.extend(
        all_files(&dir.corrupt())?
            .into_iter()
            .map(|path| Problem::Quarantined { path }),
    );
    problems.extend(stale_temporaries(&dir.maildrop())?);
    Ok(problems)
}

/// The problem with a queue file, if it cannot be read back or its name
/// is not its queue id.
fn unreadable(path: &Path) -> Option<Problem> {
    let reason = match file::read(path, true) {
        Err(e) => e.to_string(),
        Ok((envelope, _)) if path.file_name() != Some(envelope.id.as_ref()) => {
            format!("the file name differs from its queue id {}", envelope.id)
        }
        Ok(_) => return None,
    };
    Some(Problem::UnreadableFile {
        path: path.to_owned(),
        reason,
    })
}

fn all_files(dir: &Path) -> Result<Vec<PathBuf>, QueueError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(QueueError::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        files.push(entry.map_err(|e| QueueError::io(dir, e))?.path());
    }
    files.sort();
    Ok(files)
}

fn stale_temporaries(maildrop: &Path) -> Result<Vec<Problem>, QueueError> {
    let mut found = Vec::new();
    for path in all_files(maildrop)? {
        let is_temporary = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp."));
        let old = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > TEMPORARY_AGE_SECS);
        if is_temporary && old {
            found.push(Problem::StaleTemporary { path });
        }
    }
    Ok(found)
}
