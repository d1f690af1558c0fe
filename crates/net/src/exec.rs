//! Running one CNI plugin binary as the CNI 1.0 spec says: config on stdin, parameters in the
//! environment, result or error JSON on stdout.

use crate::cni::{self, Plugin};
use crate::error::NetError;
use serde_json::Value;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long one plugin run may take before it is killed.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI operations kumo uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// One plugin run.
pub(crate) struct Invocation<'a> {
    pub plugin: Plugin,
    pub command: Command,
    /// The pod uid.
    pub container_id: &'a str,
    /// The pod's namespace file; empty when it is already gone (DEL only).
    pub netns: &'a OsStr,
    pub config: &'a Value,
}

/// Runs the plugin from `bin_dir`, returning its result JSON (ADD) or `Null` (DEL).
pub(crate) async fn run(
    bin_dir: &Path,
    path_env: &OsStr,
    inv: &Invocation<'_>,
) -> Result<Value, NetError> {
    let name = inv.plugin.name();
    let command = inv.command.as_str();
    let binary = bin_dir.join(name);
    if !binary.is_file() {
        return Err(NetError::PluginNotFound {
            plugin: name.to_string(),
            path: binary,
        });
    }
    let exec_error = |source| NetError::PluginExec {
        plugin: name.to_string(),
        source,
    };
    let stdin = serde_json::to_vec(inv.config).map_err(|e| exec_error(e.into()))?;
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .env("PATH", path_env)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.plugin.ifname())
        .env("CNI_PATH", bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(exec_error)?;
    tracing::debug!(
        plugin = name,
        command,
        container = inv.container_id,
        "cni plugin"
    );
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(&stdin).await.map_err(exec_error)?;
    }
    let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| NetError::PluginTimeout {
            plugin: name.to_string(),
            command: command.to_string(),
            seconds: PLUGIN_TIMEOUT.as_secs(),
        })?
        .map_err(exec_error)?;
    cni::parse_output(
        name,
        command,
        output.status.success(),
        &output.status.to_string(),
        &output.stdout,
        &output.stderr,
    )
}

/// The `PATH` plugins run with: the agent's own, plus the sbin directories where `iptables`
/// and friends live (a service manager may start the agent without them).
pub(crate) fn plugin_path_env(current: Option<&OsStr>) -> OsString {
    let mut dirs: Vec<std::path::PathBuf> = current
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|d| d == Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_env_gets_sbin() {
        assert_eq!(
            plugin_path_env(Some(OsStr::new("/opt/bin:/usr/bin"))),
            OsString::from("/opt/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin")
        );
        assert_eq!(
            plugin_path_env(None),
            OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        );
    }
}

#[cfg(test)]
mod fake_plugin_tests {
    use super::*;
    use serde_json::json;

    /// A plugin that records its environment and stdin, then answers `answer` with `code`.
    fn fake_plugin(dir: &Path, answer: &str, code: i32) {
        let script = format!(
            "#!/bin/sh\nenv | grep -E '^(CNI_|PATH=|HOME=)' | sort > {dir}/env\ncat > {dir}/stdin\necho '{answer}'\nexit {code}\n",
            dir = dir.display()
        );
        // Written by another process: a write fd of ours, inherited by a child that another
        // test thread forks at the same moment, would make exec fail with ETXTBSY.
        let path = dir.join("bridge");
        let mut writer = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat > '{}' && chmod 755 '{}'",
                path.display(),
                path.display()
            ))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut writer.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(writer.wait().unwrap().success());
    }

    #[tokio::test]
    async fn the_plugin_gets_the_cni_environment_and_config() {
        let dir = tempfile::tempdir().unwrap();
        fake_plugin(
            dir.path(),
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1"}]}"#,
            0,
        );
        let config = json!({"cniVersion": "1.0.0", "name": "kumo", "type": "bridge"});
        let inv = Invocation {
            plugin: Plugin::Bridge,
            command: Command::Add,
            container_id: "uid-1",
            netns: OsStr::new("/run/x/netns/uid-1"),
            config: &config,
        };
        let result = run(dir.path(), OsStr::new("/usr/bin:/bin"), &inv)
            .await
            .unwrap();
        assert_eq!(result["ips"][0]["address"], "10.1.0.2/24");
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        assert_eq!(
            env,
            format!(
                "CNI_COMMAND=ADD\nCNI_CONTAINERID=uid-1\nCNI_IFNAME=eth0\nCNI_NETNS=/run/x/netns/uid-1\nCNI_PATH={}\nPATH=/usr/bin:/bin\n",
                dir.path().display()
            )
        );
        let stdin: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("stdin")).unwrap()).unwrap();
        assert_eq!(stdin, config);
    }

    #[tokio::test]
    async fn a_plugin_error_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        fake_plugin(
            dir.path(),
            r#"{"cniVersion":"1.0.0","code":11,"msg":"try again later"}"#,
            1,
        );
        let inv = Invocation {
            plugin: Plugin::Bridge,
            command: Command::Del,
            container_id: "uid-1",
            netns: OsStr::new(""),
            config: &json!({}),
        };
        let err = run(dir.path(), OsStr::new("/usr/bin:/bin"), &inv)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cni plugin bridge DEL failed with code 11: try again later"
        );
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        assert!(
            env.contains("CNI_COMMAND=DEL\n") && env.contains("CNI_NETNS=\n"),
            "{env}"
        );
    }
}
