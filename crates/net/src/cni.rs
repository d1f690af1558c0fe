//! The CNI 1.0 wire format as data: the network configs kumo hands the plugins, and the results
//! and errors they answer with. Pure: no IO.

use crate::config::Cidr;
use crate::error::NetError;
use crate::ports::PortMapping;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::Path;

/// The CNI spec version kumo speaks.
pub(crate) const CNI_VERSION: &str = "1.0.0";
/// The network name in every config; host-local keeps its leases under `<dataDir>/kumo/`.
pub(crate) const NETWORK_NAME: &str = "kumo";

/// What a network config is for: the plugin type and the interface it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plugin {
    Loopback,
    Bridge,
    Portmap,
}

impl Plugin {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Plugin::Loopback => "loopback",
            Plugin::Bridge => "bridge",
            Plugin::Portmap => "portmap",
        }
    }

    pub(crate) fn ifname(self) -> &'static str {
        match self {
            Plugin::Loopback => "lo",
            Plugin::Bridge | Plugin::Portmap => "eth0",
        }
    }
}

/// The inputs of every network config of one node.
#[derive(Debug, Clone)]
pub(crate) struct NetParams<'a> {
    pub bridge: &'a str,
    pub cidr: Cidr,
    pub mtu: Option<u32>,
    pub ipam_dir: &'a Path,
    /// The bridge plugin's own per-pod masquerading (`ipMasq`): only for networks made before
    /// kumo installed one rule set per node ([`crate::masq`]), so that their DEL undoes it.
    pub plugin_masq: bool,
}

/// The config JSON for `plugin`, with `prevResult` when the plugin is chained after another
/// (ADD) or when deleting what an ADD made (DEL).
pub(crate) fn network_config(
    plugin: Plugin,
    params: &NetParams<'_>,
    host_ports: &[PortMapping],
    prev_result: Option<&Value>,
) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("cniVersion".into(), json!(CNI_VERSION));
    map.insert("name".into(), json!(NETWORK_NAME));
    map.insert("type".into(), json!(plugin.name()));
    match plugin {
        Plugin::Loopback => {}
        Plugin::Bridge => {
            map.insert("bridge".into(), json!(params.bridge));
            map.insert("isGateway".into(), json!(true));
            // Egress is masqueraded by one rule set per node (`masq`), not per pod.
            map.insert("ipMasq".into(), json!(params.plugin_masq));
            // A pod reaches itself through its own host port.
            map.insert("hairpinMode".into(), json!(true));
            if let Some(mtu) = params.mtu {
                map.insert("mtu".into(), json!(mtu));
            }
            map.insert(
                "ipam".into(),
                json!({
                    "type": "host-local",
                    "ranges": [[{ "subnet": params.cidr.to_string() }]],
                    "routes": [{ "dst": params.cidr.default_route() }],
                    "dataDir": params.ipam_dir,
                }),
            );
        }
        Plugin::Portmap => {
            map.insert("capabilities".into(), json!({ "portMappings": true }));
            // SNAT makes connections to 127.0.0.1:<hostPort> work (the plugin sets
            // route_localnet on kumo's bridge for that).
            map.insert("snat".into(), json!(true));
            map.insert(
                "runtimeConfig".into(),
                json!({ "portMappings": host_ports }),
            );
        }
    }
    if let Some(prev) = prev_result {
        map.insert("prevResult".into(), prev.clone());
    }
    Value::Object(map)
}

/// A plugin's successful ADD answer (CNI 1.0 `Result`), the fields kumo reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<CniInterface>,
    #[serde(default)]
    pub ips: Vec<CniIp>,
    #[serde(default)]
    pub routes: Vec<CniRoute>,
}

/// An interface a plugin created; `sandbox` is set for those inside the pod's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniInterface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// An address assigned to an interface (an index into `interfaces`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniIp {
    /// CIDR notation: `10.88.0.5/16`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub interface: Option<usize>,
}

/// A route inside the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRoute {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

impl CniResult {
    /// The pod's address and gateway: the first address on an interface inside the pod's
    /// namespace (or the first address when the plugin names no interface).
    pub fn pod_ip(&self) -> Option<(IpAddr, Option<IpAddr>)> {
        let in_sandbox = |ip: &&CniIp| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|iface| iface.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
        };
        let ip = self
            .ips
            .iter()
            .find(in_sandbox)
            .or_else(|| self.ips.first())?;
        let addr = ip.address.split('/').next()?.parse().ok()?;
        Some((addr, ip.gateway))
    }
}

