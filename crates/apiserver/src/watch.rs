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
use std::sync::Arc;
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

struct WatchState {
    kind: Kind,
    /// Decrypts the objects of encrypted kinds.
    transformer: Arc<Transformer>,
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
                event = self.stream.next() => {
                    let out = match event {
                        None => return None,
                        // An event whose object cannot be read is logged by `decode` and
                        // skipped: the watch goes on for every other object.
                        Some(Ok(event)) => match self.translate(event) {
                            Ok(Some(l)) => l,
                            Ok(None) | Err(_) => continue,
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

    fn translate(&mut self, event: Event) -> ApiResult<Option<Bytes>> {
        let obj = decode(&self.transformer, &event.kv)?;
        let key = event.kv.key;
        let type_ = match (event.kind, self.filtered) {
            (EventKind::Put, false) if event.created => "ADDED",
            (EventKind::Put, false) => "MODIFIED",
            (EventKind::Delete, false) => "DELETED",
            (EventKind::Put, true) => {
                if matches(&obj, &self.label_selector, &self.field_selector) {
                    let new = self.seen.insert(key);
                    if new && (event.created || self.complete) {
                        "ADDED"
                    } else {
                        "MODIFIED"
                    }
                } else if self.seen.remove(&key) {
                    "DELETED"
                } else {
                    return Ok(None);
                }
            }
            (EventKind::Delete, true) => {
                let held = self.seen.remove(&key);
                if held
                    || (!self.complete && matches(&obj, &self.label_selector, &self.field_selector))
                {
                    "DELETED"
                } else {
                    return Ok(None);
                }
            }
        };
        Ok(Some(line(type_, &obj)))
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

    #[test]
    fn lines_are_json_with_newline() {
        let l = line("ADDED", &json!({"a": 1}));
        assert_eq!(&l[..], b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
        let _: Value = serde_json::from_slice(&l).unwrap();
    }
}
