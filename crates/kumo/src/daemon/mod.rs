//! The long-running subcommands: `kumo up` (everything), `kumo server` (control plane), `kumo agent`.

mod audit;
pub mod blob_store;
pub mod bootstrap;
mod credential;
pub mod hollow;
pub mod leader;
pub mod limits;
pub mod migrate;
pub mod pki;
mod podnet;
mod private;
pub mod router;
mod service_accounts;
pub mod store;
mod tokens;

use anyhow::{anyhow, Context};
use clap::Args;
use kumo_client::{Client, ClientConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Flags of the control plane, shared by `up` and `server`.
#[derive(Args, Debug, Clone)]
pub struct ControlPlaneArgs {
    /// Directory for the store and tokens (default ~/.kumo/data)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the API server listens on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// How long a node may miss heartbeats before it is NotReady
    #[arg(long, default_value = "40s", value_parser = limits::node_grace)]
    pub node_grace: Duration,
    /// How the scheduler picks among fitting nodes: spread or binpack
    #[arg(long, default_value = "spread")]
    pub scheduler_strategy: kumo_scheduler::Strategy,
    /// Watch history kept for resuming watches, in events
    #[arg(long, default_value_t = 10_000, value_parser = limits::watch_window)]
    pub watch_window: usize,
    /// Watch history kept for resuming watches, in bytes (the oldest events go first when over
    /// this or --watch-window)
    #[arg(long, default_value = "64Mi", value_parser = limits::watch_window_bytes)]
    pub watch_window_bytes: usize,
    #[command(flatten)]
    pub connection_limits: limits::ServerLimitArgs,
    /// How long Events are kept after they last happened
    #[arg(long, default_value = "1h", value_parser = limits::event_ttl)]
    pub event_ttl: Duration,
    /// Back-off before an MLTask's gang restarts after a replica failed (doubles per attempt)
    #[arg(long, default_value = "10s", value_parser = limits::backoff_base)]
    pub task_backoff: Duration,
    /// EncryptionConfiguration for Secrets at rest (default: DATA_DIR/encryption-config.yaml,
    /// made with a fresh key on first start)
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
    #[command(flatten)]
    pub audit: audit::AuditArgs,
    /// The life of a node credential (agents rotate theirs at two thirds of it)
    #[arg(long, default_value = "720h", value_parser = limits::node_credential_ttl)]
    pub node_credential_ttl: Duration,
    /// Another DNS name or IP address for the API server's certificate (besides the listen
    /// address); repeatable
    #[arg(long = "tls-san", value_parser = limits::tls_san)]
    pub tls_san: Vec<String>,
    #[command(flatten)]
    pub leader_elect: leader::LeaderElectArgs,
    #[command(flatten)]
    pub store: store::StoreArgs,
    #[command(flatten)]
    pub bootstrap: bootstrap::BootstrapArgs,
    #[command(flatten)]
    pub blobs: blob_store::BlobStoreArgs,
    #[command(flatten)]
    pub cluster_network: podnet::ClusterNetworkArgs,
}

/// Flags of a node agent, shared by `up` and `agent`.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// Node name (default: this machine's hostname)
    #[arg(long)]
    pub node_name: Option<String>,
    /// Node labels, k=v,k2=v2
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub labels: BTreeMap<String, String>,
    /// Advertise N fake GPUs (for machines without one; shown as fake everywhere)
    #[arg(long, default_value_t = 0)]
    pub fake_gpus: u32,
    /// Base of the restart back-off (doubles per restart, capped at 5 minutes)
    #[arg(long, default_value = "10s", value_parser = limits::backoff_base)]
    pub backoff_base: Duration,
    /// How often the agent posts its node status (100ms to 1h)
    #[arg(long, default_value = "10s", value_parser = limits::heartbeat_interval)]
    pub heartbeat_interval: Duration,
    /// A registry reached over plain HTTP (host[:port]; loopback ones always are); repeatable
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A host path under which pods may mount hostPath volumes; repeatable (default: none)
    #[arg(long = "allow-host-path")]
    pub allow_host_paths: Vec<PathBuf>,
    /// Let pods run privileged containers
    #[arg(long)]
    pub allow_privileged: bool,
    /// The pod network's CIDR (default 10.88.0.0/16)
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// How this node reaches other nodes' pods: vxlan or host-gw (default vxlan for `kumo
    /// agent`; `kumo up` alone programs none)
    #[arg(long, value_parser = podnet::backend)]
    pub pod_network_backend: Option<kumo_net::Backend>,
    /// The pod network's bridge (default kumo0)
    #[arg(long)]
    pub pod_bridge: Option<String>,
    /// Run OCI pods without a pod network (each container gets an empty network namespace)
    #[arg(long)]
    pub no_pod_network: bool,
    /// Pod networks to keep ready ahead of their pods, once the node has run a container pod
    /// (a pod without host ports then starts without waiting for the CNI plugins; 0: none)
    #[arg(long, default_value_t = 2)]
    pub pod_network_pool: usize,
    /// The runc binary (default: found on PATH)
    #[arg(long)]
    pub runc: Option<PathBuf>,
    /// The runsc binary (default: found on PATH)
    #[arg(long)]
    pub runsc: Option<PathBuf>,
    /// A global flag for runsc; repeatable (default: --platform=ptrace --network=host)
    #[arg(long = "runsc-arg", allow_hyphen_values = true)]
    pub runsc_args: Vec<String>,
    /// Disk usage (percent) of the image store's file system above which unused images go
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_high_threshold: u8,
    /// Disk usage (percent) image garbage collection brings it down to
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low_threshold: u8,
    /// How often disk usage is checked for image garbage collection
    #[arg(long, default_value = "5m", value_parser = limits::tick_interval)]
    pub image_gc_interval: Duration,
    /// Images pulled, imported or used more recently than this are never collected
    #[arg(long, default_value = "2m", value_parser = limits::image_gc_min_age)]
    pub image_gc_min_age: Duration,
    /// A directory of CDI specs for runc GPU containers, lowest priority first; repeatable
    /// (default: /etc/cdi, then /var/run/cdi)
    #[arg(long = "cdi-spec-dir")]
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// The cgroup every pod cgroup of this node goes under, in each hierarchy: a relative path
    /// such as kumo-node1 (nodes sharing a machine each need their own)
    #[arg(long, default_value = kumo_runtime::cgroup_parent::DEFAULT_CGROUP_PARENT,
          value_parser = parse_cgroup_parent)]
    pub cgroup_parent: kumo_runtime::cgroup_parent::CgroupParent,
    #[command(flatten)]
    pub endpoint_limits: limits::AgentLimitArgs,
}

