//! The OCI runtimes for real: runc and runsc run a busybox root filesystem made by the test
//! (no registry), supervised by the shim (this test binary, as in the process runtime's tests).
//! They live in the agent because they run the runtime with the agent's real sandboxes
//! (`sandbox::Sandboxes`) and images (`images::DirImages`), which the runtime only sees through
//! its traits. They need root, runc and runsc.

use crate::fixtures::pod;
use crate::images::{DirImages, ImageConfig};
use crate::model::RunState;
use crate::sandbox::{NoNetwork, Sandboxes};
use kumo_api::pod::{ContainerStateTerminated, SecurityContext};
use kumo_api::Pod;
use kumo_api::{Quantity, RestartPolicy};
use kumo_runtime::oci::cli::is_of_pod;
use kumo_runtime::oci::{open, OciRuntimeConfig};
use kumo_runtime::sys::{RealSys, Sys};
use kumo_runtime::{Runtime, RuntimeEvent, ShimCommand, ShimRuntime, StartOutcome};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const SHIM_ENV: &str = "KUMO_AGENT_TEST_SHIM";
const APPLETS: [&str; 17] = [
    "sh", "cat", "echo", "hostname", "grep", "tail", "sleep", "ls", "ps", "dmesg", "tr", "wc",
    "id", "true", "head", "seq", "touch",
];

/// A busybox root filesystem: the static binary, its applets as symlinks, a passwd file.
fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).expect("symlink");
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
}

/// Not a test: the entry point of the shim when this binary is started as one.
#[test]
fn shim_entry() {
    if std::env::var_os(SHIM_ENV).is_none() {
        return;
    }
    std::process::exit(i32::from(kumo_runtime::shim::standby()));
}

struct Harness {
    dir: tempfile::TempDir,
    rt: ShimRuntime,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
    sandboxes: Arc<Sandboxes>,
    class: &'static str,
}

fn shim() -> ShimCommand {
    ShimCommand {
        program: std::env::current_exe().expect("test exe"),
        args: [
            "--exact",
            "oci_tests::shim_entry",
            "--nocapture",
            "--test-threads=1",
        ]
        .iter()
        .map(OsString::from)
        .collect(),
        env: vec![(SHIM_ENV.into(), "1".into())],
    }
}

