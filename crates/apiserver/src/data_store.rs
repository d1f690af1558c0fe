//! Datasets and outputs in the blob store ([`kumo_blob::BlobStore`]: the data dir by default, or
//! a bucket or shared directory every server uses): `blobs/{sha256}` (each verified before it
//! appears), `datasets/{name}.json` (a dataset exists once its record does, and the record is
//! written only when every blob it names is present), `outputs/{ns}/{path}/rank-{r}.json`.

use crate::datasets::DataRequest;
use crate::error::{json_response, ApiError, ApiResult};
use crate::request::Kind;
use crate::{body, read, App};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, StatusCode};
use kumo_api::dataset::{is_digest, Dataset, DatasetInfo, Manifest, BLOB_LIMIT};
use kumo_blob::BlobStore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A blob younger than this is never collected: it may belong to a push still uploading.
pub const GC_MIN_AGE: Duration = Duration::from_secs(3600);

/// Where datasets and outputs live, and the lock that orders this server's manifest writes
/// and collection.
pub struct DataStore {
    blobs: Arc<dyn BlobStore>,
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

/// A blob store failure as the API answers it.
fn blob_err(what: &str, e: kumo_blob::Error) -> ApiError {
    match e {
        kumo_blob::Error::TooLarge { .. } => ApiError::too_large(BLOB_LIMIT),
        kumo_blob::Error::Body(e) => {
            ApiError::bad_request(format!("reading the request body: {e}"))
        }
        kumo_blob::Error::Mismatch { .. } => ApiError::new(422, "Invalid", format!("{what}: {e}")),
        kumo_blob::Error::Key(_) => invalid(format!("{what}: {e}")),
        kumo_blob::Error::Backend(_) => ApiError::internal(format!("{what}: {e}")),
    }
}

fn blob_key(digest: &str) -> String {
    format!("blobs/{digest}")
}

fn dataset_key(name: &str) -> String {
    format!("datasets/{name}.json")
}

impl DataStore {
    pub fn new(blobs: Arc<dyn BlobStore>) -> Self {
        DataStore {
            blobs,
            lock: tokio::sync::Mutex::new(()),
        }
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
            "this server has no blob store, so it serves no datasets or outputs",
        ));
    };
    let ok = |v: serde_json::Value| json_response(StatusCode::OK, &v);
    match request {
        DataRequest::PutBlob { digest } => put_blob(store, &digest, headers, body).await,
        DataRequest::GetBlob { digest } => get_blob(store, &digest).await,
        DataRequest::ListDatasets => {
            let items = list_datasets(store).await?;
            Ok(ok(serde_json::json!({ "items": items })))
        }
        DataRequest::GetDataset { name } => Ok(json_response(
            StatusCode::OK,
            &get_dataset(store, &name).await?,
        )),
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

/// Streams the body into the blob store, which hashes it and stores it only when its sha256
/// is the one named.
async fn put_blob(
    store: &DataStore,
    digest: &str,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    check_digest(digest)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BLOB_LIMIT as u64) {
        return Err(ApiError::too_large(BLOB_LIMIT));
    }
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    let size = store
        .blobs
        .put_verified(&blob_key(digest), digest, stream, BLOB_LIMIT as u64)
        .await
        .map_err(|e| blob_err(&format!("blob {digest}"), e))?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "digest": digest, "size": size }),
    ))
}

async fn get_blob(store: &DataStore, digest: &str) -> ApiResult<Response> {
    check_digest(digest)?;
    match store.blobs.get(&blob_key(digest)).await {
        Ok(Some(stream)) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from_stream(stream),
        )
            .into_response()),
        Ok(None) => Err(ApiError::not_found_resource("blobs", digest)),
        Err(e) => Err(blob_err("reading a blob", e)),
    }
}

/// A stored record, decoded; `None` when absent.
async fn read_record<T: serde::de::DeserializeOwned>(
    blobs: &dyn BlobStore,
    key: &str,
) -> ApiResult<Option<T>> {
    let Some(bytes) = blobs
        .read(key)
        .await
        .map_err(|e| blob_err("reading a record", e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("record {key}: {e}")))
}

/// The keys of the dataset records (`datasets/{name}.json`, nothing deeper).
async fn dataset_keys(blobs: &dyn BlobStore) -> kumo_blob::Result<Vec<String>> {
    Ok(blobs
        .list("datasets")
        .await?
        .into_iter()
        .map(|e| e.key)
        .filter(|k| {
            k.strip_prefix("datasets/")
                .is_some_and(|n| !n.contains('/') && n.ends_with(".json"))
        })
        .collect())
}

async fn list_datasets(store: &DataStore) -> ApiResult<Vec<DatasetInfo>> {
    let keys = dataset_keys(store.blobs.as_ref())
        .await
        .map_err(|e| blob_err("listing datasets", e))?;
    let mut items = Vec::new();
    for key in keys {
        // Removed between the list and the read: not listed.
        if let Some(d) = read_record::<Dataset>(store.blobs.as_ref(), &key).await? {
            items.push(d.info);
        }
    }
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(items)
}

