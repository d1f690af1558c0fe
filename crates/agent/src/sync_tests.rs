//! The pod worker's error policy: a sync that panics for one pod is a failure like an error
//! (counted, retried after a back-off), and the worker goes on syncing the node's other pods.

use super::*;
use crate::model::PodRuntimeState;
use kumo_client::{ClientConfig, Controller, ListParams};
use kumo_runtime::StartOutcome;
use std::path::PathBuf;

/// A runtime whose lookup of the pod named `bomb` panics (as an overflow in a sync would), and
/// which remembers which pods were looked up.
#[derive(Default)]
struct PanickyRuntime {
    looked_up: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Runtime for PanickyRuntime {
    fn name(&self) -> &'static str {
        "panicky"
    }
    async fn start(&self, _: &Pod, _: usize) -> Result<StartOutcome, kumo_runtime::RuntimeError> {
        Err(kumo_runtime::RuntimeError::Shim("not in this test".into()))
    }
    async fn kill(&self, _: &str, _: &str, _: Duration) -> Result<(), kumo_runtime::RuntimeError> {
        Ok(())
    }
    fn state(&self, _: &str) -> PodRuntimeState {
        PodRuntimeState::default()
    }
    fn pods(&self) -> Vec<PodRecord> {
        Vec::new()
    }
    fn pods_named(&self, _: &str, name: &str) -> Vec<PodRecord> {
        lock(&self.looked_up).push(name.to_string());
        if name == "bomb" {
            panic!("test: the sync of bomb panicked");
        }
        Vec::new()
    }
    fn log_path(&self, _: &str, _: &str, _: i32) -> PathBuf {
        PathBuf::from("/nonexistent")
    }
    async fn cleanup(&self, _: &str) -> Result<(), kumo_runtime::RuntimeError> {
        Ok(())
    }
    async fn shutdown(&self) {}
}

#[tokio::test]
async fn a_sync_that_panics_is_retried_and_the_other_pods_are_synced() {
    // No API server: the informer stays empty, so each sync is the runtime's lookup alone.
    let client = Client::new(&ClientConfig {
        server: "http://127.0.0.1:1".into(),
        ..Default::default()
    })
    .unwrap();
    let (informer, _changes) = Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let (keys, key_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The agent's pod sync loop as `agent::run` wires it, fed here by hand.
    let controller = Controller::new(RETRY_BASE, RETRY_MAX)
        .concurrency(2)
        .feeds(key_rx, |k: &String| Some(k.clone()));
    let runtime = Arc::new(PanickyRuntime::default());
    let worker = Arc::new(PodWorker::new(
        client,
        informer,
        controller.queue(),
        runtime.clone(),
        crate::fixtures::params(),
    ));
    keys.send("default/bomb".into()).unwrap();
    keys.send("default/good".into()).unwrap();
    let failures: Arc<Mutex<Vec<(String, u32, bool)>>> = Arc::default();
    let report = {
        let failures = failures.clone();
        move |key: &String, failure: &Failure<SyncError>, retry: &Retry| {
            let panicked = matches!(failure, Failure::Panic(_));
            lock(&failures).push((key.clone(), retry.attempt, panicked));
        }
    };
    let sync = move |key: String| {
        let worker = worker.clone();
        async move { worker.reconcile(&key).await.map(|()| None) }
    };
    // Until the panicking pod came back after its back-off (400 ms), or 5 s.
    let looked_up = runtime.clone();
    let came_back = async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while lock(&looked_up.looked_up).len() < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    controller
        .run_spawned(sync, report, came_back, Duration::from_secs(1))
        .await;
    let looked_up = lock(&runtime.looked_up).clone();
    assert_eq!(looked_up[..2].to_vec(), ["bomb", "good"], "both synced");
    assert_eq!(
        looked_up.get(2).map(String::as_str),
        Some("bomb"),
        "the pod that panicked is synced again"
    );
    let failures = lock(&failures).clone();
    // The panic is counted as a failure of that pod alone; the other pod synced.
    assert_eq!(failures[0], ("default/bomb".to_string(), 1, true));
    assert!(failures
        .iter()
        .all(|(k, _, panicked)| k == "default/bomb" && *panicked));
}
