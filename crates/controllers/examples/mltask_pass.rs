//! Times the MLTask controller's pass on the shape of bench/mltask_throughput.py at its busiest:
//! one node with 2 CPUs running two 1-CPU tasks, and N more queued behind them.
//!
//! cargo run --release -p kumo-controllers --example mltask_pass -- [--tasks 1000] [--passes 200]

use chrono::TimeZone;
use kumo_api::{MLTask, Node, Pod};
use kumo_controllers::mltask::pass::{pass, Action, Snapshot};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (n, passes) = (arg("--tasks", 1000), arg("--passes", 200));
    let t0 = chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "status": {"allocatable": {"cpu": "2", "memory": "16Gi", "pods": "110", "nvidia.com/gpu": "2"},
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": "192.0.2.1"}],
                   "runtimeClasses": ["process"]}
    }))
    .expect("node");
    let task = |i: usize| -> MLTask {
        serde_json::from_value(json!({
            "apiVersion": "kumo.dev/v1", "kind": "MLTask",
            "metadata": {"name": format!("t-{i}"), "namespace": "default", "uid": format!("uid-{i}"),
                         "creationTimestamp": t0 + chrono::Duration::milliseconds(i as i64), "resourceVersion": (i + 1).to_string()},
            "spec": {"runtimeClassName": "process", "command": ["/bin/true"], "parallelism": 1,
                     "resources": {"cpu": "1", "gpus": 0}}
        }))
        .expect("task")
    };
    let mut tasks: Vec<MLTask> = (0..n + 2).map(task).collect();
    let nodes = vec![node];
    let mut pods: Vec<Pod> = Vec::new();
    // Settle: passes until nothing is left to write (two admitted, their pods made, the rest
    // queued with a position and a reason).
    for _ in 0..5 {
        let shared: Vec<Arc<MLTask>> = tasks.iter().cloned().map(Arc::new).collect();
        let written = BTreeMap::new();
        let out = pass(
            &snapshot(&shared, &nodes, &pods, &written),
            t0,
            Duration::from_secs(10),
        );
        for a in out.actions {
            match a {
                Action::Status(t) => {
                    if let Some(slot) = tasks
                        .iter_mut()
                        .find(|x| x.metadata.name == t.metadata.name)
                    {
                        *slot = *t;
                    }
                }
                Action::CreatePod(p) => pods.push(*p),
                _ => {}
            }
        }
    }
    let shared: Vec<Arc<MLTask>> = tasks.iter().cloned().map(Arc::new).collect();
    let written = BTreeMap::new();
    let mut times = Vec::with_capacity(passes);
    let mut writes = 0;
    for _ in 0..passes {
        let began = Instant::now();
        let out = pass(
            &snapshot(&shared, &nodes, &pods, &written),
            t0,
            Duration::from_secs(10),
        );
        times.push(began.elapsed());
        writes = out.actions.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "pass over {} tasks ({} pods): median {:.2} ms, p90 {:.2} ms, min {:.2} ms ({} writes left)",
        shared.len(),
        pods.len(),
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        ms(times[0]),
        writes
    );
}

fn snapshot<'a>(
    tasks: &'a [Arc<MLTask>],
    nodes: &'a [Node],
    pods: &'a [Pod],
    written: &'a BTreeMap<String, kumo_api::Time>,
) -> Snapshot<'a> {
    Snapshot {
        tasks,
        queues: &[],
        nodes,
        pods,
        datasets: None,
        standing_written: written,
    }
}
