//! Datasets and task outputs from a client's side: a directory pushed chunk by chunk (each chunk
//! named by its sha256, which the server checks), and a manifest's files fetched into a
//! directory, every chunk checked again on arrival.

use crate::{Client, ClientError};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use kumo_api::dataset::{sha256_hex, Dataset, DatasetInfo, FileEntry, Manifest, CHUNK_SIZE};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// API path of the data endpoints.
pub const DATA_PREFIX: &str = "/apis/kumo.dev/v1";

/// Why a push or fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Api(#[from] ClientError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A regular file under a directory: its relative `/` path, where it is, size and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
    pub mode: u32,
}

/// Every regular file under `dir`, sorted by path. Symbolic links and special files are refused
/// (a dataset is plain files, and a link could point outside it).
pub fn scan(dir: &Path) -> Result<Vec<LocalFile>, DataError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<LocalFile>) -> Result<(), DataError> {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else if meta.is_file() {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let Some(rel) = rel.to_str() else {
                    return Err(DataError::Invalid(format!(
                        "{}: file names must be UTF-8",
                        path.display()
                    )));
                };
                out.push(LocalFile {
                    rel: rel.to_string(),
                    abs: path.clone(),
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o7777,
                });
            } else {
                return Err(DataError::Invalid(format!(
                    "{}: only regular files and directories can be pushed (not links or devices)",
                    path.display()
                )));
            }
        }
        Ok(())
    }
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() {
        return Err(DataError::Invalid(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Uploads every file under `dir` as chunks and returns the manifest naming them.
pub async fn upload_dir(client: &Client, dir: &Path) -> Result<Manifest, DataError> {
    let mut files = Vec::new();
    for f in scan(dir)? {
        let mut file = std::fs::File::open(&f.abs).map_err(io(&f.abs))?;
        let mut chunks = Vec::new();
        let mut size = 0u64;
        loop {
            let mut buf = Vec::with_capacity(CHUNK_SIZE);
            (&mut file)
                .take(CHUNK_SIZE as u64)
                .read_to_end(&mut buf)
                .map_err(io(&f.abs))?;
            if buf.is_empty() {
                break;
            }
            size += buf.len() as u64;
            let digest = sha256_hex(&buf);
            client
                .send(
                    Method::PUT,
                    &format!("{DATA_PREFIX}/blobs/{digest}"),
                    Some(("application/octet-stream", buf)),
                )
                .await?;
            chunks.push(digest);
        }
        files.push(FileEntry {
            path: f.rel,
            size,
            mode: f.mode,
            chunks,
        });
    }
    Ok(Manifest { files })
}

/// Pushes `dir` as dataset `name`: the blobs first, then the manifest, which makes it visible.
pub async fn push_dataset(
    client: &Client,
    dir: &Path,
    name: &str,
) -> Result<DatasetInfo, DataError> {
    let manifest = upload_dir(client, dir).await?;
    let body = serde_json::to_value(&manifest).map_err(|e| DataError::Invalid(e.to_string()))?;
    Ok(client
        .request_json(
            Method::PUT,
            &format!("{DATA_PREFIX}/datasets/{name}"),
            Some(("application/json", &body)),
        )
        .await?)
}

/// The complete datasets.
pub async fn list_datasets(client: &Client) -> Result<Vec<DatasetInfo>, ClientError> {
    #[derive(serde::Deserialize)]
    struct List {
        items: Vec<DatasetInfo>,
    }
    let list: List = client
        .request_json(Method::GET, &format!("{DATA_PREFIX}/datasets"), None)
        .await?;
    Ok(list.items)
}

/// One dataset with its manifest.
pub async fn get_dataset(client: &Client, name: &str) -> Result<Dataset, ClientError> {
    client
        .request_json(Method::GET, &format!("{DATA_PREFIX}/datasets/{name}"), None)
        .await
}

/// Removes a dataset (its blobs go once nothing else names them).
pub async fn delete_dataset(client: &Client, name: &str) -> Result<DatasetInfo, ClientError> {
    client
        .request_json(
            Method::DELETE,
            &format!("{DATA_PREFIX}/datasets/{name}"),
            None,
        )
        .await
}

/// One blob, checked against its digest.
pub async fn fetch_blob(client: &Client, digest: &str) -> Result<Bytes, DataError> {
    let resp = client
        .send(Method::GET, &format!("{DATA_PREFIX}/blobs/{digest}"), None)
        .await?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DataError::Invalid(format!("reading blob {digest}: {e}")))?
        .to_bytes();
    let got = sha256_hex(&bytes);
    if got != digest {
        return Err(DataError::Invalid(format!(
            "blob {digest} arrived with sha256 {got}: corrupt"
        )));
    }
    Ok(bytes)
}

/// Writes the manifest's files under `dest`, which must not exist yet: into a sibling temporary
/// directory first, renamed into place only once every chunk arrived and checked, so `dest`
/// exists only complete.
pub async fn fetch_into(
    client: &Client,
    manifest: &Manifest,
    dest: &Path,
) -> Result<(), DataError> {
    manifest.validate().map_err(DataError::Invalid)?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let tmp = dest.with_file_name(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = async {
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        for f in &manifest.files {
            let path = tmp.join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut out = std::fs::File::create(&path).map_err(io(&path))?;
            for c in &f.chunks {
                let bytes = fetch_blob(client, c).await?;
                std::io::Write::write_all(&mut out, &bytes).map_err(io(&path))?;
            }
            out.sync_all().map_err(io(&path))?;
            let mode = if f.mode == 0 { 0o644 } else { f.mode & 0o777 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io(&path))?;
        }
        std::fs::rename(&tmp, dest).map_err(io(dest))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// sha256 of every file under `dir`, by relative path (for checks and tests).
pub fn checksums(dir: &Path) -> Result<Vec<(String, String)>, DataError> {
    scan(dir)?
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f.abs).map_err(io(&f.abs))?;
            Ok((f.rel, sha256_hex(&bytes)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_lists_regular_files_sorted_and_refuses_links() {
        let dir = std::env::temp_dir().join(format!("kumo-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b/c")).unwrap();
        std::fs::write(dir.join("b/c/x.bin"), b"xyz").unwrap();
        std::fs::write(dir.join("a.txt"), b"").unwrap();
        let got: Vec<(String, u64)> = scan(&dir)
            .unwrap()
            .into_iter()
            .map(|f| (f.rel, f.size))
            .collect();
        assert_eq!(got, vec![("a.txt".into(), 0), ("b/c/x.bin".into(), 3)]);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let err = scan(&dir).unwrap_err().to_string();
        assert!(err.contains("only regular files"), "{err}");
        assert!(scan(&dir.join("a.txt"))
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
