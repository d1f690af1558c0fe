//! Event expiry: an Event goes once it is older than the TTL (`--event-ttl`, one hour by
//! default, as the Kubernetes API server's), so that a long-running cluster's store stays small.

use kumo_api::{Event, Time};
use kumo_client::{
    clock, Change, Client, ClientError, Failure, Informer, ListParams, Pass, Passed, Retry,
};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When an event was last seen to happen: its last timestamp, else its first, else its
/// creation.
pub fn last_seen(e: &Event) -> Option<Time> {
    e.last_timestamp
        .or(e.first_timestamp)
        .or(e.metadata.creation_timestamp)
}

/// The events older than `ttl` at `now`, as (namespace, name), and when the next one will be.
pub fn expired(
    events: &[Event],
    now: Time,
    ttl: Duration,
) -> (Vec<(String, String)>, Option<Time>) {
    let mut gone = Vec::new();
    let mut next: Option<Time> = None;
    for e in events {
        let Some(due) = due(e, ttl) else { continue };
        if due <= now {
            gone.push((e.metadata.ns().to_string(), e.metadata.name.clone()));
        } else {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    (gone, next)
}

/// When `e` expires (`None`: it has no time, or one so late that it expires past the
/// calendar's end, so it never does). Event times are written by clients: any may be stored.
pub fn due(e: &Event, ttl: Duration) -> Option<Time> {
    last_seen(e).and_then(|seen| clock::add(seen, ttl))
}

/// Deletes events as they expire, until `shutdown`: a pass on the client's controller runtime.
///
/// The cache is scanned only when the earliest expiry comes: a new or changed event just moves
/// that time earlier when it is due sooner. (Scanning every event on every change cost a clone
/// of every event per event written: busy clusters write several events per second.)
pub async fn run(client: Client, ttl: Duration, shutdown: impl Future<Output = ()> + Send) {
    let (events, changes) = Informer::<Event>::start(client.clone(), None, ListParams::default());
    // When the next event expires (`None`: none is known to); the first pass scans at once.
    let next: Arc<Mutex<Option<Time>>> = Arc::new(Mutex::new(Some(chrono::Utc::now())));
    let noted = next.clone();
    let runtime = Pass::new(Duration::from_secs(1), Duration::from_secs(60))
        .waits_for(events.clone())
        .feeds_with(changes, move |change: &Change<Event>| {
            let Change::Applied(e) = change else {
                return false;
            };
            let Some(d) = due(e, ttl) else {
                return false;
            };
            let mut next = noted.lock().unwrap_or_else(|e| e.into_inner());
            if next.is_some_and(|n| n <= d) {
                return false;
            }
            *next = Some(d);
            true
        });
    let (client, events, next) = (&client, &events, &next);
    let each = move || async move {
        let now = chrono::Utc::now();
        let due_at = *next.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = due_at.filter(|at| *at > now) {
            // Woken by a change that moved the expiry earlier: wait for it.
            return Ok(Passed {
                requeue_after: Some(wait_until(Some(at), ttl)),
                ..Passed::default()
            });
        }
        let list = events.list();
        // A panic here is caught by the runtime: the scan is tried again after a back-off,
        // and nothing is deleted meanwhile.
        let (gone, later) = expired(&list, now, ttl);
        *next.lock().unwrap_or_else(|e| e.into_inner()) = later;
        for (ns, name) in gone {
            match client.delete::<Event>(&ns, &name, None).await {
                Ok(_) | Err(ClientError::Api(_)) => {}
                Err(e) => tracing::warn!(error = %e, "cannot delete an expired event"),
            }
        }
        Ok::<_, Infallible>(Passed {
            requeue_after: Some(wait_until(later, ttl)),
            ..Passed::default()
        })
    };
    let report = |_: &(), failure: &Failure<Infallible>, retry: &Retry| {
        tracing::error!(error = %failure, retry_in = ?retry.delay, failures = retry.total, "event expiry scan panicked");
    };
    runtime.run(each, report, shutdown).await
}

/// How long to wait for `next` (`None`: a whole TTL), at least 100 ms.
fn wait_until(next: Option<Time>, ttl: Duration) -> Duration {
    next.map(|n| (n - chrono::Utc::now()).to_std().unwrap_or_default())
        .unwrap_or(ttl)
        .max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::ObjectMeta;

    fn event(name: &str, last: Option<Time>) -> Event {
        Event {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            last_timestamp: last,
            ..Default::default()
        }
    }

    #[test]
    fn events_older_than_the_ttl_go() {
        let now = chrono::Utc::now();
        let hour = Duration::from_secs(3600);
        let old = event("old", Some(now - chrono::Duration::minutes(61)));
        let young = event("young", Some(now - chrono::Duration::minutes(50)));
        let undated = event("undated", None);
        let (gone, next) = expired(&[old, young, undated], now, hour);
        assert_eq!(gone, vec![("default".to_string(), "old".to_string())]);
        assert_eq!(next, Some(now + chrono::Duration::minutes(10)));
        assert_eq!(
            due(&event("young", Some(now)), hour),
            Some(now + chrono::Duration::hours(1))
        );
        assert_eq!(due(&event("undated", None), hour), None);
    }

    /// An event stamped at the calendar's end (clients write event times), or a TTL beyond
    /// chrono's range, never expires; neither panics the scan.
    #[test]
    fn times_past_the_calendars_end_never_expire() {
        let now = chrono::Utc::now();
        let hour = Duration::from_secs(3600);
        let late = event("late", Some(Time::MAX_UTC));
        assert_eq!(due(&late, hour), None);
        let old = event("old", Some(now - chrono::Duration::minutes(61)));
        let (gone, next) = expired(&[late, old.clone()], now, hour);
        assert_eq!(gone, vec![("default".to_string(), "old".to_string())]);
        assert_eq!(next, None);
        assert_eq!(expired(&[old], now, Duration::MAX), (vec![], None));
    }
}
