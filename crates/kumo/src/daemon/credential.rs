//! A node's own credential (`system:node:NAME` in `system:nodes`): got once for a join token
//! (`kumo agent --join`), kept in `<agent-data>/node-credential.json` (0600) for restarts, and
//! rotated when two thirds of its life have passed (the server lets the old one expire a
//! minute later).

use anyhow::{anyhow, Context};
use http::Method;
use kumo_api::{Time, Token};
use kumo_client::Client;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the agent keeps of its credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredential {
    /// The Token's name.
    pub name: String,
    pub token: String,
    pub issued: Time,
    pub expires: Time,
}

pub fn path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("node-credential.json")
}

impl NodeCredential {
    /// The credential in a Token the server just issued (with its secret).
    pub fn from_token(t: &Token) -> anyhow::Result<Self> {
        let status = t.status.as_ref();
        let token = status
            .and_then(|s| s.token.clone())
            .ok_or_else(|| anyhow!("the server's answer holds no credential"))?;
        let expires = t
            .spec
            .expiration_timestamp
            .ok_or_else(|| anyhow!("the server's credential has no expiry"))?;
        Ok(NodeCredential {
            name: t.metadata.name.clone(),
            token,
            issued: t
                .metadata
                .creation_timestamp
                .unwrap_or_else(chrono::Utc::now),
            expires,
        })
    }

    /// When to get the next one: two thirds into this one's life.
    pub fn rotate_at(&self) -> Time {
        let life = self.expires - self.issued;
        self.issued + life * 2 / 3
    }

    pub fn expired(&self, now: Time) -> bool {
        self.expires <= now
    }

    /// Reads the saved credential; `None` when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
        };
        let cred = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a node credential", path.display()))?;
        super::private::file(path)?;
        Ok(Some(cred))
    }

    /// Writes the credential, 0600 from its first byte, replacing the old one at once.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Asks `client`'s server for a credential for `node` (with a join token or the node's own).
pub async fn request(client: &Client, node: &str) -> anyhow::Result<NodeCredential> {
    let path = format!(
        "{}/credential",
        <kumo_api::Node as kumo_api::Resource>::object_path(None, node)
    );
    let token: Token = client
        .request_json(Method::POST, &path, None)
        .await
        .with_context(|| format!("cannot get a credential for node {node}"))?;
    NodeCredential::from_token(&token)
}

/// Exchanges a join token for a node credential and saves it.
pub async fn join(
    server: &str,
    ca_pem: &str,
    join_token: &str,
    node: &str,
    file: &Path,
) -> anyhow::Result<NodeCredential> {
    let client = Client::new(&super::client_config(server, join_token, ca_pem))?;
    let cred = request(&client, node).await?;
    cred.save(file)?;
    Ok(cred)
}

/// A client for `server` with `token`, checked by reading the node's own object (which any
/// credential of the node may): fails early, with the client's clear message, when the server
/// is unreachable or refuses the token.
async fn checked_client(
    server: &str,
    ca_pem: &str,
    token: &str,
    node: &str,
) -> Result<Client, kumo_client::ClientError> {
    let client = Client::new(&super::client_config(server, token, ca_pem))?;
    client.get_opt::<kumo_api::Node>("", node).await?;
    Ok(client)
}

/// The agent's client and, when it is a node credential (to rotate), that: the
/// saved credential while it is unexpired and accepted; else one got for `join` (saved to
/// `file`); else `given` (`KUMO_TOKEN`, `--token-file`).
pub async fn for_agent(
    server: &str,
    ca_pem: &str,
    node: &str,
    file: &Path,
    join: Option<&str>,
    given: Option<String>,
) -> anyhow::Result<(Client, Option<NodeCredential>)> {
    let saved = NodeCredential::load(file)?.filter(|c| !c.expired(chrono::Utc::now()));
    if let Some(saved) = saved {
        match checked_client(server, ca_pem, &saved.token, node).await {
            Ok(client) => {
                if join.is_some() {
                    tracing::info!(file = %file.display(), "this node has a credential: the join token is not used");
                }
                return Ok((client, Some(saved)));
            }
            // Revoked (or the cluster is new): a join token given now joins again.
            Err(e) if e.code() == Some(401) && join.is_some() => {
                tracing::warn!(file = %file.display(), error = %e, "the saved node credential is refused; joining again");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the node credential in {} is not accepted (join again with --join)",
                    file.display()
                )))
            }
        }
    }
    if let Some(join_token) = join {
        let cred = self::join(server, ca_pem, join_token, node, file).await?;
        let client = checked_client(server, ca_pem, &cred.token, node).await?;
        return Ok((client, Some(cred)));
    }
    match given {
        Some(token) => Ok((checked_client(server, ca_pem, &token, node).await?, None)),
        None => Err(anyhow!(
            "no credential: pass --join SECRET (printed by `kumo token create NAME --join`), or set KUMO_TOKEN"
        )),
    }
}

