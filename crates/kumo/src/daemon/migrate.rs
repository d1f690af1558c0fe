//! `kumo store migrate`: moves a stopped single-machine kumo onto etcd. Every key of its redb
//! store is copied with its value as stored (Secrets stay encrypted with the data dir's key;
//! `resourceVersion` is not in stored values, so objects come out with etcd's revisions), the
//! counts are checked per kind, and the data dir's datasets and outputs can go to a blob store.

use super::{blob_store, store};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use kumo_blob::BlobStore;
use kumo_store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StoreCmdArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a stopped kumo's store (DATA_DIR/store.redb) into etcd, and optionally its datasets
    /// and outputs into a blob store; then start `kumo server --store etcd://… --data-dir
    /// DATA_DIR`
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The data dir of the kumo to move (it must be stopped)
    #[arg(long)]
    pub from: PathBuf,
    /// The etcd to copy into: etcd://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]; from the
    /// environment keeps a password out of the process list
    // Parsed here, not by clap, so that an error never prints the password.
    // The environment's value is never shown in --help: it may hold the password.
    #[arg(long, env = "KUMO_STORE", hide_env_values = true)]
    pub to: String,
    /// CA certificate (PEM) that signed etcd's certificate
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-cert-auth
    #[arg(long, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// Key (PEM) of --etcd-certfile
    #[arg(long, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Copy into a target that already holds keys or objects (those with the same key are
    /// replaced)
    #[arg(long)]
    pub force: bool,
    /// Also copy DATA_DIR/data (datasets, outputs and their blobs) into this blob store:
    /// dir:///PATH or s3://BUCKET/PREFIX?endpoint=URL&region=REGION
    #[arg(long)]
    pub blob_store_to: Option<String>,
    /// A file of AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… lines for an s3:// target
    #[arg(long)]
    pub blob_store_credentials_file: Option<PathBuf>,
}

pub async fn run(args: StoreCmdArgs) -> anyhow::Result<ExitCode> {
    let StoreCommand::Migrate(args) = args.command;
    migrate(args).await
}

/// The kind a store key belongs to: `pods` or `mltasks.kumo.dev` from
/// `/registry/{group|core}/{plural}/…`. Pure.
pub fn kind_of(key: &str) -> String {
    let mut segs = key.trim_start_matches('/').split('/').skip(1);
    match (segs.next(), segs.next()) {
        (Some("core"), Some(plural)) => plural.to_string(),
        (Some(group), Some(plural)) => format!("{plural}.{group}"),
        _ => key.to_string(),
    }
}

/// The kind of a blob-store key: its first segment (`blobs`, `datasets`, `outputs`). Pure.
fn blob_kind(key: &str) -> String {
    key.split('/').next().unwrap_or(key).to_string()
}

fn count<'a>(
    keys: impl Iterator<Item = &'a str>,
    kind: fn(&str) -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for k in keys {
        *counts.entry(kind(k)).or_insert(0) += 1;
    }
    counts
}

