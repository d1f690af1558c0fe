//! GPU use per replica: the agent samples the GPUs a replica holds, the task's status carries
//! the samples, and with `--fake-gpus` they say they are fake.

use super::*;
use crate::harness::*;
use kumo_api::mltask::MLTask;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpu_use_reaches_the_task_status_labelled_fake() {
    let c = Cluster::up(&["--fake-gpus", "2"]);
    let client = c.client();
    submit(&c, "watched", &["--gpus", "1"], "exec sleep 1000");
    let sampled = |t: &MLTask| {
        t.status
            .as_ref()
            .is_some_and(|s| s.replicas.iter().any(|r| !r.gpu_usage.is_empty()))
    };
    let task = wait_task(&client, "watched", T, sampled).await;
    let st = task.status.unwrap();
    let replica = &st.replicas[0];
    let usage = &replica.gpu_usage;
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert_eq!(replica.gpus, [usage[0].index.to_string()]);
    assert_eq!(usage[0].uuid, format!("fake-gpu-{}", usage[0].index));
    assert!(usage[0].fake, "{usage:?}");
    assert_eq!(usage[0].memory_total_bytes, 80 << 30);
    assert!(usage[0].utilization_percent <= 100, "{usage:?}");
    let described = text(&c.kumo(&["describe", "mltask", "watched"]));
    assert!(described.contains("GPU Use"), "{described}");
    assert!(described.contains("(fake)"), "{described}");
    let wide = text(&c.kumo(&["get", "mltasks", "-o", "wide"]));
    assert!(wide.contains("GPU USE"), "{wide}");
    assert!(wide.contains("% (fake)"), "{wide}");
}
