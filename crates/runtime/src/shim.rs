//! The shim: a small supervisor (like conmon) that runs one container process for the agent.
//!
//! The agent starts `kumo shim --exit-file F --log-file L --pid-file P [--cgroup DIR]... -- CMD ARGS`
//! in its own process group, with the container's environment and working directory. The shim
//! spawns the container in a process group of its own (so that signalling the group reaches the
//! container and its children but not the shim), appends its stdout and stderr to the log file,
//! writes its pid to the pid file, tells the agent the pid on stdout (`kumo-shim: pid N` or
//! `kumo-shim: error MSG`), joins it to the cgroups while it waits for it, kills what is left of
//! its group, writes how it ended to the exit file and says `kumo-shim: exited`. Because the shim outlives the agent, a
//! restarted agent still learns the exit status of containers it did not start.
//!
//! With `--runtime` the shim drives an OCI runtime instead (see [`oci`]): `create` then `start`
//! of the bundle, as the containers' subreaper, so it waits for the container itself.
//!
//! The agent keeps one shim started ahead (`kumo shim-standby`, see [`standby`]): it waits for
//! its container's job (arguments, environment, working directory) as one JSON line on stdin,
//! so starting a container does not wait for the kumo binary to load (3-5 ms per container).

use crate::record::{write_json, ExitRecord};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Prefix of the line the shim writes to tell the agent how the start went.
pub const HANDSHAKE_PREFIX: &str = "kumo-shim: ";

/// Arguments of `kumo shim` (internal).
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct ShimArgs {
    /// Where to write how the container ended (JSON)
    #[arg(long)]
    pub exit_file: PathBuf,
    /// The file the container's stdout and stderr are appended to
    #[arg(long)]
    pub log_file: PathBuf,
    /// Where to write the container's pid
    #[arg(long)]
    pub pid_file: PathBuf,
    /// A cgroup directory the container joins (repeatable)
    #[arg(long = "cgroup")]
    pub cgroups: Vec<PathBuf>,
    /// The OCI runtime binary (runc, runsc) that runs the bundle, instead of a command
    #[arg(long)]
    pub runtime: Option<PathBuf>,
    /// A global argument of the OCI runtime, before its subcommand (repeatable)
    #[arg(long = "runtime-arg", allow_hyphen_values = true)]
    pub runtime_args: Vec<String>,
    /// The OCI bundle directory (with `--runtime`)
    #[arg(long, requires = "runtime")]
    pub bundle: Option<PathBuf>,
    /// The OCI container id (with `--runtime`)
    #[arg(long, requires = "runtime")]
    pub id: Option<String>,
    /// Start the bundle with one `run --detach` instead of `create` then `start` (runc)
    #[arg(long, requires = "runtime")]
    pub run_detached: bool,
    /// A volume to bind-mount for a process container, as JSON (repeatable)
    #[arg(long = "bind", value_parser = binds::parse_bind)]
    pub binds: Vec<binds::Bind>,
    /// The container's command and arguments, after `--` (without `--runtime`)
    #[arg(last = true, required_unless_present = "runtime", num_args = 1..)]
    pub command: Vec<String>,
}

impl ShimArgs {
    /// The command line (after the `shim` subcommand) that parses back into these arguments.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = vec![
            "--exit-file".into(),
            self.exit_file.clone().into(),
            "--log-file".into(),
            self.log_file.clone().into(),
            "--pid-file".into(),
            self.pid_file.clone().into(),
        ];
        for c in &self.cgroups {
            out.push("--cgroup".into());
            out.push(c.clone().into());
        }
        if let Some(rt) = &self.runtime {
            out.push("--runtime".into());
            out.push(rt.clone().into());
        }
        for a in &self.runtime_args {
            // `=` keeps a value that starts with `-` from reading as a flag.
            out.push(format!("--runtime-arg={a}").into());
        }
        if let Some(b) = &self.bundle {
            out.push("--bundle".into());
            out.push(b.clone().into());
        }
        if let Some(id) = &self.id {
            out.push("--id".into());
            out.push(id.into());
        }
        if self.run_detached {
            out.push("--run-detached".into());
        }
        for b in &self.binds {
            out.push("--bind".into());
            out.push(serde_json::to_string(b).unwrap_or_default().into());
        }
        if !self.command.is_empty() {
            out.push("--".into());
            out.extend(self.command.iter().map(Into::into));
        }
        out
    }
}

