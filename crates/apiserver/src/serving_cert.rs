//! `POST nodes/{name}/servingcertificate`: the cluster CA signs a node agent's serving
//! certificate. The CSR only proves the key; the certificate's one name is the node's, so the
//! API server (which dials the agent by that name) accepts it for that node and no other.

use crate::error::{ApiError, ApiResult};
use crate::App;
use kumo_api::FieldError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// How long a node's serving certificate is valid; the agent renews it after two thirds.
pub const NODE_SERVING_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    csr: String,
}

fn invalid(name: &str, field: &str, message: impl Into<String>) -> ApiError {
    ApiError(Box::new(kumo_api::Status::invalid(
        "ServingCertificate",
        name,
        &[FieldError::new(field, message)],
    )))
}

/// Signs the CSR in `body` for node `name`: `{certificate, caCertificate, expirationTimestamp}`.
pub fn issue(app: &App, name: &str, body: Value) -> ApiResult<Value> {
    let Some(tls) = &app.tls else {
        return Err(ApiError::unavailable(
            "this server has no cluster CA: it signs no certificates",
        ));
    };
    let request: Request = kumo_api::validation::decode(body).map_err(|e| {
        ApiError(Box::new(kumo_api::Status::invalid(
            "ServingCertificate",
            name,
            &[e],
        )))
    })?;
    if request.csr.trim().is_empty() {
        return Err(invalid(name, "csr", "Required value"));
    }
    let certificate = tls
        .ca
        .sign_csr(
            &request.csr,
            &[name.to_string()],
            kumo_pki::Usage::Server,
            NODE_SERVING_VALIDITY,
        )
        .map_err(|e| match e {
            kumo_pki::PkiError::Csr(why) => invalid(name, "csr", format!("Invalid value: {why}")),
            // The node's name as a DNS name (node names are DNS subdomains, so this is rare).
            kumo_pki::PkiError::Name(_) => invalid(
                name,
                "metadata.name",
                "Invalid value: not usable as a certificate's DNS name",
            ),
            e => ApiError::internal(format!("signing the serving certificate: {e}")),
        })?;
    let not_after = kumo_pki::not_after(&certificate)
        .map_err(|e| ApiError::internal(format!("reading the new certificate: {e}")))?;
    let expiration: chrono::DateTime<chrono::Utc> = not_after.into();
    Ok(json!({
        "certificate": certificate,
        "caCertificate": tls.ca.cert_pem(),
        "expirationTimestamp": expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}
