//! The `Store` trait: a revisioned key-value store with watches, and its backends.
//!
//! Keys are strings (`/registry/pods/default/web`), values opaque bytes. Every write gets the
//! next global revision; watches replay history after a revision, then follow live writes.
//! This crate knows nothing of kinds or JSON.

use async_trait::async_trait;

mod etcd_store;
mod mem;
mod op;
mod redb_store;
/// For tests, this crate's and others': a real etcd on free loopback ports.
#[doc(hidden)]
pub mod test_etcd;
mod watch;

#[cfg(test)]
mod tests;

pub use etcd_store::{EtcdConfig, EtcdStore};
pub use mem::MemStore;
pub use redb_store::RedbStore;
pub use watch::{event_bytes, WatchStream, WatchWindow, DEFAULT_WINDOW, DEFAULT_WINDOW_BYTES};

/// A global, monotonic revision number. 0 means "before any write".
pub type Revision = u64;

/// A stored value with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a delete event: the delete's revision).
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One committed change, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put` the new value; for `Delete` the last value, with `mod_revision` the delete's.
    pub kv: KeyValue,
    /// True when a `Put` created the key.
    pub created: bool,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// The caller's expected revision is stale.
    #[error("key {key:?} was modified at revision {current}")]
    Conflict { key: String, current: Revision },
    /// The requested revision is older than the kept history.
    #[error("revision {requested} is compacted (oldest kept: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("storage: {0}")]
    Backend(String),
    /// The backend refuses a value this large (etcd's `--max-request-bytes`, 1.5 MiB by
    /// default): the request is at fault, not the store.
    #[error("{0}")]
    TooLarge(String),
}

/// What every backend provides. All writes are durable before they return.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key under `prefix`, sorted, with the revision the list was read at.
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;
    /// Creates `key`; `AlreadyExists` if present.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;
    /// Replaces `key`; with `expected`, `Conflict` unless the stored mod_revision equals it.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError>;
    /// Removes `key`, returning its last value with `mod_revision` set to the delete's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;
    /// Events under `prefix` with revision > `after`, in order, without gaps, then live ones.
    /// `Compacted` when `after` is older than the kept history.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;
    /// The revision of the last committed write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}
