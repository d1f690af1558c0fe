//! `run`: wires the runtime, the node heartbeat, the pod informer and worker, and the log endpoint.

use crate::config::AgentConfig;
use crate::config::{find_runtime, DEFAULT_RUNSC_ARGS};
use crate::error::AgentError;
use crate::gpu::{FakeGpus, GpuDiscovery, NvmlGpus};
use crate::host_path::HostPathPolicy;
use crate::images::{RootfsProvider, StoreImages};
use crate::logs::{router, LogService};
use crate::model::SyncParams;
use crate::node::{HostFacts, NodeAgent, NodeIdentity};
use crate::sandbox::{CniNetwork, NetworkProvider, NoNetwork, Sandboxes};
use crate::sync::{OciParts, PodWorker};
use kumo_api::pod::{RUNTIME_RUNC, RUNTIME_RUNSC};
use kumo_api::Pod;
use kumo_client::{Change, Client, Controller, Informer, ListParams};
use kumo_runtime::cgroup::Cgroups;
use kumo_runtime::oci::OciRuntimeConfig;
use kumo_runtime::sys::RealSys;
use kumo_runtime::{ProcessRuntimeConfig, Runtime, Runtimes, ShimCommand};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often every pod is reconciled even when nothing was heard about it.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// How long a stopping agent waits for the syncs and cleanups of pods it started.
const SHUTDOWN_CLEANUP_WAIT: Duration = Duration::from_secs(10);
/// How many pods are synced at the same time (each pod by one sync at a time). Like kubelet's
/// per-pod workers: one pod's slow start (an image pull is off the worker, but a runtime's
/// create and a status write are not) does not hold up another's exit report.
const MAX_CONCURRENT_SYNCS: usize = 16;

