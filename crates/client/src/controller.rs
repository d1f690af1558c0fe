//! The controller runtime every loop runs on (after kube-runtime's `Controller` and
//! controller-runtime): informers wake the loop, caches are waited for in one way, failures
//! and panics are retried with the shared [`Backoff`], and failures and durations go to one
//! [`Metrics`] hook. A loop owns only what it watches and its reconcile or pass function.
//!
//! Two shapes:
//! - [`Controller`], per key: changes are mapped to keys in a de-duplicating [`WorkQueue`];
//!   `reconcile(key)` says done (`None`), look again after (`Some(d)`), or fails (retried
//!   after the key's back-off); up to `concurrency` keys at once, never one key twice.
//! - [`Pass`], a whole snapshot: any change wakes one pass; changes during a pass are
//!   coalesced into the next; an optional cooldown after a costly pass lets changes gather.

use crate::informer::{Change, Informer};
use crate::queue::WorkQueue;
use crate::retry::{guard, Backoff, Failure, Retry};
use futures_util::stream::{FuturesUnordered, StreamExt};
use kumo_api::Resource;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Something a loop waits for before its first reconcile: an informer's first list.
pub trait Synced: Send + Sync {
    fn wait_synced(&self) -> BoxFuture<'_>;
}

impl<K: Resource> Synced for Informer<K> {
    fn wait_synced(&self) -> BoxFuture<'_> {
        Box::pin(Informer::wait_synced(self))
    }
}

/// Waits until every one of `caches` has been filled by its first list.
pub async fn wait_synced(caches: &[Box<dyn Synced>]) {
    for c in caches {
        c.wait_synced().await;
    }
}

/// Where a loop reports what its reconciles cost and how they failed: log lines now, the
/// place for counters later. A closure `Fn(&K, &Failure<E>, &Retry)` is one.
pub trait Metrics<K, E>: Send + Sync {
    /// A reconcile (or pass) failed or panicked; it runs again after `retry.delay`.
    fn failed(&self, key: &K, failure: &Failure<E>, retry: &Retry);
    /// A reconcile (or pass) ended after `took`, whatever its result.
    fn took(&self, _key: &K, _took: Duration) {}
    /// A pass left `unit` out (its share panicked with `why`); the pass counted as failed.
    fn left_out(&self, unit: &str, why: &str, retry: &Retry) {
        tracing::error!(%unit, error = %why, retry_in = ?retry.delay, failures = retry.total, "left out of a pass");
    }
}

impl<K, E, F: Fn(&K, &Failure<E>, &Retry) + Send + Sync> Metrics<K, E> for F {
    fn failed(&self, key: &K, failure: &Failure<E>, retry: &Retry) {
        self(key, failure, retry)
    }
}

/// The wiring both shapes share: what feeds the loop and what it waits for.
struct Sources {
    feeds: Vec<BoxFuture<'static>>,
    synced: Vec<Box<dyn Synced>>,
}

impl Sources {
    fn new() -> Self {
        Sources {
            feeds: Vec::new(),
            synced: Vec::new(),
        }
    }

    /// Runs every feed; a feed whose channel closed leaves the loop running on the others.
    async fn run(feeds: Vec<BoxFuture<'static>>) {
        futures_util::future::join_all(feeds).await;
        std::future::pending::<()>().await
    }
}

/// A per-key loop: changes become keys, keys are reconciled.
pub struct Controller<K> {
    queue: WorkQueue<K>,
    backoff: Backoff<K>,
    sources: Sources,
    concurrency: usize,
    initial: Option<Box<dyn FnOnce() -> Vec<K> + Send>>,
}

