//! Starts `kumo up` in a temp dir on a free port, drives it, and leaves nothing behind.

use kumo_api::Pod;
use kumo_client::{Client, ClientConfig, ListParams, Watched};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The kumo binary under test.
pub fn kumo_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kumo"))
}

/// One `kumo up` (or `kumo server`) and its temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    /// The cluster CA's certificate (PEM), from `<data>/pki/ca.crt`.
    pub ca_pem: String,
    /// What kumo printed before its API server line (e.g. `kumo: router listening on ...`).
    pub banner: Vec<String>,
    child: Option<Child>,
    args: Vec<String>,
    listen: String,
}

impl Cluster {
    /// `kumo up` with test-friendly defaults (fast back-off) plus `extra` flags.
    pub fn up(extra: &[&str]) -> Cluster {
        let mut args: Vec<String> = [
            "up",
            "--node-name",
            "node-1",
            "--backoff-base",
            "200ms",
            "--heartbeat-interval",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Each cluster gets its own bridge and pod CIDR: tests run side by side.
        let net = TestNet::next();
        args.extend([
            "--pod-bridge".to_string(),
            net.bridge,
            "--pod-cidr".to_string(),
            net.cidr,
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_with(args)
    }

    /// Any daemon subcommand (`server ...`).
    pub fn start_with(args: Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Cluster {
            dir,
            url: String::new(),
            token: String::new(),
            ca_pem: String::new(),
            banner: Vec::new(),
            child: None,
            args,
            listen: "127.0.0.1:0".into(),
        };
        c.launch();
        c
    }

    /// The pod bridge this cluster's agent uses.
    pub fn bridge(&self) -> String {
        let i = self
            .args
            .iter()
            .position(|a| a == "--pod-bridge")
            .expect("a test bridge");
        self.args[i + 1].clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The cluster CA's certificate file (what `kumo agent --ca-file` takes).
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("pki").join("ca.crt")
    }

    /// A client config for this cluster, trusting its CA.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            server: self.url.clone(),
            token: self.token.clone(),
            certificate_authority_data: None,
        }
        .with_ca_pem(&self.ca_pem)
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(kumo_exe());
        cmd.args(&self.args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(&self.listen)
            .env("KUMO_CONFIG", self.config_path())
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn kumo");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("kumo: API server listening on ") {
                        break url.trim().to_string();
                    }
                    self.banner.push(line);
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("kumo {:?} exited before listening: {status:?}", self.args);
                }
            }
        };
        // Keep draining stdout so kumo never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.listen = url.trim_start_matches("https://").to_string();
        self.url = url;
        // Both `kumo up` and `kumo server` write the admin's client config into the data dir.
        let admin =
            ClientConfig::load(&self.data_dir().join("admin.config")).expect("admin.config");
        self.token = admin.token;
        self.ca_pem = std::fs::read_to_string(self.ca_file()).expect("the cluster CA");
        // `kumo server` writes no client config (only `kumo up` does): write one for the CLI,
        // with the CA from the data dir.
        if !self.config_path().exists() {
            self.client_config()
                .save(&self.config_path())
                .expect("client config");
        }
        self.child = Some(child);
    }

    /// Stops kumo with SIGTERM (as Ctrl-C) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            signal(pid, nix::sys::signal::Signal::SIGTERM);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            if rx.recv_timeout(Duration::from_secs(20)).is_err() {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                panic!("kumo did not stop within 20s of SIGTERM");
            }
        }
    }

    /// Kills kumo with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts kumo again on the same data dir and port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Starts kumo again after `kill9`.
    pub fn relaunch(&mut self) {
        self.launch();
    }

    /// Starts kumo again (after `stop`) on the same data dir and port with `extra` flags added.
    pub fn relaunch_with(&mut self, extra: &[&str]) {
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.launch();
    }

    pub fn client(&self) -> Client {
        Client::new(&self.client_config()).expect("client")
    }

    /// A new single-use join token (`kumo token create NAME --join`), from the join command
    /// the CLI prints.
    pub fn join_token(&self) -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("join-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let out = self.kumo(&["token", "create", &name, "--join", "--ttl", "1h"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kumo token create --join: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.split_whitespace()
            .skip_while(|w| *w != "--join")
            .nth(1)
            .unwrap_or_else(|| panic!("no join command in {text:?}"))
            .to_string()
    }

    /// Runs the CLI against this cluster (through the client config kumo up wrote).
    pub fn kumo(&self, args: &[&str]) -> Output {
        self.kumo_stdin(args, None)
    }

    pub fn kumo_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(kumo_exe())
            .args(args)
            .env("KUMO_CONFIG", self.config_path())
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kumo cli");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kumo cli output")
    }

    /// Writes `manifest` to `file` in the temp dir and runs `kumo apply -f` on it; panics with
    /// the CLI's stderr if that fails.
    pub fn apply(&self, file: &str, manifest: &str) {
        let path = self.write(file, manifest);
        let out = self.kumo(&["apply", "-f", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "kumo apply -f {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Labels namespace `ns` (made if missing) with the `privileged` Pod Security Standards
    /// level, as a test that runs process or host-path pods outside `kumo up`'s `default` needs.
    pub fn privileged_namespace(&self, ns: &str) {
        self.apply(
            &format!("ns-{ns}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n"
            ),
        );
    }

    /// Writes a file into the temp dir and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill9();
        kill_containers_under(self.dir.path());
        kill_processes_under(self.dir.path());
        teardown_networks_under(self.dir.path(), &self.args);
        unmount_under(self.dir.path());
        remove_cgroups_under(self.dir.path());
    }
}

/// A bridge and pod CIDR of this test process's own (the default kumo0 and 10.88.0.0/16 stay free).
pub struct TestNet {
    pub bridge: String,
    pub cidr: String,
}

impl TestNet {
    /// Claims a free slot: test processes of several checkouts may run at once, so each slot is
    /// a file under /tmp/kumo-testnet locked (flock) for the life of the test process.
    pub fn next() -> TestNet {
        static HELD: std::sync::Mutex<Vec<nix::fcntl::Flock<std::fs::File>>> =
            std::sync::Mutex::new(Vec::new());
        let dir = Path::new("/tmp/kumo-testnet");
        std::fs::create_dir_all(dir).expect("testnet slot dir");
        let mut held = HELD.lock().unwrap();
        for n in 1..250u32 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(n.to_string()))
                .expect("open testnet slot");
            // A slot this process already holds is refused too: flock locks are per open file.
            if let Ok(lock) =
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                held.push(lock);
                return TestNet {
                    bridge: format!("kt{n}"),
                    cidr: format!("10.124.{n}.0/24"),
                };
            }
        }
        panic!("no free test network slot under /tmp/kumo-testnet");
    }
}

