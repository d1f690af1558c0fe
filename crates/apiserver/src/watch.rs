//! Watch: a chunked stream of `{"type":..,"object":..}` lines, one per event, flushed per event.
//!
//! Without a resource version the stream opens with the current objects as ADDED events, then
//! follows the store from the revision it listed at. Selectors filter events; an object that
//! stops matching is sent as DELETED and one that starts matching as ADDED. The stream ends when
//! the client goes (the body is dropped with the store watch), on `timeoutSeconds`, and when the
//! server shuts down.

use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, prefix};
use crate::read::matches;
use crate::request::Kind;
use crate::transformer::Transformer;
use crate::{shutting_down, App, StreamGuard};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header;
use kumo_api::{FieldSelector, LabelSelector};
use kumo_store::{Event, EventKind, Revision, StoreError, WatchStream};
use serde_json::json;
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::watch as signal;
use tokio::time::{sleep_until, Instant};

/// What a watch request asks for.
pub struct WatchParams {
    pub kind: Kind,
    pub ns: Option<String>,
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    pub resource_version: Option<Revision>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

fn line(type_: &str, object: &impl serde::Serialize) -> Bytes {
    let mut out = serde_json::to_vec(&json!({"type": type_, "object": object}))
        .unwrap_or_else(|_| br#"{"type":"ERROR","object":{}}"#.to_vec());
    out.push(b'\n');
    Bytes::from(out)
}

/// How many recent events the shared decode cache holds: a watcher further behind than this
/// decodes its event for itself.
const DECODED_SLOTS: usize = 1024;

/// Objects stored larger than this are not kept in the decode cache (each watcher decodes them
/// for itself): the cache is bounded in bytes too, at about `DECODED_SLOTS` times this times
/// what a decoded object and its lines take over its stored bytes (a few times).
const DECODED_MAX_BYTES: usize = 16 << 10;

/// One store event as every watcher of it needs it: decoded once, each watch line type
/// serialised at most once.
struct Decoded {
    key: String,
    revision: Revision,
    /// `None` when the stored object cannot be read (logged once, by `decode`).
    obj: Option<serde_json::Value>,
    /// The lines ADDED, MODIFIED, DELETED, made when a watcher first sends them.
    lines: [OnceLock<Bytes>; 3],
}

impl Decoded {
    fn line(&self, type_: &'static str) -> Option<Bytes> {
        let obj = self.obj.as_ref()?;
        let i = match type_ {
            "ADDED" => 0,
            "MODIFIED" => 1,
            _ => 2,
        };
        Some(self.lines[i].get_or_init(|| line(type_, obj)).clone())
    }
}

/// Events decoded for the server's watchers, shared by all of them: with a watch per node on
/// pods (each agent's `spec.nodeName` watch), decoding every event once per watcher was a third
/// of the server's CPU at 1,000 nodes. Slots by revision, each behind its own lock.
pub(crate) struct DecodedEvents {
    slots: Vec<Mutex<Option<Arc<Decoded>>>>,
}

impl Default for DecodedEvents {
    fn default() -> Self {
        DecodedEvents {
            slots: (0..DECODED_SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl DecodedEvents {
    /// `event` decoded, from the cache or decoded now and kept there.
    fn get(&self, t: &Transformer, event: &Event) -> Arc<Decoded> {
        let revision = event.revision();
        let slot = &self.slots[(revision % DECODED_SLOTS as u64) as usize];
        let same = |d: &Decoded| d.revision == revision && d.key == event.kv.key;
        if let Some(d) = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|d| same(d))
        {
            return Arc::clone(d);
        }
        // Decoded outside the lock; two watchers that miss at once both decode, and the
        // second keeps its own (they are equal).
        let decoded = Arc::new(Decoded {
            key: event.kv.key.clone(),
            revision,
            obj: decode(t, &event.kv).ok(),
            lines: Default::default(),
        });
        if event.kv.value.len() > DECODED_MAX_BYTES {
            return decoded;
        }
        let mut kept = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.as_ref().is_none_or(|d| d.revision <= revision) {
            *kept = Some(Arc::clone(&decoded));
        }
        decoded
    }
}

struct WatchState {
    kind: Kind,
    /// Decrypts the objects of encrypted kinds.
    transformer: Arc<Transformer>,
    decoded: Arc<DecodedEvents>,
    /// Lines to send before following the store (the initial ADDED events).
    initial: VecDeque<Bytes>,
    stream: WatchStream,
    label_selector: LabelSelector,
    field_selector: FieldSelector,
    /// Whether selectors are in play (then `seen` tracks what the client holds).
    filtered: bool,
    /// Whether `seen` is everything the client holds (the watch began with a list).
    complete: bool,
    seen: HashSet<String>,
    bookmark_every: Option<Duration>,
    next_bookmark: Instant,
    deadline: Option<Instant>,
    shutdown: signal::Receiver<bool>,
    done: bool,
    _open: StreamGuard,
}

impl WatchState {
    fn wrote(&mut self) {
        if let Some(every) = self.bookmark_every {
            self.next_bookmark = Instant::now() + every;
        }
    }

    /// The next line to send, or `None` when the stream is over.
    async fn next_line(&mut self) -> Option<Bytes> {
        if let Some(l) = self.initial.pop_front() {
            self.wrote();
            return Some(l);
        }
        loop {
            if self.done {
                return None;
            }
            let bookmarks = self.bookmark_every.is_some();
            let deadline = self.deadline;
            tokio::select! {
                event = self.stream.next_shared() => {
                    let out = match event {
                        None => return None,
                        // An event whose object cannot be read is logged by `decode` and
                        // skipped: the watch goes on for every other object.
                        Some(Ok(event)) => match self.translate(&event) {
                            Some(l) => l,
                            None => continue,
                        },
                        Some(Err(e)) => self.fail(ApiError::store(e)),
                    };
                    self.wrote();
                    return Some(out);
                }
                _ = sleep_until(self.next_bookmark), if bookmarks => {
                    self.wrote();
                    return Some(self.bookmark());
                }
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => return None,
                _ = shutting_down(self.shutdown.clone()) => return None,
            }
        }
    }

    /// An ERROR line; the stream ends after it.
    fn fail(&mut self, e: ApiError) -> Bytes {
        tracing::warn!(error = %e, "watch ended with an error");
        self.done = true;
        line("ERROR", &*e.0)
    }

    fn bookmark(&self) -> Bytes {
        line(
            "BOOKMARK",
            &json!({
                "apiVersion": self.kind.api_version(),
                "kind": self.kind.kind,
                "metadata": {"resourceVersion": self.stream.progress().to_string()},
            }),
        )
    }

    /// The line `event` makes for this watcher, if any.
    fn translate(&mut self, event: &Event) -> Option<Bytes> {
        let decoded = self.decoded.get(&self.transformer, event);
        let obj = decoded.obj.as_ref()?;
        let key = &event.kv.key;
        let type_ = match (event.kind, self.filtered) {
            (EventKind::Put, false) if event.created => "ADDED",
            (EventKind::Put, false) => "MODIFIED",
            (EventKind::Delete, false) => "DELETED",
            (EventKind::Put, true) => {
                if matches(obj, &self.label_selector, &self.field_selector) {
                    let new = self.seen.insert(key.clone());
                    if new && (event.created || self.complete) {
                        "ADDED"
                    } else {
                        "MODIFIED"
                    }
                } else if self.seen.remove(key) {
                    "DELETED"
                } else {
                    return None;
                }
            }
            (EventKind::Delete, true) => {
                let held = self.seen.remove(key);
                if held
                    || (!self.complete && matches(obj, &self.label_selector, &self.field_selector))
                {
                    "DELETED"
                } else {
                    return None;
                }
            }
        };
        decoded.line(type_)
    }
}

/// Starts a watch: a 410 if the revision is compacted, else the streaming response.
pub async fn watch(app: &Arc<App>, p: WatchParams) -> ApiResult<Response> {
    let prefix = prefix(&p.kind, p.ns.as_deref());
    let filtered = !p.label_selector.is_empty() || p.field_selector != FieldSelector::default();
    let mut initial = VecDeque::new();
    let mut seen = HashSet::new();
    let after = match p.resource_version {
        Some(rv) => rv,
        None => {
            let (kvs, revision) = app.store.list(&prefix).await.map_err(ApiError::store)?;
            for kv in &kvs {
                // Left out (and logged by `decode`) when it cannot be read, as in a list.
                let Ok(obj) = decode(&app.transformer, kv) else {
                    continue;
                };
                if matches(&obj, &p.label_selector, &p.field_selector) {
                    if filtered {
                        seen.insert(kv.key.clone());
                    }
                    initial.push_back(line("ADDED", &obj));
                }
            }
            revision
        }
    };
    let stream = app.store.watch(&prefix, after).await.map_err(|e| match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(requested, compacted),
        e => ApiError::store(e),
    })?;
    let bookmark_every = p.bookmarks.then_some(app.bookmark_interval);
    let state = WatchState {
        kind: p.kind,
        transformer: Arc::clone(&app.transformer),
        decoded: Arc::clone(&app.decoded_events),
        initial,
        stream,
        label_selector: p.label_selector,
        field_selector: p.field_selector,
        filtered,
        complete: p.resource_version.is_none(),
        seen,
        bookmark_every,
        next_bookmark: Instant::now() + bookmark_every.unwrap_or_default(),
        deadline: p.timeout.and_then(|t| Instant::now().checked_add(t)),
        shutdown: app.shutdown.clone(),
        done: false,
        _open: StreamGuard::new(app),
    };
    let lines = futures_util::stream::unfold(state, |mut state| async move {
        let l = state.next_line().await?;
        Some((Ok::<_, Infallible>(l), state))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .map_err(|e| ApiError::internal(format!("building the watch response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn put(revision: Revision, key: &str, value: Value) -> Event {
        Event {
            kind: EventKind::Put,
            kv: kumo_store::KeyValue {
                key: key.into(),
                value: serde_json::to_vec(&value).unwrap(),
                create_revision: revision,
                mod_revision: revision,
            },
            created: true,
        }
    }

    #[test]
    fn each_event_is_decoded_and_serialised_once_for_every_watcher() {
        let cache = DecodedEvents::default();
        let t = Transformer::identity();
        let a = put(
            7,
            "/registry/core/pods/ns/a",
            json!({"metadata": {"name": "a"}}),
        );
        let first = cache.get(&t, &a);
        let again = cache.get(&t, &a);
        assert!(Arc::ptr_eq(&first, &again), "decoded once");
        let line = first.line("ADDED").unwrap();
        assert_eq!(
            line.as_ptr(),
            again.line("ADDED").unwrap().as_ptr(),
            "serialised once"
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&line).unwrap(),
            json!({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}})
        );
        // Another event in the same slot, or another key at the same revision, is not it.
        let b = put(
            7 + DECODED_SLOTS as u64,
            "/registry/core/pods/ns/b",
            json!({"metadata": {"name": "b"}}),
        );
        assert_eq!(
            cache.get(&t, &b).obj.as_ref().unwrap()["metadata"]["name"],
            "b"
        );
        let c = put(
            7,
            "/registry/core/pods/ns/c",
            json!({"metadata": {"name": "c"}}),
        );
        assert_eq!(
            cache.get(&t, &c).obj.as_ref().unwrap()["metadata"]["name"],
            "c"
        );
        // A large object is decoded for each watcher, not kept.
        let big = put(
            9,
            "/registry/core/configmaps/ns/big",
            json!({"data": {"k": "x".repeat(DECODED_MAX_BYTES)}}),
        );
        assert!(!Arc::ptr_eq(&cache.get(&t, &big), &cache.get(&t, &big)));
        assert!(cache.get(&t, &big).line("ADDED").is_some());
        // An object that cannot be read makes no line.
        let mut bad = put(8, "/registry/core/pods/ns/bad", json!({}));
        bad.kv.value = b"not json".to_vec();
        assert_eq!(cache.get(&t, &bad).line("MODIFIED"), None);
    }

    #[test]
    fn lines_are_json_with_newline() {
        let l = line("ADDED", &json!({"a": 1}));
        assert_eq!(&l[..], b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
        let _: Value = serde_json::from_slice(&l).unwrap();
    }
}