/// Runs the node agent until `shutdown` completes. On shutdown the loops stop and containers are
/// left running; a restarted agent re-adopts them.
pub async fn run(
    client: Client,
    mut config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    if config.node_name.is_empty() {
        return Err(AgentError::Config("the node name is empty".into()));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::Io {
        path: config.data_dir.clone(),
        source,
    })?;

    // One discovery for the heartbeat, the allocator, the usage sampler and the runtimes.
    let devices: Arc<dyn GpuDiscovery> = if config.fake_gpus > 0 {
        Arc::new(FakeGpus(config.fake_gpus))
    } else {
        Arc::new(NvmlGpus::new())
    };
    let across_nodes = join_pod_network(&client, &mut config, &devices).await?;
    let (runtime_tx, mut runtime_events) = mpsc::unbounded_channel();
    let (runtimes, oci, image_store) = open_runtimes(&config, runtime_tx, devices.clone())?;
    let sandboxes = oci.sandboxes.clone();
    let classes = runtimes.classes();
    let runtime: Arc<dyn Runtime> = Arc::new(runtimes);

    let bind = |source| AgentError::Bind {
        addr: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(bind)?;
    let port = listener.local_addr().map_err(bind)?.port();

    let selector = format!("spec.nodeName={}", config.node_name);
    let (informer, changes) =
        Informer::<Pod>::start(client.clone(), None, ListParams::fields(&selector));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    serve_endpoint(
        listener,
        (&client, &config, &informer, &runtime),
        stop_rx,
        &mut tasks,
    );

    let node = NodeAgent {
        client: client.clone(),
        id: NodeIdentity {
            name: config.node_name.clone(),
            labels: config.labels.clone(),
            address: config.advertise_address.clone(),
            port,
            runtime_classes: classes.clone(),
            pod_cidr: config.containers.pod_cidr.clone(),
        },
        facts: HostFacts::read(),
        gpus: devices.clone(),
        interval: config.heartbeat_interval,
    };
    tasks.spawn(node.run());
    if let Some((backend, local)) = across_nodes {
        let links = kumo_net::Links::connect()
            .map_err(|e| AgentError::Config(format!("pod network: {e}")))?;
        tasks.spawn(crate::podnet::run(
            client.clone(),
            backend,
            local,
            links,
            std::future::pending(),
        ));
    }
    tasks.spawn(crate::image_gc::run(
        image_store,
        config.data_dir.join("images"),
        informer.clone(),
        config.containers.image_gc,
    ));
    tracing::info!(node = %config.node_name, port, "kumo agent started");

    // The pod sync loop, on the client's controller runtime: its queue is shared with the
    // prober and the worker, which requeue pods themselves.
    let controller = Controller::new(crate::sync::RETRY_BASE, crate::sync::RETRY_MAX)
        .concurrency(MAX_CONCURRENT_SYNCS);
    let queue = controller.queue();
    let worker = pod_worker(
        (client, &config, &informer, &runtime),
        (queue, oci, devices, classes),
        &mut tasks,
    );
    let cleanups = worker.clone();
    let on_change = {
        let worker = worker.clone();
        move |change: &Change<Pod>| {
            if let Change::Deleted(pod) = change {
                worker.pod_gone(pod);
            }
            Some(kumo_client::cache_key(change.object()))
        }
    };
    // Exits are handled once the cache is synced (their events name the pod as the API has it).
    let exits = {
        let (worker, informer) = (worker.clone(), informer.clone());
        async move {
            informer.wait_synced().await;
            while let Some(event) = runtime_events.recv().await {
                worker.container_exited(event).await;
            }
        }
    };
    // Every pod once the cache is synced (the interval's first tick), then every
    // RESYNC_INTERVAL.
    let resync = {
        let (worker, informer) = (worker.clone(), informer.clone());
        async move {
            informer.wait_synced().await;
            let mut resync = tokio::time::interval(RESYNC_INTERVAL);
            resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                resync.tick().await;
                worker.enqueue_all();
            }
        }
    };
    let controller = controller
        .waits_for(informer.clone())
        .feeds(changes, on_change)
        .also(exits)
        .also(resync)
        .initial({
            let worker = worker.clone();
            move || {
                worker.enqueue_all();
                Vec::new()
            }
        });
    let sync = move |key: String| {
        let worker = worker.clone();
        async move { worker.reconcile(&key).await.map(|()| None) }
    };
    // Syncs in flight end, and cleanups of gone pods (which run off the syncs) finish, briefly,
    // so a stopped agent leaves no half-made or half-removed pod behind; whatever is left is
    // re-adopted or cleaned at the next start.
    let Some(deadline) = controller
        .run_spawned(sync, crate::sync::report, shutdown, SHUTDOWN_CLEANUP_WAIT)
        .await
    else {
        return stop(tasks, &runtime, &stop_tx).await;
    };
    while cleanups.cleanups_in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandboxes.shutdown().await;
    stop(tasks, &runtime, &stop_tx).await
}

/// Serves the agent's endpoint (logs and exec, for the API server) on `listener` with its own
/// limits, in `tasks`, until `stop` turns true: first a serving certificate from the API server
/// (asked until given), then TLS that requires a client certificate of the cluster CA. The
/// certificate is renewed two thirds into its life.
fn serve_endpoint(
    listener: tokio::net::TcpListener,
    (client, config, informer, runtime): (&Client, &AgentConfig, &Informer<Pod>, &Arc<dyn Runtime>),
    stop: watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let mut endpoint_stop = stop.clone();
    let svc = Arc::new(LogService {
        pods: Arc::new(informer.clone()),
        runtime: runtime.clone(),
        stop: stop.clone(),
        exec_helper: Some(config.shim_exe.clone()),
    });
    // Whoever completed the handshake holds a certificate of the cluster CA: a request on
    // such a connection is authenticated.
    let authenticate: kumo_serve::Authenticate = Arc::new(|_| true);
    let limits = config.endpoint_limits;
    let (client, node, client_ca) = (
        client.clone(),
        config.node_name.clone(),
        config.cluster_ca_pem.clone(),
    );
    tasks.spawn(async move {
        let Some(cert) =
            crate::serving_cert::request_until_given(&client, &node, &mut endpoint_stop).await
        else {
            return;
        };
        let tls = kumo_pki::RotatingCert::from_pem(&cert.chain_pem, &cert.key_pem)
            .map(Arc::new)
            .and_then(|resolver| {
                let config = kumo_pki::server_config_with(
                    Arc::clone(&resolver) as Arc<dyn rustls::server::ResolvesServerCert>,
                    Some(&client_ca),
                )?;
                Ok((resolver, config))
            });
        let (resolver, tls) = match tls {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the agent endpoint over tls");
                return;
            }
        };
        tokio::spawn(crate::serving_cert::keep_renewed(
            client, node, resolver, cert, stop,
        ));
        let stopped = async move {
            let _ = endpoint_stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = kumo_serve::serve(
            listener,
            router(svc),
            limits,
            authenticate,
            Some(tls),
            stopped,
        )
        .await
        {
            tracing::error!(error = %e, "agent endpoint failed");
        }
    });
}

