//! `kumo hollow-nodes` (hidden; the density benchmark, `bench/density.py`): N hollow nodes in
//! this one process (`kumo_agent::hollow`: the agent's real heartbeat, pod worker and status
//! writes over a fake runtime that runs nothing). Each node joins as `kumo agent --join` does,
//! getting its own node credential for the join token, and then talks to the API server with
//! it. Credentials are kept in memory only and not rotated: a benchmark lasts minutes.

use super::{client_config, credential, init_logging, read_ca, Shutdown};
use anyhow::Context;
use clap::Args;
use kumo_agent::hollow::{HollowNode, HOLLOW_RUNTIME_CLASS};
use kumo_agent::node::HostFacts;
use kumo_client::Client;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `kumo hollow-nodes`.
#[derive(Args, Debug)]
pub struct HollowArgs {
    /// API server URL (https://…)
    #[arg(long)]
    pub server: String,
    /// The cluster CA's certificate (the server's DATA_DIR/pki/ca.crt)
    #[arg(long)]
    pub ca_file: PathBuf,
    /// A join token with at least --nodes uses (`kumo token create NAME --join --uses N`)
    #[arg(long, env = "KUMO_JOIN_TOKEN", hide_env_values = true)]
    pub join: String,
    /// How many hollow nodes to run (1 to 100000)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub nodes: u32,
    /// Node names are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "hollow-")]
    pub prefix: String,
    /// How often each node posts its status (100ms to 1h)
    #[arg(long, default_value = "10s", value_parser = super::limits::heartbeat_interval)]
    pub heartbeat_interval: Duration,
    /// How many nodes join at the same time (1 to 1024)
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub join_concurrency: u16,
    /// The cores (1 to 4096) and memory (GiB, 1 to 65536) each node reports
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub node_cpus: u32,
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub node_memory_gib: u64,
}

/// Joins `--nodes` hollow nodes and runs them until SIGTERM or Ctrl-C.
pub async fn run(args: HollowArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let shutdown = Shutdown::on_signals();
    let ca_pem =
        read_ca(&args.ca_file).with_context(|| format!("--ca-file {}", args.ca_file.display()))?;
    let joiner = Client::new(&client_config(&args.server, &args.join, &ca_pem))?;
    let facts = HostFacts {
        cpus: args.node_cpus,
        memory_bytes: args.node_memory_gib << 30,
        kernel_version: "hollow".into(),
    };
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(usize::from(
        args.join_concurrency,
    )));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..args.nodes {
        let name = format!("{}{i}", args.prefix);
        let (joiner, server, ca_pem, slots) = (
            joiner.clone(),
            args.server.clone(),
            ca_pem.clone(),
            slots.clone(),
        );
        joins.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            let cred = credential::request(&joiner, &name).await?;
            let client = Client::new(&client_config(&server, &cred.token, &ca_pem))?;
            anyhow::Ok((name, client))
        });
    }
    let mut nodes = tokio::task::JoinSet::new();
    while let Some(joined) = joins.join_next().await {
        let (name, client) = joined.context("a join task failed")??;
        let node = HollowNode {
            name,
            labels: Default::default(),
            runtime_class: HOLLOW_RUNTIME_CLASS,
            facts: facts.clone(),
            heartbeat_interval: args.heartbeat_interval,
        };
        nodes.spawn(kumo_agent::hollow::run(client, node, shutdown.wait()));
    }
    println!(
        "kumo: {} hollow nodes joined {} in {:.1}s",
        args.nodes,
        args.server,
        started.elapsed().as_secs_f64()
    );
    while nodes.join_next().await.is_some() {}
    Ok(ExitCode::SUCCESS)
}