/// What a started-ahead shim is to do: its arguments (as `kumo shim` takes them), and the
/// environment and working directory it would otherwise have been started with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShimJob {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// Arguments of `kumo shim-standby` (internal).
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct StandbyArgs {
    /// The data directory of the agent that started it (shown by `ps`; not used otherwise)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Parser)]
#[command(name = "shim")]
struct ShimCli {
    #[command(flatten)]
    args: ShimArgs,
}

/// `kumo shim-standby`: waits for one job on stdin, then becomes the shim it describes. Ends
/// quietly when stdin closes first (the agent stopped, or let it go).
pub fn standby() -> u8 {
    use clap::Parser as _;
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => return 0,
        Ok(_) => {}
    }
    let job: ShimJob = match serde_json::from_str(&line) {
        Ok(job) => job,
        Err(e) => {
            handshake(&format!("error invalid shim job: {e}"));
            return 2;
        }
    };
    let cli = match ShimCli::try_parse_from(std::iter::once("shim".to_string()).chain(job.argv)) {
        Ok(cli) => cli,
        Err(e) => {
            handshake(&format!("error invalid shim arguments: {e}"));
            return 2;
        }
    };
    // Still one thread: the environment and directory are the shim's as if it had been
    // started with them, for its container and any runtime it runs alike.
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    for (key, value) in &job.env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            handshake(&format!("error invalid environment variable {key:?}"));
            return 2;
        }
        std::env::set_var(key, value);
    }
    if let Err(e) = std::env::set_current_dir(&job.cwd) {
        handshake(&format!(
            "error working directory {}: {e}",
            job.cwd.display()
        ));
        return 2;
    }
    run(cli.args)
}

/// Runs the shim to the end of its container; returns the shim's own exit code.
pub fn run(args: ShimArgs) -> u8 {
    // Terminal signals are for the agent, not for its containers' supervisors. The mask is
    // reset in the container by std's spawn, so the container gets them as usual.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);

    if let Some(runtime) = &args.runtime {
        return oci::run(&args, runtime);
    }
    let entered = if args.binds.is_empty() {
        Ok(())
    } else {
        binds::enter(&args.binds)
    };
    match entered.and_then(|()| spawn(&args)) {
        Ok(child) => supervise(&args, child),
        Err(message) => {
            handshake(&format!("error {message}"));
            let rec = ExitRecord {
                code: None,
                signal: None,
                start_error: Some(message),
                oom_killed: false,
                finished_at: chrono::Utc::now(),
            };
            if write_json(&args.exit_file, &rec).is_err() {
                return 2;
            }
            1
        }
    }
}

/// The container's log file opened for appending, twice (its stdout and its stderr).
fn open_log(path: &std::path::Path) -> Result<(std::fs::File, std::fs::File), String> {
    let err = |e: std::io::Error| format!("open log {}: {e}", path.display());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let log2 = log.try_clone().map_err(err)?;
    Ok((log, log2))
}

fn spawn(args: &ShimArgs) -> Result<std::process::Child, String> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| "no command given".to_string())?;
    let (log, log2) = open_log(&args.log_file)?;
    Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("exec {program:?}: {e}"))
}