/// A plugin's error answer (CNI 1.0 `Error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    #[serde(default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// Turns what a plugin run left (exit status, stdout, stderr) into its result: the raw result
/// JSON for ADD (kept verbatim for `prevResult`), `Null` for DEL and CHECK, or a clear error.
pub(crate) fn parse_output(
    plugin: &str,
    command: &str,
    success: bool,
    status: &str,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<Value, NetError> {
    let output_error = |message: String| NetError::PluginOutput {
        plugin: plugin.to_string(),
        command: command.to_string(),
        message,
    };
    if !success {
        if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
            return Err(NetError::Plugin {
                plugin: plugin.to_string(),
                command: command.to_string(),
                code: e.code,
                msg: e.msg,
                details: e.details,
            });
        }
        let text = String::from_utf8_lossy(if stderr.trim_ascii().is_empty() {
            stdout
        } else {
            stderr
        });
        let text = text.trim();
        return Err(output_error(if text.is_empty() {
            format!("{status} with no output")
        } else {
            format!("{status}: {text}")
        }));
    }
    if command != "ADD" {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_slice(stdout)
        .map_err(|e| output_error(format!("result is not json: {e}")))?;
    let result: CniResult = serde_json::from_value(value.clone())
        .map_err(|e| output_error(format!("result is not a cni result: {e}")))?;
    if plugin != Plugin::Loopback.name() && result.pod_ip().is_none() {
        return Err(output_error("result holds no ip address".to_string()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Protocol;
    use std::path::PathBuf;

    fn params(dir: &Path) -> NetParams<'_> {
        NetParams {
            bridge: "kumo0",
            cidr: Cidr::parse("10.88.0.0/16").unwrap(),
            mtu: None,
            ipam_dir: dir,
            plugin_masq: false,
        }
    }

    fn check(conf: Value, expected: Value) {
        assert_eq!(
            conf,
            expected,
            "got {}",
            serde_json::to_string_pretty(&conf).unwrap()
        );
    }

    #[test]
    fn loopback_config() {
        let dir = PathBuf::from("/s/ipam");
        check(
            network_config(Plugin::Loopback, &params(&dir), &[], None),
            json!({"cniVersion": "1.0.0", "name": "kumo", "type": "loopback"}),
        );
    }

    #[test]
    fn bridge_config() {
        let dir = PathBuf::from("/s/ipam");
        check(
            network_config(Plugin::Bridge, &params(&dir), &[], None),
            json!({
                "cniVersion": "1.0.0", "name": "kumo", "type": "bridge",
                "bridge": "kumo0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.88.0.0/16"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": "/s/ipam",
                },
            }),
        );
        let v6 = NetParams {
            cidr: Cidr::parse("fd00:88::/64").unwrap(),
            mtu: Some(1400),
            ..params(&dir)
        };
        let conf = network_config(Plugin::Bridge, &v6, &[], Some(&json!({"ips": []})));
        check(conf["ipam"]["routes"].clone(), json!([{"dst": "::/0"}]));
        check(conf["mtu"].clone(), json!(1400));
        check(conf["prevResult"].clone(), json!({"ips": []}));
    }

    #[test]
    fn portmap_config_is_chained() {
        let dir = PathBuf::from("/s/ipam");
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.2/16"}]});
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        }];
        check(
            network_config(Plugin::Portmap, &params(&dir), &ports, Some(&prev)),
            json!({
                "cniVersion": "1.0.0", "name": "kumo", "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
                "runtimeConfig": {"portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
                ]},
                "prevResult": prev,
            }),
        );
    }

    const BRIDGE_RESULT: &str = r#"{
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "kumo0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/s/netns/p1"}
        ],
        "ips": [{"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    }"#;

    #[test]
    fn results() {
        let value = parse_output("bridge", "ADD", true, "", BRIDGE_RESULT.as_bytes(), b"").unwrap();
        let result: CniResult = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(
            result.pod_ip(),
            Some((
                "10.88.0.5".parse().unwrap(),
                Some("10.88.0.1".parse().unwrap())
            ))
        );
        assert_eq!(
            result.routes,
            vec![CniRoute {
                dst: "0.0.0.0/0".into(),
                gw: None
            }]
        );
        // Kept verbatim, unknown fields included, for prevResult.
        assert_eq!(value["dns"], json!({}));

        let no_iface = r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::7/64"}]}"#;
        let result: CniResult = serde_json::from_str(no_iface).unwrap();
        assert_eq!(result.pod_ip(), Some(("fd00::7".parse().unwrap(), None)));

        // DEL answers nothing.
        assert_eq!(
            parse_output("bridge", "DEL", true, "", b"", b"").unwrap(),
            Value::Null
        );
        // Loopback's result has no address, and that is fine.
        let lo = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":"/x"}],"ips":[]}"#;
        assert!(parse_output("loopback", "ADD", true, "", lo.as_bytes(), b"").is_ok());
    }

    fn check_error(success: bool, stdout: &str, stderr: &str, expected: &str) {
        let got = parse_output(
            "bridge",
            "ADD",
            success,
            "exit status 1",
            stdout.as_bytes(),
            stderr.as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(got, expected);
    }

    #[test]
    fn errors() {
        check_error(
            false,
            r#"{"cniVersion":"1.0.0","code":999,"msg":"failed to allocate for range 0","details":"no IP addresses available in range set: 10.1.0.1-10.1.0.2"}"#,
            "",
            "cni plugin bridge ADD failed with code 999: failed to allocate for range 0 (no IP addresses available in range set: 10.1.0.1-10.1.0.2)",
        );
        check_error(
            false,
            r#"{"code":7,"msg":"invalid network config"}"#,
            "",
            "cni plugin bridge ADD failed with code 7: invalid network config",
        );
        check_error(
            false,
            "",
            "panic: oops\n",
            "cni plugin bridge ADD: exit status 1: panic: oops",
        );
        check_error(
            false,
            "",
            "",
            "cni plugin bridge ADD: exit status 1 with no output",
        );
        check_error(
            true,
            "not json",
            "",
            "cni plugin bridge ADD: result is not json: expected ident at line 1 column 2",
        );
        check_error(
            true,
            r#"{"ips": "nope"}"#,
            "",
            "cni plugin bridge ADD: result is not a cni result: invalid type: string \"nope\", expected a sequence",
        );
        check_error(
            true,
            r#"{"cniVersion":"1.0.0","ips":[]}"#,
            "",
            "cni plugin bridge ADD: result holds no ip address",
        );
    }
}
