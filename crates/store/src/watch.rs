//! Watch machinery shared by every backend: a ring of recent events, bounded in events and in
//! bytes, that every watcher reads.
//!
//! A backend publishes each committed event while holding the lock that orders its writes, so
//! the ring is in revision order (contiguous for the embedded backends; the etcd backend's may skip
//! revisions written outside what it watches). A [`WatchStream`] reads the
//! ring after the revision it has examined, one event at a time, and waits on a revision signal
//! when it has read everything. The ring is the only copy of the history: watchers hold no
//! queue of their own and there is no per-event channel buffer, so what the history costs in
//! memory is what [`WatchWindow`] allows (a watcher that falls behind the kept history gets
//! `Compacted`, as a watch from a dropped revision does).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch as signal;

use crate::{Event, Revision, StoreError};

/// How many events a store keeps for watchers unless told otherwise.
pub const DEFAULT_WINDOW: usize = 10_000;

/// How many bytes of events a store keeps for watchers unless told otherwise.
pub const DEFAULT_WINDOW_BYTES: usize = 64 << 20;

/// How much history a store keeps for watches to resume from: the newest events within both
/// bounds. The newest event is always kept, even alone over the byte bound (a watcher following
/// live writes must still see it), so a bound of 0 events means 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchWindow {
    /// The most events kept.
    pub events: usize,
    /// The most bytes of events kept, counted by [`event_bytes`].
    pub bytes: usize,
}

impl WatchWindow {
    pub fn new(events: usize, bytes: usize) -> Self {
        WatchWindow { events, bytes }
    }
}

impl Default for WatchWindow {
    fn default() -> Self {
        WatchWindow::new(DEFAULT_WINDOW, DEFAULT_WINDOW_BYTES)
    }
}

/// A bound in events alone keeps the default byte bound.
impl From<usize> for WatchWindow {
    fn from(events: usize) -> Self {
        WatchWindow::new(events, DEFAULT_WINDOW_BYTES)
    }
}

/// What an event counts for against the byte bound: its key and value plus the event itself.
pub fn event_bytes(event: &Event) -> usize {
    event.kv.key.len() + event.kv.value.len() + std::mem::size_of::<Event>()
}

/// The recent history: events with revision in `(compacted, current]`, oldest first.
#[derive(Debug)]
struct Ring {
    /// Shared, so a watcher takes one out under the lock without copying its value there.
    events: VecDeque<Arc<Event>>,
    /// The sum of [`event_bytes`] over `events`.
    bytes: usize,
    window: WatchWindow,
    /// Events with a revision at or below this are gone.
    compacted: Revision,
    /// The revision of the last published event.
    current: Revision,
}

impl Ring {
    fn push(&mut self, event: Event) {
        self.current = event.revision();
        self.bytes += event_bytes(&event);
        self.events.push_back(Arc::new(event));
        while self.events.len() > 1
            && (self.events.len() > self.window.events || self.bytes > self.window.bytes)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= event_bytes(&old);
                self.compacted = old.revision();
            }
        }
    }

    /// The kept events with revision > `after` whose key starts with `prefix`.
    fn matching_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> impl Iterator<Item = &'a Arc<Event>> + 'a {
        let start = self.events.partition_point(|e| e.revision() <= after);
        self.events
            .range(start..)
            .filter(move |e| e.kv.key.starts_with(prefix))
    }

    /// How far past `after` the history holds nothing under `prefix`: just before the next
    /// matching event, or the current revision when there is none.
    fn quiet_until(&self, prefix: &str, after: Revision) -> Revision {
        match self.matching_after(prefix, after).next() {
            Some(next) => next.revision() - 1,
            None => self.current.max(after),
        }
    }
}

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds the event window and the revision signal; owned by a backend.
///
/// Dropping the hub closes the signal: every stream ends with `None` once it has read the rest.
#[derive(Debug)]
pub(crate) struct WatchHub {
    ring: Arc<Mutex<Ring>>,
    tx: signal::Sender<Revision>,
}

impl WatchHub {
    /// An empty hub at revision 0.
    pub(crate) fn new(window: WatchWindow) -> Self {
        Self::restore(window, 0, Vec::new())
    }

