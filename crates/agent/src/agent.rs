//! `run`: wires the runtime, the node heartbeat, the pod informer and worker, and the log endpoint.

use crate::cgroup::Cgroups;
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::gpu::{FakeGpus, GpuDiscovery, NvmlGpus};
use crate::logs::{router, LogService};
use crate::model::SyncParams;
use crate::node::{HostFacts, NodeAgent, NodeIdentity};
use crate::runtime::{ProcessRuntime, ProcessRuntimeConfig, Runtime, ShimCommand};
use crate::sync::PodWorker;
use crate::sys::RealSys;
use kumo_api::Pod;
use kumo_client::{Change, Client, Informer, ListParams, WorkQueue};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often every pod is reconciled even when nothing was heard about it.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the node agent until `shutdown` completes. On shutdown the loops stop and containers are
/// left running; a restarted agent re-adopts them.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    if config.node_name.is_empty() {
        return Err(AgentError::Config("the node name is empty".into()));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::Io {
        path: config.data_dir.clone(),
        source,
    })?;

    let (runtime_tx, mut runtime_events) = mpsc::unbounded_channel();
    let process = ProcessRuntime::open(
        ProcessRuntimeConfig {
            data_dir: config.data_dir.clone(),
            shim: ShimCommand::kumo(&config.shim_exe),
            cgroups: Cgroups::detect(Path::new("/sys/fs/cgroup")),
            sys: Arc::new(RealSys),
        },
        runtime_tx,
    )?;
    let runtime: Arc<dyn Runtime> = Arc::new(process);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: config.listen,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| AgentError::Bind {
            addr: config.listen,
            source,
        })?
        .port();

    let selector = format!("spec.nodeName={}", config.node_name);
    let (informer, mut changes) =
        Informer::<Pod>::start(client.clone(), None, ListParams::fields(&selector));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let svc = Arc::new(LogService {
        pods: Arc::new(informer.clone()),
        runtime: runtime.clone(),
        token: config.token.clone(),
        stop: stop_rx,
    });
    tasks.spawn(async move {
        if let Err(e) = axum::serve(listener, router(svc)).await {
            tracing::error!(error = %e, "agent endpoint failed");
        }
    });

    let gpus: Box<dyn GpuDiscovery> = if config.fake_gpus > 0 {
        Box::new(FakeGpus(config.fake_gpus))
    } else {
        Box::new(NvmlGpus::new())
    };
    let node = NodeAgent {
        client: client.clone(),
        id: NodeIdentity {
            name: config.node_name.clone(),
            labels: config.labels.clone(),
            address: config.advertise_address.clone(),
            port,
            runtime_classes: vec![runtime.name().to_string()],
        },
        facts: HostFacts::read(),
        gpus,
        interval: config.heartbeat_interval,
    };
    tasks.spawn(node.run());
    tracing::info!(node = %config.node_name, port, "kumo agent started");

    let queue = WorkQueue::<String>::new();
    let params = SyncParams {
        node_name: config.node_name.clone(),
        host_ip: config.advertise_address.clone(),
        runtime_classes: vec![runtime.name().to_string()],
        backoff_base: config.backoff_base,
    };
    let mut worker = PodWorker::new(
        client,
        informer.clone(),
        queue.clone(),
        runtime.clone(),
        params,
    );

    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return stop(tasks, &runtime, &stop_tx),
        _ = informer.wait_synced() => {}
    }
    worker.enqueue_all();
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(change) = changes.recv() => {
                if let Change::Deleted(pod) = &change {
                    worker.pod_gone(pod);
                }
                queue.add(kumo_client::cache_key(change.object()));
            }
            Some(event) = runtime_events.recv() => worker.container_exited(event).await,
            key = queue.next() => worker.process(&key).await,
            _ = resync.tick() => worker.enqueue_all(),
        }
    }
    stop(tasks, &runtime, &stop_tx)
}

fn stop(
    mut tasks: tokio::task::JoinSet<()>,
    runtime: &Arc<dyn Runtime>,
    stop: &watch::Sender<bool>,
) -> Result<(), AgentError> {
    let _ = stop.send(true);
    tasks.abort_all();
    runtime.shutdown();
    tracing::info!("kumo agent stopped; containers keep running");
    Ok(())
}
