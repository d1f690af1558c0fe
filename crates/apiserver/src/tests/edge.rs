//! The edges: authentication, health and version, body limits, unknown paths, log proxying.

use super::*;
use axum::body::Body;
use axum::routing::get;
use futures_util::StreamExt;

#[tokio::test]
async fn authentication() {
    let s = Server::start().await;
    let (status, body) = s
        .call(Req {
            token: None,
            ..req("GET", "/healthz", None)
        })
        .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    // Ready: the store answers and the caches are synced.
    let (status, body) = s
        .call(Req {
            token: None,
            ..req("GET", "/readyz", None)
        })
        .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"));
    let v = s
        .check(
            Req {
                token: None,
                ..req("GET", "/version", None)
            },
            200,
            "kumoVersion",
        )
        .await;
    assert_eq!(v["kumoVersion"], kumo_api::VERSION);
    assert_eq!(v["gitVersion"], format!("v{}", kumo_api::VERSION));

    let missing = s
        .check(
            Req {
                token: None,
                ..req("GET", PODS, None)
            },
            401,
            "missing bearer token",
        )
        .await;
    assert_eq!(missing["reason"], "Unauthorized");
    s.check(
        Req {
            token: Some("wrong".into()),
            ..req("GET", PODS, None)
        },
        401,
        "invalid bearer token",
    )
    .await;
    // Even unknown paths and bad requests answer 401 first, and nothing is written.
    s.check(
        Req {
            token: None,
            ..req("GET", "/nowhere", None)
        },
        401,
        "",
    )
    .await;
    s.check(
        Req {
            token: Some("wrong".into()),
            ..req("POST", PODS, Some(pod("a")))
        },
        401,
        "",
    )
    .await;
    s.check(req("GET", &format!("{PODS}/a"), None), 404, "")
        .await;
}

#[tokio::test]
async fn requests_the_api_does_not_serve() {
    let s = Server::start().await;
    s.check(
        req("GET", "/api/v1/widgets", None),
        404,
        "could not find the requested resource",
    )
    .await;
    s.check(req("GET", "/nowhere", None), 404, "NotFound").await;
    s.check(
        req("POST", "/api/v1/pods", Some(pod("a"))),
        405,
        "MethodNotAllowed",
    )
    .await;
    s.check(
        req("GET", &format!("{PODS}?frobnicate=1"), None),
        400,
        "unknown query parameter",
    )
    .await;
    let mut yaml = req("POST", PODS, Some(pod("a")));
    yaml.content_type = Some("application/yaml".into());
    s.check(yaml, 415, "UnsupportedMediaType").await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let s = Server::start().await;
    let mut big = pod("big");
    big["metadata"]["annotations"] = json!({"blob": "x".repeat(4 * 1024 * 1024)});
    s.check(
        req("POST", PODS, Some(big)),
        413,
        "request body too large (limit 3145728 bytes)",
    )
    .await;
    s.check(req("GET", &format!("{PODS}/big"), None), 404, "")
        .await;
}

/// A fake agent serving `/containerLogs` over TLS with a certificate of `ca` for `node`,
/// requiring a client certificate of `client_ca` (as the real agent does with the cluster CA).
async fn fake_agent(ca: &kumo_pki::Ca, node: &str, client_ca: &str) -> u16 {
    let app = axum::Router::new().route(
        "/containerLogs/{ns}/{pod}/{container}",
        get(|uri: http::Uri| async move {
            if uri.path().ends_with("/missing") {
                return http::Response::builder()
                    .status(404)
                    .body(Body::from("container not started"))
                    .unwrap();
            }
            let first = format!("{} {}\n", uri.path(), uri.query().unwrap_or(""));
            if uri.query().is_some_and(|q| q.contains("follow=true")) {
                // One line, then a stream that never ends.
                let lines = futures_util::stream::once(async move {
                    Ok::<_, std::io::Error>(Bytes::from(first))
                })
                .chain(futures_util::stream::pending());
                return http::Response::new(Body::from_stream(lines));
            }
            http::Response::new(Body::from(first))
        }),
    );
    let leaf = ca
        .issue_server(&[node.to_string()], Duration::from_secs(3600))
        .unwrap();
    let tls = kumo_pki::server_config(&leaf.cert_pem, &leaf.key_pem, Some(client_ca)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The handshake authenticated the caller.
    let authenticate: kumo_serve::Authenticate = Arc::new(|_| true);
    tokio::spawn(kumo_serve::serve(
        listener,
        app,
        kumo_serve::Limits::default(),
        authenticate,
        Some(tls),
        std::future::pending(),
    ));
    port
}

fn node_with_agent(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"daemonEndpoints": {"agentEndpoint": {"address": "127.0.0.1", "port": port}}}})
}

