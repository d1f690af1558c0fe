//! One masquerade rule set per node for pod egress, instead of the bridge plugin's per-pod one.
//!
//! With `ipMasq: true` the bridge plugin makes a chain per pod and runs iptables seven times on
//! every ADD and again on every DEL (about half of a pod network's set-up time here). The
//! traffic to masquerade is the same for every pod of a node (from the pod CIDR to outside it),
//! so kumo installs it once, the first time a pod network is made, as a chain of its own:
//!
//! ```text
//! -t nat -N KUMO-MASQ-<bridge>
//! -t nat -A KUMO-MASQ-<bridge> -d <pod cidr> -j RETURN
//! -t nat -A KUMO-MASQ-<bridge> -d <cluster cidr> -j RETURN    (other nodes' pods: no NAT)
//! -t nat -A KUMO-MASQ-<bridge> -d 224.0.0.0/4 -j RETURN      (ff00::/8 for IPv6)
//! -t nat -A KUMO-MASQ-<bridge> -j MASQUERADE
//! -t nat -A POSTROUTING -s <pod cidr> -j KUMO-MASQ-<bridge>
//! ```
//!
//! and removes it when the node's last pod network is gone.

use crate::config::Cidr;
use crate::error::NetError;
use std::ffi::OsStr;
use std::net::IpAddr;

/// The node's masquerade chain for `bridge` (at most 25 characters: iptables allows 28).
pub(crate) fn chain_name(bridge: &str) -> String {
    format!("KUMO-MASQ-{bridge}")
}

/// The argument lists that make the rules, in order (each after `-t nat`). Traffic to the
/// cluster CIDR (every node's pods) keeps the pod's address; what leaves it is masqueraded.
fn rules(bridge: &str, cidr: Cidr, cluster: Option<Cidr>) -> (Vec<Vec<String>>, Vec<String>) {
    let chain = chain_name(bridge);
    let multicast = match cidr.addr {
        IpAddr::V4(_) => "224.0.0.0/4",
        IpAddr::V6(_) => "ff00::/8",
    };
    let comment = format!("kumo {bridge} pod egress");
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut in_chain = vec![s(&["-d", &cidr.to_string(), "-j", "RETURN"])];
    if let Some(cluster) = cluster.filter(|c| *c != cidr && c.addr.is_ipv4() == cidr.addr.is_ipv4())
    {
        in_chain.push(s(&["-d", &cluster.to_string(), "-j", "RETURN"]));
    }
    in_chain.push(s(&["-d", multicast, "-j", "RETURN"]));
    in_chain.push(s(&["-j", "MASQUERADE"]));
    let jump = s(&[
        "POSTROUTING",
        "-s",
        &cidr.to_string(),
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        &chain,
    ]);
    (in_chain, jump)
}

fn program(cidr: Cidr) -> &'static str {
    match cidr.addr {
        IpAddr::V4(_) => "iptables",
        IpAddr::V6(_) => "ip6tables",
    }
}