/// `kumo up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub control: ControlPlaneArgs,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address the agent serves logs on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub agent_listen: SocketAddr,
    /// Run the L7 router for Apps on this address (off unless given)
    #[arg(long)]
    pub router_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub router_options: router::RouterOptions,
}

/// `kumo server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub control: ControlPlaneArgs,
}

/// `kumo agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// API server URL (https://…), or several of the same control plane, comma-separated: the
    /// agent moves to the next when its server stops answering
    #[arg(long)]
    pub server: String,
    /// A join token (from `kumo token create NAME --join`), exchanged once for this node's own
    /// credential, which is kept in the data dir and rotated
    #[arg(long, env = "KUMO_JOIN_TOKEN", hide_env_values = true)]
    pub join: Option<String>,
    /// A file holding a bearer token to use instead of a node credential (default: $KUMO_TOKEN)
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Refused: a token on the command line is readable by every local user
    #[arg(long, hide = true)]
    pub token: Option<String>,
    /// The cluster CA's certificate (the server's DATA_DIR/pki/ca.crt)
    #[arg(long, conflicts_with = "ca_cert_hash")]
    pub ca_file: Option<PathBuf>,
    /// Trust the CA the server sends whose certificate has this hash (sha256:HEX, printed by
    /// `kumo server`); it is kept in the data dir as ca.crt
    #[arg(long, value_parser = pki::parse_ca_cert_hash)]
    pub ca_cert_hash: Option<String>,
    /// Directory for pod state and logs (default ~/.kumo/agent)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address the agent serves logs on
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub listen: SocketAddr,
    /// Address the API server reaches this agent at (default: the listen address, or 127.0.0.1)
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// The control plane's --cluster-cidr: pod traffic to it (other nodes' pods) keeps its
    /// source address, traffic elsewhere is masqueraded
    #[arg(long, default_value = "10.88.0.0/16", value_parser = podnet::cidr)]
    pub cluster_cidr: String,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Parses `--cgroup-parent` (clap names the flag in its error).
pub fn parse_cgroup_parent(
    text: &str,
) -> Result<kumo_runtime::cgroup_parent::CgroupParent, String> {
    kumo_runtime::cgroup_parent::CgroupParent::parse(text)
}

