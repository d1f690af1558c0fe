//! The scheduling loop: watch pods and nodes, place pending pods, bind them, explain failures.
//! It is a pass on the client's controller runtime. A placement that panics for one pod (or
//! gang) leaves it out of the pass, and a pass that panics is caught; either is logged,
//! counted and tried again after a back-off.

use crate::cluster::Cluster;
use crate::core::{place_gang, NodeView, Resources, Strategy};
use kumo_api::keys::{parse_gang_size, ANNOTATION_GANG_SIZE, LABEL_GANG};
use kumo_api::meta::{find_condition, set_condition};
use kumo_api::{Condition, ConditionStatus, Node, Pod};
use kumo_client::{
    guard_pure, Client, EventRecorder, EventType, Failure, Informer, ListParams, Metrics, Pass,
    Passed, Retry,
};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

/// First retry of a pass that panicked (or left a pod out); doubles per consecutive one.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Pods (or gangs) whose placement panicked in a pass, with the panic's message.
type Failed = Vec<(String, String)>;

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

/// A pod this scheduler placed that its cache does not show bound yet.
#[derive(Debug, Clone)]
pub struct AssumedPod {
    pub node: String,
    pub resources: Resources,
    /// Its spread group ([`crate::core::spread_key`]).
    pub spread: Option<String>,
}

impl AssumedPod {
    pub fn new(node: &str, pod: &Pod) -> AssumedPod {
        AssumedPod {
            node: node.to_string(),
            resources: Resources::of_pod(pod),
            spread: crate::core::spread_key(pod),
        }
    }
}

/// Builds node views with what bound pods already use. Pods this scheduler bound but the cache
/// does not show yet (`assumed`) count too, resources and spread group, so one pass never
/// double-books a node nor stacks an app's replicas created a moment apart on one node.
pub fn snapshot(
    nodes: &[impl Borrow<Node>],
    pods: &[impl Borrow<Pod>],
    assumed: &HashMap<String, AssumedPod>,
) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = nodes.iter().map(|n| NodeView::new(n.borrow())).collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    let index: BTreeMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    for pod in pods
        .iter()
        .map(Borrow::borrow)
        .filter(|p| holds_resources(p))
    {
        if let Some(&i) = pod.spec.node_name.as_ref().and_then(|n| index.get(n)) {
            views[i].requested.add(&Resources::of_pod(pod));
            if let Some(key) = crate::core::spread_key(pod) {
                *views[i].spread.entry(key).or_default() += 1;
            }
        }
    }
    for a in assumed.values() {
        if let Some(&i) = index.get(&a.node) {
            views[i].requested.add(&a.resources);
            if let Some(key) = &a.spread {
                *views[i].spread.entry(key.clone()).or_default() += 1;
            }
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
    let (pods, pod_changes) = Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let (nodes, node_changes) =
        Informer::<Node>::start(client.clone(), None, ListParams::default());
    let recorder = EventRecorder::new(client.clone(), "kumo-scheduler", None);
    let runtime = Pass::new(RETRY_BASE, RETRY_MAX)
        .watches(&pods, pod_changes)
        .watches(&nodes, node_changes);
    // Pods bound by this scheduler that the cache does not show yet, kept across passes (a
    // lock that a panicking pass leaves as it was, not poisoned).
    let assumed: tokio::sync::Mutex<Assumed> = Default::default();
    let (client, recorder, pods, nodes, assumed) = (&client, &recorder, &pods, &nodes, &assumed);
    let each = move || async move {
        let mut assumed = assumed.lock().await;
        let pass =
            schedule_pass(client, recorder, pods, nodes, &mut assumed, config.strategy).await;
        // The others were placed; the left-out ones are tried again at the next change or
        // after the back-off, the ones whose binding failed soon.
        Ok::<_, Infallible>(Passed {
            left_out: pass.failed,
            requeue_after: pass.requeue.then_some(REQUEUE_AFTER_FAILED_BIND),
            ..Passed::default()
        })
    };
    runtime.run(each, Report, shutdown).await
}

/// How the scheduling loop's failures are logged.
struct Report;

impl Metrics<(), Infallible> for Report {
    fn failed(&self, _: &(), failure: &Failure<Infallible>, retry: &Retry) {
        // Retried after the back-off, not at the next change: a pass that always panics
        // would spin.
        tracing::error!(error = %failure, retry_in = ?retry.delay, failures = retry.total, "scheduling pass panicked");
    }

    fn left_out(&self, unit: &str, why: &str, retry: &Retry) {
        tracing::error!(%unit, error = %why, retry_in = ?retry.delay, failures = retry.total, "placement panicked");
    }
}

/// What one pass schedules: a lone pod, or a gang whose members are placed together.
enum Unit<'a> {
    Single(&'a Pod),
    Gang {
        name: String,
        size: usize,
        members: Vec<&'a Pod>,
        bound: usize,
    },
}

/// Groups pending pods into scheduling units, oldest first. A gang member whose gang already has
/// bound members is placed alone: the gang was committed before (a binding failed midway).
fn units<'a>(pending: &[&'a Pod], all: &[impl Borrow<Pod>]) -> Vec<Unit<'a>> {
    let mut gangs: BTreeMap<(String, String), Vec<&'a Pod>> = BTreeMap::new();
    let mut units = Vec::new();
    for pod in pending {
        match pod.metadata.labels.get(LABEL_GANG) {
            Some(g) => gangs
                .entry((pod.metadata.ns().to_string(), g.clone()))
                .or_default()
                .push(pod),
            None => units.push(Unit::Single(pod)),
        }
    }
    for ((ns, name), members) in gangs {
        let same_gang =
            |p: &&Pod| p.metadata.ns() == ns && p.metadata.labels.get(LABEL_GANG) == Some(&name);
        let bound = all
            .iter()
            .map(Borrow::borrow)
            .filter(same_gang)
            .filter(|p| holds_resources(p))
            .count();
        if bound > 0 {
            units.extend(members.into_iter().map(Unit::Single));
            continue;
        }
        let size = members
            .iter()
            .find_map(|p| {
                p.metadata
                    .annotations
                    .get(ANNOTATION_GANG_SIZE)
                    .and_then(|s| parse_gang_size(s))
            })
            .unwrap_or(members.len());
        units.push(Unit::Gang {
            name,
            size,
            members,
            bound,
        });
    }
    let oldest = |u: &Unit| -> (Option<kumo_api::Time>, String) {
        let p = match u {
            Unit::Single(p) => *p,
            Unit::Gang { members, .. } => members[0],
        };
        (p.metadata.creation_timestamp, p.metadata.name.clone())
    };
    units.sort_by_key(|u| oldest(u));
    units
}

