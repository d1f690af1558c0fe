//! The blob store's contract, run on every backend (a temp dir, and a bucket on a real
//! S3-compatible server), and the URL parser.

use crate::test_s3::TestS3;
use crate::*;
use bytes::Bytes;
use futures_util::StreamExt;

/// A store to test and what keeps its backing alive.
struct Fixture {
    store: Arc<dyn BlobStore>,
    _dir: Option<tempfile::TempDir>,
    _s3: Option<TestS3>,
}

fn dir_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("data")).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _s3: None,
    }
}

async fn s3_fixture() -> Fixture {
    let s3 = TestS3::start().unwrap();
    let store = open(&BlobUrl::S3(s3.url("team/a")), Some(TestS3::credentials()))
        .await
        .unwrap();
    Fixture {
        store,
        _dir: None,
        _s3: Some(s3),
    }
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod dir {
            $(#[tokio::test]
            async fn $name() {
                let f = super::dir_fixture();
                super::$name(&*f.store).await;
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $name() {
                let f = super::s3_fixture().await;
                super::$name(&*f.store).await;
            })*
        }
    };
}

on_every_backend!(
    verified_put_and_streamed_get,
    a_bad_upload_leaves_nothing,
    put_new_is_create_only,
    list_by_prefix_with_sizes_and_ages,
    delete_is_idempotent,
    keys_are_checked,
);

fn body(chunks: &[&'static [u8]]) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> =
        chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    futures_util::stream::iter(chunks).boxed()
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

async fn verified_put_and_streamed_get(s: &dyn BlobStore) {
    let digest = sha(b"hello world");
    let key = format!("blobs/{digest}");
    assert_eq!(s.size(&key).await.unwrap(), None);
    assert!(s.get(&key).await.unwrap().is_none());
    let size = s
        .put_verified(&key, &digest, body(&[b"hello ", b"world"]), 100)
        .await
        .unwrap();
    assert_eq!(size, 11);
    assert_eq!(s.size(&key).await.unwrap(), Some(11));
    let mut got = Vec::new();
    let mut stream = s.get(&key).await.unwrap().unwrap();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, b"hello world");
    assert_eq!(s.read(&key).await.unwrap().unwrap(), &b"hello world"[..]);
}

async fn a_bad_upload_leaves_nothing(s: &dyn BlobStore) {
    let digest = sha(b"hello world");
    let key = format!("blobs/{digest}");
    let err = s
        .put_verified(&key, &digest, body(&[b"hello"]), 100)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    let err = s
        .put_verified(&key, &digest, body(&[b"hello ", b"world"]), 8)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 8 }), "{err}");
    let broken: ByteStream = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"hello")),
        Err(std::io::Error::other("connection reset")),
    ])
    .boxed();
    let err = s
        .put_verified(&key, &digest, broken, 100)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Body(_)), "{err}");
    assert_eq!(s.size(&key).await.unwrap(), None);
    assert!(
        s.list("").await.unwrap().is_empty(),
        "{:?}",
        s.list("").await
    );
}

async fn put_new_is_create_only(s: &dyn BlobStore) {
    let key = "datasets/mnist.json";
    assert!(s.put_new(key, Bytes::from_static(b"one")).await.unwrap());
    assert!(!s.put_new(key, Bytes::from_static(b"two")).await.unwrap());
    assert_eq!(s.read(key).await.unwrap().unwrap(), &b"one"[..]);
    // A plain put replaces.
    s.put(key, Bytes::from_static(b"three")).await.unwrap();
    assert_eq!(s.read(key).await.unwrap().unwrap(), &b"three"[..]);
}

async fn list_by_prefix_with_sizes_and_ages(s: &dyn BlobStore) {
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for (key, bytes) in [
        ("datasets/a.json", &b"a"[..]),
        ("datasets/b.json", b"bb"),
        ("outputs/ml/run/one/rank-0.json", b"ccc"),
        ("outputs/ml/run/two/rank-0.json", b"dddd"),
        ("outputs/ml/running/rank-0.json", b"e"),
    ] {
        s.put(key, Bytes::from(bytes.to_vec())).await.unwrap();
    }
    async fn check(s: &dyn BlobStore, prefix: &str, expected: &[(&str, u64)]) {
        let got: Vec<(String, u64)> = s
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.size))
            .collect();
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(got, expected, "list({prefix:?})");
    }
    check(
        s,
        "datasets",
        &[("datasets/a.json", 1), ("datasets/b.json", 2)],
    )
    .await;
    check(
        s,
        "datasets/",
        &[("datasets/a.json", 1), ("datasets/b.json", 2)],
    )
    .await;
    // A prefix is a directory: `outputs/ml/run` is not `outputs/ml/running`.
    check(
        s,
        "outputs/ml/run",
        &[
            ("outputs/ml/run/one/rank-0.json", 3),
            ("outputs/ml/run/two/rank-0.json", 4),
        ],
    )
    .await;
    check(s, "blobs", &[]).await;
    check(s, "nothing/here", &[]).await;
    assert_eq!(s.list("").await.unwrap().len(), 5);
    for e in s.list("").await.unwrap() {
        assert!(e.modified > before, "{e:?}");
    }
}

