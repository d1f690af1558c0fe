//! Samples the GPUs each running pod on this node holds and keeps the samples on the pod
//! (annotation `kumo.dev/gpu-usage`), written only when they change and at most once per
//! interval, so sampling never floods the store.

use crate::gpu::GpuDiscovery;
use crate::gpu_alloc::recorded;
use kumo_api::gpu_usage::{GpuUsage, ANNOTATION_GPU_USAGE};
use kumo_api::{Pod, PodPhase};
use kumo_client::{Client, Informer};
use std::sync::Arc;
use std::time::Duration;

/// How often the devices are sampled (and at most how often a pod's annotation is written).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// The devices a running pod holds, by index, from its allocation record; none otherwise.
pub fn held_devices(pod: &Pod) -> Vec<u32> {
    let running = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase == PodPhase::Running);
    let Some(a) = running.then(|| recorded(pod)).flatten() else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = a.into_values().flatten().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The annotation value to write for `samples`; `None` when there is nothing to say or the pod
/// already says exactly that.
pub fn annotation_update(pod: &Pod, samples: &[GpuUsage]) -> Option<String> {
    if samples.is_empty() {
        return None;
    }
    let value = kumo_api::gpu_usage::format(samples);
    (pod.metadata.annotations.get(ANNOTATION_GPU_USAGE) != Some(&value)).then_some(value)
}

/// Samples every `interval` until the task is dropped.
pub async fn run(
    client: Client,
    pods: Informer<Pod>,
    devices: Arc<dyn GpuDiscovery>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for pod in pods.list() {
            let samples: Vec<GpuUsage> = held_devices(&pod)
                .into_iter()
                .filter_map(|i| devices.sample(i))
                .collect();
            let Some(value) = annotation_update(&pod, &samples) else {
                continue;
            };
            let patch =
                serde_json::json!({"metadata": {"annotations": {ANNOTATION_GPU_USAGE: value}}});
            if let Err(e) = client
                .patch::<Pod>(pod.metadata.ns(), &pod.metadata.name, &patch)
                .await
            {
                tracing::debug!(pod = %pod.metadata.name, error = %e, "cannot record GPU use");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::FakeGpus;
    use kumo_api::pod::ANNOTATION_GPU_DEVICES;
    use serde_json::json;

    fn pod(phase: &str, devices: Option<&str>, usage: Option<&str>) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(d) = devices {
            annotations.insert(ANNOTATION_GPU_DEVICES.into(), json!(d));
        }
        if let Some(u) = usage {
            annotations.insert(ANNOTATION_GPU_USAGE.into(), json!(u));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "t-0", "annotations": annotations},
            "spec": {"containers": [{"name": "main", "image": "x"}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn running_pods_report_the_devices_they_hold() {
        assert_eq!(
            held_devices(&pod("Running", Some("main=3,1;side=1"), None)),
            [1, 3]
        );
        assert!(held_devices(&pod("Pending", Some("main=0"), None)).is_empty());
        assert!(held_devices(&pod("Succeeded", Some("main=0"), None)).is_empty());
        assert!(held_devices(&pod("Running", None, None)).is_empty());
    }

    #[test]
    fn samples_are_written_only_when_they_change() {
        let gpus = FakeGpus(2);
        let p = pod("Running", Some("main=0,1"), None);
        let samples: Vec<GpuUsage> = held_devices(&p)
            .into_iter()
            .filter_map(|i| gpus.sample(i))
            .collect();
        let value = annotation_update(&p, &samples).unwrap();
        assert!(value.contains(r#""fake":true"#), "{value}");
        let written = pod("Running", Some("main=0,1"), Some(&value));
        assert_eq!(annotation_update(&written, &samples), None);
        assert_eq!(annotation_update(&p, &[]), None);
    }
}