/// Most bindings in flight at once: each is a store write (an fsync on redb, a round trip on
/// etcd) that the pass would otherwise wait for one after another.
const BINDS_IN_FLIGHT: usize = 16;

/// When a pass whose binding failed (a conflict, a node gone, the server unreachable) runs
/// again if nothing changes before: the failed pod is pending again and placed afresh.
const REQUEUE_AFTER_FAILED_BIND: Duration = Duration::from_millis(200);

/// Pods the passes assumed they placed, by cache key.
type Assumed = HashMap<String, AssumedPod>;

/// What a pass decided, before it writes anything.
#[derive(Default)]
struct Plan<'a> {
    /// Pods to bind, each with its node, in the order they were placed.
    binds: Vec<(&'a Pod, String)>,
    /// Pods that fit nowhere, with why.
    unschedulable: Vec<(&'a Pod, String)>,
    failed: Failed,
}

/// Places every unit against `cluster`, counting each placed pod on its node at once (and in
/// `assumed`, for the passes that run before the cache shows its binding): a pod placed later in
/// the same pass sees what the earlier ones took, so the batch never double-books a node.
fn plan<'a>(
    units: Vec<Unit<'a>>,
    cluster: &mut Cluster,
    assumed: &mut Assumed,
    strategy: Strategy,
) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut take = |cluster: &mut Cluster, plan: &mut Plan<'a>, pod: &'a Pod, i: usize| {
        cluster.assume(i, pod);
        let node = cluster.nodes()[i].name.clone();
        assumed.insert(kumo_client::cache_key(pod), AssumedPod::new(&node, pod));
        plan.binds.push((pod, node));
    };
    for unit in units {
        match unit {
            Unit::Single(pod) => match guard_pure(|| {
                #[cfg(test)]
                tests::panic_if_asked(pod);
                cluster.place(pod, strategy)
            }) {
                Ok(Ok(i)) => take(cluster, &mut plan, pod, i),
                Ok(Err(why)) => plan.unschedulable.push((pod, why.message)),
                Err(panic) => plan.failed.push((kumo_client::cache_key(pod), panic)),
            },
            Unit::Gang {
                name,
                size,
                members,
                bound,
            } if members.len() + bound < size => {
                let message = format!(
                    "waiting for the rest of gang {name}: {} of {size} pods exist",
                    members.len() + bound
                );
                plan.unschedulable
                    .extend(members.into_iter().map(|p| (p, message.clone())));
            }
            // Gangs are packed onto as few nodes as possible: replicas talk to each other.
            Unit::Gang { name, members, .. } => {
                match guard_pure(|| place_gang(&members, cluster.nodes(), Strategy::BinPack)) {
                    Ok(Ok(placement)) => {
                        for (pod, i) in members.into_iter().zip(placement) {
                            take(cluster, &mut plan, pod, i);
                        }
                    }
                    Ok(Err(why)) => plan
                        .unschedulable
                        .extend(members.into_iter().map(|p| (p, why.message.clone()))),
                    Err(panic) => plan.failed.push((format!("gang {name}"), panic)),
                }
            }
        }
    }
    plan
}

