//! The router in front of app replicas: HTTP/1.1, h2c, TLS, gRPC, unknown hosts and apps
//! without ready replicas, and `kumo router` on its own.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_http2_over_tls_with_a_self_signed_certificate() {
    let c = Cluster::up(&[
        "--router-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--self-signed",
    ]);
    let tls: SocketAddr = c
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("kumo: router listening for TLS on "))
        .expect("kumo up printed the TLS address")
        .trim()
        .parse()
        .unwrap();
    let client = c.client();
    c.apply("secure.json", &app_manifest("secure", 1, "s"));
    wait_app(&client, "secure", "v1 serving", serving(1, 1)).await;
    let port = tls.port().to_string();
    let resolve = format!("secure.test:{port}:127.0.0.1");
    let url = format!("https://secure.test:{port}/");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "--http2",
                "--resolve",
                &resolve,
                "-w",
                " %{http_version}",
                &url,
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.starts_with("secure-v1-web-") {
            assert!(text.ends_with(" s\n 2"), "HTTP/2 over TLS: {text}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_the_router_over_http1_and_h2c() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    c.apply("hello.json", &app_manifest("hello", 3, "1"));
    ok(&c.kumo(&[
        "wait",
        "app/hello",
        "--for=condition=Available",
        "--timeout",
        "60s",
    ]));
    let app = wait_app(&client, "hello", "3 ready replicas", serving(1, 3)).await;
    assert_eq!(app.status.unwrap().phase.as_deref(), Some("Running"));
    let releases = client
        .list::<Release>(Some("default"), &Default::default())
        .await
        .unwrap();
    assert_eq!(releases.items.len(), 1);
    assert_eq!(releases.items[0].metadata.name, "hello-v1");

    // Each replica got its own host port, and requests reach all three.
    let pods = web_pods(&client, "hello").await;
    let names: std::collections::BTreeSet<String> =
        pods.iter().map(|p| p.metadata.name.clone()).collect();
    let ports: std::collections::BTreeSet<&String> = pods
        .iter()
        .filter_map(|p| p.metadata.annotations.get("kumo.dev/assigned-port"))
        .collect();
    assert_eq!(ports.len(), 3, "{pods:#?}");
    reaches_all(router, "hello.test", &names).await;

    // One HTTP/2 connection: its requests spread over the replicas too.
    let stream = tokio::net::TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let req = http::Request::get("http://hello.test/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.expect("h2 request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).to_string();
        seen.insert(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(seen, names, "one h2 connection reached every replica");

    // An unknown host is 404; an app with no ready replica is 503 with a body saying so.
    let (code, _) = get(router, "nobody.test", "/").await.unwrap();
    assert_eq!(code, 404);
    c.apply("idle.json", &app_manifest("idle", 0, "1"));
    wait_app(&client, "idle", "an active release", serving(1, 0)).await;
    // The router learns of the app from its watch: 404 until then, 503 after.
    let deadline = tokio::time::Instant::now() + T;
    let (code, body) = loop {
        let (code, body) = get(router, "idle.test", "/").await.unwrap();
        if code != 404 || tokio::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("idle"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_router_follows_the_api() {
    use std::io::BufRead;
    let c = Cluster::up(&[]);
    let bad = std::process::Command::new(kumo_exe())
        .args(["router", "--server", &c.url, "--listen", "127.0.0.1:0"])
        .env("KUMO_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!bad.status.success(), "a wrong token is refused at start");
    let mut child = std::process::Command::new(kumo_exe())
        .args(["router", "--server", &c.url])
        .args(["--ca-file", c.ca_file().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("KUMO_TOKEN", &c.token)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kumo router");
    let stdout = child.stdout.take().unwrap();
    let guard = RouterProcess(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().unwrap().unwrap();
    let router: SocketAddr = line
        .strip_prefix("kumo: router listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    let line = lines.next().unwrap().unwrap();
    let metrics: SocketAddr = line
        .strip_prefix("kumo: router metrics on http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert_eq!(get(router, "solo.test", "/").await.unwrap().0, 404);
    c.apply("solo.json", &app_manifest("solo", 1, "7"));
    let client = c.client();
    wait_app(&client, "solo", "v1 serving", serving(1, 1)).await;
    // The route follows the watch: poll until it is in (no restart of the router).
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (code, body) = get(router, "solo.test", "/").await.unwrap();
        if code == 200 {
            assert!(body.ends_with(" 7\n"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Prometheus metrics count the app's requests.
    let (code, text) = get(metrics, "metrics", "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let counted = text
        .lines()
        .any(|l| l.starts_with("kumo_router_requests_total{") && l.contains("app=\"solo\""));
    assert!(counted, "{text}");
    drop(guard);
}

/// A gRPC service without generated code (raw bytes): `Hello` answers the replica's name,
/// `Stream` three messages naming it.
const GRPC_SERVER: &str = r#"
import os, grpc
from concurrent import futures
name = os.environ["HOSTNAME"].encode()
def hello(request, context):
    return name
def stream(request, context):
    for i in range(3):
        yield name + b" %d" % i
handler = grpc.method_handlers_generic_handler("kumo.Echo", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("0.0.0.0:" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"#;

/// Through one channel: unary calls until they reached `argv[2]` replicas or 30 s passed (the
/// replica names seen, one per line), then one server-streaming call (its messages, one per
/// line, after a `--` line).
const GRPC_CLIENT: &str = r#"
import sys, time, grpc
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.default_authority", "grpc.test")])
hello = channel.unary_unary("/kumo.Echo/Hello")
want = int(sys.argv[2])
seen = set()
# Calls on this one channel until they have reached `want` replicas (the router follows the API
# through watches, so the first calls may find it not routing the app yet).
deadline = time.time() + 30
while len(seen) < want and time.time() < deadline:
    try:
        seen.add(hello(b"hi", timeout=10).decode())
    except grpc.RpcError:
        time.sleep(0.1)
for name in sorted(seen):
    print(name)
print("--")
for message in channel.unary_stream("/kumo.Echo/Stream")(b"hi", timeout=10):
    print(message.decode())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_of_one_channel_spread_over_replicas() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    let app = serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "grpc"},
        "spec": {
            "runtimeClassName": "process",
            "processes": {"web": {"command": ["/usr/bin/python3", "-c", GRPC_SERVER], "replicas": 3, "protocol": "h2c"}},
            "domains": ["grpc.test"]
        }
    });
    c.apply("grpc.json", &app.to_string());
    wait_app(&client, "grpc", "3 ready replicas", serving(1, 3)).await;
    let names: Vec<String> = web_pods(&client, "grpc")
        .await
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            GRPC_CLIENT,
            &router.to_string(),
            &names.len().to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (unary, streamed) = text.split_once("--\n").expect("two parts");
    let mut seen: Vec<&str> = unary.lines().collect();
    seen.sort();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(seen, want, "one channel's calls reached every replica");
    let messages: Vec<&str> = streamed.lines().collect();
    assert_eq!(messages.len(), 3, "{streamed}");
    let replica = messages[0].split(' ').next().unwrap();
    assert_eq!(
        messages,
        vec![
            format!("{replica} 0"),
            format!("{replica} 1"),
            format!("{replica} 2")
        ]
    );
}
