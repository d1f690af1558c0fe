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

/// The control plane's leader-elected loops, by their Lease's name in `kumo-system`, sorted
/// (`crates/kumo/src/daemon`: `start_control_plane` and the blob collector).
pub const LOOPS: [&str; 7] = [
    "kumo-apps-controller",
    "kumo-blob-gc",
    "kumo-event-ttl-controller",
    "kumo-mltask-controller",
    "kumo-node-ipam-controller",
    "kumo-node-lifecycle-controller",
    "kumo-scheduler",
];

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
        Self::start_on(args, "127.0.0.1:0")
    }

    /// Any daemon subcommand, its API server listening on `listen`.
    pub fn start_on(args: Vec<String>, listen: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = Cluster {
            dir,
            url: String::new(),
            token: String::new(),
            ca_pem: String::new(),
            banner: Vec::new(),
            child: None,
            args,
            listen: listen.into(),
        };
        c.launch();
        c
    }

    /// A daemon subcommand on a data dir that starts as a copy of `seed` (another server's, for
    /// a second server of one control plane: its CA, keys and tokens), without its audit log.
    pub fn start_seeded(args: Vec<String>, seed: &Path) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_tree(seed, &dir.path().join("data"));
        let _ = std::fs::remove_file(dir.path().join("data").join("audit.log"));
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
            ..Default::default()
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

/// Copies a directory tree, keeping each file's and directory's mode (secrets stay 0600 in
/// 0700 directories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
    let mode = std::fs::metadata(from).expect("metadata").permissions();
    std::fs::set_permissions(to, mode).expect("set mode");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill9();
        let node = test_node(self.dir.path(), Default::default());
        let scope = kumo_runtime::down::PodScope::Recorded;
        kumo_runtime::down::stop(&node, scope);
        teardown_networks_under(self.dir.path(), &self.args);
        kumo_runtime::down::release(&node, scope);
    }
}

/// Everything of the test's under `dir` as one node for `kumo down`'s library: the cluster's
/// own processes and every agent's (their command lines or working directories name `dir`),
/// the pod cgroups of the pods recorded under it, the mounts under it.
pub fn test_node(
    dir: &Path,
    cgroup_parent: kumo_runtime::cgroup_parent::CgroupParent,
) -> kumo_runtime::down::Node {
    kumo_runtime::down::Node {
        data_dir: dir.to_path_buf(),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        cgroup_parent,
    }
}

/// A bridge and pod CIDR of this test process's own (the default kumo0 and 10.88.0.0/16 stay free).
pub struct TestNet {
    /// The slot number N: bridge `ktN`, CIDR `10.124.N.0/24` (and `10.125.N.0/24` for a
    /// [`crate::multinode::MultiNode`]'s datacenter bridge).
    pub slot: u32,
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
                    slot: n,
                    bridge: format!("kt{n}"),
                    cidr: format!("10.124.{n}.0/24"),
                };
            }
        }
        panic!("no free test network slot under /tmp/kumo-testnet");
    }
}

/// Tears down the pod networks an agent under `dir` left behind (it was killed, not drained),
/// and deletes the test bridge: `kumo down`'s network part.
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
    let mut states: Vec<PathBuf> = [dir.join("data/agent/net"), dir.join("agent/net")]
        .into_iter()
        .filter(|s| s.exists())
        .collect();
    if states.is_empty() {
        // The bridge and chain may be there without state (a crash before the first record).
        states.push(dir.join("no-net-state"));
    }
    for state in states {
        let mut config = kumo_net::NetworkConfig::new(state);
        config.bridge = bridge.clone();
        config.pod_cidr = cidr.clone();
        network_down(config, Vec::new());
    }
}

/// `kumo down`'s network part for one node, from a test's (possibly async) context.
pub fn network_down(config: kumo_net::NetworkConfig, links: Vec<String>) -> Vec<String> {
    // Drop may run inside a test's runtime: block on a thread of its own.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let down = rt.block_on(kumo_net::down::down(config, &links));
        for f in &down.failed {
            eprintln!("network teardown: {f}");
        }
        Some(down.removed.iter().map(ToString::to_string).collect())
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Mount points under `dir` (for leak checks).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    kumo_runtime::down::mounts_under(dir)
        .into_iter()
        .map(|p| p.display().to_string())
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

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
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

/// Runs `kumo ARGS` (a server that must not start) and returns its stderr; fails if it is still
/// running after 30 s.
pub fn refused_start(dir: &std::path::Path, args: &[&str]) -> String {
    let child = std::process::Command::new(kumo_exe())
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kumo");
    expect_refusal(child, &format!("kumo {args:?}"))
}

/// Waits (at most 30 s) for `child`, started with its stderr piped, to exit unsuccessfully, and
/// returns its stderr; fails if it succeeded or still runs. The pause between looks at the
/// process is a poll on its exit with a deadline.
pub fn expect_refusal(mut child: std::process::Child, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            assert!(!status.success(), "{what} started: {err}");
            return err;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} was still running after 30s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes namespaces `w-0`, `w-1`, … one after another until a create fails, as a crash test's
/// load: each name goes into the returned list once the server acknowledged it, and the
/// returned `Notify` fires when `enough` are.
pub fn write_namespaces_until_refused(
    client: Client,
    enough: usize,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::sync::Arc<tokio::sync::Notify>,
    tokio::task::JoinHandle<()>,
) {
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reached = std::sync::Arc::new(tokio::sync::Notify::new());
    let (list, notify) = (acked.clone(), reached.clone());
    let writer = tokio::spawn(async move {
        for i in 0.. {
            let ns = kumo_api::Namespace {
                metadata: kumo_api::ObjectMeta::named(None, &format!("w-{i}")),
                ..Default::default()
            };
            if client.create(&ns).await.is_err() {
                return;
            }
            let mut a = list.lock().unwrap();
            a.push(ns.metadata.name);
            if a.len() == enough {
                notify.notify_one();
            }
        }
    });
    (acked, reached, writer)
}

/// Fails naming every acknowledged namespace in `acked` that `client` does not list.
pub async fn assert_no_acknowledged_write_lost(client: &Client, acked: &[String]) {
    let names: std::collections::BTreeSet<String> = client
        .list::<kumo_api::Namespace>(None, &ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
