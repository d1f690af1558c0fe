//! An informer: list, then watch, into a local cache, telling its owner what changed.
//!
//! It relists after `410 Gone`, resumes from the last seen revision after a dropped
//! connection (on another API server when the client has several and its own is gone), and
//! survives a server restart.

use crate::client::{Client, ListParams, Watched};
use kumo_api::Resource;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
type Cache<K> = Arc<RwLock<Store<K>>>;

/// How long a deletion is remembered against a write assumed late (see `Informer::assume`).
const TOMBSTONE_FOR: Duration = Duration::from_secs(60);

/// The cached objects by key, and the keys deleted lately with their last revision: a write
/// whose answer came after its object's deletion event must not bring the object back.
struct Store<K> {
    objects: BTreeMap<String, Arc<K>>,
    deleted: BTreeMap<String, (u64, std::time::Instant)>,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            objects: BTreeMap::new(),
            deleted: BTreeMap::new(),
        }
    }
}

impl<K: Resource> Store<K> {
    /// Whether this revision of the object, or a later one, was seen (cached or deleted).
    /// Objects without a revision are never taken as seen.
    fn has_seen(&self, key: &str, obj: &K) -> bool {
        let revision = obj.meta().revision();
        revision > 0
            && (self
                .objects
                .get(key)
                .is_some_and(|c| c.meta().revision() >= revision)
                || self.deleted.get(key).is_some_and(|(r, _)| *r >= revision))
    }

    /// Applies a watched `Added`/`Modified` object; the change to report, if any.
    fn apply(&mut self, obj: K) -> Option<Change<K>> {
        let key = cache_key(&obj);
        if self.has_seen(&key, &obj) {
            return None;
        }
        self.deleted.remove(&key);
        self.objects.insert(key, Arc::new(obj.clone()));
        Some(Change::Applied(obj))
    }

    /// Applies a watched deletion.
    fn delete(&mut self, obj: &K) {
        let key = cache_key(obj);
        self.objects.remove(&key);
        self.deleted
            .retain(|_, (_, at)| at.elapsed() < TOMBSTONE_FOR);
        self.deleted
            .insert(key, (obj.meta().revision(), std::time::Instant::now()));
    }
}

/// A read-only view of an informer's cache; cheap to clone.
pub struct Informer<K> {
    cache: Cache<K>,
    synced: watch::Receiver<bool>,
    lists: Arc<AtomicU64>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            cache: self.cache.clone(),
            synced: self.synced.clone(),
            lists: self.lists.clone(),
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
        let cache = Arc::new(RwLock::new(Store::default()));
        let (synced_tx, synced) = watch::channel(false);
        let (tx, rx) = mpsc::unbounded_channel();
        let lists = Arc::new(AtomicU64::new(0));
        let feed = Feed {
            cache: cache.clone(),
            synced: synced_tx,
            lists: lists.clone(),
            tx,
        };
        tokio::spawn(run(client, ns, params, feed));
        (
            Informer {
                cache,
                synced,
                lists,
            },
            rx,
        )
    }

    /// How many lists the informer has made: one to start, one more for each relist (after
    /// `410 Gone`). A watch resumed after a broken stream, on the same server or another,
    /// lists nothing.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Waits until the first list has filled the cache.
    pub async fn wait_synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store<K>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<K> {
        self.read().objects.get(key).map(|k| K::clone(k))
    }

    /// The cached object under `key`, shared with the cache (no copy).
    pub fn get_shared(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    pub fn list(&self) -> Vec<K> {
        self.read().objects.values().map(|k| K::clone(k)).collect()
    }

    /// What `f` makes of each cached object, where it makes something (without cloning the rest).
    pub fn filter_map<T>(&self, mut f: impl FnMut(&K) -> Option<T>) -> Vec<T> {
        self.read().objects.values().filter_map(|k| f(k)).collect()
    }

    /// The cached objects `keep` accepts. Only those are cloned: a loop that needs a few of many
    /// objects (the pods still running among thousands that ended) pays for those few.
    pub fn list_filtered(&self, keep: impl Fn(&K) -> bool) -> Vec<K> {
        self.filter_map(|k| keep(k).then(|| k.clone()))
    }

    /// Like [`Informer::list_filtered`], but shares the objects with the cache instead of
    /// copying them: for loops that read many objects every pass.
    pub fn list_filtered_shared(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.read()
            .objects
            .values()
            .filter(|k| keep(k))
            .cloned()
            .collect()
    }

    /// Takes an object its owner just wrote, as the API returned it, into the cache (unless
    /// that revision or a later one was seen already, deletions included). The owner's next look
    /// sees its own write at once, and the write's watch event, arriving later, is no change:
    /// it is not reported (so it wakes no loop) and changes nothing (client-go's mutation cache).
    pub fn assume(&self, obj: K) {
        let mut store = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let key = cache_key(&obj);
        if !store.has_seen(&key, &obj) {
            store.objects.insert(key, Arc::new(obj));
        }
    }
}

/// Where the background task puts what it lists and watches.
struct Feed<K> {
    cache: Cache<K>,
    synced: watch::Sender<bool>,
    lists: Arc<AtomicU64>,
    tx: mpsc::UnboundedSender<Change<K>>,
}

