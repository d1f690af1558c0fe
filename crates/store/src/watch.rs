//! Watch machinery shared by every backend: a ring of recent events plus a live broadcast.
//!
//! A backend publishes each committed event while holding the lock that orders its writes, so
//! the ring is in revision order and revisions in it are contiguous. A [`WatchStream`] replays
//! the ring after the requested revision, then follows the broadcast; it subscribes while holding
//! the ring lock, so nothing falls between replay and live.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast::{self, error::RecvError};

use crate::{Event, Revision, StoreError};

/// How many events a store keeps for watchers unless told otherwise.
pub const DEFAULT_WINDOW: usize = 10_000;

/// The most live events a slow watcher may lag behind before it falls back to the ring.
const MAX_BROADCAST_CAPACITY: usize = 1024;

/// The recent history: events with revision in `(compacted, current]`, oldest first.
#[derive(Debug)]
struct Ring {
    events: VecDeque<Event>,
    window: usize,
    /// Events with a revision at or below this are gone.
    compacted: Revision,
    /// The revision of the last published event.
    current: Revision,
}

impl Ring {
    /// The kept events with revision > `after` whose key starts with `prefix`.
    fn matching_after(&self, prefix: &str, after: Revision) -> impl Iterator<Item = &Event> + '_ {
        let start = self.events.partition_point(|e| e.revision() <= after);
        let prefix = prefix.to_owned();
        self.events
            .range(start..)
            .filter(move |e| e.kv.key.starts_with(&prefix))
    }
}

fn lock(ring: &Mutex<Ring>) -> MutexGuard<'_, Ring> {
    ring.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds the event window and the live channel; owned by a backend.
///
/// Dropping the hub closes the channel: every stream ends with `None` once drained.
#[derive(Debug)]
pub(crate) struct WatchHub {
    ring: Arc<Mutex<Ring>>,
    tx: broadcast::Sender<Event>,
}

impl WatchHub {
    /// An empty hub at revision 0 keeping the last `window` events.
    pub(crate) fn new(window: usize) -> Self {
        Self::restore(window, 0, Vec::new())
    }

    /// A hub at revision `current` that already holds `events`, the contiguous history ending at
    /// `current` (only the last `window` are kept).
    pub(crate) fn restore(window: usize, current: Revision, events: Vec<Event>) -> Self {
        Self::with_capacity(
            window,
            current,
            events,
            window.clamp(1, MAX_BROADCAST_CAPACITY),
        )
    }

    fn with_capacity(
        window: usize,
        current: Revision,
        events: Vec<Event>,
        capacity: usize,
    ) -> Self {
        let skip = events.len().saturating_sub(window);
        let events: VecDeque<Event> = events.into_iter().skip(skip).collect();
        debug_assert!(events
            .iter()
            .zip(events.iter().skip(1))
            .all(|(a, b)| a.revision() + 1 == b.revision()));
        debug_assert!(events.back().is_none_or(|e| e.revision() == current));
        let compacted = current - events.len() as Revision;
        let (tx, _) = broadcast::channel(capacity);
        let ring = Ring {
            events,
            window,
            compacted,
            current,
        };
        WatchHub {
            ring: Arc::new(Mutex::new(ring)),
            tx,
        }
    }

    /// Records a committed event and sends it to live watchers. Call it in revision order, under
    /// the lock that orders writes.
    pub(crate) fn publish(&self, event: Event) {
        let mut ring = lock(&self.ring);
        debug_assert_eq!(
            event.revision(),
            ring.current + 1,
            "revisions are contiguous"
        );
        ring.current = event.revision();
        ring.events.push_back(event.clone());
        while ring.events.len() > ring.window {
            if let Some(old) = ring.events.pop_front() {
                ring.compacted = old.revision();
            }
        }
        if ring.window == 0 {
            ring.compacted = ring.current;
        }
        // An error only means nobody is watching right now.
        let _ = self.tx.send(event);
    }

    /// The revision of the last published event.
    pub(crate) fn current_revision(&self) -> Revision {
        lock(&self.ring).current
    }

