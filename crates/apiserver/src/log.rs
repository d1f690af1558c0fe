//! Pod logs: find the pod's node and its agent, then stream the agent's answer through.

use crate::error::{ApiError, ApiResult};
use crate::object::str_at;
use crate::read;
use crate::request::Kind;
use crate::{shutting_down, App, StreamGuard};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as signal;

/// How long the agent has to answer with headers.
const AGENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a log request asks for.
pub struct LogParams {
    pub ns: String,
    pub name: String,
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<i64>,
}

fn core(plural: &str) -> ApiResult<Kind> {
    Kind::lookup("", "v1", plural)
        .ok_or_else(|| ApiError::internal("core kinds are not registered"))
}

/// The container to read: the one named, or the only one.
fn pick_container(pod: &Value, name: &str, wanted: Option<String>) -> ApiResult<String> {
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| str_at(c, &["name"])).collect())
        .unwrap_or_default();
    match wanted {
        Some(c) if containers.contains(&c.as_str()) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
        None => match containers.as_slice() {
            [only] => Ok(only.to_string()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))),
        },
    }
}

/// `https://host:port` of the agent on `node` (the scheme is for the reader: [`ask_agent`]
/// decides how to connect).
pub(crate) fn agent_base(node: &Value) -> ApiResult<String> {
    let node_name = str_at(node, &["metadata", "name"]).unwrap_or("");
    let endpoint = node.pointer("/status/daemonEndpoints/agentEndpoint");
    let address = endpoint
        .and_then(|e| str_at(e, &["address"]))
        .filter(|a| !a.is_empty());
    let port = endpoint
        .and_then(|e| e.get("port"))
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p));
    let (Some(address), Some(port)) = (address, port) else {
        return Err(ApiError::unavailable(format!(
            "node {node_name} does not report an agent endpoint"
        )));
    };
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

/// The agent URL serving a container's log.
fn agent_uri(node: &Value, p: &LogParams, container: &str) -> ApiResult<Uri> {
    let node_name = str_at(node, &["metadata", "name"]).unwrap_or("");
    let mut uri = format!(
        "{}/containerLogs/{}/{}/{container}?follow={}",
        agent_base(node)?,
        p.ns,
        p.name,
        p.follow
    );
    if let Some(n) = p.tail_lines {
        uri.push_str(&format!("&tailLines={n}"));
    }
    uri.parse().map_err(|_| {
        ApiError::unavailable(format!(
            "node {node_name} reports an invalid agent endpoint"
        ))
    })
}

/// The container a request names (or the pod's only one), the pod's node and that node.
pub(crate) async fn pod_on_node(
    app: &Arc<App>,
    ns: &str,
    name: &str,
    container: Option<String>,
) -> ApiResult<(String, String, Value)> {
    let pod = read::get(app, core("pods")?, Some(ns), name).await?;
    let container = pick_container(&pod, name, container)?;
    let Some(node_name) = str_at(&pod, &["spec", "nodeName"]).filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} is not yet scheduled to a node"
        )));
    };
    let node = read::get(app, core("nodes")?, None, node_name).await?;
    Ok((container, node_name.to_string(), node))
}

/// Sends a request to the agent on `node_name`, waiting at most `limit` for the head of its
/// answer. Over TLS (the server's config) the API server presents its client certificate and
/// accepts only a certificate of the cluster CA for `node_name`, whatever address the Node
/// object names: a Node object pointing at someone else's endpoint gets nothing from it.
pub(crate) async fn ask_agent(
    app: &Arc<App>,
    node_name: &str,
    request: http::request::Builder,
    limit: Duration,
) -> ApiResult<http::Response<Incoming>> {
    let mut request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
    let unreachable = |e: String| {
        ApiError::unavailable(format!("the agent on node {node_name} is unreachable: {e}"))
    };
    let uri = request.uri().clone();
    let authority = uri
        .authority()
        .ok_or_else(|| ApiError::internal("the agent uri has no authority"))?;
    // Origin-form on the wire, as a client speaking to the origin server sends it.
    *request.uri_mut() = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|_| ApiError::internal("the agent uri has no path"))?;
    if let Ok(host) = header::HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(header::HOST, host);
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let ask = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut sender = match &app.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(node_name.to_string()).map_err(
                    |_| {
                        ApiError::unavailable(format!(
                            "node name {node_name:?} cannot name a tls server"
                        ))
                    },
                )?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls.agent_client))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        ApiError::bad_gateway(format!(
                            "the agent on node {node_name} is not the node's: {e}"
                        ))
                    })?;
                handshake(stream).await
            }
            None => handshake(tcp).await,
        }
        .map_err(|e| unreachable(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))
    };
    match tokio::time::timeout(limit, ask).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::unavailable(format!(
            "the agent on node {node_name} did not answer within {}s",
            limit.as_secs()
        ))),
    }
}

