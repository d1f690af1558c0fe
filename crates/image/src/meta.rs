//! The metadata index (`index.json`): images by manifest digest, their references and use.

use crate::error::{invalid, io_err, ImageError};
use crate::store::ImageConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The whole index.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub version: u32,
    /// Manifest digest → image.
    #[serde(default)]
    pub images: BTreeMap<String, Record>,
    /// Diff id → bytes of the unpacked layer.
    #[serde(default)]
    pub layers: BTreeMap<String, u64>,
}

/// One stored image.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Record {
    /// Canonical references naming this image (none for an image known only by digest).
    #[serde(default)]
    pub references: Vec<String>,
    pub config: ImageConfig,
    /// Diff ids of the layers, bottom first.
    pub layers: Vec<String>,
    /// Every blob the image needs: index, manifest, config, compressed layers.
    pub blobs: Vec<String>,
    /// Bytes of its blobs and unpacked layers (shared ones counted for each image).
    pub size: u64,
    /// Milliseconds since the epoch.
    pub created: u64,
    pub last_used: u64,
}

/// Milliseconds since the epoch, now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `index.json` and the `lock` file beside it.
#[derive(Clone, Debug)]
pub(crate) struct MetaFile {
    pub path: PathBuf,
    pub lock_path: PathBuf,
    pub tmp: PathBuf,
}

/// Holds the store's lock (`flock` on `lock`) until dropped.
pub(crate) struct Locked(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl MetaFile {
    /// Reads the index; it is replaced atomically, so no lock is needed to read it.
    pub(crate) fn read(&self) -> Result<Meta, ImageError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("image index {}", self.path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Meta::default()),
            Err(e) => Err(io_err(format!("reading {}", self.path.display()))(e)),
        }
    }

    /// Takes the store's lock (between threads and between processes).
    pub(crate) fn lock(&self) -> Result<Locked, ImageError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_err(format!("opening {}", self.lock_path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(Locked)
            .map_err(|(_, e)| io_err(format!("locking {}", self.lock_path.display()))(e.into()))
    }

    /// Writes the index atomically (temp file, fsync, rename).
    pub(crate) fn write(&self, _lock: &Locked, meta: &Meta) -> Result<(), ImageError> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(io_err("creating a temporary index file"))?;
        let json = serde_json::to_vec_pretty(meta).map_err(|e| invalid("image index", e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(io_err("writing the image index"))?;
        tmp.persist(&self.path)
            .map_err(|e| io_err(format!("replacing {}", self.path.display()))(e.error))?;
        Ok(())
    }

    /// Read-modify-write under the lock; the index is written only when `f` succeeds.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut Meta) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let lock = self.lock()?;
        let mut meta = self.read()?;
        let out = f(&mut meta)?;
        meta.version = 1;
        self.write(&lock, &meta)?;
        Ok(out)
    }
}
