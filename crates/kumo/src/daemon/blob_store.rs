//! Where datasets and task outputs live (`--blob-store`): the data dir's `data/` by default, a
//! directory every server mounts, or an S3-compatible bucket; the bucket's key comes from the
//! environment or a file, never from argv.

use anyhow::{anyhow, Context};
use clap::Args;
use kumo_blob::{BlobStore, BlobUrl, Credentials};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Flags choosing the blob store, shared by `up` and `server`.
#[derive(Args, Debug, Clone)]
pub struct BlobStoreArgs {
    /// Where dataset and output bytes live: dir:///PATH (a directory, e.g. a shared file system
    /// mounted on every server) or s3://BUCKET/PREFIX?endpoint=URL&region=REGION (default: the
    /// data dir's data/); a bucket's key comes from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    /// or --blob-store-credentials-file
    // Parsed in `open`, not by clap, as --store: the error names the flag.
    #[arg(long = "blob-store", env = "KUMO_BLOB_STORE", hide_env_values = true)]
    pub blob_store: Option<String>,
    /// A file of AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… lines for an s3:// blob store
    #[arg(long)]
    pub blob_store_credentials_file: Option<PathBuf>,
    /// How often blobs no dataset or output names (and older than an hour) are removed, by one
    /// server at a time (under the Lease kumo-blob-gc)
    #[arg(long, default_value = "10m", value_parser = gc_interval)]
    pub blob_gc_interval: Duration,
}

/// 1s to 24h (a zero interval would spin; a longer one would in effect never collect).
fn gc_interval(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse_duration(text)?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{text:?}: must be from 1s to 24h"));
    }
    Ok(d)
}

/// The credentials for a bucket: the file when given, else the environment.
pub fn credentials(file: Option<&Path>) -> anyhow::Result<Option<Credentials>> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--blob-store-credentials-file {}", path.display()))?;
            let creds = Credentials::parse_file(&text)
                .map_err(|e| anyhow!("--blob-store-credentials-file {}: {e}", path.display()))?;
            Ok(Some(creds))
        }
        None => Ok(Credentials::from_env()),
    }
}

/// Parses a `--blob-store` value, the error naming the flag.
pub fn parse(text: &str) -> anyhow::Result<BlobUrl> {
    kumo_blob::parse(text).map_err(|e| anyhow!("--blob-store: {e}"))
}

/// Opens the blob store the flags name (an S3 one is checked to answer), or the data dir's.
pub async fn open(args: &BlobStoreArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn BlobStore>> {
    let url = match &args.blob_store {
        Some(text) => parse(text)?,
        None => BlobUrl::Dir(data_dir.join("data")),
    };
    let creds = match url {
        BlobUrl::S3(_) => credentials(args.blob_store_credentials_file.as_deref())?,
        BlobUrl::Dir(_) => None,
    };
    kumo_blob::open(&url, creds)
        .await
        .map_err(|e| anyhow!("--blob-store: {e}"))
}
