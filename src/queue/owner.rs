//! The queue owner's view: pickup from the maildrop, recovery after a crash,
//! reading and updating entries, and the listing that `mailq` shows.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::file::{self, Envelope};
use super::record::QueueEntry;
use super::store::Store;
use super::{list_queue_files, sync_dir, QueueDir, QueueError};

/// Temporary maildrop files older than this belong to a submission that
/// died; they are removed at pickup.
const STALE_TMP_SECS: u64 = 24 * 3600;

/// The open queue, held by one process at a time.
pub struct Queue {
    dir: QueueDir,
    store: Store,
}

impl Queue {
    /// Opens the queue as its owner: creates the private directories when
    /// missing, takes the store (or fails at once with a busy error), and
    /// reconciles the store with the spool files.
    pub fn open(dir: &QueueDir) -> Result<Self, QueueError> {
        for d in [dir.maildrop(), dir.messages(), dir.corrupt(), dir.store()] {
            if !d.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| QueueError::io(&d, e))?;
            }
        }
        let store = Store::open(&dir.store())?;
        let queue = Self {
            dir: dir.clone(),
            store,
        };
        queue.recover()?;
        Ok(queue)
    }

    /// The queue directory.
    pub fn dir(&self) -> &QueueDir {
        &self.dir
    }

    /// Brings the store and `messages/` into agreement after a crash. A
    /// spool file without an entry was moved in by a pickup whose store
    /// update did not reach the disk: it is entered again from its own
    /// envelope. An entry without a spool file belongs to a message whose
    /// last recipient was done when the process stopped: it is dropped.
    fn recover(&self) -> Result<(), QueueError> {
        let ids = self.store.ids()?;
        let mut changed = false;
        for path in list_queue_files(&self.dir.messages())? {
            let id = file_name(&path);
            if ids.binary_search(&id).is_ok() {
                continue;
            }
            match file::read_envelope(&path) {
                Ok((envelope, size)) => {
                    tracing::warn!(queue_id = %id, "queue file without a store entry; entered again");
                    self.store.put(&QueueEntry::new(envelope, size))?;
                    changed = true;
                }
                Err(e) => self.quarantine(&path, &e.to_string())?,
            }
        }
        for id in ids {
            if !self.dir.message_file(&id).exists() {
                tracing::info!(queue_id = %id, "store entry without a queue file; removed");
                self.store.remove(&id)?;
                changed = true;
            }
        }
        if changed {
            self.store.sync()?;
        }
        Ok(())
    }

    /// Moves an unreadable queue file to `corrupt/` for the operator.
    fn quarantine(&self, path: &Path, reason: &str) -> Result<(), QueueError> {
        let target = self.dir.corrupt().join(file_name(path));
        tracing::error!(file = %path.display(), %reason, moved_to = %target.display(),
            "unreadable queue file set aside");
        fs::rename(path, &target).map_err(|e| QueueError::io(path, e))
    }

    /// Takes every message waiting in the maildrop into the queue. Each file
    /// is renamed into `messages/` (an atomic move on one file system) and
    /// entered in the store; the directories and the store are synced before
    /// this returns. Returns the ids taken.
    pub fn pickup(&self) -> Result<Vec<String>, QueueError> {
        self.remove_stale_temporaries();
        let mut taken = Vec::new();
        for path in self.dir.maildrop_files()? {
            let id = file_name(&path);
            let (mut envelope, size) = match file::read_envelope(&path) {
                Ok(v) => v,
                Err(e) => {
                    self.quarantine(&path, &e.to_string())?;
                    continue;
                }
            };
            if envelope.id != id {
                self.quarantine(&path, "file name and queue id differ")?;
                continue;
            }
            vouch_for_submitter(&path, &mut envelope);
            let target = self.dir.message_file(&id);
            fs::rename(&path, &target).map_err(|e| QueueError::io(&path, e))?;
            crate::crashpoint::reached("pickup-renamed");
            self.store.put(&QueueEntry::new(envelope, size))?;
            crate::crashpoint::reached("pickup-stored");
            taken.push(id);
        }
        if !taken.is_empty() {
            sync_dir(&self.dir.messages())?;
            sync_dir(&self.dir.maildrop())?;
            self.store.sync()?;
            for id in &taken {
                tracing::info!(queue_id = %id, "queued");
            }
        }
        Ok(taken)
    }

    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(self.dir.maildrop()) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry.file_name().to_string_lossy().starts_with(".tmp.")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > STALE_TMP_SECS);
            if stale {
                tracing::warn!(file = %entry.path().display(), "removing an abandoned partial submission");
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// All entries, in arrival order.
    pub fn entries(&self) -> Result<Vec<QueueEntry>, QueueError> {
        Ok(self.store.entries()?)
    }

    /// One entry.
    pub fn entry(&self, id: &str) -> Result<Option<QueueEntry>, QueueError> {
        Ok(self.store.get(id)?)
    }

    /// Removes a message from the queue without a trace but the log: its
    /// queue file, then its entry (`queue delete`). Returns false when
    /// there is no such message.
    pub fn delete(&self, id: &str) -> Result<bool, QueueError> {
        if self.store.get(id)?.is_none() {
            return Ok(false);
        }
        let path = self.dir.message_file(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(QueueError::io(&path, e)),
        }
        sync_dir(&self.dir.messages())?;
        self.store.remove(id)?;
        self.store.sync()?;
        Ok(true)
    }

    /// The record of a message that has left the queue.
    pub fn finished(&self, id: &str) -> Result<Option<QueueEntry>, QueueError> {
        Ok(self.store.finished(id)?)
    }

    /// Writes the readable copy of a finished record (informational: the
    /// store holds the authoritative one, so a failure is only logged).
    fn write_finished_copy(&self, record: &QueueEntry) {
        let dir = self.dir.finished_dir();
        let write = || -> std::io::Result<()> {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
            let tmp = dir.join(format!(".tmp.{}", record.id()));
            fs::write(&tmp, json)?;
            fs::rename(&tmp, dir.join(record.id()))
        };
        if let Err(e) = write() {
            tracing::warn!(queue_id = %record.id(), error = %e,
                "cannot write the readable copy of the finished record");
        }
    }

    /// Drops the records of messages that left the queue longer than
    /// `retention` ago.
    pub fn purge_finished(&self, retention: std::time::Duration) -> Result<(), QueueError> {
        let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let before = chrono::Utc::now().timestamp().saturating_sub(keep);
        let removed = self.store.purge_finished(before)?;
        // The readable copies go with them: any copy whose record is gone.
        if let Ok(entries) = fs::read_dir(self.dir.finished_dir()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if matches!(self.store.finished(&id), Ok(None)) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        if removed > 0 {
            self.store.sync()?;
            tracing::debug!(removed, "expired records of finished messages removed");
        }
        Ok(())
    }

    /// The message content of an entry.
    pub fn message(&self, id: &str) -> Result<Vec<u8>, QueueError> {
        let (_, message) = file::read(&self.dir.message_file(id), true)?;
        Ok(message)
    }

    /// Stores an entry's new state durably. When no recipient is pending the
    /// message leaves the queue: its spool file is removed first, then its
    /// entry (see [`Queue::recover`] for why this order).
    pub fn save(&self, entry: &QueueEntry) -> Result<(), QueueError> {
        if entry.is_finished() {
            let path = self.dir.message_file(entry.id());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(QueueError::io(&path, e)),
            }
            sync_dir(&self.dir.messages())?;
            let mut record = entry.clone();
            let now = chrono::Utc::now().timestamp();
            record.finished_at = Some(now);
            // Nothing is due any more.
            record.next_attempt = now;
            self.store.finish(&record)?;
            self.write_finished_copy(&record);
            tracing::info!(queue_id = %entry.id(), "removed from the queue: no recipient pending");
        } else {
            self.store.put(entry)?;
        }
        self.store.sync()?;
        crate::crashpoint::reached("saved");
        Ok(())
    }

    /// Writes the listing that `mailq` shows while this process holds the
    /// store. It is informational, so it is replaced atomically but not
    /// synced.
    pub fn write_snapshot(&self) -> Result<(), QueueError> {
        let snapshot = StatusSnapshot {
            written: chrono::Utc::now().timestamp(),
            entries: self.entries()?,
        };
        let path = self.dir.status_file();
        let tmp = self.dir.root().join(".status.json.tmp");
        let json = serde_json::to_vec(&snapshot).map_err(|e| QueueError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| QueueError::io(&path, e))
    }
}