    /// A hub at revision `current` that already holds `events`, the contiguous history ending at
    /// `current` (only the newest within `window` are kept).
    pub(crate) fn restore(window: WatchWindow, current: Revision, events: Vec<Event>) -> Self {
        debug_assert!(events
            .iter()
            .zip(events.iter().skip(1))
            .all(|(a, b)| a.revision() + 1 == b.revision()));
        debug_assert!(events.last().is_none_or(|e| e.revision() == current));
        let compacted = current - events.len() as Revision;
        let mut ring = Ring {
            events: VecDeque::new(),
            bytes: 0,
            window,
            compacted,
            current: compacted,
        };
        for event in events {
            ring.push(event);
        }
        ring.current = current;
        let (tx, _) = signal::channel(current);
        WatchHub {
            ring: Arc::new(Mutex::new(ring)),
            tx,
        }
    }

    /// Records a committed event and wakes the watchers. Call it in revision order, under the
    /// lock that orders writes.
    pub(crate) fn publish(&self, event: Event) {
        let revision = event.revision();
        {
            let mut ring = lock(&self.ring);
            debug_assert!(revision > ring.current, "revisions increase");
            ring.push(event);
        }
        self.tx.send_replace(revision);
    }

    /// Drops the whole history and restarts at `revision`: every stream behind it gets
    /// `Compacted` (used when the source of the events lost them, e.g. etcd compacted them).
    pub(crate) fn reset(&self, revision: Revision) {
        {
            let mut ring = lock(&self.ring);
            ring.events.clear();
            ring.bytes = 0;
            ring.compacted = revision;
            ring.current = revision;
        }
        self.tx.send_replace(revision);
    }

    /// Moves the hub to `revision` without an event (a revision its source had nothing for, such
    /// as an etcd write to a key that is not kumo's), so watches waiting for it go on.
    pub(crate) fn advance(&self, revision: Revision) {
        {
            let mut ring = lock(&self.ring);
            if revision <= ring.current {
                return;
            }
            ring.current = revision;
        }
        self.tx.send_replace(revision);
    }

    /// Waits until the hub has reached `revision` (published it or been reset past it).
    pub(crate) async fn reached(&self, revision: Revision) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this ends only by reaching the revision.
        let _ = rx.wait_for(|&current| current >= revision).await;
    }

    /// The revision of the last published event.
    pub(crate) fn current_revision(&self) -> Revision {
        lock(&self.ring).current
    }

    /// Events at or below this revision are no longer kept.
    pub(crate) fn compacted_revision(&self) -> Revision {
        lock(&self.ring).compacted
    }

    /// A stream of events under `prefix` with revision > `after`.
    pub(crate) fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribed before the ring is read: a write after the check wakes the stream.
        let rx = self.tx.subscribe();
        let ring = lock(&self.ring);
        if after < ring.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: ring.compacted,
            });
        }
        let scanned = ring.quiet_until(prefix, after);
        drop(ring);
        Ok(WatchStream {
            prefix: prefix.to_owned(),
            ring: Arc::clone(&self.ring),
            rx,
            scanned,
            closed: false,
            done: false,
        })
    }
}

/// Events under one key prefix, in revision order, without gaps or duplicates: first the kept
/// history after the requested revision, then live writes.
pub struct WatchStream {
    prefix: String,
    ring: Arc<Mutex<Ring>>,
    rx: signal::Receiver<Revision>,
    /// Every event with revision <= this has been returned or skipped.
    scanned: Revision,
    /// The hub is gone: what the ring still holds is the last to read.
    closed: bool,
    done: bool,
}

