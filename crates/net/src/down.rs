//! Takes a node's pod network down for good (`kumo down`, every e2e test's teardown): each pod
//! network (CNI DEL, its namespace, its veth), the veths left on the bridge, the node's
//! masquerade chain, the IPAM leases, then the bridge and the other links named (the pod
//! network's tunnel device, once the node has one), and kumo's routes to other nodes' pods
//! (`proto 77`, host-gw's), saying what it removed.
//!
//! Everything is found from the node's state dir and names: another node's bridge, chain or
//! leases are never touched. Links are removed with `ip link`, as a person would.

use crate::config::NetworkConfig;
use crate::masq;
use crate::pods::PodNetworks;
use crate::state::file_names;
use std::ffi::OsStr;
use std::fmt;
use std::net::IpAddr;

/// One thing taken away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// `pod network`, `veth`, `iptables chain`, `ipam lease`, `link`, `route`.
    pub kind: &'static str,
    pub what: String,
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.what)
    }
}

/// What [`down`] did: what it removed, and what it could not (one message each).
#[derive(Debug, Default)]
pub struct NetworkDown {
    pub removed: Vec<Removed>,
    pub failed: Vec<String>,
}

impl NetworkDown {
    fn removed(&mut self, kind: &'static str, what: impl fmt::Display) {
        self.removed.push(Removed {
            kind,
            what: what.to_string(),
        });
    }
}

/// Removes the node's pod network: `config` names its state dir, bridge and pod CIDR (as the
/// agent was given them); `links` are further devices of the node to delete (after the bridge).
pub async fn down(config: NetworkConfig, links: &[String]) -> NetworkDown {
    let mut out = NetworkDown::default();
    let bridge = config.bridge.clone();
    let path = crate::exec::plugin_path_env(std::env::var_os("PATH").as_deref());
    // The last pod network's teardown removes the chain itself: note it is there first.
    let chain = masq::chain_name(&bridge);
    let had_chain = chain_exists(&chain, &path).await;
    if config.state_dir.is_dir() {
        pod_networks(config, &mut out).await;
    }
    veths_on(&bridge, &mut out).await;
    match remove_chain(&chain, &path).await {
        Ok(removed) if removed || had_chain => {
            out.removed("iptables chain", format!("nat {chain}"))
        }
        Ok(_) => {}
        Err(e) => out.failed.push(e),
    }
    for link in std::iter::once(&bridge).chain(links) {
        if link_exists(link).await {
            // A mistyped --pod-bridge must not take the machine's own interface away.
            if link == &bridge && !is_bridge(link).await {
                out.failed
                    .push(format!("{link} is not a bridge: left alone"));
                continue;
            }
            match ip(&["link", "del", "dev", link]).await {
                Ok(_) => out.removed("link", link),
                Err(e) => out.failed.push(e),
            }
        }
    }
    // host-gw's routes to the other nodes' pods are on the machine's own interface: they stay
    // when every kumo link is gone (VXLAN's went with its device).
    match remove_routes().await {
        Ok(routes) => {
            for r in routes {
                out.removed("route", r);
            }
        }
        Err(e) => out.failed.push(format!("kumo's routes: {e}")),
    }
    out
}

/// Removes every kumo route (`proto 77`) of this network namespace: a node's namespace is the
/// machine's, and it holds one node's routes.
async fn remove_routes() -> Result<Vec<String>, crate::error::NetError> {
    crate::links::Links::connect()?.remove_routes().await
}

/// Runs `iptables -w -t nat ARGS`; whether it succeeded, its stdout, and its stderr.
async fn iptables_nat(args: &[&str], path: &OsStr) -> Result<(bool, String, String), String> {
    let out = tokio::process::Command::new("iptables")
        .env("PATH", path)
        .args(["-w", "-t", "nat"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
}

async fn chain_exists(chain: &str, path: &OsStr) -> bool {
    iptables_nat(&["-S", chain], path)
        .await
        .is_ok_and(|(ok, _, _)| ok)
}

/// Removes the node's masquerade chain and every jump to it from POSTROUTING, whatever CIDR
/// they were made for (`kumo down` may not be told it); whether the chain was there. IPv4.
async fn remove_chain(chain: &str, path: &OsStr) -> Result<bool, String> {
    if !chain_exists(chain, path).await {
        return Ok(false);
    }
    let must = |args: Vec<String>| async move {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        match iptables_nat(&argv, path).await? {
            (true, _, _) => Ok(()),
            (false, _, stderr) => Err(format!("iptables -t nat {}: {stderr}", args.join(" "))),
        }
    };
    let (_, listing, _) =
        iptables_nat(&["-L", "POSTROUTING", "-n", "--line-numbers"], path).await?;
    // Highest first, so the numbers of those still to delete do not move.
    for n in jump_rule_numbers(&listing, chain).into_iter().rev() {
        must(vec!["-D".into(), "POSTROUTING".into(), n.to_string()]).await?;
    }
    must(vec!["-F".into(), chain.into()]).await?;
    must(vec!["-X".into(), chain.into()]).await?;
    Ok(true)
}

/// The numbers of the rules of an `iptables -L CHAIN -n --line-numbers` listing whose target
/// is `target`, ascending.
fn jump_rule_numbers(listing: &str, target: &str) -> Vec<u32> {
    listing
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let n = fields.next()?.parse().ok()?;
            (fields.next()? == target).then_some(n)
        })
        .collect()
}

