//! The content-addressed blob store: `blobs/sha256/<hex>`, written only after verification.

use crate::digest::{check, Digest, Hasher};
use crate::error::{io_err, ImageError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Blobs under `dir`, temp files under `tmp` (same file system, so the final rename is atomic).
#[derive(Clone, Debug)]
pub(crate) struct Blobs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl Blobs {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        Blobs { dir, tmp }
    }

    pub(crate) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub(crate) fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub(crate) fn read(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        std::fs::read(self.path(digest)).map_err(io_err(format!("reading blob {digest}")))
    }

    pub(crate) fn size(&self, digest: &Digest) -> u64 {
        std::fs::metadata(self.path(digest))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Removes a blob; a missing one is fine.
    pub(crate) fn remove(&self, digest: &Digest) -> Result<(), ImageError> {
        match std::fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err(format!("removing blob {digest}"))(e))
            }
            _ => Ok(()),
        }
    }

    /// Starts writing a blob whose digest is checked on [`BlobWriter::commit`].
    pub(crate) fn writer(&self) -> Result<BlobWriter, ImageError> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(io_err("creating a temporary blob file"))?;
        Ok(BlobWriter {
            file,
            hasher: Hasher::new(),
            size: 0,
            dir: self.dir.clone(),
        })
    }

    /// Stores bytes; with `expected`, they must hash to it.
    pub(crate) fn put_bytes(
        &self,
        what: &str,
        bytes: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Digest, ImageError> {
        let mut w = self.writer()?;
        w.write(bytes)?;
        Ok(w.commit(what, expected)?.0)
    }

    /// Stores a reader's content; with `expected`, it must hash to it.
    pub(crate) fn put_reader(
        &self,
        what: &str,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), ImageError> {
        let mut w = self.writer()?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io_err(format!("reading {what}")))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.commit(what, expected)
    }
}

/// A blob being written: hashed as it goes, deleted unless committed with the right digest.
pub(crate) struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    size: u64,
    dir: PathBuf,
}

impl BlobWriter {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .map_err(io_err("writing a temporary blob file"))
    }

    /// Checks the digest and moves the blob into place; on a mismatch the temp file is removed.
    pub(crate) fn commit(
        self,
        what: &str,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), ImageError> {
        let actual = self.hasher.finish();
        if let Some(expected) = expected {
            check(what, expected, &actual)?;
        }
        self.file
            .as_file()
            .sync_all()
            .map_err(io_err("syncing a blob"))?;
        let dest = self.dir.join(actual.hex());
        self.file
            .persist(&dest)
            .map_err(|e| io_err(format!("storing blob {actual}"))(e.error))?;
        Ok((actual, self.size))
    }
}

/// Creates a directory and its parents.
pub(crate) fn mkdirs(path: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (tempfile::TempDir, Blobs) {
        let t = tempfile::tempdir().unwrap();
        let b = Blobs::new(t.path().join("blobs"), t.path().join("tmp"));
        mkdirs(&t.path().join("blobs")).unwrap();
        mkdirs(&t.path().join("tmp")).unwrap();
        (t, b)
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn a_verified_blob_is_stored_under_its_hex() {
        let (t, b) = blobs();
        let d = Digest::of(b"hello");
        let got = b.put_bytes("test blob", b"hello", Some(&d)).unwrap();
        assert_eq!(got, d);
        assert_eq!(std::fs::read(b.path(&d)).unwrap(), b"hello");
        assert_eq!(entries(&t.path().join("tmp")), 0);
    }

    #[test]
    fn a_wrong_digest_is_an_error_and_leaves_nothing_behind() {
        let (t, b) = blobs();
        let wrong = Digest::of(b"something else");
        let err = b
            .put_reader("layer", &mut &b"hello"[..], Some(&wrong))
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert_eq!(entries(&t.path().join("blobs")), 0);
        assert_eq!(entries(&t.path().join("tmp")), 0);
    }
}
