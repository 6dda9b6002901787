//! The sled store: queue entries (envelope, recipient states, security
//! record), keyed by queue id.
//!
//! Message contents stay in the spool files beside it; sled holds only the
//! small, changing records, with a bounded cache. sled 0.34's `flush()`
//! writes with `sync_file_range`, which neither flushes the device cache nor
//! file metadata, so [`Store::sync`] follows it with an `fsync` of every file
//! of the store and of its directory; only after that is a change durable.
//!
//! sled lets one process open a store at a time; a second opener gets
//! [`StoreError::Busy`] at once rather than waiting.

use std::path::{Path, PathBuf};

use super::record::QueueEntry;

/// The sled page cache size. The default (1 GiB) is far more than a queue
/// of envelopes needs, and sled does not give memory back.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the store.
    #[error("{path}: the queue store is in use by another smarthost process")]
    Busy {
        /// The store directory.
        path: PathBuf,
    },
    /// sled reported an error.
    #[error("{path}: queue store error: {source}")]
    Sled {
        /// The store directory.
        path: PathBuf,
        /// The sled error.
        #[source]
        source: sled::Error,
    },
    /// Syncing the store's files failed.
    #[error("{path}: cannot sync the queue store: {source}")]
    Sync {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("{path}: queue record {id}: {source}")]
    Record {
        /// The store directory.
        path: PathBuf,
        /// The queue id.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// A record's id and the record, or why it cannot be decoded.
pub type RawRecord = (String, Result<QueueEntry, StoreError>);

/// The open store. Dropping it releases the lock.
pub struct Store {
    db: sled::Db,
    /// Records of messages that have left the queue, kept for
    /// `delivered_retention` so the sender can still learn what protection
    /// each copy got.
    finished: sled::Tree,
    dir: PathBuf,
}

/// The name of the sled tree holding finished messages' records.
const FINISHED_TREE: &str = "finished";

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| match &source {
                // sled reports the held lock as an io error of kind Other
                // whose text names the lock (fs2's try_lock_exclusive).
                sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                    StoreError::Busy { path: dir.into() }
                }
                _ => StoreError::Sled {
                    path: dir.into(),
                    source,
                },
            })?;
        let finished = db
            .open_tree(FINISHED_TREE)
            .map_err(|source| StoreError::Sled {
                path: dir.into(),
                source,
            })?;
        Ok(Self {
            db,
            finished,
            dir: dir.into(),
        })
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.dir.clone(),
            source,
        }
    }

    /// Reads one entry.
    pub fn get(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        let Some(bytes) = self.db.get(id).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        self.decode(id, &bytes).map(Some)
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Result<QueueEntry, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Record {
            path: self.dir.clone(),
            id: id.into(),
            source,
        })
    }

    /// Writes one entry (not yet durable: call [`Store::sync`]).
    pub fn put(&self, entry: &QueueEntry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(|source| StoreError::Record {
            path: self.dir.clone(),
            id: entry.id().into(),
            source,
        })?;
        self.db
            .insert(entry.id(), bytes)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Removes one entry (not yet durable: call [`Store::sync`]).
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.db.remove(id).map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Moves an entry to the records of finished messages (not yet durable:
    /// call [`Store::sync`]).
    pub fn finish(&self, entry: &QueueEntry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(|source| StoreError::Record {
            path: self.dir.clone(),
            id: entry.id().into(),
            source,
        })?;
        self.finished
            .insert(entry.id(), bytes)
            .map_err(|e| self.sled_err(e))?;
        self.db.remove(entry.id()).map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// The record of a finished message.
    pub fn finished(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        let Some(bytes) = self.finished.get(id).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        self.decode(id, &bytes).map(Some)
    }

    /// Removes the records of messages that finished before `before`
    /// (seconds since the Unix epoch); returns how many went.
    pub fn purge_finished(&self, before: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in self.finished.iter() {
            let (k, v) = item.map_err(|e| self.sled_err(e))?;
            let id = String::from_utf8_lossy(&k).into_owned();
            // A record that cannot be read is kept for the operator.
            let Ok(entry) = self.decode(&id, &v) else {
                continue;
            };
            if entry.finished_at.unwrap_or(0) < before {
                self.finished.remove(&k).map_err(|e| self.sled_err(e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// All queue ids, in order (ids sort by arrival).
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        self.db
            .iter()
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| self.sled_err(e))
            })
            .collect()
    }

    /// All entries, in id order. An undecodable record is reported with its
    /// id rather than skipped.
    pub fn entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.db
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| self.sled_err(e))?;
                self.decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }

    /// Every queue entry with its id, decoded or not, for `queue check`.
    pub fn raw_entries(&self) -> Result<Vec<RawRecord>, StoreError> {
        self.raw(&self.db)
    }

    /// Every finished message's record with its id, decoded or not.
    pub fn raw_finished(&self) -> Result<Vec<RawRecord>, StoreError> {
        self.raw(&self.finished)
    }

    fn raw(&self, tree: &sled::Tree) -> Result<Vec<RawRecord>, StoreError> {
        tree.iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| self.sled_err(e))?;
                let id = String::from_utf8_lossy(&k).into_owned();
                let decoded = self.decode(&id, &v);
                Ok((id, decoded))
            })
            .collect()
    }

    /// Makes every change so far durable: sled's flush, then an fsync of
    /// each file of the store and of the directories holding them.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.sled_err(e))?;
        fsync_tree(&self.dir)
    }
}

