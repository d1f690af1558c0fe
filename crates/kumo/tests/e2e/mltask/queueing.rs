//! Waiting and admission: positions and reasons, gangs across nodes, quotas with borrowing
//! and reclaim, backfill, and bad input.

use super::*;
use crate::harness::*;
use kumo_api::mltask::{MLTask, TaskPhase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_task_waits_first_in_line_then_runs_when_gpus_free() {
    let c = Cluster::up(&["--fake-gpus", "4"]);
    let client = c.client();
    let go = c.dir.path().join("go");
    for name in ["a", "b"] {
        submit(&c, name, &["--gpus", "2"], &wait_for_file(&go));
    }
    for name in ["a", "b"] {
        wait_task(&client, name, T, is(TaskPhase::Running)).await;
    }
    submit(
        &c,
        "c",
        &["--gpus", "2"],
        "echo c ran on $CUDA_VISIBLE_DEVICES",
    );
    let waiting = wait_reason(&client, "c", "needs 1×2 GPUs; free: node-1 0").await;
    let st = waiting.status.unwrap();
    assert_eq!(st.phase, TaskPhase::Queued);
    assert_eq!(st.queue_position, Some(1));
    assert_eq!(
        st.pending_reason.as_deref(),
        Some("needs 1×2 GPUs; free: node-1 0")
    );
    assert!(
        task_pods(&client, "c").await.is_empty(),
        "a queued task has no pods"
    );
    let queue = text(&c.kumo(&["queue"]));
    assert!(
        queue.contains("default   1          c      1×2    0")
            && queue.contains("needs 1×2 GPUs; free: node-1 0"),
        "{queue}"
    );
    let get = text(&c.kumo(&["get", "mltasks"]));
    assert!(get.contains("PHASE") && get.contains("ATTEMPTS"), "{get}");

    std::fs::write(&go, "").unwrap();
    let done = wait_task(&client, "c", T, is(TaskPhase::Succeeded)).await;
    let st = done.status.unwrap();
    assert_eq!(st.attempts, 1);
    assert_eq!(st.replicas[0].exit_code, Some(0));
    assert_eq!(st.replicas[0].node.as_deref(), Some("node-1"));
    for name in ["a", "b"] {
        wait_task(&client, name, T, is(TaskPhase::Succeeded)).await;
    }
    // c got the devices of whichever task ended first, and saw exactly them.
    let devices = st.replicas[0].gpus.join(",");
    assert!(devices == "0,1" || devices == "2,3", "{devices}");
    let logs = text(&c.kumo(&["logs", "mltask/c"]));
    assert_eq!(logs, format!("[rank 0] c ran on {devices}\n"));
    let pod = text(&c.kumo(&["describe", "pod", "c-0"]));
    assert!(
        pod.contains(&format!("kumo.dev/gpu-devices=main={devices}")),
        "{pod}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gangs_span_nodes_or_start_no_replica() {
    let cp = Cluster::start_with(vec!["server".into()]);
    // `kumo server` holds `default` to baseline: these pods run as host processes.
    cp.privileged_namespace("default");
    let client = cp.client();
    let mut agents = vec![
        start_agent(&cp, "gpu-a", "3"),
        start_agent(&cp, "gpu-b", "3"),
    ];
    let deadline = tokio::time::Instant::now() + T;
    while client
        .list::<kumo_api::Node>(None, &ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|n| kumo_scheduler::NodeView::new(n).ready)
                .count()
        })
        .unwrap_or(0)
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents did not join"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    submit(&cp, "big", &["--gpus", "4", "--parallelism", "2"], "true");
    let big = wait_reason(
        &client,
        "big",
        "needs 2×4 GPUs, but no node has 4 GPUs (the largest has 3): it cannot start until such a node joins",
    )
    .await;
    assert_eq!(phase(&big), TaskPhase::Queued);
    submit(
        &cp,
        "span",
        &["--gpus", "2", "--parallelism", "2"],
        "echo on $HOSTNAME",
    );
    let span = wait_task(&client, "span", T, is(TaskPhase::Succeeded)).await;
    let mut nodes: Vec<String> = span
        .status
        .unwrap()
        .replicas
        .iter()
        .filter_map(|r| r.node.clone())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["gpu-a", "gpu-b"]);
    assert!(
        task_pods(&client, "big").await.is_empty(),
        "the big gang started no replica"
    );
    for a in &mut agents {
        let _ = a.kill();
        let _ = a.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowed_gpus_are_reclaimed_by_preemption() {
    let c = Cluster::up(&["--fake-gpus", "4"]);
    let client = c.client();
    let queues = c.write(
        "queues.yaml",
        "apiVersion: kumo.dev/v1\nkind: Queue\nmetadata: {name: research}\nspec: {gpuQuota: 4}\n---\napiVersion: kumo.dev/v1\nkind: Queue\nmetadata: {name: batch}\nspec: {}\n",
    );
    let out = c.kumo(&["apply", "-f", queues.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let go = c.dir.path().join("go");
    let until_go = wait_for_file(&go);
    // batch has no quota: its tasks borrow the idle GPUs...
    for (name, priority) in [("cheap", "1"), ("dear", "9")] {
        submit(
            &c,
            name,
            &["--gpus", "2", "--queue", "batch", "--priority", priority],
            &until_go,
        );
        wait_task(&client, name, T, is(TaskPhase::Running)).await;
    }
    // ...until research needs its own back: the lowest priority borrower goes.
    submit(
        &c,
        "owner",
        &["--gpus", "2", "--queue", "research"],
        &until_go,
    );
    let owner = wait_task(&client, "owner", T, is(TaskPhase::Running)).await;
    assert_eq!(owner.status.unwrap().attempts, 1);
    let cheap = wait_task(&client, "cheap", T, is(TaskPhase::Queued)).await;
    let st = cheap.status.unwrap();
    assert_eq!(st.attempts, 1, "a preempted task keeps its attempts");
    wait_event(
        &client,
        "cheap",
        "Preempted: preempted: queue \"research\" needs its quota back for owner",
    )
    .await;
    let dear: MLTask = client.get("default", "dear").await.unwrap();
    assert_eq!(
        phase(&dear),
        TaskPhase::Running,
        "one preemption was enough"
    );
    // Once the GPUs are free again, the preempted task runs, still on its first attempt.
    std::fs::write(&go, "").unwrap();
    let cheap = wait_task(&client, "cheap", T, is(TaskPhase::Succeeded)).await;
    assert_eq!(cheap.status.unwrap().attempts, 1);
    let get = text(&c.kumo(&["get", "queues"]));
    assert!(get.contains("research   4"), "{get}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_never_delays_the_head_of_the_queue() {
    let c = Cluster::up(&["--fake-gpus", "4"]);
    let client = c.client();
    // Holds 2 GPUs for at most 600 s: the head (4 GPUs) is reserved the node from then on.
    submit(
        &c,
        "long",
        &["--gpus", "2", "--deadline", "600"],
        "exec sleep 1000",
    );
    wait_task(&client, "long", T, is(TaskPhase::Running)).await;
    submit(&c, "head", &["--gpus", "4"], "true");
    wait_task(&client, "head", T, |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.queue_position == Some(1))
    })
    .await;
    // Without a deadline a 2-GPU task could hold the GPUs past the head's start: it waits.
    submit(&c, "forever", &["--gpus", "2"], "exec sleep 1000");
    let forever = wait_task(&client, "forever", T, |t| {
        t.status.as_ref().is_some_and(|s| {
            s.pending_reason
                .as_deref()
                .is_some_and(|r| r.contains("would delay head"))
        })
    })
    .await;
    assert_eq!(phase(&forever), TaskPhase::Queued);
    // One that surely ends before the head's reserved start backfills.
    submit(&c, "quick", &["--gpus", "2", "--deadline", "60"], "true");
    wait_task(&client, "quick", T, is(TaskPhase::Succeeded)).await;
    let head: MLTask = client.get("default", "head").await.unwrap();
    assert_eq!(head.status.unwrap().queue_position, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_or_explained() {
    let c = Cluster::up(&["--fake-gpus", "2"]);
    let client = c.client();
    for (flags, expected) in [
        (vec!["--parallelism", "0"], "spec.parallelism: Invalid value: 0: must be between 1 and 1000, inclusive"),
        (vec!["--gpus", "-1"], "spec.resources.gpus: Invalid value: -1: must be between 0 and 64, inclusive"),
        (
            vec!["--output", "../../etc"],
            "spec.output.path: Invalid value: \"../../etc\": must be a relative path that stays inside the output root",
        ),
        (vec!["--queue", "nope"], "spec.queue: queue \"nope\" does not exist (see kumo get queues)"),
    ] {
        let mut args = vec!["submit", "bad", "--runtime", "process"];
        args.extend(flags.iter().copied());
        args.extend(["--", "true"]);
        let out = c.kumo(&args);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(text(&out).contains(expected), "{flags:?}: {}", text(&out));
    }
    // The API refuses the same with a 422 naming the field, and nothing is created.
    let f = c.write(
        "bad.yaml",
        "apiVersion: kumo.dev/v1\nkind: MLTask\nmetadata: {name: bad}\nspec: {runtimeClassName: process, command: [\"true\"], parallelism: 0}\n",
    );
    let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("spec.parallelism"), "{}", text(&out));
    assert!(client
        .get_opt::<MLTask>("default", "bad")
        .await
        .unwrap()
        .is_none());

    // Accepted, but waiting with a reason: an unknown queue (applied directly), too many GPUs.
    let f = c.write(
        "lost.yaml",
        "apiVersion: kumo.dev/v1\nkind: MLTask\nmetadata: {name: lost}\nspec: {runtimeClassName: process, command: [\"true\"], queue: nope}\n",
    );
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    submit(&c, "huge", &["--gpus", "3"], "true");
    // kumo submit refuses an unknown dataset (see `data`); applied directly, the task waits.
    assert!(c
        .kumo_stdin(
            &["apply", "-f", "-"],
            Some("apiVersion: kumo.dev/v1\nkind: MLTask\nmetadata: {name: ds}\nspec: {runtimeClassName: process, command: [\"true\"], data: {dataset: imagenet-mini}}\n"),
        )
        .status
        .success());
    submit(&c, "h100", &["--gpus", "1", "--gpu-model", "H100"], "true");
    for (name, reason) in [
        ("h100", "needs 1×1 GPUs; free: node-1 2 (gang of 1: no replica fits: 0/1 nodes are available: 1 node(s) didn't match node selector); waiting behind huge (priority 0)"),
        ("ds", "spec.data.dataset: dataset \"imagenet-mini\" does not exist (push it with `kumo dataset push DIR imagenet-mini`)"),
        ("lost", "queue \"nope\" does not exist: create it or submit to another queue"),
        ("huge", "needs 1×3 GPUs, but no node has 3 GPUs (the largest has 2): it cannot start until such a node joins"),
    ] {
        let t = wait_reason(&client, name, reason).await;
        assert_eq!(phase(&t), TaskPhase::Queued);
        assert!(task_pods(&client, name).await.is_empty());
    }
    // Only cancel and priority change after creation.
    let out = c.kumo_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: kumo.dev/v1\nkind: MLTask\nmetadata: {name: huge}\nspec: {runtimeClassName: process, command: [\"true\"], resources: {gpus: 1}}\n"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("only spec.cancel and spec.priority may change"),
        "{}",
        text(&out)
    );
}