/// Parses `k=v,k2=v2`, checking keys and values as Kubernetes labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not k=v"))?;
        if !kumo_api::validation::is_qualified_name(k) {
            return Err(format!("label key {k:?} is not valid: use letters, digits, '-', '_', '.', optionally prefixed by a DNS name and '/'"));
        }
        if !kumo_api::validation::is_label_value(v) {
            return Err(format!(
                "label value {v:?} is not valid: at most 63 letters, digits, '-', '_' or '.'"
            ));
        }
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// A shutdown signal every component can wait on.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Fires on Ctrl-C or SIGTERM.
    fn on_signals() -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file (or a pipe) gets plain text, and formatting the
    // escape codes is a measurable share of the router's access log.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| kumo_api::validation::is_dns_subdomain(h))
        .unwrap_or_else(|| "node-1".to_string())
}

fn home_dir(sub: &str) -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".kumo")
        .join(sub)
}

/// A running control plane: the API server plus scheduler and controllers, all API clients.
struct ControlPlane {
    url: String,
    /// The in-process components' token (memory only, never sent to agents).
    token: String,
    /// The admin's client config, when this start knows the admin's secret.
    admin: Option<ClientConfig>,
    store: Arc<dyn kumo_store::Store>,
    transformer: Arc<kumo_apiserver::Transformer>,
    managed: Arc<kumo_apiserver::tokens::ManagedTokens>,
    node_credential_ttl: Duration,
    /// The cluster CA's certificate (PEM).
    ca_pem: String,
    /// On etcd: the shared bootstrap data this server stored or joined.
    joined: Option<bootstrap::Joined>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_control_plane(
    args: &ControlPlaneArgs,
    data_dir: &Path,
    shutdown: &Shutdown,
) -> anyhow::Result<ControlPlane> {
    let election = args.leader_elect.timing()?;
    let pod_range = args.cluster_network.range().await?;
    // A given encryption config that cannot be used stops the server before anything is written.
    let given = match &args.encryption_provider_config {
        Some(path) => Some(
            private::load_encryption_config(path)
                .context("--encryption-provider-config is not usable")?,
        ),
        None => None,
    };
    let window = kumo_store::WatchWindow::new(args.watch_window, args.watch_window_bytes);
    // On etcd the CA and keys are the cluster's, kept in etcd sealed with the server token:
    // read (or, on the first server, stored) before anything is written here, so a server
    // that cannot join leaves its data dir as it was.
    let (early_store, joined) = if args.store.store.is_some() {
        let store = store::open(&args.store, data_dir, window).await?;
        let joined = bootstrap::prepare(
            store.as_ref(),
            &args.bootstrap,
            data_dir,
            args.encryption_provider_config.as_deref(),
        )
        .await?;
        joined.install(data_dir, args.encryption_provider_config.is_some())?;
        (Some(store), Some(joined))
    } else if args.bootstrap.server_token_file.is_some() {
        return Err(anyhow!(
            "--server-token-file joins servers on one etcd: it needs --store etcd://HOST:PORT"
        ));
    } else {
        (None, None)
    };
    // The data dir holds tokens, keys and every Secret: only its owner may enter it.
    private::dir(data_dir)?;
    // Nothing is served unrecorded: a log that cannot be opened stops the server here.
    let audit = Arc::new(audit::open(&args.audit, data_dir)?);
    let encryption = Arc::new(match given {
        Some(t) => t,
        None => private::data_dir_encryption_config(data_dir)?,
    });
    let token = tokens::controller_token()?;
    let names = pki::serving_names(args.listen, &hostname(), &args.tls_san);
    let tls = pki::load_or_make(data_dir, &names)?;
    let store = match early_store {
        Some(store) => store,
        None => store::open(&args.store, data_dir, window).await?,
    };
    let blobs = blob_store::open(&args.blobs, data_dir).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another kumo running? pick another with --listen)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{}", addr.port());
    let admin =
        tokens::admin_config(store.as_ref(), &encryption, data_dir, &url, &tls.ca_pem).await?;
    let (managed, feed) = kumo_apiserver::tokens::ManagedTokens::start(
        Arc::clone(&store),
        Arc::clone(&encryption),
        EXPIRED_TOKENS_KEPT,
        shutdown.wait(),
    )
    .await
    .map_err(|e| anyhow!("cannot load the tokens: {e}"))?;
    // RBAC (with the Node authorizer) decides every request; its policy is read before the
    // server answers.
    let authorizer =
        kumo_apiserver::RbacAuthorizer::start(Arc::clone(&store), Arc::clone(&encryption))
            .await
            .map_err(|e| anyhow!("cannot read the rbac policy from the store: {e}"))?;
    let mut config = kumo_apiserver::Config {
        tls: Some(tls.cluster),
        authenticator: Arc::new(kumo_apiserver::Chain(vec![
            Arc::new(tokens::controller_tokens(&token)),
            managed.clone(),
        ])),
        blobs: Some(Arc::clone(&blobs)),
        encryption: Arc::clone(&encryption),
        authorizer,
        limits: args.connection_limits.limits(),
        audit: Some(audit),
        node_credential_ttl: args.node_credential_ttl,
        ..kumo_apiserver::Config::new(Arc::clone(&store), Vec::new())
    };
    service_accounts::install(&mut config, data_dir)?;
    let mut tasks = vec![tokio::spawn(feed)];
    // The API server stops after the elected loops, so that they can release their Leases.
    let (loops_stopped, stop) = tokio::sync::oneshot::channel::<()>();
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.await;
        };
        if let Err(e) = kumo_apiserver::serve(listener, config, stop).await {
            tracing::error!(error = %e, "api server stopped");
        }
    }));
    let client = Client::new(&client_config(&url, &token, &tls.ca_pem))?;
    // Each loop acts only while this server holds its Lease in kumo-system: with several
    // servers, exactly one runs each loop.
    let identity = leader::identity(&hostname(), addr);
    let elect = |name: &str, make_loop| {
        leader::spawn(
            &client,
            &identity,
            election,
            name,
            make_loop,
            shutdown.wait(),
        )
    };
    let c = client.clone();
    let strategy = args.scheduler_strategy;
    let elected = vec![
        elect(
            "kumo-scheduler",
            boxed(move || {
                kumo_scheduler::run(
                    c.clone(),
                    kumo_scheduler::SchedulerConfig { strategy },
                    std::future::pending(),
                )
            }),
        ),
        {
            let (c, ttl) = (client.clone(), args.event_ttl);
            elect(
                "kumo-event-ttl-controller",
                boxed(move || {
                    kumo_controllers::event_ttl::run(c.clone(), ttl, std::future::pending())
                }),
            )
        },
        {
            let (c, grace) = (client.clone(), args.node_grace);
            elect(
                "kumo-node-lifecycle-controller",
                boxed(move || {
                    kumo_controllers::node_lifecycle::run(c.clone(), grace, std::future::pending())
                }),
            )
        },
        {
            let c = client.clone();
            elect(
                "kumo-node-ipam-controller",
                boxed(move || {
                    kumo_controllers::node_ipam::run(c.clone(), pod_range, std::future::pending())
                }),
            )
        },
        {
            let c = client.clone();
            elect(
                "kumo-apps-controller",
                boxed(move || kumo_controllers::apps::run(c.clone(), std::future::pending())),
            )
        },
        {
            // With several servers on one bucket or shared directory, one collects at a time.
            let interval = args.blobs.blob_gc_interval;
            elect(
                "kumo-blob-gc",
                boxed(move || kumo_apiserver::collect_garbage_every(Arc::clone(&blobs), interval)),
            )
        },
        {
            let (c, backoff_base) = (client.clone(), args.task_backoff);
            elect(
                "kumo-mltask-controller",
                boxed(move || {
                    kumo_controllers::mltask::controller::run(
                        c.clone(),
                        kumo_controllers::mltask::controller::MLTaskConfig { backoff_base },
                        std::future::pending(),
                    )
                }),
            )
        },
    ];
    tasks.push(tokio::spawn(async move {
        for t in elected {
            let _ = t.await;
        }
        let _ = loops_stopped.send(());
    }));
    Ok(ControlPlane {
        url,
        token,
        admin,
        store,
        transformer: encryption,
        managed,
        node_credential_ttl: args.node_credential_ttl,
        ca_pem: tls.ca_pem,
        joined,
        tasks,
    })
}

