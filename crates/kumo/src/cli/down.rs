//! `kumo down`: on a node, as root, stops every pod of the node and removes everything kumo
//! made there, as k3s's killall script does, printing one line per thing removed.
//!
//! The node is named by the agent's own flags (`--data-dir`, `--cgroup-parent`,
//! `--pod-bridge`, `--pod-cidr`); nothing of another node (another data dir, cgroup parent or
//! bridge) is touched. The work is the library's ([`kumo_runtime::down`], [`kumo_net::down`]),
//! which every e2e test's teardown runs too.

use anyhow::{bail, Context};
use kumo_runtime::cgroup_parent::{CgroupParent, DEFAULT_CGROUP_PARENT};
use kumo_runtime::down::{Node, PodScope};
use std::path::PathBuf;
use std::process::ExitCode;

/// The pod network's tunnel device, removed with the bridge when it is there.
pub const VXLAN_DEVICE: &str = "kumo.vxlan";

/// `kumo down`.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// The agent's data dir, as given to `kumo agent` (default ~/.kumo/agent; for `kumo up`,
    /// its data dir's `agent`)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The agent's --cgroup-parent: every pod cgroup under it is this node's
    #[arg(long, default_value = DEFAULT_CGROUP_PARENT,
          value_parser = crate::daemon::parse_cgroup_parent)]
    pub cgroup_parent: CgroupParent,
    /// The agent's --pod-bridge (default kumo0)
    #[arg(long)]
    pub pod_bridge: Option<String>,
    /// The agent's --pod-cidr (default 10.88.0.0/16)
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Another network device of this node to delete; repeatable (the pod network's VXLAN
    /// device, kumo.vxlan, always is)
    #[arg(long = "link")]
    pub links: Vec<String>,
}

pub async fn run(args: DownArgs) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("kumo down must run as root (it kills containers and removes cgroups and links)");
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".kumo")
            .join("agent")
    });
    // Paths are compared with what processes and mounts name: make it absolute first.
    let data_dir = std::path::absolute(&data_dir)?;
    let mut net = kumo_net::NetworkConfig::new(data_dir.join("net"));
    if let Some(b) = &args.pod_bridge {
        net.bridge = b.clone();
    }
    if let Some(c) = &args.pod_cidr {
        net.pod_cidr = c.clone();
    }
    // Bad network flags stop it before anything is killed.
    if net.state_dir.is_dir() {
        kumo_net::PodNetworks::new(net.clone()).context("--pod-bridge or --pod-cidr")?;
    }
    let node = Node {
        data_dir,
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        cgroup_parent: args.cgroup_parent,
    };
    let mut links = vec![VXLAN_DEVICE.to_string()];
    links.extend(args.links);
    let mut lines: Vec<String> = Vec::new();
    // Processes first (nothing may make anything again), then the networks while their
    // namespaces are still mounted, then the remaining mounts and the cgroups.
    let stopped = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            kumo_runtime::down::stop(&node, PodScope::AllUnderParent)
        })
        .await?
    };
    let network = kumo_net::down::down(net, &links).await;
    let released = tokio::task::spawn_blocking(move || {
        kumo_runtime::down::release(&node, PodScope::AllUnderParent)
    })
    .await?;
    lines.extend(stopped.iter().map(ToString::to_string));
    lines.extend(network.removed.iter().map(ToString::to_string));
    lines.extend(released.iter().map(ToString::to_string));
    if lines.is_empty() && network.failed.is_empty() {
        println!("kumo down: nothing to remove");
    }
    for line in &lines {
        println!("removed {line}");
    }
    for failure in &network.failed {
        eprintln!("kumo down: {failure}");
    }
    Ok(if network.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn flags_name_the_node_as_the_agent_does() {
        let parse = |args: &[&str]| {
            crate::Cli::try_parse_from(["kumo", "down"].iter().chain(args)).map(|c| c.command)
        };
        match parse(&["--data-dir", "/d", "--link", "x"]).expect("parse") {
            crate::Command::Down(a) => {
                assert_eq!(a.cgroup_parent.as_str(), "kumo");
                assert_eq!(a.links, ["x"]);
                assert_eq!(a.pod_bridge, None);
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["--cgroup-parent", "a/../b"]).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("--cgroup-parent") && text.contains("must not contain"),
            "{text}"
        );
    }
}
