//! Tests of the shim runtime with the `process` driver and real processes, the shim being this
//! test binary itself.
//!
//! The runtime spawns `<test binary> --exact shim_runtime::tests::shim_entry` marked by
//! `SHIM_ENV`; that test then runs the real `shim::standby` (which takes its job on stdin and
//! runs `shim::run`) and exits the process.

use super::*;
use crate::cgroup::Cgroups;
use crate::fixtures::pod;
use crate::process::ProcessRuntimeConfig;
use crate::state::RunState;
use crate::sys::RealSys;
use kumo_api::pod::EnvVar;
use kumo_api::RestartPolicy;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

const SHIM_ENV: &str = "KUMO_RUNTIME_TEST_SHIM";

/// Not a test: the entry point of the shim when this binary is started as one.
#[test]
fn shim_entry() {
    if std::env::var_os(SHIM_ENV).is_none() {
        return;
    }
    std::process::exit(i32::from(crate::shim::standby()));
}

struct Harness {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    rt: ShimRuntime,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
}

fn open(data_dir: &Path) -> (ShimRuntime, mpsc::UnboundedReceiver<RuntimeEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shim = ShimCommand {
        program: std::env::current_exe().expect("test exe"),
        args: [
            "--exact",
            "shim_runtime::tests::shim_entry",
            "--nocapture",
            "--test-threads=1",
        ]
        .iter()
        .map(OsString::from)
        .collect(),
        env: vec![(SHIM_ENV.into(), "1".into())],
    };
    let config = ProcessRuntimeConfig {
        data_dir: data_dir.to_path_buf(),
        shim,
        cgroups: Cgroups::off(),
        sys: Arc::new(RealSys),
        sandboxes: None,
    };
    (crate::process::open(config, tx).expect("open runtime"), rx)
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let (rt, events) = open(&data_dir);
    Harness {
        _dir: dir,
        data_dir,
        rt,
        events,
    }
}

fn shell_pod(script: &str) -> Pod {
    let mut p = pod(RestartPolicy::Never, &["c"]);
    p.spec.containers[0].command = vec!["sh".into(), "-c".into(), script.into()];
    p
}

async fn next_exit(
    events: &mut mpsc::UnboundedReceiver<RuntimeEvent>,
) -> (ContainerStateTerminated, bool) {
    match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
        Ok(Some(RuntimeEvent::Exited {
            terminated, killed, ..
        })) => (terminated, killed),
        other => panic!("expected an exit, got {other:?}"),
    }
}

fn started(outcome: StartOutcome) -> i32 {
    match outcome {
        StartOutcome::Started { pid } => pid,
        StartOutcome::Failed(m) | StartOutcome::ConfigError(m) => panic!("start failed: {m}"),
    }
}

#[tokio::test]
async fn runs_a_container_to_its_exit_with_logs_env_and_workdir() {
    let mut h = harness();
    let mut p = shell_pod("echo out $HOSTNAME $GREETING; echo err >&2; pwd; env | wc -l; exit 3");
    p.spec.containers[0].env = vec![EnvVar {
        name: "GREETING".into(),
        value: "hi".into(),
    }];
    started(h.rt.start(&p, 0).await.expect("start"));
    let (term, killed) = next_exit(&mut h.events).await;
    assert_eq!(
        (term.exit_code, term.reason.as_deref(), killed),
        (3, Some("Error"), false)
    );

    let log = std::fs::read_to_string(h.rt.log_path("uid-1", "c", 0)).expect("log");
    let work = h.data_dir.join("pods/uid-1/work");
    // PATH, HOSTNAME, GREETING and what sh sets itself (PWD, ...), nothing else.
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        &lines[..3],
        &["out p hi", "err", work.to_str().expect("utf-8")]
    );
    assert!(
        lines[3].trim().parse::<u32>().expect("count") <= 6,
        "env leaked: {log}"
    );

    let state = h.rt.state("uid-1");
    assert_eq!(
        state.containers["c"].terminated().map(|t| t.exit_code),
        Some(3)
    );
    let rec: ContainerRecord = read_json(&h.data_dir.join("pods/uid-1/c/state.json"))
        .expect("read")
        .expect("some");
    assert_eq!(rec.terminated.map(|t| t.exit_code), Some(3));
    let pod_rec: PodRecord = read_json(&h.data_dir.join("pods/uid-1/pod.json"))
        .expect("read")
        .expect("some");
    assert_eq!(pod_rec.key(), "default/p");
}

