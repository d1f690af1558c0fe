//! `pods/{name}/exec`: find the pod's agent, ask it to upgrade to `kumo-exec.v1`, answer the
//! client's upgrade, then copy bytes both ways until either side closes or the server stops.

use crate::error::{ApiError, ApiResult};
use crate::log::{agent_base, ask_agent, pod_on_node};
use crate::{shutting_down, App, StreamGuard};
use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kumo_api::exec::PROTOCOL;
use std::sync::Arc;
use std::time::Duration;

/// How long the agent has to answer the upgrade.
const AGENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// What an exec request asks for.
pub struct ExecParams {
    pub ns: String,
    pub name: String,
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The agent's exec URL for a container.
pub(crate) fn agent_exec_path(p: &ExecParams, container: &str) -> String {
    let mut path = format!(
        "/exec/{}/{}/{container}?stdin={}&tty={}",
        p.ns, p.name, p.stdin, p.tty
    );
    for arg in &p.command {
        path.push_str("&command=");
        path.push_str(&encode_query_value(arg));
    }
    path
}

/// POST pods/{name}/exec: `client` is the caller's request, whose connection is upgraded.
pub async fn exec(app: &Arc<App>, p: ExecParams, client: Request<Body>) -> ApiResult<Response> {
    let (container, node_name, node) =
        pod_on_node(app, &p.ns, &p.name, p.container.clone()).await?;
    let uri = format!("{}{}", agent_base(&node)?, agent_exec_path(&p, &container));
    let request = Request::post(uri)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, PROTOCOL);
    let answer = ask_agent(app, &node_name, request, AGENT_ANSWER_TIMEOUT).await?;
    let node_name = node_name.as_str();
    let status = answer.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(agent_refusal(node_name, answer).await);
    }
    let open = StreamGuard::new(app);
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        let _open = open;
        let (agent, client) =
            match tokio::join!(hyper::upgrade::on(answer), hyper::upgrade::on(client)) {
                (Ok(a), Ok(c)) => (a, c),
                (a, c) => {
                    tracing::debug!(agent = ?a.err(), client = ?c.err(), "exec upgrade failed");
                    return;
                }
            };
        let (mut agent, mut client) = (TokioIo::new(agent), TokioIo::new(client));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut agent) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "exec stream ended with an error");
                }
            }
            _ = shutting_down(shutdown) => {}
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, HeaderValue::from_static(PROTOCOL))
        .body(Body::empty())
        .map_err(|e| ApiError::internal(format!("building the exec response: {e}")))
}

/// The agent's refusal as the API's error: its own Status for a 4xx, else 502.
async fn agent_refusal(node: &str, answer: http::Response<hyper::body::Incoming>) -> ApiError {
    let status = answer.status();
    let body = answer
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<kumo_api::Status>(&body)
        .ok()
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    match status.as_u16() {
        401 | 403 => ApiError::bad_gateway(format!(
            "the agent on node {node} refused the api server's credentials"
        )),
        code @ 400..=499 => ApiError::new(
            code,
            status.canonical_reason().unwrap_or("BadRequest"),
            message,
        ),
        _ => ApiError::bad_gateway(format!(
            "the agent on node {node} failed to start the exec: {message}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_paths_carry_every_argument_encoded() {
        let p = ExecParams {
            ns: "default".into(),
            name: "web".into(),
            container: None,
            command: vec!["sh".into(), "-c".into(), "echo a&b=c %".into()],
            stdin: true,
            tty: false,
        };
        assert_eq!(
            agent_exec_path(&p, "app"),
            "/exec/default/web/app?stdin=true&tty=false&command=sh&command=-c&command=echo%20a%26b%3Dc%20%25"
        );
    }
}
