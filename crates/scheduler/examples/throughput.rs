//! In-process scheduler throughput: N Ready nodes, M pending pods, placed one after another
//! through the loop's own path (snapshot, `Cluster::place`, `Cluster::assume`), without the HTTP
//! binding. `--all-nodes` turns sampling off (every node scored for every pod).
//!
//! `cargo run --release -p kumo-scheduler --example throughput -- --nodes 5000 --pods 50000`

use kumo_api::keys::{LABEL_APP, LABEL_PROCESS, LABEL_ZONE};
use kumo_api::{Node, Pod};
use kumo_scheduler::run::snapshot;
use kumo_scheduler::{Cluster, Strategy};
use serde_json::json;
use std::collections::HashMap;
use std::time::Instant;

/// A small deterministic generator (SplitMix64), so every run places the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

/// Every node: 32 CPU, 128Gi, 110 pods, a zone; one in ten has 8 GPUs in the `gpu` pool.
fn node(i: usize) -> Node {
    let gpu = i.is_multiple_of(10);
    let mut alloc = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    if gpu {
        alloc["nvidia.com/gpu"] = json!("8");
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:05}"), "labels": {
            LABEL_ZONE: ZONES[i % ZONES.len()],
            "pool": if gpu { "gpu" } else { "general" },
        }},
        "status": {
            "allocatable": alloc,
            "conditions": [{"type": "Ready", "status": "True"}],
            "runtimeClasses": ["runc", "process"],
        }
    }))
    .expect("a valid node")
}

/// A mix: 70% plain pods, 15% app replicas (spread over zones), 10% with a node selector,
/// 5% asking for one GPU in the `gpu` pool.
fn pod(i: usize, rng: &mut Rng) -> Pod {
    let cpu = rng.pick(&["100m", "250m", "500m", "1", "2"]);
    let memory = rng.pick(&["128Mi", "256Mi", "512Mi", "1Gi", "2Gi"]);
    let mut requests = json!({"cpu": cpu, "memory": memory});
    let mut labels = json!({});
    let mut selector = json!({});
    match rng.next() % 100 {
        0..70 => {}
        70..85 => {
            labels = json!({LABEL_APP: format!("app-{}", rng.next() % 200), LABEL_PROCESS: "web"});
        }
        85..95 => selector = json!({LABEL_ZONE: rng.pick(&ZONES)}),
        _ => {
            requests["nvidia.com/gpu"] = json!("1");
            selector = json!({"pool": "gpu"});
        }
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i:06}"), "namespace": "default", "labels": labels},
        "spec": {"nodeSelector": selector,
                 "containers": [{"name": "c", "image": "x", "resources": {"requests": requests}}]}
    }))
    .expect("a valid pod")
}

/// Nanoseconds this thread has run on a CPU (Linux), so a run on a busy machine still tells
/// the cost of placement apart from the time spent waiting for a core.
fn cpu_nanos() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v:?}"))
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_nodes = arg(&args, "--nodes", 5000);
    let n_pods = arg(&args, "--pods", 50000);
    let mut rng = Rng(42);
    let nodes: Vec<Node> = (0..n_nodes).map(node).collect();
    let pods: Vec<Pod> = (0..n_pods).map(|i| pod(i, &mut rng)).collect();

    let start = Instant::now();
    let mut cluster = Cluster::new(snapshot(&nodes, &[] as &[Pod], &HashMap::new()));
    if !args.iter().any(|a| a == "--all-nodes") {
        cluster = cluster.sampled();
    }
    let snapshot_time = start.elapsed();
    let (mut placed, mut unschedulable) = (0usize, 0usize);
    let start = Instant::now();
    let cpu_start = cpu_nanos();
    for pod in &pods {
        match cluster.place(pod, Strategy::Spread) {
            Ok(i) => {
                cluster.assume(i, pod);
                placed += 1;
            }
            Err(_) => unschedulable += 1,
        }
    }
    let elapsed = start.elapsed();
    let on_cpu = cpu_start.zip(cpu_nanos()).map_or(String::new(), |(a, b)| {
        let secs = (b - a) as f64 / 1e9;
        format!(
            " (on CPU {secs:.3} s: {:.0} pods per CPU-second)",
            n_pods as f64 / secs
        )
    });
    println!(
        "nodes {n_nodes}, pods {n_pods}: placed {placed}, unschedulable {unschedulable}, \
         snapshot {:.1} ms, placement {:.3} s, {:.0} pods/s{on_cpu}",
        snapshot_time.as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
        n_pods as f64 / elapsed.as_secs_f64()
    );
}
