//! The queue: where a message waits, durably, until every recipient has a
//! final result.
//!
//! Layout of the queue directory (Postfix's split between a drop directory
//! and a private queue):
//!
//! * `maildrop/`: where `sendmail` leaves each new message as one fsynced
//!   [queue file](file). Any local user may write here (on a system install
//!   through a setgid group); nobody but the queue owner can list it.
//! * `messages/`: the queue files of accepted messages, moved here from the
//!   maildrop by pickup. Private to the queue owner.
//! * `store/`: the sled store of [queue entries](record::QueueEntry):
//!   recipient states, attempts, schedule. One process at a time holds it
//!   (the *owner*: a queue run, later the daemon).
//! * `status.json`: the owner's last listing, so `mailq` can answer while a
//!   long queue run holds the store.
//! * `corrupt/`: queue files that could not be read, kept for the operator.
//!
//! [`check`] looks for damage in all of these without changing anything.
//!
//! Submission never opens the store, so it neither waits for a running
//! delivery pass nor does store-wide work: it writes one file and syncs it.

pub mod admin;
pub mod check;
pub mod file;
pub mod record;
pub mod store;

mod owner;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use owner::{finished_record, Listing, Queue, StatusSnapshot};

use crate::config::{Config, SYSTEM_QUEUE_DIR};
use file::{Envelope, FileError};
use store::StoreError;

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A directory or file of the queue could not be created or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A queue file could not be written or read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No queue directory could be chosen.
    #[error("no queue directory: set queue_dir, or HOME for a per-user queue")]
    NoQueueDir,
}

impl QueueError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// True when the operating system refused access (the caller is not
    /// the queue owner).
    pub fn is_permission_denied(&self) -> bool {
        use std::error::Error as _;
        let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
        match self {
            Self::Io { source, .. } => denied(source),
            Self::Store(StoreError::Sled {
                source: sled::Error::Io(e),
                ..
            }) => denied(e),
            Self::Store(StoreError::Sync { source, .. }) => denied(source),
            other => {
                let mut cause = other.source();
                while let Some(c) = cause {
                    if c.downcast_ref::<std::io::Error>().is_some_and(denied) {
                        return true;
                    }
                    cause = c.source();
                }
                false
            }
        }
    }

    /// True when a record in the store cannot be decoded: retrying will not
    /// help, a person must look (`queue check`).
    pub fn is_damaged(&self) -> bool {
        matches!(self, Self::Store(StoreError::Record { .. }))
    }

    /// True when another process holds the store.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Store(StoreError::Busy { .. }))
    }
}

/// The queue directory and the paths inside it.
#[derive(Debug, Clone)]
pub struct QueueDir {
    root: PathBuf,
}

