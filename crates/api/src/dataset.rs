//! Datasets and task outputs on the wire: a manifest of files, each a list of content-addressed
//! chunks (sha256), and the checks the server and the clients share. Pure.

use crate::mltask::is_contained_path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Files are cut into chunks of this size (the last one shorter) and uploaded one per request.
pub const CHUNK_SIZE: usize = 4 * 1024 * 1024;
/// The largest blob the server accepts: a chunk, with room to spare.
pub const BLOB_LIMIT: usize = 2 * CHUNK_SIZE;

pub use crate::keys::{ANNOTATION_DATASET, ANNOTATION_OUTPUT, ANNOTATION_SCRATCH};
/// Where a container replica finds its data (read-only).
pub const DATA_PATH: &str = "/data";
/// Where a container replica writes what is collected.
pub const OUTPUT_PATH: &str = "/output";
/// Where a container replica finds its scratch space.
pub const SCRATCH_PATH: &str = "/scratch";

/// One file of a dataset or an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Relative, `/`-separated, inside the dataset's root.
    pub path: String,
    pub size: u64,
    /// Unix permission bits (only the executable bits matter to readers).
    #[serde(default)]
    pub mode: u32,
    /// sha256 (lower-case hex) of each chunk, in order; none for an empty file.
    #[serde(default)]
    pub chunks: Vec<String>,
}

/// The files of a dataset or of one replica's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
}

/// A complete dataset as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetInfo {
    pub name: String,
    pub files: usize,
    pub size: u64,
    /// sha256 of the manifest's canonical JSON: equal digests mean equal contents.
    pub digest: String,
    pub created: crate::Time,
}

/// A dataset with its files (`GET datasets/NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dataset {
    #[serde(flatten)]
    pub info: DatasetInfo,
    pub manifest: Manifest,
}

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` is a sha256 in lower-case hex.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// How many chunks a file of `size` bytes has.
pub fn chunk_count(size: u64) -> usize {
    size.div_ceil(CHUNK_SIZE as u64) as usize
}

impl Manifest {
    /// Total bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every chunk digest, once.
    pub fn blobs(&self) -> BTreeSet<&str> {
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter().map(String::as_str))
            .collect()
    }

    /// sha256 of the canonical JSON (files sorted by path).
    pub fn digest(&self) -> String {
        let mut files = self.files.clone();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let canonical = serde_json::to_vec(&Manifest { files }).unwrap_or_default();
        sha256_hex(&canonical)
    }

    /// Checks paths (relative, inside the root, unique, no file under another file) and chunk
    /// lists (valid digests, as many as the size needs); the first problem, naming the file.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let at = format!("files[{i}]");
            if !is_contained_path(&f.path) || f.path.split('/').any(|s| s.is_empty() || s == ".") {
                return Err(format!(
                    "{at}.path: Invalid value: {:?}: must be a relative path that stays inside the dataset",
                    f.path
                ));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(format!("{at}.path: Duplicate value: {:?}", f.path));
            }
            if f.chunks.len() != chunk_count(f.size) {
                return Err(format!(
                    "{at}.chunks: Invalid value: {} chunk(s) for {} bytes: files are cut into {CHUNK_SIZE}-byte chunks",
                    f.chunks.len(),
                    f.size
                ));
            }
            if let Some(c) = f.chunks.iter().find(|c| !is_digest(c)) {
                return Err(format!(
                    "{at}.chunks: Invalid value: {c:?}: must be a sha256 in lower-case hex"
                ));
            }
        }
        // A path that is also a directory of another file cannot be laid out.
        for f in &self.files {
            let mut prefix = f.path.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if seen.contains(parent) {
                    return Err(format!(
                        "files: Invalid value: {parent:?} is both a file and a directory"
                    ));
                }
                prefix = parent;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, chunks: &[&str]) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mode: 0o644,
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn check(files: Vec<FileEntry>, expected: Result<(), &str>) {
        let got = Manifest { files }.validate();
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(want)) => assert!(e.contains(want), "{e:?} lacks {want:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn manifests_are_checked() {
        let d = sha256_hex(b"x");
        check(vec![file("a/b.txt", 1, &[&d]), file("c", 0, &[])], Ok(()));
        check(vec![file("../x", 1, &[&d])], Err("files[0].path"));
        check(vec![file("/x", 1, &[&d])], Err("stays inside"));
        check(vec![file("a//b", 1, &[&d])], Err("files[0].path"));
        check(
            vec![file("a", 1, &[&d]), file("a", 1, &[&d])],
            Err("files[1].path: Duplicate"),
        );
        check(
            vec![file("a", 1, &[])],
            Err("files[0].chunks: Invalid value: 0 chunk(s)"),
        );
        check(vec![file("a", 1, &["XYZ"])], Err("lower-case hex"));
        check(
            vec![file("a", 1, &[&d]), file("a/b", 1, &[&d])],
            Err("\"a\" is both a file and a directory"),
        );
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_digest(&sha256_hex(b"a")));
        assert!(!is_digest("E3B0"));
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(CHUNK_SIZE as u64), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64 + 1), 2);
        let a = Manifest {
            files: vec![file("b", 0, &[]), file("a", 0, &[])],
        };
        let b = Manifest {
            files: vec![file("a", 0, &[]), file("b", 0, &[])],
        };
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.size(), 0);
    }
}
