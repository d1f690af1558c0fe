//! `RedbStore`: the embedded, durable backend on a redb file.
//!
//! Three tables: `kv` (key → create revision, mod revision, value), `events` (revision → the
//! event, the log watchers replay) and `meta` (current and compacted revision). Every write is one
//! write transaction committed with immediate durability before it returns; a crash loses no
//! acknowledged write. Writes that arrive while a commit is in progress are committed together
//! in the next transaction (group commit): one fsync for all of them, each acknowledged only
//! after it. The log keeps what the watch hub keeps (the newest events within the [`WatchWindow`]
//! in events and in bytes), trimmed a few per write, and is reloaded into the hub on open (newest
//! first, only what the window allows), so a watch resumes across a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::op::{self, Write};
use crate::watch::{event_bytes, WatchHub, WatchWindow};
use crate::{Event, EventKind, KeyValue, Revision, Store, StoreError, WatchStream};

/// key → (create revision, mod revision, value)
const KV: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("kv");
/// revision → (event code, key, create revision, value); the revision is the mod revision
const EVENTS: TableDefinition<u64, (u8, &str, u64, &[u8])> = TableDefinition::new("events");
/// `revision` and `compacted`
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// At most this many old events are trimmed from the log per write.
const TRIM_PER_WRITE: u64 = 8;

const CODE_UPDATED: u8 = 0;
const CODE_CREATED: u8 = 1;
const CODE_DELETED: u8 = 2;

/// A store in one redb file.
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    window: WatchWindow,
    /// Serializes commits, and with them the order events reach the hub.
    log: Mutex<Log>,
    /// Writes waiting for the next commit.
    pending: Mutex<Vec<Pending>>,
    hub: WatchHub,
}

/// A write waiting for its commit, and where its outcome goes.
struct Pending {
    key: String,
    write: Write,
    done: std::sync::mpsc::Sender<Result<KeyValue, StoreError>>,
}

/// What the last commit left in `meta`.
#[derive(Debug, Clone, Copy)]
struct Log {
    revision: Revision,
    /// Events at or below this revision are gone from the `events` table.
    compacted: Revision,
}

/// Creates `path` empty with mode 0600 (redb initializes an empty file), or sets an existing
/// one to 0600.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o7777 != 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

impl RedbStore {
    /// Opens (or creates) the database at `path`, keeping the history `window` allows for
    /// watchers (a number alone bounds the events and keeps the default byte bound). The file
    /// is 0600 (it holds every object, Secrets included), tightened if found looser.
    pub fn open(path: &Path, window: impl Into<WatchWindow>) -> Result<Self, StoreError> {
        let window = window.into();
        private_file(path).map_err(|e| {
            StoreError::Backend(format!("cannot make {} private: {e}", path.display()))
        })?;
        let db = Database::create(path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        let (log, events) = {
            let mut meta = txn.open_table(META).map_err(backend)?;
            let revision = meta_value(&meta, META_REVISION)?;
            let compacted = meta_value(&meta, META_COMPACTED)?;
            meta.insert(META_REVISION, revision).map_err(backend)?;
            meta.insert(META_COMPACTED, compacted).map_err(backend)?;
            txn.open_table(KV).map_err(backend)?;
            let table = txn.open_table(EVENTS).map_err(backend)?;
            let from = (compacted + 1).max((revision + 1).saturating_sub(window.events as u64));
            // Newest first, so that no more than the window is ever read into memory.
            let (mut events, mut bytes, mut expected) = (Vec::new(), 0usize, revision);
            for entry in table.range(from..=revision).map_err(backend)?.rev() {
                let (rev, value) = entry.map_err(backend)?;
                if rev.value() != expected {
                    break;
                }
                let event = decode_event(rev.value(), value.value())?;
                bytes = bytes.saturating_add(event_bytes(&event));
                if !events.is_empty() && bytes > window.bytes {
                    break;
                }
                events.push(event);
                expected -= 1;
            }
            let oldest = revision + 1 - events.len() as u64;
            if oldest > from && bytes <= window.bytes {
                return Err(StoreError::Backend(format!(
                    "event log has a gap between revisions {from} and {revision}"
                )));
            }
            events.reverse();
            (
                Log {
                    revision,
                    compacted,
                },
                events,
            )
        };
        txn.commit().map_err(backend)?;
        let hub = WatchHub::restore(window, log.revision, events);
        Ok(RedbStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db,
                window,
                log: Mutex::new(log),
                pending: Mutex::new(Vec::new()),
                hub,
            }),
        })
    }

    /// Runs `f` on a blocking thread: redb calls block on disk.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Backend(format!("storage task: {e}"))),
        }
    }

    /// How many events the on-disk log holds.
    #[cfg(test)]
    pub(crate) fn logged_events(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.inner.db.begin_read().map_err(backend)?;
        let events = txn.open_table(EVENTS).map_err(backend)?;
        events.len().map_err(backend)
    }

    async fn write(&self, key: &str, write: Write) -> Result<KeyValue, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.write(&key, write)).await
    }
}

