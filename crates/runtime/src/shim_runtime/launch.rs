//! Starting a shim and reading its handshake (the container's pid, or why it did not start).
//!
//! Shims are started ahead: two wait (`kumo shim-standby`) until containers need them, each then
//! getting its container's job on stdin; the next ones are started once the handshake is in (two,
//! as pods often start in pairs: a slot's end frees a slot, a gang has replicas). A start that
//! finds none waiting (the first, or a burst) starts its own the same way.

use super::ShimRuntime;
use crate::shim::{parse_handshake, Handshake, ShimArgs, ShimJob};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::Child;

/// The rest of a shim's stdout after its handshake (where it says `exited`).
pub(super) type ShimOutput = Lines<BufReader<tokio::process::ChildStdout>>;

/// How long a shim may take to report the container's pid.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run a shim that waits for its job: normally `<kumo> shim-standby`.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    pub program: PathBuf,
    /// Its arguments (`["shim-standby"]` for the kumo binary).
    pub args: Vec<OsString>,
    /// Its own environment (none for the kumo binary; test harnesses that run the shim
    /// in-process mark it here). A container's environment comes with its job.
    pub env: Vec<(OsString, OsString)>,
}

impl ShimCommand {
    /// `<exe> shim-standby --data-dir DIR`: the kumo binary's hidden subcommand, naming the
    /// agent's data directory so that `ps` tells whose shim it is.
    pub fn kumo(exe: &Path, data_dir: &Path) -> Self {
        ShimCommand {
            program: exe.to_path_buf(),
            args: vec!["shim-standby".into(), "--data-dir".into(), data_dir.into()],
            env: Vec::new(),
        }
    }

    /// Starts a shim that waits for its job, in a process group of its own.
    fn start(&self) -> Result<Child, String> {
        tokio::process::Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("start shim {}: {e}", self.program.display()))
    }
}

/// The shims started ahead. Dropping one closes its stdin: it ends without a job.
#[derive(Default)]
pub(super) struct Standby(std::sync::Mutex<Vec<Child>>);

/// How many shims wait ahead.
const STANDBY: usize = 2;

impl Standby {
    /// A waiting shim that is still alive, if any.
    fn take(&self) -> Option<Child> {
        let mut waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut child) = waiting.pop() {
            if matches!(child.try_wait(), Ok(None)) {
                return Some(child);
            }
        }
        None
    }

    /// The waiting shims' pids (for tests).
    #[cfg(test)]
    pub(super) fn pids(&self) -> Vec<u32> {
        let waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        waiting.iter().filter_map(Child::id).collect()
    }

    /// Ends the waiting shims and reaps them (the agent is stopping: nothing of it is left
    /// behind once it has stopped).
    pub(super) async fn release(&self) {
        let waiting = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for mut child in waiting {
            let _ = child.start_kill();
            // A killed process that did nothing is gone within milliseconds; the bound is only
            // against a stuck kernel.
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
        }
    }

    /// Starts shims ahead until enough wait.
    fn refill(&self, shim: &ShimCommand) {
        let mut waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while waiting.len() < STANDBY {
            match shim.start() {
                Ok(child) => waiting.push(child),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot start a shim ahead");
                    break;
                }
            }
        }
    }
}

impl ShimRuntime {
    pub(super) async fn spawn_shim(
        &self,
        args: &ShimArgs,
        env: &[(String, String)],
        cwd: &Path,
    ) -> Result<(Child, Handshake, ShimOutput), String> {
        let job = ShimJob {
            argv: args
                .to_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: env.to_vec(),
            cwd: cwd.to_path_buf(),
        };
        let mut line = serde_json::to_string(&job).map_err(|e| e.to_string())?;
        line.push('\n');
        let shim = &self.inner.shim;
        let waiting = match self.inner.standby.take() {
            Some(mut child) => match give_job(&mut child, &line).await {
                Ok(()) => Some(child),
                // It died while waiting and cannot take the job: a fresh one does.
                Err(_) => {
                    let _ = child.start_kill();
                    None
                }
            },
            None => None,
        };
        let mut child = match waiting {
            Some(child) => child,
            None => {
                let mut fresh = shim.start()?;
                give_job(&mut fresh, &line).await?;
                fresh
            }
        };
        let stdout = child.stdout.take().ok_or("shim has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(h) = parse_handshake(&line) {
                    return Some(h);
                }
            }
            None
        };
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, read).await;
        // The next containers' shims load while this one runs. Starting a process from the
        // agent (a fork of a large process) takes a millisecond or more: not on this start's
        // path, nor on an async worker.
        let rt = self.clone();
        tokio::task::spawn_blocking(move || rt.inner.standby.refill(&rt.inner.shim));
        match handshake {
            Ok(Some(h)) => Ok((child, h, lines)),
            Ok(None) => {
                let _ = child.wait().await;
                Err("the shim exited without starting the container".to_string())
            }
            Err(_) => {
                let _ = child.start_kill();
                Err(format!(
                    "the shim did not report the container's pid within {HANDSHAKE_TIMEOUT:?}"
                ))
            }
        }
    }
}

/// Writes the job to a waiting shim and closes its stdin.
async fn give_job(child: &mut Child, line: &str) -> Result<(), String> {
    let mut stdin = child.stdin.take().ok_or("shim has no stdin")?;
    stdin
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("give the shim its job: {e}"))
}