/// Tears down every pod network recorded in the state dir (warm ones included), then the
/// leases host-local still holds.
async fn pod_networks(config: NetworkConfig, out: &mut NetworkDown) {
    let nets = match PodNetworks::new(config) {
        Ok(n) => n,
        Err(e) => {
            out.failed.push(e.to_string());
            return;
        }
    };
    let state_dir = nets.config().state_dir.clone();
    let mut uids: Vec<String> = file_names(&state_dir.join("pods"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    uids.extend(file_names(&state_dir.join("netns")).unwrap_or_default());
    uids.sort();
    uids.dedup();
    for uid in uids {
        match nets.teardown(&uid).await {
            Ok(()) => out.removed("pod network", &uid),
            Err(e) => out.failed.push(format!("pod network {uid}: {e}")),
        }
    }
    let leases = nets.ipam_dir().join(crate::cni::NETWORK_NAME);
    for name in file_names(&leases).unwrap_or_default() {
        let path = leases.join(&name);
        if name.parse::<IpAddr>().is_ok() {
            match std::fs::remove_file(&path) {
                Ok(()) => out.removed("ipam lease", &name),
                Err(e) => out.failed.push(format!("{}: {e}", path.display())),
            }
        }
    }
    // What is left is host-local's bookkeeping (its lock, the last address given).
    let _ = std::fs::remove_dir_all(nets.ipam_dir());
}

/// Deletes the veths still plugged into `bridge` (a pod network whose record was lost).
async fn veths_on(bridge: &str, out: &mut NetworkDown) {
    if !link_exists(bridge).await {
        return;
    }
    let listing = match ip(&["-o", "link", "show", "master", bridge]).await {
        Ok(text) => text,
        Err(e) => {
            out.failed.push(e);
            return;
        }
    };
    for name in link_names(&listing) {
        match ip(&["link", "del", "dev", &name]).await {
            Ok(_) => out.removed("veth", &name),
            Err(e) => out.failed.push(e),
        }
    }
}

/// The link names of `ip -o link show` lines (`3: veth1234@if2: <...> ...`).
fn link_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Whether link `name` is a bridge (`ip -d` shows its kind after its flags).
async fn is_bridge(name: &str) -> bool {
    ip(&["-d", "-o", "link", "show", "dev", name])
        .await
        .is_ok_and(|text| text.split_whitespace().any(|w| w == "bridge"))
}

async fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).await.is_ok()
}

/// Runs `ip ARGS`; its stdout, or its stderr as the error.
async fn ip(args: &[&str]) -> Result<String, String> {
    let path = crate::exec::plugin_path_env(std::env::var_os("PATH").as_deref());
    let out = tokio::process::Command::new("ip")
        .env("PATH", path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_to_the_chain_by_rule_number() {
        let listing = "Chain POSTROUTING (policy ACCEPT)\n\
            num  target     prot opt source               destination\n\
            1    CNI-HOSTPORT-MASQ  all  --  0.0.0.0/0            0.0.0.0/0\n\
            2    KUMO-MASQ-kt1  all  --  10.124.1.0/24        0.0.0.0/0   /* kumo kt1 pod egress */\n\
            3    KUMO-MASQ-kt12  all  --  10.124.12.0/24       0.0.0.0/0\n\
            4    KUMO-MASQ-kt1  all  --  10.9.0.0/16          0.0.0.0/0\n";
        assert_eq!(jump_rule_numbers(listing, "KUMO-MASQ-kt1"), [2, 4]);
        assert_eq!(
            jump_rule_numbers(listing, "KUMO-MASQ-kt2"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn link_names_from_ip_listings() {
        let check = |listing: &str, expected: &[&str]| assert_eq!(link_names(listing), expected);
        check("", &[]);
        check(
            "7: veth0a1b2c3d@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 master kt1 state UP\n\
             9: vethffff@if3: <BROADCAST> mtu 1500 master kt1\n",
            &["veth0a1b2c3d", "vethffff"],
        );
    }
}
