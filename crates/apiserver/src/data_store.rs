//! The data store in the server's data dir: `blobs/{sha256}` (each verified before it is renamed
//! into place), `datasets/{name}.json` (a dataset exists once its record does, and the record is
//! written only when every blob it names is present), `outputs/{ns}/{path}/rank-{r}.json`.

use crate::datasets::DataRequest;
use crate::error::{json_response, ApiError, ApiResult};
use crate::request::Kind;
use crate::{body, read, App};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use kumo_api::dataset::{is_digest, Dataset, DatasetInfo, Manifest, BLOB_LIMIT};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// A blob younger than this is never collected: it may belong to a push still uploading.
const GC_MIN_AGE: Duration = Duration::from_secs(3600);

/// Where datasets and outputs live, and the lock that orders manifest writes and collection.
pub struct DataStore {
    root: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

/// One replica's output as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputRecord {
    pub task_uid: String,
    pub rank: u32,
    pub manifest: Manifest,
}

fn io_err(what: &str, e: std::io::Error) -> ApiError {
    ApiError::internal(format!("{what}: {e}"))
}

impl DataStore {
    /// Creates the dirs, 0700 (users' data: only the server's user reads it), tightening ones
    /// an older kumo made looser.
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for sub in ["", "blobs", "datasets", "outputs", "tmp"] {
            let dir = root.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(DataStore {
            root,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.root.join("blobs").join(digest)
    }

    fn tmp(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    fn dataset(&self, name: &str) -> PathBuf {
        self.root.join("datasets").join(format!("{name}.json"))
    }
}

/// Answers one data request.
pub async fn serve(
    app: &Arc<App>,
    request: DataRequest,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Some(store) = app.data.as_ref() else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "this server has no data dir, so it serves no datasets or outputs",
        ));
    };
    let ok = |v: serde_json::Value| json_response(StatusCode::OK, &v);
    match request {
        DataRequest::PutBlob { digest } => put_blob(store, &digest, headers, body).await,
        DataRequest::GetBlob { digest } => get_blob(store, &digest).await,
        DataRequest::ListDatasets => {
            let items = list_datasets(store)?;
            Ok(ok(serde_json::json!({ "items": items })))
        }
        DataRequest::GetDataset { name } => {
            Ok(json_response(StatusCode::OK, &get_dataset(store, &name)?))
        }
        DataRequest::PutDataset { name } => {
            let value = body::read_json(headers, body).await?;
            let info = put_dataset(store, &name, value).await?;
            Ok(json_response(StatusCode::CREATED, &info))
        }
        DataRequest::DeleteDataset { name } => {
            let info = delete_dataset(store, &name).await?;
            Ok(json_response(StatusCode::OK, &info))
        }
        DataRequest::PutOutput { ns, task, rank } => {
            let value = body::read_json(headers, body).await?;
            put_output(app, store, &ns, &task, rank, value).await?;
            Ok(ok(serde_json::json!({ "task": task, "rank": rank })))
        }
        DataRequest::GetOutput { ns, task } => Ok(ok(get_output(app, store, &ns, &task).await?)),
    }
}

fn check_digest(digest: &str) -> ApiResult<()> {
    if is_digest(digest) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "blob name {digest:?} is not a sha256 in lower-case hex"
        )))
    }
}

/// Streams the body into a temporary file while hashing it; renamed into place only when its
/// sha256 is the one named.
async fn put_blob(
    store: &DataStore,
    digest: &str,
    headers: &HeaderMap,
    mut body: Body,
) -> ApiResult<Response> {
    check_digest(digest)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BLOB_LIMIT as u64) {
        return Err(ApiError::too_large(BLOB_LIMIT));
    }
    let tmp = store.tmp();
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_err("creating a blob", e))?;
        let mut hasher = Sha256::new();
        let mut size = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                size += data.len();
                if size > BLOB_LIMIT {
                    return Err(ApiError::too_large(BLOB_LIMIT));
                }
                hasher.update(&data);
                file.write_all(&data)
                    .await
                    .map_err(|e| io_err("writing a blob", e))?;
            }
        }
        let got = kumo_api::dataset::hex(&hasher.finalize());
        if got != digest {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("blob {digest}: the bytes received have sha256 {got} (corrupt or incomplete upload)"),
            ));
        }
        file.sync_all()
            .await
            .map_err(|e| io_err("writing a blob", e))?;
        tokio::fs::rename(&tmp, store.blob(digest))
            .await
            .map_err(|e| io_err("storing a blob", e))?;
        Ok(size)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    let size = result?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "digest": digest, "size": size }),
    ))
}

async fn get_blob(store: &DataStore, digest: &str) -> ApiResult<Response> {
    check_digest(digest)?;
    match tokio::fs::read(store.blob(digest)).await {
        Ok(bytes) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ApiError::not_found_resource("blobs", digest))
        }
        Err(e) => Err(io_err("reading a blob", e)),
    }
}

