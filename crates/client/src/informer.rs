//! An informer: list, then watch, into a local cache, telling its owner what changed.
//!
//! It relists after `410 Gone`, resumes from the last seen revision after a dropped
//! connection, and survives a server restart.

use crate::client::{Client, ListParams, Watched};
use kumo_api::Resource;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What changed in the cache.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Added or modified.
    Applied(K),
    Deleted(K),
}

impl<K: Resource> Change<K> {
    pub fn object(&self) -> &K {
        match self {
            Change::Applied(k) | Change::Deleted(k) => k,
        }
    }
}

/// The cache key of an object: `ns/name`, or `name` for cluster-scoped kinds.
pub fn cache_key<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    match (K::NAMESPACED, &m.namespace) {
        (true, Some(ns)) => format!("{ns}/{}", m.name),
        (true, None) => format!("{}/{}", kumo_api::DEFAULT_NAMESPACE, m.name),
        (false, _) => m.name.clone(),
    }
}

/// The cache: each object behind an `Arc`, so a loop can hold many of them without copying.
type Cache<K> = Arc<RwLock<BTreeMap<String, Arc<K>>>>;

/// A read-only view of an informer's cache; cheap to clone.
pub struct Informer<K> {
    cache: Cache<K>,
    synced: watch::Receiver<bool>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            cache: self.cache.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K: Resource> Informer<K> {
    /// Starts listing and watching in the background; changes arrive on the returned channel.
    pub fn start(
        client: Client,
        ns: Option<String>,
        params: ListParams,
    ) -> (Self, mpsc::UnboundedReceiver<Change<K>>) {
        let cache = Arc::new(RwLock::new(BTreeMap::new()));
        let (synced_tx, synced) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, ns, params, cache.clone(), synced_tx, tx));
        (Informer { cache, synced }, rx)
    }

    /// Waits until the first list has filled the cache.
    pub async fn wait_synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }

    pub fn get(&self, key: &str) -> Option<K> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|k| K::clone(k))
    }

    /// The cached object under `key`, shared with the cache (no copy).
    pub fn get_shared(&self, key: &str) -> Option<Arc<K>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub fn list(&self) -> Vec<K> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|k| K::clone(k))
            .collect()
    }

    /// What `f` makes of each cached object, where it makes something (without cloning the rest).
    pub fn filter_map<T>(&self, mut f: impl FnMut(&K) -> Option<T>) -> Vec<T> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|k| f(k))
            .collect()
    }

    /// The cached objects `keep` accepts. Only those are cloned: a loop that needs a few of many
    /// objects (the pods still running among thousands that ended) pays for those few.
    pub fn list_filtered(&self, keep: impl Fn(&K) -> bool) -> Vec<K> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|k| keep(k))
            .map(|k| K::clone(k))
            .collect()
    }

    /// Like [`Informer::list_filtered`], but shares the objects with the cache instead of
    /// copying them, in key order (`cache_key`): for loops that read many objects every pass.
    pub fn list_filtered_shared(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|k| keep(k))
            .cloned()
            .collect()
    }
}

async fn run<K: Resource>(
    client: Client,
    ns: Option<String>,
    params: ListParams,
    cache: Cache<K>,
    synced: watch::Sender<bool>,
    tx: mpsc::UnboundedSender<Change<K>>,
) {
    let mut revision: Option<String> = None;
    let mut failures: u32 = 0;
    loop {
        if tx.is_closed() {
            return;
        }
        if revision.is_none() {
            match client.list::<K>(ns.as_deref(), &params).await {
                Ok(list) => {
                    let fresh: BTreeMap<String, Arc<K>> = list
                        .items
                        .into_iter()
                        .map(|k| (cache_key(&k), Arc::new(k)))
                        .collect();
                    let mut c = cache.write().unwrap_or_else(|e| e.into_inner());
                    for (key, old) in c.iter() {
                        if !fresh.contains_key(key) {
                            let _ = tx.send(Change::Deleted(K::clone(old)));
                        }
                    }
                    for (key, obj) in &fresh {
                        if c.get(key)
                            .map(|o| o.meta().resource_version != obj.meta().resource_version)
                            .unwrap_or(true)
                        {
                            let _ = tx.send(Change::Applied(K::clone(obj)));
                        }
                    }
                    *c = fresh;
                    drop(c);
                    revision = list.metadata.resource_version;
                    let _ = synced.send(true);
                    failures = 0;
                }
                Err(e) => {
                    tracing::debug!(kind = K::KIND, error = %e, "list failed");
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            }
        }
        let rv = revision.clone().unwrap_or_default();
        let mut stream = match client.watch::<K>(ns.as_deref(), &params, &rv).await {
            Ok(s) => s,
            Err(e) => {
                if e.is_gone() {
                    revision = None;
                } else {
                    tracing::debug!(kind = K::KIND, error = %e, "watch failed");
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                }
                continue;
            }
        };
        failures = 0;
        while let Some(item) = stream.next().await {
            let (change, rv) = match item {
                Ok(Watched::Added(k)) | Ok(Watched::Modified(k)) => {
                    let rv = k.meta().resource_version.clone();
                    cache
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(cache_key(&k), Arc::new(k.clone()));
                    (Some(Change::Applied(k)), rv)
                }
                Ok(Watched::Deleted(k)) => {
                    let rv = k.meta().resource_version.clone();
                    cache
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&cache_key(&k));
                    (Some(Change::Deleted(k)), rv)
                }
                Ok(Watched::Bookmark(rv)) => (None, Some(rv)),
                Ok(Watched::Error(status)) => {
                    if status.code == 410 {
                        revision = None;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(kind = K::KIND, error = %e, "watch stream broke");
                    break;
                }
            };
            if let Some(rv) = rv.filter(|r| !r.is_empty()) {
                revision = Some(rv);
            }
            if let Some(change) = change {
                if tx.send(change).is_err() {
                    return;
                }
            }
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(5)).min(2000))
}
