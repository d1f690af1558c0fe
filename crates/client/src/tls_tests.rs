//! The client against a TLS server: it trusts only the configured CA, verifies the name it
//! is told, and says clearly when the certificate is not the cluster's.

use crate::{Client, ClientConfig, ClientError};
use http::Method;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HOUR: Duration = Duration::from_secs(3600);

/// A server answering every request on every connection with `{"ok":true}` over TLS with a
/// certificate for `names` from `ca`, requiring a client certificate of `client_ca` when given.
async fn server(ca: &kumo_pki::Ca, names: &[&str], client_ca: Option<&str>) -> String {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = ca.issue_server(&names, HOUR).unwrap();
    let config = kumo_pki::server_config(&leaf.cert_pem, &leaf.key_pem, client_ca).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                    let body = r#"{"ok":true}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("https://{addr}")
}

async fn ask(client: &Client) -> Result<Value, ClientError> {
    client.request_json(Method::GET, "/x", None).await
}

fn config(server: &str, ca: Option<&kumo_pki::Ca>) -> ClientConfig {
    let config = ClientConfig {
        server: server.to_string(),
        token: "t".into(),
        ..Default::default()
    };
    match ca {
        Some(ca) => config.with_ca_pem(ca.cert_pem()),
        None => config,
    }
}

#[tokio::test]
async fn the_client_trusts_only_the_configured_ca() {
    let ca = kumo_pki::Ca::generate().unwrap();
    let other = kumo_pki::Ca::generate().unwrap();
    let url = server(&ca, &["127.0.0.1"], None).await;

    let good = Client::new(&config(&url, Some(&ca))).unwrap();
    assert_eq!(ask(&good).await.unwrap(), serde_json::json!({"ok": true}));

    let wrong = Client::new(&config(&url, Some(&other))).unwrap();
    let err = ask(&wrong).await.unwrap_err();
    assert!(matches!(err, ClientError::Verify { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot verify the server certificate of {url}: invalid peer certificate: UnknownIssuer (is certificate-authority-data in "
        )) && message.ends_with(" this cluster's CA?)"),
        "{message}"
    );

    // https without a CA, a CA that is not base64 or not a certificate: refused up front.
    for (bad, expected) in [
        (config(&url, None), "has no certificate-authority-data"),
        (
            ClientConfig {
                certificate_authority_data: Some("%%%".into()),
                ..config(&url, None)
            },
            "certificate-authority-data is not base64",
        ),
        (
            config(&url, None).with_ca_pem("not a certificate"),
            "certificate-authority-data: ",
        ),
        (config("ftp://x", None), "must be an https:// URL"),
    ] {
        let err = Client::new(&bad).err().expect("refused");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[tokio::test]
async fn a_fixed_server_name_and_a_client_identity() {
    let ca = kumo_pki::Ca::generate().unwrap();
    // The agent's way: a certificate for the node's name only, client certificates required.
    let url = server(&ca, &["node-a"], Some(ca.cert_pem())).await;
    let ident = ca
        .issue_client("kumo-apiserver", &["system:masters"], HOUR)
        .unwrap();
    let with_identity = |name: Option<&str>| {
        let tls = kumo_pki::client_config(ca.cert_pem(), Some((&ident.cert_pem, &ident.key_pem)))
            .unwrap();
        Client::with_tls(&url, "", Some(tls), name.map(str::to_string)).unwrap()
    };
    assert!(ask(&with_identity(Some("node-a"))).await.is_ok());
    // By the URL's host the name does not match; as another node it does not either.
    for name in [None, Some("node-b")] {
        let err = ask(&with_identity(name)).await.unwrap_err();
        assert!(
            err.to_string().contains("certificate not valid for name"),
            "{name:?}: {err}"
        );
    }
    // Without a client certificate the server ends the handshake.
    let anonymous = Client::with_tls(
        &url,
        "",
        Some(kumo_pki::client_config(ca.cert_pem(), None).unwrap()),
        Some("node-a".into()),
    )
    .unwrap();
    assert!(ask(&anonymous).await.is_err());
}
