//! The pod worker's error policy: a sync that panics for one pod is a failure like an error
//! (counted, retried after a back-off), and the worker goes on syncing the node's other pods.

use super::*;
use crate::model::PodRuntimeState;
use kumo_client::{ClientConfig, ListParams};
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
        token: "t".into(),
    })
    .unwrap();
    let (informer, _changes) = Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let queue = WorkQueue::<String>::new();
    let runtime = Arc::new(PanickyRuntime::default());
    let worker = PodWorker::new(
        client,
        informer,
        queue.clone(),
        runtime.clone(),
        crate::fixtures::params(),
    );
    worker.process("default/bomb").await;
    assert_eq!(worker.failures.total(), 1, "the panic is counted");
    worker.process("default/good").await;
    assert_eq!(worker.failures.total(), 1, "the other pod synced");
    assert_eq!(*lock(&runtime.looked_up), vec!["bomb", "good"]);
    // The panicking pod comes back after its back-off, not never.
    let again = tokio::time::timeout(Duration::from_secs(5), queue.next())
        .await
        .expect("the pod that panicked is queued again");
    assert_eq!(again, "default/bomb");
    worker.process(&again).await;
    assert_eq!(worker.failures.total(), 2);
}