/// fsyncs every regular file under `dir`, then each directory.
fn fsync_tree(dir: &Path) -> Result<(), StoreError> {
    let sync_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Sync { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(sync_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(sync_err(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(sync_err(&path))?;
        if kind.is_dir() {
            fsync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(sync_err(&path))?;
        }
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(sync_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::file::{Envelope, RecipientSpec, ENVELOPE_VERSION};

    fn entry(id: &str) -> QueueEntry {
        QueueEntry::new(
            Envelope {
                version: ENVELOPE_VERSION,
                id: id.into(),
                sender: String::new(),
                recipients: vec![RecipientSpec {
                    address: "a@example.org".into(),
                    notify: None,
                    orcpt: None,
                }],
                arrival: 0,
                dsn: Default::default(),
                security: Default::default(),
                smtputf8: false,
                eight_bit: false,
                submitted_by: String::new(),
                report: None,
            },
            10,
        )
    }

    #[test]
    fn second_opener_is_told_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // sled's lock is a per-process file lock (fcntl/flock on the db
        // file); a second handle in the same process must also be refused
        // for the guarantee to mean anything across processes.
        match Store::open(dir.path()) {
            Err(StoreError::Busy { .. }) => {}
            Err(e) => panic!("expected Busy, got {e}"),
            Ok(_) => panic!("expected Busy, got a second handle"),
        }
        drop(store);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn entries_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put(&entry("B")).unwrap();
            store.put(&entry("A")).unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.ids().unwrap(), ["A", "B"]);
        assert_eq!(store.get("A").unwrap().unwrap(), entry("A"));
        store.remove("A").unwrap();
        store.sync().unwrap();
        assert_eq!(store.entries().unwrap().len(), 1);
    }

    #[test]
    fn finished_records_outlive_the_entry_until_purged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut old = entry("A");
            old.finished_at = Some(100);
            let mut new = entry("B");
            new.finished_at = Some(200);
            store.put(&old).unwrap();
            store.finish(&old).unwrap();
            store.finish(&new).unwrap();
            store.sync().unwrap();
            assert!(store.get("A").unwrap().is_none(), "no longer queued");
            assert!(store.ids().unwrap().is_empty());
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.finished("A").unwrap().unwrap().finished_at, Some(100));
        assert_eq!(store.purge_finished(150).unwrap(), 1);
        assert!(store.finished("A").unwrap().is_none());
        assert!(store.finished("B").unwrap().is_some());
    }
}