fn supervise(args: &ShimArgs, mut child: std::process::Child) -> u8 {
    let pid = child.id();
    let _ = write_atomic(&args.pid_file, format!("{pid}\n").as_bytes());
    handshake(&format!("pid {pid}"));
    // The cgroup moves run beside the wait: on cgroup v1 the first move of a burst waits for an
    // RCU grace period (7-15 ms measured here), longer than a short container lives. The
    // container runs from its exec either way (as it did when the moves came first).
    let cgroups = args.cgroups.clone();
    let mover = std::thread::spawn(move || {
        for dir in &cgroups {
            // Best effort: the agent already warned when cgroups are unusable.
            let _ = std::fs::write(dir.join("cgroup.procs"), pid.to_string());
        }
    });
    // Wait without reaping: until the moves are done the pid stays the (dead) container's, so
    // a move can never reach a recycled pid.
    let waited = i32::try_from(pid).ok().and_then(|p| {
        waitid(
            Id::Pid(nix::unistd::Pid::from_raw(p)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        )
        .ok()
    });
    let (code, signal) = match waited {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
        _ => match child.try_wait() {
            Ok(Some(status)) => (status.code(), status.signal()),
            _ => (None, None),
        },
    };
    let rec = ExitRecord {
        code,
        signal,
        start_error: None,
        oom_killed: false,
        finished_at: chrono::Utc::now(),
    };
    // Like a container's pid namespace: when the main process ends, the rest of its group goes.
    if let Ok(pgid) = i32::try_from(pid) {
        if pgid > 1 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    let written = write_json(&args.exit_file, &rec);
    if written.is_ok() {
        // The agent takes the exit from here, without waiting for the moves and this shim.
        handshake(EXITED);
    }
    let _ = mover.join();
    let _ = child.wait();
    match written {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

/// Tells the agent how the start went; an agent that stopped listening is no error.
pub(crate) fn handshake(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{HANDSHAKE_PREFIX}{line}\n").as_bytes());
    let _ = out.flush();
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// What the shim told the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    Pid(i32),
    Error(String),
}

/// The line the shim prints once the container's exit record is written.
const EXITED: &str = "exited";

/// Whether a line of the shim's stdout says the exit record is written.
pub fn is_exited_line(line: &str) -> bool {
    let line = line.trim_end();
    line.find(HANDSHAKE_PREFIX)
        .is_some_and(|i| &line[i + HANDSHAKE_PREFIX.len()..] == EXITED)
}

/// Parses one line of the shim's stdout; lines without the prefix are not the shim's (a test
/// harness running the shim may print before it, even on the same line).
pub fn parse_handshake(line: &str) -> Option<Handshake> {
    let line = line.trim_end();
    let rest = &line[line.find(HANDSHAKE_PREFIX)? + HANDSHAKE_PREFIX.len()..];
    if let Some(pid) = rest.strip_prefix("pid ") {
        return pid.parse().ok().map(Handshake::Pid);
    }
    rest.strip_prefix("error ")
        .map(|m| Handshake::Error(m.to_string()))
}

pub mod binds;
mod oci;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        shim: ShimArgs,
    }

    #[test]
    fn arguments_round_trip_through_the_command_line() {
        let args = ShimArgs {
            exit_file: "/d/exit.json".into(),
            log_file: "/d/0.log".into(),
            pid_file: "/d/pid".into(),
            cgroups: vec!["/cg/cpu/x".into(), "/cg/memory/x".into()],
            command: vec!["sh".into(), "-c".into(), "echo --log-file; exit 3".into()],
            binds: vec![binds::Bind {
                source: "/d/volumes/a:b".into(),
                target: "/mnt/x".into(),
                read_only: true,
            }],
            ..ShimArgs::default()
        };
        let mut argv: Vec<std::ffi::OsString> = vec!["shim".into()];
        argv.extend(args.to_args());
        assert_eq!(Cli::try_parse_from(argv).expect("parses").shim, args);
        let oci = ShimArgs {
            exit_file: "/d/exit.json".into(),
            log_file: "/d/0.log".into(),
            pid_file: "/d/pid".into(),
            cgroups: vec!["/cg/memory/kumo/u/c".into()],
            runtime: Some("/usr/sbin/runc".into()),
            runtime_args: vec![
                "--root".into(),
                "/d/state".into(),
                "--platform=ptrace".into(),
            ],
            bundle: Some("/d/bundle".into()),
            id: Some("u_c_0".into()),
            run_detached: true,
            binds: vec![],
            command: vec![],
        };
        let mut argv: Vec<std::ffi::OsString> = vec!["shim".into()];
        argv.extend(oci.to_args());
        assert_eq!(Cli::try_parse_from(argv).expect("parses").shim, oci);
        assert!(Cli::try_parse_from([
            "shim",
            "--exit-file",
            "a",
            "--log-file",
            "b",
            "--pid-file",
            "c"
        ])
        .is_err());
    }

    #[test]
    fn handshake_lines() {
        assert_eq!(
            parse_handshake("kumo-shim: pid 42\n"),
            Some(Handshake::Pid(42))
        );
        assert_eq!(
            parse_handshake("kumo-shim: error exec \"x\": not found"),
            Some(Handshake::Error("exec \"x\": not found".into()))
        );
        assert_eq!(
            parse_handshake("test shim_entry ... kumo-shim: pid 7"),
            Some(Handshake::Pid(7))
        );
        assert_eq!(parse_handshake("running 1 test"), None);
        assert_eq!(parse_handshake("kumo-shim: pid x"), None);
        assert_eq!(parse_handshake("kumo-shim: exited"), None);
        assert!(is_exited_line("kumo-shim: exited\n"));
        assert!(is_exited_line("test shim_entry ... kumo-shim: exited"));
        assert!(!is_exited_line("kumo-shim: pid 7"));
        assert!(!is_exited_line("exited"));
    }
}
