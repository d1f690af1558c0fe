//! Bodies stream through (no buffering), trailers pass on HTTP/2, upgrades join both sides.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use kumo_router::BackendProtocol::{H2c, Http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::support::*;

/// A backend whose one response body is fed by the test through the returned sender.
async fn fed_backend(
    protocol: kumo_router::BackendProtocol,
) -> (Backend, mpsc::Sender<Frame<Bytes>>) {
    let (tx, rx) = mpsc::channel(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let b = backend(protocol, "fed", move |_req, _id| {
        let rx = rx.lock().unwrap().take();
        async move {
            match rx {
                Some(rx) => Response::new(ChannelBody(rx).boxed_unsync()),
                None => respond(StatusCode::GONE, "only one"),
            }
        }
    })
    .await;
    (b, tx)
}

#[tokio::test]
async fn response_chunks_arrive_before_the_backend_finishes() {
    for protocol in [Http1, H2c] {
        let (b, feed) = fed_backend(protocol).await;
        let r = router(vec![route("web", "web.test", protocol, &[&b])]).await;
        let resp = within("response head", H1::new().open(r.addr(), "web.test", "/")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        feed.send(Frame::data(Bytes::from("first"))).await.unwrap();
        // The backend has not finished: if the router buffered, this would hang.
        let frame = within("first chunk", body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "first");
        feed.send(Frame::data(Bytes::from("second"))).await.unwrap();
        drop(feed);
        let rest = within("rest of body", body.collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(rest, "second", "{protocol:?}");
    }
}

#[tokio::test]
async fn grpc_style_trailers_and_request_bodies_pass_through_h2() {
    // Echoes the request body, then sends gRPC-style trailers.
    let b = backend(
        H2c,
        "grpc",
        |req: Request<hyper::body::Incoming>, _id| async move {
            let te = req.headers().get("te").cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let (tx, rx) = mpsc::channel(3);
            tx.send(Frame::data(body)).await.unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "ok".parse().unwrap());
            trailers.insert("x-te-seen", te.unwrap_or("none".parse().unwrap()));
            tx.send(Frame::trailers(trailers)).await.unwrap();
            let mut resp = Response::new(ChannelBody(rx).boxed_unsync());
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            resp
        },
    )
    .await;
    let r = router(vec![route("grpc", "grpc.test", H2c, &[&b])]).await;
    let conn = H2::connect(r.addr()).await;
    let req = Request::post("http://grpc.test/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let resp = within("grpc call", conn.request(req)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = within("grpc body", resp.into_body().collect())
        .await
        .unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers passed through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(trailers["x-te-seen"], "trailers");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
}

#[tokio::test]
async fn websocket_style_upgrade_echoes_through_the_router() {
    let b = backend(
        Http1,
        "ws",
        |mut req: Request<hyper::body::Incoming>, _id| async move {
            if req.headers().get("upgrade").map(|v| v.as_bytes()) != Some(b"echo") {
                return respond(StatusCode::BAD_REQUEST, "upgrade: echo expected");
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on_upgrade.await.unwrap());
                let mut buf = [0u8; 64];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => io.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
            let mut resp = respond(StatusCode::SWITCHING_PROTOCOLS, "");
            resp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            resp.headers_mut()
                .insert("upgrade", "echo".parse().unwrap());
            resp
        },
    )
    .await;
    let r = router(vec![route("ws", "ws.test", Http1, &[&b])]).await;

    let tcp = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::get("/chat")
        .header("host", "ws.test")
        .header("connection", "Upgrade")
        .header("upgrade", "echo")
        .body(Full::<Bytes>::default())
        .unwrap();
    let resp = within("101", send.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(resp.headers()["upgrade"], "echo");
    let mut io = TokioIo::new(within("upgrade", hyper::upgrade::on(resp)).await.unwrap());
    for msg in ["ping", "second message"] {
        io.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        within("echo", io.read_exact(&mut buf)).await.unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
}