/// The pids of the shims started ahead, once `ready` says they are as expected.
async fn standby_pids(h: &Harness, ready: impl Fn(&[u32]) -> bool) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = h.rt.inner.standby.pids();
        if ready(&pids) {
            return pids;
        }
        assert!(Instant::now() < deadline, "shims started ahead: {pids:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_shim_started_ahead_that_died_is_replaced() {
    let mut h = harness();
    started(h.rt.start(&shell_pod("exit 0"), 0).await.expect("start"));
    next_exit(&mut h.events).await;
    // The next containers' shims wait (started beside the first start); something on the host
    // kills them.
    let pids = standby_pids(&h, |p| !p.is_empty()).await;
    for &pid in &pids {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in &pids {
        let stat = format!("/proc/{pid}/stat");
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
            assert!(Instant::now() < deadline, "a killed shim did not die");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut second = shell_pod("echo second");
    second.metadata.name = "q".into();
    second.metadata.uid = Some("uid-2".into());
    started(h.rt.start(&second, 0).await.expect("start"));
    let (term, _) = next_exit(&mut h.events).await;
    assert_eq!(term.exit_code, 0);
    let log = std::fs::read_to_string(h.rt.log_path("uid-2", "c", 0)).expect("log");
    assert_eq!(log, "second\n");
    // New ones wait.
    standby_pids(&h, |now| {
        !now.is_empty() && now.iter().all(|p| !pids.contains(p))
    })
    .await;
}

#[tokio::test]
async fn restarts_count_up_and_keep_two_logs() {
    let mut h = harness();
    let p = shell_pod("echo run");
    for n in 0..3 {
        started(h.rt.start(&p, 0).await.expect("start"));
        let (term, _) = next_exit(&mut h.events).await;
        assert_eq!(term.reason.as_deref(), Some("Completed"));
        let c = &h.rt.state("uid-1").containers["c"];
        assert_eq!(c.restart_count, n);
        assert_eq!(c.last_terminated.is_some(), n > 0);
    }
    let dir = h.data_dir.join("pods/uid-1/c");
    assert!(!dir.join("0.log").exists());
    assert!(dir.join("1.log").exists() && dir.join("2.log").exists());
}

#[tokio::test]
async fn a_container_that_cannot_start_is_a_start_error() {
    let h = harness();
    let mut p = shell_pod("");
    p.spec.containers[0].command = vec!["/nonexistent/kumo-test-binary".into()];
    let StartOutcome::Failed(msg) = h.rt.start(&p, 0).await.expect("start") else {
        panic!("started")
    };
    assert!(msg.contains("/nonexistent/kumo-test-binary"), "{msg}");
    let c = &h.rt.state("uid-1").containers["c"];
    let t = c.terminated().expect("terminated");
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError"))
    );

    p.spec.containers[0].command = vec![];
    p.spec.containers[0].args = vec!["echo".into()];
    let StartOutcome::Failed(msg) = h.rt.start(&p, 0).await.expect("start") else {
        panic!("started")
    };
    assert!(msg.contains("needs spec.containers[].command"), "{msg}");
    assert_eq!(h.rt.state("uid-1").containers["c"].restart_count, 1);
}

#[tokio::test]
async fn kill_stops_the_process_group_with_sigterm() {
    let mut h = harness();
    // The child keeps the group busy; SIGTERM to the group reaches both.
    let pid = started(
        h.rt.start(&shell_pod("sleep 100 & wait"), 0)
            .await
            .expect("start"),
    );
    assert!(h.rt.state("uid-1").any_running());
    assert!(
        h.rt.start(&shell_pod("true"), 0).await.is_err(),
        "a running container is not started twice"
    );
    let t0 = Instant::now();
    h.rt.kill("uid-1", "c", Duration::from_secs(20))
        .await
        .expect("kill");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let (term, killed) = next_exit(&mut h.events).await;
    assert_eq!((term.exit_code, term.signal, killed), (143, Some(15), true));
    assert_eq!(RealSys.start_time(pid), None);
    h.rt.cleanup("uid-1").await.expect("cleanup");
    assert!(!h.data_dir.join("pods/uid-1").exists());
    assert!(h.rt.state("uid-1").is_empty());
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_within_grace_plus_one_second() {
    let mut h = harness();
    // `ready` is printed once the trap is set, so SIGTERM cannot arrive before it.
    started(
        h.rt.start(&shell_pod("trap '' TERM; echo ready; exec sleep 100"), 0)
            .await
            .expect("start"),
    );
    let log = h.rt.log_path("uid-1", "c", 0);
    let mut ready = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "container never became ready");
    let grace = Duration::from_secs(1);
    let t0 = Instant::now();
    h.rt.kill("uid-1", "c", grace).await.expect("kill");
    let took = t0.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "took {took:?}"
    );
    let (term, _) = next_exit(&mut h.events).await;
    assert_eq!((term.exit_code, term.signal), (137, Some(9)));
}