/// Tears down the pod networks an agent under `dir` left behind (it was killed, not drained),
/// and deletes the test bridge.
pub fn teardown_networks_under(dir: &Path, args: &[String]) {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(bridge), Some(cidr)) = (flag("--pod-bridge"), flag("--pod-cidr")) else {
        return;
    };
    for state in [dir.join("data/agent/net"), dir.join("agent/net")] {
        if !state.exists() {
            continue;
        }
        let mut config = kumo_net::NetworkConfig::new(state);
        config.bridge = bridge.clone();
        config.pod_cidr = cidr.clone();
        if let Ok(nets) = kumo_net::PodNetworks::new(config) {
            // Drop may run inside a test's runtime: block on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(nets.cleanup_orphans(&Default::default())).ok()
            })
            .join();
        }
    }
    let _ = Command::new("ip")
        .args(["link", "del", &bridge])
        .stderr(Stdio::null())
        .status();
}

/// Unmounts everything mounted under `dir` (container root filesystems, netns files), deepest first.
pub fn unmount_under(dir: &Path) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mount points under `dir` (for leak checks).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Mount points under `dir` that belong to pods: all but the namespace files of the agent's
/// warm pool of pod networks (`--pod-network-pool`), which belong to no pod.
pub fn pod_mounts_under(dir: &Path) -> Vec<String> {
    mounts_under(dir)
        .into_iter()
        .filter(|p| {
            !Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(kumo_net::WARM_PREFIX))
        })
        .collect()
}

/// The uids of the pods an agent under `dir` has state for.
fn pod_uids_under(dir: &Path) -> Vec<String> {
    // Every agent's state under `dir` (the cluster's own, `data/agent`, and the extra agents
    // tests start in dirs of their own, like `agent-n1`): the children of its `pods` and
    // `sandboxes` dirs, per runtime too, are named by pod uid.
    fn walk(dir: &Path, depth: usize, uids: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "pods" || name == "sandboxes" {
                for pod in std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let uid = pod.file_name().to_string_lossy().to_string();
                    if uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                        uids.push(uid);
                    }
                }
            } else if depth > 0 {
                walk(&entry.path(), depth - 1, uids);
            }
        }
    }
    let mut uids = Vec::new();
    walk(dir, 3, &mut uids);
    uids.sort();
    uids.dedup();
    uids
}