impl<K: Ord + Clone + Send + Sync + 'static> Controller<K> {
    /// A loop whose failed keys wait `retry_base`, doubling per consecutive failure up to
    /// `retry_max`; one reconcile at a time.
    pub fn new(retry_base: Duration, retry_max: Duration) -> Self {
        Controller {
            queue: WorkQueue::new(),
            backoff: Backoff::new(retry_base, retry_max),
            sources: Sources::new(),
            concurrency: 1,
            initial: None,
        }
    }

    /// Waits for `informer`'s cache and queues `key(object)` for each of its changes
    /// (`None`: the change concerns no key).
    pub fn watches<T: Resource>(
        self,
        informer: &Informer<T>,
        changes: mpsc::UnboundedReceiver<Change<T>>,
        key: impl Fn(&T) -> Option<K> + Send + 'static,
    ) -> Self {
        self.waits_for(informer.clone())
            .feeds(changes, move |c: &Change<T>| key(c.object()))
    }

    /// Waits for `cache` before the first reconcile (a cache read, not watched).
    pub fn waits_for(mut self, cache: impl Synced + 'static) -> Self {
        self.sources.synced.push(Box::new(cache));
        self
    }

    /// Queues `key(item)` for each item of `items`.
    pub fn feeds<T: Send + 'static>(
        mut self,
        mut items: mpsc::UnboundedReceiver<T>,
        key: impl Fn(&T) -> Option<K> + Send + 'static,
    ) -> Self {
        let queue = self.queue.clone();
        self.sources.feeds.push(Box::pin(async move {
            while let Some(item) = items.recv().await {
                if let Some(k) = key(&item) {
                    queue.add(k);
                }
            }
        }));
        self
    }

    /// Runs `task` beside the loop until it stops (a source of keys that is not a channel of
    /// items, e.g. a periodic resync, or one whose handling awaits).
    pub fn also(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.sources.feeds.push(Box::pin(task));
        self
    }

    /// Keys queued once the caches are synced, before any change.
    pub fn initial(mut self, keys: impl FnOnce() -> Vec<K> + Send + 'static) -> Self {
        self.initial = Some(Box::new(keys));
        self
    }

    /// Reconciles up to `n` keys at once (never one key twice at the same time).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The loop's queue, for keys that come from elsewhere than a watched channel.
    pub fn queue(&self) -> WorkQueue<K> {
        self.queue.clone()
    }

    /// Runs until `shutdown` completes.
    pub async fn run<E, F, Fut>(
        self,
        reconcile: F,
        metrics: impl Metrics<K, E>,
        shutdown: impl Future<Output = ()>,
    ) where
        F: Fn(K) -> Fut,
        Fut: Future<Output = Result<Option<Duration>, E>>,
    {
        let Controller {
            queue,
            backoff,
            sources,
            concurrency,
            initial,
        } = self;
        let step = |key: K| step(&queue, &backoff, &reconcile, &metrics, key);
        let work = async {
            wait_synced(&sources.synced).await;
            if let Some(initial) = initial {
                for k in initial() {
                    queue.add(k);
                }
            }
            if concurrency == 1 {
                loop {
                    step(queue.next().await).await;
                }
            }
            let mut running = FuturesUnordered::new();
            loop {
                if running.len() < concurrency {
                    tokio::select! {
                        key = queue.claim() => {
                            let (queue, step) = (&queue, &step);
                            running.push(async move {
                                step(key.clone()).await;
                                queue.done(&key);
                            })
                        }
                        Some(()) = running.next(), if !running.is_empty() => {}
                    }
                } else {
                    running.next().await;
                }
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = Sources::run(sources.feeds) => {}
            _ = work => {}
        }
    }
}

