//! `kumo nsexec`: the small helper `kumo exec` runs a command through. A fresh, single-threaded
//! process joins what the container has (its cgroups, its mount namespace), takes its stdin as
//! controlling terminal when there is one, and then replaces itself with the command.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct NsExecArgs {
    /// A cgroup directory to join (repeatable)
    #[arg(long = "cgroup")]
    pub cgroups: Vec<PathBuf>,
    /// Join the mount namespace of this process
    #[arg(long)]
    pub mount_ns_of: Option<i32>,
    /// Working directory (after joining the mount namespace)
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Start a new session whose controlling terminal is stdin
    #[arg(long)]
    pub tty: bool,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

impl NsExecArgs {
    /// The command line (after the `nsexec` subcommand) that parses back into these arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.cgroups {
            out.push("--cgroup".to_string());
            out.push(c.display().to_string());
        }
        if let Some(pid) = self.mount_ns_of {
            out.push("--mount-ns-of".into());
            out.push(pid.to_string());
        }
        if let Some(cwd) = &self.cwd {
            out.push("--cwd".into());
            out.push(cwd.display().to_string());
        }
        if self.tty {
            out.push("--tty".into());
        }
        out.push("--".into());
        out.extend(self.command.iter().cloned());
        out
    }
}

/// Joins, then execs the command; returns (an exit code) only when that fails.
pub fn run(args: NsExecArgs) -> u8 {
    match prepare(&args) {
        Ok(()) => {
            let err = std::process::Command::new(&args.command[0])
                .args(&args.command[1..])
                .exec();
            eprintln!("kumo exec: cannot run {:?}: {err}", args.command[0]);
            if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
        Err(message) => {
            eprintln!("kumo exec: {message}");
            126
        }
    }
}

fn prepare(args: &NsExecArgs) -> Result<(), String> {
    let me = std::process::id().to_string();
    for dir in &args.cgroups {
        // Best effort, as for the container itself: a node without writable cgroups runs
        // containers without limits.
        let _ = std::fs::write(dir.join("cgroup.procs"), &me);
    }
    if let Some(pid) = args.mount_ns_of {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
        let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
        if std::fs::read_link(&theirs).ok() != ours {
            let ns = std::fs::File::open(&theirs)
                .map_err(|e| format!("the container is gone ({}: {e})", theirs.display()))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("join the container's mount namespace: {e}"))?;
        }
    }
    if let Some(cwd) = &args.cwd {
        std::env::set_current_dir(cwd)
            .map_err(|e| format!("working directory {}: {e}", cwd.display()))?;
    }
    if args.tty {
        rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
        rustix::process::ioctl_tiocsctty(std::io::stdin())
            .map_err(|e| format!("take the terminal: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: NsExecArgs,
    }

    #[test]
    fn arguments_round_trip_through_the_command_line() {
        let args = NsExecArgs {
            cgroups: vec!["/sys/fs/cgroup/memory/kumo/u/c".into()],
            mount_ns_of: Some(42),
            cwd: Some("/work dir".into()),
            tty: true,
            command: vec!["sh".into(), "-c".into(), "--cwd x".into()],
        };
        let mut argv = vec!["nsexec".to_string()];
        argv.extend(args.to_args());
        assert_eq!(Wrapper::parse_from(argv).args, args);
    }
}
