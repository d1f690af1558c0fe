//! The typed HTTP client every component and the CLI use to talk to the API server.

use crate::config::ClientConfig;
use crate::error::ClientError;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use kumo_api::{ObjectList, Resource, Status, WatchEvent, WatchEventType};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to one server may take before the next is tried (a machine that is
/// gone answers nothing, rather than refusing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to the API servers of one control plane; cheap to clone.
///
/// With several servers, a request that cannot reach the current one (or that it answers
/// `503`: its store is away) goes to the next, and every later request sticks to the one that
/// answered. A request the current server answers costs nothing more than with one server.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Never empty; `server` and then the config's `servers`.
    servers: Vec<String>,
    /// The index in `servers` of the one that answered last.
    current: AtomicUsize,
    /// Replaceable at run time (a rotated node credential), for every clone at once.
    token: std::sync::RwLock<String>,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Selectors for list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

impl ListParams {
    pub fn labels(selector: &str) -> Self {
        ListParams {
            label_selector: Some(selector.to_string()),
            field_selector: None,
        }
    }

    pub fn fields(selector: &str) -> Self {
        ListParams {
            label_selector: None,
            field_selector: Some(selector.to_string()),
        }
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(l) = &self.label_selector {
            q.push(("labelSelector", l.clone()));
        }
        if let Some(f) = &self.field_selector {
            q.push(("fieldSelector", f.clone()));
        }
        q
    }
}

/// Options of `pods/{name}/log`.
#[derive(Debug, Clone, Default)]
pub struct LogParams {
    pub container: Option<String>,
    pub follow: bool,
    pub tail_lines: Option<i64>,
}

/// Options of `pods/{name}/exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecParams {
    pub container: Option<String>,
    pub command: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
    /// Why, for the audit log (sent as `Kumo-Audit-Reason`; the server checks it).
    pub reason: Option<String>,
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Appends a query string to a path.
pub fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

impl Client {
    /// A client of `config.server` and then `config.servers`: `https://` verifies each server
    /// against the config's CA (which it requires); `http://` is for in-process tests. All
    /// servers use the same scheme.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let servers = config.endpoints();
        let Some(server) = servers.first().cloned() else {
            return Err(ClientError::Request(
                "server: no API server configured".to_string(),
            ));
        };
        let scheme = |s: &str| s.split_once("://").map(|(scheme, _)| scheme.to_string());
        if let Some(other) = servers.iter().find(|s| scheme(s) != scheme(&server)) {
            return Err(ClientError::Request(format!(
                "servers: {other:?} and {server:?} must use the same scheme"
            )));
        }
        let ca = config.ca_pem().map_err(ClientError::Request)?;
        let tls = match (scheme(&server).as_deref(), ca) {
            (Some("http"), _) => None,
            (Some("https"), Some(ca)) => Some(
                kumo_pki::client_config(&ca, None)
                    .map_err(|e| ClientError::Request(format!("certificate-authority-data: {e}")))?,
            ),
            (Some("https"), None) => {
                return Err(ClientError::Request(format!(
                    "server {server} is https but the client config has no certificate-authority-data to verify it with (set it in {}, as `kumo up` writes it)",
                    ClientConfig::default_path().display()
                )))
            }
            _ => {
                return Err(ClientError::Request(format!(
                    "server {server:?} must be an https:// URL"
                )))
            }
        };
        Self::build(servers, &config.token, tls, None)
    }

    /// A client of `server` over TLS with `tls` (its roots and, for the API server calling an
    /// agent, its client certificate), verifying the server as `server_name` when given rather
    /// than by the URL's host; without `tls`, plain HTTP.
    pub fn with_tls(
        server: &str,
        token: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        server_name: Option<String>,
    ) -> Result<Self, ClientError> {
        let server = server.trim_end_matches('/').to_string();
        Self::build(vec![server], token, tls, server_name)
    }

    fn build(
        servers: Vec<String>,
        token: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        server_name: Option<String>,
    ) -> Result<Self, ClientError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // Plain HTTP keeps a config that trusts nothing: it is never used.
        let plain = tls.is_none();
        let tls = match tls {
            Some(tls) => tls,
            None => rustls::ClientConfig::builder_with_provider(kumo_pki::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Request(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
                .into(),
        };
        // hyper-rustls sets the ALPN protocols itself.
        let mut tls = (*tls).clone();
        tls.alpn_protocols.clear();
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if plain {
            builder.https_or_http()
        } else {
            builder.https_only()
        };
        let builder = match server_name {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| ClientError::Request(format!("tls server name: {e}")))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let builder = builder.enable_http1();
        let http =
            HyperClient::builder(TokioExecutor::new()).build(builder.wrap_connector(connector));
        Ok(Client {
            inner: Arc::new(Inner {
                servers,
                current: AtomicUsize::new(0),
                token: std::sync::RwLock::new(token.to_string()),
                http,
            }),
        })
    }

    /// The server requests go to now (the one that answered last).
    pub fn server(&self) -> &str {
        &self.inner.servers[self.current()]
    }

    /// Every server this client may use, in the order it tries them.
    pub fn servers(&self) -> &[String] {
        &self.inner.servers
    }

    fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.servers.len()
    }

    /// Uses `token` from the next request on, in this client and all its clones (requests
    /// already sent, and open watches, keep the one they were sent with).
    pub fn set_token(&self, token: String) {
        *self.inner.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    fn bearer(&self) -> String {
        let token = self.inner.token.read().unwrap_or_else(|e| e.into_inner());
        format!("Bearer {}", *token)
    }

    /// Sends a request and returns the response when its status is a success; an error status
    /// becomes `ClientError::Api` with the server's `Status`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let resp = self.raw(method, path, &[], body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_of(resp).await)
    }

    /// Sends a request with extra headers and returns whatever the server answered. With
    /// several servers, one that cannot be reached or answers `503` gives way to the next
    /// (a request that may have reached a server only when it is a read), and the one that
    /// answers becomes the current one.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let (content_type, payload) = match body {
            Some((content_type, bytes)) => (Some(content_type), Bytes::from(bytes)),
            None => (None, Bytes::new()),
        };
        let count = self.inner.servers.len();
        let first = self.current();
        let mut tried = 0;
        loop {
            let at = (first + tried) % count;
            tried += 1;
            let last = tried == count;
            let server = &self.inner.servers[at];
            let uri = format!("{server}{path}");
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header("authorization", self.bearer())
                .header("accept", "application/json")
                // Says in the audit log which tool made the request.
                .header("user-agent", concat!("kumo/", env!("CARGO_PKG_VERSION")));
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            if let Some(content_type) = content_type {
                builder = builder.header("content-type", content_type);
            }
            let req = builder
                .body(Full::new(payload.clone()))
                .map_err(|e| ClientError::Request(format!("bad request {uri}: {e}")))?;
            match self.inner.http.request(req).await {
                Ok(resp) if !last && resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let why = error_of(resp).await;
                    tracing::warn!(server = %server, error = %why, "api server unavailable, trying the next");
                }
                Ok(resp) => {
                    if at != first {
                        tracing::warn!(server = %server, "api server failover: using this server from now on");
                        self.inner.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    if let Some(reason) = tls_refusal(&e) {
                        return Err(ClientError::Verify {
                            server: server.clone(),
                            reason,
                            config: ClientConfig::default_path().display().to_string(),
                        });
                    }
                    let error = ClientError::Connect {
                        server: server.clone(),
                        reason: connect_reason(&e),
                    };
                    // A request that was sent may have been carried out: only reads go again.
                    let again = e.is_connect() || method == Method::GET || method == Method::HEAD;
                    if last || !again {
                        return Err(error);
                    }
                    tracing::warn!(server = %server, error = %error, "api server unreachable, trying the next");
                }
            }
        }
    }

    /// Opens an exec session in a container (`pods/{name}/exec`, upgraded to `kumo-exec.v1`):
    /// the returned stream speaks [`kumo_api::exec`] frames.
    pub async fn exec(
        &self,
        ns: &str,
        pod: &str,
        params: &ExecParams,
    ) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, ClientError> {
        let mut q = Vec::new();
        if let Some(c) = &params.container {
            q.push(("container", c.clone()));
        }
        for arg in &params.command {
            q.push(("command", arg.clone()));
        }
        q.push(("stdin", params.stdin.to_string()));
        q.push(("tty", params.tty.to_string()));
        let path = format!("{}/exec", kumo_api::Pod::object_path(Some(ns), pod));
        let protocol = kumo_api::exec::PROTOCOL;
        let mut headers = vec![("connection", "Upgrade"), ("upgrade", protocol)];
        if let Some(reason) = &params.reason {
            headers.push((kumo_api::audit::REASON_HEADER, reason.as_str()));
        }
        let resp = self
            .raw(Method::POST, &with_query(&path, &q), &headers, None)
            .await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(error_of(resp).await);
        }
        let io = hyper::upgrade::on(resp)
            .await
            .map_err(|e| self.protocol(format!("upgrading to {protocol}: {e}")))?;
        Ok(hyper_util::rt::TokioIo::new(io))
    }

    /// Sends a JSON request and decodes a JSON answer.
    pub async fn request_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some((ct, v)) => Some((
                ct,
                serde_json::to_vec(v).map_err(|e| ClientError::Request(e.to_string()))?,
            )),
            None => None,
        };
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.protocol(format!("reading body: {e}")))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("decoding {path}: {e}")))
    }

    fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            server: self.server().to_string(),
            reason,
        }
    }

    pub async fn get<K: Resource>(&self, ns: &str, name: &str) -> Result<K, ClientError> {
        self.request_json(Method::GET, &K::object_path(Some(ns), name), None)
            .await
    }

    /// Like `get`, but a missing object is `None`.
    pub async fn get_opt<K: Resource>(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<K>, ClientError> {
        match self.get(ns, name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a kind, in one namespace or (with `None`) in all.
    pub async fn list<K: Resource>(
        &self,
        ns: Option<&str>,
        lp: &ListParams,
    ) -> Result<ObjectList<K>, ClientError> {
        self.request_json(
            Method::GET,
            &with_query(&K::collection_path(ns), &lp.query()),
            None,
        )
        .await
    }

    pub async fn create<K: Resource>(&self, obj: &K) -> Result<K, ClientError> {
        let v = typed_value(obj)?;
        let ns = obj
            .meta()
            .namespace
            .as_deref()
            .unwrap_or(kumo_api::DEFAULT_NAMESPACE);
        self.request_json(
            Method::POST,
            &K::collection_path(Some(ns)),
            Some(("application/json", &v)),
        )
        .await
    }

    /// Replaces an object; a stale `resourceVersion` is a 409 (`is_conflict`).
    pub async fn update<K: Resource>(&self, obj: &K) -> Result<K, ClientError> {
        let path = K::object_path(obj.meta().namespace.as_deref(), &obj.meta().name);
        let v = serde_json::to_value(obj).map_err(|e| ClientError::Request(e.to_string()))?;
        self.request_json(Method::PUT, &path, Some(("application/json", &v)))
            .await
    }

    /// Replaces an object's status only.
    pub async fn update_status<K: Resource>(&self, obj: &K) -> Result<K, ClientError> {
        let path = format!(
            "{}/status",
            K::object_path(obj.meta().namespace.as_deref(), &obj.meta().name)
        );
        let v = serde_json::to_value(obj).map_err(|e| ClientError::Request(e.to_string()))?;
        self.request_json(Method::PUT, &path, Some(("application/json", &v)))
            .await
    }

    /// Applies a JSON merge patch.
    pub async fn patch<K: Resource>(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<K, ClientError> {
        self.request_json(
            Method::PATCH,
            &K::object_path(Some(ns), name),
            Some(("application/merge-patch+json", patch)),
        )
        .await
    }

    /// Applies a JSON merge patch to the status subresource.
    pub async fn patch_status<K: Resource>(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<K, ClientError> {
        let path = format!("{}/status", K::object_path(Some(ns), name));
        self.request_json(
            Method::PATCH,
            &path,
            Some(("application/merge-patch+json", patch)),
        )
        .await
    }

    /// Deletes an object (gracefully for running pods unless `grace_period_seconds` is 0).
    pub async fn delete<K: Resource>(
        &self,
        ns: &str,
        name: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<K, ClientError> {
        let mut q = Vec::new();
        if let Some(g) = grace_period_seconds {
            q.push(("gracePeriodSeconds", g.to_string()));
        }
        self.request_json(
            Method::DELETE,
            &with_query(&K::object_path(Some(ns), name), &q),
            None,
        )
        .await
    }

    /// Binds a pod to a node (what the scheduler does).
    pub async fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<(), ClientError> {
        let path = format!("{}/binding", kumo_api::Pod::object_path(Some(ns), pod));
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let _: Value = self
            .request_json(Method::POST, &path, Some(("application/json", &body)))
            .await?;
        Ok(())
    }

    /// Watches a kind from `resource_version` ("" or "0" starts with the current objects as ADDED).
    pub async fn watch<K: Resource>(
        &self,
        ns: Option<&str>,
        lp: &ListParams,
        resource_version: &str,
    ) -> Result<WatchStream<K>, ClientError> {
        let mut q = lp.query();
        q.push(("watch", "true".into()));
        q.push(("allowWatchBookmarks", "true".into()));
        if !resource_version.is_empty() {
            q.push(("resourceVersion", resource_version.to_string()));
        }
        let resp = self
            .send(Method::GET, &with_query(&K::collection_path(ns), &q), None)
            .await?;
        Ok(WatchStream {
            lines: LineStream::new(resp.into_body()),
            server: self.server().to_string(),
            _kind: PhantomData,
        })
    }

    /// Streams a container's log.
    pub async fn logs(
        &self,
        ns: &str,
        pod: &str,
        params: &LogParams,
    ) -> Result<LineStream, ClientError> {
        let mut q = Vec::new();
        if let Some(c) = &params.container {
            q.push(("container", c.clone()));
        }
        if params.follow {
            q.push(("follow", "true".into()));
        }
        if let Some(t) = params.tail_lines {
            q.push(("tailLines", t.to_string()));
        }
        let path = format!("{}/log", kumo_api::Pod::object_path(Some(ns), pod));
        let resp = self.send(Method::GET, &with_query(&path, &q), None).await?;
        Ok(LineStream::new(resp.into_body()))
    }
}

/// An object's JSON with its `apiVersion` and `kind` set, whatever the caller filled in.
fn typed_value<K: Resource>(obj: &K) -> Result<Value, ClientError> {
    let mut obj = obj.clone();
    obj.set_type_meta();
    serde_json::to_value(&obj).map_err(|e| ClientError::Request(e.to_string()))
}

/// The certificate error behind a failed connection, if that is what it was.
fn tls_refusal(e: &hyper_util::client::legacy::Error) -> Option<String> {
    fn find(e: &(dyn std::error::Error + 'static)) -> Option<String> {
        if let Some(err @ rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>()
        {
            return Some(err.to_string());
        }
        // tokio-rustls and hyper-rustls wrap rustls' error in io::Errors, whose `source` skips
        // the wrapped error itself.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find(inner) {
                return Some(found);
            }
        }
        e.source().and_then(find)
    }
    find(e)
}

fn connect_reason(e: &hyper_util::client::legacy::Error) -> String {
    // The innermost cause says what happened ("Connection refused (os error 111)").
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    let lower = last.to_lowercase();
    match lower.find(" (os error") {
        Some(i) => lower[..i].to_string(),
        None => lower,
    }
}

/// The error an answer that is not a success stands for.
async fn error_of(resp: hyper::Response<Incoming>) -> ClientError {
    let code = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    ClientError::Api(Box::new(status_from(code, &bytes)))
}

/// Builds a `Status` from an error answer, even when the body is not one.
fn status_from(code: StatusCode, body: &[u8]) -> Status {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) if !s.message.is_empty() => s,
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            let message = if text.is_empty() {
                code.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            };
            Status::failure(
                code.as_u16(),
                code.canonical_reason().unwrap_or(""),
                message,
            )
        }
    }
}

/// A response body read line by line (watch streams, logs).
pub struct LineStream {
    body: Incoming,
    buf: BytesMut,
    done: bool,
}

impl LineStream {
    pub fn new(body: Incoming) -> Self {
        LineStream {
            body,
            buf: BytesMut::new(),
            done: false,
        }
    }

    /// The next chunk of raw bytes, for copying a log through unchanged.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        if !self.buf.is_empty() {
            return Some(Ok(self.buf.split().freeze()));
        }
        loop {
            match self.body.frame().await {
                None => return None,
                Some(Err(e)) => return Some(Err(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Some(Ok(data));
                        }
                    }
                }
            }
        }
    }

    /// The next line without its newline; a last line without one is returned too.
    pub async fn next_line(&mut self) -> Option<Result<String, String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Some(Ok(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            if self.done {
                if self.buf.is_empty() {
                    return None;
                }
                let rest = self.buf.split();
                return Some(Ok(String::from_utf8_lossy(&rest).into_owned()));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Err(e)) => return Some(Err(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Typed watch events read from a watch response.
pub struct WatchStream<K> {
    lines: LineStream,
    server: String,
    _kind: PhantomData<K>,
}

/// One item of a watch: an object event, a bookmark with its revision, or a server-side error.
#[derive(Debug, Clone)]
pub enum Watched<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    Bookmark(String),
    Error(Status),
}

impl<K: Resource> WatchStream<K> {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<Watched<K>, ClientError>> {
        loop {
            let line = match self.lines.next_line().await? {
                Ok(l) => l,
                Err(e) => {
                    return Some(Err(ClientError::Protocol {
                        server: self.server.clone(),
                        reason: e,
                    }))
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let proto = |reason: String| ClientError::Protocol {
                server: self.server.clone(),
                reason,
            };
            let ev: WatchEvent<Value> = match serde_json::from_str(&line) {
                Ok(ev) => ev,
                Err(e) => return Some(Err(proto(format!("bad watch line: {e}")))),
            };
            let decode = |v: Value| {
                serde_json::from_value::<K>(v).map_err(|e| proto(format!("bad watch object: {e}")))
            };
            return Some(match ev.type_ {
                WatchEventType::Added => decode(ev.object).map(Watched::Added),
                WatchEventType::Modified => decode(ev.object).map(Watched::Modified),
                WatchEventType::Deleted => decode(ev.object).map(Watched::Deleted),
                WatchEventType::Bookmark => Ok(Watched::Bookmark(
                    ev.object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )),
                WatchEventType::Error => serde_json::from_value::<Status>(ev.object)
                    .map(Watched::Error)
                    .map_err(|e| proto(format!("bad watch error: {e}"))),
            });
        }
    }
}