#[tokio::test]
async fn logs_are_proxied_from_the_agent() {
    let tls = cluster_tls();
    let ca = Arc::clone(&tls.ca);
    let s = Server::with_tls(tls).await;
    let port = fake_agent(&ca, "n1", ca.cert_pem()).await;
    s.create("/api/v1/nodes", node_with_agent("n1", port)).await;
    s.create(PODS, pod("a")).await;
    s.check(
        req("GET", &format!("{PODS}/a/log"), None),
        400,
        "pod a is not yet scheduled to a node",
    )
    .await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/a/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        201,
        "",
    )
    .await;

    let (status, body) = s
        .call(req("GET", &format!("{PODS}/a/log?tailLines=5"), None))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "/containerLogs/default/a/c follow=false&tailLines=5\n"
    );
    s.check(
        req("GET", &format!("{PODS}/a/log?container=x"), None),
        400,
        "container x is not valid for pod a",
    )
    .await;
    s.check(
        req("GET", &format!("{PODS}/ghost/log"), None),
        404,
        r#"pods \"ghost\" not found"#,
    )
    .await;

    // Several containers: one must be named; the agent's 4xx passes through.
    let mut two = pod("two");
    two["spec"]["containers"] = json!([{"name": "main", "image": "busybox", "command": ["x"]}, {"name": "missing", "image": "busybox", "command": ["y"]}]);
    s.create(PODS, two).await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/two/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        201,
        "",
    )
    .await;
    s.check(
        req("GET", &format!("{PODS}/two/log"), None),
        400,
        "a container name must be specified for pod two, choose one of: [main missing]",
    )
    .await;
    s.check(
        req("GET", &format!("{PODS}/two/log?container=missing"), None),
        404,
        "container not started",
    )
    .await;

    // Follow streams until the server shuts down.
    let response = s
        .send(req("GET", &format!("{PODS}/a/log?follow=true"), None))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.into_data().unwrap(),
        "/containerLogs/default/a/c follow=true\n"
    );
    s.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the log stream ends");
    assert!(end.is_ok());
}

#[tokio::test]
async fn unreachable_agents_are_a_server_side_fault() {
    let s = Server::start().await;
    // A port nothing listens on: bind one, then free it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    s.create("/api/v1/nodes", node_with_agent("n1", port)).await;
    s.create("/api/v1/nodes", node("bare")).await;
    s.create(PODS, pod("a")).await;
    s.create(PODS, pod("b")).await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/a/binding"),
            Some(json!({"target": {"name": "n1"}})),
        ),
        201,
        "",
    )
    .await;
    s.check(
        req(
            "POST",
            &format!("{PODS}/b/binding"),
            Some(json!({"target": {"name": "bare"}})),
        ),
        201,
        "",
    )
    .await;
    let st = s
        .check(
            req("GET", &format!("{PODS}/a/log"), None),
            503,
            "the agent on node n1 is unreachable",
        )
        .await;
    assert_eq!(st["reason"], "ServiceUnavailable");
    s.check(
        req("GET", &format!("{PODS}/b/log"), None),
        503,
        "node bare does not report an agent endpoint",
    )
    .await;
}

#[tokio::test]
async fn an_agent_must_be_the_nodes_and_accept_the_servers_certificate() {
    let tls = cluster_tls();
    let ca = Arc::clone(&tls.ca);
    let other = kumo_pki::Ca::generate().unwrap();
    let s = Server::with_tls(tls).await;
    // A certificate of the cluster CA, but for another node; one of another CA for this
    // node; an agent that trusts another CA's clients only.
    let cases = [
        (
            "n1",
            fake_agent(&ca, "n2", ca.cert_pem()).await,
            "is not the node's",
        ),
        (
            "n2",
            fake_agent(&other, "n2", ca.cert_pem()).await,
            "is not the node's",
        ),
        (
            "n3",
            fake_agent(&ca, "n3", other.cert_pem()).await,
            "the agent on node n3",
        ),
    ];
    for (node, port, message) in cases {
        s.create("/api/v1/nodes", node_with_agent(node, port)).await;
        let mut p = pod(&format!("p-{node}"));
        p["spec"]["nodeName"] = json!(node);
        s.create(PODS, p).await;
        let (status, body) = s
            .call(req("GET", &format!("{PODS}/p-{node}/log"), None))
            .await;
        assert!(
            matches!(status.as_u16(), 502 | 503) && body.contains(message),
            "{node}: {status} {body}"
        );
    }
}

#[tokio::test]
async fn node_serving_certificates_name_the_node_only() {
    let tls = cluster_tls();
    let ca = Arc::clone(&tls.ca);
    let s = Server::with_tls(tls).await;
    let path = "/api/v1/nodes/n1/servingcertificate";
    let (csr, _key) = kumo_pki::new_csr("someone-else").unwrap();
    let answer = s
        .check(req("POST", path, Some(json!({"csr": csr}))), 201, "")
        .await;
    let cert = answer["certificate"].as_str().unwrap();
    assert_eq!(kumo_pki::subject_alt_names(cert).unwrap(), vec!["n1"]);
    assert_eq!(answer["caCertificate"], ca.cert_pem());
    let expires =
        chrono::DateTime::parse_from_rfc3339(answer["expirationTimestamp"].as_str().unwrap())
            .unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((89..=90).contains(&days), "{days}");
    assert_eq!(
        std::time::SystemTime::from(expires),
        kumo_pki::not_after(cert).unwrap()
    );

    for (body, message) in [
        (
            json!({"csr": "not a csr"}),
            "csr: Invalid value: not a PEM CERTIFICATE REQUEST",
        ),
        (json!({"csr": ""}), "csr: Required value"),
        (json!({"csr": ca.cert_pem()}), "csr: Invalid value"),
        (json!({}), "missing field `csr`"),
        (json!({"csr": 1}), "csr: invalid type"),
    ] {
        s.check(req("POST", path, Some(body)), 422, message).await;
    }
    s.check(req("GET", path, None), 405, "").await;

    // A server without a CA signs nothing.
    let plain = Server::start().await;
    plain
        .check(
            req("POST", path, Some(json!({"csr": csr}))),
            503,
            "no cluster CA",
        )
        .await;
}
