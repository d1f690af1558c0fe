//! The `kumo` binary: the CLI and the `up` / `server` / `agent` daemons in one executable.

mod cli;
mod daemon;
mod duration;
mod token_source;

use clap::{Args, Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the router allocates a little on every request, and
/// there glibc's malloc and free took about 7 % of its CPU (see docs/ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

/// kumo: a small cloud in one binary — declarative API, scheduler, node agents.
#[derive(Parser, Debug)]
#[command(name = "kumo", version = kumo_api::VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How the CLI reaches the API server.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// API server URL, or several of one control plane comma-separated, tried in order (default:
    /// from the client config, else https://127.0.0.1:7400)
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// A file holding the bearer token (default: $KUMO_TOKEN, else the client config:
    /// $KUMO_CONFIG or ~/.kumo/config)
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Refused: a token on the command line is readable by every local user
    #[arg(long, global = true, hide = true)]
    pub token: Option<String>,
}

impl ConnectArgs {
    /// The token from `--token-file` or `$KUMO_TOKEN`, if given.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        token_source::token(
            self.token.as_deref(),
            self.token_file.as_deref(),
            "KUMO_TOKEN",
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything on this machine: API server, scheduler, controllers and one agent
    // Boxed: its flags make it many times the size of the other commands.
    Up(Box<daemon::UpArgs>),
    /// Run the control plane: API server, scheduler and controllers
    Server(daemon::ServerArgs),
    /// Run a node agent that joins a control plane
    Agent(daemon::AgentArgs),
    /// Move a stopped single-machine kumo onto etcd: kumo store migrate --from DATA_DIR --to etcd://…
    Store(daemon::migrate::StoreCmdArgs),
    /// Run the L7 router for Apps, fed by the API's Apps and pods
    Router(daemon::router::RouterArgs),
    /// Create or update objects from files (YAML or JSON, multi-document)
    Apply(cli::apply::ApplyArgs),
    /// Create an object from flags (secret docker-registry|generic)
    Create(cli::create::CreateArgs),
    /// Manage API tokens: create (prints the secret once; --join for nodes), ls, revoke
    Token(cli::token::TokenArgs),
    /// Manage Secrets at rest: reencrypt (after an encryption key rotation)
    Secrets(cli::secrets::SecretsArgs),
    /// List objects or show one
    Get(cli::get::GetArgs),
    /// Show an object in detail, with its conditions and events
    Describe(cli::describe::DescribeArgs),
    /// Delete objects by name or from files
    Delete(cli::delete::DeleteArgs),
    /// Print a pod's container log
    Logs(cli::logs::LogsArgs),
    /// Run a command in a running container
    Exec(cli::exec::ExecArgs),
    /// Wait until an object reaches a condition or phase
    Wait(cli::wait::WaitArgs),
    /// Print the client and server versions
    Version(cli::version::VersionArgs),
    /// Inspect authorisation: can-i
    Auth(cli::auth::AuthArgs),
    /// Print a shell completion script
    Completion(cli::completion::CompletionArgs),
    /// Manage this node's images: pull, ls, rm, import
    Image(cli::image::ImageArgs),
    /// Store or forget registry credentials (~/.kumo/registries.json)
    Registry(cli::image::RegistryArgs),
    /// Manage apps: kumo app create NAME
    App(cli::app::AppArgs),
    /// List apps
    Apps(cli::app::AppsArgs),
    /// Deploy an image to an app and follow the rollout
    Deploy(cli::deploy::DeployArgs),
    /// Show or change an app's config vars (each change is a release)
    Config(cli::config::ConfigArgs),
    /// Change an app's replica counts: kumo scale APP web=3 worker=0
    Scale(cli::deploy::ScaleArgs),
    /// List an app's releases
    Releases(cli::app::AppNameArgs),
    /// Roll an app back to an earlier release (image, config and processes), as a new release
    Rollback(cli::deploy::RollbackArgs),
    /// Run a one-off command in an app's current release: kumo run APP -- CMD
    Run(cli::run_once::RunArgs),
    /// Print an app's URL
    Open(cli::app::AppNameArgs),
    /// Submit an ML training task: kumo submit NAME --gpus 2 --parallelism 4 -- CMD ARGS...
    Submit(cli::submit::SubmitArgs),
    /// Show the tasks waiting in queues: position, GPUs, priority, waiting time, reason
    Queue(cli::queue::QueueArgs),
    /// Cancel an ML task: every replica stops gracefully
    Cancel(cli::queue::CancelArgs),
    /// Manage datasets for ML tasks: push DIR NAME, pull NAME DIR, ls, rm NAME
    Dataset(cli::dataset::DatasetArgs),
    /// Fetch an ML task's collected /output: kumo output pull TASK DIR
    Output(cli::dataset::OutputArgs),
    /// Mark a node unschedulable: new pods go elsewhere, its pods stay
    Cordon(cli::node::CordonArgs),
    /// Mark a node schedulable again
    Uncordon(cli::node::CordonArgs),
    /// Cordon a node and evict its pods: App replicas once replaced elsewhere, MLTasks requeued
    Drain(cli::node::DrainArgs),
    /// On a node, as root: stop every pod and remove everything kumo made there (containers,
    /// mounts, cgroups, pod networks, the bridge, iptables chains, IPAM leases)
    Down(cli::down::DownArgs),
    /// (internal) run N hollow nodes (fake runtime) for the density benchmark
    #[command(hide = true, name = "hollow-nodes")]
    HollowNodes(daemon::hollow::HollowArgs),
    /// (internal) supervise one container process for the agent
    #[command(hide = true)]
    Shim(kumo_runtime::shim::ShimArgs),
    /// (internal) a shim started ahead: waits for its container's job on stdin
    #[command(hide = true, name = "shim-standby")]
    ShimStandby(kumo_runtime::shim::StandbyArgs),
    /// (internal) join a container's cgroups and namespaces, then run a command (for exec)
    #[command(hide = true)]
    Nsexec(kumo_runtime::nsexec::NsExecArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Shim(args) = cli.command {
        // The shim is synchronous and must not start a runtime before it forks its child.
        return ExitCode::from(kumo_runtime::shim::run(args));
    }
    if let Command::ShimStandby(_) = cli.command {
        return ExitCode::from(kumo_runtime::shim::standby());
    }
    if let Command::Nsexec(args) = cli.command {
        // Joining a mount namespace needs a single-threaded process: no runtime yet.
        return ExitCode::from(kumo_runtime::nsexec::run(args));
    }
    let runtime = match runtime_for(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(a) => daemon::up(*a).await,
            Command::Server(a) => daemon::server(a).await,
            Command::Agent(a) => daemon::agent(a).await,
            Command::HollowNodes(a) => daemon::hollow::run(a).await,
            Command::Router(a) => daemon::router::run(a).await,
            Command::Store(a) => daemon::migrate::run(a).await,
            Command::Apply(a) => cli::apply::run(a).await,
            Command::Create(a) => cli::create::run(a).await,
            Command::Secrets(a) => cli::secrets::run(a).await,
            Command::Token(a) => cli::token::run(a).await,
            Command::Get(a) => cli::get::run(a).await,
            Command::Describe(a) => cli::describe::run(a).await,
            Command::Delete(a) => cli::delete::run(a).await,
            Command::Logs(a) => cli::logs::run(a).await,
            Command::Exec(a) => cli::exec::run(a).await,
            Command::Wait(a) => cli::wait::run(a).await,
            Command::Version(a) => cli::version::run(a).await,
            Command::Auth(a) => cli::auth::run(a).await,
            Command::Completion(a) => cli::completion::run(a),
            Command::Image(a) => cli::image::run(a).await,
            Command::Registry(a) => cli::image::run_registry(a).await,
            Command::App(a) => cli::app::run(a).await,
            Command::Apps(a) => cli::app::list(a).await,
            Command::Deploy(a) => cli::deploy::deploy(a).await,
            Command::Config(a) => cli::config::run(a).await,
            Command::Scale(a) => cli::deploy::scale(a).await,
            Command::Releases(a) => cli::app::list_releases(a).await,
            Command::Rollback(a) => cli::deploy::rollback(a).await,
            Command::Run(a) => cli::run_once::run(a).await,
            Command::Open(a) => cli::app::open(a).await,
            Command::Submit(a) => cli::submit::run(a).await,
            Command::Queue(a) => cli::queue::run(a).await,
            Command::Cancel(a) => cli::queue::cancel(a).await,
            Command::Dataset(a) => cli::dataset::run(a).await,
            Command::Output(a) => cli::dataset::run_output(a).await,
            Command::Cordon(a) => cli::node::cordon(a).await,
            Command::Uncordon(a) => cli::node::uncordon(a).await,
            Command::Drain(a) => cli::node::drain(a).await,
            Command::Down(a) => cli::down::run(a).await,
            Command::Shim(_) | Command::ShimStandby(_) | Command::Nsexec(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime for `command`. `kumo router` allowed a single CPU (the benchmark pins it
/// with taskset, as one would give it one core) runs on one thread: a work-stealing pool of one
/// worker costs more per wake-up than a current-thread runtime and gains nothing.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if matches!(command, Command::Router(_)) && one_cpu {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
}

/// The data directory used when `--data-dir` is not given: `~/.kumo/data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".kumo")
        .join("data")
}
