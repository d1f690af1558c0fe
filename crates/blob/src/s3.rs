//! The S3 backend through `object_store`: keys under the URL's prefix in one bucket. A blob is
//! verified in memory (at most the blob limit, 8 MiB) and written with one PUT, so it appears
//! whole or not at all; a create-only write is a PUT with `If-None-Match: *`.

use crate::url::{Credentials, S3Url};
use crate::{check_key, read_verified, ByteStream, Entry, Error, Result};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};
use std::time::Duration;

#[derive(Debug)]
pub struct S3Store {
    store: AmazonS3,
    url: S3Url,
}

impl S3Store {
    /// A client for the bucket; nothing is sent yet ([`crate::BlobStore::check`] does).
    pub fn new(url: &S3Url, credentials: &Credentials) -> Result<Self> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(&url.region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key)
            // A server that is down is reported within seconds, not after object_store's
            // default three minutes of retries.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &url.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| Error::Backend(format!("{}: {e}", url.describe())))?;
        Ok(S3Store {
            store,
            url: url.clone(),
        })
    }

    fn path(&self, key: &str) -> Result<Path> {
        check_key(key)?;
        Ok(Path::from(self.full(key)))
    }

    fn full(&self, key: &str) -> String {
        if self.url.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.url.prefix)
        }
    }

    fn fail(&self, what: &str, key: &str, e: object_store::Error) -> Error {
        Error::Backend(format!("{what} {key} in {}: {e}", self.url.describe()))
    }
}

#[async_trait::async_trait]
impl crate::BlobStore for S3Store {
    fn describe(&self) -> String {
        self.url.describe()
    }

    async fn put_verified(
        &self,
        key: &str,
        sha256: &str,
        body: ByteStream,
        limit: u64,
    ) -> Result<u64> {
        let path = self.path(key)?;
        let bytes = read_verified(body, sha256, limit).await?;
        let size = bytes.len() as u64;
        self.store
            .put(&path, Bytes::from(bytes).into())
            .await
            .map_err(|e| self.fail("writing", key, e))?;
        Ok(size)
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(key)?;
        self.store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.fail("writing", key, e))
    }

    async fn put_new(&self, key: &str, bytes: Bytes) -> Result<bool> {
        let path = self.path(key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.store.put_opts(&path, bytes.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.fail("writing", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<ByteStream>> {
        let path = self.path(key)?;
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(
                got.into_stream().map_err(std::io::Error::other).boxed(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("reading", key, e)),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("reading", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let prefix = prefix.trim_end_matches('/');
        let under = if prefix.is_empty() {
            (!self.url.prefix.is_empty()).then(|| Path::from(self.url.prefix.as_str()))
        } else {
            Some(self.path(prefix)?)
        };
        let strip = if self.url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.url.prefix)
        };
        let metas: Vec<_> = self
            .store
            .list(under.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.fail("listing", prefix, e))?;
        let mut out: Vec<Entry> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some(Entry {
                    key,
                    size: m.size,
                    modified: m.last_modified.into(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("removing", key, e)),
        }
    }

    /// Lists the prefix (one request): a missing bucket, a refused connection or bad
    /// credentials are reported here, naming the endpoint.
    async fn check(&self) -> Result<()> {
        let under = (!self.url.prefix.is_empty()).then(|| Path::from(self.url.prefix.as_str()));
        self.store
            .list_with_delimiter(under.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| Error::Backend(format!("cannot reach {}: {e}", self.url.describe())))
    }
}
