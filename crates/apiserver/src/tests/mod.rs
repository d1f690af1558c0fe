//! End-to-end tests: the real server on a loopback port over a `MemStore`, driven by an HTTP
//! client, one `check(request, status, message)` per expectation.

mod audit;
mod crud;
mod edge;
mod encryption;
mod leases;
mod lifecycle;
mod limits;
mod node_access;
mod rbac;
mod service_accounts;
mod tokens;
mod watch;

use crate::{serve, Config};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kumo_store::MemStore;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "t0ken";

/// A running server and a client for it.
/// A client of a test server over plain HTTP (the server type's client speaks both).
pub fn plain_http_client() -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let tls = rustls::ClientConfig::builder_with_provider(kumo_pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

pub struct Server {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A cluster CA and the API server's TLS from it, as the daemon makes them: serving for
/// 127.0.0.1 (leaf then CA), calling agents with a `kumo-apiserver` client certificate.
pub fn cluster_tls() -> crate::ClusterTls {
    let ca = kumo_pki::Ca::generate().unwrap();
    let day = Duration::from_secs(24 * 3600);
    let serving = ca.issue_server(&["127.0.0.1".into()], day).unwrap();
    let client = ca
        .issue_client("kumo-apiserver", &["system:masters"], day)
        .unwrap();
    crate::ClusterTls {
        serving: kumo_pki::server_config(
            &format!("{}{}", serving.cert_pem, ca.cert_pem()),
            &serving.key_pem,
            None,
        )
        .unwrap(),
        agent_client: kumo_pki::client_config(
            ca.cert_pem(),
            Some((&client.cert_pem, &client.key_pem)),
        )
        .unwrap(),
        ca: Arc::new(ca),
    }
}

/// One request; `token` and `content_type` default to the valid token and JSON.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

pub fn req(method: &str, path: &str, body: Option<Value>) -> Req {
    let method: Method = method.parse().unwrap();
    let content_type = if method == Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    Req {
        method,
        path: path.to_string(),
        token: Some(TOKEN.to_string()),
        content_type: body.is_some().then(|| content_type.to_string()),
        body: body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
    }
}

impl Server {
    pub async fn start() -> Server {
        Server::with(MemStore::new(), Duration::from_secs(5)).await
    }

    pub async fn with(store: MemStore, bookmark_interval: Duration) -> Server {
        Server::with_limits(store, bookmark_interval, kumo_serve::Limits::default()).await
    }

    /// A server with these connection limits.
    pub async fn with_limits(
        store: MemStore,
        bookmark_interval: Duration,
        limits: kumo_serve::Limits,
    ) -> Server {
        let identity = Arc::new(crate::Transformer::identity());
        Server::with_all(Arc::new(store), bookmark_interval, identity, limits).await
    }

    /// A server on a store the test keeps a handle on, encrypting as `encryption` says.
    pub async fn with_config(
        store: Arc<dyn kumo_store::Store>,
        bookmark_interval: Duration,
        encryption: Arc<crate::Transformer>,
    ) -> Server {
        Server::with_all(
            store,
            bookmark_interval,
            encryption,
            kumo_serve::Limits::default(),
        )
        .await
    }

    /// A server over TLS from `tls`, and a client trusting its CA.
    pub async fn with_tls(tls: crate::ClusterTls) -> Server {
        Server::with_everything(
            Arc::new(MemStore::new()),
            Duration::from_secs(5),
            Arc::new(crate::Transformer::identity()),
            kumo_serve::Limits::default(),
            Some(tls),
        )
        .await
    }

    async fn with_all(
        store: Arc<dyn kumo_store::Store>,
        bookmark_interval: Duration,
        encryption: Arc<crate::Transformer>,
        limits: kumo_serve::Limits,
    ) -> Server {
        Server::with_everything(store, bookmark_interval, encryption, limits, None).await
    }

    async fn with_everything(
        store: Arc<dyn kumo_store::Store>,
        bookmark_interval: Duration,
        encryption: Arc<crate::Transformer>,
        limits: kumo_serve::Limits,
        tls: Option<crate::ClusterTls>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        // Trusts the cluster CA (none without TLS: plain HTTP needs no roots).
        let mut roots = rustls::RootCertStore::empty();
        if let Some(tls) = &tls {
            for cert in kumo_pki::certs_from_pem("ca", tls.ca.cert_pem()).unwrap() {
                roots.add(cert).unwrap();
            }
        }
        let client_tls = rustls::ClientConfig::builder_with_provider(kumo_pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let config = Config {
            bookmark_interval,
            encryption,
            limits,
            tls,
            ..Config::new(store, vec![TOKEN.to_string()])
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async move {
            let _ = stopped.await;
        }));
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let server = Server {
            base,
            stop: Some(stop),
            task,
            client,
        };
        // `serve` creates the default namespace before it answers.
        server
            .check(
                req("GET", "/api/v1/namespaces/default", None),
                200,
                "\"default\"",
            )
            .await;
        server
    }

    /// A server over `store` deciding with the RBAC authorizer, where [`TOKEN`] is an admin
    /// (`system:masters`) and each of `users` authenticates with its token.
    pub async fn with_rbac(
        store: Arc<dyn kumo_store::Store>,
        users: Vec<(String, kumo_api::UserInfo)>,
    ) -> Server {
        let identity = Arc::new(crate::Transformer::identity());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut tokens = crate::StaticTokens::admins([TOKEN.to_string()]).0;
        tokens.extend(users);
        let authorizer = crate::RbacAuthorizer::start(Arc::clone(&store), Arc::clone(&identity))
            .await
            .unwrap();
        let config = Config {
            encryption: identity,
            authenticator: Arc::new(crate::StaticTokens(tokens)),
            authorizer,
            ..Config::new(store, vec![TOKEN.to_string()])
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async move {
            let _ = stopped.await;
        }));
        let client = plain_http_client();
        let server = Server {
            base,
            stop: Some(stop),
            task,
            client,
        };
        server
            .check(
                req("GET", "/api/v1/namespaces/default", None),
                200,
                "\"default\"",
            )
            .await;
        server
    }

    /// Sends a request and returns the streaming response.
    pub async fn send(&self, r: Req) -> http::Response<Incoming> {
        let mut builder = Request::builder()
            .method(r.method)
            .uri(format!("{}{}", self.base, r.path));
        if let Some(t) = r.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = r.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder.body(Full::new(r.body)).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .expect("the server answers in time")
            .expect("the request is sent")
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(&self, r: Req) -> (StatusCode, String) {
        let response = self.send(r).await;
        let status = response.status();
        let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
            .await
            .expect("the body ends in time")
            .expect("the body is read")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Asserts the status code and that the body contains `message`; returns the body as JSON
    /// (`null` when it is not JSON).
    pub async fn check(&self, r: Req, status: u16, message: &str) -> Value {
        let what = format!("{} {}", r.method, r.path);
        let (got, body) = self.call(r).await;
        assert_eq!(got.as_u16(), status, "{what}: {body}");
        assert!(
            body.contains(message),
            "{what}: {body:?} does not contain {message:?}"
        );
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// Creates an object, asserting 201.
    pub async fn create(&self, path: &str, object: Value) -> Value {
        self.check(req("POST", path, Some(object)), 201, "").await
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve does not panic")
            .expect("serve ends cleanly");
    }
}

/// A pod in namespace `default` (which these servers hold to the baseline pod security level).
pub fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]}
    })
}

pub fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

pub const PODS: &str = "/api/v1/namespaces/default/pods";

pub fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Binds `pods/name` in `default` to `node` (creating the node first).
pub async fn bind_to_new_node(server: &Server, name: &str, node_name: &str) {
    server.create("/api/v1/nodes", node(node_name)).await;
    server
        .check(
            req("POST", &format!("{PODS}/{name}/binding"), Some(json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node_name}}))),
            201,
            "Success",
        )
        .await;
}
