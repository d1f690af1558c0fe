//! The actual state of a pod's containers as a runtime reports it (the agent's `plan` and
//! `pod_status` read it).

use kumo_api::pod::ContainerStateTerminated;
use kumo_api::Time;
use std::collections::BTreeMap;

/// What the runtime knows about one pod's containers, by container name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRuntimeState {
    pub containers: BTreeMap<String, ContainerRuntimeState>,
    /// Why containers that have not run yet are waiting (image pulls, refused configs), by name.
    pub waiting: BTreeMap<String, Waiting>,
    /// The pod's own IP (OCI pods on a pod network).
    pub pod_ip: Option<String>,
    /// Containers whose current run passed its readiness probe (see `probe`).
    pub probes_passed: std::collections::BTreeSet<String>,
}

/// A waiting reason and message (`ErrImagePull`, `CreateContainerConfigError`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: Option<String>,
}

impl PodRuntimeState {
    /// Whether any container process is alive.
    pub fn any_running(&self) -> bool {
        self.containers.values().any(|c| c.is_running())
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

/// One container: its current (or last) run, how often it was restarted, and the run before.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRuntimeState {
    /// Restarts so far (0 for the first run).
    pub restart_count: i32,
    pub run: RunState,
    /// How the previous run ended (`lastState` in the container status).
    pub last_terminated: Option<ContainerStateTerminated>,
    /// `process://PID` of the current or last run, when it got a process.
    pub id: Option<String>,
}

impl ContainerRuntimeState {
    pub fn is_running(&self) -> bool {
        matches!(self.run, RunState::Running { .. })
    }

    pub fn terminated(&self) -> Option<&ContainerStateTerminated> {
        match &self.run {
            RunState::Exited(t) => Some(t),
            RunState::Running { .. } => None,
        }
    }
}

/// The current run of a container.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Running { started_at: Time },
    Exited(ContainerStateTerminated),
}