/// A loop maker with one type, so that every elected loop goes through one `elect`.
type MakeLoop = Box<dyn FnMut() -> BoxedLoop + Send>;
type BoxedLoop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn boxed<F, Fut>(mut make: F) -> MakeLoop
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Box::new(move || Box::pin(make()) as BoxedLoop)
}

/// How long an expired token stays listed (`kumo token ls`) before the server deletes it.
const EXPIRED_TOKENS_KEPT: Duration = Duration::from_secs(60 * 60);

/// `kumo up`'s own agent's node credential: the saved one while the server still accepts it,
/// else one the control plane makes directly.
async fn local_node_credential(
    cp: &ControlPlane,
    node: &str,
    file: &Path,
) -> anyhow::Result<credential::NodeCredential> {
    use kumo_apiserver::Authenticator;
    if let Some(saved) = credential::NodeCredential::load(file)? {
        let accepted = cp.managed.authenticate(&saved.token).ok();
        if accepted.is_some_and(|u| u.node_name() == Some(node)) {
            return Ok(saved);
        }
    }
    let (token, secret) = kumo_apiserver::tokens::issue_node_credential(
        cp.store.as_ref(),
        &cp.transformer,
        node,
        cp.node_credential_ttl,
    )
    .await
    .map_err(|e| anyhow!("cannot make node {node}'s credential: {e}"))?;
    let mut token = token;
    if let Some(status) = token.status.as_mut() {
        status.token = Some(secret);
    }
    let cred = credential::NodeCredential::from_token(&token)?;
    cred.save(file)?;
    Ok(cred)
}

