//! The scheduling loop: watch pods and nodes, place pending pods, bind them, explain failures.

use crate::core::{place, NodeView, Resources, Strategy};
use kumo_api::meta::{find_condition, set_condition};
use kumo_api::{Condition, ConditionStatus, Node, Pod};
use kumo_client::{Client, EventRecorder, EventType, Informer, ListParams};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use tokio::sync::Notify;

/// Options of the scheduler.
#[derive(Debug, Clone, Default)]
pub struct SchedulerConfig {
    pub strategy: Strategy,
}

/// Whether the scheduler should place this pod.
fn is_pending(pod: &Pod) -> bool {
    pod.spec.node_name.is_none() && pod.metadata.deletion_timestamp.is_none()
}

/// Whether a bound pod still holds its node's resources.
fn holds_resources(pod: &Pod) -> bool {
    pod.spec.node_name.is_some() && !pod.status.as_ref().is_some_and(|s| s.phase.is_terminal())
}

/// Builds node views with what bound pods already use. Pods this scheduler bound but the cache
/// does not show yet (`assumed`) count too, so one pass never double-books a node.
pub fn snapshot(
    nodes: &[Node],
    pods: &[Pod],
    assumed: &HashMap<String, (String, Resources)>,
) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    let index: BTreeMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    for pod in pods.iter().filter(|p| holds_resources(p)) {
        if let Some(&i) = pod.spec.node_name.as_ref().and_then(|n| index.get(n)) {
            views[i].requested.add(&Resources::of_pod(pod));
        }
    }
    for (node, res) in assumed.values() {
        if let Some(&i) = index.get(node) {
            views[i].requested.add(res);
        }
    }
    views
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (pods, mut pod_changes) =
        Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let (nodes, mut node_changes) =
        Informer::<Node>::start(client.clone(), None, ListParams::default());
    let recorder = EventRecorder::new(client.clone(), "kumo-scheduler", None);
    let wake = std::sync::Arc::new(Notify::new());
    let forward = {
        let wake = wake.clone();
        async move {
            loop {
                tokio::select! {
                    c = pod_changes.recv() => if c.is_none() { break },
                    c = node_changes.recv() => if c.is_none() { break },
                }
                wake.notify_one();
            }
        }
    };
    let mut assumed: HashMap<String, (String, Resources)> = HashMap::new();
    let work = async {
        pods.wait_synced().await;
        nodes.wait_synced().await;
        loop {
            schedule_pass(
                &client,
                &recorder,
                &pods,
                &nodes,
                &mut assumed,
                config.strategy,
            )
            .await;
            wake.notified().await;
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = forward => {}
        _ = work => {}
    }
}

/// One pass over every pending pod, oldest first.
async fn schedule_pass(
    client: &Client,
    recorder: &EventRecorder,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
    assumed: &mut HashMap<String, (String, Resources)>,
    strategy: Strategy,
) {
    let all_pods = pods.list();
    // Forget assumptions the cache has caught up with.
    assumed.retain(|key, _| pods.get(key).is_some_and(|p| p.spec.node_name.is_none()));
    let mut views = snapshot(&nodes.list(), &all_pods, assumed);
    let mut pending: Vec<&Pod> = all_pods
        .iter()
        .filter(|p| is_pending(p) && !assumed.contains_key(&kumo_client::cache_key(*p)))
        .collect();
    pending.sort_by(|a, b| {
        (a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp, &b.metadata.name))
    });
    for pod in pending {
        let key = kumo_client::cache_key(pod);
        let ns = pod.metadata.ns().to_string();
        match place(pod, &views, strategy) {
            Ok(i) => {
                let node = views[i].name.clone();
                match client.bind(&ns, &pod.metadata.name, &node).await {
                    Ok(()) => {
                        let want = Resources::of_pod(pod);
                        views[i].requested.add(&want);
                        assumed.insert(key, (node.clone(), want));
                        recorder
                            .record(
                                pod,
                                EventType::Normal,
                                "Scheduled",
                                format!(
                                    "Successfully assigned {ns}/{} to {node}",
                                    pod.metadata.name
                                ),
                            )
                            .await;
                    }
                    Err(e) => tracing::debug!(pod = %key, error = %e, "binding failed"),
                }
            }
            Err(unschedulable) => {
                let status = pod.status.clone().unwrap_or_default();
                let current = find_condition(&status.conditions, "PodScheduled");
                if current.and_then(|c| c.message.as_deref())
                    == Some(unschedulable.message.as_str())
                {
                    continue;
                }
                let mut updated = pod.clone();
                let st = updated.status.get_or_insert_with(Default::default);
                set_condition(
                    &mut st.conditions,
                    Condition::new(
                        "PodScheduled",
                        ConditionStatus::False,
                        Some("Unschedulable"),
                        Some(unschedulable.message.clone()),
                        chrono::Utc::now(),
                    ),
                );
                match client.update_status(&updated).await {
                    Ok(_) => {
                        recorder
                            .record(
                                pod,
                                EventType::Warning,
                                "FailedScheduling",
                                unschedulable.message,
                            )
                            .await;
                    }
                    Err(e) => {
                        tracing::debug!(pod = %key, error = %e, "could not record unschedulable status")
                    }
                }
            }
        }
    }
}