fn read_dataset(path: &Path) -> ApiResult<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| io_err("reading a dataset", e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("dataset record {}: {e}", path.display())))
}

fn list_datasets(store: &DataStore) -> ApiResult<Vec<DatasetInfo>> {
    let dir = std::fs::read_dir(store.root.join("datasets"))
        .map_err(|e| io_err("listing datasets", e))?;
    let mut items = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            items.push(read_dataset(&path)?.info);
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(items)
}

fn get_dataset(store: &DataStore, name: &str) -> ApiResult<Dataset> {
    let path = store.dataset(name);
    if !kumo_api::validation::is_dns_label(name) || !path.exists() {
        return Err(ApiError::not_found_resource("datasets", name));
    }
    read_dataset(&path)
}

fn invalid(message: String) -> ApiError {
    ApiError::new(422, "Invalid", message)
}

/// Decodes and checks a manifest, and that every blob it names is stored with the right sizes.
fn admit_manifest(store: &DataStore, what: &str, value: serde_json::Value) -> ApiResult<Manifest> {
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| invalid(format!("{what}: invalid manifest: {e}")))?;
    manifest
        .validate()
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    for (i, f) in manifest.files.iter().enumerate() {
        let mut total = 0u64;
        for (j, c) in f.chunks.iter().enumerate() {
            match std::fs::metadata(store.blob(c)) {
                Ok(m) => total += m.len(),
                Err(_) => {
                    return Err(invalid(format!(
                        "{what}: files[{i}].chunks[{j}]: blob {c} has not been uploaded"
                    )))
                }
            }
        }
        if total != f.size {
            return Err(invalid(format!(
                "{what}: files[{i}].size: {} bytes, but its chunks hold {total}",
                f.size
            )));
        }
    }
    Ok(manifest)
}

