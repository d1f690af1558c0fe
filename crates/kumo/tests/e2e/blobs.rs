//! Datasets in a shared blob store: a dataset pushed through one server on an S3-compatible
//! bucket (moto, started by the test) is listed and pulled, byte for byte, through another
//! server on the same bucket; a bad or unreachable `--blob-store` stops the start.

use crate::harness::*;
use kumo_blob::test_s3::TestS3;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The flags that put a server's blobs in `s3`'s bucket under `prefix`, with the key in a file
/// (never in argv).
fn blob_flags(s3: &TestS3, prefix: &str, creds: &std::path::Path) -> Vec<String> {
    vec![
        "--blob-store".into(),
        s3.flag(prefix),
        "--blob-store-credentials-file".into(),
        creds.display().to_string(),
    ]
}

fn credentials_file(dir: &std::path::Path) -> std::path::PathBuf {
    let creds = TestS3::credentials();
    let path = dir.join("s3.credentials");
    std::fs::write(
        &path,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            creds.access_key_id, creds.secret_access_key
        ),
    )
    .unwrap();
    path
}

fn text(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_dataset_pushed_through_one_server_is_pulled_through_another() {
    let s3 = TestS3::start().expect("moto");
    let scratch = tempfile::tempdir().unwrap();
    let creds = credentials_file(scratch.path());
    let flags = blob_flags(&s3, "kumo/prod", &creds);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = Cluster::up(&flags);

    // Two chunks in one file (over 4 MiB), a small file, a nested one.
    let data = scratch.path().join("mnist");
    std::fs::create_dir_all(data.join("train")).unwrap();
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(data.join("train/images.bin"), &big).unwrap();
    std::fs::write(data.join("labels.txt"), b"0 1 2 3 4 5 6 7 8 9\n").unwrap();
    let pushed = text(&first.kumo(&["dataset", "push", data.to_str().unwrap(), "mnist"]));
    assert!(pushed.contains("dataset/mnist pushed: 2 files"), "{pushed}");
    // The bytes went to the bucket, not to the first server's data dir.
    let local = std::fs::read_dir(first.data_dir().join("data/blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(local, 0, "blobs in the data dir");

    let second = Cluster::start_with(
        ["server"]
            .iter()
            .map(|s| s.to_string())
            .chain(flags.iter().map(|s| s.to_string()))
            .collect(),
    );
    let ls = text(&second.kumo(&["dataset", "ls"]));
    assert!(ls.contains("mnist") && ls.contains("2"), "{ls}");
    let pulled = scratch.path().join("pulled");
    let out = text(&second.kumo(&["dataset", "pull", "mnist", pulled.to_str().unwrap()]));
    assert!(out.contains("dataset/mnist pulled: 2 files"), "{out}");
    assert_eq!(
        kumo_client::data::checksums(&pulled).unwrap(),
        kumo_client::data::checksums(&data).unwrap()
    );
    assert_eq!(std::fs::read(pulled.join("train/images.bin")).unwrap(), big);

    // The collector runs under its own Lease (one server at a time).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leases = text(&first.kumo(&["get", "leases", "-n", "kumo-system"]));
        if leases.contains("kumo-blob-gc") {
            break;
        }
        assert!(Instant::now() < deadline, "no kumo-blob-gc lease: {leases}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A name is pushed once, whichever server is asked.
    let again = second.kumo(&["dataset", "push", data.to_str().unwrap(), "mnist"]);
    assert!(!again.status.success());
    // Removed through the second: gone from the first.
    text(&second.kumo(&["dataset", "rm", "mnist"]));
    assert_eq!(text(&first.kumo(&["dataset", "ls"])).trim(), "No datasets.");
}

/// `kumo server` with `args`: its exit status and stderr, once it exits (bounded).
fn server_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(kumo_exe())
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("kumo server");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{args:?}: {:?}",
        started.elapsed()
    );
    stderr
}

#[test]
fn a_bad_or_unreachable_blob_store_stops_the_server_naming_it() {
    let check = |args: &[&str], env: &[(&str, &str)], expected: &str| {
        let stderr = server_fails(args, env);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("s3cr3t-value"), "{args:?}: {stderr}");
    };
    check(
        &["--blob-store", "gs://bucket"],
        &[],
        "--blob-store: unsupported blob store \"gs\"",
    );
    check(
        &["--blob-store", "s3://bkt?endpoint=http://127.0.0.1:1&acl=x"],
        &[],
        "--blob-store: s3:// query \"acl\": unknown",
    );
    check(
        &["--blob-store", "s3://bkt?endpoint=http://127.0.0.1:1"],
        &[],
        "--blob-store: no credentials for the bucket",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("s3://bkt/p?endpoint=http://127.0.0.1:{port}");
    check(
        &["--blob-store", &url],
        &[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),
        ],
        &format!("--blob-store: cannot reach s3://bkt/p at http://127.0.0.1:{port}"),
    );
}