async fn run<K: Resource>(client: Client, ns: Option<String>, params: ListParams, feed: Feed<K>) {
    let Feed {
        cache,
        synced,
        lists,
        tx,
    } = feed;
    let mut revision: Option<String> = None;
    let mut failures: u32 = 0;
    loop {
        if tx.is_closed() {
            return;
        }
        if revision.is_none() {
            match client.list::<K>(ns.as_deref(), &params).await {
                Ok(list) => {
                    lists.fetch_add(1, Ordering::Relaxed);
                    let fresh: BTreeMap<String, Arc<K>> = list
                        .items
                        .into_iter()
                        .map(|k| (cache_key(&k), Arc::new(k)))
                        .collect();
                    let mut c = cache.write().unwrap_or_else(|e| e.into_inner());
                    for (key, old) in c.objects.iter() {
                        if !fresh.contains_key(key) {
                            let _ = tx.send(Change::Deleted(K::clone(old)));
                        }
                    }
                    for (key, obj) in &fresh {
                        if c.objects
                            .get(key)
                            .map(|o| o.meta().resource_version != obj.meta().resource_version)
                            .unwrap_or(true)
                        {
                            let _ = tx.send(Change::Applied(K::clone(obj)));
                        }
                    }
                    c.objects = fresh;
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
        // A dropped receiver (a loop cancelled when its leadership was lost) ends the watch
        // at once, not at the next change.
        while let Some(item) = tokio::select! {
            item = stream.next() => item,
            _ = tx.closed() => return,
        } {
            let (change, rv) = match item {
                Ok(Watched::Added(k)) | Ok(Watched::Modified(k)) => {
                    let rv = k.meta().resource_version.clone();
                    let change = cache.write().unwrap_or_else(|e| e.into_inner()).apply(k);
                    (change, rv)
                }
                Ok(Watched::Deleted(k)) => {
                    let rv = k.meta().resource_version.clone();
                    cache.write().unwrap_or_else(|e| e.into_inner()).delete(&k);
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

/// The wait before a relist or rewatch after `failures` consecutive failures: 200 ms
/// doubling to 2 s.
fn backoff(failures: u32) -> Duration {
    crate::retry::delay(Duration::from_millis(200), Duration::from_secs(2), failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::Pod;

    fn pod(name: &str, rv: &str, phase: &str) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
            "status": {"phase": phase}
        }))
        .unwrap();
        p.metadata.resource_version = Some(rv.into());
        p
    }

    fn informer() -> Informer<Pod> {
        let (_, synced) = watch::channel(true);
        Informer {
            cache: Arc::default(),
            synced,
            lists: Arc::default(),
        }
    }

    fn phase(i: &Informer<Pod>) -> Option<String> {
        let p = i.get("default/a")?;
        Some(format!("{:?}@{}", p.status?.phase, p.metadata.revision()))
    }

    #[test]
    fn relists_back_off_from_200_ms_to_2_s() {
        let got: Vec<u64> = (1..=7).map(|f| backoff(f).as_millis() as u64).collect();
        assert_eq!(got, [200, 400, 800, 1600, 2000, 2000, 2000]);
    }

    #[test]
    fn an_assumed_write_is_seen_at_once_and_its_own_event_is_no_change() {
        let i = informer();
        assert!(i
            .cache
            .write()
            .unwrap()
            .apply(pod("a", "3", "Pending"))
            .is_some());
        // The owner's write (revision 5) is in the cache before its watch event.
        i.assume(pod("a", "5", "Running"));
        assert_eq!(phase(&i).as_deref(), Some("Running@5"));
        // Its own event, and an older one still on the way, change nothing and are not reported.
        assert!(i
            .cache
            .write()
            .unwrap()
            .apply(pod("a", "4", "Pending"))
            .is_none());
        assert!(i
            .cache
            .write()
            .unwrap()
            .apply(pod("a", "5", "Running"))
            .is_none());
        assert_eq!(phase(&i).as_deref(), Some("Running@5"));
        // A later write by someone else is applied and reported.
        let change = i.cache.write().unwrap().apply(pod("a", "7", "Succeeded"));
        assert!(matches!(change, Some(Change::Applied(_))));
        assert_eq!(phase(&i).as_deref(), Some("Succeeded@7"));
        // An assumed write older than what the cache holds is dropped.
        i.assume(pod("a", "6", "Running"));
        assert_eq!(phase(&i).as_deref(), Some("Succeeded@7"));
        // A created object the watch has not shown yet is there too.
        let mut b = pod("b", "8", "Pending");
        b.metadata.name = "b".into();
        i.assume(b);
        assert!(i.get("default/b").is_some());
    }

    #[test]
    fn a_write_answered_after_its_objects_deletion_does_not_bring_it_back() {
        let i = informer();
        assert!(i
            .cache
            .write()
            .unwrap()
            .apply(pod("a", "3", "Pending"))
            .is_some());
        // The pod is deleted (revision 6) before the answer to a status write (5) arrives.
        i.cache.write().unwrap().delete(&pod("a", "6", "Running"));
        i.assume(pod("a", "5", "Running"));
        assert!(i.get("default/a").is_none());
        // A namesake created later is applied as usual.
        assert!(i
            .cache
            .write()
            .unwrap()
            .apply(pod("a", "9", "Pending"))
            .is_some());
        assert!(i.get("default/a").is_some());
    }
}