/// Writes `bytes` to a temporary file and links it at `dest`: all or nothing, and never over an
/// existing file (`Ok(false)` then).
fn write_new(store: &DataStore, dest: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    let tmp = store.tmp();
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

async fn put_dataset(
    store: &DataStore,
    name: &str,
    value: serde_json::Value,
) -> ApiResult<DatasetInfo> {
    if !kumo_api::validation::is_dns_label(name) {
        return Err(invalid(format!(
            "datasets {name:?}: metadata.name: Invalid value: must be a DNS label"
        )));
    }
    let _guard = store.lock.lock().await;
    let manifest = admit_manifest(store, &format!("datasets {name:?}"), value)?;
    let info = DatasetInfo {
        name: name.to_string(),
        files: manifest.files.len(),
        size: manifest.size(),
        digest: manifest.digest(),
        created: chrono::Utc::now(),
    };
    let record = Dataset {
        info: info.clone(),
        manifest,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    match write_new(store, &store.dataset(name), &bytes) {
        Ok(true) => Ok(info),
        Ok(false) => Err(ApiError::conflict(format!(
            "datasets {name:?} already exists (remove it first to replace it)"
        ))),
        Err(e) => Err(io_err("storing a dataset", e)),
    }
}

async fn delete_dataset(store: &DataStore, name: &str) -> ApiResult<DatasetInfo> {
    let _guard = store.lock.lock().await;
    let info = get_dataset(store, name)?.info;
    std::fs::remove_file(store.dataset(name)).map_err(|e| io_err("removing a dataset", e))?;
    collect_garbage(store);
    Ok(info)
}

/// Every output record file under `dir`.
fn output_records(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            output_records(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// Removes blobs no dataset or output names (and old enough not to be a push in progress).
fn collect_garbage(store: &DataStore) {
    let mut used = std::collections::BTreeSet::new();
    if let Ok(items) = std::fs::read_dir(store.root.join("datasets")) {
        for e in items.flatten() {
            if let Ok(d) = read_dataset(&e.path()) {
                used.extend(d.manifest.blobs().into_iter().map(str::to_string));
            }
        }
    }
    let mut records = Vec::new();
    output_records(&store.root.join("outputs"), &mut records);
    for path in records {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if let Ok(r) = serde_json::from_slice::<OutputRecord>(&bytes) {
            used.extend(r.manifest.blobs().into_iter().map(str::to_string));
        }
    }
    let Ok(blobs) = std::fs::read_dir(store.root.join("blobs")) else {
        return;
    };
    let now = SystemTime::now();
    for e in blobs.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > GC_MIN_AGE);
        if old && !used.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The task's uid, output path and parallelism, or why it has no output.
async fn task_output(app: &App, ns: &str, task: &str) -> ApiResult<(String, String, u64)> {
    let kind = Kind(kumo_api::kind_by_name("mltask").expect("MLTask is a served kind"));
    let obj = read::get(app, kind, Some(ns), task).await?;
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(path) = obj["spec"]["output"]["path"].as_str() else {
        return Err(invalid(format!(
            "mltasks.kumo.dev {task:?}: spec.output.path: Required value: the task collects no output"
        )));
    };
    let parallelism = obj["spec"]["parallelism"].as_u64().unwrap_or(1);
    Ok((uid, path.to_string(), parallelism))
}

fn output_dir(store: &DataStore, ns: &str, path: &str) -> PathBuf {
    store.root.join("outputs").join(ns).join(path)
}

async fn put_output(
    app: &App,
    store: &DataStore,
    ns: &str,
    task: &str,
    rank: u32,
    value: serde_json::Value,
) -> ApiResult<()> {
    let (uid, path, parallelism) = task_output(app, ns, task).await?;
    if u64::from(rank) >= parallelism {
        return Err(invalid(format!(
            "mltasks.kumo.dev {task:?}: rank {rank}: the task has {parallelism} replica(s)"
        )));
    }
    let _guard = store.lock.lock().await;
    let manifest = admit_manifest(store, &format!("output of rank {rank}"), value)?;
    let dir = output_dir(store, ns, &path);
    std::fs::create_dir_all(&dir).map_err(|e| io_err("storing an output", e))?;
    let record = OutputRecord {
        task_uid: uid,
        rank,
        manifest,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    let tmp = store.tmp();
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, dir.join(format!("rank-{rank}.json"))))
        .map_err(|e| io_err("storing an output", e))
}

async fn get_output(
    app: &App,
    store: &DataStore,
    ns: &str,
    task: &str,
) -> ApiResult<serde_json::Value> {
    let (uid, path, parallelism) = task_output(app, ns, task).await?;
    let dir = output_dir(store, ns, &path);
    let mut ranks = Vec::new();
    for rank in 0..parallelism {
        let Ok(bytes) = std::fs::read(dir.join(format!("rank-{rank}.json"))) else {
            continue;
        };
        // Another task may have written the same path: only this task's records count.
        if let Ok(r) = serde_json::from_slice::<OutputRecord>(&bytes) {
            if r.task_uid == uid {
                ranks.push(r);
            }
        }
    }
    Ok(serde_json::json!({ "task": task, "path": path, "ranks": ranks }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> DataStore {
        let dir =
            std::env::temp_dir().join(format!("kumo-data-store-{}", uuid::Uuid::new_v4().simple()));
        DataStore::open(dir).unwrap()
    }

    #[test]
    fn dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let s = store();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = DataStore::open(s.root.clone()).unwrap();
        for sub in ["", "blobs", "datasets", "outputs", "tmp"] {
            assert_eq!(mode(&s.root.join(sub)), 0o700, "{sub}");
        }
        std::fs::remove_dir_all(&s.root).unwrap();
    }

    fn manifest(size: u64, chunk: &str) -> serde_json::Value {
        json!({"files": [{"path": "d/a", "size": size, "mode": 420, "chunks": [chunk]}]})
    }

    #[tokio::test]
    async fn a_dataset_is_visible_only_complete_and_once() {
        let s = store();
        let digest = kumo_api::dataset::sha256_hex(b"abc");
        let err = put_dataset(&s, "ds", manifest(3, &digest))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 422);
        assert!(err.0.message.contains("has not been uploaded"), "{err}");
        assert!(list_datasets(&s).unwrap().is_empty());
        std::fs::write(s.blob(&digest), b"abc").unwrap();
        let err = put_dataset(&s, "ds", manifest(2, &digest))
            .await
            .unwrap_err();
        assert!(
            err.0
                .message
                .contains("files[0].size: 2 bytes, but its chunks hold 3"),
            "{err}"
        );
        let err = put_dataset(&s, "Bad_Name", manifest(3, &digest))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 422);
        let info = put_dataset(&s, "ds", manifest(3, &digest)).await.unwrap();
        assert_eq!((info.files, info.size), (1, 3));
        assert_eq!(
            put_dataset(&s, "ds", manifest(3, &digest))
                .await
                .unwrap_err()
                .code(),
            409
        );
        assert_eq!(list_datasets(&s).unwrap(), vec![info.clone()]);
        assert_eq!(get_dataset(&s, "ds").unwrap().info, info);
        // Removed: gone from the list; its blob is young, so it stays for a push in progress.
        delete_dataset(&s, "ds").await.unwrap();
        assert!(list_datasets(&s).unwrap().is_empty());
        assert_eq!(get_dataset(&s, "ds").unwrap_err().code(), 404);
        assert!(s.blob(&digest).exists());
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(s.root.join("tmp")).unwrap().count(), 0);
        std::fs::remove_dir_all(&s.root).unwrap();
    }
}
