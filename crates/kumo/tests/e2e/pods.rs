//! Pods through the whole spine: apply → scheduled → running → exited, logs, restarts, stops.

use crate::harness::*;
use kumo_api::meta::find_condition;
use kumo_api::{ConditionStatus, Pod, PodPhase};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_runs_to_success_with_logs() {
    let c = Cluster::up(&[]);
    let f = c.write(
        "hello.yaml",
        &process_pod("hello", "Never", "echo hello from kumo; echo second line"),
    );
    let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "pod/hello created"
    );

    let client = c.client();
    let pod = wait_pod(&client, "default", "hello", T, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Succeeded)
    })
    .await;
    let status = pod.status.unwrap();
    assert_eq!(pod.spec.node_name.as_deref(), Some("node-1"));
    let term = status.container_statuses[0]
        .state
        .terminated
        .clone()
        .expect("terminated state");
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert!(term.started_at.is_some() && term.finished_at.is_some());

    let logs = c.kumo(&["logs", "hello"]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello from kumo\nsecond line\n"
    );
    let tail = c.kumo(&["logs", "pod/hello", "--tail", "1"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout), "second line\n");

    // Applying the same file again changes nothing.
    let again = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "pod/hello unchanged"
    );

    // `kumo up` wrote the client config readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.config_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "client config mode {mode:o}");

    let events = c.kumo(&["describe", "pod", "hello"]);
    let text = String::from_utf8_lossy(&events.stdout);
    for reason in ["Scheduled", "Started"] {
        assert!(
            text.contains(reason),
            "describe lacks {reason} event:\n{text}"
        );
    }

    // A failed exit is a Warning event naming the code; a clean one, as in kubelet, is none.
    let f = c.write("fails.yaml", &process_pod("fails", "Never", "exit 3"));
    let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + T;
    let exits = loop {
        let events = client
            .list::<kumo_api::Event>(Some("default"), &kumo_client::ListParams::default())
            .await
            .unwrap();
        let exits: Vec<(String, String, String)> = events
            .items
            .into_iter()
            .filter(|e| e.message.contains("exited with code"))
            .map(|e| (e.involved_object.name, e.reason, e.message))
            .collect();
        if !exits.is_empty() {
            break exits;
        }
        assert!(Instant::now() < deadline, "no exit event for pod fails");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        exits,
        [(
            "fails".to_string(),
            "Failed".to_string(),
            "Container main exited with code 3".to_string()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies() {
    let c = Cluster::up(&[]);
    let client = c.client();
    // Never: a failure is final.
    let never = c.write("never.yaml", &process_pod("never", "Never", "exit 3"));
    // OnFailure: fails twice (a counter file in its working dir), then succeeds.
    let on_failure = c.write(
        "onfailure.yaml",
        &process_pod(
            "onfailure",
            "OnFailure",
            "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]",
        ),
    );
    // Always: even a success is restarted.
    let always = c.write(
        "always.yaml",
        &process_pod("always", "Always", "echo run; exit 0"),
    );
    for f in [&never, &on_failure, &always] {
        let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let p = wait_pod(&client, "default", "never", T, |p| {
        phase(p) == Some(PodPhase::Failed)
    })
    .await;
    let cs = &p.status.unwrap().container_statuses[0];
    assert_eq!(cs.restart_count, 0);
    assert_eq!(
        cs.state
            .terminated
            .as_ref()
            .map(|t| (t.exit_code, t.reason.clone())),
        Some((3, Some("Error".into())))
    );

    let p = wait_pod(&client, "default", "onfailure", T, |p| {
        phase(p) == Some(PodPhase::Succeeded)
    })
    .await;
    assert_eq!(p.status.unwrap().container_statuses[0].restart_count, 2);

    let p = wait_pod(&client, "default", "always", T, |p| restarts(p) >= 3).await;
    assert_ne!(
        phase(&p),
        Some(PodPhase::Succeeded),
        "Always never completes"
    );
    // Between restarts the container waits in CrashLoopBackOff with a growing back-off.
    let p = wait_pod(&client, "default", "always", T, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.first())
            .and_then(|c| c.state.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            == Some("CrashLoopBackOff")
    })
    .await;
    let get = c.kumo(&["get", "pods", "always"]);
    assert!(
        String::from_utf8_lossy(&get.stdout).contains("CrashLoopBackOff"),
        "{}",
        String::from_utf8_lossy(&get.stdout)
    );
    assert!(restarts(&p) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ignoring_process_is_killed_after_grace() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stubborn\nspec:\n  runtimeClassName: process\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    command: [\"/bin/sh\", \"-c\", \"trap '' TERM; echo ready; while true; do sleep 0.1; done\"]\n";
    let f = c.write("stubborn.yaml", manifest);
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let p = wait_pod(&client, "default", "stubborn", T, |p| {
        phase(p) == Some(PodPhase::Running)
    })
    .await;
    let pid = container_pid(&p).expect("container pid");
    assert!(process_alive(pid));

    let start = Instant::now();
    let out = c.kumo(&["delete", "pod", "stubborn", "--wait"]);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !process_alive(pid),
        "container process {pid} survived deletion"
    );
    assert!(
        took >= Duration::from_secs(2),
        "killed before its grace period: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(3),
        "killed later than grace + 1 s: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_readopts_running_pod() {
    let mut c = Cluster::up(&[]);
    let client = c.client();
    let f = c.write(
        "long.yaml",
        &process_pod("long", "Always", "echo started; exec sleep 1000"),
    );
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let p = wait_pod(&client, "default", "long", T, |p| {
        phase(p) == Some(PodPhase::Running)
    })
    .await;
    let pid = container_pid(&p).expect("pid");

    c.restart();
    let client = c.client();
    // After the restart the agent reports the same process, not a new one.
    let p = wait_pod(&client, "default", "long", T, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.first())
            .is_some_and(|cs| cs.ready)
            && find_condition(&p.status.as_ref().unwrap().conditions, "Ready")
                .is_some_and(|c| c.status == ConditionStatus::True)
    })
    .await;
    assert_eq!(
        container_pid(&p),
        Some(pid),
        "the pod was restarted instead of re-adopted"
    );
    assert_eq!(restarts(&p), 0);
    assert!(process_alive(pid));
    // And it still manages it: deleting the pod stops the adopted process.
    assert!(c
        .kumo(&["delete", "pod", "long", "--wait"])
        .status
        .success());
    assert!(!process_alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_explains_why() {
    let c = Cluster::up(&["--labels", "zone=a"]);
    let client = c.client();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  runtimeClassName: process\n  containers:\n  - name: main\n    command: [\"true\"]\n    resources:\n      requests:\n        cpu: \"4096\"\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: elsewhere\nspec:\n  runtimeClassName: process\n  nodeSelector:\n    zone: b\n  containers:\n  - name: main\n    command: [\"true\"]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: gpu\nspec:\n  runtimeClassName: process\n  containers:\n  - name: main\n    command: [\"true\"]\n    resources:\n      limits:\n        nvidia.com/gpu: 1\n";
    let f = c.write("unsched.yaml", manifest);
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    for (name, message) in [
        ("huge", "0/1 nodes are available: 1 Insufficient cpu"),
        (
            "elsewhere",
            "0/1 nodes are available: 1 node(s) didn't match node selector",
        ),
        (
            "gpu",
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu",
        ),
    ] {
        // Until the node registers, the message says there are no nodes; then it says why this one won't do.
        let p = wait_pod(&client, "default", name, T, |p| {
            p.status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "PodScheduled"))
                .is_some_and(|c| {
                    c.status == ConditionStatus::False && c.message.as_deref() == Some(message)
                })
        })
        .await;
        let cond = find_condition(&p.status.as_ref().unwrap().conditions, "PodScheduled")
            .unwrap()
            .clone();
        assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(cond.message.as_deref(), Some(message));
        assert_eq!(p.spec.node_name, None);
    }
    let describe = c.kumo(&["describe", "pod", "huge"]);
    assert!(String::from_utf8_lossy(&describe.stdout).contains("FailedScheduling"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_gpus_are_advertised_and_scheduled() {
    let c = Cluster::up(&["--fake-gpus", "2"]);
    let client = c.client();
    let node: kumo_api::Node = client.get("", "node-1").await.expect("node");
    let status = node.status.expect("node status");
    assert_eq!(
        status
            .capacity
            .get("nvidia.com/gpu")
            .map(|q| q.as_str().to_string()),
        Some("2".to_string())
    );
    assert_eq!(status.gpus.len(), 2);
    assert!(
        status.gpus.iter().all(|g| g.fake),
        "fake GPUs must say they are fake"
    );
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: trainer\nspec:\n  runtimeClassName: process\n  restartPolicy: Never\n  containers:\n  - name: main\n    command: [\"true\"]\n    resources:\n      limits:\n        nvidia.com/gpu: 2\n";
    let f = c.write("gpu.yaml", manifest);
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let p = wait_pod(&client, "default", "trainer", T, |p| {
        phase(p) == Some(PodPhase::Succeeded)
    })
    .await;
    assert_eq!(p.spec.node_name.as_deref(), Some("node-1"));
    // The devices are in the container's status, as Kubernetes' allocatedResourcesStatus.
    let cs = &p.status.as_ref().unwrap().container_statuses[0];
    let ids: Vec<&str> = cs.allocated_resources_status[0]
        .resources
        .iter()
        .map(|r| r.resource_id.as_str())
        .collect();
    assert_eq!(
        (cs.allocated_resources_status[0].name.as_str(), ids),
        ("nvidia.com/gpu", vec!["0", "1"])
    );
    let describe =
        String::from_utf8_lossy(&c.kumo(&["describe", "pod", "trainer"]).stdout).to_string();
    assert!(
        describe.contains("Allocated nvidia.com/gpu:  0,1"),
        "{describe}"
    );
}

/// A pod applied from another's manifest carries its `kumo.dev/gpu-devices` record; while the
/// other pod holds those devices, the copy gets devices of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_gpu_record_does_not_share_a_device() {
    let c = Cluster::up(&["--fake-gpus", "2"]);
    let client = c.client();
    let gpu_pod = |name: &str, annotations: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec:\n  runtimeClassName: process\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    command: [\"sleep\", \"60\"]\n    resources:\n      limits:\n        nvidia.com/gpu: 1\n")
    };
    let record = |p: &Pod| p.metadata.annotations.get("kumo.dev/gpu-devices").cloned();
    let f = c.write("first.yaml", &gpu_pod("first", ""));
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let first = wait_pod(&client, "default", "first", T, |p| {
        phase(p) == Some(PodPhase::Running) && record(p).is_some()
    })
    .await;
    let held = record(&first).unwrap();
    let f = c.write(
        "copy.yaml",
        &gpu_pod("copy", &format!("kumo.dev/gpu-devices: \"{held}\"")),
    );
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let copy = wait_pod(&client, "default", "copy", T, |p| {
        phase(p) == Some(PodPhase::Running) && record(p) != Some(held.clone())
    })
    .await;
    let other = if held == "main=0" { "main=1" } else { "main=0" };
    assert_eq!(record(&copy).as_deref(), Some(other));
}

pub fn phase(p: &Pod) -> Option<PodPhase> {
    p.status.as_ref().map(|s| s.phase)
}

pub fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .map_or(0, |c| c.restart_count)
}

/// Where a container's memory limit lives: cgroup v1 (these machines) or the v2 unified tree.
fn memory_limit_file(uid: &str, container: &str) -> std::path::PathBuf {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join(format!("kumo/{uid}/{container}/memory.max"))
    } else {
        root.join(format!(
            "memory/kumo/{uid}/{container}/memory.limit_in_bytes"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limits_are_enforced_through_cgroups() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let manifest = |name: &str, script: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: process\n  restartPolicy: Never\n  containers:\n  - name: main\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n    resources:\n      limits: {{memory: 32Mi, cpu: 500m}}\n"
        )
    };
    let f = c.write("limited.yaml", &manifest("limited", "exec sleep 1000"));
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let p = wait_pod(&client, "default", "limited", T, |p| {
        phase(p) == Some(PodPhase::Running)
    })
    .await;
    let uid = p.metadata.uid.clone().unwrap();
    let limit = std::fs::read_to_string(memory_limit_file(&uid, "main"))
        .expect("memory cgroup of the container");
    assert_eq!(limit.trim(), (32 * 1024 * 1024).to_string());

    // `tail` looking for a newline in /dev/zero grows without end: the kernel stops it at the
    // limit, and kumo says why.
    let f = c.write("hog.yaml", &manifest("hog", "exec tail /dev/zero"));
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let p = wait_pod(&client, "default", "hog", T, |p| {
        phase(p) == Some(PodPhase::Failed)
    })
    .await;
    let term = p.status.as_ref().unwrap().container_statuses[0]
        .state
        .terminated
        .clone()
        .unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (137, Some("OOMKilled")),
        "{term:?}"
    );
    // A finished container holds no cgroup: it is removed right after the exit is reported
    // (on a blocking thread, so the report does not wait for the kernel's rmdir).
    let uid = p.metadata.uid.clone().unwrap();
    let dir = memory_limit_file(&uid, "main")
        .parent()
        .unwrap()
        .to_path_buf();
    let deadline = Instant::now() + T;
    while dir.exists() {
        assert!(
            Instant::now() < deadline,
            "cgroup of a finished container left behind: {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_streams_until_the_container_ends() {
    let c = Cluster::up(&[]);
    let client = c.client();
    // The container waits for a file the test creates, so `logs -f` is attached before the end.
    let script = "echo first; while [ ! -e go ]; do sleep 0.05; done; echo second; echo third";
    let f = c.write("talker.yaml", &process_pod("talker", "Never", script));
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let p = wait_pod(&client, "default", "talker", T, |p| {
        phase(p) == Some(PodPhase::Running)
    })
    .await;
    let mut follower = std::process::Command::new(kumo_exe())
        .args(["logs", "-f", "talker"])
        .env("KUMO_CONFIG", c.config_path())
        .env("HOME", c.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(follower.stdout.take().unwrap());
    // The follower prints the first line while the container still runs...
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert_eq!(first, "first\n");
    // ...then, released, the container writes the rest, which the same stream delivers before it ends.
    let workdir = c
        .data_dir()
        .join("agent/pods")
        .join(p.metadata.uid.unwrap())
        .join("work");
    std::fs::write(workdir.join("go"), "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "second\nthird\n");
    assert!(follower.wait().unwrap().success());
}

#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(kumo_exe())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("apply"),
            "{shell}"
        );
    }
    let out = std::process::Command::new(kumo_exe())
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn gang_pod(name: &str, gang: &str, size: usize, gpus: i64) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{kumo.dev/gang: {gang}}}\n  annotations: {{kumo.dev/gang-size: \"{size}\"}}\nspec:\n  runtimeClassName: process\n  restartPolicy: Never\n  containers:\n  - name: main\n    command: [\"true\"]\n    resources:\n      limits: {{nvidia.com/gpu: {gpus}}}\n"
    )
}

fn scheduled_message(p: &Pod) -> Option<String> {
    p.status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "PodScheduled"))
        .and_then(|c| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gangs_start_whole_or_not_at_all() {
    let c = Cluster::up(&["--fake-gpus", "3"]);
    let client = c.client();
    // 2 x 2 GPUs on a node with 3: neither member may take GPUs while the other cannot.
    let f = c.write(
        "big.yaml",
        &format!(
            "{}---\n{}",
            gang_pod("big-0", "big", 2, 2),
            gang_pod("big-1", "big", 2, 2)
        ),
    );
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let expected = "gang of 2: only 1 replica(s) fit together: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu";
    for name in ["big-0", "big-1"] {
        let p = wait_pod(&client, "default", name, T, |p| {
            scheduled_message(p).as_deref() == Some(expected)
        })
        .await;
        assert_eq!(p.spec.node_name, None);
    }
    // A gang of 3 x 1 GPU waits for its last member, then runs whole.
    let f = c.write(
        "small.yaml",
        &format!(
            "{}---\n{}",
            gang_pod("s-0", "s", 3, 1),
            gang_pod("s-1", "s", 3, 1)
        ),
    );
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let waiting = "waiting for the rest of gang s: 2 of 3 pods exist";
    wait_pod(&client, "default", "s-1", T, |p| {
        scheduled_message(p).as_deref() == Some(waiting)
    })
    .await;
    let f = c.write("last.yaml", &gang_pod("s-2", "s", 3, 1));
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    for name in ["s-0", "s-1", "s-2"] {
        wait_pod(&client, "default", name, T, |p| {
            phase(p) == Some(PodPhase::Succeeded)
        })
        .await;
    }
    // The big gang still holds nothing.
    let p: Pod = client.get("default", "big-0").await.unwrap();
    assert_eq!(p.spec.node_name, None);
}
