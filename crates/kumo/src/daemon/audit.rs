//! The audit log's flags (`--audit-log`, `--audit-log-maxsize`, `--audit-log-maxbackup`) for
//! `up` and `server`, and opening the log before the server starts: a log that cannot be
//! opened stops the server, which must not run unrecorded.

use anyhow::Context;
use clap::Args;
use kumo_apiserver::{AuditLog, Rotation};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// The audit log: one JSON line (audit.k8s.io/v1 Event) per change, exec, log read and
    /// Secret read (default: DATA_DIR/audit.log, mode 0600)
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// The size in MiB at which the audit log is rotated to PATH.1
    #[arg(long, default_value_t = 100, value_parser = max_size)]
    pub audit_log_maxsize: u64,
    /// How many rotated audit logs (PATH.1 … PATH.N) are kept; 0 keeps none
    #[arg(long, default_value_t = 5, value_parser = max_backup)]
    pub audit_log_maxbackup: usize,
}

fn max_size(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (1..=1 << 20).contains(&n) => Ok(n),
        _ => Err("must be a whole number of MiB from 1 to 1048576".into()),
    }
}

fn max_backup(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= 1000 => Ok(n),
        _ => Err("must be a whole number from 0 to 1000".into()),
    }
}

impl AuditArgs {
    /// The audit log's path: `--audit-log`, else `DATA_DIR/audit.log`.
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| data_dir.join("audit.log"))
    }
}

/// Opens the audit log the flags name (made 0600 if missing).
pub fn open(args: &AuditArgs, data_dir: &Path) -> anyhow::Result<AuditLog> {
    let path = args.path(data_dir);
    let rotation = Rotation {
        max_bytes: args.audit_log_maxsize << 20,
        max_backups: args.audit_log_maxbackup,
    };
    AuditLog::open(&path, rotation)
        .with_context(|| format!("cannot open the audit log {} (--audit-log)", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(
        parse: fn(&str) -> Result<T, String>,
        input: &str,
        expected: Result<T, &str>,
    ) {
        assert_eq!(parse(input), expected.map_err(str::to_string), "{input}");
    }

    #[test]
    fn flags() {
        const SIZE: &str = "must be a whole number of MiB from 1 to 1048576";
        check(max_size, "100", Ok(100));
        check(max_size, "1", Ok(1));
        check(max_size, "1048576", Ok(1 << 20));
        check(max_size, "0", Err(SIZE));
        check(max_size, "1048577", Err(SIZE));
        check(max_size, "10Mi", Err(SIZE));
        check(max_size, "-1", Err(SIZE));
        const BACKUP: &str = "must be a whole number from 0 to 1000";
        check(max_backup, "0", Ok(0));
        check(max_backup, "5", Ok(5));
        check(max_backup, "1001", Err(BACKUP));
        check(max_backup, "five", Err(BACKUP));
    }
}
