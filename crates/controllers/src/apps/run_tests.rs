//! The app loop against a real API server on an in-memory store: an app whose reconcile panics,
//! and an app stored with over-bound numbers straight into the store (as before the bounds
//! existed), do not stop the loop from serving the apps created after them.

use super::*;
use kumo_apiserver::{serve, Config};
use kumo_client::ClientConfig;
use kumo_store::{MemStore, Store};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static BOMB_CALLS: AtomicUsize = AtomicUsize::new(0);

/// `plan`, except that it panics for the app named `bomb`, as an overflow in it would.
fn plan_with_a_bomb(app: &App, releases: &[Release], pods: &[Pod], now: Time) -> Plan {
    if app.metadata.name == "bomb" {
        BOMB_CALLS.fetch_add(1, Ordering::SeqCst);
        panic!("test: the pure core panicked for app bomb");
    }
    plan(app, releases, pods, now)
}

fn process_app(name: &str, deploy: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "kumo.dev/v1", "kind": "App",
           "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"runtimeClassName": "process",
                    "processes": {"web": {"command": ["sleep", "1000"]}},
                    "deploy": deploy}})
}

/// Waits (at most 20 s) until `done` says yes.
async fn eventually<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn replicas_of(client: &Client, app: &str) -> usize {
    client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("{LABEL_APP}={app}")),
        )
        .await
        .map_or(0, |l| l.items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_that_panics_or_overflows_does_not_stop_the_others() {
    let store = Arc::new(MemStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let config = Config::new(store.clone(), vec!["t0ken".into()]);
    tokio::spawn(serve(listener, config, std::future::pending()));
    let client = Client::new(&ClientConfig {
        server,
        token: "t0ken".into(),
        ..Default::default()
    })
    .unwrap();

    // These apps run as host processes: their namespace must be privileged.
    let privileged =
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}});
    eventually("the default namespace labelled privileged", || async {
        client
            .patch::<kumo_api::Namespace>("", "default", &privileged)
            .await
            .is_ok()
    })
    .await;

    // The App, stored as it was before the bound: the API refuses it now.
    let huge = process_app(
        "huge",
        json!({"timeoutSeconds": 9_000_000_000_000_000_000_i64, "drainSeconds": i64::MAX}),
    );
    let typed: App = serde_json::from_value(huge.clone()).unwrap();
    let refused = client.create(&typed).await.unwrap_err();
    assert_eq!(refused.code(), Some(422), "{refused}");
    store
        .create(
            "/registry/kumo.dev/apps/default/huge",
            serde_json::to_vec(&huge).unwrap(),
        )
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run_with(client.clone(), plan_with_a_bomb, async {
        let _ = stopped.await;
    }));
    let bomb: App = serde_json::from_value(process_app("bomb", json!({}))).unwrap();
    client.create(&bomb).await.unwrap();
    // The panicking app is retried (with back-off), not dropped and not the loop's end.
    eventually("the panicking app's second reconcile", || async {
        BOMB_CALLS.load(Ordering::SeqCst) >= 2
    })
    .await;
    // The over-bound app is planned without a panic: its first release is made.
    eventually("the over-bound app's release", || async {
        client
            .get_opt::<Release>("default", "huge-v1")
            .await
            .is_ok_and(|r| r.is_some())
    })
    .await;

    let fine: App = serde_json::from_value(process_app("fine", json!({}))).unwrap();
    client.create(&fine).await.unwrap();
    eventually("a replica of the app created after them", || async {
        replicas_of(&client, "fine").await == 1
    })
    .await;
    assert_eq!(replicas_of(&client, "bomb").await, 0);
    assert!(!controller.is_finished(), "the loop is still running");
    let _ = stop.send(());
    controller.await.unwrap();
}
