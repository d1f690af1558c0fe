//! Datasets, output and scratch: a dataset pushed, mounted, copied to /output by the replicas
//! and pulled back with the same checksums; unknown datasets, escaping output paths, and
//! uploads that must never become visible.

use super::*;
use crate::harness::*;
use http::Method;
use kumo_api::dataset::sha256_hex;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_client::data::checksums;
use serde_json::json;
use std::path::Path;

/// A directory with a small file, an empty one, and one over two chunks long.
fn training_data(root: &Path) -> std::path::PathBuf {
    let dir = root.join("train-data");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    // 9 MiB that differ chunk to chunk: three chunks.
    let big: Vec<u8> = (0..9 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("sub/big.bin"), big).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_round_trips_through_a_task() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let data = training_data(c.dir.path());
    let pushed = c.kumo(&["dataset", "push", data.to_str().unwrap(), "mnist"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(
        text(&pushed).starts_with("dataset/mnist pushed: 3 files"),
        "{}",
        text(&pushed)
    );
    let ls = text(&c.kumo(&["dataset", "ls"]));
    let row = ls
        .lines()
        .find(|l| l.starts_with("mnist"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains(" 3 ") && row.contains("sha256:"), "{ls}");
    let again = c.kumo(&["dataset", "push", data.to_str().unwrap(), "mnist"]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("dataset \"mnist\" already exists"),
        "{}",
        text(&again)
    );

    // Each replica checks the data is what was pushed and not writable, copies it to /output,
    // writes its rank there, and leaves a mark in scratch.
    let script = "set -e; test \"$(cat $DATA_DIR/a.txt)\" = hello; \
        mkdir -p $OUTPUT_DIR/copy-$RANK; cp -r $DATA_DIR/. $OUTPUT_DIR/copy-$RANK/; \
        echo $RANK > $OUTPUT_DIR/rank.txt; echo run >> $SCRATCH_DIR/runs; test -f $SCRATCH_DIR/runs";
    submit(
        &c,
        "train",
        &[
            "--parallelism",
            "2",
            "--data",
            "mnist",
            "--output",
            "models/train",
            "--scratch",
            "1Gi",
        ],
        script,
    );
    wait_task(&client, "train", T, is(TaskPhase::Succeeded)).await;

    let out = c.dir.path().join("pulled");
    let pulled = c.kumo(&["output", "pull", "train", out.to_str().unwrap()]);
    assert!(pulled.status.success(), "{}", text(&pulled));
    let mut want = Vec::new();
    for rank in 0..2 {
        for (path, sum) in checksums(&data).unwrap() {
            want.push((format!("copy-{rank}/{path}"), sum));
        }
    }
    // Both ranks wrote rank.txt: the lower rank's wins.
    want.push(("rank.txt".to_string(), sha256_hex(b"0\n")));
    want.sort();
    assert_eq!(checksums(&out).unwrap(), want);
    // A second pull into the now non-empty directory is refused.
    let again = c.kumo(&["output", "pull", "train", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("exists and is not empty"),
        "{}",
        text(&again)
    );

    // Deleting the task removes its output and scratch from the node; the dataset cache stays.
    let tasks_dir = c.data_dir().join("agent/mltask/tasks");
    assert_eq!(std::fs::read_dir(&tasks_dir).unwrap().count(), 1);
    let deleted = c.kumo(&["delete", "mltask", "train"]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let deadline = tokio::time::Instant::now() + T;
    while std::fs::read_dir(&tasks_dir).unwrap().count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task dirs left behind"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        std::fs::read_dir(c.data_dir().join("agent/mltask/datasets"))
            .unwrap()
            .count(),
        1
    );
    let rm = c.kumo(&["dataset", "rm", "mnist"]);
    assert!(rm.status.success(), "{}", text(&rm));
    assert_eq!(text(&c.kumo(&["dataset", "ls"])).trim(), "No datasets.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dataset_is_refused_or_waited_for() {
    let c = Cluster::up(&[]);
    let client = c.client();
    // kumo submit refuses it before creating anything.
    let out = c.kumo(&[
        "submit",
        "t1",
        "--runtime",
        "process",
        "-d",
        "--data",
        "nope",
        "--",
        "/bin/true",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("spec.data.dataset: dataset \"nope\" does not exist"),
        "{}",
        text(&out)
    );
    assert!(client
        .get_opt::<MLTask>("default", "t1")
        .await
        .unwrap()
        .is_none());
    // Applied directly, the task waits with the reason, and runs once the dataset is pushed.
    let file = c.write(
        "late.yaml",
        "apiVersion: kumo.dev/v1\nkind: MLTask\nmetadata: {name: late}\nspec:\n  runtimeClassName: process\n  command: [/bin/sh, -c, 'test -f $DATA_DIR/a.txt']\n  data: {dataset: later}\n",
    );
    let applied = c.kumo(&["apply", "-f", file.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    wait_reason(
        &client,
        "late",
        "spec.data.dataset: dataset \"later\" does not exist (push it with `kumo dataset push DIR later`)",
    )
    .await;
    assert!(task_pods(&client, "late").await.is_empty());
    let data = c.dir.path().join("later");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "x").unwrap();
    let pushed = c.kumo(&["dataset", "push", data.to_str().unwrap(), "later"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    wait_task(&client, "late", T, is(TaskPhase::Succeeded)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_path_escaping_its_root_is_refused() {
    let c = Cluster::up(&[]);
    let client = c.client();
    for path in ["../models", "/abs/models", "a/../../b"] {
        let out = c.kumo(&[
            "submit",
            "esc",
            "--runtime",
            "process",
            "-d",
            "--output",
            path,
            "--",
            "/bin/true",
        ]);
        assert!(!out.status.success(), "{path}");
        assert!(
            text(&out).contains("spec.output.path"),
            "{path}: {}",
            text(&out)
        );
    }
    let file = c.write(
        "esc.yaml",
        "apiVersion: kumo.dev/v1\nkind: MLTask\nmetadata: {name: esc}\nspec:\n  runtimeClassName: process\n  command: [/bin/true]\n  output: {path: ../x}\n",
    );
    let applied = c.kumo(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!applied.status.success());
    assert!(
        text(&applied).contains("spec.output.path"),
        "{}",
        text(&applied)
    );
    assert!(client
        .get_opt::<MLTask>("default", "esc")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_incomplete_uploads_never_become_visible() {
    let c = Cluster::up(&[]);
    let client = c.client();
    let p = "/apis/kumo.dev/v1";
    let code = |r: Result<_, kumo_client::ClientError>| match r {
        Ok(_) => 200,
        Err(e) => e.code().unwrap_or(0),
    };
    let message = |r: Result<hyper::Response<hyper::body::Incoming>, kumo_client::ClientError>| {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    };
    let good = sha256_hex(b"abc");
    // Bytes that are not what their digest says: refused, and nothing stored.
    let bad = client
        .send(
            Method::PUT,
            &format!("{p}/blobs/{good}"),
            Some(("application/octet-stream", b"abd".to_vec())),
        )
        .await;
    assert!(message(bad).contains("corrupt or incomplete upload"));
    let get = client
        .send(Method::GET, &format!("{p}/blobs/{good}"), None)
        .await;
    assert_eq!(code(get), 404);
    let invalid = client
        .send(
            Method::PUT,
            &format!("{p}/blobs/not-a-digest"),
            Some(("application/octet-stream", vec![])),
        )
        .await;
    assert_eq!(code(invalid), 400);
    // A manifest naming a blob never uploaded.
    let manifest =
        |size: u64| json!({"files": [{"path": "a", "size": size, "mode": 420, "chunks": [good]}]});
    let put = |m: serde_json::Value| {
        let client = client.clone();
        async move {
            client
                .send(
                    Method::PUT,
                    &format!("{p}/datasets/ds"),
                    Some(("application/json", serde_json::to_vec(&m).unwrap())),
                )
                .await
        }
    };
    let missing = put(manifest(3)).await;
    assert!(
        message(missing).contains("files[0].chunks[0]: blob"),
        "missing blob"
    );
    // Once the blob is there: a wrong size, a path escaping the dataset.
    let ok = client
        .send(
            Method::PUT,
            &format!("{p}/blobs/{good}"),
            Some(("application/octet-stream", b"abc".to_vec())),
        )
        .await;
    assert_eq!(code(ok), 200);
    assert!(
        message(put(manifest(4)).await).contains("files[0].size: 4 bytes, but its chunks hold 3")
    );
    let escaping = json!({"files": [{"path": "../a", "size": 3, "chunks": [good]}]});
    assert!(message(put(escaping).await).contains("files[0].path"));
    let unknown_field = json!({"files": [], "extra": 1});
    assert_eq!(code(put(unknown_field).await), 422);
    // None of that made a dataset.
    assert_eq!(text(&c.kumo(&["dataset", "ls"])).trim(), "No datasets.");
    assert_eq!(
        code(
            client
                .send(Method::GET, &format!("{p}/datasets/ds"), None)
                .await
        ),
        404
    );
    // A complete manifest does, once; a second push of the name is a conflict.
    assert_eq!(code(put(manifest(3)).await), 200);
    assert_eq!(code(put(manifest(3)).await), 409);
    let ls = text(&c.kumo(&["dataset", "ls"]));
    assert!(ls.lines().any(|l| l.starts_with("ds ")), "{ls}");
    // The CLI says what is wrong with a directory it cannot push.
    let out = c.kumo(&["dataset", "push", "/nonexistent-dir", "x"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent-dir"), "{}", text(&out));
    let rm = c.kumo(&["dataset", "rm", "nope"]);
    assert!(!rm.status.success());
    assert!(
        text(&rm).contains("datasets \"nope\" not found"),
        "{}",
        text(&rm)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_replica_reads_data_at_slash_data_and_writes_output() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("train:1").expect("push busybox");
    let c = Cluster::up(&[]);
    let client = c.client();
    let data = training_data(c.dir.path());
    let pushed = c.kumo(&["dataset", "push", data.to_str().unwrap(), "boxdata"]);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let script = "set -e; cp -r /data/. /output/; \
        if touch /data/x 2>/dev/null; then echo writable; else echo read-only; fi > /output/data-is; \
        echo $DATA_DIR $OUTPUT_DIR $SCRATCH_DIR > /output/env; touch /scratch/s";
    let out = c.kumo(&[
        "submit",
        "boxes",
        "--image",
        &image,
        "--data",
        "boxdata",
        "--output",
        "boxes",
        "--scratch",
        "none",
        "--follow",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    wait_task(&client, "boxes", T, is(TaskPhase::Succeeded)).await;
    let pulled_dir = c.dir.path().join("pulled");
    let pulled = c.kumo(&[
        "output",
        "pull",
        "mltask/boxes",
        pulled_dir.to_str().unwrap(),
    ]);
    assert!(pulled.status.success(), "{}", text(&pulled));
    let mut want = checksums(&data).unwrap();
    want.push(("data-is".into(), sha256_hex(b"read-only\n")));
    want.push(("env".into(), sha256_hex(b"/data /output /scratch\n")));
    want.sort();
    assert_eq!(checksums(&pulled_dir).unwrap(), want);
}
