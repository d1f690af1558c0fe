//! Starting a shim and reading its handshake (the container's pid, or why it did not start).

use super::ProcessRuntime;
use crate::shim::{parse_handshake, Handshake, ShimArgs};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::Lines;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The rest of a shim's stdout after its handshake (where it says `exited`).
pub(super) type ShimOutput = Lines<BufReader<tokio::process::ChildStdout>>;

/// How long a shim may take to report the container's pid.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the shim: normally `<kumo> shim ARGS`.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    pub program: PathBuf,
    /// Arguments before the shim's own (`["shim"]` for the kumo binary).
    pub leading_args: Vec<OsString>,
    /// When set, the shim's own arguments travel JSON-encoded in this environment variable
    /// instead of on the command line (for test harnesses that run the shim in-process).
    pub argv_env: Option<String>,
}

impl ShimCommand {
    /// `<exe> shim ...`: the kumo binary's hidden subcommand.
    pub fn kumo(exe: &Path) -> Self {
        ShimCommand {
            program: exe.to_path_buf(),
            leading_args: vec!["shim".into()],
            argv_env: None,
        }
    }
}

impl ProcessRuntime {
    pub(super) async fn spawn_shim(
        &self,
        args: &ShimArgs,
        env: &[(String, String)],
        cwd: &Path,
    ) -> Result<(tokio::process::Child, Handshake, ShimOutput), String> {
        let shim = &self.inner.shim;
        let mut cmd = tokio::process::Command::new(&shim.program);
        cmd.args(&shim.leading_args);
        cmd.env_clear();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        match &shim.argv_env {
            None => {
                cmd.args(args.to_args());
            }
            Some(var) => {
                let argv: Vec<String> = args
                    .to_args()
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                cmd.env(
                    var,
                    serde_json::to_string(&argv).map_err(|e| e.to_string())?,
                );
            }
        }
        cmd.current_dir(cwd)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start shim {}: {e}", shim.program.display()))?;
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
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, read).await {
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