/// What a pass reports to the loop.
struct PassResult {
    failed: Failed,
    /// A binding failed: run again soon even if nothing changes.
    requeue: bool,
}

/// One pass over every pending pod and gang, oldest first: decide them all, then bind them
/// concurrently.
async fn schedule_pass(
    client: &Client,
    recorder: &EventRecorder,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
    assumed: &mut Assumed,
    strategy: Strategy,
) -> PassResult {
    // Pods that ended and hold nothing play no part in a pass; most pods of a busy batch
    // cluster are such (they stay for their logs). The others are shared with the cache, not
    // cloned: at 30,000 pods, copying them made every pass slower.
    let all_pods = pods.list_filtered_shared(|p| is_pending(p) || holds_resources(p));
    // Forget assumptions the cache has caught up with.
    assumed.retain(|key, _| {
        pods.get_shared(key)
            .is_some_and(|p| p.spec.node_name.is_none())
    });
    let all_nodes = nodes.list_filtered_shared(|_| true);
    let mut cluster = Cluster::new(snapshot(&all_nodes, &all_pods, assumed)).sampled();
    let mut pending: Vec<&Pod> = all_pods
        .iter()
        .map(|p| &**p)
        .filter(|p| is_pending(p) && !assumed.contains_key(&kumo_client::cache_key(*p)))
        .collect();
    pending.sort_by(|a, b| {
        (a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp, &b.metadata.name))
    });
    let plan = plan(units(&pending, &all_pods), &mut cluster, assumed, strategy);
    let refused = bind_all(client, recorder, plan.binds, assumed).await;
    for (pod, message) in plan.unschedulable {
        mark_unschedulable(client, recorder, pod, message).await;
    }
    PassResult {
        failed: plan.failed,
        requeue: refused > 0,
    }
}

/// Binds each pod to its node, [`BINDS_IN_FLIGHT`] at a time. A binding that fails forgets
/// its assumption, so the pod is pending again for the next pass. Returns how many failed.
async fn bind_all(
    client: &Client,
    recorder: &EventRecorder,
    binds: Vec<(&Pod, String)>,
    assumed: &mut Assumed,
) -> usize {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    // A queue filled up to the bound as bindings finish (an async fn's future per binding,
    // not a closure's, keeps the pass's future `Send` for every lifetime).
    let mut waiting = binds.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut refused = 0;
    loop {
        while in_flight.len() < BINDS_IN_FLIGHT {
            let Some((pod, node)) = waiting.next() else {
                break;
            };
            in_flight.push(bind_one(client, pod, node));
        }
        let Some((pod, node, result)) = in_flight.next().await else {
            break;
        };
        let key = kumo_client::cache_key(pod);
        match result {
            Ok(()) => {
                let message = format!(
                    "Successfully assigned {}/{} to {node}",
                    pod.metadata.ns(),
                    pod.metadata.name
                );
                // Written off the pass, as events are best effort: awaiting each event's write
                // doubled the time of each binding (bench/density.py).
                let (recorder, pod) = (recorder.clone(), pod.clone());
                tokio::spawn(async move {
                    recorder
                        .record(&pod, EventType::Normal, "Scheduled", message)
                        .await
                });
            }
            Err(e) => {
                tracing::debug!(pod = %key, %node, error = %e, "binding failed; the pod is placed again");
                assumed.remove(&key);
                refused += 1;
            }
        }
    }
    refused
}

