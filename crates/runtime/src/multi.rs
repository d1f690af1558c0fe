//! [`Runtimes`]: one runtime per runtime class behind the `Runtime` trait; a pod goes to the
//! runtime of its class, and later calls by uid to the runtime that has the pod.

use super::{Runtime, StartOutcome};
use crate::error::RuntimeError;
use crate::record::PodRecord;
use crate::runtime_class;
use crate::state::PodRuntimeState;
use kumo_api::Pod;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The runtimes of a node, by class (the first one's paths serve unknown pods).
pub struct Runtimes {
    runtimes: Vec<Arc<dyn Runtime>>,
}

impl Runtimes {
    pub fn new(runtimes: Vec<Arc<dyn Runtime>>) -> Self {
        Runtimes { runtimes }
    }

    /// The runtime classes this node runs, in order.
    pub fn classes(&self) -> Vec<String> {
        self.runtimes.iter().map(|r| r.name().to_string()).collect()
    }

    fn for_uid(&self, uid: &str) -> Option<&Arc<dyn Runtime>> {
        self.runtimes.iter().find(|r| r.has_pod(uid))
    }
}

#[async_trait::async_trait]
impl Runtime for Runtimes {
    fn name(&self) -> &'static str {
        "multi"
    }

    async fn start(&self, pod: &Pod, index: usize) -> Result<StartOutcome, RuntimeError> {
        let class = runtime_class(pod);
        match self.runtimes.iter().find(|r| r.name() == class) {
            Some(r) => r.start(pod, index).await,
            None => Err(RuntimeError::InvalidContainer(format!(
                "runtime class {class:?} is not available on this node"
            ))),
        }
    }

    async fn kill(&self, uid: &str, container: &str, grace: Duration) -> Result<(), RuntimeError> {
        match self.for_uid(uid) {
            Some(r) => r.kill(uid, container, grace).await,
            None => Err(RuntimeError::NotFound {
                uid: uid.into(),
                container: container.into(),
            }),
        }
    }

    fn state(&self, uid: &str) -> PodRuntimeState {
        self.for_uid(uid).map(|r| r.state(uid)).unwrap_or_default()
    }

    fn pods(&self) -> Vec<PodRecord> {
        self.runtimes.iter().flat_map(|r| r.pods()).collect()
    }

    fn pods_named(&self, namespace: &str, name: &str) -> Vec<PodRecord> {
        self.runtimes
            .iter()
            .flat_map(|r| r.pods_named(namespace, name))
            .collect()
    }

    fn log_path(&self, uid: &str, container: &str, restart_count: i32) -> PathBuf {
        match self.for_uid(uid).or(self.runtimes.first()) {
            Some(r) => r.log_path(uid, container, restart_count),
            None => PathBuf::from("/nonexistent"),
        }
    }

    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError> {
        let mut first = None;
        for r in &self.runtimes {
            if let Err(e) = r.cleanup(uid).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn shutdown(&self) {
        for r in &self.runtimes {
            r.shutdown().await;
        }
    }

    fn has_pod(&self, uid: &str) -> bool {
        self.for_uid(uid).is_some()
    }

    fn exec_command(
        &self,
        pod: &Pod,
        index: usize,
        command: &[String],
        tty: bool,
    ) -> Result<super::ExecSpec, super::ExecRefusal> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        match self.for_uid(uid) {
            Some(r) => r.exec_command(pod, index, command, tty),
            None => Err(super::ExecRefusal::NotRunning(format!(
                "pod {} has no containers on this node",
                pod.metadata.name
            ))),
        }
    }
}
