//! The shim's OCI mode: `<runtime> create` and `start` a bundle (runc: `run --detach`, the same
//! in one runtime process), wait for the container as its subreaper, tell an OOM kill, `delete`
//! it, and record how it ended.
//!
//! Why create/start (or a detached run) rather than `<runtime> run` in the foreground: once
//! `create` (or `run --detach`) returns, the container's init (runc) or sandbox (runsc) is re-parented to the shim (a child subreaper), so
//! the shim `waitpid`s the container itself and gets its true status (a signal stays a signal),
//! while its stdout and stderr are the log file itself (the runtime hands its own stdio to the
//! container), so logs outlive the shim. Killing goes through `<runtime> kill` from the agent.

use super::{handshake, ShimArgs};
use crate::cgroup::parse_oom_kills;
use crate::record::{write_json, ExitRecord};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs the shim in OCI mode to the end of its container; returns the shim's exit code.
pub(super) fn run(args: &ShimArgs, runtime: &Path) -> u8 {
    let oci = Oci {
        runtime,
        global: &args.runtime_args,
        id: args.id.as_deref().unwrap_or_default(),
        bundle: args.bundle.clone().unwrap_or_default(),
    };
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let pid = match oci.start(args) {
        Ok(pid) => pid,
        Err(message) => {
            oci.delete();
            handshake(&format!("error {message}"));
            let rec = ExitRecord {
                code: None,
                signal: None,
                start_error: Some(message),
                oom_killed: false,
                finished_at: chrono::Utc::now(),
            };
            return if write_json(&args.exit_file, &rec).is_ok() {
                1
            } else {
                2
            };
        }
    };
    handshake(&format!("pid {pid}"));
    let (code, signal) = wait_for(pid);
    let oom_killed = args.cgroups.iter().any(|dir| oom_kills(dir) > 0);
    let rec = ExitRecord {
        code,
        signal,
        start_error: None,
        oom_killed,
        finished_at: chrono::Utc::now(),
    };
    let written = write_json(&args.exit_file, &rec);
    // The exit is recorded: the runtime's bookkeeping (`delete`, which takes runsc seconds) must
    // not delay the agent, which learns of the exit when this shim ends.
    oci.delete_detached();
    match written {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

struct Oci<'a> {
    runtime: &'a Path,
    global: &'a [String],
    id: &'a str,
    bundle: PathBuf,
}

impl Oci<'_> {
    fn command(&self) -> Command {
        let mut cmd = Command::new(self.runtime);
        cmd.args(self.global);
        cmd
    }

    fn runtime_log(&self) -> PathBuf {
        self.bundle.join("runtime.log")
    }

    /// `create` (the container's stdio is the log file), then `start`, or both in one
    /// `run --detach` when `args.run_detached`; the container's pid.
    fn start(&self, args: &ShimArgs) -> Result<i32, String> {
        let name = self.runtime.display().to_string();
        let (log, log2) = super::open_log(&args.log_file)?;
        let runtime_log = self.runtime_log();
        let _ = std::fs::remove_file(&runtime_log);
        let (verb, verb_args): (&str, &[&str]) = if args.run_detached {
            ("run", &["run", "--detach"])
        } else {
            ("create", &["create"])
        };
        let status = self
            .command()
            .arg("--log")
            .arg(&runtime_log)
            .arg("--log-format=json")
            .args(verb_args)
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--pid-file")
            .arg(&args.pid_file)
            .arg(self.id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|e| format!("exec {name}: {e}"))?;
        if !status.success() {
            return Err(runtime_error(&runtime_log)
                .unwrap_or_else(|| format!("{name} {verb} failed ({status})")));
        }
        let pid = std::fs::read_to_string(&args.pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
            .ok_or_else(|| format!("{name} {verb} wrote no pid file"))?;
        if args.run_detached {
            // Started already; if it has ended, its zombie waits for this subreaper.
            return Ok(pid);
        }
        let out = self
            .command()
            .arg("--log")
            .arg(&runtime_log)
            .arg("--log-format=json")
            .args(["start", self.id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("exec {name}: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(runtime_error(&runtime_log)
                .or((!stderr.is_empty()).then_some(stderr))
                .unwrap_or_else(|| format!("{name} start failed ({})", out.status)));
        }
        Ok(pid)
    }

    /// `delete --force` in a process of its own that outlives the shim.
    fn delete_detached(&self) {
        if self.id.is_empty() {
            return;
        }
        use std::os::unix::process::CommandExt;
        let _ = self.delete_command().process_group(0).spawn();
    }

    /// `delete --force`: removes the runtime's record (and cgroups) of the container.
    fn delete(&self) {
        if self.id.is_empty() {
            return;
        }
        let _ = self.delete_command().status();
    }

    /// `<runtime> delete --force ID`, quiet.
    fn delete_command(&self) -> Command {
        let mut c = self.command();
        c.args(["delete", "--force", self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

/// Waits for `pid` (re-parented to this subreaper), reaping any other orphan on the way
/// (runsc's gofer); returns its exit code or killing signal.
fn wait_for(pid: i32) -> (Option<i32>, Option<i32>) {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == Pid::from_raw(pid) => {
                return (Some(code), None)
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == Pid::from_raw(pid) => {
                return (None, Some(sig as i32))
            }
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
    }
    // Not our child after all (no subreaper): follow it until it is gone; its status is lost.
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (None, None)
}

/// The OOM-kill counter of a memory cgroup directory (0 when unreadable).
fn oom_kills(dir: &Path) -> u64 {
    ["memory.oom_control", "memory.events"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .find_map(|t| parse_oom_kills(&t))
        .unwrap_or(0)
}

/// The last error the runtime logged (`--log-format=json`: one JSON object per line).
pub fn runtime_error(log: &Path) -> Option<String> {
    last_error(&std::fs::read_to_string(log).ok()?)
}

/// The message of the last `error` or `fatal` line of a JSON log. Pure.
pub fn last_error(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(|m| m.trim().to_string()))
        .rfind(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_logged_error_is_the_message() {
        let log = r#"{"level":"warning","msg":"cgroup: x","time":"t"}
{"level":"error","msg":"runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH","time":"t"}
not json
{"level":"info","msg":"later","time":"t"}"#;
        assert_eq!(
            last_error(log).as_deref(),
            Some("runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH")
        );
        assert_eq!(last_error("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }
}
