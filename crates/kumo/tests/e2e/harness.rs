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
            child: None,
            args,
            listen: "127.0.0.1:0".into(),
        };
        c.launch();
        c
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config")
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
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("kumo {:?} exited before listening: {status:?}", self.args);
                }
            }
        };
        // Keep draining stdout so kumo never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.listen = url.trim_start_matches("http://").to_string();
        self.url = url;
        let tokens = std::fs::read_to_string(self.data_dir().join("tokens")).expect("tokens file");
        self.token = tokens.lines().next().expect("a token").trim().to_string();
        // `kumo server` writes no client config (only `kumo up` does): write one for the CLI.
        if !self.config_path().exists() {
            ClientConfig {
                server: self.url.clone(),
                token: self.token.clone(),
            }
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

    pub fn client(&self) -> Client {
        Client::new(&ClientConfig {
            server: self.url.clone(),
            token: self.token.clone(),
        })
        .expect("client")
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
        kill_processes_under(self.dir.path());
        remove_cgroups_under(self.dir.path());
    }
}

/// Removes the cgroups of every pod an agent under `dir` ran (their uids name the pod state dirs).
pub fn remove_cgroups_under(dir: &Path) {
    let cgroups = kumo_agent::cgroup::Cgroups::detect(Path::new("/sys/fs/cgroup"));
    for pods in [dir.join("data/agent/pods"), dir.join("agent/pods")] {
        for entry in std::fs::read_dir(pods).into_iter().flatten().flatten() {
            cgroups.remove_pod(&entry.file_name().to_string_lossy());
        }
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
                signal(-pid, nix::sys::signal::Signal::SIGKILL);
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
