//! The `kumo get` columns of MLTasks and Queues.

use kumo_api::gpu_usage::GpuUsage;
use kumo_api::mltask::{MLTask, Queue, ReplicaStatus};
use serde_json::Value;

/// Mean utilization over every replica's GPUs at their last samples, `(fake)` when any is made
/// up; `<none>` before a sample.
fn gpu_use(replicas: &[ReplicaStatus]) -> String {
    let samples: Vec<&GpuUsage> = replicas.iter().flat_map(|r| &r.gpu_usage).collect();
    if samples.is_empty() {
        return "<none>".into();
    }
    let mean = samples
        .iter()
        .map(|s| u64::from(s.utilization_percent))
        .sum::<u64>()
        / samples.len() as u64;
    let fake = if samples.iter().any(|s| s.fake) {
        " (fake)"
    } else {
        ""
    };
    format!("{mean}%{fake}")
}

/// NAME PHASE QUEUE POSITION GPUS ATTEMPTS AGE [NODES GPU-USE REASON].
pub fn task_row(obj: &Value, name: String, age: String, wide: bool) -> Vec<String> {
    let task: MLTask = serde_json::from_value(obj.clone()).unwrap_or_default();
    let st = task.status.clone().unwrap_or_default();
    let mut row = vec![
        name,
        format!("{:?}", st.phase),
        task.spec.queue.clone(),
        st.queue_position.map_or("-".to_string(), |p| p.to_string()),
        format!("{}×{}", task.spec.parallelism, task.spec.resources.gpus),
        st.attempts.to_string(),
        age,
    ];
    if wide {
        let mut nodes: Vec<&str> = st
            .replicas
            .iter()
            .filter_map(|r| r.node.as_deref())
            .collect();
        nodes.dedup();
        row.push(if nodes.is_empty() {
            "<none>".into()
        } else {
            nodes.join(",")
        });
        row.push(gpu_use(&st.replicas));
        row.push(
            st.pending_reason
                .or(st.message)
                .unwrap_or_else(|| "<none>".into()),
        );
    }
    row
}

/// NAME QUOTA PENDING RUNNING GPUS AGE.
pub fn queue_row(obj: &Value, name: String, age: String) -> Vec<String> {
    let q: Queue = serde_json::from_value(obj.clone()).unwrap_or_default();
    let st = q.status.clone().unwrap_or_default();
    vec![
        name,
        q.spec
            .gpu_quota
            .map_or("<none>".to_string(), |g| g.to_string()),
        st.pending.to_string(),
        st.running.to_string(),
        st.gpus_in_use.to_string(),
        age,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_and_queue_rows() {
        let t = json!({"metadata": {"name": "resnet"},
            "spec": {"runtimeClassName": "process", "command": ["x"], "parallelism": 2, "resources": {"gpus": 2}},
            "status": {"phase": "Queued", "queuePosition": 1, "attempts": 2, "pendingReason": "needs 2×2 GPUs"}});
        assert_eq!(
            task_row(&t, "resnet".into(), "5m".into(), true),
            [
                "resnet",
                "Queued",
                "default",
                "1",
                "2×2",
                "2",
                "5m",
                "<none>",
                "<none>",
                "needs 2×2 GPUs"
            ]
        );
        let running = json!({"metadata": {"name": "t"},
            "spec": {"runtimeClassName": "process", "command": ["x"], "parallelism": 2, "resources": {"gpus": 1}},
            "status": {"phase": "Running", "replicas": [
                {"rank": 0, "pod": "t-0", "node": "a", "gpuUsage": [{"index": 0, "uuid": "fake-gpu-0", "utilizationPercent": 42,
                  "memoryUsedBytes": 1, "memoryTotalBytes": 2, "fake": true}]},
                {"rank": 1, "pod": "t-1", "node": "a", "gpuUsage": [{"index": 1, "uuid": "fake-gpu-1", "utilizationPercent": 79,
                  "memoryUsedBytes": 1, "memoryTotalBytes": 2, "fake": true}]}]}});
        assert_eq!(
            task_row(&running, "t".into(), "1m".into(), true)[7..],
            ["a", "60% (fake)", "<none>"]
        );
        let q = json!({"metadata": {"name": "research"}, "spec": {"gpuQuota": 8},
            "status": {"pending": 1, "running": 2, "gpusInUse": 6}});
        assert_eq!(
            queue_row(&q, "research".into(), "1h".into()),
            ["research", "8", "1", "2", "6", "1h"]
        );
    }
}
