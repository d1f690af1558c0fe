//! The pod network flags: the control plane's cluster CIDR and node slices (node IPAM), and
//! how an agent reaches other nodes' pods.

use anyhow::anyhow;
use clap::Args;
use kumo_api::cidr::Cidr;
use kumo_controllers::node_ipam::{check_host_overlap, ClusterCidr};

/// The control plane's pod network flags (Kubernetes' names and defaults).
#[derive(Args, Debug, Clone)]
pub struct ClusterNetworkArgs {
    /// The pod network of the whole cluster; each node gets a slice of it (spec.podCIDR)
    #[arg(long, default_value = "10.88.0.0/16")]
    pub cluster_cidr: String,
    /// The prefix length of each node's slice of --cluster-cidr
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
}

impl ClusterNetworkArgs {
    /// The flags checked, and the cluster CIDR against this host's own networks (read through
    /// netlink; kumo's own links, `kumo…`, are not the host's).
    pub async fn range(&self) -> anyhow::Result<ClusterCidr> {
        let range = ClusterCidr::new(&self.cluster_cidr, self.node_cidr_mask_size)
            .map_err(|e| anyhow!(e))?;
        let links = kumo_net::Links::connect()?;
        let host: Vec<(String, Cidr)> = links
            .host_networks()
            .await?
            .into_iter()
            .filter_map(|(link, net)| Cidr::parse(&net).ok().map(|c| (link, c)))
            .collect();
        check_host_overlap(&range.cluster, &host).map_err(|e| anyhow!(e))?;
        Ok(range)
    }
}

/// Parses `--pod-network-backend`.
pub fn backend(s: &str) -> Result<kumo_net::Backend, String> {
    s.parse()
}

/// Parses an agent's `--cluster-cidr`.
pub fn cidr(s: &str) -> Result<String, String> {
    Cidr::parse(s).map(|c| c.to_string())
}