impl Inner {
    /// Queues one write and returns once it is committed durably. Whoever holds the commit lock
    /// commits every write queued so far in one transaction, so writers arriving during a commit
    /// share the next one.
    fn write(&self, key: &str, write: Write) -> Result<KeyValue, StoreError> {
        let (done, outcome) = std::sync::mpsc::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending {
                key: key.to_owned(),
                write,
                done,
            });
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
            // Empty when an earlier holder of the lock committed this write already.
            if !batch.is_empty() {
                self.commit(&mut log, batch);
            }
        }
        outcome
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Backend("the write was not committed".into())))
    }

    /// Commits `batch` in one durable transaction, then publishes its events in order and tells
    /// each writer its outcome. A write refused by the rules (conflict, missing, exists) changes
    /// nothing and does not stop the others; a failed commit fails every write of the batch.
    fn commit(&self, log: &mut Log, batch: Vec<Pending>) {
        let mut outcomes: Vec<(Pending, Result<Event, StoreError>)> = Vec::new();
        let (started, writes) = (std::time::Instant::now(), batch.len());
        let result = (|| -> Result<(Revision, Revision), StoreError> {
            let mut txn = self.db.begin_write().map_err(backend)?;
            txn.set_durability(Durability::Immediate).map_err(backend)?;
            let mut revision = log.revision;
            let compacted = {
                let mut kv = txn.open_table(KV).map_err(backend)?;
                let mut events = txn.open_table(EVENTS).map_err(backend)?;
                for p in batch {
                    let current = kv
                        .get(p.key.as_str())
                        .map_err(backend)?
                        .map(|guard| decode_kv(&p.key, guard.value()));
                    let applied =
                        op::apply(&p.key, p.write.clone(), current.as_ref(), revision + 1);
                    if let Ok(event) = &applied {
                        revision += 1;
                        match event.kind {
                            EventKind::Put => {
                                let row = (
                                    event.kv.create_revision,
                                    revision,
                                    event.kv.value.as_slice(),
                                );
                                kv.insert(p.key.as_str(), row).map_err(backend)?;
                            }
                            EventKind::Delete => {
                                kv.remove(p.key.as_str()).map_err(backend)?;
                            }
                        }
                        events
                            .insert(revision, encode_event(event))
                            .map_err(backend)?;
                    }
                    outcomes.push((p, applied));
                }
                let written = revision - log.revision;
                // What the hub no longer keeps (by bytes, as of the last commit) goes too.
                let beyond_window = revision
                    .saturating_sub(self.window.events as u64)
                    .max(self.hub.compacted_revision());
                let compacted = beyond_window
                    .min(log.compacted + TRIM_PER_WRITE * written.max(1))
                    .max(log.compacted);
                for old in log.compacted + 1..=compacted {
                    events.remove(old).map_err(backend)?;
                }
                compacted
            };
            {
                let mut meta = txn.open_table(META).map_err(backend)?;
                meta.insert(META_REVISION, revision).map_err(backend)?;
                meta.insert(META_COMPACTED, compacted).map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok((revision, compacted))
        })();
        tracing::trace!(
            writes,
            us = started.elapsed().as_micros() as u64,
            "committed"
        );
        match result {
            Ok((revision, compacted)) => {
                *log = Log {
                    revision,
                    compacted,
                };
                for (p, applied) in outcomes {
                    let reply = applied.map(|event| {
                        let kv = event.kv.clone();
                        self.hub.publish(event);
                        kv
                    });
                    let _ = p.done.send(reply);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (p, applied) in outcomes {
                    let _ = p
                        .done
                        .send(applied.and(Err(StoreError::Backend(message.clone()))));
                }
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let kv = txn.open_table(KV).map_err(backend)?;
        let found = kv.get(key).map_err(backend)?;
        Ok(found.map(|guard| decode_kv(key, guard.value())))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = txn.open_table(META).map_err(backend)?;
        let revision = meta_value(&meta, META_REVISION)?;
        let kv = txn.open_table(KV).map_err(backend)?;
        let mut items = Vec::new();
        for entry in kv.range(prefix..).map_err(backend)? {
            let (key, value) = entry.map_err(backend)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            items.push(decode_kv(key, value.value()));
        }
        Ok((items, revision))
    }
}

fn meta_value(meta: &impl ReadableTable<&'static str, u64>, name: &str) -> Result<u64, StoreError> {
    Ok(meta
        .get(name)
        .map_err(backend)?
        .map_or(0, |guard| guard.value()))
}

fn decode_kv(key: &str, (create_revision, mod_revision, value): (u64, u64, &[u8])) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
    }
}

fn encode_event(event: &Event) -> (u8, &str, u64, &[u8]) {
    let code = match (event.kind, event.created) {
        (EventKind::Put, false) => CODE_UPDATED,
        (EventKind::Put, true) => CODE_CREATED,
        (EventKind::Delete, _) => CODE_DELETED,
    };
    let kv = &event.kv;
    (
        code,
        kv.key.as_str(),
        kv.create_revision,
        kv.value.as_slice(),
    )
}

fn decode_event(
    revision: Revision,
    (code, key, create_revision, value): (u8, &str, u64, &[u8]),
) -> Result<Event, StoreError> {
    let (kind, created) = match code {
        CODE_UPDATED => (EventKind::Put, false),
        CODE_CREATED => (EventKind::Put, true),
        CODE_DELETED => (EventKind::Delete, false),
        other => {
            return Err(StoreError::Backend(format!(
                "event log: unknown event code {other} at revision {revision}"
            )))
        }
    };
    Ok(Event {
        kind,
        kv: KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision: revision,
        },
        created,
    })
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write(key, Write::Create(value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.write(key, Write::Update { value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write(key, Write::Delete { expected }).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.inner.hub.watch(prefix, after)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.hub.current_revision())
    }
}