/// Kills the processes in the cgroups of this cluster's pods: OCI containers run in their own
/// mount namespace, so neither their command line nor their directory names the temp dir.
pub fn kill_containers_under(dir: &Path) {
    for uid in pod_uids_under(dir) {
        let pod = Path::new("/sys/fs/cgroup/pids/kumo").join(&uid);
        let unified = Path::new("/sys/fs/cgroup/kumo").join(&uid);
        for root in [pod, unified] {
            for c in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                let procs =
                    std::fs::read_to_string(c.path().join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    signal(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

/// Removes the cgroups of every pod an agent under `dir` ran (their uids name the pod state
/// dirs), in every hierarchy: runc makes them in all of them.
pub fn remove_cgroups_under(dir: &Path) {
    let uids = pod_uids_under(dir);
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let roots: Vec<PathBuf> = hierarchies
        .flatten()
        .map(|e| e.path().join("kumo"))
        .chain([PathBuf::from("/sys/fs/cgroup/kumo")])
        .collect();
    for root in roots {
        for uid in &uids {
            let pod = root.join(uid);
            for c in std::fs::read_dir(&pod).into_iter().flatten().flatten() {
                if c.path().is_dir() {
                    remove_cgroup(&c.path());
                }
            }
            remove_cgroup(&pod);
        }
    }
}

/// Removes one cgroup. A killed multi-threaded process (a gRPC server) stays in its cgroup
/// until its last thread has exited, so `rmdir` may be refused (EBUSY) for a moment: kill what
/// the cgroup still lists and try again until it is empty, for at most five seconds.
fn remove_cgroup(dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dir.exists() {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {}
            Err(_) => return,
        }
        if std::time::Instant::now() > deadline {
            eprintln!("cgroup {} still busy after 5 s", dir.display());
            return;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::yield_now();
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Kills every process started for this test: shims (their command line names the temp dir)
/// and containers (their working directory is inside it), with their process groups.
pub fn kill_processes_under(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    // SIGKILL takes effect asynchronously: look again until nothing of ours is left.
    for _ in 0..1000 {
        let mut found = false;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) || cwd.starts_with(dir) {
                found = true;
                // Shims and containers lead their own process groups: kill the whole group, but
                // never a group this test process belongs to.
                let own = nix::unistd::getpgrp().as_raw();
                if nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                    .is_ok_and(|g| g.as_raw() == pid && pid != own)
                {
                    signal(-pid, nix::sys::signal::Signal::SIGKILL);
                }
                signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        if !found {
            return;
        }
        std::thread::yield_now();
    }
}

/// Whether a process is alive (not a zombie).
pub fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Waits until `pred` holds for the named pod, following a watch (no polling); panics after `timeout`.
pub async fn wait_pod(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last: Option<Pod> = None;
    let result = tokio::time::timeout_at(deadline, async {
        loop {
            let list = client
                .list::<Pod>(
                    Some(ns),
                    &ListParams::fields(&format!("metadata.name={name}")),
                )
                .await
                .expect("list pods");
            if let Some(p) = list.items.into_iter().next() {
                if pred(&p) {
                    return p;
                }
                last = Some(p);
            }
            let rv = list.metadata.resource_version.unwrap_or_default();
            let Ok(mut w) = client
                .watch::<Pod>(
                    Some(ns),
                    &ListParams::fields(&format!("metadata.name={name}")),
                    &rv,
                )
                .await
            else {
                continue;
            };
            while let Some(Ok(ev)) = w.next().await {
                if let Watched::Added(p) | Watched::Modified(p) = ev {
                    if pred(&p) {
                        return p;
                    }
                    last = Some(p);
                }
            }
        }
    })
    .await;
    match result {
        Ok(p) => p,
        Err(_) => panic!("pod {ns}/{name} did not reach the expected state within {timeout:?}; last seen: {last:#?}"),
    }
}

/// A process pod manifest in YAML.
pub fn process_pod(name: &str, restart: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: process\n  restartPolicy: {restart}\n  containers:\n  - name: main\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n"
    )
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        kumo_api::meta::find_condition(&s.conditions, "Ready")
            .is_some_and(|c| c.status == kumo_api::ConditionStatus::True)
    })
}

/// The pid of a pod's first container, from `containerID: process://PID`.
pub fn container_pid(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .first()?
        .container_id
        .as_deref()?
        .strip_prefix("process://")?
        .parse()
        .ok()
}