#[tokio::test]
async fn a_restarted_runtime_re_adopts_running_containers_and_learns_their_exit() {
    let mut h = harness();
    let pid = started(
        h.rt.start(&shell_pod("exec sleep 100"), 0)
            .await
            .expect("start"),
    );
    let finished = shell_pod("exit 4");
    let mut other = finished.clone();
    other.metadata.uid = Some("uid-2".into());
    started(h.rt.start(&other, 0).await.expect("start"));
    assert_eq!(next_exit(&mut h.events).await.0.exit_code, 4);
    h.rt.shutdown().await;

    // A new agent on the same data dir: the same process is running, the other pod has ended.
    let (rt2, mut events2) = open(&h.data_dir);
    let c = &rt2.state("uid-1").containers["c"];
    assert_eq!(c.id, Some(format!("process://{pid}")));
    assert!(matches!(c.run, RunState::Running { .. }));
    assert_eq!(
        rt2.state("uid-2").containers["c"]
            .terminated()
            .map(|t| t.exit_code),
        Some(4)
    );
    let mut uids: Vec<String> = Runtime::pods(&rt2).into_iter().map(|p| p.uid).collect();
    uids.sort();
    assert_eq!(uids, ["uid-1", "uid-2"]);

    // Its exit, caused from outside, is learnt through the shim's exit file.
    RealSys.signal_group(pid, Signal::SIGTERM).expect("signal");
    let (term, killed) = next_exit(&mut events2).await;
    assert_eq!(
        (term.exit_code, term.signal, killed),
        (143, Some(15), false)
    );
    rt2.shutdown().await;
}

#[tokio::test]
async fn a_recorded_container_whose_processes_vanished_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    std::fs::create_dir_all(layout.container_dir("u9", "c")).expect("mkdir");
    let pod = PodRecord {
        namespace: "default".into(),
        name: "p".into(),
        uid: "u9".into(),
    };
    write_json(&layout.pod_record("u9"), &pod).expect("write");
    let rec = ContainerRecord {
        restart_count: 1,
        pid: Some(i32::MAX - 7),
        shim_pid: None,
        proc_start_time: Some(1),
        shim_start_time: None,
        started_at: chrono::Utc::now(),
        terminated: None,
        last_terminated: None,
        oom_kills_at_start: None,
        runtime_id: None,
    };
    write_json(&layout.state_file("u9", "c"), &rec).expect("write");
    let (rt, _events) = open(dir.path());
    let c = &rt.state("u9").containers["c"];
    let t = c.terminated().expect("terminated");
    assert_eq!(
        (t.exit_code, t.reason.as_deref(), c.restart_count),
        (255, Some("Unknown"), 1)
    );
}