/// How long a starting agent keeps asking a server it cannot reach (a server starting or
/// restarting, a connection dropped under load) before it gives up with the error.
const REACH_FOR: Duration = Duration::from_secs(60);

/// Whether `e` says the server could not be reached at all (no answer), rather than refused.
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<kumo_client::ClientError>(),
            Some(kumo_client::ClientError::Connect { .. })
        )
    })
}

/// [`for_agent`], asked again while the server cannot be reached, for up to [`REACH_FOR`], as
/// kubelet's bootstrap does: a node does not stop for good on one dropped connection. Any
/// answer of the server (a refused or used-up join token, a revoked credential) ends it at once.
pub async fn for_agent_patiently(
    server: &str,
    ca_pem: &str,
    node: &str,
    file: &Path,
    join: Option<&str>,
    given: Option<String>,
) -> anyhow::Result<(Client, Option<NodeCredential>)> {
    let deadline = tokio::time::Instant::now() + REACH_FOR;
    let mut pause = Duration::from_millis(500);
    loop {
        match for_agent(server, ca_pem, node, file, join, given.clone()).await {
            Err(e) if unreachable(&e) && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?pause, "server not reached; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Rotates the credential `client` uses, at two thirds of each one's life, saving each new one
/// to `file` before it is used; runs until `stop` resolves.
pub async fn rotate(
    client: Client,
    node: String,
    file: PathBuf,
    mut cred: NodeCredential,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let wait = (cred.rotate_at() - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match request(&client, &node).await.and_then(|new| {
            new.save(&file)?;
            Ok(new)
        }) {
            Ok(new) => {
                client.set_token(new.token.clone());
                tracing::info!(node, old = %cred.name, new = %new.name, expires = %new.expires, "node credential rotated");
                cred = new;
            }
            Err(e) => {
                // Try again soon, but never in a tight loop.
                let left = (cred.expires - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO);
                let retry = (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
                tracing::warn!(node, error = %format!("{e:#}"), retry_in = ?retry, "node credential not rotated");
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_not_reached_is_asked_again() {
        let connect = kumo_client::ClientError::Connect {
            server: "https://10.0.0.1:7400".into(),
            reason: "peer closed connection without sending tls close_notify".into(),
        };
        let refused = kumo_client::ClientError::Request("bad url".into());
        let wrapped = anyhow::Error::new(connect).context("cannot get a credential for node n1");
        assert!(unreachable(&wrapped));
        assert!(!unreachable(&anyhow::Error::new(refused)));
        assert!(!unreachable(&anyhow!("no credential")));
    }

    fn at(secs: i64) -> Time {
        chrono::DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn credentials_rotate_at_two_thirds_and_are_kept_private() {
        let cred = NodeCredential {
            name: "node-n1-abcde".into(),
            token: "s3cret".into(),
            issued: at(300),
            expires: at(600),
        };
        assert_eq!(cred.rotate_at(), at(500));
        assert!(!cred.expired(at(599)) && cred.expired(at(600)));
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert_eq!(NodeCredential::load(&file).unwrap(), None);
        cred.save(&file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(NodeCredential::load(&file).unwrap(), Some(cred));
        std::fs::write(&file, "{").unwrap();
        assert!(NodeCredential::load(&file)
            .unwrap_err()
            .to_string()
            .contains("is not a node credential"));
    }
}
