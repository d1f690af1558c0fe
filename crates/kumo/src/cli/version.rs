//! `kumo version`: this client's version and, when reachable, the server's.

use http::Method;
use serde_json::Value;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// Print only the client version
    #[arg(long)]
    pub client: bool,
}

/// `v0.1.0` from `0.1.0`.
fn with_v(version: &str) -> String {
    if version.starts_with('v') {
        version.to_string()
    } else {
        format!("v{version}")
    }
}

/// The version in a `/version` answer: `gitVersion` as Kubernetes names it, else `version`.
fn server_version(answer: &Value) -> Option<String> {
    ["gitVersion", "version", "kumoVersion"]
        .iter()
        .find_map(|k| answer.get(k).and_then(Value::as_str))
        .filter(|v| !v.is_empty())
        .map(with_v)
}

pub async fn run(args: VersionArgs) -> anyhow::Result<ExitCode> {
    super::out(format!("Client Version: {}", with_v(kumo_api::VERSION)));
    if args.client {
        return Ok(ExitCode::SUCCESS);
    }
    // The version needs no credentials: without a config, ask the default server anonymously.
    let config = match kumo_client::ClientConfig::resolve(
        args.connect.server.clone(),
        args.connect.token()?,
    ) {
        Ok(config) => config,
        Err(_) => kumo_client::ClientConfig::of(
            args.connect
                .server
                .as_deref()
                .unwrap_or(kumo_client::DEFAULT_SERVER),
            "",
            None,
        )
        .map_err(anyhow::Error::msg)?,
    };
    let client = kumo_client::Client::new(&config)?;
    let answer: Value = client.request_json(Method::GET, "/version", None).await?;
    match server_version(&answer) {
        Some(v) => super::out(format!("Server Version: {v}")),
        None => anyhow::bail!("the server's /version answer has no version: {answer}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_versions() {
        assert_eq!(
            server_version(&json!({"gitVersion": "v0.1.0", "major": "0"})),
            Some("v0.1.0".into())
        );
        assert_eq!(
            server_version(&json!({"version": "0.2.0"})),
            Some("v0.2.0".into())
        );
        assert_eq!(server_version(&json!({"other": 1})), None);
    }
}
