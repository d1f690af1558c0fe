//! Pod networking for kumo: one network namespace per pod, wired up by the standard CNI plugins.
//!
//! kumo does not re-implement networking. For each pod it creates a network namespace (a file
//! under [`NetworkConfig::state_dir`] that an OCI runtime config can name in
//! `linux.namespaces[].path`), then runs the CNI plugins from [`NetworkConfig::cni_bin_dir`] as
//! the CNI 1.0 spec says: `loopback` for `lo`, `bridge` with `host-local` IPAM for `eth0`, and
//! `portmap` when the pod has host ports. Everything the plugins need to undo their work is kept
//! in a small state file per pod, so [`PodNetworks::teardown`] works after an agent restart.
//!
//! The call sequence for an agent:
//!
//! 1. [`PodNetworks::new`] once at start-up;
//! 2. [`PodNetworks::cleanup_orphans`] with the uids of the pods bound to the node (and
//!    [`PodNetworks::list`] to re-adopt the networks of pods that still exist);
//! 3. per pod: [`port_mappings`] from the pod spec, [`PodNetworks::setup`], [`write_pod_files`]
//!    into the pod's directory, then start the containers in [`PodNetwork::netns_path`] with the
//!    three files bind-mounted;
//! 4. when the pod is gone (its containers stopped): [`PodNetworks::teardown`].

#![forbid(unsafe_code)]

mod cni;
mod config;
pub mod down;
mod error;
mod exec;
mod files;
mod links;
mod masq;
mod netns;
mod overlay;
mod pods;
mod ports;
mod state;

pub use cni::{CniError, CniInterface, CniIp, CniResult, CniRoute};
pub use config::NetworkConfig;
pub use error::NetError;
pub use files::{write_pod_files, PodFiles};
pub use links::{Applied, Links, ROUTE_PROTOCOL};
pub use masq::masquerade;
pub use overlay::{
    desired, format_mac, vtep_gateway, vtep_mac, Backend, Desired, FdbEntry, NeighbourEntry,
    PeerNode, PodRoute, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI,
};
pub use pods::{PodNetRequest, PodNetwork, PodNetworks, WARM_PREFIX};
pub use ports::{port_mappings, PortMapping, PortSpec, Protocol};
