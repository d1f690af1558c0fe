//! `kumo describe mltask`: what the task runs, where it stands in its queue and why, each
//! replica (node, GPUs, phase, exit code, GPU use once sampled), and its conditions.

use super::describe_pod::conditions;
use super::detail::Detail;
use super::format::{age, timestamp, Table};
use chrono::{DateTime, Utc};
use kumo_api::mltask::{MLTask, TaskPhase};

pub fn mltask(d: &mut Detail, task: &MLTask, now: DateTime<Utc>) {
    let meta = &task.metadata;
    let spec = &task.spec;
    let st = task.status.clone().unwrap_or_default();
    d.field(0, "Name", &meta.name);
    d.field(0, "Namespace", meta.ns());
    d.map(0, "Labels", &meta.labels);
    d.field_opt(0, "Created", meta.creation_timestamp.map(timestamp));
    let what = match (&spec.image, &spec.runtime_class_name) {
        (Some(image), _) => image.clone(),
        (None, Some(rc)) => format!("<{rc} runtime>"),
        (None, None) => "<none>".into(),
    };
    d.field(0, "Image", what);
    let command: Vec<&str> = spec
        .command
        .iter()
        .chain(&spec.args)
        .map(String::as_str)
        .collect();
    d.field(0, "Command", command.join(" "));
    let mut per_replica = format!("{} GPU(s)", spec.resources.gpus);
    if let Some(cpu) = &spec.resources.cpu {
        per_replica.push_str(&format!(", cpu {}", cpu.as_str()));
    }
    if let Some(mem) = &spec.resources.memory {
        per_replica.push_str(&format!(", memory {}", mem.as_str()));
    }
    if let Some(model) = &spec.resources.gpu_model {
        per_replica.push_str(&format!(", GPU model {model}"));
    }
    d.field(
        0,
        "Replicas",
        format!("{} × ({per_replica})", spec.parallelism),
    );
    d.field(
        0,
        "Queue",
        format!("{} (priority {})", spec.queue, spec.priority),
    );
    let status = match (st.phase, meta.deletion_timestamp) {
        (_, Some(t)) => format!("Terminating (lasts {})", age(Some(t), now)),
        (TaskPhase::Queued, _) => match st.queue_position {
            Some(p) => format!("Queued, position {p}"),
            None => "Queued".into(),
        },
        (phase, _) if spec.cancel && phase != TaskPhase::Cancelled => "Cancelling".into(),
        (phase, _) => format!("{phase:?}"),
    };
    d.field(0, "Status", status);
    d.field_opt(0, "Reason", st.pending_reason.as_deref());
    d.field_opt(0, "Message", st.message.as_deref());
    d.field(
        0,
        "Attempts",
        format!("{} of {}", st.attempts, spec.max_retries + 1),
    );
    d.field_opt(0, "Retry At", st.retry_at.map(timestamp));
    d.field_opt(0, "Start Time", st.start_time.map(timestamp));
    d.field_opt(0, "Completion Time", st.completion_time.map(timestamp));
    d.field_opt(
        0,
        "Master",
        st.master_addr.as_ref().map(|a| {
            format!(
                "{a}:{}",
                spec.master_port
                    .unwrap_or(kumo_api::mltask::DEFAULT_MASTER_PORT)
            )
        }),
    );
    if st.replicas.is_empty() {
        d.field(0, "Replica Pods", "<none>");
    } else {
        d.section(0, "Replica Pods");
        // The GPU use column appears once an agent has sampled a replica's GPUs.
        let sampled = st.replicas.iter().any(|r| !r.gpu_usage.is_empty());
        let mut headers = vec!["Rank", "Pod", "Node", "GPUs", "Phase", "Exit Code"];
        if sampled {
            headers.push("GPU Use");
        }
        let mut t = Table::new(&headers);
        t.rows
            .push(t.headers.iter().map(|h| "-".repeat(h.len())).collect());
        for r in &st.replicas {
            let mut row = vec![
                r.rank.to_string(),
                r.pod.clone(),
                r.node.clone().unwrap_or_else(|| "<none>".into()),
                if r.gpus.is_empty() {
                    "<none>".into()
                } else {
                    r.gpus.join(",")
                },
                r.phase.map_or("<not created>".into(), |p| format!("{p:?}")),
                r.exit_code.map_or(String::new(), |c| c.to_string()),
            ];
            if sampled {
                row.push(kumo_api::gpu_usage::summary(&r.gpu_usage));
            }
            t.rows.push(row);
        }
        d.table(1, &t);
    }
    conditions(d, &st.conditions);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn a_restarted_gang() {
        let task: MLTask = serde_json::from_value(json!({
            "metadata": {"name": "resnet", "creationTimestamp": "2024-05-01T12:00:00Z"},
            "spec": {"runtimeClassName": "process", "command": ["python3", "train.py"], "parallelism": 2,
                     "resources": {"gpus": 2, "cpu": "4"}, "queue": "research", "priority": 10},
            "status": {"phase": "Running", "attempts": 2, "masterAddr": "10.0.0.1",
                       "startTime": "2024-05-01T12:01:00Z",
                       "replicas": [{"rank": 0, "pod": "resnet-0", "node": "a", "gpus": ["0", "1"], "phase": "Running"},
                                    {"rank": 1, "pod": "resnet-1", "node": "b", "gpus": ["2", "3"], "phase": "Running"}],
                       "conditions": [{"type": "Running", "status": "True", "reason": "AllReplicasRunning", "message": "all 2 replica(s) started"}]}
        }))
        .unwrap();
        let mut d = Detail::default();
        mltask(&mut d, &task, Utc.timestamp_opt(1_714_564_920, 0).unwrap());
        let expected = "\
Name:        resnet
Namespace:   default
Labels:      <none>
Created:     Wed, 01 May 2024 12:00:00 +0000
Image:       <process runtime>
Command:     python3 train.py
Replicas:    2 × (2 GPU(s), cpu 4)
Queue:       research (priority 10)
Status:      Running
Attempts:    2 of 4
Start Time:  Wed, 01 May 2024 12:01:00 +0000
Master:      10.0.0.1:29500
Replica Pods:
  Rank   Pod        Node   GPUs   Phase     Exit Code
  ----   ---        ----   ----   -----     ---------
  0      resnet-0   a      0,1    Running
  1      resnet-1   b      2,3    Running
Conditions:
  Type      Status   Reason               Message
  ----      ------   ------               -------
  Running   True     AllReplicasRunning   all 2 replica(s) started
";
        assert_eq!(d.render(), expected);
    }

    #[test]
    fn sampled_gpu_use_says_when_fake() {
        let task: MLTask = serde_json::from_value(json!({
            "metadata": {"name": "t"},
            "spec": {"runtimeClassName": "process", "command": ["x"], "resources": {"gpus": 1}},
            "status": {"phase": "Running",
                       "replicas": [{"rank": 0, "pod": "t-0", "node": "a", "gpus": ["0"], "phase": "Running",
                                     "gpuUsage": [{"index": 0, "uuid": "fake-gpu-0", "utilizationPercent": 42,
                                                   "memoryUsedBytes": 36077725286u64, "memoryTotalBytes": 85899345920u64, "fake": true}]}]}
        }))
        .unwrap();
        let mut d = Detail::default();
        mltask(&mut d, &task, Utc.timestamp_opt(1_714_564_920, 0).unwrap());
        let out = d.render();
        assert!(
            out.contains(
                "  0      t-0   a      0      Running               0: 42%, 33.6/80.0 GiB (fake)\n"
            ),
            "{out}"
        );
    }
}