async fn delete_is_idempotent(s: &dyn BlobStore) {
    s.put("datasets/a.json", Bytes::from_static(b"a"))
        .await
        .unwrap();
    s.delete("datasets/a.json").await.unwrap();
    s.delete("datasets/a.json").await.unwrap();
    assert_eq!(s.size("datasets/a.json").await.unwrap(), None);
    assert!(s.list("datasets").await.unwrap().is_empty());
}

async fn keys_are_checked(s: &dyn BlobStore) {
    for key in ["", "/abs", "a//b", "../up", "a/./b", "a/"] {
        let err = s.put(key, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, Error::Key(_)), "{key:?}: {err}");
    }
}

#[test]
fn a_dir_store_keeps_an_old_data_dir_and_makes_it_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("datasets")).unwrap();
    std::fs::write(root.join("datasets/old.json"), b"{}").unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    DirStore::open(root.clone()).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for sub in ["", "blobs", "datasets", "outputs", "tmp"] {
        assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
    }
    assert_eq!(
        std::fs::read(root.join("datasets/old.json")).unwrap(),
        b"{}"
    );
}

#[tokio::test]
async fn dir_writes_leave_no_temporary_files() {
    let f = dir_fixture();
    let s = &*f.store;
    s.put("outputs/ml/x/rank-0.json", Bytes::from_static(b"x"))
        .await
        .unwrap();
    s.put_new("datasets/a.json", Bytes::from_static(b"a"))
        .await
        .unwrap();
    s.put_new("datasets/a.json", Bytes::from_static(b"a"))
        .await
        .unwrap();
    let digest = sha(b"x");
    let _ = s
        .put_verified("blobs/0000", &digest, body(&[b"y"]), 10)
        .await;
    let tmp = f._dir.as_ref().unwrap().path().join("data/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    // `tmp/` is the store's own: never a key, never listed.
    assert!(matches!(
        s.put("tmp/x", Bytes::new()).await.unwrap_err(),
        Error::Key(_)
    ));
}

#[tokio::test]
async fn an_unreachable_bucket_is_an_error_naming_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = parse(&format!("s3://b-1/p?endpoint=http://127.0.0.1:{port}")).unwrap();
    let started = std::time::Instant::now();
    let err = open(&url, Some(TestS3::credentials())).await.err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "cannot reach s3://b-1/p at http://127.0.0.1:{port}"
        )),
        "{text}"
    );
    assert!(!text.contains("kumo-test-secret"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let err = open(&url, None).await.err().unwrap();
    assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
}

fn check_parse(text: &str, expected: Result<BlobUrl, &str>) {
    assert_eq!(parse(text), expected.map_err(str::to_string), "{text}");
}

#[test]
fn urls() {
    let s3 = |bucket: &str, prefix: &str, endpoint: Option<&str>, region: &str| {
        Ok(BlobUrl::S3(S3Url {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: endpoint.map(str::to_string),
            region: region.into(),
        }))
    };
    check_parse("dir:///srv/kumo", Ok(BlobUrl::Dir("/srv/kumo".into())));
    check_parse(
        "dir://srv",
        Err("dir://srv: expected an absolute path (dir:///PATH)"),
    );
    check_parse("s3://ml-data", s3("ml-data", "", None, "us-east-1"));
    check_parse(
        "s3://ml-data/kumo/prod/?endpoint=http://10.0.0.5:9000&region=eu-west-1",
        s3(
            "ml-data",
            "kumo/prod",
            Some("http://10.0.0.5:9000"),
            "eu-west-1",
        ),
    );
    check_parse(
        "gs://x",
        Err("unsupported blob store \"gs\": expected dir:///PATH or s3://BUCKET/PREFIX?endpoint=URL&region=REGION"),
    );
    check_parse(
        "s3://Bad_Bucket",
        Err(
            "s3://Bad_Bucket: invalid bucket name (3 to 63 lower-case letters, digits, '.' or '-')",
        ),
    );
    check_parse(
        "s3://key:secret@bucket",
        Err("s3://: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or give --blob-store-credentials-file"),
    );
    check_parse("s3://bkt/a/../b", Err("s3://bkt/a/../b: invalid prefix"));
    check_parse(
        "s3://bkt?endpoint=ftp://x",
        Err("s3:// endpoint \"ftp://x\": expected http://HOST:PORT or https://HOST[:PORT]"),
    );
    check_parse(
        "s3://bkt?acl=public",
        Err("s3:// query \"acl\": unknown (expected endpoint or region)"),
    );
    check_parse(
        "s3://bkt?region=",
        Err("s3:// query \"region\": empty value"),
    );
}

#[test]
fn credential_files() {
    let ok = Credentials::parse_file(
        "# kumo's bucket\nAWS_ACCESS_KEY_ID=AKID\naws_secret_access_key = \"s3cr3t\"\n",
    )
    .unwrap();
    assert_eq!(
        (ok.access_key_id.as_str(), ok.secret_access_key.as_str()),
        ("AKID", "s3cr3t")
    );
    assert!(!format!("{ok:?}").contains("s3cr3t"));
    let check = |text: &str, expected: &str| {
        let err = Credentials::parse_file(text).unwrap_err();
        assert_eq!(err, expected);
        assert!(!err.contains("s3cr3t"));
    };
    check(
        "AWS_ACCESS_KEY_ID=AKID\n",
        "expected both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
    check(
        "AWS_SECRET_ACCESS_KEY s3cr3t\n",
        "line 1: expected KEY=VALUE",
    );
    check("\nPASSWORD=s3cr3t\n", "line 2: unknown key \"password\"");
}