/// A client config for `server` (one URL, or several comma-separated, checked by
/// `agent_servers`) with `token`, trusting the cluster CA `ca_pem`.
fn client_config(server: &str, token: &str, ca_pem: &str) -> ClientConfig {
    let mut urls = server
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    ClientConfig {
        server: urls.next().unwrap_or_default(),
        servers: urls.collect(),
        token: token.to_string(),
        ..Default::default()
    }
    .with_ca_pem(ca_pem)
}

/// `kumo up` is one person's own machine: its `default` namespace enforces the `privileged`
/// Pod Security Standards level, so pods there may use the process runtime and host paths as
/// the node allows. A level already set on it (by its owner) is kept. Returns the level.
async fn label_default_namespace(client: &Client) -> anyhow::Result<String> {
    use kumo_api::pod_security::LABEL_ENFORCE;
    // Every component connects at once while the server starts: past its anonymous-connection
    // cap a new connection may be closed (`--max-anonymous-connections`), so a connection that
    // fails is tried again, for a few seconds.
    let mut attempt = 0;
    loop {
        let labelled = async {
            let ns: kumo_api::Namespace = client.get("", kumo_api::DEFAULT_NAMESPACE).await?;
            if let Some(level) = ns.metadata.labels.get(LABEL_ENFORCE) {
                return Ok(level.clone());
            }
            let patch = serde_json::json!({"metadata": {"labels": {LABEL_ENFORCE: "privileged"}}});
            client
                .patch::<kumo_api::Namespace>("", kumo_api::DEFAULT_NAMESPACE, &patch)
                .await?;
            Ok("privileged".to_string())
        }
        .await;
        match labelled {
            Ok(level) => return Ok(level),
            Err(kumo_client::ClientError::Connect { .. }) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt.min(5))).await;
            }
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context("cannot label the default namespace privileged")
                )
            }
        }
    }
}

/// The node's flags checked, before anything is started or written; the node name.
fn check_node_args(node: &NodeArgs) -> anyhow::Result<String> {
    let node_name = node.node_name.clone().unwrap_or_else(hostname);
    if !kumo_api::validation::is_dns_subdomain(&node_name) {
        return Err(anyhow!(
            "--node-name {node_name:?} is not valid: use lower-case letters, digits, '-' and '.'"
        ));
    }
    if node.image_gc_low_threshold > node.image_gc_high_threshold {
        return Err(anyhow!(
            "--image-gc-low-threshold ({}) must not be above --image-gc-high-threshold ({})",
            node.image_gc_low_threshold,
            node.image_gc_high_threshold
        ));
    }
    // A directory not there (yet) is fine, as for the CDI defaults: specs are read per start.
    if let Some(d) = node
        .cdi_spec_dirs
        .iter()
        .find(|d| d.exists() && !d.is_dir())
    {
        return Err(anyhow!("--cdi-spec-dir {} is not a directory", d.display()));
    }
    Ok(node_name)
}

/// The agent's configuration from flags already checked by [`check_node_args`].
fn agent_config(
    node: &NodeArgs,
    node_name: String,
    data_dir: PathBuf,
    listen: SocketAddr,
    advertise: String,
    cluster_ca_pem: String,
) -> anyhow::Result<kumo_agent::AgentConfig> {
    let protected = data_dir.clone();
    Ok(kumo_agent::AgentConfig {
        node_name,
        data_dir,
        labels: node.labels.clone(),
        fake_gpus: node.fake_gpus,
        listen,
        advertise_address: advertise,
        backoff_base: node.backoff_base,
        heartbeat_interval: node.heartbeat_interval,
        shim_exe: std::env::current_exe()
            .context("cannot find the kumo executable for the shim")?,
        cluster_ca_pem,
        endpoint_limits: node.endpoint_limits.limits(),
        containers: kumo_agent::config::ContainerConfig {
            runc: node.runc.clone(),
            runsc: node.runsc.clone(),
            runsc_args: node.runsc_args.clone(),
            insecure_registries: node.insecure_registries.clone(),
            allowed_host_paths: node.allow_host_paths.clone(),
            // Under `kumo up` the server's data dir (store, tokens, keys) is the agent's parent.
            protected_host_paths: protected
                .parent()
                .into_iter()
                .chain(ClientConfig::default_path().parent())
                .map(Path::to_path_buf)
                .collect(),
            allow_privileged: node.allow_privileged,
            pod_cidr: node.pod_cidr.clone(),
            cluster_cidr: None,
            pod_network_backend: node.pod_network_backend,
            pod_mtu: None,
            bridge: node.pod_bridge.clone(),
            no_pod_network: node.no_pod_network,
            pod_network_pool: node.pod_network_pool,
            image_gc: kumo_agent::image_gc::GcPolicy {
                high_percent: node.image_gc_high_threshold,
                low_percent: node.image_gc_low_threshold,
                interval: node.image_gc_interval,
                min_age: node.image_gc_min_age,
            },
            cdi_spec_dirs: node.cdi_spec_dirs.clone(),
            cgroup_parent: node.cgroup_parent.clone(),
        },
    })
}

