//! [`FakeSys`]: the kernel as an in-memory table of directories, files, mounts and processes,
//! recording the signals sent; for tests of what makes cgroups, unmounts and signals.

use super::Sys;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A fake kernel. As in cgroupfs, a directory's files go with it when it is removed, but not
/// its child directories; a directory must exist before a file is written in it.
#[derive(Debug, Default)]
pub struct FakeSys {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, String>,
    /// Mount points, in mount order.
    mounts: Vec<PathBuf>,
    /// Live processes: pid to start time.
    processes: BTreeMap<i32, u64>,
    signals: Vec<(i32, Signal)>,
}

fn err(kind: io::ErrorKind, path: &Path) -> io::Error {
    io::Error::new(kind, path.display().to_string())
}

impl FakeSys {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds directory `path` and its parents.
    pub fn with_dir(self, path: impl AsRef<Path>) -> Self {
        self.create_dir_all(path.as_ref()).expect("fake mkdir");
        self
    }

    /// Adds file `path` (its directory too).
    pub fn with_file(self, path: impl AsRef<Path>, contents: &str) -> Self {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent).expect("fake mkdir");
        }
        self.write(path, contents).expect("fake write");
        self
    }

    /// Mounts something at `path`.
    pub fn with_mount(self, path: impl AsRef<Path>) -> Self {
        self.state().mounts.push(path.as_ref().to_path_buf());
        self
    }

    /// Adds live process `pid` started at `start_time`.
    pub fn with_process(self, pid: i32, start_time: u64) -> Self {
        self.state().processes.insert(pid, start_time);
        self
    }

    /// Every directory, sorted.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.state().dirs.iter().cloned().collect()
    }

    /// The contents of file `path`, if any.
    pub fn file(&self, path: impl AsRef<Path>) -> Option<String> {
        self.state().files.get(path.as_ref()).cloned()
    }

    /// The mount points left, in mount order.
    pub fn mounts(&self) -> Vec<PathBuf> {
        self.state().mounts.clone()
    }

    /// The signals sent, in order, as (process group, signal).
    pub fn signals(&self) -> Vec<(i32, Signal)> {
        self.state().signals.clone()
    }
}

impl Sys for FakeSys {
    fn start_time(&self, pid: i32) -> Option<u64> {
        self.state().processes.get(&pid).copied()
    }

    /// Refuses the groups the real one refuses; SIGKILL ends the group's leader.
    fn signal_group(&self, pgid: i32, signal: Signal) -> Result<(), nix::Error> {
        if pgid <= 1 {
            return Err(nix::Error::EINVAL);
        }
        let mut s = self.state();
        s.signals.push((pgid, signal));
        if signal == Signal::SIGKILL {
            s.processes.remove(&pgid);
        }
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.state().dirs.contains(path)
    }

    fn is_file(&self, path: &Path) -> bool {
        self.state().files.contains_key(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        for dir in path.ancestors() {
            if s.files.contains_key(dir) {
                return Err(err(io::ErrorKind::NotADirectory, dir));
            }
        }
        for dir in path.ancestors() {
            s.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        let mut s = self.state();
        if s.dirs.contains(path) {
            return Err(err(io::ErrorKind::IsADirectory, path));
        }
        if !path.parent().is_some_and(|p| s.dirs.contains(p)) {
            return Err(err(io::ErrorKind::NotFound, path));
        }
        s.files.insert(path.to_path_buf(), contents.to_string());
        Ok(())
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.state()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| err(io::ErrorKind::NotFound, path))
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        if !s.dirs.contains(path) {
            return Err(err(io::ErrorKind::NotFound, path));
        }
        if s.dirs.iter().any(|d| d.parent() == Some(path)) {
            return Err(err(io::ErrorKind::DirectoryNotEmpty, path));
        }
        s.dirs.remove(path);
        s.files.retain(|f, _| f.parent() != Some(path));
        Ok(())
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let s = self.state();
        if !s.dirs.contains(path) {
            return Err(err(io::ErrorKind::NotFound, path));
        }
        Ok(s.dirs
            .iter()
            .filter(|d| d.parent() == Some(path))
            .cloned()
            .collect())
    }

    /// One mountinfo line per mount point, spaces escaped as the kernel does.
    fn mountinfo(&self) -> io::Result<String> {
        let s = self.state();
        Ok(s.mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let point = m.display().to_string().replace(' ', "\\040");
                format!("{id} 1 0:{id} / {point} rw - tmpfs tmpfs rw\n", id = 40 + i)
            })
            .collect())
    }

    /// Removes the last mount at `path`; nothing mounted there is `EINVAL`, as in the kernel.
    fn unmount(&self, path: &Path) -> Result<(), nix::Error> {
        let mut s = self.state();
        let i = s
            .mounts
            .iter()
            .rposition(|m| m == path)
            .ok_or(nix::Error::EINVAL)?;
        s.mounts.remove(i);
        Ok(())
    }
}
