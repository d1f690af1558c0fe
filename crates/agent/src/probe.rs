//! Readiness probes: the agent checks each running container that has a `readinessProbe`
//! (HTTP GET answered 2xx/3xx, or a TCP connect) and reports it ready only while it passes.
//!
//! `targets` is pure (what to probe, from pods and runtime state); the probing is the IO edge.
//! Results are kept per container *run*, so a restarted container is unready until it passes.

use crate::app_port::with_assigned_port;
use crate::model::PodRuntimeState;
use kumo_api::Pod;
use kumo_client::{Informer, WorkQueue};
use kumo_runtime::Runtime;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How often the prober wakes to see which probes are due.
const TICK: Duration = Duration::from_millis(250);
/// Default period between two probes of a container (Kubernetes says 10 s; deploys would crawl).
const DEFAULT_PERIOD: Duration = Duration::from_secs(1);
/// Default probe timeout, as in Kubernetes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// One probe to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub pod_key: String,
    pub uid: String,
    pub container: String,
    /// Identifies the container's current run (`process://PID` and restart count).
    pub run: String,
    pub addr: SocketAddr,
    /// `GET` this path; `None` for a TCP connect.
    pub http_path: Option<String>,
    pub timeout: Duration,
    pub period: Duration,
}

fn run_id(state: &crate::model::ContainerRuntimeState) -> String {
    format!(
        "{}#{}",
        state.id.as_deref().unwrap_or_default(),
        state.restart_count
    )
}

/// The probes due for `pod`, given its containers' runtime state; `host_ip` for pods on the
/// host network.
pub fn targets(pod: &Pod, actual: &PodRuntimeState, host_ip: &str) -> Vec<Target> {
    let pod = with_assigned_port(pod);
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| host_ip.to_string());
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in &pod.spec.containers {
        let Some(probe) = &c.readiness_probe else {
            continue;
        };
        let Some(state) = actual.containers.get(&c.name).filter(|s| s.is_running()) else {
            continue;
        };
        let env_port = c
            .env
            .iter()
            .rev()
            .find(|e| e.name == "PORT")
            .and_then(|e| e.value.parse::<i64>().ok());
        let (port, http_path) = match (&probe.http_get, &probe.tcp_socket) {
            (Some(h), _) => (h.port.or(env_port), Some(h.path.clone())),
            (None, Some(t)) => (t.port.or(env_port), None),
            (None, None) => continue,
        };
        let Some(port) = port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        let secs =
            |v: Option<i64>, d: Duration| v.map_or(d, |s| Duration::from_secs(s.max(1) as u64));
        out.push(Target {
            pod_key: kumo_client::cache_key(&pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            container: c.name.clone(),
            run: run_id(state),
            addr: SocketAddr::new(ip, port),
            http_path,
            timeout: secs(probe.timeout_seconds, DEFAULT_TIMEOUT),
            period: secs(probe.period_seconds, DEFAULT_PERIOD),
        });
    }
    out
}

#[derive(Debug, Clone)]
struct Outcome {
    run: String,
    passed: bool,
    at: Instant,
}

/// The latest probe outcome of every probed container, by (pod uid, container).
#[derive(Default)]
pub struct Prober {
    results: Mutex<BTreeMap<(String, String), Outcome>>,
}