fn open_runtime(
    dir: &Path,
    class: &'static str,
    sandboxes: Arc<Sandboxes>,
) -> (ShimRuntime, mpsc::UnboundedReceiver<RuntimeEvent>) {
    let images = DirImages::new().with(
        "busybox",
        &dir.join("busybox"),
        ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
    );
    let (binary, extra_args) = match class {
        "runsc" => (
            PathBuf::from("/usr/bin/runsc"),
            crate::config::DEFAULT_RUNSC_ARGS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
        _ => (PathBuf::from("/usr/sbin/runc"), Vec::new()),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = open(
        OciRuntimeConfig {
            class,
            data_dir: dir.join(class),
            binary,
            extra_args,
            shim: shim(),
            sys: Arc::new(RealSys),
            images: Arc::new(images),
            sandboxes,
            allow_privileged: false,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: Default::default(),
            gpus: Arc::new(crate::gpu::RuntimeGpus(Arc::new(crate::gpu::FakeGpus(2)))),
            cdi_spec_dirs: vec![dir.join("cdi-etc"), dir.join("cdi-run")],
        },
        tx,
    )
    .expect("open runtime");
    (rt, rx)
}

fn harness(class: &'static str) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    busybox_rootfs(&dir.path().join("busybox"));
    let sandboxes = Arc::new(Sandboxes::new(
        dir.path().join("sandboxes"),
        Arc::new(NoNetwork),
        crate::host_path::HostPathPolicy::new(vec![dir.path().join("host")], Vec::new()),
    ));
    let (rt, events) = open_runtime(dir.path(), class, sandboxes.clone());
    Harness {
        dir,
        rt,
        events,
        sandboxes,
        class,
    }
}

/// A busybox pod with a fresh uid (tests run in parallel; cgroups and runtime ids are per uid).
fn shell_pod(class: &str, script: &str) -> Pod {
    let mut p = pod(RestartPolicy::Never, &["c"]);
    p.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    p.spec.runtime_class_name = Some(class.to_string());
    let c = &mut p.spec.containers[0];
    c.image = Some("busybox".into());
    c.command = vec!["sh".into(), "-c".into(), script.into()];
    p
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().expect("uid")
}

impl Harness {
    async fn start(&self, p: &Pod) -> StartOutcome {
        self.sandboxes.ensure(p).await.expect("sandbox");
        self.rt.start(p, 0).await.expect("start")
    }

    async fn started(&self, p: &Pod) -> i32 {
        match self.start(p).await {
            StartOutcome::Started { pid } => pid,
            other => panic!("start failed: {other:?}"),
        }
    }

    async fn next_exit(&mut self) -> ContainerStateTerminated {
        match tokio::time::timeout(Duration::from_secs(60), self.events.recv()).await {
            Ok(Some(RuntimeEvent::Exited { terminated, .. })) => terminated,
            other => panic!("expected an exit, got {other:?}"),
        }
    }

    fn log(&self, p: &Pod) -> String {
        std::fs::read_to_string(self.rt.log_path(&uid(p), "c", 0)).unwrap_or_default()
    }

    async fn wait_for_log(&self, p: &Pod, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log(p).contains(text) {
            assert!(
                Instant::now() < deadline,
                "log never showed {text:?}: {}",
                self.log(p)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Removes the pod and checks nothing of it is left: no pod or sandbox directory, no
    /// runtime record, no cgroup, no mount.
    async fn cleanup_and_check(&self, p: &Pod) {
        let uid = uid(p);
        self.rt.cleanup(&uid).await.expect("cleanup");
        self.sandboxes.teardown(&uid).await.expect("teardown");
        let data = self.dir.path().join(self.class);
        assert!(!data.join("pods").join(&uid).exists(), "pod dir left");
        assert!(
            !self.dir.path().join("sandboxes").join(&uid).exists(),
            "sandbox left"
        );
        let ids: Vec<String> = std::fs::read_dir(data.join("state"))
            .expect("state dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| is_of_pod(id, &uid))
            .collect();
        assert!(ids.is_empty(), "runtime records left: {ids:?}");
        for entry in std::fs::read_dir("/sys/fs/cgroup")
            .expect("cgroups")
            .flatten()
        {
            let left = entry.path().join("kumo").join(&uid);
            assert!(!left.exists(), "cgroup left: {}", left.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&uid), "mount left");
    }
}

fn host_cap_eff() -> String {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .map(|l| l["CapEff:".len()..].trim().to_string())
        .expect("CapEff")
}

fn field<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in log: {log}"))
}

const ISOLATION_SCRIPT: &str =
    "echo host=$(hostname); echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); \
     echo procs=$(ls /proc | grep -c '^[0-9]'); grep -E 'CapEff|NoNewPrivs' /proc/self/status; \
     echo kernel=$(cat /proc/version); echo err >&2; exit 3";

async fn isolation(class: &'static str) -> (String, Harness, Pod) {
    let mut h = harness(class);
    let mut p = shell_pod(class, ISOLATION_SCRIPT);
    p.spec.containers[0].security_context = Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        ..Default::default()
    });
    h.started(&p).await;
    let term = h.next_exit().await;
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (3, Some("Error")),
        "{term:?}: {}",
        h.log(&p)
    );
    let state = h.rt.state(&uid(&p));
    let id = state.containers["c"].id.clone().expect("id");
    assert!(
        id.starts_with(&format!("{class}://{}_c_0", uid(&p))),
        "{id}"
    );
    (h.log(&p), h, p)
}

#[tokio::test]
async fn runc_isolates_a_container() {
    let (log, h, p) = isolation("runc").await;
    assert_eq!(field(&log, "host="), "p");
    assert!(
        field(&log, "pid1=").starts_with("sh -c echo host="),
        "{log}"
    );
    let procs: u32 = field(&log, "procs=").parse().expect("count");
    assert!(procs <= 4, "host processes visible: {log}");
    let cap_eff = field(&log, "CapEff:");
    assert_ne!(cap_eff, host_cap_eff(), "CapEff not reduced");
    // The 14 default capabilities (containerd's): 0x00000000a80425fb.
    assert_eq!(cap_eff, "00000000a80425fb");
    assert_eq!(field(&log, "NoNewPrivs:"), "1");
    assert!(log.lines().any(|l| l == "err"), "stderr in the log: {log}");
    h.cleanup_and_check(&p).await;
}

#[tokio::test]
async fn runsc_runs_a_container_in_gvisor() {
    let (log, h, p) = isolation("runsc").await;
    assert_eq!(field(&log, "host="), "p");
    assert!(
        field(&log, "pid1=").starts_with("sh -c echo host="),
        "{log}"
    );
    assert!(
        log.contains("kernel=Linux version 4.4.0"),
        "not gVisor's kernel: {log}"
    );
    // gVisor's /proc shows no NoNewPrivs line; its capabilities are reduced all the same.
    assert_ne!(field(&log, "CapEff:"), host_cap_eff(), "CapEff not reduced");
    h.cleanup_and_check(&p).await;
}

#[tokio::test]
async fn runc_ooms_a_memory_hog() {
    let mut h = harness("runc");
    let mut p = shell_pod("runc", "tail /dev/zero");
    p.spec.containers[0]
        .resources
        .limits
        .insert("memory".into(), Quantity::parse("32Mi").expect("q"));
    h.started(&p).await;
    let term = h.next_exit().await;
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (137, Some("OOMKilled")),
        "{term:?}"
    );
    h.cleanup_and_check(&p).await;
}

#[tokio::test]
async fn runc_kill_honours_the_grace_period() {
    let mut h = harness("runc");
    // A handler for TERM: it exits on the first SIGTERM.
    let p = shell_pod(
        "runc",
        "trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done",
    );
    h.started(&p).await;
    h.wait_for_log(&p, "ready").await;
    let t0 = Instant::now();
    h.rt.kill(&uid(&p), "c", Duration::from_secs(20))
        .await
        .expect("kill");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(h.next_exit().await.exit_code, 7);

    // No handler: PID 1 of a namespace ignores SIGTERM, so SIGKILL comes after the grace.
    let q = shell_pod("runc", "echo ready; exec sleep 1000");
    h.started(&q).await;
    h.wait_for_log(&q, "ready").await;
    let t0 = Instant::now();
    let grace = Duration::from_secs(1);
    h.rt.kill(&uid(&q), "c", grace).await.expect("kill");
    let took = t0.elapsed();
    assert!(
        took >= grace && took < grace + Duration::from_secs(3),
        "took {took:?}"
    );
    let term = h.next_exit().await;
    assert_eq!((term.exit_code, term.signal), (137, Some(9)));
    h.cleanup_and_check(&p).await;
    h.cleanup_and_check(&q).await;
}

#[tokio::test]
async fn a_restarted_agent_re_adopts_a_running_runc_container() {
    let mut h = harness("runc");
    let p = shell_pod("runc", "echo ready; exec sleep 1000");
    let pid = h.started(&p).await;
    h.wait_for_log(&p, "ready").await;
    h.rt.shutdown().await;

    let (rt2, mut events2) = open_runtime(h.dir.path(), "runc", h.sandboxes.clone());
    let c = &rt2.state(&uid(&p)).containers["c"];
    assert!(matches!(c.run, RunState::Running { .. }));
    assert_eq!(c.restart_count, 0);
    let adopted = rt2
        .pods()
        .into_iter()
        .find(|r| r.uid == uid(&p))
        .expect("adopted");
    assert_eq!(adopted.key(), "default/p");
    assert!(
        RealSys.start_time(pid).is_some(),
        "the same process still runs"
    );
    // Starting it again is refused: no duplicate.
    assert!(rt2.start(&p, 0).await.is_err());
    rt2.kill(&uid(&p), "c", Duration::from_secs(1))
        .await
        .expect("kill");
    match tokio::time::timeout(Duration::from_secs(30), events2.recv()).await {
        Ok(Some(RuntimeEvent::Exited { terminated, .. })) => {
            assert_eq!(terminated.exit_code, 137)
        }
        other => panic!("expected an exit, got {other:?}"),
    }
    assert_eq!(RealSys.start_time(pid), None);
    h.rt = rt2;
    h.cleanup_and_check(&p).await;
}

#[tokio::test]
async fn bad_containers_leave_nothing_behind() {
    let h = harness("runc");
    // A missing binary: runc's own message, as a StartError.
    let mut p = shell_pod("runc", "");
    p.spec.containers[0].command = vec!["/nonexistent/kumo-binary".into()];
    let StartOutcome::Failed(message) = h.start(&p).await else {
        panic!("started")
    };
    assert!(message.contains("/nonexistent/kumo-binary"), "{message}");
    let t = h.rt.state(&uid(&p)).containers["c"]
        .terminated()
        .cloned()
        .expect("terminated");
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError"))
    );
    let cdir = h.dir.path().join("runc/pods").join(uid(&p)).join("c");
    assert!(!cdir.join("bundle").exists(), "half-made bundle left");
    h.cleanup_and_check(&p).await;

    // runAsNonRoot with a root image: a config error, nothing recorded or made.
    let mut q = shell_pod("runc", "true");
    q.spec.containers[0].security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    assert_eq!(
        h.start(&q).await,
        StartOutcome::ConfigError(
            "container has runAsNonRoot and image will run as root (pod: \"default/p\", container: c)".to_string())
    );
    assert!(h.rt.state(&uid(&q)).is_empty());
    let cdir = h.dir.path().join("runc/pods").join(uid(&q)).join("c");
    assert!(!cdir.join("bundle").exists() && !cdir.join("rootfs").exists());
    h.cleanup_and_check(&q).await;
}