/// Before the pod network is opened: registers the Node and settles its pod CIDR (the Node's,
/// else `--pod-cidr`, else kumo-net's default), and on a backend the pods' MTU; what the
/// routes loop needs, when there is one.
async fn join_pod_network(
    client: &Client,
    config: &mut AgentConfig,
    devices: &Arc<dyn GpuDiscovery>,
) -> Result<Option<(kumo_net::Backend, kumo_net::PeerNode)>, AgentError> {
    let cc = &mut config.containers;
    if cc.no_pod_network {
        return Ok(None);
    }
    // The Node must exist for the control plane to give it a pod CIDR.
    let early = NodeAgent {
        client: client.clone(),
        id: NodeIdentity {
            name: config.node_name.clone(),
            labels: config.labels.clone(),
            address: config.advertise_address.clone(),
            port: 0,
            runtime_classes: Vec::new(),
            pod_cidr: cc.pod_cidr.clone(),
        },
        facts: HostFacts::read(),
        gpus: devices.clone(),
        interval: config.heartbeat_interval,
    };
    // A node the others reach only on loopback (one machine, tests) is in no pod network
    // across nodes: it would make a VXLAN device and routes on the host for nothing.
    let address: Option<std::net::IpAddr> = config.advertise_address.parse().ok();
    if cc.pod_network_backend.is_some() && address.is_none_or(|a| a.is_loopback()) {
        tracing::info!(node = %config.node_name, address = %config.advertise_address, "the node address is not a routable IP: no routes to other nodes' pods");
        cc.pod_network_backend = None;
    }
    // Only a node of a pod network across nodes waits for the control plane's slice.
    let wait = match cc.pod_network_backend {
        Some(_) => crate::podnet::POD_CIDR_WAIT,
        None => Duration::ZERO,
    };
    let resolved = match early.register(&devices.discover()).await {
        Ok(()) => match crate::podnet::resolve_pod_cidr(
            client,
            &config.node_name,
            cc.pod_cidr.as_deref(),
            cc.pod_network_backend.is_some(),
            wait,
        )
        .await
        {
            Ok(c) => c,
            Err(e @ crate::podnet::PodCidrError::Mismatch { .. }) => {
                return Err(AgentError::Config(e.to_string()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's pod CIDR");
                cc.pod_cidr.clone()
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot register the node before its pod network");
            cc.pod_cidr.clone()
        }
    };
    let pod_cidr = match resolved {
        Some(c) => c,
        None => {
            let default = kumo_net::NetworkConfig::default().pod_cidr;
            tracing::warn!(node = %config.node_name, pod_cidr = %default, "the control plane gave this node no pod CIDR in time; using the default");
            default
        }
    };
    tracing::info!(node = %config.node_name, %pod_cidr, "pod CIDR");
    cc.pod_cidr = Some(pod_cidr.clone());
    let (Some(backend), Some(address)) = (cc.pod_network_backend, address) else {
        return Ok(None);
    };
    if cc.pod_mtu.is_none() {
        let links = kumo_net::Links::connect()
            .map_err(|e| AgentError::Config(format!("pod network: {e}")))?;
        let link_mtu = links
            .mtu_of_address(address)
            .await
            .map_err(|e| AgentError::Config(format!("pod network: {e}")))?
            .ok_or_else(|| {
                AgentError::Config(format!(
                    "--pod-network-backend {backend}: no link of this host has the node address {address}"
                ))
            })?;
        cc.pod_mtu = Some(crate::podnet::pod_mtu(backend, link_mtu));
    }
    Ok(Some((
        backend,
        kumo_net::PeerNode {
            name: config.node_name.clone(),
            address,
            pod_cidr,
        },
    )))
}

/// The pod worker with what it uses: the prober and the GPU usage sampler (started into
/// `tasks`), the GPU allocator and the MLTask data of this node.
fn pod_worker(
    (client, config, informer, runtime): (Client, &AgentConfig, &Informer<Pod>, &Arc<dyn Runtime>),
    (queue, oci, devices, classes): (
        kumo_client::WorkQueue<String>,
        OciParts,
        Arc<dyn GpuDiscovery>,
        Vec<String>,
    ),
    tasks: &mut tokio::task::JoinSet<()>,
) -> Arc<PodWorker> {
    let params = SyncParams {
        node_name: config.node_name.clone(),
        host_ip: config.advertise_address.clone(),
        runtime_classes: classes,
        backoff_base: config.backoff_base,
    };
    let prober = Arc::new(crate::probe::Prober::default());
    tasks.spawn(prober.clone().run(
        informer.clone(),
        runtime.clone(),
        queue.clone(),
        params.host_ip.clone(),
    ));
    tasks.spawn(crate::gpu_usage::run(
        client.clone(),
        informer.clone(),
        devices.clone(),
        crate::gpu_usage::SAMPLE_INTERVAL,
    ));
    let tokens = crate::service_account::ServiceAccountTokens::new(
        client.clone(),
        config.cluster_ca_pem.as_bytes().to_vec(),
    );
    let worker = PodWorker::new(
        client,
        informer.clone(),
        queue.clone(),
        runtime.clone(),
        params,
    )
    .with_oci(oci)
    .with_service_accounts(Arc::new(tokens))
    .with_prober(prober)
    .with_gpus(Arc::new(crate::gpu_alloc::GpuAllocator::new(devices)))
    .with_task_data(Arc::new(crate::task_data::TaskData::new(
        config.data_dir.join("mltask"),
    )));
    Arc::new(worker)
}

/// The node's runtimes: `runc` and `runsc` where installed, then `process`; and what OCI pods
/// share (the image store, the pod sandboxes).
fn open_runtimes(
    config: &AgentConfig,
    events: mpsc::UnboundedSender<kumo_runtime::RuntimeEvent>,
    gpus: Arc<dyn GpuDiscovery>,
) -> Result<(Runtimes, OciParts, kumo_image::ImageStore), AgentError> {
    let cc = &config.containers;
    let io = |path: &Path, source: std::io::Error| AgentError::Io {
        path: path.to_path_buf(),
        source,
    };
    let registries = kumo_image::Registries::load_default()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read registry credentials; pulling anonymously");
            kumo_image::Registries::new()
        })
        .with_insecure(cc.insecure_registries.clone());
    let images_dir = config.data_dir.join("images");
    let store = kumo_image::ImageStore::open_with(&images_dir, registries).map_err(|e| {
        AgentError::Config(format!(
            "cannot open the image store {}: {e}",
            images_dir.display()
        ))
    })?;
    let store_images = Arc::new(StoreImages(store.clone()));
    let images: Arc<dyn RootfsProvider> = store_images.clone();
    let network: Arc<dyn NetworkProvider> = if cc.no_pod_network {
        Arc::new(NoNetwork)
    } else {
        let mut net = kumo_net::NetworkConfig::new(config.data_dir.join("net"));
        if let Some(cidr) = &cc.pod_cidr {
            net.pod_cidr = cidr.clone();
        }
        if let Some(bridge) = &cc.bridge {
            net.bridge = bridge.clone();
        }
        net.cluster_cidr = cc.cluster_cidr.clone();
        net.mtu = cc.pod_mtu;
        net.node_name = config.node_name.clone();
        net.warm_pool = cc.pod_network_pool;
        let networks = kumo_net::PodNetworks::new(net)
            .map_err(|e| AgentError::Config(format!("pod network: {e}")))?;
        Arc::new(CniNetwork(Arc::new(networks)))
    };
    let sandbox_dir = config.data_dir.join("sandboxes");
    std::fs::create_dir_all(&sandbox_dir).map_err(|e| io(&sandbox_dir, e))?;
    // MLTask datasets, output and scratch reach replicas as the agent's own node-dir volumes
    // (`task_data`), never as hostPaths: no hostPath may reach the agent's directories.
    let mut protected = cc.protected_host_paths.clone();
    protected.push(config.data_dir.clone());
    let host_paths = HostPathPolicy::new(cc.allowed_host_paths.clone(), protected);
    let sandboxes = Arc::new(Sandboxes::new(sandbox_dir, network, host_paths));
    let shim = ShimCommand::kumo(&config.shim_exe, &config.data_dir);
    let sys: Arc<dyn kumo_runtime::sys::Sys> = Arc::new(RealSys);
    let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
    let runsc_args: Vec<String> = if cc.runsc_args.is_empty() {
        DEFAULT_RUNSC_ARGS.iter().map(|s| s.to_string()).collect()
    } else {
        cc.runsc_args.clone()
    };
    for (class, configured, extra_args) in [
        (RUNTIME_RUNC, cc.runc.as_ref(), Vec::new()),
        (RUNTIME_RUNSC, cc.runsc.as_ref(), runsc_args),
    ] {
        let Some(binary) = find_runtime(class, configured) else {
            tracing::info!(
                runtime = class,
                "not installed; pods of this runtime class will wait with RuntimeClassNotFound"
            );
            continue;
        };
        tracing::info!(runtime = class, binary = %binary.display(), "OCI runtime found");
        let rt = kumo_runtime::oci::open(
            OciRuntimeConfig {
                class,
                data_dir: config.data_dir.join(class),
                binary,
                extra_args,
                shim: shim.clone(),
                sys: sys.clone(),
                images: store_images.clone(),
                sandboxes: sandboxes.clone(),
                allow_privileged: cc.allow_privileged,
                cgroup_root: PathBuf::from("/sys/fs/cgroup"),
                cgroup_parent: cc.cgroup_parent.clone(),
                gpus: Arc::new(crate::gpu::RuntimeGpus(gpus.clone())),
                cdi_spec_dirs: kumo_runtime::oci::cdi::spec_dirs(&cc.cdi_spec_dirs),
            },
            events.clone(),
        )?;
        runtimes.push(Arc::new(rt));
    }
    let process = kumo_runtime::process::open(
        ProcessRuntimeConfig {
            data_dir: config.data_dir.clone(),
            shim,
            cgroups: Cgroups::detect(
                sys.clone(),
                Path::new("/sys/fs/cgroup"),
                cc.cgroup_parent.clone(),
            ),
            sys,
            sandboxes: Some(sandboxes.clone()),
        },
        events,
    )?;
    runtimes.push(Arc::new(process));
    Ok((
        Runtimes::new(runtimes),
        OciParts {
            images,
            sandboxes,
            pulls: Arc::default(),
        },
        store,
    ))
}

async fn stop(
    mut tasks: tokio::task::JoinSet<()>,
    runtime: &Arc<dyn Runtime>,
    stop: &watch::Sender<bool>,
) -> Result<(), AgentError> {
    let _ = stop.send(true);
    tasks.abort_all();
    runtime.shutdown().await;
    tracing::info!("kumo agent stopped; containers keep running");
    Ok(())
}
