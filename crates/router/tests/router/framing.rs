//! Responses framed every way HTTP/1.1 allows (RFC 9112 §6), from a backend that writes raw
//! bytes, through the router's own HTTP/1.1 reader (requests without a body), and what it does
//! with the backend's connection afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kumo_router::BackendProtocol::Http1;
use kumo_router::{Endpoint, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

/// A backend speaking raw HTTP/1.1: each request head read gets `answer(path)` — the bytes to
/// write, and whether to close the connection after them.
struct Raw {
    endpoint: Endpoint,
    /// Connections accepted so far.
    conns: Arc<AtomicUsize>,
    /// A message each time the backend has closed a connection.
    closed: mpsc::UnboundedReceiver<()>,
}

async fn raw_backend(answer: fn(&str) -> (Vec<u8>, bool)) -> Raw {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let (bytes, close) = answer(&path);
                    if tcp.write_all(&bytes).await.is_err() {
                        return;
                    }
                    if close {
                        drop(tcp);
                        let _ = closed_tx.send(());
                        return;
                    }
                }
            });
        }
    });
    Raw {
        endpoint: Endpoint::new(addr, "raw"),
        conns,
        closed,
    }
}

fn raw_route(raw: &Raw) -> Route {
    let mut web = route("web", "web.test", Http1, &[]);
    web.endpoints.push(raw.endpoint.clone());
    web
}

/// A body of many reads' worth.
const LARGE: usize = 1_000_000;

fn large_body() -> String {
    "0123456789".repeat(LARGE / 10)
}

fn answers(path: &str) -> (Vec<u8>, bool) {
    let keep = |s: &str| (s.as_bytes().to_vec(), false);
    match path {
        "/length" => keep("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
        "/chunked" => keep(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        ),
        "/trailers" => keep(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n2\r\nok\r\n0\r\nx-checksum: abc\r\n\r\n",
        ),
        "/early" => keep(
            "HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ),
        "/empty" => keep("HTTP/1.1 204 No Content\r\n\r\n"),
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec(), true),
        "/then-close" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbye.".to_vec(),
            true,
        ),
        "/two-lengths" => keep("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc"),
        "/large" => {
            let mut bytes = format!("HTTP/1.1 200 OK\r\ncontent-length: {LARGE}\r\n\r\n").into_bytes();
            bytes.extend(large_body().bytes());
            (bytes, false)
        }
        "/cut-short" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec(),
            true,
        ),
        _ => keep("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
    }
}

#[tokio::test]
async fn bodies_framed_every_way_arrive_whole_over_one_kept_connection() {
    let raw = raw_backend(answers).await;
    let r = router(vec![raw_route(&raw)]).await;
    let client = H1::new();
    for (path, status, body) in [
        ("/length", StatusCode::OK, "hello"),
        ("/chunked", StatusCode::OK, "hello world"),
        ("/early", StatusCode::CREATED, "ok"),
        ("/empty", StatusCode::NO_CONTENT, ""),
        ("/length", StatusCode::OK, "hello"),
    ] {
        let reply = within(path, client.get(r.addr(), "web.test", path)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (status, body),
            "{path}"
        );
    }
    let reply = within("large", client.get(r.addr(), "web.test", "/large")).await;
    assert!(reply.body == large_body(), "a large body arrived changed");
    assert_eq!(
        raw.conns.load(Ordering::SeqCst),
        1,
        "every response above leaves the connection reusable"
    );

    // A body that runs until the backend closes arrives whole; the next request needs a new
    // connection.
    let reply = within(
        "until-close",
        client.get(r.addr(), "web.test", "/until-close"),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "until close")
    );
    let reply = within("length", client.get(r.addr(), "web.test", "/length")).await;
    assert_eq!(reply.body, "hello");
    assert_eq!(raw.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn trailers_of_a_chunked_response_reach_an_http2_client() {
    let raw = raw_backend(answers).await;
    let r = router(vec![raw_route(&raw)]).await;
    let h2 = H2::connect(r.addr()).await;
    let req = Request::get("http://web.test/trailers")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = within("response", h2.request(req)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = within("body", resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().cloned().expect("no trailers");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(&collected.to_bytes()[..], b"ok");
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_not_used_again() {
    let mut raw = raw_backend(answers).await;
    let r = router(vec![raw_route(&raw)]).await;
    let client = H1::new();
    for round in 1..=3 {
        // The response says nothing of closing; the backend closes once it is written.
        let reply = within(
            "then-close",
            client.get(r.addr(), "web.test", "/then-close"),
        )
        .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "bye.")
        );
        within("the backend's close", raw.closed.recv())
            .await
            .unwrap();
        assert_eq!(raw.conns.load(Ordering::SeqCst), round);
    }
}

#[tokio::test]
async fn a_malformed_or_broken_response_is_a_502_or_a_broken_body() {
    let raw = raw_backend(answers).await;
    let r = router(vec![raw_route(&raw)]).await;
    let client = H1::new();
    let reply = within(
        "two lengths",
        client.get(r.addr(), "web.test", "/two-lengths"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(
        reply.body.contains("differing content-length values"),
        "{reply:?}"
    );

    // The head was good, so the request went out and is not retried; the body breaks off, and
    // the router closes the client's connection rather than let it read a short body as whole.
    let mut tcp = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    tcp.write_all(b"GET /cut-short HTTP/1.1\r\nhost: web.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    within("the router closing", tcp.read_to_end(&mut got))
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    let body_len = got.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    assert!(
        body_len < 10,
        "a body cut short reached the client whole: {got:?}"
    );

    // The router still serves from the same backend.
    let reply = within("length", client.get(r.addr(), "web.test", "/length")).await;
    assert_eq!(reply.body, "hello");
}