/// A CDI spec installed for the fake GPUs: device "0" by index in the higher-priority directory,
/// device 1 by its UUID in the other; spec-wide edits from both.
fn install_cdi_specs(dir: &Path) {
    let (etc, run) = (dir.join("cdi-etc"), dir.join("cdi-run"));
    for d in [&etc, &run, &dir.join("driver")] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(dir.join("driver/libfake.so.1"), "driver library\n").expect("lib");
    let hook_out = dir.join("hook-ran");
    std::fs::write(
        etc.join("nvidia.yaml"),
        format!(
            r#"cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    env: [GPU0=etc]
- name: fake-gpu-1
  containerEdits:
    env: [GPU1=by-uuid]
    deviceNodes: [{{path: /dev/kumo-gpu1, hostPath: /dev/full}}]
containerEdits:
  env: [FROM_SPEC=1, NVIDIA_VISIBLE_DEVICES=void]
  deviceNodes: [{{path: /dev/kumo-ctl, hostPath: /dev/zero, permissions: rw}}]
  mounts:
  - {{hostPath: {lib}, containerPath: /usr/lib/kumo/libfake.so.1, options: [ro, nosuid, nodev, bind]}}
  hooks:
  - {{hookName: createRuntime, path: /bin/sh, args: [sh, -c, "cat > {hook}"]}}
"#,
            lib = dir.join("driver/libfake.so.1").display(),
            hook = hook_out.display()
        ),
    )
    .expect("spec");
    std::fs::write(
        run.join("override.json"),
        r#"{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
            "devices": [{"name": "0", "containerEdits": {"env": ["GPU0=run"],
                "deviceNodes": [{"path": "/dev/kumo-gpu0", "hostPath": "/dev/null"}]}}]}"#,
    )
    .expect("override");
    // Neither a broken spec nor another vendor's gets in the way.
    std::fs::write(run.join("broken.yaml"), "cdiVersion: [").expect("broken");
    std::fs::write(
        run.join("other.json"),
        r#"{"cdiVersion": "0.5.0", "kind": "example.com/fpga", "devices": [{"name": "0"}]}"#,
    )
    .expect("other vendor");
}