impl WatchStream {
    /// The next matching event; `None` once the store is gone. After an `Err` (the stream fell
    /// behind the kept history) the stream ends; the caller relists and watches again.
    ///
    /// Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        // The copy is made here, outside the ring's lock.
        Some(self.next_shared().await?.map(|e| Event::clone(&e)))
    }

    /// [`next`](Self::next) without copying the event: the ring's own copy, shared with every
    /// other stream that reads it (a server with many watchers copied each event's value once
    /// per watcher).
    pub async fn next_shared(&mut self) -> Option<Result<Arc<Event>, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            // Marked seen before the ring is read, so a write after the read wakes `changed`.
            self.rx.borrow_and_update();
            match self.take() {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if self.closed {
                self.done = true;
                return None;
            }
            if self.rx.changed().await.is_err() {
                self.closed = true;
            }
        }
    }

    /// The next matching event in the ring, if it holds one; `Compacted` when the stream has
    /// fallen behind what the ring keeps.
    fn take(&mut self) -> Result<Option<Arc<Event>>, StoreError> {
        let ring = lock(&self.ring);
        if self.scanned < ring.compacted {
            return Err(StoreError::Compacted {
                requested: self.scanned,
                compacted: ring.compacted,
            });
        }
        let found = ring
            .matching_after(&self.prefix, self.scanned)
            .next()
            .cloned();
        if let Some(event) = &found {
            self.scanned = event.revision();
        }
        self.scanned = ring.quiet_until(&self.prefix, self.scanned);
        Ok(found)
    }

    /// The highest revision this stream has fully processed: every matching event at or below it
    /// has been returned by [`next`](Self::next). Non-matching events advance it too, so it is
    /// what a server sends as a bookmark.
    pub fn progress(&self) -> Revision {
        self.scanned
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream")
            .field("prefix", &self.prefix)
            .field("progress", &self.progress())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, KeyValue};

    fn event(revision: Revision, key: &str, value: Vec<u8>) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            },
            created: true,
        }
    }

    fn put(revision: Revision, key: &str) -> Event {
        event(revision, key, revision.to_string().into_bytes())
    }

    async fn revisions(stream: &mut WatchStream, n: usize) -> Vec<Revision> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(stream.next().await.unwrap().unwrap().revision());
        }
        out
    }

    #[tokio::test]
    async fn streams_read_the_ring_in_order_by_prefix() {
        let hub = WatchHub::new(100.into());
        let mut all = hub.watch("/", 0).unwrap();
        let mut odd = hub.watch("/odd/", 0).unwrap();
        for rev in 1..=50 {
            let key = if rev % 2 == 1 { "/odd/k" } else { "/even/k" };
            hub.publish(put(rev, key));
        }
        assert_eq!(all.progress(), 0);
        assert_eq!(revisions(&mut all, 50).await, (1..=50).collect::<Vec<_>>());
        assert_eq!(all.progress(), 50);
        let odd_revs: Vec<Revision> = (1..=50).filter(|r| r % 2 == 1).collect();
        assert_eq!(revisions(&mut odd, 25).await, odd_revs);
        assert_eq!(
            odd.progress(),
            50,
            "the trailing even event was examined too"
        );
        hub.publish(put(51, "/odd/k"));
        assert_eq!(revisions(&mut odd, 1).await, vec![51]);
    }

    #[tokio::test]
    async fn streams_share_the_rings_copy_of_an_event() {
        let hub = WatchHub::new(10.into());
        let (mut a, mut b) = (hub.watch("/", 0).unwrap(), hub.watch("/", 0).unwrap());
        hub.publish(put(1, "/k"));
        let (ea, eb) = (
            a.next_shared().await.unwrap().unwrap(),
            b.next_shared().await.unwrap().unwrap(),
        );
        assert!(Arc::ptr_eq(&ea, &eb), "one copy for both streams");
        assert_eq!(ea.kv.value, b"1");
    }

    #[tokio::test]
    async fn a_stream_behind_the_window_is_compacted_then_ends() {
        let hub = WatchHub::new(5.into());
        let mut stream = hub.watch("/", 0).unwrap();
        for rev in 1..=20 {
            hub.publish(put(rev, "/k"));
        }
        match stream.next().await {
            Some(Err(StoreError::Compacted {
                requested: 0,
                compacted: 15,
            })) => {}
            other => panic!("expected compacted, got {other:?}"),
        }
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_live_stream_wakes_on_publish() {
        let hub = Arc::new(WatchHub::new(10.into()));
        let mut stream = hub.watch("/", 0).unwrap();
        let publisher = Arc::clone(&hub);
        let waiting = tokio::spawn(async move { revisions(&mut stream, 2).await });
        tokio::task::yield_now().await;
        publisher.publish(put(1, "/k"));
        publisher.publish(put(2, "/k"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the stream wakes")
            .unwrap();
        assert_eq!(got, vec![1, 2]);
    }

    #[tokio::test]
    async fn restore_keeps_the_last_window_events() {
        let events = (1..=10).map(|r| put(r, "/k")).collect();
        let hub = WatchHub::restore(4.into(), 10, events);
        assert_eq!(hub.current_revision(), 10);
        assert!(matches!(
            hub.watch("/", 5),
            Err(StoreError::Compacted {
                requested: 5,
                compacted: 6
            })
        ));
        let mut stream = hub.watch("/", 6).unwrap();
        assert_eq!(stream.progress(), 6);
        assert_eq!(revisions(&mut stream, 4).await, vec![7, 8, 9, 10]);
        assert_eq!(stream.progress(), 10);
    }

    #[tokio::test]
    async fn a_zero_window_keeps_the_newest_event() {
        let hub = WatchHub::new(0.into());
        let mut stream = hub.watch("/", 0).unwrap();
        hub.publish(put(1, "/k"));
        assert_eq!(revisions(&mut stream, 1).await, vec![1]);
        hub.publish(put(2, "/k"));
        assert!(hub.watch("/", 0).is_err());
        assert_eq!(revisions(&mut stream, 1).await, vec![2]);
    }

    /// Publishes events of `sizes` bytes each, as [`event_bytes`] counts them (revisions 1, 2,
    /// ...), into a ring bounded by `events` and `bytes`, then checks the oldest revision a watch
    /// may still start from.
    fn check_bytes(events: usize, bytes: usize, sizes: &[usize], oldest: Revision) {
        let overhead = event_bytes(&event(0, "/k", Vec::new()));
        let hub = WatchHub::new(WatchWindow::new(events, bytes));
        for (i, size) in sizes.iter().enumerate() {
            hub.publish(event(i as Revision + 1, "/k", vec![0; size - overhead]));
        }
        let what = format!("{events} events, {bytes} bytes, sizes {sizes:?}");
        assert_eq!(hub.compacted_revision(), oldest, "{what}");
        assert!(hub.watch("/", oldest).is_ok(), "{what}");
        if oldest > 0 {
            assert!(
                matches!(
                    hub.watch("/", oldest - 1),
                    Err(StoreError::Compacted { .. })
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_and_in_events() {
        // All fit, to the byte.
        check_bytes(10, 3000, &[1000, 1000, 1000], 0);
        // The byte bound drops the oldest first, as many as it takes.
        check_bytes(10, 3000, &[1000, 1000, 1000, 1000], 1);
        check_bytes(10, 3000, &[1000, 1000, 1000, 2500], 3);
        // The event bound still holds when the bytes would fit.
        check_bytes(2, 1 << 20, &[200, 200, 200, 200], 2);
        // One event over the whole bound is still kept, alone: live watchers must see it.
        check_bytes(10, 3000, &[200, 200, 5000], 2);
        check_bytes(10, 3000, &[200, 200, 5000, 200], 3);
    }

    #[test]
    fn restore_keeps_the_newest_within_the_byte_bound() {
        let per_event = event_bytes(&event(0, "/k", Vec::new()));
        let events = (1..=10).map(|r| event(r, "/k", vec![0; 100])).collect();
        let hub = WatchHub::restore(WatchWindow::new(100, 3 * (100 + per_event)), 10, events);
        assert_eq!(hub.compacted_revision(), 7);
        assert_eq!(hub.current_revision(), 10);
    }

    #[tokio::test]
    async fn dropping_the_hub_ends_streams_after_kept_events() {
        let hub = WatchHub::new(10.into());
        let mut stream = hub.watch("/", 0).unwrap();
        hub.publish(put(1, "/k"));
        drop(hub);
        assert_eq!(revisions(&mut stream, 1).await, vec![1]);
        assert!(stream.next().await.is_none());
    }
}
