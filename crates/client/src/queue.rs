//! A de-duplicating work queue with delayed re-adds, as controllers use between informer and reconcile.
//!
//! Workers that reconcile several keys at once take keys with `claim` and hand them back with
//! `done` (client-go's processing set): a claimed key added again waits until it is done, so one
//! key is never reconciled twice at the same time and no change to it is lost.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Keys waiting to be reconciled; a key already waiting is not added twice.
pub struct WorkQueue<T> {
    state: Arc<Mutex<State<T>>>,
    notify: Arc<Notify>,
}

struct State<T> {
    order: VecDeque<T>,
    pending: BTreeSet<T>,
    /// Keys claimed and not yet done.
    claimed: BTreeSet<T>,
    /// Claimed keys added again meanwhile: queued when they are done.
    again: BTreeSet<T>,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<T: Ord + Clone + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord + Clone + Send + 'static> WorkQueue<T> {
    pub fn new() -> Self {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                order: VecDeque::new(),
                pending: BTreeSet::new(),
                claimed: BTreeSet::new(),
                again: BTreeSet::new(),
            })),
            notify: Arc::new(Notify::new()),
        }
    }

    pub fn add(&self, key: T) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.claimed.contains(&key) {
            s.again.insert(key);
            return;
        }
        if s.pending.insert(key.clone()) {
            s.order.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Adds `key` once `delay` has passed (a controller's "requeue after").
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Waits for the next key and claims it: until `done(key)`, adding the key again only
    /// marks it to be queued then. Cancel-safe (a key is taken only when it is returned).
    pub async fn claim(&self) -> T {
        self.pop(true).await
    }

    /// Ends a claim; a key added again while claimed is queued now.
    pub fn done(&self, key: &T) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.claimed.remove(key);
        if s.again.remove(key) && s.pending.insert(key.clone()) {
            s.order.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Waits for the next key.
    pub async fn next(&self) -> T {
        self.pop(false).await
    }

    async fn pop(&self, claim: bool) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(k) = s.order.pop_front() {
                    s.pending.remove(&k);
                    if claim {
                        s.claimed.insert(k.clone());
                    }
                    if !s.order.is_empty() {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_keeps_order() {
        let q = WorkQueue::new();
        for k in ["a", "b", "a", "c", "b"] {
            q.add(k.to_string());
        }
        assert_eq!(q.len(), 3);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(q.next().await);
        }
        assert_eq!(got, ["a", "b", "c"]);
        q.add("a".to_string());
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn a_claimed_key_added_again_waits_until_done() {
        let q = WorkQueue::new();
        q.add("a".to_string());
        q.add("b".to_string());
        let a = q.claim().await;
        assert_eq!(a, "a");
        q.add("a".to_string());
        q.add("a".to_string());
        // "a" is not handed out while claimed: only "b" is there.
        assert_eq!(q.len(), 1);
        assert_eq!(q.claim().await, "b");
        assert!(q.is_empty());
        q.done(&a);
        assert_eq!(q.len(), 1);
        assert_eq!(q.claim().await, "a");
        q.done(&"a".to_string());
        q.done(&"b".to_string());
        // Done without a re-add queues nothing.
        assert!(q.is_empty());
    }
}
