//! Running gangs: the injected environment, real rendezvous over TCP (processes and
//! containers), gang restarts, cancel and delete, GPUs across an agent restart, logs.

use super::*;
use crate::harness::*;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_api::Pod;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    // In runc containers CUDA_VISIBLE_DEVICES names the devices by UUID (fake ones here).
    let gpus: Vec<String> = st
        .replicas
        .iter()
        .map(|r| {
            let uuids: Vec<String> = r.gpus.iter().map(|i| format!("fake-gpu-{i}")).collect();
            uuids.join(",")
        })
        .collect();
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
