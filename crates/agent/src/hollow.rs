//! Hollow nodes (Kubernetes' kubemark model), for density benchmarks: the agent's real loops —
//! registration and heartbeat (`node`), the pod informer and worker (`sync`), the status it
//! writes (`status`) — over a [`FakeRuntime`] that runs nothing. Many hollow nodes share one
//! process; each talks to the API server as a real agent does, with its own client.
//!
//! What a hollow node leaves out is what touches the machine: no image pulls, sandboxes, pod
//! networks, GPUs, probes or log endpoint (the Node advertises port 0), and a container
//! "starts" the moment the worker asks and runs until it is stopped.

use crate::gpu::GpuDiscovery;
use crate::model::{ContainerRuntimeState, PodRuntimeState, RunState, SyncParams};
use crate::node::{HostFacts, NodeAgent, NodeIdentity};
use crate::sync::PodWorker;
use kumo_api::node::GpuDevice;
use kumo_api::pod::ContainerStateTerminated;
use kumo_api::Pod;
use kumo_client::{Change, Client, Controller, Informer, ListParams};
use kumo_runtime::record::PodRecord;
use kumo_runtime::{Runtime, RuntimeError, StartOutcome};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The runtime class hollow nodes serve: the default one, so plain pods land on them.
pub const HOLLOW_RUNTIME_CLASS: &str = kumo_api::pod::RUNTIME_RUNC;

/// Pod syncs of one hollow node at a time (a real agent allows 16; a hollow sync never waits
/// on a runtime, and a thousand nodes share the process).
const HOLLOW_CONCURRENT_SYNCS: usize = 4;

/// A made-up container runtime: no process, no file. A start is recorded as running at once; a
/// kill ends the container as if it stopped cleanly on SIGTERM. It serves one runtime class
/// (pods name theirs, `runc` by default), so the scheduler and the agent's plan treat the
/// hollow node as one that has it.
pub struct FakeRuntime {
    class: &'static str,
    pods: Mutex<BTreeMap<String, FakePod>>,
}

struct FakePod {
    record: PodRecord,
    containers: BTreeMap<String, ContainerRuntimeState>,
}

impl FakeRuntime {
    pub fn new(class: &'static str) -> Self {
        FakeRuntime {
            class,
            pods: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, FakePod>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        self.class
    }

    async fn start(&self, pod: &Pod, index: usize) -> Result<StartOutcome, RuntimeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(c) = pod.spec.containers.get(index) else {
            return Err(RuntimeError::InvalidContainer(format!(
                "pod {uid} has no container {index}"
            )));
        };
        let mut pods = self.lock();
        let entry = pods.entry(uid.clone()).or_insert_with(|| FakePod {
            record: PodRecord {
                namespace: pod.metadata.ns().to_string(),
                name: pod.metadata.name.clone(),
                uid: uid.clone(),
            },
            containers: BTreeMap::new(),
        });
        let previous = entry.containers.get(&c.name);
        if previous.is_some_and(ContainerRuntimeState::is_running) {
            return Err(RuntimeError::InvalidContainer(format!(
                "container {} of pod {uid} is already running",
                c.name
            )));
        }
        let (restart_count, last_terminated) = match previous {
            Some(p) => (p.restart_count + 1, p.terminated().cloned()),
            None => (0, None),
        };
        entry.containers.insert(
            c.name.clone(),
            ContainerRuntimeState {
                restart_count,
                run: RunState::Running {
                    started_at: chrono::Utc::now(),
                },
                last_terminated,
                id: Some(format!("fake://{uid}/{}", c.name)),
            },
        );
        Ok(StartOutcome::Started { pid: 0 })
    }

    async fn kill(&self, uid: &str, container: &str, _grace: Duration) -> Result<(), RuntimeError> {
        let mut pods = self.lock();
        let state = pods
            .get_mut(uid)
            .and_then(|p| p.containers.get_mut(container));
        if let Some(state) = state {
            if let RunState::Running { started_at } = state.run {
                state.run = RunState::Exited(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    started_at: Some(started_at),
                    finished_at: Some(chrono::Utc::now()),
                    ..Default::default()
                });
            }
        }
        Ok(())
    }

    fn state(&self, uid: &str) -> PodRuntimeState {
        PodRuntimeState {
            containers: self
                .lock()
                .get(uid)
                .map(|p| p.containers.clone())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn pods(&self) -> Vec<PodRecord> {
        self.lock().values().map(|p| p.record.clone()).collect()
    }

    fn pods_named(&self, namespace: &str, name: &str) -> Vec<PodRecord> {
        self.lock()
            .values()
            .filter(|p| p.record.namespace == namespace && p.record.name == name)
            .map(|p| p.record.clone())
            .collect()
    }

    fn log_path(&self, _uid: &str, _container: &str, _restart_count: i32) -> PathBuf {
        // A hollow container writes no log; the node serves no log endpoint either.
        PathBuf::from("/dev/null")
    }

    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError> {
        self.lock().remove(uid);
        Ok(())
    }

    async fn shutdown(&self) {}

    fn has_pod(&self, uid: &str) -> bool {
        self.lock().contains_key(uid)
    }
}

/// A hollow node has no GPUs (and says nothing about fake ones).
struct NoGpus;

impl GpuDiscovery for NoGpus {
    fn discover(&self) -> Vec<GpuDevice> {
        Vec::new()
    }
}

/// One hollow node.
#[derive(Debug, Clone)]
pub struct HollowNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The runtime class its [`FakeRuntime`] serves.
    pub runtime_class: &'static str,
    /// What the node reports as its capacity (cores and memory are made up, as kubemark's).
    pub facts: HostFacts,
    pub heartbeat_interval: Duration,
}