impl Prober {
    /// Containers of `pod` whose current run passed its latest readiness probe. A run not
    /// probed yet by this agent (it just restarted) keeps the readiness the pod's status
    /// reports for that same run, so an agent restart does not take ready replicas out of the
    /// router.
    pub fn passed(&self, pod: &Pod, actual: &PodRuntimeState) -> BTreeSet<String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        let reported = |name: &str, state: &crate::model::ContainerRuntimeState| {
            pod.status.as_ref().is_some_and(|s| {
                s.container_statuses.iter().any(|c| {
                    c.name == name
                        && c.ready
                        && c.container_id.is_some()
                        && c.container_id == state.id
                        && c.restart_count == state.restart_count
                })
            })
        };
        actual
            .containers
            .iter()
            .filter(
                |(name, state)| match results.get(&(uid.clone(), name.to_string())) {
                    Some(o) if o.run == run_id(state) => o.passed,
                    _ => reported(name, state),
                },
            )
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Probes forever: every due target, concurrently; a changed outcome requeues its pod.
    pub async fn run(
        self: Arc<Self>,
        pods: Informer<Pod>,
        runtime: Arc<dyn Runtime>,
        queue: WorkQueue<String>,
        host_ip: String,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Only pods that can still run are cloned: a node keeps its ended pods (thousands
            // after a run of MLTasks) and this runs every tick.
            let all: Vec<Target> = pods
                .list_filtered(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && !p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
                })
                .iter()
                .flat_map(|p| {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    targets(p, &runtime.state(&uid), &host_ip)
                })
                .collect();
            let due: Vec<Target> = {
                let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
                let live: BTreeSet<(String, String)> = all
                    .iter()
                    .map(|t| (t.uid.clone(), t.container.clone()))
                    .collect();
                results.retain(|k, _| live.contains(k));
                all.into_iter()
                    .filter(|t| {
                        results
                            .get(&(t.uid.clone(), t.container.clone()))
                            .is_none_or(|o| o.run != t.run || o.at.elapsed() >= t.period)
                    })
                    .collect()
            };
            let mut set = tokio::task::JoinSet::new();
            for t in due {
                set.spawn(async move {
                    let passed = probe(&t).await;
                    (t, passed)
                });
            }
            while let Some(Ok((t, passed))) = set.join_next().await {
                let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
                let key = (t.uid.clone(), t.container.clone());
                let changed = results
                    .get(&key)
                    .is_none_or(|o| o.run != t.run || o.passed != passed);
                results.insert(
                    key,
                    Outcome {
                        run: t.run.clone(),
                        passed,
                        at: Instant::now(),
                    },
                );
                if changed {
                    tracing::debug!(pod = %t.pod_key, container = %t.container, passed, "readiness changed");
                    queue.add(t.pod_key.clone());
                }
            }
        }
    }
}

/// Runs one probe: whether it passed within its timeout.
pub async fn probe(t: &Target) -> bool {
    tokio::time::timeout(t.timeout, probe_once(t))
        .await
        .unwrap_or(false)
}

async fn probe_once(t: &Target) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(t.addr).await else {
        return false;
    };
    let Some(path) = &t.http_path else {
        return true;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kumo-probe\r\nConnection: close\r\n\r\n",
        t.addr
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    status_passes(&head)
}