/// `kumo up`: everything in one process.
pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = chrono::Utc::now();
    init_logging();
    let shutdown = Shutdown::on_signals();
    let data_dir = args
        .control
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    // Bad node flags stop `up` before the store or the client config is touched.
    let node_name = check_node_args(&args.node)?;
    let cp = start_control_plane(&args.control, &data_dir, &shutdown).await?;
    let config_path = ClientConfig::default_path();
    match &cp.admin {
        Some(admin) => admin
            .save(&config_path)
            .with_context(|| format!("cannot write the client config {}", config_path.display()))?,
        None => {
            tracing::warn!(path = %config_path.display(), "the client config is left as it is: the admin token's secret is unknown")
        }
    }
    let agent_dir = data_dir.join("agent");
    private::dir(&agent_dir)?;
    let node_cred = local_node_credential(&cp, &node_name, &credential::path(&agent_dir)).await?;
    let mut agent_cfg = agent_config(
        &args.node,
        node_name,
        agent_dir.clone(),
        args.agent_listen,
        if args.agent_listen.ip().is_unspecified() {
            "127.0.0.1".into()
        } else {
            args.agent_listen.ip().to_string()
        },
        cp.ca_pem.clone(),
    )?;
    // One machine: its node keeps --pod-cidr (published as its podCIDR) and, unless asked,
    // programs no routes to other nodes.
    let containers = &mut agent_cfg.containers;
    containers.pod_cidr = Some(
        containers
            .pod_cidr
            .clone()
            .unwrap_or_else(|| kumo_net::NetworkConfig::default().pod_cidr),
    );
    containers.cluster_cidr = Some(args.control.cluster_network.cluster_cidr.clone());
    let node_name = agent_cfg.node_name.clone();
    let client = Client::new(&client_config(&cp.url, &cp.token, &cp.ca_pem))?;
    let default_level = label_default_namespace(&client).await?;
    // The node's agent acts as its node (`system:node:NAME`), with a credential it rotates.
    let node_client = Client::new(&client_config(&cp.url, &node_cred.token, &cp.ca_pem))?;
    tokio::spawn(credential::rotate(
        node_client.clone(),
        node_name.clone(),
        credential::path(&agent_dir),
        node_cred,
        shutdown.wait(),
    ));
    let mut agent = tokio::spawn(kumo_agent::run(node_client, agent_cfg, shutdown.wait()));
    // Say "up" once this machine's node is registered and Ready, so the next command can use it.
    tokio::select! {
        registered = wait_for_node(&client, &node_name, started) => registered?,
        ended = &mut agent => return Err(match ended {
            Ok(Err(e)) => anyhow!("the agent could not start: {e}"),
            Ok(Ok(())) => anyhow!("stopped before the node registered"),
            Err(e) => anyhow!("the agent task failed: {e}"),
        }),
    }
    let router = match args.router_listen {
        Some(listen) => {
            let started = router::start(
                client.clone(),
                listen,
                &args.router_options,
                shutdown.wait(),
            )
            .await?;
            Some(started)
        }
        None => None,
    };
    if let Some((r, metrics)) = &router {
        println!("kumo: router listening on {}", r.http_addr);
        if let Some(addr) = r.https_addr {
            println!("kumo: router listening for TLS on {addr}");
        }
        if let Some(addr) = metrics {
            println!("kumo: router metrics on http://{addr}/metrics");
        }
    }
    print_server_token(&cp, &data_dir);
    println!("kumo: API server listening on {}", cp.url);
    println!(
        "kumo: pod security: namespace default is {default_level} (pods there may use the host: the process runtime, hostPath, host namespaces); other namespaces are baseline unless labelled {}",
        kumo_api::pod_security::LABEL_ENFORCE
    );
    println!("kumo: client config written to {}", config_path.display());
    println!(
        "kumo: cluster CA in {}; audit log in {}",
        pki::ca_path(&data_dir).display(),
        args.control.audit.path(&data_dir).display()
    );
    println!(
        "kumo: data in {}; node {node_name} joined; Ctrl-C stops",
        data_dir.display()
    );
    shutdown.wait().await;
    println!("kumo: stopping");
    match agent.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "agent stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "agent task failed"),
        Ok(Ok(())) => {}
    }
    for t in cp.tasks {
        let _ = t.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the Node object `name` exists and is Ready, following a watch.
async fn wait_for_node(client: &Client, name: &str, since: kumo_api::Time) -> anyhow::Result<()> {
    let params = kumo_client::ListParams::fields(&format!("metadata.name={name}"));
    loop {
        // Without a resource version the watch starts with the objects that exist as ADDED.
        let mut watch = match client.watch::<kumo_api::Node>(None, &params, "").await {
            Ok(w) => w,
            Err(kumo_client::ClientError::Connect { .. }) => {
                tokio::task::yield_now().await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(event) = watch.next().await {
            if let Ok(kumo_client::Watched::Added(node) | kumo_client::Watched::Modified(node)) =
                event
            {
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"));
                // Posted by this agent, not left over from before a restart.
                let fresh =
                    |c: &kumo_api::Condition| c.last_heartbeat_time.is_some_and(|t| t >= since);
                if ready.is_some_and(|c| c.status == kumo_api::ConditionStatus::True && fresh(c)) {
                    return Ok(());
                }
            }
        }
    }
}

/// On etcd, where the server token is and how more servers join with it (`up` and `server`).
fn print_server_token(cp: &ControlPlane, data_dir: &Path) {
    if let Some(joined) = &cp.joined {
        let how = if joined.first {
            "stored this cluster's CA and keys in etcd, sealed with"
        } else {
            "joined the servers on this etcd with"
        };
        println!(
            "kumo: {how} the server token in {0}; more servers join with `kumo server --store etcd://… --server-token-file FILE` (FILE: a 0600 copy of {0}) or KUMO_SERVER_TOKEN",
            bootstrap::token_path(data_dir).display()
        );
    }
}

/// `kumo server`: the control plane alone.
pub async fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let shutdown = Shutdown::on_signals();
    let data_dir = args
        .control
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    let cp = start_control_plane(&args.control, &data_dir, &shutdown).await?;
    let hash = kumo_pki::ca_cert_hash(&cp.ca_pem)?;
    println!(
        "kumo: cluster CA in {} ({hash})",
        pki::ca_path(&data_dir).display()
    );
    println!("kumo: API server listening on {}", cp.url);
    let admin = tokens::admin_config_path(&data_dir);
    if cp.admin.is_some() {
        println!(
            "kumo: admin client config written to {0} (KUMO_CONFIG={0} kumo get nodes)",
            admin.display()
        );
    }
    println!("kumo: nodes join with the command `kumo token create NAME --join --ttl 1h` prints");
    print_server_token(&cp, &data_dir);
    shutdown.wait().await;
    for t in cp.tasks {
        let _ = t.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kumo agent`: one node joining a control plane.
pub async fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let shutdown = Shutdown::on_signals();
    let data_dir = args.data_dir.clone().unwrap_or_else(|| home_dir("agent"));
    let node_name = check_node_args(&args.node)?;
    kumo_client::config::split_servers("--server", &args.server).map_err(anyhow::Error::msg)?;
    let given = crate::token_source::token(
        args.token.as_deref(),
        args.token_file.as_deref(),
        "KUMO_TOKEN",
    )?;
    // The node credential lives here: only the agent's user may enter.
    private::dir(&data_dir)?;
    let advertise = args.advertise_address.clone().unwrap_or_else(|| {
        if args.listen.ip().is_unspecified() {
            "127.0.0.1".into()
        } else {
            args.listen.ip().to_string()
        }
    });
    let ca_pem = agent_ca(&args, &data_dir).await?;
    let file = credential::path(&data_dir);
    let (client, cred) = credential::for_agent_patiently(
        &args.server,
        &ca_pem,
        &node_name,
        &file,
        args.join.as_deref(),
        given,
    )
    .await
    .map_err(|e| {
        // The CA came from a flag or the data dir, not from a client config: name those.
        match e.chain().find_map(|c| c.downcast_ref::<kumo_client::ClientError>()) {
            Some(kumo_client::ClientError::Verify { server, reason, .. }) => anyhow!(
                "cannot verify the server certificate of {server}: {reason} (is the CA of --ca-file, --ca-cert-hash or {} this cluster's?)",
                data_dir.join("ca.crt").display()
            ),
            _ => e,
        }
    })?;
    if let Some(cred) = cred {
        tokio::spawn(credential::rotate(
            client.clone(),
            node_name.clone(),
            file,
            cred,
            shutdown.wait(),
        ));
    }
    let mut cfg = agent_config(
        &args.node,
        node_name,
        data_dir,
        args.listen,
        advertise,
        ca_pem,
    )?;
    cfg.containers.cluster_cidr = Some(args.cluster_cidr.clone());
    cfg.containers.pod_network_backend = Some(
        args.node
            .pod_network_backend
            .unwrap_or(kumo_net::Backend::Vxlan),
    );
    println!(
        "kumo: agent for node {} joined {}",
        cfg.node_name, args.server
    );
    kumo_agent::run(client, cfg, shutdown.wait()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The cluster CA an agent trusts: `--ca-file`; or the CA the server sends whose hash is
/// `--ca-cert-hash`; or the one a previous start kept in the data dir. Kept (0600) in the
/// data dir as `ca.crt`.
async fn agent_ca(args: &AgentArgs, data_dir: &Path) -> anyhow::Result<String> {
    let kept = data_dir.join("ca.crt");
    let ca_pem = if let Some(path) = &args.ca_file {
        read_ca(path).with_context(|| format!("--ca-file {}", path.display()))?
    } else if let Some(hash) = &args.ca_cert_hash {
        pinned_ca_of_any(&args.server, hash).await?
    } else if kept.exists() {
        read_ca(&kept)?
    } else {
        return Err(anyhow!(
            "the agent needs the cluster CA to verify {}: pass --ca-file (the server's DATA_DIR/pki/ca.crt) or --ca-cert-hash (printed by `kumo server`)",
            args.server
        ));
    };
    private::dir(data_dir)?;
    pki::write_private(&kept, &ca_pem)?;
    Ok(ca_pem)
}

/// The CA pinned by `hash` from the first of the comma-separated `servers` that answers.
async fn pinned_ca_of_any(servers: &str, hash: &str) -> anyhow::Result<String> {
    let mut failed = None;
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match pki::fetch_pinned_ca(server, hash).await {
            Ok(ca) => return Ok(ca),
            Err(e) => {
                tracing::warn!(server, error = %e, "cannot get the pinned CA, trying the next server");
                failed = Some(e);
            }
        }
    }
    Err(failed.unwrap_or_else(|| anyhow!("--server names no server")))
}

/// A PEM file holding a certificate.
fn read_ca(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    kumo_pki::certs_from_pem("the CA file", &text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(parse_labels("").unwrap(), BTreeMap::new());
        let l = parse_labels("zone=a, kumo.dev/pool=gpu").unwrap();
        assert_eq!(l.get("kumo.dev/pool").map(String::as_str), Some("gpu"));
        assert!(parse_labels("novalue").unwrap_err().contains("is not k=v"));
        assert!(parse_labels("bad key=1").unwrap_err().contains("label key"));
        assert!(parse_labels("k=bad value")
            .unwrap_err()
            .contains("label value"));
    }

    #[test]
    fn cgroup_parent_flag() {
        use clap::Parser;
        let check = |value: &str, expected: Result<&str, &str>| {
            let argv = [
                "kumo",
                "agent",
                "--server",
                "https://a:1",
                "--cgroup-parent",
                value,
            ];
            match (crate::Cli::try_parse_from(argv), expected) {
                (Ok(cli), Ok(want)) => match cli.command {
                    crate::Command::Agent(a) => assert_eq!(a.node.cgroup_parent.as_str(), want),
                    other => panic!("{other:?}"),
                },
                (Err(e), Err(part)) => {
                    let text = e.to_string();
                    assert!(
                        text.contains("--cgroup-parent") && text.contains(part),
                        "{text}"
                    );
                }
                (got, want) => panic!("{value:?}: {got:?}, wanted {want:?}"),
            }
        };
        check("kumo-node1", Ok("kumo-node1"));
        check("nodes/n1", Ok("nodes/n1"));
        check("../escape", Err("must not contain"));
        check("/abs", Err("must be relative"));
        let default = crate::Cli::try_parse_from(["kumo", "agent", "--server", "https://a:1"]);
        match default.expect("parse").command {
            crate::Command::Agent(a) => assert_eq!(a.node.cgroup_parent.as_str(), "kumo"),
            other => panic!("{other:?}"),
        }
    }
}