/// Runs `<iptables> -w -t nat <args>`; the exit status and stderr.
async fn iptables(cidr: Cidr, path: &OsStr, args: &[String]) -> Result<(bool, String), NetError> {
    let out = tokio::process::Command::new(program(cidr))
        .env("PATH", path)
        .args(["-w", "-t", "nat"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| NetError::Masquerade {
            message: format!("cannot run {}: {e}", program(cidr)),
        })?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

async fn must(cidr: Cidr, path: &OsStr, args: Vec<String>) -> Result<(), NetError> {
    match iptables(cidr, path, &args).await? {
        (true, _) => Ok(()),
        (false, stderr) => Err(NetError::Masquerade {
            message: format!("{} -t nat {}: {stderr}", program(cidr), args.join(" ")),
        }),
    }
}

/// Installs the rules unless they are all there already (a restarted agent); a chain made for
/// another cluster CIDR is refilled.
pub(crate) async fn ensure(
    bridge: &str,
    cidr: Cidr,
    cluster: Option<Cidr>,
    path: &OsStr,
) -> Result<(), NetError> {
    let (in_chain, jump) = rules(bridge, cidr, cluster);
    let chain = chain_name(bridge);
    let check: Vec<String> = ["-C".to_string()].into_iter().chain(jump.clone()).collect();
    let jumps = iptables(cidr, path, &check).await?.0;
    if jumps {
        let mut complete = true;
        for rule in &in_chain {
            let check: Vec<String> = ["-C".to_string(), chain.clone()]
                .into_iter()
                .chain(rule.iter().cloned())
                .collect();
            complete &= iptables(cidr, path, &check).await?.0;
        }
        if complete {
            return Ok(());
        }
    }
    // A chain left half-made by a crash is flushed and refilled.
    if !iptables(cidr, path, &["-N".to_string(), chain.clone()])
        .await?
        .0
    {
        must(cidr, path, vec!["-F".to_string(), chain.clone()]).await?;
    }
    for rule in in_chain {
        must(
            cidr,
            path,
            ["-A".to_string(), chain.clone()]
                .into_iter()
                .chain(rule)
                .collect(),
        )
        .await?;
    }
    if jumps {
        return Ok(());
    }
    must(
        cidr,
        path,
        ["-A".to_string()].into_iter().chain(jump).collect(),
    )
    .await
}

/// Installs the masquerade chain of a pod bridge outside [`crate::PodNetworks`] (which does it
/// at its first pod): for tools and tests that wire pods themselves.
pub async fn masquerade(
    bridge: &str,
    pod_cidr: &str,
    cluster_cidr: Option<&str>,
) -> Result<(), NetError> {
    let bad = |field: &'static str| move |message| NetError::InvalidConfig { field, message };
    let cidr = Cidr::parse(pod_cidr).map_err(bad("pod_cidr"))?;
    let cluster = cluster_cidr
        .map(|c| Cidr::parse(c).map_err(bad("cluster_cidr")))
        .transpose()?;
    let path = crate::exec::plugin_path_env(std::env::var_os("PATH").as_deref());
    ensure(bridge, cidr, cluster, &path).await
}

/// Removes the rules; what is already gone is not an error.
pub(crate) async fn remove(bridge: &str, cidr: Cidr, path: &OsStr) -> Result<(), NetError> {
    let (_, jump) = rules(bridge, cidr, None);
    let chain = chain_name(bridge);
    let delete: Vec<String> = ["-D".to_string()].into_iter().chain(jump).collect();
    while iptables(cidr, path, &delete).await?.0 {}
    if iptables(cidr, path, &["-F".to_string(), chain.clone()])
        .await?
        .0
    {
        must(cidr, path, vec!["-X".to_string(), chain]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_return_pod_and_multicast_traffic_and_masquerade_the_rest() {
        let (chain, jump) = rules("kumo0", Cidr::parse("10.88.0.0/16").unwrap(), None);
        assert_eq!(
            chain,
            [
                vec!["-d", "10.88.0.0/16", "-j", "RETURN"],
                vec!["-d", "224.0.0.0/4", "-j", "RETURN"],
                vec!["-j", "MASQUERADE"],
            ]
        );
        assert_eq!(
            jump.join(" "),
            "POSTROUTING -s 10.88.0.0/16 -m comment --comment kumo kumo0 pod egress -j KUMO-MASQ-kumo0"
        );
        assert!(chain_name("abcdefghijklmno").len() <= 28);
    }

    #[test]
    fn traffic_to_other_nodes_pods_is_not_masqueraded() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let node = c("10.88.1.0/24");
        let (chain, _) = rules("kumo0", node, Some(c("10.88.0.0/16")));
        assert_eq!(
            chain,
            [
                vec!["-d", "10.88.1.0/24", "-j", "RETURN"],
                vec!["-d", "10.88.0.0/16", "-j", "RETURN"],
                vec!["-d", "224.0.0.0/4", "-j", "RETURN"],
                vec!["-j", "MASQUERADE"],
            ]
        );
        // The cluster CIDR equal to the node's (kumo up) adds nothing.
        let (chain, _) = rules("kumo0", c("10.88.0.0/16"), Some(c("10.88.0.0/16")));
        assert_eq!(chain.len(), 3);
    }
}