/// One binding, with what it was for.
async fn bind_one<'a>(
    client: &Client,
    pod: &'a Pod,
    node: String,
) -> (&'a Pod, String, Result<(), kumo_client::ClientError>) {
    let result = client
        .bind(pod.metadata.ns(), &pod.metadata.name, &node)
        .await;
    (pod, node, result)
}

/// Records why `pod` cannot be placed (condition PodScheduled=False, reason Unschedulable, and a
/// FailedScheduling event), unless it already says exactly that.
async fn mark_unschedulable(client: &Client, recorder: &EventRecorder, pod: &Pod, message: String) {
    let status = pod.status.clone().unwrap_or_default();
    let current = find_condition(&status.conditions, "PodScheduled");
    if current.and_then(|c| c.message.as_deref()) == Some(message.as_str()) {
        return;
    }
    let mut updated = pod.clone();
    let st = updated.status.get_or_insert_with(Default::default);
    set_condition(
        &mut st.conditions,
        Condition::new(
            "PodScheduled",
            ConditionStatus::False,
            Some("Unschedulable"),
            Some(message.clone()),
            chrono::Utc::now(),
        ),
    );
    match client.update_status(&updated).await {
        Ok(_) => {
            recorder
                .record(pod, EventType::Warning, "FailedScheduling", message)
                .await
        }
        Err(e) => {
            tracing::debug!(pod = %kumo_client::cache_key(pod), error = %e, "could not record unschedulable status")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::keys::{format_gang_size, LABEL_APP, LABEL_PROCESS};
    use serde_json::json;

    /// Pods with this annotation panic in placement (the test hook of `schedule_pass`).
    const PANIC_IN_PLACEMENT: &str = "test.kumo.dev/panic-in-placement";

    pub(super) fn panic_if_asked(pod: &Pod) {
        if pod.metadata.annotations.contains_key(PANIC_IN_PLACEMENT) {
            panic!("test: placement panicked for {}", pod.metadata.name);
        }
    }

    /// Against a real API server on an in-memory store: a pod whose placement panics is left
    /// out, the pod beside it in the same pass is bound, and the loop goes on binding the pod
    /// created after them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_whose_placement_panics_does_not_stop_the_others() {
        use kumo_client::ClientConfig;
        let store = std::sync::Arc::new(kumo_store::MemStore::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let config = kumo_apiserver::Config::new(store, vec!["t0ken".into()]);
        tokio::spawn(kumo_apiserver::serve(
            listener,
            config,
            std::future::pending(),
        ));
        let client = Client::new(&ClientConfig {
            server,
            token: "t0ken".into(),
            ..Default::default()
        })
        .unwrap();
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
        let mut node = client.create(&node).await.unwrap();
        node.status = Some(
            serde_json::from_value(
                json!({"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                                          "conditions": [{"type": "Ready", "status": "True"}]}),
            )
            .unwrap(),
        );
        client.update_status(&node).await.unwrap();
        let pod = |name: &str, panics: bool| -> Pod {
            let annotations = if panics {
                json!({PANIC_IN_PLACEMENT: "yes"})
            } else {
                json!({})
            };
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "x"}]}
            }))
            .unwrap()
        };
        client.create(&pod("bomb", true)).await.unwrap();
        client.create(&pod("beside", false)).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = tokio::spawn(run(client.clone(), SchedulerConfig::default(), async {
            let _ = stopped.await;
        }));
        let bound = |name: &'static str| {
            let client = client.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let p: Pod = client.get("default", name).await.unwrap();
                    if p.spec.node_name.is_some() {
                        return p.spec.node_name;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{name} was not bound"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(bound("beside").await.as_deref(), Some("n1"));
        client.create(&pod("after", false)).await.unwrap();
        assert_eq!(bound("after").await.as_deref(), Some("n1"));
        let bomb: Pod = client.get("default", "bomb").await.unwrap();
        assert_eq!(bomb.spec.node_name, None);
        assert!(!scheduler.is_finished(), "the loop is still running");
        let _ = stop.send(());
        scheduler.await.unwrap();
    }

    fn pod(name: &str, gang: Option<(&str, usize)>, node: Option<&str>, created: i64) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "creationTimestamp": chrono::DateTime::from_timestamp(created, 0).unwrap()},
            "spec": {"containers": [{"name": "c", "image": "x"}], "nodeName": node},
        }))
        .unwrap();
        if let Some((g, size)) = gang {
            p.metadata.labels.insert(LABEL_GANG.into(), g.into());
            p.metadata
                .annotations
                .insert(ANNOTATION_GANG_SIZE.into(), format_gang_size(size));
        }
        p
    }

    /// Describes the units of a pass, one string each: `pod` or `gang name size/members/bound`.
    fn check(all: &[Pod], expected: &[&str]) {
        let pending: Vec<&Pod> = all.iter().filter(|p| is_pending(p)).collect();
        let got: Vec<String> = units(&pending, all)
            .iter()
            .map(|u| match u {
                Unit::Single(p) => p.metadata.name.clone(),
                Unit::Gang {
                    name,
                    size,
                    members,
                    bound,
                } => format!("gang {name} {size}/{}/{bound}", members.len()),
            })
            .collect();
        assert_eq!(got, expected);
    }

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn asking(mut p: Pod, cpu: &str) -> Pod {
        p.spec.containers[0].resources =
            serde_json::from_value(json!({"requests": {"cpu": cpu}})).unwrap();
        p
    }

    /// Plans one pass over `pods` on `nodes`, with `assumed` (pod key → node) left by an
    /// earlier pass; describes it as `pod -> node` or `pod: why`, then the assumptions after.
    fn check_plan(nodes: &[Node], pods: &[Pod], assumed: &[(&str, &str)], expected: &[&str]) {
        let mut assumed: Assumed = assumed
            .iter()
            .map(|(key, node)| {
                let pod = pods
                    .iter()
                    .find(|p| kumo_client::cache_key(*p) == *key)
                    .unwrap();
                (key.to_string(), AssumedPod::new(node, pod))
            })
            .collect();
        let mut cluster = Cluster::new(snapshot(nodes, pods, &assumed)).sampled();
        let pending: Vec<&Pod> = pods
            .iter()
            .filter(|p| is_pending(p) && !assumed.contains_key(&kumo_client::cache_key(*p)))
            .collect();
        let plan = plan(
            units(&pending, pods),
            &mut cluster,
            &mut assumed,
            Strategy::Spread,
        );
        let mut got: Vec<String> = plan
            .binds
            .iter()
            .map(|(p, n)| format!("{} -> {n}", p.metadata.name))
            .chain(
                plan.unschedulable
                    .iter()
                    .map(|(p, why)| format!("{}: {why}", p.metadata.name)),
            )
            .collect();
        let mut keys: Vec<String> = assumed
            .into_iter()
            .map(|(k, a)| format!("assumed {k} on {}", a.node))
            .collect();
        keys.sort();
        got.extend(keys);
        assert_eq!(got, expected);
    }

    #[test]
    fn a_batch_counts_the_pods_it_just_placed() {
        let one = [node("n1", "1")];
        // Two pods that fit only one at a time: the first (oldest) is placed, the second
        // sees the node taken by it within the same pass.
        check_plan(
            &one,
            &[
                asking(pod("a", None, None, 1), "1"),
                asking(pod("b", None, None, 2), "1"),
            ],
            &[],
            &[
                "a -> n1",
                "b: 0/1 nodes are available: 1 Insufficient cpu",
                "assumed default/a on n1",
            ],
        );
        // Across passes: a pod whose binding the cache does not show yet still holds its node.
        check_plan(
            &one,
            &[
                asking(pod("a", None, None, 1), "1"),
                asking(pod("b", None, None, 2), "1"),
            ],
            &[("default/a", "n1")],
            &[
                "b: 0/1 nodes are available: 1 Insufficient cpu",
                "assumed default/a on n1",
            ],
        );
        // Room for both on two nodes: one each, both assumed.
        check_plan(
            &[node("n1", "1"), node("n2", "1")],
            &[
                asking(pod("a", None, None, 1), "1"),
                asking(pod("b", None, None, 2), "1"),
            ],
            &[],
            &[
                "a -> n1",
                "b -> n2",
                "assumed default/a on n1",
                "assumed default/b on n2",
            ],
        );
        // Half a CPU each: both fit together on one node of one CPU.
        check_plan(
            &one,
            &[
                asking(pod("a", None, None, 1), "500m"),
                asking(pod("b", None, None, 2), "500m"),
            ],
            &[],
            &[
                "a -> n1",
                "b -> n1",
                "assumed default/a on n1",
                "assumed default/b on n1",
            ],
        );
        // A gang is placed after the lone pod that took the node's room: it fits no more.
        check_plan(
            &one,
            &[
                asking(pod("lone", None, None, 1), "1"),
                asking(pod("t-0", Some(("t", 2)), None, 2), "500m"),
                asking(pod("t-1", Some(("t", 2)), None, 3), "500m"),
            ],
            &[],
            &[
                "lone -> n1",
                "t-0: gang of 2: no replica fits: 0/1 nodes are available: 1 Insufficient cpu",
                "t-1: gang of 2: no replica fits: 0/1 nodes are available: 1 Insufficient cpu",
                "assumed default/lone on n1",
            ],
        );
    }

    /// Against a real API server: of one batch, the binding that conflicts (the pod was bound
    /// meanwhile) is counted as refused and its assumption forgotten; the other is bound and
    /// stays assumed until the cache shows it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_binding_forgets_its_assumption() {
        let client = server().await;
        for n in ["n1", "n2"] {
            client.create(&node(n, "4")).await.unwrap();
        }
        let taken = client.create(&pod("taken", None, None, 1)).await.unwrap();
        let free = client.create(&pod("free", None, None, 2)).await.unwrap();
        // Someone else bound it after the scheduler's cache last saw it.
        client.bind("default", "taken", "n2").await.unwrap();
        let mut assumed: Assumed = [&taken, &free]
            .iter()
            .map(|p| (kumo_client::cache_key(*p), AssumedPod::new("n1", p)))
            .collect();
        let recorder = EventRecorder::new(client.clone(), "kumo-scheduler", None);
        let refused = bind_all(
            &client,
            &recorder,
            vec![(&taken, "n1".into()), (&free, "n1".into())],
            &mut assumed,
        )
        .await;
        assert_eq!(refused, 1);
        assert_eq!(assumed.keys().collect::<Vec<_>>(), ["default/free"]);
        let got = |name: &'static str| {
            let client = client.clone();
            async move {
                client
                    .get::<Pod>("default", name)
                    .await
                    .unwrap()
                    .spec
                    .node_name
            }
        };
        assert_eq!(got("taken").await.as_deref(), Some("n2"));
        assert_eq!(got("free").await.as_deref(), Some("n1"));
    }

    /// A client of a fresh API server on an in-memory store.
    async fn server() -> Client {
        use kumo_client::ClientConfig;
        let store = std::sync::Arc::new(kumo_store::MemStore::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let config = kumo_apiserver::Config::new(store, vec!["t0ken".into()]);
        tokio::spawn(kumo_apiserver::serve(
            listener,
            config,
            std::future::pending(),
        ));
        Client::new(&ClientConfig {
            server,
            token: "t0ken".into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// A replica bound a moment ago that the cache does not show bound yet counts in its
    /// spread group: the next replica of the app goes to another node.
    #[test]
    fn an_assumed_replica_counts_in_its_spread_group() {
        let node = |name: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap()
        };
        let nodes = [node("n1"), node("n2")];
        let mut web = pod("web-a", None, None, 1);
        web.metadata.labels.insert(LABEL_APP.into(), "web".into());
        web.metadata
            .labels
            .insert(LABEL_PROCESS.into(), "web".into());
        let check = |assumed: &[(&str, &Pod)], expected: &str| {
            let assumed: HashMap<String, AssumedPod> = assumed
                .iter()
                .enumerate()
                .map(|(k, (n, p))| (format!("default/p{k}"), AssumedPod::new(n, p)))
                .collect();
            let mut cluster = Cluster::new(snapshot(&nodes, &[] as &[Pod], &assumed));
            let i = cluster.place(&web, Strategy::Spread).unwrap();
            assert_eq!(cluster.nodes()[i].name, expected, "{assumed:?}");
        };
        check(&[], "n1");
        check(&[("n1", &web)], "n2");
        check(&[("n1", &web), ("n2", &web), ("n2", &web)], "n1");
        // A pod of no group leaves the spread alone.
        check(&[("n1", &pod("lone", None, None, 1))], "n1");
    }

    #[test]
    fn pending_pods_group_into_gangs_oldest_first() {
        check(
            &[
                pod("lone", None, None, 3),
                pod("t-0", Some(("t", 2)), None, 1),
                pod("t-1", Some(("t", 2)), None, 2),
                pod("u-0", Some(("u", 3)), None, 4),
            ],
            &["gang t 2/2/0", "lone", "gang u 3/1/0"],
        );
        // A gang with a bound member was committed: its other members go alone.
        check(
            &[
                pod("v-0", Some(("v", 2)), Some("n1"), 1),
                pod("v-1", Some(("v", 2)), None, 2),
            ],
            &["v-1"],
        );
    }
}
