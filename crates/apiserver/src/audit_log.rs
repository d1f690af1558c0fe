//! The audit log file: one JSON line per event, each handed to the kernel by one write(2)
//! before the request is answered, fsync'd in the background once a second, rotated by size.
//!
//! Why write-now, fsync-later: once write(2) returns, the line is in the page cache, so a
//! crash of the process (`kill -9`) cannot lose it; only a crash of the machine can lose the
//! last second, the same trade the store makes with its group commit. An fsync per request
//! would put a disk flush on every change's path.

use kumo_api::audit::Event;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

/// How often written lines are fsync'd.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// When the file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The size a file may reach; the line that would pass it goes to a fresh file.
    pub max_bytes: u64,
    /// How many rotated files (`PATH.1` the newest … `PATH.N`) are kept; 0 keeps none.
    pub max_backups: usize,
}

impl Default for Rotation {
    /// 100 MiB and 5 backups.
    fn default() -> Self {
        Rotation {
            max_bytes: 100 << 20,
            max_backups: 5,
        }
    }
}

/// The open audit log. Writers share it; dropping the last handle fsyncs and stops the syncer.
pub struct AuditLog {
    inner: Arc<Inner>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    path: PathBuf,
    rotation: Rotation,
    current: Mutex<Current>,
    /// Lines written since the last fsync.
    dirty: AtomicBool,
}

struct Current {
    /// `None` after a rotation or reopen failed.
    file: Option<Arc<File>>,
    size: u64,
    /// Whether the file is a regular file (only those are rotated and chmod'ed).
    regular: bool,
    /// Whether the last write failed.
    failed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens (or creates, mode 0600) the file for appending; returns it, its size and whether it
/// is a regular file.
fn open_file(path: &Path) -> io::Result<(File, u64, bool)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    // A file made before (by hand, or by another umask) is held to 0600 too: it names every
    // user and what they did.
    if meta.is_file() && meta.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((file, meta.len(), meta.is_file()))
}