#[tokio::test]
async fn runc_gives_gpus_what_the_cdi_spec_says() {
    let mut h = harness("runc");
    install_cdi_specs(h.dir.path());
    let script = "echo env: GPU0=$GPU0 GPU1=$GPU1 FROM_SPEC=$FROM_SPEC \
        NVIDIA=$NVIDIA_VISIBLE_DEVICES CUDA=$CUDA_VISIBLE_DEVICES; \
        echo lib: $(cat /usr/lib/kumo/libfake.so.1); \
        touch /usr/lib/kumo/libfake.so.1 2>/dev/null && echo lib-writable; \
        echo dev: $(ls /dev/kumo-gpu0 /dev/kumo-gpu1 /dev/kumo-ctl | tr '\\n' ' '); \
        echo x > /dev/kumo-gpu0 && echo wrote-gpu0; \
        head -c 4 /dev/kumo-ctl | wc -c; echo done";
    let mut p = shell_pod("runc", script);
    gpus(&mut p, "0,1");
    h.started(&p).await;
    assert_eq!(h.next_exit().await.exit_code, 0, "{}", h.log(&p));
    let log = h.log(&p);
    assert_eq!(
        field(&log, "env:"),
        "GPU0=run GPU1=by-uuid FROM_SPEC=1 NVIDIA=0,1 CUDA=fake-gpu-0,fake-gpu-1"
    );
    assert_eq!(field(&log, "lib:"), "driver library");
    assert!(!log.contains("lib-writable"), "{log}");
    assert_eq!(
        field(&log, "dev:"),
        "/dev/kumo-ctl /dev/kumo-gpu0 /dev/kumo-gpu1"
    );
    assert!(log.contains("wrote-gpu0\n4\ndone"), "{log}");
    let state = std::fs::read_to_string(h.dir.path().join("hook-ran")).expect("hook ran");
    assert!(
        state.contains(&uid(&p)),
        "the hook got the container's state: {state}"
    );
    h.cleanup_and_check(&p).await;

    // A device no spec names fails clearly and leaves nothing behind.
    let mut q = shell_pod("runc", "true");
    gpus(&mut q, "2");
    let StartOutcome::Failed(message) = h.start(&q).await else {
        panic!("started")
    };
    assert!(
        message.starts_with("no CDI device nvidia.com/gpu=2 ("),
        "{message}"
    );
    h.cleanup_and_check(&q).await;

    // A container that asks for no GPU gets none, whatever its environment says.
    let mut r = shell_pod("runc", "echo env: GPU0=$GPU0; ls /dev | grep -c kumo-");
    gpus(&mut r, "0");
    r.spec.containers[0].resources = Default::default();
    h.started(&r).await;
    h.next_exit().await;
    let log = h.log(&r);
    assert_eq!(field(&log, "env:"), "GPU0=");
    assert!(log.ends_with("0\n"), "{log}");
    h.cleanup_and_check(&r).await;
}

/// The container as the agent starts one given `devices`: a GPU request and the allocator's
/// `NVIDIA_VISIBLE_DEVICES`.
fn gpus(p: &mut Pod, devices: &str) {
    let c = &mut p.spec.containers[0];
    let n = devices.split(',').count();
    c.resources =
        serde_json::from_value(serde_json::json!({"limits": {"nvidia.com/gpu": n.to_string()}}))
            .expect("resources");
    c.env = vec![kumo_api::pod::EnvVar {
        name: "NVIDIA_VISIBLE_DEVICES".into(),
        value: devices.into(),
    }];
}