/// Runs hollow node `node` with `client` (its own credential) until `shutdown` completes: the
/// real heartbeat, informer, resync and pod worker of [`crate::run`], without what touches the
/// machine.
pub async fn run(client: Client, node: HollowNode, shutdown: impl Future<Output = ()> + Send) {
    let runtime: Arc<dyn Runtime> = Arc::new(FakeRuntime::new(node.runtime_class));
    let classes = vec![node.runtime_class.to_string()];
    let selector = format!("spec.nodeName={}", node.name);
    let (informer, changes) =
        Informer::<Pod>::start(client.clone(), None, ListParams::fields(&selector));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        NodeAgent {
            client: client.clone(),
            id: NodeIdentity {
                name: node.name.clone(),
                labels: node.labels.clone(),
                address: "127.0.0.1".into(),
                port: 0,
                runtime_classes: classes.clone(),
                pod_cidr: None,
            },
            facts: node.facts.clone(),
            gpus: Arc::new(NoGpus),
            interval: node.heartbeat_interval,
        }
        .run(),
    );
    let controller = Controller::new(crate::sync::RETRY_BASE, crate::sync::RETRY_MAX)
        .concurrency(HOLLOW_CONCURRENT_SYNCS);
    let params = SyncParams {
        node_name: node.name.clone(),
        host_ip: "127.0.0.1".into(),
        runtime_classes: classes,
        backoff_base: crate::config::DEFAULT_BACKOFF_BASE,
    };
    let worker = Arc::new(PodWorker::new(
        client,
        informer.clone(),
        controller.queue(),
        runtime,
        params,
    ));
    let on_change = {
        let worker = worker.clone();
        move |change: &Change<Pod>| {
            if let Change::Deleted(pod) = change {
                worker.pod_gone(pod);
            }
            Some(kumo_client::cache_key(change.object()))
        }
    };
    let resync = {
        let (worker, informer) = (worker.clone(), informer.clone());
        async move {
            informer.wait_synced().await;
            let mut resync = tokio::time::interval(crate::agent::RESYNC_INTERVAL);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                resync.tick().await;
                worker.enqueue_all();
            }
        }
    };
    let sync = move |key: String| {
        let worker = worker.clone();
        async move { worker.reconcile(&key).await.map(|()| None) }
    };
    controller
        .waits_for(informer)
        .feeds(changes, on_change)
        .also(resync)
        .run_spawned(sync, crate::sync::report, shutdown, Duration::ZERO)
        .await;
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;
    use kumo_api::RestartPolicy;

    /// What the fake reports for container `c` of the fixture pod after `steps`.
    fn check(steps: &[(&str, usize)], expected: Option<(i32, bool)>) {
        let rt = FakeRuntime::new("runc");
        let p = pod(RestartPolicy::Always, &["a", "b"]);
        let rt_ref = &rt;
        let run = async {
            for (step, index) in steps {
                let name = &p.spec.containers[*index].name;
                match *step {
                    "start" => {
                        let _ = rt_ref.start(&p, *index).await;
                    }
                    "kill" => rt_ref.kill("uid-1", name, Duration::ZERO).await.unwrap(),
                    "cleanup" => rt_ref.cleanup("uid-1").await.unwrap(),
                    other => panic!("unknown step {other}"),
                }
            }
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(run);
        let got = rt
            .state("uid-1")
            .containers
            .get("a")
            .map(|s| (s.restart_count, s.is_running()));
        assert_eq!(got, expected, "steps {steps:?}");
    }

    #[test]
    fn fake_containers_run_until_killed_and_restart_counts_go_up() {
        check(&[], None);
        check(&[("start", 0)], Some((0, true)));
        // A second start of a running container is refused and changes nothing.
        check(&[("start", 0), ("start", 0)], Some((0, true)));
        check(&[("start", 0), ("kill", 0)], Some((0, false)));
        check(&[("start", 0), ("kill", 0), ("start", 0)], Some((1, true)));
        check(&[("start", 1)], None);
        check(&[("start", 0), ("cleanup", 0)], None);
    }

    #[test]
    fn fake_runtime_knows_its_pods_by_name() {
        let rt = FakeRuntime::new("runc");
        let p = pod(RestartPolicy::Always, &["a"]);
        let started = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(rt.start(&p, 0))
            .unwrap();
        assert_eq!(started, StartOutcome::Started { pid: 0 });
        assert_eq!(rt.name(), "runc");
        assert!(rt.has_pod("uid-1") && !rt.has_pod("uid-2"));
        assert_eq!(rt.pods_named("default", "p").len(), 1);
        assert!(rt.pods_named("default", "q").is_empty());
        let kept = rt.state("uid-1").containers["a"].terminated().cloned();
        assert_eq!(kept, None);
    }
}