/// HTTP/1 over `io`, its connection driven (upgrades included) in a task of its own.
async fn handshake<S>(io: S) -> hyper::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended with an error");
        }
    });
    Ok(sender)
}

/// GET pods/{name}/log.
pub async fn logs(app: &Arc<App>, p: LogParams) -> ApiResult<Response> {
    let (container, node_name, node) =
        pod_on_node(app, &p.ns, &p.name, p.container.clone()).await?;
    let uri = agent_uri(&node, &p, &container)?;
    let answer = ask_agent(app, &node_name, Request::get(uri), AGENT_ANSWER_TIMEOUT).await?;
    let node_name = node_name.as_str();
    let status = answer.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(ApiError::bad_gateway(format!(
            "the agent on node {node_name} refused the api server's credentials"
        )));
    }
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(header::HeaderValue::from_static(
            "text/plain; charset=utf-8",
        ));
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(relay(
            answer.into_body(),
            app.shutdown.clone(),
            StreamGuard::new(app),
        ))
        .map_err(|e| ApiError::internal(format!("building the log response: {e}")))
}

/// Streams the agent's body through until it ends, fails, or the server shuts down.
fn relay(body: Incoming, shutdown: signal::Receiver<bool>, open: StreamGuard) -> Body {
    let chunks = futures_util::stream::unfold(Some((body, shutdown, open)), |state| async move {
        let (mut body, shutdown, open) = state?;
        loop {
            tokio::select! {
                frame = body.frame() => match frame {
                    None => return None,
                    Some(Err(e)) => return Some((Err(std::io::Error::other(e)), None)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Some((Ok(data), Some((body, shutdown, open))));
                        }
                    }
                },
                _ = shutting_down(shutdown.clone()) => return None,
            }
        }
    });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
        assert_eq!(pick_container(&two, "p", Some("b".into())).unwrap(), "b");
        let e = pick_container(&two, "p", None).unwrap_err();
        assert_eq!(
            e.0.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let e = pick_container(&two, "p", Some("c".into())).unwrap_err();
        assert_eq!(
            (e.code(), e.0.message.as_str()),
            (
                400,
                "container c is not valid for pod p, choose one of: [a b]"
            )
        );
    }

    #[test]
    fn agent_urls() {
        let p = LogParams {
            ns: "d".into(),
            name: "p".into(),
            container: None,
            follow: true,
            tail_lines: Some(3),
        };
        let node = |addr: &str, port: u64| json!({"metadata": {"name": "n1"}, "status": {"daemonEndpoints": {"agentEndpoint": {"address": addr, "port": port}}}});
        assert_eq!(
            agent_uri(&node("10.0.0.1", 10250), &p, "c")
                .unwrap()
                .to_string(),
            "https://10.0.0.1:10250/containerLogs/d/p/c?follow=true&tailLines=3"
        );
        assert_eq!(
            agent_uri(&node("::1", 1), &p, "c").unwrap().host(),
            Some("[::1]")
        );
        for bad in [
            node("", 1),
            node("a", 0),
            node("a", 70000),
            json!({"metadata": {"name": "n1"}}),
        ] {
            assert_eq!(agent_uri(&bad, &p, "c").unwrap_err().code(), 503);
        }
    }
}
