//! Where dataset and output bytes live: a directory (the default, or a shared file system
//! mounted on every server) or an S3-compatible bucket, behind one trait, so that a dataset
//! pushed through one API server is pulled through another.
//!
//! Keys are relative, `/`-separated paths (`blobs/{sha256}`, `datasets/{name}.json`,
//! `outputs/{ns}/{path}/rank-{r}.json`); both backends lay them out the same way.
#![forbid(unsafe_code)]

mod dir;
mod s3;
pub mod test_s3;
#[cfg(test)]
mod tests;
mod url;

pub use dir::DirStore;
pub use s3::S3Store;
pub use url::{parse, BlobUrl, Credentials, S3Url};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::SystemTime;

/// Bytes as they are streamed in or out.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The object's key (without the store's own prefix).
    pub key: String,
    pub size: u64,
    /// When it was last written (its age decides garbage collection).
    pub modified: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the bytes received have sha256 {got} (corrupt or incomplete upload)")]
    Mismatch { got: String },
    #[error("reading the upload: {0}")]
    Body(std::io::Error),
    #[error("invalid key {0:?}: expected a relative path of non-empty segments")]
    Key(String),
    /// The backend failed: the message says what was being done and where.
    #[error("{0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A blob store. Writes are all or nothing: a reader sees a whole object or none.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Where the store is, for messages (never a credential).
    fn describe(&self) -> String;

    /// Streams `body` to `key` while hashing it; the object appears only when the bytes'
    /// sha256 is `sha256` and they are at most `limit`. Returns the size.
    async fn put_verified(
        &self,
        key: &str,
        sha256: &str,
        body: ByteStream,
        limit: u64,
    ) -> Result<u64>;

    /// Writes a small object whole, replacing any there.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<()>;

    /// Writes a small object only if none is at `key`; `false` when one is.
    async fn put_new(&self, key: &str, bytes: Bytes) -> Result<bool>;

    /// The object's bytes, streamed; `None` when absent.
    async fn get(&self, key: &str) -> Result<Option<ByteStream>>;

    /// The object's size; `None` when absent.
    async fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Every object under the directory `prefix` (`""`: all), with sizes and ages, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>>;

    /// Removes the object; absent is fine.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Checks that the store answers (at start, so a wrong endpoint is reported at once).
    async fn check(&self) -> Result<()> {
        self.size("blobs/.kumo-check").await.map(|_| ())
    }

    /// The whole object; `None` when absent.
    async fn read(&self, key: &str) -> Result<Option<Bytes>> {
        let Some(mut stream) = self.get(key).await? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Backend(format!("reading {key}: {e}")))?;
            out.extend_from_slice(&chunk);
        }
        Ok(Some(Bytes::from(out)))
    }
}

/// Opens the store a parsed URL names; an S3 store is checked to answer.
pub async fn open(url: &BlobUrl, credentials: Option<Credentials>) -> Result<Arc<dyn BlobStore>> {
    let store: Arc<dyn BlobStore> = match url {
        BlobUrl::Dir(path) => Arc::new(
            DirStore::open(path.clone())
                .map_err(|e| Error::Backend(format!("opening {}: {e}", path.display())))?,
        ),
        BlobUrl::S3(s3) => {
            let credentials = credentials.ok_or_else(|| {
                Error::Backend(
                    "no credentials for the bucket: set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY or give --blob-store-credentials-file"
                        .into(),
                )
            })?;
            let store = S3Store::new(s3, &credentials)?;
            store.check().await?;
            Arc::new(store)
        }
    };
    Ok(store)
}

/// Whether `key` is a relative path of non-empty segments, none of them `.` or `..`.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\'));
    if ok {
        Ok(())
    } else {
        Err(Error::Key(key.to_string()))
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `body` whole while hashing it, refusing more than `limit` bytes or another sha256.
async fn read_verified(mut body: ByteStream, sha256: &str, limit: u64) -> Result<Vec<u8>> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Error::Body)?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(Error::TooLarge { limit });
        }
        hasher.update(&chunk);
        out.extend_from_slice(&chunk);
    }
    let got = hex(&hasher.finalize());
    if got != sha256 {
        return Err(Error::Mismatch { got });
    }
    Ok(out)
}