/// A maildrop file is owned by the user who submitted it (the setgid
/// binary changes only the group), so its owner, not what the file says,
/// names the submitter. Files of the queue owner itself (the listener) are
/// taken as written.
fn vouch_for_submitter(path: &Path, envelope: &mut file::Envelope) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return;
    };
    if meta.uid() == nix::unistd::geteuid().as_raw() {
        return;
    }
    let owner = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    if envelope.submitted_by != owner {
        tracing::warn!(queue_id = %envelope.id, claimed = %envelope.submitted_by, %owner,
            "maildrop file names another submitter than its owner; the owner is recorded");
        envelope.submitted_by = owner;
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The listing written by the queue owner for readers.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// When it was written, seconds since the Unix epoch.
    pub written: i64,
    /// The entries at that time.
    pub entries: Vec<QueueEntry>,
}

/// What `mailq` shows.
#[derive(Debug)]
pub struct Listing {
    /// Entries of the queue.
    pub entries: Vec<QueueEntry>,
    /// Messages still in the maildrop (not yet picked up), when readable.
    pub waiting: Vec<(Envelope, u64)>,
    /// Set when the store was held by another process and `entries` comes
    /// from its snapshot written at this time.
    pub snapshot_time: Option<i64>,
}

/// The record of a message that has left the queue, read without taking
/// the queue from a running owner. `Ok(None)` when there is no such record;
/// an error when the store is held by another process.
pub fn finished_record(dir: &QueueDir, id: &str) -> Result<Option<QueueEntry>, QueueError> {
    if !dir.store().is_dir() {
        return Ok(None);
    }
    match Store::open(&dir.store()) {
        Ok(store) => Ok(store.finished(id)?),
        // Held by a queue run or the daemon: the readable copy.
        Err(e @ super::store::StoreError::Busy { .. }) => {
            if !super::is_queue_id(std::ffi::OsStr::new(id)) {
                return Ok(None);
            }
            match fs::read(dir.finished_dir().join(id)) {
                Ok(bytes) => {
                    serde_json::from_slice(&bytes)
                        .map(Some)
                        .map_err(|err| QueueError::Io {
                            path: dir.finished_dir().join(id),
                            source: std::io::Error::other(err),
                        })
                }
                Err(io) if io.kind() == std::io::ErrorKind::NotFound => Err(e.into()),
                Err(io) => Err(QueueError::io(&dir.finished_dir().join(id), io)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

impl Listing {
    /// Reads the queue for display without taking it from a running owner:
    /// the store when it is free, else the owner's snapshot.
    pub fn read(dir: &QueueDir) -> Result<Self, QueueError> {
        let mut waiting = Vec::new();
        // Only the queue owner (and root) sees what others have submitted
        // but not yet picked up: a setgid `sendmail` may read the maildrop
        // through its group, and must not show it to every local user.
        let may_list = dir.owned_by_me() || nix::unistd::geteuid().is_root();
        let dropped = if may_list {
            dir.maildrop_files().unwrap_or_default()
        } else {
            Vec::new()
        };
        for path in dropped {
            if let Ok(v) = file::read_envelope(&path) {
                waiting.push(v);
            }
        }
        if !dir.store().is_dir() {
            return Ok(Self {
                entries: Vec::new(),
                waiting,
                snapshot_time: None,
            });
        }
        match Store::open(&dir.store()) {
            Ok(store) => Ok(Self {
                entries: store.entries()?,
                waiting,
                snapshot_time: None,
            }),
            Err(e @ super::store::StoreError::Busy { .. }) => {
                let text = match fs::read(dir.status_file()) {
                    Ok(t) => t,
                    Err(_) => return Err(e.into()),
                };
                let snapshot: StatusSnapshot =
                    serde_json::from_slice(&text).map_err(|err| QueueError::Io {
                        path: dir.status_file(),
                        source: std::io::Error::other(err),
                    })?;
                Ok(Self {
                    entries: snapshot.entries,
                    waiting,
                    snapshot_time: Some(snapshot.written),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::file::{RecipientSpec, ENVELOPE_VERSION};
    use crate::queue::new_queue_id;
    use crate::queue::record::RecipientStatus;

    fn envelope() -> Envelope {
        Envelope {
            version: ENVELOPE_VERSION,
            id: new_queue_id(),
            sender: "s@example.org".into(),
            recipients: vec![RecipientSpec {
                address: "r@example.org".into(),
                notify: None,
                orcpt: None,
            }],
            arrival: 100,
            dsn: Default::default(),
            security: Default::default(),
            smtputf8: false,
            eight_bit: false,
            submitted_by: "root".into(),
            report: None,
        }
    }

    #[test]
    fn deposit_pickup_save_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = QueueDir::at(tmp.path());
        dir.ensure_maildrop().unwrap();
        let env = envelope();
        dir.deposit(&env, b"Subject: t\r\n\r\nhi\r\n").unwrap();
        let queue = Queue::open(&dir).unwrap();
        assert_eq!(queue.pickup().unwrap(), vec![env.id.clone()]);
        assert!(dir.maildrop_files().unwrap().is_empty());
        let mut entry = queue.entry(&env.id).unwrap().unwrap();
        assert_eq!(entry.size, 18);
        assert_eq!(queue.message(&env.id).unwrap(), b"Subject: t\r\n\r\nhi\r\n");
        entry.recipients[0].status = RecipientStatus::Delivered;
        queue.save(&entry).unwrap();
        assert!(queue.entry(&env.id).unwrap().is_none());
        assert!(!dir.message_file(&env.id).exists());
    }

    #[test]
    fn spool_file_without_entry_is_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = QueueDir::at(tmp.path());
        let env = envelope();
        {
            let queue = Queue::open(&dir).unwrap();
            queue.store.remove("nothing").unwrap();
        }
        // As if a pickup crashed after its rename and before the store sync.
        file::write_new(&dir.message_file(&env.id), 0o600, &env, b"x\r\n").unwrap();
        let queue = Queue::open(&dir).unwrap();
        assert!(queue.entry(&env.id).unwrap().is_some());
    }

    #[test]
    fn corrupt_maildrop_file_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = QueueDir::at(tmp.path());
        dir.ensure_maildrop().unwrap();
        fs::write(dir.maildrop().join("ABC123"), b"junk").unwrap();
        let queue = Queue::open(&dir).unwrap();
        assert!(queue.pickup().unwrap().is_empty());
        assert!(dir.corrupt().join("ABC123").exists());
    }

    #[test]
    fn listing_uses_snapshot_while_store_is_held() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = QueueDir::at(tmp.path());
        dir.ensure_maildrop().unwrap();
        dir.deposit(&envelope(), b"x\r\n").unwrap();
        let queue = Queue::open(&dir).unwrap();
        queue.pickup().unwrap();
        queue.write_snapshot().unwrap();
        dir.deposit(&envelope(), b"y\r\n").unwrap();
        let listing = Listing::read(&dir).unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.waiting.len(), 1);
        assert!(listing.snapshot_time.is_some());
        drop(queue);
        let listing = Listing::read(&dir).unwrap();
        assert!(listing.snapshot_time.is_none());
    }
}
