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

/// A pod this scheduler bound that its cache does not show bound yet.
#[derive(Debug, Clone)]
pub struct Assumed {
    pub node: String,
    pub resources: Resources,
    /// Its spread group ([`crate::core::spread_key`]).
    pub spread: Option<String>,
}

impl Assumed {
    pub fn new(node: &str, pod: &Pod) -> Assumed {
        Assumed {
            node: node.to_string(),
            resources: Resources::of_pod(pod),
            spread: crate::core::spread_key(pod),
        }
    }
}

/// Builds node views with what bound pods already use. Pods this scheduler bound but the cache
/// does not show yet (`assumed`) count too, resources and spread group, so one pass never
/// double-books a node nor stacks an app's replicas created a moment apart on one node.
pub fn snapshot(nodes: &[Node], pods: &[Pod], assumed: &HashMap<String, Assumed>) -> Vec<NodeView> {
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
    let assumed: tokio::sync::Mutex<HashMap<String, Assumed>> = Default::default();
    let (client, recorder, pods, nodes, assumed) = (&client, &recorder, &pods, &nodes, &assumed);
    let each = move || async move {
        let mut assumed = assumed.lock().await;
        let left_out =
            schedule_pass(client, recorder, pods, nodes, &mut assumed, config.strategy).await;
        // The others were placed; the left-out ones are tried again at the next change or
        // after the back-off.
        Ok::<_, Infallible>(Passed {
            left_out,
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
fn units<'a>(pending: &[&'a Pod], all: &[Pod]) -> Vec<Unit<'a>> {
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

/// One pass over every pending pod and gang, oldest first.
async fn schedule_pass(
    client: &Client,
    recorder: &EventRecorder,
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
    assumed: &mut HashMap<String, Assumed>,
    strategy: Strategy,
) -> Failed {
    let mut failed = Failed::new();
    // Pods that ended and hold nothing play no part in a pass; most pods of a busy batch
    // cluster are such (they stay for their logs), and cloning them all made every pass slower.
    let all_pods = pods.list_filtered(|p| is_pending(p) || holds_resources(p));
    // Forget assumptions the cache has caught up with.
    assumed.retain(|key, _| pods.get(key).is_some_and(|p| p.spec.node_name.is_none()));
    let mut cluster = Cluster::new(snapshot(&nodes.list(), &all_pods, assumed)).sampled();
    let mut pending: Vec<&Pod> = all_pods
        .iter()
        .filter(|p| is_pending(p) && !assumed.contains_key(&kumo_client::cache_key(*p)))
        .collect();
    pending.sort_by(|a, b| {
        (a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(b.metadata.creation_timestamp, &b.metadata.name))
    });
    for unit in units(&pending, &all_pods) {
        match unit {
            Unit::Single(pod) => match guard_pure(|| {
                #[cfg(test)]
                tests::panic_if_asked(pod);
                cluster.place(pod, strategy)
            }) {
                Ok(Ok(i)) => bind(client, recorder, pod, &mut cluster, i, assumed).await,
                Ok(Err(why)) => mark_unschedulable(client, recorder, pod, why.message).await,
                Err(panic) => failed.push((kumo_client::cache_key(pod), panic)),
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
                for pod in members {
                    mark_unschedulable(client, recorder, pod, message.clone()).await;
                }
            }
            // Gangs are packed onto as few nodes as possible: replicas talk to each other.
            Unit::Gang { name, members, .. } => {
                match guard_pure(|| place_gang(&members, cluster.nodes(), Strategy::BinPack)) {
                    Ok(Ok(placement)) => {
                        for (pod, i) in members.iter().zip(placement) {
                            bind(client, recorder, pod, &mut cluster, i, assumed).await;
                        }
                    }
                    Ok(Err(why)) => {
                        for pod in members {
                            mark_unschedulable(client, recorder, pod, why.message.clone()).await;
                        }
                    }
                    Err(panic) => failed.push((format!("gang {name}"), panic)),
                }
            }
        }
    }
    failed
}

/// Binds `pod` to node `i`, counting it there for the rest of the pass.
async fn bind(
    client: &Client,
    recorder: &EventRecorder,
    pod: &Pod,
    cluster: &mut Cluster,
    i: usize,
    assumed: &mut HashMap<String, Assumed>,
) {
    let key = kumo_client::cache_key(pod);
    let ns = pod.metadata.ns().to_string();
    let node = cluster.nodes()[i].name.clone();
    match client.bind(&ns, &pod.metadata.name, &node).await {
        Ok(()) => {
            cluster.assume(i, pod);
            assumed.insert(key, Assumed::new(&node, pod));
            let message = format!("Successfully assigned {ns}/{} to {node}", pod.metadata.name);
            // Written off the pass, as events are best effort: bindings are made one at a time,
            // and awaiting each event's write doubled the time of each (bench/density.py).
            let (recorder, pod) = (recorder.clone(), pod.clone());
            tokio::spawn(async move {
                recorder
                    .record(&pod, EventType::Normal, "Scheduled", message)
                    .await
            });
        }
        Err(e) => tracing::debug!(pod = %key, error = %e, "binding failed"),
    }
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
            let assumed: HashMap<String, Assumed> = assumed
                .iter()
                .enumerate()
                .map(|(k, (n, p))| (format!("default/p{k}"), Assumed::new(n, p)))
                .collect();
            let mut cluster = Cluster::new(snapshot(&nodes, &[], &assumed));
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
