//! MLTasks end to end with fake GPUs and process replicas: queueing with positions and reasons,
//! gangs across nodes, the injected environment, gang restarts, quotas, backfill, cancel, a real
//! TCP rendezvous, and bad input.

use crate::harness::*;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_api::{Event, Pod};
use kumo_client::{Client, ListParams, Watched};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(40);

/// Waits until `pred` holds for the task, following a watch; panics after `timeout`.
async fn wait_task(
    client: &Client,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&MLTask) -> bool,
) -> MLTask {
    let params = ListParams::fields(&format!("metadata.name={name}"));
    let mut last: Option<MLTask> = None;
    let result = tokio::time::timeout(timeout, async {
        loop {
            let Ok(mut w) = client.watch::<MLTask>(Some("default"), &params, "").await else {
                continue;
            };
            while let Some(Ok(ev)) = w.next().await {
                if let Watched::Added(t) | Watched::Modified(t) = ev {
                    if pred(&t) {
                        return t;
                    }
                    last = Some(t);
                }
            }
        }
    })
    .await;
    match result {
        Ok(t) => t,
        Err(_) => panic!("mltask {name} did not reach the expected state within {timeout:?}; last seen: {last:#?}"),
    }
}

fn phase(t: &MLTask) -> TaskPhase {
    t.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn is(p: TaskPhase) -> impl Fn(&MLTask) -> bool {
    move |t| phase(t) == p
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kumo submit NAME --runtime process -d FLAGS -- sh -c SCRIPT`, which must succeed.
fn submit(c: &Cluster, name: &str, flags: &[&str], script: &str) {
    let mut args = vec!["submit", name, "--runtime", "process", "-d"];
    args.extend_from_slice(flags);
    args.extend(["--", "/bin/sh", "-c", script]);
    let out = c.kumo(&args);
    assert!(out.status.success(), "submit {name}: {}", text(&out));
}

/// A shell loop that waits for `file` (the test's go signal) before exiting 0.
fn wait_for_file(file: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.1; done", file.display())
}

async fn task_pods(client: &Client, name: &str) -> Vec<Pod> {
    client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("kumo.dev/mltask={name}")),
        )
        .await
        .unwrap()
        .items
}

async fn event_reasons(client: &Client, name: &str) -> Vec<String> {
    client
        .list::<Event>(Some("default"), &ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.kind == "MLTask" && e.involved_object.name == name)
        .map(|e| format!("{}: {}", e.reason, e.message))
        .collect()
}

/// Waits until an event about the task starts with `prefix` (`Reason: message`); panics after `T`.
async fn wait_event(client: &Client, name: &str, prefix: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let events = event_reasons(client, name).await;
        if events.iter().any(|e| e.starts_with(prefix)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event {prefix:?} about {name}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

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
    let waiting = wait_task(&client, "c", T, |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.pending_reason.is_some())
    })
    .await;
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
async fn every_replica_sees_its_environment() {
    let c = Cluster::up(&["--fake-gpus", "4"]);
    let client = c.client();
    // The replicas run side by side (each waits for all three): their devices cannot be reused.
    let barrier = c.dir.path().join("barrier");
    std::fs::create_dir(&barrier).unwrap();
    submit(
        &c,
        "env",
        &["--gpus", "1", "--parallelism", "3", "--master-port", "29999"],
        &format!(
            "echo RANK=$RANK WORLD_SIZE=$WORLD_SIZE LOCAL_RANK=$LOCAL_RANK MASTER=$MASTER_ADDR:$MASTER_PORT PET=$PET_NNODES/$PET_NODE_RANK/$PET_MASTER_ADDR:$PET_MASTER_PORT TASK=$KUMO_TASK GPUS=$CUDA_VISIBLE_DEVICES/$NVIDIA_VISIBLE_DEVICES; \
             touch {d}/$RANK; while [ $(ls {d} | wc -l) -lt 3 ]; do sleep 0.1; done",
            d = barrier.display()
        ),
    );
    let done = wait_task(&client, "env", T, is(TaskPhase::Succeeded)).await;
    let st = done.status.unwrap();
    assert_eq!(st.master_addr.as_deref(), Some("127.0.0.1"));
    // One device each, none shared.
    let mut devices: Vec<String> = st.replicas.iter().map(|r| r.gpus.join(",")).collect();
    let mut distinct = devices.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{devices:?}");
    assert!(
        distinct
            .iter()
            .all(|d| ["0", "1", "2", "3"].contains(&d.as_str())),
        "{devices:?}"
    );
    let logs = text(&c.kumo(&["logs", "mltask/env"]));
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        devices
            .drain(..)
            .enumerate()
            .map(|(r, d)| format!("[rank {r}] RANK={r} WORLD_SIZE=3 LOCAL_RANK=0 MASTER=127.0.0.1:29999 PET=3/{r}/127.0.0.1:29999 TASK=env GPUS={d}/{d}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_replica_restarts_the_gang_and_counts_the_attempt() {
    let c = Cluster::up(&["--fake-gpus", "2", "--task-backoff", "200ms"]);
    let client = c.client();
    let marker = c.dir.path().join("failed-once");
    // Rank 1 fails on the first attempt only; rank 0 would run forever unless the gang stops it.
    let script = format!(
        "if [ $RANK = 1 ]; then if [ ! -e {m} ]; then touch {m}; exit 3; fi; exit 0; fi; \
         if [ -e {m}.seen ]; then exit 0; fi; touch {m}.seen; exec sleep 1000",
        m = marker.display()
    );
    submit(
        &c,
        "flaky",
        &["--gpus", "1", "--parallelism", "2", "--max-retries", "2"],
        &script,
    );
    let restarted = wait_task(&client, "flaky", T, |t| {
        t.status.as_ref().is_some_and(|s| s.attempts == 2)
    })
    .await;
    let reason = restarted.status.unwrap().pending_reason.unwrap_or_default();
    assert!(
        reason.starts_with(
            "replica 1 failed (exit code 3): restarting the whole gang as attempt 2 of 3"
        ),
        "{reason}"
    );
    let done = wait_task(&client, "flaky", T, is(TaskPhase::Succeeded)).await;
    assert_eq!(done.status.unwrap().attempts, 2);
    wait_event(
        &client,
        "flaky",
        "Restarting: replica 1 failed (exit code 3)",
    )
    .await;
    wait_event(&client, "flaky", "Completed: all 2 replica(s) exited 0").await;
    let described = text(&c.kumo(&["describe", "mltask", "flaky"]));
    for expected in [
        "Status:           Succeeded",
        "Attempts:         2 of 3",
        "Replica Pods:",
        "Restarting  ",
    ] {
        assert!(
            described.contains(expected),
            "{expected:?} not in {described}"
        );
    }

    // Without retries left, the task fails and stops every replica.
    submit(
        &c,
        "doomed",
        &["--parallelism", "2", "--max-retries", "0"],
        "if [ $RANK = 1 ]; then exit 7; fi; exec sleep 1000",
    );
    let failed = wait_task(&client, "doomed", T, is(TaskPhase::Failed)).await;
    assert_eq!(
        failed.status.unwrap().message.as_deref(),
        Some("replica 1 failed (exit code 7) on attempt 1 of 1; no retries left")
    );
    // No half-running job is left: replica 0 is stopped.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let pods = task_pods(&client, "doomed").await;
        if pods
            .iter()
            .all(|p| p.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pods:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = c.kumo(&[
        "submit",
        "again",
        "--runtime",
        "process",
        "--follow",
        "--max-retries",
        "0",
        "--",
        "false",
    ]);
    assert!(
        !out.status.success(),
        "a failed task fails submit --follow: {}",
        text(&out)
    );
    assert!(text(&out).contains("again: Failed"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_replica() {
    let c = Cluster::up(&["--fake-gpus", "1"]);
    let client = c.client();
    submit(&c, "long", &["--parallelism", "2"], "exec sleep 1000");
    wait_task(&client, "long", T, is(TaskPhase::Running)).await;
    let out = c.kumo(&["cancel", "long"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).trim(), "mltask.kumo.dev/long cancelled");
    wait_task(&client, "long", T, is(TaskPhase::Cancelled)).await;
    let deadline = tokio::time::Instant::now() + T;
    while !task_pods(&client, "long").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleting a task deletes its replicas.
    submit(&c, "doomed", &["--parallelism", "2"], "exec sleep 1000");
    wait_task(&client, "doomed", T, is(TaskPhase::Running)).await;
    let out = c.kumo(&["delete", "mltask", "doomed"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = tokio::time::Instant::now() + T;
    while !task_pods(&client, "doomed").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas outlived their task"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The GPU model the nodes carry selects them.
    submit(&c, "fake", &["--gpu-model", "FakeGPU"], "true");
    wait_task(&client, "fake", T, is(TaskPhase::Succeeded)).await;
    let out = c.kumo(&["cancel", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not found"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_or_explained() {
    let c = Cluster::up(&["--fake-gpus", "2"]);
    let client = c.client();
    for (flags, expected) in [
        (vec!["--parallelism", "0"], "spec.parallelism: Invalid value: 0: must be at least 1"),
        (vec!["--gpus", "-1"], "spec.resources.gpus: Invalid value: -1: must be 0 or more"),
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
    submit(&c, "ds", &["--data", "imagenet-mini"], "true");
    submit(&c, "h100", &["--gpus", "1", "--gpu-model", "H100"], "true");
    for (name, reason) in [
        ("h100", "needs 1×1 GPUs; free: node-1 2 (gang of 1: no replica fits: 0/1 nodes are available: 1 node(s) didn't match node selector); waiting behind huge (priority 0)"),
        ("ds", "spec.data.dataset: dataset \"imagenet-mini\" does not exist (this kumo does not serve datasets yet; use data.hostPath)"),
        ("lost", "queue \"nope\" does not exist: create it or submit to another queue"),
        ("huge", "needs 1×3 GPUs, but no node has 3 GPUs (the largest has 2): it cannot start until such a node joins"),
    ] {
        let t = wait_task(&client, name, T, |t| {
            t.status.as_ref().is_some_and(|s| s.pending_reason.is_some())
        })
        .await;
        assert_eq!(phase(&t), TaskPhase::Queued);
        assert_eq!(t.status.unwrap().pending_reason.as_deref(), Some(reason));
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
    // batch has no quota: it borrows the idle GPUs...
    submit(
        &c,
        "borrower",
        &["--gpus", "4", "--queue", "batch"],
        "exec sleep 1000",
    );
    wait_task(&client, "borrower", T, is(TaskPhase::Running)).await;
    // ...until research needs its own back.
    submit(
        &c,
        "owner",
        &["--gpus", "2", "--queue", "research"],
        "exec sleep 1000",
    );
    let owner = wait_task(&client, "owner", T, is(TaskPhase::Running)).await;
    assert_eq!(owner.status.unwrap().attempts, 1);
    let borrower = wait_task(&client, "borrower", T, is(TaskPhase::Queued)).await;
    let st = borrower.status.unwrap();
    assert_eq!(st.attempts, 1, "a preempted task keeps its attempts");
    wait_event(
        &client,
        "borrower",
        "Preempted: preempted: queue \"research\" needs its quota back for owner",
    )
    .await;
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
        t.status
            .as_ref()
            .is_some_and(|s| s.pending_reason.is_some())
    })
    .await;
    let reason = forever.status.unwrap().pending_reason.unwrap();
    assert!(reason.contains("would delay head"), "{reason}");
    // One that surely ends before the head's reserved start backfills.
    submit(&c, "quick", &["--gpus", "2", "--deadline", "60"], "true");
    wait_task(&client, "quick", T, is(TaskPhase::Succeeded)).await;
    let head: MLTask = client.get("default", "head").await.unwrap();
    assert_eq!(head.status.unwrap().queue_position, Some(1));
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_rendezvous_over_tcp_from_the_environment_alone() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let script = c.write(
        "rendezvous.py",
        r#"import os, socket, time
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
if rank == 0:
    srv = socket.create_server((addr, port))
    conn, _ = srv.accept()
    got = conn.recv(1024).decode()
    conn.sendall(("ack from 0 of %d to %s" % (world, got)).encode())
    print("rank 0 received:", got, flush=True)
else:
    for _ in range(300):
        try:
            s = socket.create_connection((addr, port))
            break
        except OSError:
            time.sleep(0.1)
    s.sendall(b"hello from rank 1")
    print("rank 1 received:", s.recv(1024).decode(), flush=True)
"#,
    );
    let port = free_port().to_string();
    let out = c.kumo(&[
        "submit",
        "ddp",
        "--runtime",
        "process",
        "--parallelism",
        "2",
        "--master-port",
        &port,
        "--follow",
        "--",
        "python3",
        script.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("ddp: Succeeded"), "{}", text(&out));
    let logs = text(&c.kumo(&["logs", "mltask/ddp"]));
    assert!(
        logs.contains("[rank 0] rank 0 received: hello from rank 1"),
        "{logs}"
    );
    assert!(
        logs.contains("[rank 1] rank 1 received: ack from 0 of 2 to hello from rank 1"),
        "{logs}"
    );
    let done: MLTask = client.get("default", "ddp").await.unwrap();
    assert_eq!(phase(&done), TaskPhase::Succeeded);
}

/// `kumo agent` joining `cp` as `node` with `gpus` fake GPUs.
fn start_agent(cp: &Cluster, node: &str, gpus: &str) -> Child {
    let dir = cp.dir.path().join(node);
    Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &cp.url,
            "--token",
            &cp.token,
            "--node-name",
            node,
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "500ms",
            "--fake-gpus",
            gpus,
        ])
        .args(["--no-pod-network", "--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gangs_span_nodes_or_start_no_replica() {
    let cp = Cluster::start_with(vec!["server".into()]);
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
    let big = wait_task(&client, "big", T, |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.pending_reason.is_some())
    })
    .await;
    assert_eq!(
        big.status.unwrap().pending_reason.as_deref(),
        Some("needs 2×4 GPUs, but no node has 4 GPUs (the largest has 3): it cannot start until such a node joins")
    );
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
async fn gpus_stay_exclusive_across_a_restart() {
    let mut c = Cluster::up(&["--fake-gpus", "4"]);
    let client = c.client();
    submit(&c, "first", &["--gpus", "2"], "exec sleep 1000");
    let first = wait_task(&client, "first", T, is(TaskPhase::Running)).await;
    let held = first.status.unwrap().replicas[0].gpus.clone();
    assert_eq!(held.len(), 2);
    // The agent forgets everything in memory; the record on the pod remains.
    c.restart();
    let client = c.client();
    submit(&c, "second", &["--gpus", "2"], "exec sleep 1000");
    let second = wait_task(&client, "second", T, is(TaskPhase::Running)).await;
    let got = second.status.unwrap().replicas[0].gpus.clone();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|g| !held.contains(g)), "{held:?} vs {got:?}");
    let first: MLTask = client.get("default", "first").await.unwrap();
    let st = first.status.unwrap();
    assert_eq!(st.phase, TaskPhase::Running);
    assert_eq!(st.replicas[0].gpus, held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_replicas_rendezvous_at_replica_0s_pod_ip() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("train:1").expect("push busybox");
    // Training data from a node directory, read-only at /data.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("shard"), "shard-contents\n").unwrap();
    let data_dir = data.path().to_str().unwrap();
    let c = Cluster::up(&["--fake-gpus", "2", "--allow-host-path", data_dir]);
    let client = c.client();
    // Replica 0 answers one connection with a handler that logs the line it reads and acks it
    // (a handler keeps nc from closing its side before the client has sent anything).
    let script = "echo RANK=$RANK MASTER=$MASTER_ADDR:$MASTER_PORT GPUS=$CUDA_VISIBLE_DEVICES; \
        if [ $RANK = 0 ]; then mkdir -p /tmp; \
          printf '#!/bin/busybox sh\\nread l\\necho \"$l\" >&2\\necho ack-from-0\\n' > /tmp/rd; \
          chmod +x /tmp/rd; nc -l -p $MASTER_PORT -e /tmp/rd; \
        else until echo hello-from-$RANK | nc $MASTER_ADDR $MASTER_PORT 2>/dev/null; do sleep 0.2; done; \
        cat $DATA_DIR/shard; touch /data/x 2>/dev/null && echo writable || echo read-only; fi";
    let out = c.kumo(&[
        "submit",
        "boxes",
        "--image",
        &image,
        "--gpus",
        "1",
        "--parallelism",
        "2",
        "--data",
        data_dir,
        "--follow",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let task: MLTask = client.get("default", "boxes").await.unwrap();
    let st = task.status.unwrap();
    let rank0: Pod = client.get("default", "boxes-0").await.unwrap();
    let ip = rank0
        .status
        .unwrap()
        .pod_ip
        .expect("replica 0 has a pod IP");
    assert_eq!(st.master_addr.as_deref(), Some(ip.as_str()));
    let logs = text(&c.kumo(&["logs", "mltask/boxes"]));
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort();
    let gpus: Vec<String> = st.replicas.iter().map(|r| r.gpus.join(",")).collect();
    assert_eq!(
        lines,
        [
            format!("[rank 0] RANK=0 MASTER=127.0.0.1:29500 GPUS={}", gpus[0]),
            "[rank 0] hello-from-1".to_string(),
            format!("[rank 1] RANK=1 MASTER={ip}:29500 GPUS={}", gpus[1]),
            "[rank 1] ack-from-0".to_string(),
            "[rank 1] read-only".to_string(),
            "[rank 1] shard-contents".to_string(),
        ],
        "replica 0 alone: {:?}",
        text(&c.kumo(&["logs", "boxes-0"]))
    );
    assert_ne!(gpus[0], gpus[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs() {
    let c = Cluster::up(&["--fake-gpus", "2"]);
    let client = c.client();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mltask.yaml");
    let out = c.kumo(&["apply", "-f", example]);
    assert!(out.status.success(), "{}", text(&out));
    let done = wait_task(&client, "train", T, is(TaskPhase::Succeeded)).await;
    let st = done.status.unwrap();
    let logs = text(&c.kumo(&["logs", "mltask/train"]));
    for r in &st.replicas {
        let line = format!(
            "[rank {}] rank {} of 2 on GPU {}, master 127.0.0.1:29500",
            r.rank,
            r.rank,
            r.gpus.join(",")
        );
        assert!(logs.contains(&line), "{line:?} not in {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_every_replica_through_a_gang_restart() {
    use std::io::BufRead;
    let c = Cluster::up(&["--task-backoff", "200ms"]);
    let client = c.client();
    let (marker, go) = (c.dir.path().join("failed"), c.dir.path().join("go"));
    // Attempt 1: rank 1 fails once told to go, rank 0 waits to be stopped. Attempt 2: both end.
    let script = format!(
        "echo started $RANK; \
         if [ ! -e {m} ]; then if [ $RANK = 1 ]; then while [ ! -e {g} ]; do sleep 0.1; done; \
         touch {m}; echo failing; exit 3; fi; exec sleep 1000; fi; echo done $RANK",
        m = marker.display(),
        g = go.display()
    );
    submit(
        &c,
        "chatty",
        &["--parallelism", "2", "--max-retries", "1"],
        &script,
    );
    wait_task(&client, "chatty", T, is(TaskPhase::Running)).await;
    let mut child = Command::new(kumo_exe())
        .args(["logs", "mltask/chatty", "-f"])
        .env("KUMO_CONFIG", c.config_path())
        .env("HOME", c.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + T;
    let mut told = false;
    // Until the command ends by itself (the task finished and every log ended).
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kumo logs -f did not end with the task: {lines:?}");
            }
        }
        let seen = |l: &str| lines.iter().any(|x| x == l);
        if !told && seen("[rank 0] started 0") && seen("[rank 1] started 1") {
            std::fs::write(&go, "").unwrap();
            told = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{lines:?}");
    let count = |l: &str| lines.iter().filter(|x| *x == l).count();
    assert_eq!(count("[rank 0] started 0"), 2, "{lines:?}");
    assert_eq!(count("[rank 1] started 1"), 2, "{lines:?}");
    assert_eq!(count("[rank 1] failing"), 1, "{lines:?}");
    assert_eq!(count("[rank 0] done 0"), 1, "{lines:?}");
    assert_eq!(count("[rank 1] done 1"), 1, "{lines:?}");
    let task: MLTask = client.get("default", "chatty").await.unwrap();
    assert_eq!(phase(&task), TaskPhase::Succeeded);
}