/// `PATH.n`.
fn backup(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl AuditLog {
    /// Opens the log at `path`, creating it (0600) if missing: an error here means the server
    /// must not start, as it could not record what it does.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> io::Result<AuditLog> {
        let path = path.into();
        let (file, size, regular) = open_file(&path)?;
        let inner = Arc::new(Inner {
            path,
            rotation,
            current: Mutex::new(Current {
                file: Some(Arc::new(file)),
                size,
                regular,
                failed: false,
            }),
            dirty: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        let syncer = std::thread::Builder::new()
            .name("audit-fsync".into())
            .spawn(move || sync_loop(weak))?;
        Ok(AuditLog {
            inner,
            syncer: Some(syncer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends one event as one line, with one write(2), rotating first if the line would take
    /// the file past its size. When this returns `Ok` the line survives a crash of the process.
    pub fn write(&self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut current = lock(&self.inner.current);
        let written = self.inner.append(&mut current, &line);
        current.failed = written.is_err();
        written
    }

    /// Whether a line can be written now: true unless the last write failed and the file
    /// cannot be opened again. Asked before a request that must be audited is executed, so
    /// that while the log is gone nothing unaudited happens.
    pub fn ready(&self) -> bool {
        let mut current = lock(&self.inner.current);
        if !current.failed && current.file.is_some() {
            return true;
        }
        match open_file(&self.inner.path) {
            Ok((file, size, regular)) => {
                *current = Current {
                    file: Some(Arc::new(file)),
                    size,
                    regular,
                    failed: false,
                };
                true
            }
            Err(e) => {
                tracing::error!(path = %self.inner.path.display(), error = %e, "the audit log cannot be opened");
                false
            }
        }
    }
}

impl Inner {
    fn append(&self, current: &mut Current, line: &[u8]) -> io::Result<()> {
        let over = current.size > 0 && current.size + line.len() as u64 > self.rotation.max_bytes;
        if current.regular && over {
            self.rotate(current)?;
        }
        let file = match &current.file {
            Some(f) => Arc::clone(f),
            None => {
                let (file, size, regular) = open_file(&self.path)?;
                let file = Arc::new(file);
                *current = Current {
                    file: Some(Arc::clone(&file)),
                    size,
                    regular,
                    failed: false,
                };
                file
            }
        };
        // One write(2) of the whole line (O_APPEND): a short write of a regular file only
        // happens when the disk is full, and then the line is refused as a whole.
        let n = (&*file).write(line)?;
        current.size += n as u64;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("wrote {n} of {} bytes", line.len()),
            ));
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// `PATH.{N-1}` → `PATH.N`, …, `PATH` → `PATH.1`, then a fresh `PATH`.
    fn rotate(&self, current: &mut Current) -> io::Result<()> {
        if let Some(old) = current.file.take() {
            // The rotated file is never written again: make it durable now.
            old.sync_data()?;
        }
        let keep = self.rotation.max_backups;
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                match std::fs::rename(backup(&self.path, n), backup(&self.path, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, backup(&self.path, 1))?;
        }
        let (file, size, regular) = open_file(&self.path)?;
        *current = Current {
            file: Some(Arc::new(file)),
            size,
            regular,
            failed: false,
        };
        Ok(())
    }

    /// fsyncs the current file if lines were written since the last time.
    fn sync(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        // fsync outside the lock: writers go on meanwhile.
        let file = lock(&self.current).file.clone();
        if let Some(file) = file {
            if let Err(e) = file.sync_data() {
                tracing::error!(path = %self.path.display(), error = %e, "cannot fsync the audit log");
            }
        }
    }
}

fn sync_loop(inner: Weak<Inner>) {
    loop {
        std::thread::park_timeout(SYNC_EVERY);
        let Some(inner) = inner.upgrade() else { return };
        inner.sync();
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.inner.sync();
        if let Some(syncer) = self.syncer.take() {
            syncer.thread().unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::audit::{ObjectRef, ResponseStatus};

    fn event(name: &str) -> Event {
        Event {
            kind: "Event".into(),
            api_version: "audit.k8s.io/v1".into(),
            level: "Metadata".into(),
            audit_id: name.into(),
            stage: "ResponseComplete".into(),
            request_uri: format!("/api/v1/namespaces/default/pods/{name}"),
            verb: "delete".into(),
            user: kumo_api::UserInfo::new("admin", &[]),
            source_ips: vec![],
            user_agent: String::new(),
            object_ref: Some(ObjectRef {
                name: name.into(),
                ..Default::default()
            }),
            response_status: ResponseStatus {
                code: 200,
                message: String::new(),
            },
            request_received_timestamp: "2026-12-07T00:00:00.000000Z".into(),
            stage_timestamp: "2026-12-07T00:00:00.000001Z".into(),
            annotations: Default::default(),
        }
    }

    fn line_len() -> u64 {
        serde_json::to_vec(&event("e00")).unwrap().len() as u64 + 1
    }

    /// The audit IDs in `PATH`, `PATH.1`, …, in the order the files are named.
    fn ids(path: &Path, backups: usize) -> Vec<Vec<String>> {
        (0..=backups)
            .map(|n| {
                let p = if n == 0 {
                    path.to_path_buf()
                } else {
                    backup(path, n)
                };
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str::<Event>(l).unwrap().audit_id)
                    .collect()
            })
            .collect()
    }

    /// Writes `count` events `e00`, `e01`, … into a fresh log that rotates after `lines_per_file`
    /// lines keeping `max_backups`, and compares the files' contents to `expected`.
    fn check(count: usize, lines_per_file: u64, max_backups: usize, expected: &[&[&str]]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: lines_per_file * line_len(),
            max_backups,
        };
        let log = AuditLog::open(&path, rotation).unwrap();
        for i in 0..count {
            log.write(&event(&format!("e{i:02}"))).unwrap();
        }
        let expected: Vec<Vec<String>> = expected
            .iter()
            .map(|f| f.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(
            ids(&path, max_backups + 1),
            expected,
            "{count} lines, {lines_per_file} per file, {max_backups} backups"
        );
        for n in 0..=max_backups {
            let p = if n == 0 {
                path.clone()
            } else {
                backup(&path, n)
            };
            if let Ok(meta) = std::fs::metadata(&p) {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", p.display());
            }
        }
    }

    #[test]
    fn rotation() {
        check(2, 3, 2, &[&["e00", "e01"], &[], &[], &[]]);
        check(3, 3, 2, &[&["e00", "e01", "e02"], &[], &[], &[]]);
        check(4, 3, 2, &[&["e03"], &["e00", "e01", "e02"], &[], &[]]);
        check(
            8,
            3,
            2,
            &[
                &["e06", "e07"],
                &["e03", "e04", "e05"],
                &["e00", "e01", "e02"],
                &[],
            ],
        );
        // The oldest file goes once there are more than max_backups.
        check(
            10,
            3,
            2,
            &[
                &["e09"],
                &["e06", "e07", "e08"],
                &["e03", "e04", "e05"],
                &[],
            ],
        );
        check(5, 2, 0, &[&["e04"], &[]]);
        // A line longer than the limit still goes in, alone in its file.
        check(3, 0, 1, &[&["e02"], &["e01"], &[]]);
    }

    #[test]
    fn an_existing_log_is_appended_to_and_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        for name in ["a", "b"] {
            let log = AuditLog::open(&path, Rotation::default()).unwrap();
            log.write(&event(name)).unwrap();
        }
        assert_eq!(ids(&path, 0), vec![vec!["a".to_string(), "b".to_string()]]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn failures_are_reported() {
        // Opening under a file that is not a directory fails (the server then does not start).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let e = AuditLog::open(file.join("audit.log"), Rotation::default())
            .err()
            .expect("cannot open a log under a file");
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);

        // A full disk: every write fails, and the log says it is ready once it could reopen.
        let full = AuditLog::open("/dev/full", Rotation::default()).unwrap();
        assert!(full.ready());
        let e = full.write(&event("x")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
        assert!(full.ready(), "/dev/full can be opened again");
    }
}