impl QueueDir {
    /// Picks the queue directory: `queue_dir` from the configuration, else
    /// the system queue when it exists, else a per-user queue under
    /// `$XDG_STATE_HOME/smarthost` or `~/.local/state/smarthost` (a user
    /// trying smarthost without installing it).
    pub fn locate(config: &Config) -> Result<Self, QueueError> {
        if let Some(dir) = &config.queue_dir {
            return Ok(Self::at(dir));
        }
        if Path::new(SYSTEM_QUEUE_DIR).is_dir() {
            return Ok(Self::at(Path::new(SYSTEM_QUEUE_DIR)));
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| Path::new(v).is_absolute())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| Path::new(&h).join(".local/state"))
            })
            .ok_or(QueueError::NoQueueDir)?;
        Ok(Self::at(&state.join("smarthost")))
    }

    /// A queue at `root`.
    pub fn at(root: &Path) -> Self {
        Self { root: root.into() }
    }

    /// The queue directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where new messages are dropped.
    pub fn maildrop(&self) -> PathBuf {
        self.root.join("maildrop")
    }

    /// Queue files of accepted messages.
    pub fn messages(&self) -> PathBuf {
        self.root.join("messages")
    }

    /// The sled store.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Unreadable queue files.
    pub fn corrupt(&self) -> PathBuf {
        self.root.join("corrupt")
    }

    /// Copies of the records of finished messages, one JSON file each, so
    /// that `queue show` can read them while a queue run or the daemon
    /// holds the store.
    pub fn finished_dir(&self) -> PathBuf {
        self.root.join("finished")
    }

    /// The owner's last listing.
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// The queue file of an accepted message.
    pub fn message_file(&self, id: &str) -> PathBuf {
        self.messages().join(id)
    }

    /// True when the current effective user owns the queue directory (and
    /// can therefore run deliveries from it).
    pub fn owned_by_me(&self) -> bool {
        fs::metadata(&self.root)
            .map(|m| m.uid() == nix::unistd::geteuid().as_raw())
            .unwrap_or(false)
    }

    /// Creates the queue directory and its maildrop when they are missing,
    /// private to the current user. A system install creates them with
    /// `smarthost queue init` instead, with the modes that let every local
    /// user submit.
    pub fn ensure_maildrop(&self) -> Result<(), QueueError> {
        let maildrop = self.maildrop();
        if maildrop.is_dir() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&maildrop)
            .map_err(|e| QueueError::io(&maildrop, e))
    }

    /// Creates the system layout: the root readable by all, the maildrop
    /// writable and readable by `group` through a setgid `sendmail` (read
    /// access lets a submission fsync the directory; the binary lists the
    /// maildrop only for the queue owner), or writable by everyone with the
    /// sticky bit when no group is given, and the private parts for the
    /// owner only.
    pub fn init(&self, group: Option<nix::unistd::Gid>) -> Result<(), QueueError> {
        use std::os::unix::fs::PermissionsExt;
        let set_mode = |path: &Path, mode: u32| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| QueueError::io(path, e))
        };
        for dir in [
            self.root.clone(),
            self.maildrop(),
            self.messages(),
            self.corrupt(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| QueueError::io(&dir, e))?;
        }
        set_mode(&self.root, 0o755)?;
        let maildrop = self.maildrop();
        match group {
            Some(gid) => {
                nix::unistd::chown(&maildrop, None, Some(gid))
                    .map_err(|e| QueueError::io(&maildrop, e.into()))?;
                set_mode(&maildrop, 0o1770)?;
            }
            None => set_mode(&maildrop, 0o1733)?,
        }
        set_mode(&self.messages(), 0o700)?;
        set_mode(&self.corrupt(), 0o700)
    }

    /// Leaves a message in the maildrop, durably: the file is written under
    /// a temporary name, fsynced, renamed to its queue id, and the directory
    /// is fsynced. Only then may `sendmail` exit 0.
    pub fn deposit(&self, envelope: &Envelope, message: &[u8]) -> Result<(), QueueError> {
        let maildrop = self.maildrop();
        let tmp = maildrop.join(format!(".tmp.{}", envelope.id));
        let done = maildrop.join(&envelope.id);
        let result = file::write_new(&tmp, deposit_mode(&maildrop), envelope, message)
            .map_err(QueueError::from)
            .and_then(|()| fs::rename(&tmp, &done).map_err(|e| QueueError::io(&done, e)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        crate::crashpoint::reached("maildrop-renamed");
        match sync_dir(&maildrop) {
            // A submitter who may write the maildrop but not read it (a
            // world-writable maildrop, or one made before the group could
            // read it) cannot open the directory to fsync it. syncfs(2) on
            // the new file's file system makes the rename durable instead.
            Err(QueueError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                let file = fs::File::open(&done).map_err(|e| QueueError::io(&done, e))?;
                nix::unistd::syncfs(&file).map_err(|e| QueueError::io(&maildrop, e.into()))
            }
            other => other,
        }
    }

    /// Queue files waiting in the maildrop, oldest first. Temporary files of
    /// submissions in progress are skipped.
    pub fn maildrop_files(&self) -> Result<Vec<PathBuf>, QueueError> {
        list_queue_files(&self.maildrop())
    }
}

/// The mode of a maildrop file: readable by the queue owner, who may be
/// another user (reading through the setgid group, or as "other" on a
/// sticky world-writable maildrop, whose names nobody else can list).
fn deposit_mode(maildrop: &Path) -> u32 {
    let mine = fs::metadata(maildrop).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw());
    if mine {
        // The queue owner's own maildrop (a per-user queue, or reports and
        // the listener): nobody else needs to read it.
        0o600
    } else if nix::unistd::getegid() != nix::unistd::getgid() {
        0o640
    } else {
        0o644
    }
}

/// The queue files in `dir`, sorted by name (queue ids sort by time).
fn list_queue_files(dir: &Path) -> Result<Vec<PathBuf>, QueueError> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(QueueError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| QueueError::io(dir, e))?;
        let name = entry.file_name();
        if is_queue_id(&name) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn is_queue_id(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| {
        !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// fsyncs a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| QueueError::io(dir, e))
}

/// A new queue id: the arrival time in microseconds and 24 random bits, in
/// upper-case hexadecimal, so that ids sort by arrival and stay unique
/// across processes submitting in the same microsecond.
pub fn new_queue_id() -> String {
    let micros = chrono::Utc::now().timestamp_micros().max(0);
    format!("{micros:014X}{:06X}", fastrand::u32(..1 << 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_sort_by_time_and_are_names() {
        let a = new_queue_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_queue_id();
        assert!(a < b);
        assert!(is_queue_id(OsStr::new(&a)));
        assert!(!is_queue_id(OsStr::new(".tmp.X")));
        assert!(!is_queue_id(OsStr::new("../x")));
    }
}
