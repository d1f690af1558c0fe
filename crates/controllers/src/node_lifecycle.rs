//! Node lifecycle: a node whose agent stops heartbeating becomes NotReady, and its pods are marked lost.

use chrono::Duration as ChronoDuration;
use kumo_api::meta::{find_condition, set_condition};
use kumo_api::{Condition, ConditionStatus, Node, Pod, PodPhase, Time};
use kumo_client::{
    clock, Change, Client, ClientError, Controller, EventRecorder, EventType, Failure, Informer,
    ListParams, Retry,
};
use std::future::Future;
use std::time::Duration;

/// First retry of a failed reconcile of a node; doubles per consecutive failure.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Reason set on a node's Ready condition when its heartbeats stopped.
pub const REASON_NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// Reason set on pods of a lost node.
pub const REASON_NODE_LOST: &str = "NodeLost";

/// What to do about one node, decided from its status and the time alone.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Heartbeats are fresh; look again at `recheck_at`.
    Healthy { recheck_at: Time },
    /// Heartbeats stopped: set this Ready condition, then mark the node's pods.
    Lost { condition: Condition },
    /// Already marked lost; make sure its pods are marked too.
    StillLost,
}

/// Decides a node's health from its last heartbeat.
pub fn assess(node: &Node, now: Time, grace: Duration) -> Verdict {
    let grace = ChronoDuration::from_std(grace).unwrap_or(ChronoDuration::seconds(40));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"));
    let last = ready
        .and_then(|c| c.last_heartbeat_time.or(c.last_transition_time))
        .or(node.metadata.creation_timestamp);
    // Times come from agents (and whoever may write a node's status): a heartbeat at the
    // calendar's end is healthy until then, never an overflow.
    let Some(last) = last else {
        return Verdict::Healthy {
            recheck_at: clock::add(now, grace.to_std().unwrap_or_default()).unwrap_or(now),
        };
    };
    if now - last <= grace {
        let wait = grace + ChronoDuration::milliseconds(100);
        return Verdict::Healthy {
            recheck_at: last.checked_add_signed(wait).unwrap_or(Time::MAX_UTC),
        };
    }
    if ready.is_some_and(|c| c.status == ConditionStatus::Unknown) {
        return Verdict::StillLost;
    }
    let mut condition = Condition::new(
        "Ready",
        ConditionStatus::Unknown,
        Some(REASON_NODE_STATUS_UNKNOWN),
        Some(format!(
            "kumo agent stopped posting node status (last heartbeat at {})",
            last.format("%Y-%m-%dT%H:%M:%SZ")
        )),
        now,
    );
    condition.last_heartbeat_time = ready.and_then(|c| c.last_heartbeat_time);
    Verdict::Lost { condition }
}

/// The status a pod of a lost node should get, or `None` if it is done or already marked.
pub fn mark_pod_lost(pod: &Pod, node: &str, now: Time) -> Option<kumo_api::pod::PodStatus> {
    let status = pod.status.clone().unwrap_or_default();
    if status.phase.is_terminal() || status.reason.as_deref() == Some(REASON_NODE_LOST) {
        return None;
    }
    let mut status = status;
    status.phase = PodPhase::Unknown;
    status.reason = Some(REASON_NODE_LOST.to_string());
    status.message = Some(format!(
        "node {node} which was running pod {} is unresponsive",
        pod.metadata.name
    ));
    let msg = Some(format!("node {node} is not ready"));
    set_condition(
        &mut status.conditions,
        Condition::new(
            "Ready",
            ConditionStatus::False,
            Some("NodeNotReady"),
            msg,
            now,
        ),
    );
    Some(status)
}

/// Runs the node lifecycle controller until `shutdown`.
pub async fn run(client: Client, grace: Duration, shutdown: impl Future<Output = ()> + Send) {
    let (nodes, node_changes) =
        Informer::<Node>::start(client.clone(), None, ListParams::default());
    let (pods, _pod_changes) = Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let recorder = EventRecorder::new(client.clone(), "kumo-node-lifecycle", None);
    // Keyed by node name; pods are read from their cache, not watched.
    let controller = Controller::new(RETRY_BASE, RETRY_MAX)
        .feeds(node_changes, |c: &Change<Node>| {
            Some(c.object().metadata.name.clone())
        })
        .waits_for(pods.clone());
    let (client, recorder, nodes, pods) = (&client, &recorder, &nodes, &pods);
    let each = |name: String| async move {
        match nodes.get(&name) {
            Some(node) => reconcile(client, recorder, pods, &node, grace).await,
            None => Ok(None),
        }
    };
    controller.run(each, report, shutdown).await
}