    /// A stream of events under `prefix` with revision > `after`.
    pub(crate) fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let ring = lock(&self.ring);
        if after < ring.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: ring.compacted,
            });
        }
        let pending = ring.matching_after(prefix, after).cloned().collect();
        let scanned = after.max(ring.current);
        let rx = self.tx.subscribe();
        drop(ring);
        Ok(WatchStream {
            prefix: prefix.to_owned(),
            ring: Arc::clone(&self.ring),
            rx,
            pending,
            scanned,
            done: false,
        })
    }
}

/// Events under one key prefix, in revision order, without gaps or duplicates: first the kept
/// history after the requested revision, then live writes.
pub struct WatchStream {
    prefix: String,
    ring: Arc<Mutex<Ring>>,
    rx: broadcast::Receiver<Event>,
    /// Matching events already taken from the ring, not yet returned.
    pending: VecDeque<Event>,
    /// Every event with revision <= this has been examined (queued in `pending` or skipped).
    scanned: Revision,
    done: bool,
}

impl WatchStream {
    /// The next matching event; `None` once the store is gone. After an `Err` (the stream fell
    /// behind the kept history) the stream ends; the caller relists and watches again.
    ///
    /// Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Ok(event) => {
                    let revision = event.revision();
                    if revision <= self.scanned {
                        continue;
                    }
                    debug_assert_eq!(revision, self.scanned + 1, "no gap in live events");
                    self.scanned = revision;
                    if event.kv.key.starts_with(&self.prefix) {
                        return Some(Ok(event));
                    }
                }
                Err(RecvError::Closed) => {
                    self.done = true;
                    return None;
                }
                Err(RecvError::Lagged(_)) => {
                    if let Err(e) = self.catch_up() {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// The highest revision this stream has fully processed: every matching event at or below it
    /// has been returned by [`next`](Self::next). Non-matching events advance it too, so it is
    /// what a server sends as a bookmark.
    pub fn progress(&self) -> Revision {
        match self.pending.front() {
            Some(event) => event.revision() - 1,
            None => self.scanned,
        }
    }

    /// After the live channel dropped events: take what was missed from the ring and subscribe
    /// afresh, both under the ring lock.
    fn catch_up(&mut self) -> Result<(), StoreError> {
        let ring = lock(&self.ring);
        if self.scanned < ring.compacted {
            return Err(StoreError::Compacted {
                requested: self.scanned,
                compacted: ring.compacted,
            });
        }
        self.pending
            .extend(ring.matching_after(&self.prefix, self.scanned).cloned());
        self.scanned = self.scanned.max(ring.current);
        self.rx = self.rx.resubscribe();
        Ok(())
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

    fn put(revision: Revision, key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_owned(),
                value: revision.to_string().into_bytes(),
                create_revision: revision,
                mod_revision: revision,
            },
            created: true,
        }
    }

    async fn revisions(stream: &mut WatchStream, n: usize) -> Vec<Revision> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(stream.next().await.unwrap().unwrap().revision());
        }
        out
    }

    #[tokio::test]
    async fn lagging_stream_catches_up_from_the_ring() {
        let hub = WatchHub::with_capacity(100, 0, Vec::new(), 4);
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
    async fn lagging_past_the_window_is_compacted_then_ends() {
        let hub = WatchHub::with_capacity(5, 0, Vec::new(), 2);
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
    async fn restore_keeps_the_last_window_events() {
        let events = (1..=10).map(|r| put(r, "/k")).collect();
        let hub = WatchHub::restore(4, 10, events);
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
    async fn zero_window_still_follows_live_events() {
        let hub = WatchHub::new(0);
        let mut stream = hub.watch("/", 0).unwrap();
        hub.publish(put(1, "/k"));
        assert!(hub.watch("/", 0).is_err());
        assert_eq!(revisions(&mut stream, 1).await, vec![1]);
    }

    #[tokio::test]
    async fn dropping_the_hub_ends_streams_after_buffered_events() {
        let hub = WatchHub::new(10);
        let mut stream = hub.watch("/", 0).unwrap();
        hub.publish(put(1, "/k"));
        drop(hub);
        assert_eq!(revisions(&mut stream, 1).await, vec![1]);
        assert!(stream.next().await.is_none());
    }
}