fn print_counts(what: &str, counts: &BTreeMap<String, usize>) {
    let width = counts.keys().map(String::len).max().unwrap_or(4).max(4);
    println!("{:<width$}  {what}", "KIND");
    for (kind, n) in counts {
        println!("{kind:<width$}  {n}");
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = store::parse_store(&args.to).map_err(|e| anyhow!("--to: {e}"))?;
    let target_name = format!("etcd://{}", url.hosts.join(","));
    let redb = args.from.join("store.redb");
    if !redb.is_file() {
        bail!(
            "--from {}: no store.redb there (not the data dir of a kumo on its embedded store)",
            args.from.display()
        );
    }
    // redb holds a lock on its file while a server has it open: a running kumo is refused here.
    let source = kumo_store::RedbStore::open(&redb, kumo_store::WatchWindow::default()).map_err(
        |e| {
            anyhow!(
                "cannot open {}: {e} (stop the kumo using this data dir first: only a stopped one is migrated)",
                redb.display()
            )
        },
    )?;
    let store_args = store::StoreArgs {
        store: Some(args.to.clone()),
        etcd_cafile: args.etcd_cafile.clone(),
        etcd_certfile: args.etcd_certfile.clone(),
        etcd_keyfile: args.etcd_keyfile.clone(),
        // Not compacted by this short run: one interval is never reached.
        etcd_compaction_interval: std::time::Duration::from_secs(24 * 3600),
    };
    let target = store::open(&store_args, &args.from, kumo_store::WatchWindow::default())
        .await
        .map_err(|e| anyhow!("--to {target_name}: {e:#}"))?;
    // The blob store target is checked before anything is written.
    let blobs = match &args.blob_store_to {
        Some(text) => Some(open_blob_target(&args, text).await?),
        None => None,
    };

    let (objects, _) = source
        .list("")
        .await
        .map_err(|e| anyhow!("reading {}: {e}", redb.display()))?;
    let copied = copy_objects(&objects, target.as_ref(), args.force)
        .await
        .with_context(|| format!("copying into {target_name}"))?;
    println!(
        "kumo: copied {} objects from {} into {target_name}",
        objects.len(),
        redb.display()
    );
    print_counts("OBJECTS", &copied);

    let mut blob_flag = String::new();
    if let (Some(blobs), Some(text)) = (blobs, &args.blob_store_to) {
        let counts = copy_blobs(&args.from.join("data"), blobs.as_ref(), args.force).await?;
        println!(
            "kumo: copied {} data objects into {}",
            counts.values().sum::<usize>(),
            blobs.describe()
        );
        print_counts("DATA", &counts);
        blob_flag = format!(" --blob-store '{text}'");
    }
    let tls = match (&args.etcd_cafile, &args.etcd_certfile, &args.etcd_keyfile) {
        (None, None, None) => String::new(),
        _ => " --etcd-cafile … --etcd-certfile … --etcd-keyfile …".into(),
    };
    let user = if url.user.is_some() {
        " (KUMO_STORE=etcd://USER:PASSWORD@… in the environment)"
    } else {
        ""
    };
    println!(
        "next: start the control plane on etcd with this data dir (its CA, tokens and Secrets key){user}:\n  kumo server --store {target_name}{tls} --data-dir {}{blob_flag}\n{} is no longer read: keep it as the backup",
        args.from.display(),
        redb.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies every object as stored, then reads the target back: each key must hold the same
/// value. Returns the counts per kind.
async fn copy_objects(
    objects: &[kumo_store::KeyValue],
    target: &dyn Store,
    force: bool,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let (existing, _) = target.list("").await?;
    if !existing.is_empty() && !force {
        bail!(
            "the target already holds {} keys: refusing to copy over them (--force copies anyway, replacing the keys both have)",
            existing.len()
        );
    }
    for kv in objects {
        match target.create(&kv.key, kv.value.clone()).await {
            Ok(_) => {}
            Err(kumo_store::StoreError::AlreadyExists(_)) if force => {
                target.update(&kv.key, kv.value.clone(), None).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (after, _) = target.list("").await?;
    let stored: BTreeMap<&str, &[u8]> = after
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_slice()))
        .collect();
    for kv in objects {
        if stored.get(kv.key.as_str()) != Some(&kv.value.as_slice()) {
            bail!("{} did not arrive intact", kv.key);
        }
    }
    let source = count(objects.iter().map(|kv| kv.key.as_str()), kind_of);
    let target_counts = count(after.iter().map(|kv| kv.key.as_str()), kind_of);
    // An empty target must now hold exactly what the source does; one copied into with
    // --force at least as many of each kind.
    let short = source
        .iter()
        .any(|(k, n)| target_counts.get(k).copied().unwrap_or(0) < *n);
    if short || (!force && target_counts != source) {
        bail!("the counts differ after the copy: source {source:?}, target {target_counts:?}");
    }
    Ok(source)
}

async fn open_blob_target(
    args: &MigrateArgs,
    text: &str,
) -> anyhow::Result<std::sync::Arc<dyn BlobStore>> {
    let url = kumo_blob::parse(text).map_err(|e| anyhow!("--blob-store-to: {e}"))?;
    let creds = match url {
        kumo_blob::BlobUrl::S3(_) => {
            blob_store::credentials(args.blob_store_credentials_file.as_deref())?
        }
        kumo_blob::BlobUrl::Dir(_) => None,
    };
    kumo_blob::open(&url, creds)
        .await
        .map_err(|e| anyhow!("--blob-store-to: {e}"))
}

/// Copies every blob (checked against its digest on the way) and record of the data dir's
/// `data/` into `target`, then checks each is there with its size. Counts per kind.
async fn copy_blobs(
    data: &Path,
    target: &dyn BlobStore,
    force: bool,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let source = kumo_blob::DirStore::open(data.to_path_buf())
        .with_context(|| format!("opening {}", data.display()))?;
    let existing = target.list("").await?;
    if !existing.is_empty() && !force {
        bail!(
            "--blob-store-to {}: already holds {} objects: refusing to copy over them (--force copies anyway)",
            target.describe(),
            existing.len()
        );
    }
    let entries = source.list("").await?;
    for e in &entries {
        match e.key.strip_prefix("blobs/") {
            Some(digest) => {
                let Some(body) = source.get(&e.key).await? else {
                    bail!("{} vanished while copying", e.key);
                };
                target
                    .put_verified(&e.key, digest, body, u64::MAX)
                    .await
                    .with_context(|| format!("copying {}", e.key))?;
            }
            None => {
                let bytes = source.read(&e.key).await?.unwrap_or_default();
                target.put(&e.key, bytes).await?;
            }
        }
    }
    for e in &entries {
        if target.size(&e.key).await? != Some(e.size) {
            bail!("{} did not arrive intact in {}", e.key, target.describe());
        }
    }
    Ok(count(entries.iter().map(|e| e.key.as_str()), blob_kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, expected: &str) {
        assert_eq!(kind_of(key), expected, "{key}");
    }

    #[test]
    fn kinds_of_keys() {
        check("/registry/core/pods/default/web", "pods");
        check("/registry/core/namespaces/default", "namespaces");
        check("/registry/kumo.dev/mltasks/ml/train", "mltasks.kumo.dev");
        check(
            "/registry/rbac.authorization.k8s.io/clusterroles/admin",
            "clusterroles.rbac.authorization.k8s.io",
        );
        check("/other", "/other");
    }

    /// A data dir's blobs and records copied into a bucket on a real S3-compatible server:
    /// counted per kind, byte-identical, and a second copy refused without `force`.
    #[tokio::test]
    async fn data_dir_blobs_go_into_a_bucket() {
        use bytes::Bytes;
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let source = kumo_blob::DirStore::open(dir.path().join("data")).unwrap();
        let chunk = b"chunk of a dataset";
        let digest = kumo_api::dataset::sha256_hex(chunk);
        let body = futures_util::stream::iter([Ok(Bytes::from_static(chunk))]).boxed();
        source
            .put_verified(&format!("blobs/{digest}"), &digest, body, 100)
            .await
            .unwrap();
        source
            .put("datasets/d.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        source
            .put("outputs/ml/run/rank-0.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let s3 = kumo_blob::test_s3::TestS3::start().unwrap();
        let target = kumo_blob::open(
            &kumo_blob::BlobUrl::S3(s3.url("moved")),
            Some(kumo_blob::test_s3::TestS3::credentials()),
        )
        .await
        .unwrap();
        let counts = copy_blobs(&dir.path().join("data"), target.as_ref(), false)
            .await
            .unwrap();
        let expected: BTreeMap<String, usize> = [("blobs", 1), ("datasets", 1), ("outputs", 1)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        assert_eq!(counts, expected);
        let got = target
            .read(&format!("blobs/{digest}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], chunk);
        let err = copy_blobs(&dir.path().join("data"), target.as_ref(), false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already holds 3 objects"), "{err}");
        copy_blobs(&dir.path().join("data"), target.as_ref(), true)
            .await
            .unwrap();
    }
}