/// How a failed reconcile is logged.
fn report(name: &String, failure: &Failure<ClientError>, retry: &Retry) {
    let (delay, failures) = (retry.delay, retry.total);
    if let Failure::Panic(_) = failure {
        tracing::error!(node = %name, error = %failure, retry_in = ?delay, failures, "node reconcile panicked");
    } else {
        tracing::warn!(node = %name, error = %failure, retry_in = ?delay, failures, "could not mark node not ready");
    }
}

/// Acts on one node's verdict; says when to look at the node again.
async fn reconcile(
    client: &Client,
    recorder: &EventRecorder,
    pods: &Informer<Pod>,
    node: &Node,
    grace: Duration,
) -> Result<Option<Duration>, ClientError> {
    let now = chrono::Utc::now();
    let name = &node.metadata.name;
    match assess(node, now, grace) {
        Verdict::Healthy { recheck_at } => Ok(Some(clock::until(recheck_at, now))),
        Verdict::Lost { condition } => {
            let mut updated = node.clone();
            let status = updated.status.get_or_insert_with(Default::default);
            let message = condition.message.clone().unwrap_or_default();
            set_condition(&mut status.conditions, condition);
            client.update_status(&updated).await?;
            recorder
                .record(node, EventType::Warning, "NodeNotReady", message)
                .await;
            mark_pods(client, pods, name).await;
            Ok(None)
        }
        Verdict::StillLost => {
            mark_pods(client, pods, name).await;
            Ok(Some(Duration::from_secs(10)))
        }
    }
}

async fn mark_pods(client: &Client, pods: &Informer<Pod>, node: &str) {
    let now = chrono::Utc::now();
    for pod in pods
        .list()
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
    {
        if let Some(status) = mark_pod_lost(&pod, node, now) {
            let mut updated = pod.clone();
            updated.status = Some(status);
            if let Err(e) = client.update_status(&updated).await {
                tracing::debug!(pod = %pod.metadata.name, error = %e, "could not mark pod lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(secs: i64) -> Time {
        chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn node(ready: &str, heartbeat: i64) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": t(heartbeat)}]}
        }))
        .unwrap()
    }

    #[test]
    fn verdicts() {
        let grace = Duration::from_secs(40);
        assert_eq!(
            assess(&node("True", 0), t(30), grace),
            Verdict::Healthy {
                recheck_at: t(40) + ChronoDuration::milliseconds(100)
            }
        );
        match assess(&node("True", 0), t(41), grace) {
            Verdict::Lost { condition } => {
                assert_eq!(condition.status, ConditionStatus::Unknown);
                assert_eq!(
                    condition.reason.as_deref(),
                    Some(REASON_NODE_STATUS_UNKNOWN)
                );
            }
            other => panic!("expected Lost, got {other:?}"),
        }
        assert_eq!(
            assess(&node("Unknown", 0), t(100), grace),
            Verdict::StillLost
        );
    }

    /// A heartbeat stamped at the calendar's end, and a grace beyond chrono's range: healthy
    /// until then, no overflow.
    #[test]
    fn times_at_the_calendars_end_do_not_panic() {
        let mut n = node("True", 0);
        n.status.as_mut().unwrap().conditions[0].last_heartbeat_time = Some(Time::MAX_UTC);
        assert_eq!(
            assess(&n, t(0), Duration::from_secs(40)),
            Verdict::Healthy {
                recheck_at: Time::MAX_UTC
            }
        );
        let mut none = node("True", 0);
        none.status = None;
        assert_eq!(
            assess(&none, Time::MAX_UTC, Duration::MAX),
            Verdict::Healthy {
                recheck_at: Time::MAX_UTC
            }
        );
    }

    #[test]
    fn pods_of_lost_nodes() {
        let pod = |phase: &str, reason: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": phase, "reason": reason}}))
                .unwrap()
        };
        let marked = mark_pod_lost(&pod("Running", None), "n1", t(0)).unwrap();
        assert_eq!(marked.phase, PodPhase::Unknown);
        assert_eq!(marked.reason.as_deref(), Some(REASON_NODE_LOST));
        assert_eq!(
            find_condition(&marked.conditions, "Ready").unwrap().status,
            ConditionStatus::False
        );
        assert_eq!(mark_pod_lost(&pod("Succeeded", None), "n1", t(0)), None);
        assert_eq!(
            mark_pod_lost(&pod("Unknown", Some(REASON_NODE_LOST)), "n1", t(0)),
            None
        );
    }
}
