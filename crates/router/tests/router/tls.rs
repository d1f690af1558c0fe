//! TLS with a self-signed development certificate and ALPN (h2 and http/1.1).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use kumo_router::BackendProtocol::Http1;
use kumo_router::{RouterConfig, RouterError, TlsSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::*;

async fn connect(h: &Harness, alpn: &[u8]) -> TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = h
        .handle
        .tls_certificate_pem
        .as_deref()
        .expect("a certificate");
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(h.handle.https_addr.unwrap())
        .await
        .unwrap();
    let name = ServerName::try_from("tls.test").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

async fn tls_router(backend: &Backend) -> Harness {
    let config = RouterConfig {
        listen_https: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(TlsSource::SelfSigned {
            names: vec!["tls.test".into()],
        }),
        ..RouterConfig::default()
    };
    router_with(config, vec![route("web", "tls.test", Http1, &[backend])]).await
}

#[tokio::test]
async fn h2_over_tls_with_a_self_signed_certificate() {
    let a = replica(Http1, "a").await;
    let r = tls_router(&a).await;
    let conn = H2::over(TokioIo::new(connect(&r, b"h2").await)).await;
    for _ in 0..3 {
        let reply = conn.get("https", "tls.test", "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "a"));
    }
    assert_eq!(a.seen()[0].headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn http1_over_tls() {
    let a = replica(Http1, "a").await;
    let r = tls_router(&a).await;
    let tls = connect(&r, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "tls.test")
        .body(Full::<Bytes>::default())
        .unwrap();
    let reply = collect(send.send_request(req).await.unwrap()).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "a"));
}

#[tokio::test]
async fn https_without_a_certificate_source_is_refused() {
    let config = RouterConfig {
        listen_https: Some("127.0.0.1:0".parse().unwrap()),
        ..RouterConfig::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(table(vec![]));
    let err = kumo_router::Router::start(config, rx, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, RouterError::MissingTls(_)), "{err}");
}
