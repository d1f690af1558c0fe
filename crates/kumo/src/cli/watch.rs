//! Untyped watches for the CLI: a kind's collection as JSON events, and waiting on one object.

use super::{collection, text};
use http::Method;
use kumo_api::{KindInfo, WatchEvent, WatchEventType};
use kumo_client::{with_query, Client, ClientError, LineStream};
use serde_json::Value;
use tokio::time::Instant;

/// A list's objects and the revision to watch from.
pub struct Listed {
    pub items: Vec<Value>,
    pub resource_version: String,
}

/// Lists a collection with query parameters (selectors).
pub async fn list(
    client: &Client,
    kind: &KindInfo,
    ns: Option<&str>,
    query: &[(&str, String)],
) -> Result<Listed, ClientError> {
    let list: Value = client
        .request_json(Method::GET, &with_query(&collection(kind, ns), query), None)
        .await?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(Listed {
        items,
        resource_version: text(&list, "/metadata/resourceVersion").to_string(),
    })
}

/// A watch response read as JSON events, one per line.
pub struct RawWatch {
    lines: LineStream,
}

impl RawWatch {
    /// Starts watching a collection from `resource_version`.
    pub async fn start(
        client: &Client,
        kind: &KindInfo,
        ns: Option<&str>,
        query: &[(&str, String)],
        resource_version: &str,
    ) -> Result<Self, ClientError> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("watch", "true".into()));
        q.push(("allowWatchBookmarks", "true".into()));
        if !resource_version.is_empty() {
            q.push(("resourceVersion", resource_version.to_string()));
        }
        let resp = client
            .send(Method::GET, &with_query(&collection(kind, ns), &q), None)
            .await?;
        Ok(RawWatch {
            lines: LineStream::new(resp.into_body()),
        })
    }

    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<WatchEvent<Value>, String>> {
        loop {
            let line = match self.lines.next_line().await? {
                Ok(line) => line,
                Err(e) => return Some(Err(format!("watch stream broke: {e}"))),
            };
            if line.trim().is_empty() {
                continue;
            }
            return Some(serde_json::from_str(&line).map_err(|e| format!("bad watch event: {e}")));
        }
    }
}

/// Waits until `done` holds for the object (`None`: it does not exist), checking at once and
/// then on every change. Returns `false` at the deadline.
pub async fn wait_for(
    client: &Client,
    kind: &KindInfo,
    ns: &str,
    name: &str,
    done: &dyn Fn(Option<&Value>) -> bool,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let query = [("fieldSelector", format!("metadata.name={name}"))];
    loop {
        let listed =
            match tokio::time::timeout_at(deadline, list(client, kind, Some(ns), &query)).await {
                Ok(listed) => listed?,
                Err(_) => return Ok(false),
            };
        if done(listed.items.first()) {
            return Ok(true);
        }
        let watch = tokio::time::timeout_at(
            deadline,
            RawWatch::start(client, kind, Some(ns), &query, &listed.resource_version),
        );
        let mut watch = match watch.await {
            Ok(w) => w?,
            Err(_) => return Ok(false),
        };
        // Read until the stream ends or fails, then list again (a relist also covers `410 Gone`).
        loop {
            let event = match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return Ok(false),
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(ev))) => ev,
            };
            let ours = text(&event.object, "/metadata/name") == name;
            let holds = match event.type_ {
                WatchEventType::Added | WatchEventType::Modified if ours => {
                    done(Some(&event.object))
                }
                WatchEventType::Deleted if ours => done(None),
                WatchEventType::Added | WatchEventType::Modified | WatchEventType::Deleted => false,
                WatchEventType::Bookmark => false,
                WatchEventType::Error => break,
            };
            if holds {
                return Ok(true);
            }
        }
        // Do not spin when the server ends watches at once.
        tokio::time::sleep_until(
            deadline.min(Instant::now() + std::time::Duration::from_millis(200)),
        )
        .await;
    }
}
