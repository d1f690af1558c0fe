//! [`NetworkConfig`]: where the plugins are, which bridge and CIDR pods get, where state lives.

use crate::error::NetError;
use std::net::IpAddr;
use std::path::PathBuf;

/// How a node wires its pods. Build it with [`NetworkConfig::new`] and override fields as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The range pod IPs come from (host-local IPAM); its first address is the bridge gateway.
    /// Default `10.88.0.0/16`.
    pub pod_cidr: String,
    /// The whole cluster's pod range (every node's pod CIDR): pod traffic to it keeps its
    /// source address; traffic elsewhere is masqueraded. `None`: only `pod_cidr` is.
    pub cluster_cidr: Option<String>,
    /// The Linux bridge the bridge plugin creates and plugs every pod's veth into. Default `kumo0`.
    pub bridge: String,
    /// Where the CNI plugin binaries are. Default `/usr/lib/cni` (Debian's
    /// containernetworking-plugins).
    pub cni_bin_dir: PathBuf,
    /// kumo's own networking state: `netns/` (pod namespace files), `pods/` (per-pod state),
    /// `ipam/` (host-local leases). Typically `<agent data dir>/net`.
    pub state_dir: PathBuf,
    /// The MTU of the bridge and veths; the bridge plugin's default (1500) when `None`.
    pub mtu: Option<u32>,
    /// The node's name, used in messages. Default: the host name.
    pub node_name: String,
    /// How many networks to keep made ahead of their pods ([`crate::PodNetworks::fill_warm_pool`]).
    /// Default 0 (none).
    pub warm_pool: usize,
}

impl NetworkConfig {
    /// The defaults, with kumo's networking state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        NetworkConfig {
            pod_cidr: "10.88.0.0/16".to_string(),
            cluster_cidr: None,
            bridge: "kumo0".to_string(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            state_dir: state_dir.into(),
            mtu: None,
            node_name: host_name(),
            warm_pool: 0,
        }
    }

    /// Checks every field, returning the parsed pod CIDR.
    pub(crate) fn validate(&self) -> Result<Cidr, NetError> {
        let cidr = Cidr::parse(&self.pod_cidr).map_err(|message| NetError::InvalidConfig {
            field: "pod_cidr",
            message,
        })?;
        check_bridge_name(&self.bridge).map_err(|message| NetError::InvalidConfig {
            field: "bridge",
            message,
        })?;
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(NetError::InvalidConfig {
                    field: "mtu",
                    message: format!("{mtu} is outside 68..65535"),
                });
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(NetError::InvalidConfig {
                field: "state_dir",
                message: "must not be empty".to_string(),
            });
        }
        Ok(cidr)
    }
}

impl NetworkConfig {
    /// The parsed cluster CIDR, if any.
    pub(crate) fn cluster(&self) -> Result<Option<Cidr>, NetError> {
        self.cluster_cidr
            .as_deref()
            .map(|c| {
                Cidr::parse(c).map_err(|message| NetError::InvalidConfig {
                    field: "cluster_cidr",
                    message,
                })
            })
            .transpose()
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig::new("/var/lib/kumo/net")
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A parsed network range such as `10.88.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (want address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        // Room for at least the gateway and one pod.
        let (bits, max) = match addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32u8),
            IpAddr::V6(a) => (u128::from(a), 128u8),
        };
        if prefix > max - 2 {
            return Err(format!(
                "/{prefix} leaves no room for pods (at most /{})",
                max - 2
            ));
        }
        let host_bits = u32::from(max - prefix);
        let host_mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |b| b - 1);
        if bits & host_mask != 0 {
            return Err(format!("{s} has host bits set"));
        }
        Ok(Cidr { addr, prefix })
    }

    /// The first address of the range: the bridge plugin's gateway.
    pub(crate) fn first_host(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
        }
    }

    /// The default route pods get: all of the address family.
    pub(crate) fn default_route(&self) -> &'static str {
        match self.addr {
            IpAddr::V4(_) => "0.0.0.0/0",
            IpAddr::V6(_) => "::/0",
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn check_bridge_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a link name"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{name:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cidr: &str, expected: Result<&str, &str>) {
        let got = Cidr::parse(cidr).map(|c| c.to_string());
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            expected,
            "for {cidr:?}"
        );
    }

    #[test]
    fn cidrs() {
        check("10.88.0.0/16", Ok("10.88.0.0/16"));
        check("10.123.4.0/24", Ok("10.123.4.0/24"));
        check("fd00:88::/64", Ok("fd00:88::/64"));
        check("10.88.0.0/30", Ok("10.88.0.0/30"));
        check(
            "10.88.0.0",
            Err("\"10.88.0.0\" is not a CIDR (want address/prefix)"),
        );
        check(
            "10.88.0.300/16",
            Err("\"10.88.0.300\" is not an IP address"),
        );
        check("10.88.0.0/x", Err("\"x\" is not a prefix length"));
        check(
            "10.88.0.0/31",
            Err("/31 leaves no room for pods (at most /30)"),
        );
        check("10.88.0.1/16", Err("10.88.0.1/16 has host bits set"));
        check("10.88.0.0/0", Err("10.88.0.0/0 has host bits set"));
        check("::/0", Ok("::/0"));
        check("fd00::1/0", Err("fd00::1/0 has host bits set"));
    }

    #[test]
    fn config_validation() {
        let ok = NetworkConfig::new("/tmp/x");
        assert!(ok.validate().is_ok());
        let cases: Vec<(NetworkConfig, &str)> =
            vec![
            (
                NetworkConfig { bridge: "a-very-long-bridge-name".into(), ..ok.clone() },
                "network config bridge: \"a-very-long-bridge-name\" must be 1 to 15 characters",
            ),
            (
                NetworkConfig { bridge: "br 0".into(), ..ok.clone() },
                "network config bridge: \"br 0\" may hold only letters, digits, '-', '_' and '.'",
            ),
            (
                NetworkConfig { mtu: Some(20), ..ok.clone() },
                "network config mtu: 20 is outside 68..65535",
            ),
            (
                NetworkConfig { pod_cidr: "nope".into(), ..ok.clone() },
                "network config pod_cidr: \"nope\" is not a CIDR (want address/prefix)",
            ),
            (
                NetworkConfig { state_dir: "".into(), ..ok.clone() },
                "network config state_dir: must not be empty",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(config.validate().unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn defaults() {
        let c = NetworkConfig::default();
        assert_eq!(c.pod_cidr, "10.88.0.0/16");
        assert_eq!(c.bridge, "kumo0");
        assert_eq!(c.cni_bin_dir, PathBuf::from("/usr/lib/cni"));
        assert!(!c.node_name.is_empty());
    }
}
