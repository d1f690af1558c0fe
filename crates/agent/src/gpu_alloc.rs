//! Per-device GPU allocation: each container that asks for GPUs gets that many healthy devices
//! of its own, recorded on the pod (annotation `kumo.dev/gpu-devices: main=0,1`) before it
//! starts, and sees exactly them through `CUDA_VISIBLE_DEVICES` / `NVIDIA_VISIBLE_DEVICES`.
//!
//! The record on the pod is the truth: which devices are taken is recomputed from the pods the
//! API shows on this node (plus allocations whose record the informer has not shown yet), so a
//! restarted agent keeps every running container's devices and never hands them out twice.

use crate::gpu::GpuDiscovery;
use kumo_api::keys::{format_gpu_devices, parse_gpu_devices, GpuDevices, ANNOTATION_GPU_DEVICES};
use kumo_api::node::GpuDevice;
use kumo_api::pod::EnvVar;
use kumo_api::Pod;
use kumo_client::Client;
pub use kumo_runtime::gpus::{gpus_wanted, CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Device indices per container name (the pod's record, `kumo_api::keys::GpuDevices`).
pub type Assignment = GpuDevices;

/// GPUs each container asks for (only those asking for some).
fn wanted(pod: &Pod) -> Vec<(String, usize)> {
    pod.spec
        .containers
        .iter()
        .map(|c| (c.name.clone(), gpus_wanted(c)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The allocation recorded on `pod` (annotation `kumo.dev/gpu-devices`), if any.
pub fn recorded(pod: &Pod) -> Option<Assignment> {
    pod.metadata
        .annotations
        .get(ANNOTATION_GPU_DEVICES)
        .and_then(|a| parse_gpu_devices(a))
}

/// Whether any container of `pod` asks for GPUs.
pub fn wants_gpus(pod: &Pod) -> bool {
    !wanted(pod).is_empty()
}

/// Picks devices for every container of `pod` that asks for GPUs: healthy ones not in `taken`,
/// lowest index first. An error says why the node cannot give them now.
pub fn allocate(
    pod: &Pod,
    devices: &[GpuDevice],
    taken: &BTreeSet<u32>,
) -> Result<Assignment, String> {
    let mut free: Vec<u32> = devices
        .iter()
        .filter(|d| d.healthy && !taken.contains(&d.index))
        .map(|d| d.index)
        .collect();
    free.sort_unstable();
    let want = wanted(pod);
    let total: usize = want.iter().map(|(_, n)| n).sum();
    if total > free.len() {
        let unhealthy = devices.iter().filter(|d| !d.healthy).count();
        return Err(format!(
            "needs {total} GPU(s) but only {} of this node's {} are free and healthy ({} in use, {unhealthy} unhealthy)",
            free.len(),
            devices.len(),
            taken.len()
        ));
    }
    let mut next = free.into_iter();
    Ok(want
        .into_iter()
        .map(|(name, n)| (name, next.by_ref().take(n).collect()))
        .collect())
}

/// Whether a recorded assignment can be `pod`'s: the same containers with the same counts as
/// its requests, devices this node has, none twice and none in `taken` by another pod.
pub fn record_fits(
    a: &Assignment,
    pod: &Pod,
    devices: &[GpuDevice],
    taken: &BTreeSet<u32>,
) -> bool {
    let want: BTreeMap<String, usize> = wanted(pod).into_iter().collect();
    let counts: BTreeMap<String, usize> = a.iter().map(|(c, ids)| (c.clone(), ids.len())).collect();
    let mut seen = BTreeSet::new();
    want == counts
        && a.values()
            .flatten()
            .all(|i| seen.insert(*i) && !taken.contains(i) && devices.iter().any(|d| d.index == *i))
}

/// The pod as its containers should be started: each GPU container's environment ends with
/// `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES` naming exactly its devices (last, so
/// they win over the spec's own).
pub fn with_visible_devices(pod: &Pod, a: &Assignment) -> Pod {
    let mut pod = pod.clone();
    for c in &mut pod.spec.containers {
        if let Some(ids) = a.get(&c.name) {
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            for name in [CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES] {
                c.env.push(EnvVar {
                    name: name.to_string(),
                    value: list.join(","),
                });
            }
        }
    }
    pod
}

/// The node's allocator: devices from discovery, records on the pods.
pub struct GpuAllocator {
    discovery: Arc<dyn GpuDiscovery>,
    /// Allocations written to the API that the informer may not show yet, by pod uid.
    recent: Mutex<BTreeMap<String, Assignment>>,
}

impl GpuAllocator {
    pub fn new(discovery: Arc<dyn GpuDiscovery>) -> Self {
        GpuAllocator {
            discovery,
            recent: Mutex::default(),
        }
    }

    /// The pod to start, with its devices: the recorded ones, or new ones recorded on the pod
    /// first. `pods` are the pods bound to this node; `active` says whether a pod (by uid) may
    /// still use its devices (not ended, or a container still running). An error is a reason
    /// to wait (not enough free healthy devices, the record could not be written).
    pub async fn prepare(
        &self,
        client: &Client,
        pod: &Pod,
        pods: &[Pod],
        active: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Pod, String> {
        if wanted(pod).is_empty() {
            return Ok(pod.clone());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let own_record = recorded(pod);
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .cloned();
        // Ours, made by this agent and not yet shown by the informer.
        if let Some(a) = recent {
            return Ok(with_visible_devices(pod, &a));
        }
        let devices = self.discovery.discover();
        let assignment = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|u, _| active(u));
            let mut taken: BTreeSet<u32> = BTreeSet::new();
            for p in pods {
                let Some(u) = p.metadata.uid.as_deref() else {
                    continue;
                };
                if u == uid || !active(u) {
                    continue;
                }
                if let Some(a) = recorded(p) {
                    taken.extend(a.values().flatten());
                }
            }
            for (u, a) in recent.iter() {
                if u != &uid {
                    taken.extend(a.values().flatten());
                }
            }
            // The record on the pod stands (a restarted agent keeps a running pod's devices)
            // unless it cannot be this pod's: a manifest copied from another pod, say, names
            // devices still in use, or counts that do not match its requests.
            match own_record {
                Some(a) if record_fits(&a, pod, &devices, &taken) => {
                    return Ok(with_visible_devices(pod, &a));
                }
                Some(a) => tracing::warn!(
                    pod = %pod.metadata.name,
                    record = %format_gpu_devices(&a),
                    "the pod's recorded GPUs are not free or do not match its requests; allocating anew"
                ),
                None => {}
            }
            let a = allocate(pod, &devices, &taken)?;
            recent.insert(uid.clone(), a.clone());
            a
        };
        let patch = serde_json::json!({"metadata": {"annotations": {
            ANNOTATION_GPU_DEVICES: format_gpu_devices(&assignment)
        }}});
        if let Err(e) = client
            .patch::<Pod>(pod.metadata.ns(), &pod.metadata.name, &patch)
            .await
        {
            self.recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            return Err(format!("cannot record the pod's GPUs: {e}"));
        }
        Ok(with_visible_devices(pod, &assignment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(gpus: &[(&str, i64)]) -> Pod {
        let containers: Vec<_> = gpus
            .iter()
            .map(|(name, n)| {
                json!({"name": name, "command": ["x"],
                       "resources": {"limits": {"nvidia.com/gpu": n.to_string()}}})
            })
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"runtimeClassName": "process", "containers": containers}}))
        .unwrap()
    }

    fn devices(healthy: &[bool]) -> Vec<GpuDevice> {
        healthy
            .iter()
            .enumerate()
            .map(|(i, h)| GpuDevice {
                index: i as u32,
                uuid: format!("fake-gpu-{i}"),
                model: "FakeGPU".into(),
                memory_bytes: 0,
                healthy: *h,
                fake: true,
            })
            .collect()
    }

    fn check(pod: &Pod, healthy: &[bool], taken: &[u32], expected: Result<&str, &str>) {
        let taken: BTreeSet<u32> = taken.iter().copied().collect();
        let got = allocate(pod, &devices(healthy), &taken).map(|a| format_gpu_devices(&a));
        assert_eq!(got, expected.map(str::to_string).map_err(str::to_string));
    }

    #[test]
    fn devices_are_exclusive_healthy_and_lowest_first() {
        let four = [true; 4];
        check(&pod(&[("main", 2)]), &four, &[], Ok("main=0,1"));
        check(&pod(&[("main", 2)]), &four, &[0, 2], Ok("main=1,3"));
        check(
            &pod(&[("main", 1), ("side", 2)]),
            &four,
            &[1],
            Ok("main=0;side=2,3"),
        );
        check(
            &pod(&[("main", 2)]),
            &[true, false, true, true],
            &[0],
            Ok("main=2,3"),
        );
        check(
            &pod(&[("main", 2)]),
            &[true, false, true],
            &[0],
            Err("needs 2 GPU(s) but only 1 of this node's 3 are free and healthy (1 in use, 1 unhealthy)"),
        );
        check(&pod(&[("main", 0)]), &four, &[0, 1, 2, 3], Ok(""));
    }

    #[test]
    fn a_record_stands_only_if_it_can_be_the_pods() {
        let p = pod(&[("main", 2), ("side", 1)]);
        let four = devices(&[true, true, true, false]);
        let fits = |record: &str, taken: &[u32]| {
            let taken: BTreeSet<u32> = taken.iter().copied().collect();
            record_fits(&parse_gpu_devices(record).unwrap(), &p, &four, &taken)
        };
        assert!(fits("main=0,1;side=2", &[]));
        // A running pod keeps a device that became unhealthy.
        assert!(fits("main=0,3;side=2", &[]));
        // Another pod holds a device; counts or containers differ; a device twice or unknown.
        assert!(!fits("main=0,1;side=2", &[1]));
        assert!(!fits("main=0;side=2", &[]));
        assert!(!fits("main=0,1", &[]));
        assert!(!fits("main=0,1;side=2;other=3", &[]));
        assert!(!fits("main=0,1;side=1", &[]));
        assert!(!fits("main=0,1;side=7", &[]));
    }

    #[test]
    fn records_round_trip_and_set_the_environment() {
        let a = parse_gpu_devices("main=0,1;side=3").unwrap();
        assert_eq!(format_gpu_devices(&a), "main=0,1;side=3");
        assert_eq!(parse_gpu_devices("main=x"), None);
        let p = with_visible_devices(&pod(&[("main", 2), ("side", 1)]), &a);
        let env: Vec<String> = p.spec.containers[1]
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        assert_eq!(env, ["CUDA_VISIBLE_DEVICES=3", "NVIDIA_VISIBLE_DEVICES=3"]);
    }
}