async fn get_dataset(store: &DataStore, name: &str) -> ApiResult<Dataset> {
    if !kumo_api::validation::is_dns_label(name) {
        return Err(ApiError::not_found_resource("datasets", name));
    }
    read_record(store.blobs.as_ref(), &dataset_key(name))
        .await?
        .ok_or_else(|| ApiError::not_found_resource("datasets", name))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(422, "Invalid", message)
}

/// Decodes and checks a manifest, and that every blob it names is stored with the right sizes.
async fn admit_manifest(
    store: &DataStore,
    what: &str,
    value: serde_json::Value,
) -> ApiResult<Manifest> {
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| invalid(format!("{what}: invalid manifest: {e}")))?;
    manifest
        .validate()
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    for (i, f) in manifest.files.iter().enumerate() {
        let mut total = 0u64;
        for (j, c) in f.chunks.iter().enumerate() {
            let size = store
                .blobs
                .size(&blob_key(c))
                .await
                .map_err(|e| blob_err("reading a blob", e))?;
            match size {
                Some(n) => total += n,
                None => {
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
    let manifest = admit_manifest(store, &format!("datasets {name:?}"), value).await?;
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
    // Create-only (a hard link, or If-None-Match on a bucket): two servers pushing one name
    // at once cannot both win.
    match store
        .blobs
        .put_new(&dataset_key(name), Bytes::from(bytes))
        .await
    {
        Ok(true) => Ok(info),
        Ok(false) => Err(ApiError::conflict(format!(
            "datasets {name:?} already exists (remove it first to replace it)"
        ))),
        Err(e) => Err(blob_err("storing a dataset", e)),
    }
}

/// Removes the record; its blobs go with the next collection ([`collect_garbage`]).
async fn delete_dataset(store: &DataStore, name: &str) -> ApiResult<DatasetInfo> {
    let _guard = store.lock.lock().await;
    let info = get_dataset(store, name).await?.info;
    store
        .blobs
        .delete(&dataset_key(name))
        .await
        .map_err(|e| blob_err("removing a dataset", e))?;
    Ok(info)
}

/// The blobs every dataset and output record names.
async fn referenced(blobs: &dyn BlobStore) -> kumo_blob::Result<BTreeSet<String>> {
    let mut used = BTreeSet::new();
    for key in dataset_keys(blobs).await? {
        let Some(bytes) = blobs.read(&key).await? else {
            continue;
        };
        if let Ok(d) = serde_json::from_slice::<Dataset>(&bytes) {
            used.extend(d.manifest.blobs().into_iter().map(str::to_string));
        }
    }
    for entry in blobs.list("outputs").await? {
        if !entry.key.ends_with(".json") {
            continue;
        }
        let Some(bytes) = blobs.read(&entry.key).await? else {
            continue;
        };
        if let Ok(r) = serde_json::from_slice::<OutputRecord>(&bytes) {
            used.extend(r.manifest.blobs().into_iter().map(str::to_string));
        }
    }
    Ok(used)
}

/// Removes the blobs no dataset or output names that are older than `min_age` (younger ones
/// may belong to a push still uploading); returns how many went. The blobs are listed before
/// the records, so a blob uploaded and named after the records were read is young, not
/// collected.
pub async fn collect_garbage(blobs: &dyn BlobStore, min_age: Duration) -> kumo_blob::Result<usize> {
    let listed = blobs.list("blobs").await?;
    let used = referenced(blobs).await?;
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in listed {
        let Some(digest) = entry.key.strip_prefix("blobs/") else {
            continue;
        };
        let old = now.duration_since(entry.modified).unwrap_or_default() > min_age;
        if old && !used.contains(digest) {
            blobs.delete(&entry.key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Collects unreferenced blobs every `interval` until dropped. The server runs it under a
/// Lease, so with several servers on one bucket only one collects at a time.
pub async fn collect_garbage_every(blobs: Arc<dyn BlobStore>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        match collect_garbage(blobs.as_ref(), GC_MIN_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "collected unreferenced blobs"),
            Err(e) => tracing::warn!(error = %e, "blob garbage collection failed"),
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

fn output_key(ns: &str, path: &str, rank: u64) -> String {
    format!("outputs/{ns}/{path}/rank-{rank}.json")
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
    let manifest = admit_manifest(store, &format!("output of rank {rank}"), value).await?;
    let record = OutputRecord {
        task_uid: uid,
        rank,
        manifest,
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    store
        .blobs
        .put(&output_key(ns, &path, rank.into()), Bytes::from(bytes))
        .await
        .map_err(|e| blob_err("storing an output", e))
}

async fn get_output(
    app: &App,
    store: &DataStore,
    ns: &str,
    task: &str,
) -> ApiResult<serde_json::Value> {
    let (uid, path, parallelism) = task_output(app, ns, task).await?;
    let mut ranks = Vec::new();
    for rank in 0..parallelism {
        let key = output_key(ns, &path, rank);
        let Ok(Some(bytes)) = store.blobs.read(&key).await else {
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
    use kumo_blob::test_s3::TestS3;
    use serde_json::json;

    fn manifest(size: u64, chunk: &str) -> serde_json::Value {
        json!({"files": [{"path": "d/a", "size": size, "mode": 420, "chunks": [chunk]}]})
    }

    async fn put(s: &DataStore, bytes: &'static [u8]) -> String {
        let digest = kumo_api::dataset::sha256_hex(bytes);
        let body = futures_util::stream::iter([Ok(Bytes::from_static(bytes))]).boxed();
        s.blobs
            .put_verified(&blob_key(&digest), &digest, body, 100)
            .await
            .unwrap();
        digest
    }

    #[tokio::test]
    async fn a_dataset_is_visible_only_complete_and_once_in_a_dir() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = kumo_blob::DirStore::open(dir.path().join("data")).unwrap();
        a_dataset_is_visible_only_complete_and_once(&DataStore::new(Arc::new(blobs))).await;
        // No temporary files are left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("data/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_dataset_is_visible_only_complete_and_once_in_a_bucket() {
        let s3 = TestS3::start().unwrap();
        let url = kumo_blob::BlobUrl::S3(s3.url("kumo"));
        let blobs = kumo_blob::open(&url, Some(TestS3::credentials()))
            .await
            .unwrap();
        a_dataset_is_visible_only_complete_and_once(&DataStore::new(blobs)).await;
    }

    async fn a_dataset_is_visible_only_complete_and_once(s: &DataStore) {
        let digest = kumo_api::dataset::sha256_hex(b"abc");
        let err = put_dataset(s, "ds", manifest(3, &digest))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 422);
        assert!(err.0.message.contains("has not been uploaded"), "{err}");
        assert!(list_datasets(s).await.unwrap().is_empty());
        put(s, b"abc").await;
        let err = put_dataset(s, "ds", manifest(2, &digest))
            .await
            .unwrap_err();
        assert!(
            err.0
                .message
                .contains("files[0].size: 2 bytes, but its chunks hold 3"),
            "{err}"
        );
        let err = put_dataset(s, "Bad_Name", manifest(3, &digest))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 422);
        let info = put_dataset(s, "ds", manifest(3, &digest)).await.unwrap();
        assert_eq!((info.files, info.size), (1, 3));
        assert_eq!(
            put_dataset(s, "ds", manifest(3, &digest))
                .await
                .unwrap_err()
                .code(),
            409
        );
        assert_eq!(list_datasets(s).await.unwrap(), vec![info.clone()]);
        assert_eq!(get_dataset(s, "ds").await.unwrap().info, info);
        // Removed: gone from the list; its blob is young, so collection keeps it for a push
        // in progress.
        delete_dataset(s, "ds").await.unwrap();
        assert!(list_datasets(s).await.unwrap().is_empty());
        assert_eq!(get_dataset(s, "ds").await.unwrap_err().code(), 404);
        assert_eq!(
            collect_garbage(s.blobs.as_ref(), GC_MIN_AGE).await.unwrap(),
            0
        );
        assert_eq!(s.blobs.size(&blob_key(&digest)).await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn collection_removes_only_old_unreferenced_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = kumo_blob::DirStore::open(dir.path().join("data")).unwrap();
        let s = DataStore::new(Arc::new(blobs));
        let kept = put(&s, b"in a dataset").await;
        let output = put(&s, b"in an output").await;
        let orphan = put(&s, b"named by nothing").await;
        put_dataset(&s, "ds", manifest(12, &kept)).await.unwrap();
        let record = OutputRecord {
            task_uid: "u".into(),
            rank: 0,
            manifest: serde_json::from_value(manifest(12, &output)).unwrap(),
        };
        s.blobs
            .put(
                &output_key("ml", "runs/a", 0),
                serde_json::to_vec(&record).unwrap().into(),
            )
            .await
            .unwrap();
        // Every blob is young: none goes.
        assert_eq!(
            collect_garbage(s.blobs.as_ref(), GC_MIN_AGE).await.unwrap(),
            0
        );
        // With no minimum age, only the orphan goes.
        assert_eq!(
            collect_garbage(s.blobs.as_ref(), Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        let present = |d: String| {
            let blobs = Arc::clone(&s.blobs);
            async move { blobs.size(&blob_key(&d)).await.unwrap().is_some() }
        };
        assert!(present(kept.clone()).await);
        assert!(present(output).await);
        assert!(!present(orphan).await);
        delete_dataset(&s, "ds").await.unwrap();
        assert_eq!(
            collect_garbage(s.blobs.as_ref(), Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert!(!present(kept).await);
    }
}
