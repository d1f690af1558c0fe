//! Host ports: the pod spec's ports turned into the portmap plugin's `portMappings`.

use crate::error::NetError;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::path::PathBuf;

/// A transport protocol of a port, written lower-case as the portmap plugin wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`; any case).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    fn as_k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// One `hostPort` of a pod: traffic to the node's `host_port` goes to the pod's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// One entry of a container's `ports`, as the pod spec has it (Kubernetes' `ContainerPort`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: i64,
    /// `None` or 0: the port is not published on the node.
    pub host_port: Option<i64>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
}

/// Turns the ports of a pod's containers (outer: containers in spec order; inner: each one's
/// `ports`) into the mappings for [`crate::PodNetRequest::host_ports`]. Only ports with a
/// `hostPort` are mapped. Errors name the field path, e.g.
/// `spec.containers[0].ports[1].hostPort: 70000 is outside 1..65535`.
pub fn port_mappings<C, P>(containers: C) -> Result<Vec<PortMapping>, NetError>
where
    C: IntoIterator<Item = P>,
    P: IntoIterator<Item = PortSpec>,
{
    let mut out: Vec<(PortMapping, String)> = Vec::new();
    for (ci, ports) in containers.into_iter().enumerate() {
        for (pi, port) in ports.into_iter().enumerate() {
            let at = format!("spec.containers[{ci}].ports[{pi}]");
            let container_port = check_port(&at, "containerPort", port.container_port)?;
            let protocol = match port.protocol.as_deref() {
                None | Some("") => Protocol::Tcp,
                Some(p) => Protocol::parse(p).ok_or_else(|| NetError::InvalidPort {
                    field: format!("{at}.protocol"),
                    message: format!("unsupported value {p:?} (want TCP, UDP or SCTP)"),
                })?,
            };
            let host_port = match port.host_port {
                None | Some(0) => continue,
                Some(p) => check_port(&at, "hostPort", p)?,
            };
            let mapping = PortMapping {
                host_port,
                container_port,
                protocol,
            };
            if let Some((_, first)) = out
                .iter()
                .find(|(m, _)| m.host_port == host_port && m.protocol == protocol)
            {
                return Err(NetError::InvalidPort {
                    field: format!("{at}.hostPort"),
                    message: format!(
                        "{host_port}/{} is already used by {first}",
                        protocol.as_k8s()
                    ),
                });
            }
            out.push((mapping, at));
        }
    }
    Ok(out.into_iter().map(|(m, _)| m).collect())
}

fn check_port(at: &str, name: &str, port: i64) -> Result<u16, NetError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| NetError::InvalidPort {
            field: format!("{at}.{name}"),
            message: format!("{port} is outside 1..65535"),
        })
}

/// The portmap plugin programs iptables: refuse host ports early and clearly where the
/// `iptables` program is not in `path` (the `PATH` the plugins get).
pub(crate) fn require_iptables(
    mappings: &[PortMapping],
    path: &OsStr,
    node: &str,
) -> Result<(), NetError> {
    if mappings.is_empty() || find_program("iptables", path).is_some() {
        Ok(())
    } else {
        Err(NetError::HostPortNeedsIptables {
            node: node.to_string(),
        })
    }
}

/// The first executable file called `name` in the directories of `path`.
pub(crate) fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(container: i64, host: Option<i64>, protocol: Option<&str>) -> PortSpec {
        PortSpec {
            container_port: container,
            host_port: host,
            protocol: protocol.map(str::to_string),
        }
    }

    fn check(containers: Vec<Vec<PortSpec>>, expected: Result<Vec<(u16, u16, Protocol)>, &str>) {
        let got = port_mappings(containers.clone())
            .map(|ms| {
                ms.into_iter()
                    .map(|m| (m.host_port, m.container_port, m.protocol))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string());
        assert_eq!(
            got.as_ref().map_err(String::as_str),
            expected.as_ref().map_err(|e| *e),
            "for {containers:?}"
        );
    }

    #[test]
    fn mappings() {
        use Protocol::*;
        check(vec![], Ok(vec![]));
        check(vec![vec![port(80, None, None)]], Ok(vec![]));
        check(vec![vec![port(80, Some(0), None)]], Ok(vec![]));
        check(
            vec![
                vec![
                    port(80, Some(8080), None),
                    port(53, Some(5353), Some("UDP")),
                ],
                vec![port(9000, None, None), port(53, Some(5353), Some("TCP"))],
            ],
            Ok(vec![(8080, 80, Tcp), (5353, 53, Udp), (5353, 53, Tcp)]),
        );
        check(
            vec![vec![port(7, Some(7), Some("sctp"))]],
            Ok(vec![(7, 7, Sctp)]),
        );
        check(
            vec![vec![port(80, Some(70000), None)]],
            Err("spec.containers[0].ports[0].hostPort: 70000 is outside 1..65535"),
        );
        check(
            vec![vec![], vec![port(0, None, None)]],
            Err("spec.containers[1].ports[0].containerPort: 0 is outside 1..65535"),
        );
        check(
            vec![vec![port(80, Some(-1), None)]],
            Err("spec.containers[0].ports[0].hostPort: -1 is outside 1..65535"),
        );
        check(
            vec![vec![port(80, Some(80), Some("ICMP"))]],
            Err("spec.containers[0].ports[0].protocol: unsupported value \"ICMP\" (want TCP, UDP or SCTP)"),
        );
        check(
            vec![vec![port(80, Some(8080), None)], vec![port(81, Some(8080), Some("TCP"))]],
            Err("spec.containers[1].ports[0].hostPort: 8080/TCP is already used by spec.containers[0].ports[0]"),
        );
    }

    #[test]
    fn portmap_json_shape() {
        let m = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Udp,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"hostPort":8080,"containerPort":80,"protocol":"udp"}"#
        );
    }

    #[test]
    fn iptables_is_required_only_for_host_ports() {
        use std::os::unix::fs::PermissionsExt;
        let empty = tempfile::tempdir().unwrap();
        let with = tempfile::tempdir().unwrap();
        let fake = with.path().join("iptables");
        std::fs::write(&fake, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let one = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        }];

        assert!(require_iptables(&[], empty.path().as_os_str(), "n1").is_ok());
        assert!(require_iptables(&one, with.path().as_os_str(), "n1").is_ok());
        assert_eq!(
            require_iptables(&one, empty.path().as_os_str(), "n1")
                .unwrap_err()
                .to_string(),
            "hostPort needs iptables, which is not installed on node n1"
        );
        // A non-executable file is not a program.
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(require_iptables(&one, with.path().as_os_str(), "n1").is_err());
    }
}
