//! The directory backend: one file per key under a root (the server's `DATA_DIR/data` by
//! default, or a shared file system mounted on every server). Directories are 0700; every write
//! goes to `tmp/` first, is synced, then renamed (or hard-linked, for create-only) into place.

use crate::{check_key, hex, ByteStream, Entry, Error, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The directories an older kumo made, kept so an existing data dir is served unchanged.
const SUBDIRS: [&str; 5] = ["", "blobs", "datasets", "outputs", "tmp"];

#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
}

fn backend(what: &str, key: &str, e: std::io::Error) -> Error {
    Error::Backend(format!("{what} {key}: {e}"))
}

/// Creates `dir` (and parents) 0700, tightening one an older kumo made looser.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

impl DirStore {
    /// Creates the dirs, 0700 (users' data: only the server's user reads it).
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        for sub in SUBDIRS {
            private_dir(&root.join(sub))?;
        }
        Ok(DirStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        if key == "tmp" || key.starts_with("tmp/") {
            return Err(Error::Key(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn tmp(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Makes the parent of `dest` (0700, as the fixed dirs).
    fn parent(dest: &Path) -> std::io::Result<()> {
        match dest.parent() {
            Some(p) if !p.exists() => private_dir(p),
            _ => Ok(()),
        }
    }

    /// Writes `bytes` to a synced temporary file, then places it with `place`; the temporary
    /// file never outlives the call.
    async fn write_then(
        &self,
        key: &str,
        bytes: Vec<u8>,
        place: fn(&Path, &Path) -> std::io::Result<bool>,
    ) -> Result<bool> {
        let dest = self.path(key)?;
        let tmp = self.tmp();
        let result = async {
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&bytes).await?;
            f.sync_all().await?;
            Self::parent(&dest)?;
            place(&tmp, &dest)
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        result.map_err(|e| backend("writing", key, e))
    }
}

fn rename(tmp: &Path, dest: &Path) -> std::io::Result<bool> {
    std::fs::rename(tmp, dest).map(|()| true)
}

/// A hard link never replaces an existing file: create-only, atomically.
fn link_new(tmp: &Path, dest: &Path) -> std::io::Result<bool> {
    match std::fs::hard_link(tmp, dest) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every file under `dir`, keyed relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            if path != root.join("tmp") {
                walk(root, &path, out)?;
            }
        } else if meta.is_file() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(key) = rel.to_str() else { continue };
            out.push(Entry {
                key: key.to_string(),
                size: meta.len(),
                modified: meta.modified()?,
            });
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl crate::BlobStore for DirStore {
    fn describe(&self) -> String {
        format!("dir://{}", self.root.display())
    }

    async fn put_verified(
        &self,
        key: &str,
        sha256: &str,
        mut body: ByteStream,
        limit: u64,
    ) -> Result<u64> {
        use sha2::Digest;
        let dest = self.path(key)?;
        let tmp = self.tmp();
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| backend("creating", key, e))?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(Error::Body)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(Error::TooLarge { limit });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| backend("writing", key, e))?;
            }
            let got = hex(&hasher.finalize());
            if got != sha256 {
                return Err(Error::Mismatch { got });
            }
            file.sync_all()
                .await
                .map_err(|e| backend("writing", key, e))?;
            Self::parent(&dest)
                .and_then(|()| std::fs::rename(&tmp, &dest))
                .map_err(|e| backend("storing", key, e))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.write_then(key, bytes.to_vec(), rename)
            .await
            .map(|_| ())
    }

    async fn put_new(&self, key: &str, bytes: Bytes) -> Result<bool> {
        self.write_then(key, bytes.to_vec(), link_new).await
    }

    async fn get(&self, key: &str) -> Result<Option<ByteStream>> {
        let path = self.path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Some(tokio_util::io::ReaderStream::new(f).boxed())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend("reading", key, e)),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend("reading", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let dir = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix.trim_end_matches('/'))?
        };
        let root = self.root.clone();
        let mut out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &dir, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| Error::Backend(format!("listing {prefix}: {e}")))?
        .map_err(|e| backend("listing", prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend("removing", key, e)),
        }
    }
}
