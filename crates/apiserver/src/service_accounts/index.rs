//! The uids of the live service accounts and pods, by `namespace/name`, kept by a list and
//! watch of the store, so that a token is checked from memory on every request and a token
//! whose account or pod is gone is refused as soon as the watch tells (well under a second).
//! Every API server keeps its own, from the shared store, so several servers agree.

use crate::transformer::Transformer;
use kumo_store::{Event, EventKind, KeyValue, Revision, Store};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a follower waits before listing again after the store failed it, or after a watch
/// that ended within [`SHORT_WATCH`] (so a store that keeps ending watches is not spun on).
const RELIST_DELAY: Duration = Duration::from_millis(500);
const SHORT_WATCH: Duration = Duration::from_secs(1);

/// The live objects of one store prefix.
pub struct Table {
    prefix: String,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// uid by `namespace/name`.
    uids: HashMap<String, String>,
    /// The store revision this table reflects: every write at or below it is in.
    applied: Revision,
    synced: bool,
}

#[derive(Deserialize)]
struct Stored {
    #[serde(default)]
    metadata: StoredMeta,
}

#[derive(Deserialize, Default)]
struct StoredMeta {
    #[serde(default)]
    uid: String,
}

impl Table {
    pub fn new(prefix: impl Into<String>) -> Self {
        Table {
            prefix: prefix.into(),
            inner: RwLock::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The uid of the live object `ns/name`.
    pub fn uid(&self, ns: &str, name: &str) -> Option<String> {
        self.read().uids.get(&format!("{ns}/{name}")).cloned()
    }

    pub fn synced(&self) -> bool {
        self.read().synced
    }

    /// `ns/name` of a key under the prefix.
    fn id<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)
    }

    fn uid_of(t: &Transformer, kv: &KeyValue) -> Option<String> {
        let plain = t.from_storage(&kv.key, &kv.value).ok()?.plain;
        let stored: Stored = serde_json::from_slice(&plain).ok()?;
        Some(stored.metadata.uid).filter(|u| !u.is_empty())
    }

    /// Replaces the table with a list read at `revision`.
    fn reset(&self, t: &Transformer, kvs: &[KeyValue], revision: Revision) {
        let uids = kvs
            .iter()
            .filter_map(|kv| Some((self.id(&kv.key)?.to_string(), Self::uid_of(t, kv)?)))
            .collect();
        *self.write() = Inner {
            uids,
            applied: revision,
            synced: true,
        };
    }

    fn apply(&self, t: &Transformer, event: &Event) {
        let Some(id) = self.id(&event.kv.key) else {
            return;
        };
        let uid = match event.kind {
            EventKind::Put => Self::uid_of(t, &event.kv),
            EventKind::Delete => None,
        };
        let mut inner = self.write();
        match uid {
            Some(uid) => inner.uids.insert(id.to_string(), uid),
            None => inner.uids.remove(id),
        };
        inner.applied = inner.applied.max(event.revision());
    }

    /// Records an object a handler just read from the store at `mod_revision`, unless the
    /// watch is already past it (it may have seen the object go since): the handler's answer
    /// (a token) is then usable at once, without waiting for the watch.
    pub fn observe(&self, ns: &str, name: &str, uid: &str, mod_revision: Revision) {
        let mut inner = self.write();
        if inner.synced && mod_revision > inner.applied {
            inner.uids.insert(format!("{ns}/{name}"), uid.to_string());
        }
    }

    /// Lists the prefix into the table; returns the revision to watch from.
    pub async fn list(&self, store: &dyn Store, t: &Transformer) -> Result<Revision, String> {
        let (kvs, revision) = store
            .list(&self.prefix)
            .await
            .map_err(|e| format!("listing {}: {e}", self.prefix))?;
        self.reset(t, &kvs, revision);
        Ok(revision)
    }

    /// Follows the store from `revision` until `stop` resolves: every change is applied in
    /// order; when the watch ends or its history is gone, the table is listed again.
    pub async fn follow(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        t: Arc<Transformer>,
        revision: Revision,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::select! {
            _ = stop => {}
            _ = self.follow_forever(store, t, revision) => {}
        }
    }

    async fn follow_forever(
        &self,
        store: Arc<dyn Store>,
        t: Arc<Transformer>,
        mut revision: Revision,
    ) {
        loop {
            let started = tokio::time::Instant::now();
            match store.watch(&self.prefix, revision).await {
                Ok(mut events) => {
                    while let Some(event) = events.next().await {
                        match event {
                            Ok(event) => self.apply(&t, &event),
                            Err(e) => {
                                tracing::debug!(prefix = %self.prefix, error = %e, "index watch ended; listing again");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(prefix = %self.prefix, error = %e, "index watch refused; listing again")
                }
            }
            if started.elapsed() < SHORT_WATCH {
                tokio::time::sleep(RELIST_DELAY).await;
            }
            loop {
                match self.list(store.as_ref(), &t).await {
                    Ok(r) => {
                        revision = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot list for the service-account token index");
                        tokio::time::sleep(RELIST_DELAY).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_store::MemStore;

    fn obj(uid: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"metadata": {"uid": uid}})).unwrap()
    }

    #[tokio::test]
    async fn the_table_follows_creates_deletes_and_late_observations() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let t = Arc::new(Transformer::identity());
        store.create("/p/a/web", obj("u1")).await.unwrap();
        let table = Arc::new(Table::new("/p/"));
        let rev = table.list(store.as_ref(), &t).await.unwrap();
        assert_eq!(table.uid("a", "web").as_deref(), Some("u1"));
        tokio::spawn(
            table
                .clone()
                .follow(store.clone(), t.clone(), rev, std::future::pending()),
        );
        let created = store.create("/p/a/db", obj("u2")).await.unwrap();
        let gone = store.delete("/p/a/web", None).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while table.uid("a", "web").is_some() || table.uid("a", "db").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the watch applies");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A handler that read `web` before its delete does not bring it back.
        table.observe("a", "web", "u1", gone.mod_revision - 1);
        assert_eq!(table.uid("a", "web"), None);
        // One that read an object newer than the watch's position records it.
        table.observe("a", "new", "u3", created.mod_revision + 100);
        assert_eq!(table.uid("a", "new").as_deref(), Some("u3"));
    }
}