/// Whether an HTTP response starting with `head` has a 2xx or 3xx status.
pub fn status_passes(head: &[u8]) -> bool {
    let line = String::from_utf8_lossy(head);
    let mut parts = line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return false;
    };
    version.starts_with("HTTP/") && code.parse::<u16>().is_ok_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{actual, pod, running};
    use kumo_api::pod::{HttpGetAction, Probe, TcpSocketAction};
    use kumo_api::RestartPolicy;

    #[test]
    fn statuses_that_pass() {
        for (head, ok) in [
            ("HTTP/1.1 200 OK\r\n", true),
            ("HTTP/1.0 302 Found\r\n", true),
            ("HTTP/1.1 404 Not Found\r\n", false),
            ("HTTP/1.1 503 Service Unavailable\r\n", false),
            ("garbage", false),
            ("", false),
        ] {
            assert_eq!(status_passes(head.as_bytes()), ok, "{head}");
        }
    }

    #[test]
    fn targets_follow_running_containers_and_their_port() {
        let mut p = pod(RestartPolicy::Always, &["web", "side"]);
        p.metadata.uid = Some("u1".into());
        p.spec.containers[0].readiness_probe = Some(Probe {
            http_get: Some(HttpGetAction {
                path: "/healthz".into(),
                port: None,
            }),
            timeout_seconds: Some(2),
            ..Default::default()
        });
        p.spec.containers[1].readiness_probe = Some(Probe {
            tcp_socket: Some(TcpSocketAction { port: Some(9000) }),
            ..Default::default()
        });
        p.metadata.annotations.insert(
            kumo_api::app::ANNOTATION_ASSIGNED_PORT.into(),
            "4321".into(),
        );
        // Nothing runs: nothing to probe.
        assert!(targets(&p, &actual(&[]), "10.0.0.1").is_empty());
        let a = actual(&[("web", running(0, 0)), ("side", running(1, 0))]);
        let got: Vec<(String, SocketAddr, Option<String>, Duration)> = targets(&p, &a, "10.0.0.1")
            .into_iter()
            .map(|t| (t.container, t.addr, t.http_path, t.timeout))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "web".into(),
                    "10.0.0.1:4321".parse().unwrap(),
                    Some("/healthz".into()),
                    Duration::from_secs(2)
                ),
                (
                    "side".into(),
                    "10.0.0.1:9000".parse().unwrap(),
                    None,
                    DEFAULT_TIMEOUT
                ),
            ]
        );
    }

    #[test]
    fn a_restarted_container_is_unready_until_probed_again() {
        let prober = Prober::default();
        let a = actual(&[("web", running(0, 0))]);
        let run = run_id(&a.containers["web"]);
        prober.results.lock().unwrap().insert(
            ("u1".into(), "web".into()),
            Outcome {
                run,
                passed: true,
                at: Instant::now(),
            },
        );
        let mut p = pod(RestartPolicy::Always, &["web"]);
        p.metadata.uid = Some("u1".into());
        assert_eq!(prober.passed(&p, &a).len(), 1);
        let restarted = actual(&[("web", running(1, 0))]);
        assert!(prober.passed(&p, &restarted).is_empty());
    }

    #[test]
    fn a_restarted_agent_keeps_the_reported_readiness_until_it_probes() {
        let prober = Prober::default();
        let a = actual(&[("web", running(0, 0))]);
        let mut p = pod(RestartPolicy::Always, &["web"]);
        p.metadata.uid = Some("u1".into());
        assert!(prober.passed(&p, &a).is_empty(), "never reported ready");
        p.status = Some(kumo_api::pod::PodStatus {
            container_statuses: vec![kumo_api::pod::ContainerStatus {
                name: "web".into(),
                ready: true,
                container_id: Some("process://100".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(prober.passed(&p, &a).len(), 1);
        // Reported for another run: not carried over.
        let restarted = actual(&[("web", running(1, 0))]);
        assert!(prober.passed(&p, &restarted).is_empty());
        // A probe outcome for the run wins.
        prober.results.lock().unwrap().insert(
            ("u1".into(), "web".into()),
            Outcome {
                run: run_id(&a.containers["web"]),
                passed: false,
                at: Instant::now(),
            },
        );
        assert!(prober.passed(&p, &a).is_empty());
    }

    #[test]
    fn a_probed_container_is_ready_only_after_passing() {
        let mut p = pod(RestartPolicy::Always, &["web"]);
        p.spec.containers[0].readiness_probe = Some(Probe {
            tcp_socket: Some(TcpSocketAction::default()),
            ..Default::default()
        });
        let mut a = actual(&[("web", running(0, 0))]);
        let ready = |a: &PodRuntimeState| {
            let s =
                crate::status::pod_status(&p, a, crate::fixtures::t(5), &crate::fixtures::params());
            let c = kumo_api::meta::find_condition(&s.conditions, "Ready").unwrap();
            (s.container_statuses[0].ready, c.status)
        };
        assert_eq!(ready(&a), (false, kumo_api::ConditionStatus::False));
        a.probes_passed.insert("web".into());
        assert_eq!(ready(&a), (true, kumo_api::ConditionStatus::True));
    }

    /// Probe numbers of i64::MAX seconds (pods' probe numbers have no bound yet): the timeout
    /// saturates in tokio's timer instead of overflowing, and a refused connect still fails
    /// the probe at once.
    #[tokio::test]
    async fn huge_probe_numbers_do_not_panic() {
        let mut p = pod(RestartPolicy::Always, &["web"]);
        p.metadata.uid = Some("u1".into());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        p.spec.containers[0].readiness_probe = Some(Probe {
            tcp_socket: Some(TcpSocketAction {
                port: Some(i64::from(port)),
            }),
            timeout_seconds: Some(i64::MAX),
            period_seconds: Some(i64::MAX),
            ..Default::default()
        });
        let a = actual(&[("web", running(0, 0))]);
        let t = targets(&p, &a, "127.0.0.1").pop().expect("a target");
        assert_eq!(t.timeout, Duration::from_secs(i64::MAX as u64));
        assert!(!probe(&t).await);
    }
}
