//! `--blob-store` values (`dir:///PATH`, `s3://BUCKET/PREFIX?endpoint=…&region=…`) and the
//! bucket's credentials, which never come from the URL (it is in argv).

use std::path::PathBuf;

/// A parsed `--blob-store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobUrl {
    Dir(PathBuf),
    S3(S3Url),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Keys go under this (no leading or trailing `/`; empty: the bucket's root).
    pub prefix: String,
    /// `http(s)://HOST:PORT` of an S3-compatible server; `None`: AWS.
    pub endpoint: Option<String>,
    pub region: String,
}

impl S3Url {
    /// `s3://BUCKET/PREFIX at ENDPOINT`, for messages.
    pub fn describe(&self) -> String {
        let at = self.endpoint.as_deref().unwrap_or("aws");
        if self.prefix.is_empty() {
            format!("s3://{} at {at}", self.bucket)
        } else {
            format!("s3://{}/{} at {at}", self.bucket, self.prefix)
        }
    }
}

/// The bucket's access key: from the environment or a file, never from argv.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Never prints the secret.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), when both are set.
    pub fn from_env() -> Option<Self> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        Some(Credentials {
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }

    /// A file of `KEY=VALUE` lines (`#` comments; the keys as the environment's, or as in
    /// `~/.aws/credentials`: `aws_access_key_id = …`). The error names a line, never a value.
    pub fn parse_file(text: &str) -> Result<Self, String> {
        let (mut id, mut secret, mut token) = (None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected KEY=VALUE", n + 1));
            };
            let value = value.trim().trim_matches('"').to_string();
            match key.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(value),
                "aws_secret_access_key" => secret = Some(value),
                "aws_session_token" => token = Some(value),
                other => return Err(format!("line {}: unknown key {other:?}", n + 1)),
            }
        }
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key))
                if !access_key_id.is_empty() && !secret_access_key.is_empty() =>
            {
                Ok(Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: token,
                })
            }
            _ => Err("expected both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()),
        }
    }
}

fn bucket_ok(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && !b.starts_with(['.', '-'])
        && !b.ends_with(['.', '-'])
}

/// Parses a `--blob-store` value. The error quotes only the part at fault (the URL holds no
/// secret, but it is kept short).
pub fn parse(text: &str) -> Result<BlobUrl, String> {
    if let Some(path) = text.strip_prefix("dir://") {
        if !path.starts_with('/') {
            return Err(format!(
                "dir://{path}: expected an absolute path (dir:///PATH)"
            ));
        }
        return Ok(BlobUrl::Dir(PathBuf::from(path)));
    }
    let Some(rest) = text.strip_prefix("s3://") else {
        let scheme = text.split_once("://").map_or(text, |(s, _)| s);
        return Err(format!(
            "unsupported blob store {scheme:?}: expected dir:///PATH or s3://BUCKET/PREFIX?endpoint=URL&region=REGION"
        ));
    };
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.contains('@') {
        return Err("s3://: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or give --blob-store-credentials-file".into());
    }
    if !bucket_ok(bucket) {
        return Err(format!(
            "s3://{bucket}: invalid bucket name (3 to 63 lower-case letters, digits, '.' or '-')"
        ));
    }
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() {
        crate::check_key(&prefix).map_err(|_| format!("s3://{bucket}/{prefix}: invalid prefix"))?;
    }
    let mut url = S3Url {
        bucket: bucket.to_string(),
        prefix,
        endpoint: None,
        region: "us-east-1".into(),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if value.is_empty() {
            return Err(format!("s3:// query {key:?}: empty value"));
        }
        match key {
            "endpoint" => {
                let host = value
                    .strip_prefix("http://")
                    .or_else(|| value.strip_prefix("https://"))
                    .ok_or_else(|| {
                        format!("s3:// endpoint {value:?}: expected http://HOST:PORT or https://HOST[:PORT]")
                    })?;
                if host.is_empty() || host.contains('@') {
                    return Err(
                        "s3:// endpoint: expected http://HOST:PORT or https://HOST[:PORT]".into(),
                    );
                }
                url.endpoint = Some(value.trim_end_matches('/').to_string());
            }
            "region" => url.region = value.to_string(),
            other => {
                return Err(format!(
                    "s3:// query {other:?}: unknown (expected endpoint or region)"
                ))
            }
        }
    }
    Ok(BlobUrl::S3(url))
}