impl<K: Ord + Clone + Send + Sync + 'static> Controller<K> {
    /// As [`Controller::run`], with each reconcile a task of its own (a reconcile that blocks
    /// a thread now and then holds up no other), up to `concurrency` at once. On shutdown no
    /// new key is taken and the reconciles in flight get until `drain` has passed to end.
    /// Returns `None` when shutdown came before the caches were synced, else the end of the
    /// drain window, for what the caller finishes after.
    pub async fn run_spawned<E, F, Fut>(
        self,
        reconcile: F,
        metrics: impl Metrics<K, E> + 'static,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> Option<tokio::time::Instant>
    where
        E: 'static,
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Duration>, E>> + Send + 'static,
    {
        let Controller {
            queue,
            backoff,
            sources,
            concurrency,
            initial,
        } = self;
        let shared = Arc::new((queue.clone(), backoff, reconcile, metrics));
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut running = tokio::task::JoinSet::new();
        let mut synced = false;
        let work = async {
            wait_synced(&sources.synced).await;
            synced = true;
            if let Some(initial) = initial {
                for k in initial() {
                    queue.add(k);
                }
            }
            loop {
                tokio::select! {
                    (Ok(slot), key) = async {
                        (slots.clone().acquire_owned().await, queue.claim().await)
                    } => {
                        let (shared, claim) = (shared.clone(), Claim { queue: queue.clone(), key });
                        running.spawn(async move {
                            let (queue, backoff, reconcile, metrics) = &*shared;
                            step(queue, backoff, reconcile, metrics, claim.key.clone()).await;
                            drop((claim, slot));
                        });
                    }
                    Some(joined) = running.join_next() => {
                        if let Err(e) = joined {
                            tracing::error!(error = %e, "a reconcile failed to finish");
                        }
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = Sources::run(sources.feeds) => {}
            _ = work => {}
        }
        if !synced {
            return None;
        }
        let deadline = tokio::time::Instant::now() + drain;
        let _ = tokio::time::timeout_at(deadline, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        Some(deadline)
    }
}

/// Reconciles `key` once and applies the error policy: success forgets the key's failures
/// and requeues it when asked; a failure or panic is reported and retried after back-off.
async fn step<K, E, F, Fut>(
    queue: &WorkQueue<K>,
    backoff: &Backoff<K>,
    reconcile: &F,
    metrics: &impl Metrics<K, E>,
    key: K,
) where
    K: Ord + Clone + Send + Sync + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<Option<Duration>, E>>,
{
    let started = tokio::time::Instant::now();
    let result = guard(reconcile(key.clone())).await;
    metrics.took(&key, started.elapsed());
    match result {
        Ok(after) => {
            backoff.succeeded(&key);
            if let Some(after) = after {
                queue.add_after(key, after);
            }
        }
        Err(failure) => {
            let retry = backoff.failed(&key);
            metrics.failed(&key, &failure, &retry);
            queue.add_after(key, retry.delay);
        }
    }
}

/// A claimed key, handed back to its queue when its reconcile ends, cancelled included.
struct Claim<K: Ord + Clone + Send + 'static> {
    queue: WorkQueue<K>,
    key: K,
}

impl<K: Ord + Clone + Send + 'static> Drop for Claim<K> {
    fn drop(&mut self) {
        self.queue.done(&self.key);
    }
}

/// What one pass says about the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passed {
    /// The next pass comes at the next change or after this long, whichever is first
    /// (`None`: only at a change).
    pub requeue_after: Option<Duration>,
    /// What the pass cost, for the cooldown (a pass may count only its own work, not the
    /// writes it waited on).
    pub cost: Duration,
    /// Units the pass left out because their share panicked (unit, message): the pass counts
    /// as failed, and the next comes at a change or after the back-off, whichever is first.
    pub left_out: Vec<(String, String)>,
}

/// A whole-snapshot loop: any change wakes one pass.
pub struct Pass {
    wake: Arc<Notify>,
    backoff: Backoff<()>,
    sources: Sources,
    cooldown: Option<(Duration, Duration)>,
}

impl Pass {
    /// A loop whose failed (or panicking) pass is tried again after `retry_base`, doubling per
    /// consecutive failure up to `retry_max` (not at the next change, which would spin on a
    /// pass that always fails).
    pub fn new(retry_base: Duration, retry_max: Duration) -> Self {
        Pass {
            wake: Arc::new(Notify::new()),
            backoff: Backoff::new(retry_base, retry_max),
            sources: Sources::new(),
            cooldown: None,
        }
    }

    /// Waits for `informer`'s cache, and passes again at each of its changes.
    pub fn watches<T: Resource>(
        mut self,
        informer: &Informer<T>,
        changes: mpsc::UnboundedReceiver<Change<T>>,
    ) -> Self {
        self.sources.synced.push(Box::new(informer.clone()));
        self.feeds(changes)
    }

    /// Passes again at each item of `items`.
    pub fn feeds<T: Send + 'static>(self, items: mpsc::UnboundedReceiver<T>) -> Self {
        self.feeds_with(items, |_| true)
    }

    /// Hands each item of `items` to `wakes`, and passes again when it says so (a loop whose
    /// changes only move a deadline notes them here, and wakes only when one moves it).
    pub fn feeds_with<T: Send + 'static>(
        mut self,
        mut items: mpsc::UnboundedReceiver<T>,
        mut wakes: impl FnMut(&T) -> bool + Send + 'static,
    ) -> Self {
        let wake = self.wake.clone();
        self.sources.feeds.push(Box::pin(async move {
            while let Some(item) = items.recv().await {
                if wakes(&item) {
                    // A stored permit: changes during a pass make one more pass, not one each.
                    wake.notify_one();
                }
            }
        }));
        self
    }

    /// Waits for `cache` before the first pass (a cache read, not watched).
    pub fn waits_for(mut self, cache: impl Synced + 'static) -> Self {
        self.sources.synced.push(Box::new(cache));
        self
    }

    /// After a pass that cost `c`, the next starts no sooner than `min(c, max)` after it ended
    /// (changes that arrive meanwhile join it); passes cheaper than `min` are not held back.
    pub fn cooldown(mut self, min: Duration, max: Duration) -> Self {
        self.cooldown = Some((min, max));
        self
    }

    /// Runs the first pass once the caches are synced, then one per batch of changes (or when
    /// a pass's requeue-after ends), until `shutdown` completes.
    pub async fn run<E, F, Fut>(
        self,
        mut pass: F,
        metrics: impl Metrics<(), E>,
        shutdown: impl Future<Output = ()>,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Passed, E>>,
    {
        let Pass {
            wake,
            backoff,
            sources,
            cooldown,
        } = self;
        let work = async {
            wait_synced(&sources.synced).await;
            loop {
                let started = tokio::time::Instant::now();
                let result = guard(pass()).await;
                metrics.took(&(), started.elapsed());
                let passed = match result {
                    Ok(passed) => passed,
                    Err(failure) => {
                        let retry = backoff.failed(&());
                        metrics.failed(&(), &failure, &retry);
                        tokio::time::sleep(retry.delay).await;
                        continue;
                    }
                };
                let mut wait = passed.requeue_after;
                if passed.left_out.is_empty() {
                    backoff.succeeded(&());
                } else {
                    let retry = backoff.failed(&());
                    for (unit, why) in &passed.left_out {
                        metrics.left_out(unit, why, &retry);
                    }
                    wait = Some(wait.map_or(retry.delay, |w| w.min(retry.delay)));
                }
                if let Some((min, max)) = cooldown {
                    let wait = passed.cost.min(max);
                    if wait >= min {
                        tokio::time::sleep_until(started + passed.cost + wait).await;
                    }
                }
                // Wake on any change, or when the requeue-after (or back-off) ends.
                match wait {
                    Some(wait) => {
                        let _ = tokio::time::timeout(wait, wake.notified()).await;
                    }
                    None => wake.notified().await,
                }
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = Sources::run(sources.feeds) => {}
            _ = work => {}
        }
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
