//! The controller's pass as data: tasks, nodes and pods in; statuses, pods and events out.

use super::pass::*;
use super::replicas::replica_pod;
use chrono::TimeZone;
use kumo_api::keys::{ANNOTATION_EVICTION_REQUESTED, LABEL_TASK};
use kumo_api::mltask::{MLTaskStatus, ReplicaStatus, TaskPhase};
use kumo_api::{MLTask, Node, Pod, Queue, Time};
use serde_json::json;
use std::time::Duration;

const BASE: Duration = Duration::from_secs(10);

fn t(secs: i64) -> Time {
    chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn node(name: &str, gpus: i64) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "addresses": [{"type": "InternalIP", "address": format!("192.0.2.{}", name.len())}],
                   "runtimeClasses": ["process"]}
    }))
    .unwrap()
}

fn task(name: &str, parallelism: i32, gpus: i64, created: i64) -> MLTask {
    serde_json::from_value(json!({
        "apiVersion": "kumo.dev/v1", "kind": "MLTask",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "creationTimestamp": t(created)},
        "spec": {"runtimeClassName": "process", "command": ["python3", "train.py"], "parallelism": parallelism,
                 "resources": {"gpus": gpus}, "maxRetries": 1}
    }))
    .unwrap()
}

/// A task admitted on `nodes` (one per replica), at `attempts`.
fn admitted(mut task: MLTask, nodes: &[&str], phase: TaskPhase, attempts: i32) -> MLTask {
    task.status = Some(MLTaskStatus {
        phase,
        attempts,
        start_time: Some(t(0)),
        replicas: nodes
            .iter()
            .enumerate()
            .map(|(rank, n)| ReplicaStatus {
                rank: rank as i32,
                pod: format!("{}-{rank}", task.metadata.name),
                node: Some(n.to_string()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    task
}

/// Replica `rank` of `task` on `node`, in `phase`, with an exit code when it ended.
fn pod(task: &MLTask, rank: usize, node: &str, phase: &str, exit: Option<i32>) -> Pod {
    let mut p = replica_pod(task, rank, Some(node), "192.0.2.1", 1);
    let state = match exit {
        Some(code) => json!({"terminated": {"exitCode": code}}),
        None => json!({"running": {}}),
    };
    p.status = Some(
        serde_json::from_value(json!({"phase": phase, "podIP": "10.1.1.1",
            "containerStatuses": [{"name": "main", "state": state}]}))
        .unwrap(),
    );
    p
}

fn run(tasks: &[MLTask], nodes: &[Node], pods: &[Pod]) -> Outcome {
    run_with(tasks, &[], nodes, pods)
}

fn run_with(tasks: &[MLTask], queues: &[Queue], nodes: &[Node], pods: &[Pod]) -> Outcome {
    let tasks: Vec<std::sync::Arc<MLTask>> = tasks.iter().cloned().map(Into::into).collect();
    pass(
        &Snapshot {
            tasks: &tasks,
            queues,
            nodes,
            pods,
            datasets: Some(&["mnist".to_string()].into_iter().collect()),
            standing_written: &Default::default(),
        },
        t(100),
        BASE,
    )
}

fn status_of(out: &Outcome, name: &str) -> MLTaskStatus {
    out.actions
        .iter()
        .find_map(|a| match a {
            Action::Status(t) if t.metadata.name == name => t.status.clone(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no status written for {name}: {:#?}", out.actions))
}

fn created(out: &Outcome) -> Vec<Pod> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::CreatePod(p) => Some(p.as_ref().clone()),
            _ => None,
        })
        .collect()
}

fn deleted(out: &Outcome) -> Vec<String> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn events(out: &Outcome) -> Vec<String> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event {
                reason, message, ..
            } => Some(format!("{reason}: {message}")),
            _ => None,
        })
        .collect()
}

fn env(pod: &Pod, name: &str) -> String {
    pod.spec.containers[0]
        .env
        .iter()
        .rev()
        .find(|e| e.name == name)
        .map(|e| e.value.clone())
        .unwrap_or_default()
}

#[test]
fn admission_places_the_whole_gang_at_once_for_process_replicas() {
    let out = run(&[task("a", 2, 2, 0)], &[node("n1", 3), node("n2", 3)], &[]);
    let st = status_of(&out, "a");
    assert_eq!(st.phase, TaskPhase::Admitted);
    assert_eq!(st.attempts, 1);
    let nodes: Vec<_> = st
        .replicas
        .iter()
        .map(|r| r.node.clone().unwrap())
        .collect();
    assert_eq!(nodes, ["n1", "n2"]);
    assert_eq!(st.master_addr.as_deref(), Some("192.0.2.2"));
    let pods = created(&out);
    let placed: Vec<_> = pods
        .iter()
        .map(|p| {
            (
                p.metadata.name.as_str(),
                p.spec.node_name.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(placed, [("a-0", "n1"), ("a-1", "n2")]);
    for p in &pods {
        assert_eq!(
            env(p, "MASTER_ADDR"),
            "192.0.2.2",
            "process replicas rendezvous on replica 0's node address"
        );
    }
    assert_eq!(
        events(&out),
        ["Admitted: admitted: 2×2 GPUs on n1, n2 (attempt 1)"]
    );
}

#[test]
fn container_replicas_follow_replica_0s_pod_ip() {
    let mut a = task("a", 3, 1, 0);
    a.spec.runtime_class_name = None;
    a.spec.image = Some("train:1".into());
    let nodes = [node("n1", 2), node("n2", 2)];
    let out = run(std::slice::from_ref(&a), &nodes, &[]);
    let pods = created(&out);
    assert_eq!(pods.len(), 1, "the others wait for replica 0's address");
    assert_eq!(env(&pods[0], "MASTER_ADDR"), "127.0.0.1");

    let a = admitted(a, &["n1", "n1", "n2"], TaskPhase::Admitted, 1);
    let out = run(
        std::slice::from_ref(&a),
        &nodes,
        &[pod(&a, 0, "n1", "Pending", None)],
    );
    let pods = created(&out);
    let names: Vec<_> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
    assert_eq!(names, ["a-1", "a-2"]);
    assert_eq!(pods[1].spec.node_name.as_deref(), Some("n2"));
    for (p, rank) in pods.iter().zip(["1", "2"]) {
        assert_eq!(env(p, "MASTER_ADDR"), "10.1.1.1");
        assert_eq!(env(p, "PET_MASTER_ADDR"), "10.1.1.1");
        assert_eq!(env(p, "RANK"), rank);
        assert_eq!(env(p, "WORLD_SIZE"), "3");
    }
    assert_eq!(
        status_of(&out, "a").master_addr.as_deref(),
        Some("10.1.1.1")
    );
}

#[test]
fn running_when_every_replica_runs_then_succeeded_when_all_exit_0() {
    let a = admitted(task("a", 2, 1, 0), &["n1", "n1"], TaskPhase::Admitted, 1);
    let nodes = [node("n1", 2)];
    let out = run(
        std::slice::from_ref(&a),
        &nodes,
        &[
            pod(&a, 0, "n1", "Running", None),
            pod(&a, 1, "n1", "Running", None),
        ],
    );
    assert_eq!(status_of(&out, "a").phase, TaskPhase::Running);
    let out = run(
        std::slice::from_ref(&a),
        &nodes,
        &[
            pod(&a, 0, "n1", "Succeeded", Some(0)),
            pod(&a, 1, "n1", "Succeeded", Some(0)),
        ],
    );
    let st = status_of(&out, "a");
    assert_eq!(st.phase, TaskPhase::Succeeded);
    assert_eq!(st.completion_time, Some(t(100)));
    assert_eq!(st.replicas[1].exit_code, Some(0));
    assert!(
        deleted(&out).is_empty(),
        "ended replicas stay for their logs"
    );
}

#[test]
fn one_failed_replica_restarts_the_whole_gang_then_fails_it() {
    let nodes = [node("n1", 2)];
    let a = admitted(task("a", 2, 1, 0), &["n1", "n1"], TaskPhase::Running, 1);
    let pods = [
        pod(&a, 0, "n1", "Running", None),
        pod(&a, 1, "n1", "Failed", Some(3)),
    ];
    let out = run(std::slice::from_ref(&a), &nodes, &pods);
    assert_eq!(deleted(&out), ["a-0", "a-1"]);
    let st = status_of(&out, "a");
    assert_eq!(st.phase, TaskPhase::Queued);
    assert_eq!(st.attempts, 2);
    assert_eq!(st.retry_at, Some(t(110)));
    assert_eq!(
        st.pending_reason.as_deref(),
        Some("replica 1 failed (exit code 3): restarting the whole gang as attempt 2 of 2 after a 10s back-off")
    );
    assert_eq!(out.next_at, Some(t(110)));

    // The last allowed attempt fails for good.
    let a = admitted(task("a", 2, 1, 0), &["n1", "n1"], TaskPhase::Running, 2);
    let out = run(std::slice::from_ref(&a), &nodes, &pods);
    let st = status_of(&out, "a");
    assert_eq!(st.phase, TaskPhase::Failed);
    assert_eq!(
        st.message.as_deref(),
        Some("replica 1 failed (exit code 3) on attempt 2 of 2; no retries left")
    );
    assert_eq!(deleted(&out), ["a-0"], "the running replica is stopped");
}

#[test]
fn a_requeued_task_waits_for_its_old_pods_and_its_back_off() {
    let nodes = [node("n1", 2)];
    let mut a = task("a", 1, 1, 0);
    a.status = Some(MLTaskStatus {
        attempts: 2,
        retry_at: Some(t(150)),
        ..Default::default()
    });
    let old = pod(&a, 0, "n1", "Failed", Some(1));
    let out = run(std::slice::from_ref(&a), &nodes, &[old]);
    assert_eq!(deleted(&out), ["a-0"]);
    assert!(created(&out).is_empty());
    let out = run(std::slice::from_ref(&a), &nodes, &[]);
    assert!(created(&out).is_empty());
    assert_eq!(out.next_at, Some(t(150)));
    a.status.as_mut().unwrap().retry_at = Some(t(50));
    let out = run(&[a], &nodes, &[]);
    let st = status_of(&out, "a");
    assert_eq!((st.phase, st.attempts), (TaskPhase::Admitted, 2));
}

#[test]
fn a_third_task_waits_first_in_line_with_a_reason() {
    let a = admitted(task("a", 1, 2, 0), &["n1"], TaskPhase::Running, 1);
    let b = admitted(task("b", 1, 2, 1), &["n1"], TaskPhase::Running, 1);
    let pods = [
        pod(&a, 0, "n1", "Running", None),
        pod(&b, 0, "n1", "Running", None),
    ];
    let out = run(&[a, b, task("c", 1, 2, 2)], &[node("n1", 4)], &pods);
    let st = status_of(&out, "c");
    assert_eq!(st.phase, TaskPhase::Queued);
    assert_eq!(st.queue_position, Some(1));
    assert_eq!(
        st.pending_reason.as_deref(),
        Some("needs 1×2 GPUs; free: n1 0")
    );
}

#[test]
fn unknown_queues_and_too_big_replicas_say_why() {
    let mut lost = task("lost", 1, 1, 0);
    lost.spec.queue = "nope".into();
    let out = run(
        &[lost, task("big", 2, 4, 1)],
        &[node("n1", 3), node("n2", 3)],
        &[],
    );
    assert_eq!(
        status_of(&out, "lost").pending_reason.as_deref(),
        Some("queue \"nope\" does not exist: create it or submit to another queue")
    );
    assert_eq!(
        status_of(&out, "big").pending_reason.as_deref(),
        Some("needs 2×4 GPUs, but no node has 4 GPUs (the largest has 3): it cannot start until such a node joins")
    );
    assert!(created(&out).is_empty());
}

#[test]
fn cancel_stops_every_replica() {
    let mut a = admitted(task("a", 2, 1, 0), &["n1", "n1"], TaskPhase::Running, 1);
    a.spec.cancel = true;
    let pods = [
        pod(&a, 0, "n1", "Running", None),
        pod(&a, 1, "n1", "Running", None),
    ];
    let out = run(&[a], &[node("n1", 2)], &pods);
    assert_eq!(status_of(&out, "a").phase, TaskPhase::Cancelled);
    assert_eq!(deleted(&out), ["a-0", "a-1"]);
    assert_eq!(
        events(&out),
        ["Cancelled: cancelled: stopping 2 replica(s)"]
    );
}

#[test]
fn borrowers_are_preempted_with_attempts_unchanged() {
    let queues: Vec<Queue> = serde_json::from_value(json!([
        {"metadata": {"name": "research"}, "spec": {"gpuQuota": 2}},
        {"metadata": {"name": "batch"}, "spec": {}}
    ]))
    .unwrap();
    let mut borrower = admitted(task("borrower", 1, 2, 0), &["n1"], TaskPhase::Running, 3);
    borrower.spec.queue = "batch".into();
    let mut owner = task("owner", 1, 2, 5);
    owner.spec.queue = "research".into();
    let pods = [pod(&borrower, 0, "n1", "Running", None)];
    let out = run_with(&[borrower, owner], &queues, &[node("n1", 2)], &pods);
    let st = status_of(&out, "borrower");
    assert_eq!((st.phase, st.attempts), (TaskPhase::Queued, 3));
    assert_eq!(deleted(&out), ["borrower-0"]);
    assert_eq!(
        events(&out),
        ["Preempted: preempted: queue \"research\" needs its quota back for owner"]
    );
    let queue_status = out.actions.iter().find_map(|a| match a {
        Action::QueueStatus(q) if q.metadata.name == "batch" => q.status.clone(),
        _ => None,
    });
    assert_eq!(queue_status.map(|s| s.gpus_in_use), Some(2));
}

#[test]
fn an_evicted_replica_requeues_the_task_with_attempts_unchanged() {
    let running = admitted(task("train", 2, 1, 0), &["n1", "n2"], TaskPhase::Running, 2);
    let mut evicted = pod(&running, 1, "n2", "Running", None);
    evicted
        .metadata
        .annotations
        .insert(ANNOTATION_EVICTION_REQUESTED.into(), t(90).to_rfc3339());
    let pods = [pod(&running, 0, "n1", "Running", None), evicted];
    let nodes = [node("n1", 1), node("n2", 1)];
    let out = run(std::slice::from_ref(&running), &nodes, &pods);
    let st = status_of(&out, "train");
    assert_eq!((st.phase, st.attempts), (TaskPhase::Queued, 2));
    assert!(st.replicas.is_empty() && st.master_addr.is_none());
    let mut gone = deleted(&out);
    gone.sort();
    assert_eq!(
        gone,
        ["train-0", "train-1"],
        "the whole gang stops gracefully"
    );
    assert!(out.actions.iter().all(|a| !matches!(
        a,
        Action::DeletePod {
            grace_seconds: 0,
            ..
        }
    )));
    assert_eq!(
        events(&out),
        ["Evicted: evicted: replica pod train-1 on node n2 was evicted (the node is drained); back to the queue, attempt 2 not counted"]
    );
    // A gang that already ended is not requeued by a late eviction.
    let mut done = pod(&running, 1, "n2", "Succeeded", Some(0));
    done.metadata
        .annotations
        .insert(ANNOTATION_EVICTION_REQUESTED.into(), t(90).to_rfc3339());
    let pods = [pod(&running, 0, "n1", "Succeeded", Some(0)), done];
    let out = run(&[running], &nodes, &pods);
    assert_eq!(status_of(&out, "train").phase, TaskPhase::Succeeded);
}

#[test]
fn pods_of_deleted_tasks_are_deleted() {
    let gone = task("gone", 1, 0, 0);
    let mut orphan = pod(&gone, 0, "n1", "Running", None);
    orphan
        .metadata
        .labels
        .insert(LABEL_TASK.into(), "gone".into());
    let out = run(&[], &[node("n1", 0)], &[orphan]);
    assert_eq!(deleted(&out), ["gone-0"]);
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(backoff(BASE, 1), Duration::from_secs(10));
    assert_eq!(backoff(BASE, 3), Duration::from_secs(40));
    assert_eq!(backoff(BASE, 30), MAX_BACKOFF);
}

#[test]
fn backfill_leaves_the_heads_reservation_alone() {
    let mut long = admitted(task("long", 1, 2, 0), &["n1"], TaskPhase::Running, 1);
    long.spec.active_deadline_seconds = Some(600);
    let pods = [pod(&long, 0, "n1", "Running", None)];
    let head = task("head", 1, 4, 1);
    let forever = task("forever", 1, 2, 2);
    let mut quick = task("quick", 1, 2, 3);
    quick.spec.active_deadline_seconds = Some(60);
    let out = run(&[long, head, forever, quick], &[node("n1", 4)], &pods);
    assert_eq!(status_of(&out, "head").queue_position, Some(1));
    let reason = status_of(&out, "forever").pending_reason.unwrap();
    assert!(reason.contains("would delay head"), "{reason}");
    assert_eq!(status_of(&out, "quick").phase, TaskPhase::Admitted);
}

#[test]
fn within_one_second_the_earlier_submission_goes_first() {
    let mut zeta = task("zeta", 1, 2, 0);
    zeta.metadata.resource_version = Some("7".into());
    let mut alpha = task("alpha", 1, 2, 0);
    alpha.metadata.resource_version = Some("9".into());
    let out = run(&[alpha, zeta], &[node("n1", 2)], &[]);
    assert_eq!(status_of(&out, "zeta").phase, TaskPhase::Admitted);
    assert_eq!(status_of(&out, "alpha").queue_position, Some(1));
    assert_eq!(status_of(&out, "alpha").submit_revision, Some(9));
}

#[test]
fn a_replica_deleted_under_the_task_fails_the_gang() {
    let mut a = admitted(task("a", 2, 1, 0), &["n1", "n1"], TaskPhase::Running, 1);
    for r in &mut a.status.as_mut().unwrap().replicas {
        r.phase = Some(kumo_api::PodPhase::Running);
    }
    let out = run(
        std::slice::from_ref(&a),
        &[node("n1", 2)],
        &[pod(&a, 0, "n1", "Running", None)],
    );
    let st = status_of(&out, "a");
    assert_eq!((st.phase, st.attempts), (TaskPhase::Queued, 2));
    assert!(st
        .pending_reason
        .unwrap()
        .starts_with("replica 1 failed (its pod was deleted)"));
}

#[test]
fn a_missing_gpu_model_is_named() {
    let mut t = task("h100", 1, 1, 0);
    t.spec.resources.gpu_model = Some("H100".into());
    let out = run(&[t], &[node("n1", 2)], &[]);
    assert_eq!(
        status_of(&out, "h100").pending_reason.as_deref(),
        Some("needs 1×1 GPUs; free: n1 2 (gang of 1: no replica fits: 0/1 nodes are available: 1 node(s) didn't match node selector)")
    );
}

#[test]
fn past_its_deadline_a_task_fails_and_stops() {
    let mut a = admitted(task("a", 1, 1, 0), &["n1"], TaskPhase::Running, 1);
    a.spec.active_deadline_seconds = Some(150);
    let pods = [pod(&a, 0, "n1", "Running", None)];
    let out = run(std::slice::from_ref(&a), &[node("n1", 1)], &pods);
    assert!(deleted(&out).is_empty());
    assert_eq!(
        out.next_at,
        Some(t(150)),
        "look again when the deadline passes"
    );
    a.spec.active_deadline_seconds = Some(90);
    let out = run(std::slice::from_ref(&a), &[node("n1", 1)], &pods);
    let st = status_of(&out, "a");
    assert_eq!(st.phase, TaskPhase::Failed);
    assert_eq!(
        st.message.as_deref(),
        Some("ran longer than activeDeadlineSeconds (90s)")
    );
    assert_eq!(deleted(&out), ["a-0"]);
}

#[test]
fn replicas_of_a_lost_node_fail_the_gang_and_go_at_once() {
    let a = admitted(task("a", 2, 1, 0), &["n1", "n2"], TaskPhase::Running, 1);
    let mut lost = pod(&a, 1, "n2", "Unknown", None);
    lost.status.as_mut().unwrap().message =
        Some("node n2 which was running pod a-1 is unresponsive".into());
    let pods = [pod(&a, 0, "n1", "Running", None), lost];
    let out = run(
        std::slice::from_ref(&a),
        &[node("n1", 1), node("n2", 1)],
        &pods,
    );
    assert!(status_of(&out, "a")
        .pending_reason
        .unwrap()
        .starts_with("replica 1 failed (node n2 which was running pod a-1 is unresponsive)"));
    let graces: Vec<(String, i64)> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::DeletePod {
                name,
                grace_seconds,
                ..
            } => Some((name.clone(), *grace_seconds)),
            _ => None,
        })
        .collect();
    assert_eq!(graces, [("a-0".to_string(), 10), ("a-1".to_string(), 0)]);
}

#[test]
fn a_dataset_that_does_not_exist_is_the_reason() {
    let mut t = task("d", 1, 0, 0);
    t.spec.data = Some(kumo_api::mltask::TaskData {
        dataset: Some("imagenet-mini".into()),
        host_path: None,
    });
    let out = run(&[t], &[node("n1", 0)], &[]);
    assert_eq!(
        status_of(&out, "d").pending_reason.as_deref(),
        Some("spec.data.dataset: dataset \"imagenet-mini\" does not exist (push it with `kumo dataset push DIR imagenet-mini`)")
    );
    assert!(created(&out).is_empty());
    // A task whose dataset exists is admitted.
    let mut t = task("e", 1, 0, 0);
    t.spec.data = Some(kumo_api::mltask::TaskData {
        dataset: Some("mnist".into()),
        host_path: None,
    });
    let out = run(&[t], &[node("n1", 0)], &[]);
    assert_eq!(created(&out).len(), 1);
}

#[test]
fn ended_tasks_and_their_ended_replicas_can_be_left_out() {
    use super::settled::{finished_entry, pod_needed, tasks_of_holding, Finished};
    let done = admitted(task("done", 1, 1, 0), &["n1"], TaskPhase::Succeeded, 1);
    let stopping = admitted(task("stopping", 1, 1, 1), &["n1"], TaskPhase::Cancelled, 1);
    let running = admitted(task("running", 1, 1, 2), &["n1"], TaskPhase::Running, 1);
    let waiting = task("waiting", 1, 2, 3);
    let pods = vec![
        pod(&done, 0, "n1", "Succeeded", Some(0)),
        // Still holds its GPU: the pass must stop it, and count it.
        pod(&stopping, 0, "n1", "Running", None),
        // Moves its task on.
        pod(&running, 0, "n1", "Succeeded", Some(0)),
        // Of no task: deleted.
        pod(&task("gone", 1, 1, 0), 0, "n1", "Succeeded", Some(0)),
    ];
    let tasks = vec![done, stopping, running, waiting];
    let nodes = [node("n1", 2)];

    let finished: Finished = tasks.iter().filter_map(finished_entry).collect();
    let kept_pods: Vec<Pod> = pods
        .iter()
        .filter(|p| pod_needed(p, &finished))
        .cloned()
        .collect();
    let holding = tasks_of_holding(&kept_pods, &finished);
    let kept_tasks: Vec<MLTask> = tasks
        .iter()
        .filter(|t| !finished.contains_key(&task_key(t)) || holding.contains(&task_key(t)))
        .cloned()
        .collect();
    let names = |objs: Vec<&kumo_api::ObjectMeta>| -> Vec<String> {
        objs.iter().map(|m| m.name.clone()).collect()
    };
    assert_eq!(
        names(kept_pods.iter().map(|p| &p.metadata).collect()),
        ["stopping-0", "running-0", "gone-0"]
    );
    assert_eq!(
        names(kept_tasks.iter().map(|t| &t.metadata).collect()),
        ["stopping", "running", "waiting"]
    );
    let full = run(&tasks, &nodes, &pods);
    let part = run(&kept_tasks, &nodes, &kept_pods);
    assert_eq!(full.actions, part.actions);
    assert_eq!(deleted(&full), ["gone-0", "stopping-0"]);
    assert_eq!(status_of(&full, "running").phase, TaskPhase::Succeeded);
}

#[test]
fn without_a_task_to_move_along_plain_pods_are_left_out() {
    use super::settled::{finished_entry, pod_needed_with, Finished};
    let done = admitted(task("done", 1, 1, 0), &["n1"], TaskPhase::Succeeded, 1);
    let stopping = admitted(task("stopping", 1, 1, 1), &["n1"], TaskPhase::Cancelled, 1);
    // A plain pod (no task) that holds node resources.
    let mut plain = pod(&task("x", 1, 1, 2), 0, "n1", "Running", None);
    plain.metadata.labels.remove(LABEL_TASK);
    plain.metadata.owner_references.clear();
    plain.metadata.name = "plain".into();
    let replica = pod(&stopping, 0, "n1", "Running", None);
    let orphan = pod(&task("gone", 1, 1, 0), 0, "n1", "Succeeded", Some(0));
    let finished: Finished = [&done, &stopping]
        .into_iter()
        .filter_map(finished_entry)
        .collect();
    let check = |p: &Pod, any_task: bool, expected: bool| {
        assert_eq!(
            pod_needed_with(p, &finished, any_task),
            expected,
            "{} with any_task {any_task}",
            p.metadata.name
        );
    };
    // With a task to admit, a plain pod counts in the node views; without one it is left out.
    check(&plain, true, true);
    check(&plain, false, false);
    // Replicas are kept either way: an ended task's running one is stopped, an orphan deleted.
    check(&replica, false, true);
    check(&orphan, false, true);
    // And leaving the plain pod out changes nothing the pass does.
    let nodes = [node("n1", 2)];
    let all = [plain.clone(), replica.clone(), orphan.clone()];
    let kept = [replica, orphan];
    let tasks = [stopping];
    assert_eq!(
        run(&tasks, &nodes, &all).actions,
        run(&tasks, &nodes, &kept).actions
    );
    assert_eq!(
        deleted(&run(&tasks, &nodes, &kept)),
        ["gone-0", "stopping-0"]
    );
    // With no task at all, the nodes play no part either (the pass is then given none).
    let orphans = [pod(&task("gone", 1, 1, 0), 0, "n1", "Succeeded", Some(0))];
    assert_eq!(
        run(&[], &nodes, &orphans).actions,
        run(&[], &[], &orphans).actions
    );
    assert_eq!(deleted(&run(&[], &[], &orphans)), ["gone-0"]);
}

thread_local! {
    /// The task key whose step panics in this thread's passes (the test hook of `pass`).
    static PANIC_FOR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Called by `pass` before each task's step in tests: panics for the key a test asked for.
pub(super) fn panic_if_asked(key: &str) {
    if PANIC_FOR.with(|p| p.borrow().as_deref() == Some(key)) {
        panic!("test: the step of {key} panicked");
    }
}

#[test]
fn a_task_whose_step_panics_is_left_out_and_the_others_are_decided() {
    let tasks = [task("bad", 1, 1, 0), task("good", 1, 1, 1)];
    PANIC_FOR.with(|p| *p.borrow_mut() = Some("default/bad".into()));
    let out = run(&tasks, &[node("a", 8)], &[]);
    PANIC_FOR.with(|p| *p.borrow_mut() = None);
    assert_eq!(
        out.failed,
        vec![(
            "default/bad".to_string(),
            "test: the step of default/bad panicked".to_string()
        )]
    );
    assert_eq!(status_of(&out, "good").phase, TaskPhase::Admitted);
    assert_eq!(created(&out).len(), 1);
    // Nothing is written for the task whose step panicked.
    let names: Vec<&str> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Status(t) | Action::Event { task: t, .. } => Some(t.metadata.name.as_str()),
            _ => None,
        })
        .collect();
    assert!(!names.contains(&"bad"), "{names:?}");
}

/// Tasks stored before their numbers were bounded (the issue's `activeDeadlineSeconds`,
/// i64::MAX, i32::MAX retries and replicas): the pass neither panics nor acts on an overflow.
#[test]
fn numbers_stored_before_their_bound_do_not_panic_the_pass() {
    for huge in [9_000_000_000_000_000_000, i64::MAX] {
        // Queued with a deadline past the calendar's end: admitted, with no deadline.
        let mut queued = task("queued", 1, 1, 0);
        queued.spec.active_deadline_seconds = Some(huge);
        queued.spec.priority = i32::MAX;
        // Running since 0: never past its deadline.
        let mut running = task("running", 1, 1, 0);
        running.spec.active_deadline_seconds = Some(huge);
        let running = admitted(running, &["a"], TaskPhase::Running, 1);
        let running_pod = pod(&running, 0, "a", "Running", None);
        // A failure with retries without end: restarted; attempts saturate.
        let mut failing = task("failing", 1, 1, 0);
        failing.spec.max_retries = i32::MAX;
        let failing = admitted(failing, &["b"], TaskPhase::Running, i32::MAX - 1);
        let failing_pod = pod(&failing, 0, "b", "Failed", Some(1));
        // More replicas and GPUs than any bound: it waits, and says so.
        let big = task("big", i32::MAX, huge, 0);
        let out = run(
            &[queued, running, failing, big],
            &[node("a", 8), node("b", 8)],
            &[running_pod, failing_pod],
        );
        assert!(out.failed.is_empty(), "{:?}", out.failed);
        assert_eq!(status_of(&out, "queued").phase, TaskPhase::Admitted);
        assert!(
            !events(&out)
                .iter()
                .any(|e| e.starts_with("DeadlineExceeded")),
            "{:?}",
            events(&out)
        );
        let f = status_of(&out, "failing");
        assert_eq!((f.phase, f.attempts), (TaskPhase::Queued, i32::MAX));
        assert_eq!(status_of(&out, "big").phase, TaskPhase::Queued);
    }
}
