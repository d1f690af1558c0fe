//! `kumo store migrate`: a stopped single-machine kumo's pods, apps, MLTasks, Secrets and
//! datasets, copied into a real etcd (and a blob store), are served again by `kumo server
//! --store etcd://…` on the same data dir; a running kumo and a non-empty target are refused.

use crate::harness::*;
use kumo_api::{App, MLTask, Pod, Secret};
use kumo_store::test_etcd::TestEtcd;
use std::process::Output;

const OBJECTS: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  runtimeClassName: process
  containers:
  - {name: main, image: busybox, command: [/bin/sleep, '3600']}
---
apiVersion: kumo.dev/v1
kind: App
metadata: {name: shop}
spec:
  runtimeClassName: process
  processes:
    web:
      replicas: 1
      command: [/bin/sleep, '3600']
---
apiVersion: kumo.dev/v1
kind: MLTask
metadata: {name: train}
spec:
  runtimeClassName: process
  command: [/bin/true]
  parallelism: 2
";

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn migrate(c: &Cluster, to: &str, extra: &[&str]) -> Output {
    let data = c.data_dir();
    let mut args = vec![
        "store",
        "migrate",
        "--from",
        data.to_str().unwrap(),
        "--to",
        to,
    ];
    args.extend_from_slice(extra);
    c.kumo(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_kumo_moves_to_etcd_with_its_objects_secrets_and_datasets() {
    let mut c = Cluster::start_with(vec!["server".into()]);
    c.privileged_namespace("default");
    c.apply("objects.yaml", OBJECTS);
    let secret = c.kumo(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal",
        "password=moved-along",
    ]);
    ok(&secret);
    let data = c.dir.path().join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("labels.txt"), b"0 1 2 3\n").unwrap();
    ok(&c.kumo(&["dataset", "push", data.to_str().unwrap(), "mnist"]));
    let client = c.client();
    let pod: Pod = client.get("default", "web").await.unwrap();
    let app: App = client.get("default", "shop").await.unwrap();
    let task: MLTask = client.get("default", "train").await.unwrap();

    let etcd = TestEtcd::start().expect("etcd");
    let to = format!("etcd://{}", etcd.endpoint.trim_start_matches("http://"));
    // A running kumo holds its store: refused, nothing copied.
    let running = migrate(&c, &to, &[]);
    assert!(!running.status.success());
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(
        stderr.contains("stop the kumo using this data dir first"),
        "{stderr}"
    );
    c.stop();

    let shared = c.dir.path().join("shared-data");
    let blob_to = format!("dir://{}", shared.display());
    let moved = ok(&migrate(&c, &to, &["--blob-store-to", &blob_to]));
    for expected in [
        "kumo: copied ",
        "\npods ",
        "\napps.kumo.dev ",
        "\nmltasks.kumo.dev ",
        "\nsecrets ",
        "\nblobs ",
        "\ndatasets ",
        &format!(
            "kumo server --store {to} --data-dir {}",
            c.data_dir().display()
        ),
    ] {
        assert!(moved.contains(expected), "{expected:?} in {moved}");
    }
    // Again: the target is not empty any more.
    let again = migrate(&c, &to, &[]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("refusing to copy over them"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    ok(&migrate(&c, &to, &["--force"]));

    c.relaunch_with(&["--store", &to, "--blob-store", &blob_to]);
    let client = c.client();
    let pod2: Pod = client.get("default", "web").await.unwrap();
    let app2: App = client.get("default", "shop").await.unwrap();
    let task2: MLTask = client.get("default", "train").await.unwrap();
    assert_eq!(pod2.metadata.uid, pod.metadata.uid);
    assert_eq!(app2.metadata.uid, app.metadata.uid);
    assert_eq!(task2.metadata.uid, task.metadata.uid);
    // Encrypted at rest with the data dir's key, readable with it.
    let s: Secret = client.get("default", "db").await.unwrap();
    assert_eq!(
        s.data.get("password").map(String::as_str),
        Some("bW92ZWQtYWxvbmc=")
    );
    // resourceVersions are etcd's: an update with the one served goes through.
    let rv = |p: &Pod| -> u64 {
        p.metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    let patch = serde_json::json!({"metadata": {"labels": {"moved": "yes"}}});
    let patched: Pod = client.patch("default", "web", &patch).await.unwrap();
    assert!(rv(&patched) > rv(&pod2));
    // The dataset is served from the blob store it was copied to.
    assert!(ok(&c.kumo(&["dataset", "ls"])).contains("mnist"));
    let pulled = c.dir.path().join("pulled");
    ok(&c.kumo(&["dataset", "pull", "mnist", pulled.to_str().unwrap()]));
    assert_eq!(
        std::fs::read(pulled.join("labels.txt")).unwrap(),
        b"0 1 2 3\n"
    );
}
