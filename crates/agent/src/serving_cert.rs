//! The endpoint's serving certificate: a new key at every start, a CSR through
//! `POST nodes/{name}/servingcertificate`, renewed once two thirds of its life have passed
//! and swapped in for the next handshakes (kubelet's serving-certificate rotation).

use kumo_client::Client;
use kumo_pki::RotatingCert;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The first wait after a failed request; doubled up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// A certificate the cluster CA signed for this node, with its key and its CA after it.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// The certificate, then the CA's (so the chain is whole for a client).
    pub chain_pem: String,
    pub key_pem: String,
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
}

impl ServingCert {
    /// When to ask for the next one: two thirds into its life.
    pub fn renew_at(&self) -> SystemTime {
        renew_at(self.issued_at, self.not_after)
    }
}

/// Two thirds of the way from `issued_at` to `not_after` (at once if that is already past).
pub fn renew_at(issued_at: SystemTime, not_after: SystemTime) -> SystemTime {
    let life = not_after.duration_since(issued_at).unwrap_or_default();
    issued_at + life * 2 / 3
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    certificate: String,
    ca_certificate: String,
}

/// Asks the API server for a serving certificate for `node` with a new key.
pub async fn request(client: &Client, node: &str) -> Result<ServingCert, String> {
    let (csr, key_pem) = kumo_pki::new_csr(node).map_err(|e| e.to_string())?;
    let issued_at = SystemTime::now();
    let path = format!("/api/v1/nodes/{node}/servingcertificate");
    let body = serde_json::json!({ "csr": csr });
    let answer: Answer = client
        .request_json(http::Method::POST, &path, Some(("application/json", &body)))
        .await
        .map_err(|e| e.to_string())?;
    let not_after = kumo_pki::not_after(&answer.certificate).map_err(|e| e.to_string())?;
    let mut chain_pem = answer.certificate;
    if !chain_pem.ends_with('\n') {
        chain_pem.push('\n');
    }
    chain_pem.push_str(&answer.ca_certificate);
    Ok(ServingCert {
        chain_pem,
        key_pem,
        issued_at,
        not_after,
    })
}

/// Asks until a certificate comes (the API server may still be starting), or `stop` turns
/// true (`None`).
pub async fn request_until_given(
    client: &Client,
    node: &str,
    stop: &mut watch::Receiver<bool>,
) -> Option<ServingCert> {
    let mut wait = RETRY_BASE;
    loop {
        match request(client, node).await {
            Ok(cert) => return Some(cert),
            Err(e) => {
                tracing::warn!(node, error = %e, retry_in_s = wait.as_secs(), "cannot get the endpoint's serving certificate")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Renews `current` two thirds into its life, and each renewal likewise, serving each new
/// one through `resolver`, until `stop` turns true.
pub async fn keep_renewed(
    client: Client,
    node: String,
    resolver: Arc<RotatingCert>,
    mut current: ServingCert,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = current
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(next) = request_until_given(&client, &node, &mut stop).await else {
            return;
        };
        match resolver.replace(&next.chain_pem, &next.key_pem) {
            Ok(()) => {
                tracing::info!(node, "renewed the endpoint's serving certificate");
                current = next;
            }
            Err(e) => {
                tracing::error!(node, error = %e, "the renewed serving certificate is unusable");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_MAX) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(life_s: u64, expected_s: u64) {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_at(at, at + Duration::from_secs(life_s)),
            at + Duration::from_secs(expected_s),
            "a life of {life_s}s"
        );
    }

    #[test]
    fn renewal_comes_two_thirds_into_the_life() {
        check(90 * 24 * 3600, 60 * 24 * 3600);
        check(3, 2);
        check(0, 0);
    }

    #[test]
    fn an_expiry_before_the_issue_renews_at_once() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(renew_at(at, at - Duration::from_secs(5)), at);
    }
}
