//! The control plane's state in etcd: `kumo up --store etcd://…` on a real etcd runs pods and
//! keeps its objects across a restart; an etcd that does not answer stops the start with an
//! error naming it.

use crate::harness::*;
use kumo_api::{Namespace, ObjectMeta, Pod, PodPhase};
use kumo_client::ListParams;
use kumo_store::test_etcd::{TestEtcd, TlsFiles};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn store_flag(etcd: &TestEtcd) -> String {
    format!("etcd://{}", etcd.endpoint.trim_start_matches("http://"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_etcd_runs_a_pod_and_keeps_objects_across_a_restart() {
    let etcd = TestEtcd::start().expect("etcd");
    let mut c = Cluster::up(&["--store", &store_flag(&etcd)]);
    // `up` on etcd says where the server token is, as `server` does.
    let token = c.data_dir().join("server-token");
    assert!(
        c.banner.iter().any(|l| l.contains(&format!(
            "sealed with the server token in {}",
            token.display()
        ))),
        "{:?}",
        c.banner
    );
    c.privileged_namespace("team");
    c.apply(
        "hello.yaml",
        &process_pod("hello", "Never", "echo hello from etcd").replace(
            "metadata:\n  name: hello\n",
            "metadata:\n  name: hello\n  namespace: team\n",
        ),
    );
    let client = c.client();
    let pod = wait_pod(&client, "team", "hello", T, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == PodPhase::Succeeded)
    })
    .await;
    let logs = c.kumo(&["logs", "hello", "-n", "team"]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello from etcd\n");
    // Nothing went to the embedded store.
    assert!(!c.data_dir().join("store.redb").exists());

    c.restart();
    let client = c.client();
    let again: Pod = client.get("team", "hello").await.expect("the pod");
    assert_eq!(again.metadata.uid, pod.metadata.uid);
    assert_eq!(
        again.status.map(|s| s.phase),
        Some(PodPhase::Succeeded),
        "the pod's status survived the restart"
    );
    let get = c.kumo(&["get", "namespaces"]);
    assert!(String::from_utf8_lossy(&get.stdout).contains("team"));
}

#[test]
fn server_on_an_unreachable_etcd_exits_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("etcd://127.0.0.1:{port}");
    let started = Instant::now();
    let out = Command::new(kumo_exe())
        .args(["server", "--listen", "127.0.0.1:0", "--store", &store])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("kumo server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{port}")) && stderr.contains("unreachable"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// `kumo server` on etcd killed with SIGKILL under a stream of writes, and etcd killed with it:
/// after both restart, every write the server acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_on_etcd_loses_no_acknowledged_write() {
    let mut etcd = TestEtcd::start().expect("etcd");
    let store = store_flag(&etcd);
    let mut c = Cluster::start_with(vec!["server".into(), "--store".into(), store]);
    let (acked, enough, writer) = write_namespaces_until_refused(c.client(), 40);
    enough.notified().await;
    c.kill9();
    etcd.kill();
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    etcd.restart().expect("etcd restarts on its data");
    c.relaunch();
    assert_no_acknowledged_write_lost(&c.client(), &acked).await;
    assert!(acked.len() >= 40);
}

/// etcd serving over TLS and requiring client certificates: `kumo server` reaches it with
/// --etcd-cafile, --etcd-certfile and --etcd-keyfile; without the client certificate it exits
/// with the error naming etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reaches_etcd_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kumo_pki::Ca::generate().unwrap();
    let day = Duration::from_secs(86_400);
    let server = ca.issue_server(&["127.0.0.1".into()], day).unwrap();
    let client = ca.issue_client("kumo", &[], day).unwrap();
    let file = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let ca_file = file("ca.crt", ca.cert_pem());
    let etcd = TestEtcd::start_tls(TlsFiles {
        cert: file("etcd.crt", &server.cert_pem),
        key: file("etcd.key", &server.key_pem),
        client_ca: ca_file.clone(),
    })
    .expect("etcd over TLS");
    let store = format!("etcd://{}", etcd.endpoint.trim_start_matches("https://"));
    let (cert, key) = (
        file("kumo.crt", &client.cert_pem),
        file("kumo.key", &client.key_pem),
    );
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let c = Cluster::start_with(vec![
        "server".into(),
        "--store".into(),
        store.clone(),
        "--etcd-cafile".into(),
        path(&ca_file),
        "--etcd-certfile".into(),
        path(&cert),
        "--etcd-keyfile".into(),
        path(&key),
    ]);
    c.privileged_namespace("over-tls");
    let ns: Namespace = c.client().get("", "over-tls").await.expect("namespace");
    assert_eq!(ns.metadata.name, "over-tls");

    // Without a client certificate etcd refuses the connection: a prompt error naming it.
    let out = Command::new(kumo_exe())
        .args(["server", "--listen", "127.0.0.1:0", "--store", &store])
        .arg("--etcd-cafile")
        .arg(&ca_file)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("kumo server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&etcd.endpoint), "{stderr}");
}

/// etcd going away while the server runs: a write answers 503 naming etcd, and once etcd is
/// back the same server serves writes again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_away_while_serving_answers_503_then_recovers() {
    let mut etcd = TestEtcd::start().expect("etcd");
    let c = Cluster::start_with(vec!["server".into(), "--store".into(), store_flag(&etcd)]);
    let client = c.client();
    let ns = |name: &str| Namespace {
        metadata: ObjectMeta::named(None, name),
        ..Default::default()
    };
    client.create(&ns("before")).await.expect("create before");
    etcd.kill();
    let err = client
        .create(&ns("during"))
        .await
        .expect_err("etcd is down");
    assert_eq!(err.code(), Some(503), "{err}");
    assert!(
        err.to_string().contains(&etcd.endpoint),
        "the reason names etcd: {err}"
    );
    etcd.restart().expect("etcd restarts");
    let deadline = Instant::now() + T;
    loop {
        match client.create(&ns("after")).await {
            Ok(_) => break,
            Err(e) if e.code() == Some(503) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("etcd is back, the server still fails: {e}"),
        }
    }
    let names: Vec<String> = client
        .list::<Namespace>(None, &ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"before".to_string()) && names.contains(&"after".to_string()));
    assert!(!names.contains(&"during".to_string()));
}

/// A --store value that is not an etcd URL stops the server with an error naming the flag,
/// and never echoes a password it may hold.
#[test]
fn a_bad_store_url_is_refused_without_echoing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    for (store, expected) in [
        (
            "http://kumo:hunter2@127.0.0.1:2379",
            "--store: unsupported store \"http\"",
        ),
        (
            "etcd://kumo:hunter2@127.0.0.1",
            "--store: etcd endpoint \"127.0.0.1\": expected HOST:PORT",
        ),
    ] {
        let out = Command::new(kumo_exe())
            .args(["server", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("HOME", dir.path())
            .env("KUMO_STORE", store)
            .stdin(Stdio::null())
            .output()
            .expect("kumo server");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{store}: {stderr}");
        assert!(stderr.contains(expected), "{store}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{store}: {stderr}");
    }
}
