//! TLS everywhere: the CLI verifies the API server through the CA in its config, a wrong CA
//! fails clearly, plain HTTP gets nothing, an agent joins by the CA's hash, and an agent's
//! endpoint takes only the API server's client certificate.

use crate::harness::*;
use kumo_api::Node;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Sends `request` as plain bytes and reads until the server closes: what came back.
async fn plain_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let _ = conn.write_all(request).await;
    let mut got = Vec::new();
    tokio::time::timeout(T, conn.read_to_end(&mut got))
        .await
        .expect("the server closes the connection in time")
        .ok();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_the_server_through_its_config_and_a_wrong_ca_fails_clearly() {
    let c = Cluster::up(&[]);
    assert!(c.url.starts_with("https://127.0.0.1:"), "{}", c.url);
    // The config kumo up wrote carries the CA; it and the keys are the owner's only.
    let config = std::fs::read_to_string(c.config_path()).unwrap();
    assert!(
        config.contains("\"certificate-authority-data\""),
        "{config}"
    );
    assert_eq!(mode(&c.config_path()), 0o600);
    let pki = c.data_dir().join("pki");
    assert_eq!(mode(&pki), 0o700);
    for f in [
        "ca.crt",
        "ca.key",
        "apiserver.key",
        "apiserver-kubelet-client.key",
    ] {
        assert_eq!(mode(&pki.join(f)), 0o600, "{f}");
    }
    let ok = c.kumo(&["get", "nodes"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("node-1"));

    // The same server with another cluster's CA in the config.
    let other = kumo_pki::Ca::generate().unwrap();
    let wrong_path = c.dir.path().join("wrong-config");
    kumo_client::ClientConfig {
        certificate_authority_data: None,
        ..c.client_config()
    }
    .with_ca_pem(other.cert_pem())
    .save(&wrong_path)
    .unwrap();
    let out = Command::new(kumo_exe())
        .args(["get", "pods"])
        .env("KUMO_CONFIG", &wrong_path)
        .env("HOME", c.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        format!(
            "error: cannot verify the server certificate of {}: invalid peer certificate: UnknownIssuer (is certificate-authority-data in {} this cluster's CA?)\n",
            c.url,
            wrong_path.display()
        )
    );
    // Without any CA an https server is not asked at all.
    let no_ca = c.dir.path().join("no-ca-config");
    kumo_client::ClientConfig {
        certificate_authority_data: None,
        ..c.client_config()
    }
    .save(&no_ca)
    .unwrap();
    let out = Command::new(kumo_exe())
        .args(["get", "pods"])
        .env("KUMO_CONFIG", &no_ca)
        .env("HOME", c.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has no certificate-authority-data"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_no_answer_and_the_agent_takes_only_the_api_servers_certificate() {
    let c = Cluster::up(&[]);
    let api = c.url.trim_start_matches("https://").to_string();
    let got = plain_exchange(
        &api,
        format!(
            "GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            c.token
        )
        .as_bytes(),
    )
    .await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    let node: Node = c.client().get("", "node-1").await.unwrap();
    let endpoint = node
        .status
        .unwrap()
        .daemon_endpoints
        .unwrap()
        .agent_endpoint;
    let agent = format!("{}:{}", endpoint.address, endpoint.port);
    // Plain HTTP, even with the admin token, gets nothing from the agent.
    let got = plain_exchange(
        &agent,
        format!(
            "GET /containerLogs/default/x/c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            c.token
        )
        .as_bytes(),
    )
    .await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // Over TLS the agent is the node's (its certificate names node-1 and chains to the
    // cluster CA), but a client without a certificate, token or not, gets no answer.
    for token in [None, Some(c.token.as_str())] {
        let tls = kumo_pki::client_config(&c.ca_pem, None).unwrap();
        let tcp = TcpStream::connect(&agent).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("node-1").unwrap();
        let answer = async {
            let mut conn = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
                .connect(name, tcp)
                .await?;
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            conn.write_all(
                format!("GET /containerLogs/default/x/c HTTP/1.1\r\nHost: x\r\n{auth}\r\n")
                    .as_bytes(),
            )
            .await?;
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await?;
            Ok::<_, std::io::Error>(got)
        };
        let got = tokio::time::timeout(T, answer).await.expect("in time");
        assert!(
            !got.as_ref().is_ok_and(|g| g.starts_with(b"HTTP/")),
            "token {token:?}: {got:?}"
        );
        if let Err(e) = &got {
            // Refused for the missing certificate, not for anything about the server.
            assert!(!e.to_string().contains("invalid peer certificate"), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_by_the_ca_hash_and_a_wrong_hash_is_refused() {
    let cp = Cluster::start_with(vec!["server".into()]);
    let hash = kumo_pki::ca_cert_hash(&cp.ca_pem).unwrap();
    // `kumo server` says where the CA is and what its hash is.
    assert!(
        cp.banner.contains(&format!(
            "kumo: cluster CA in {} ({hash})",
            cp.ca_file().display()
        )),
        "{:?}",
        cp.banner
    );
    let agent = |node: &str, hash: &str| {
        let dir = cp.dir.path().join(node);
        Command::new(kumo_exe())
            .args(["agent", "--server", &cp.url, "--node-name", node])
            .args(["--ca-cert-hash", hash, "--listen", "127.0.0.1:0"])
            .args(["--heartbeat-interval", "500ms"])
            .args(["--data-dir", dir.to_str().unwrap()])
            .env("KUMO_TOKEN", &cp.token)
            .env("HOME", cp.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Another CA's hash: the agent stops at once and says why.
    let other = kumo_pki::ca_cert_hash(kumo_pki::Ca::generate().unwrap().cert_pem()).unwrap();
    let out = agent("n-wrong", &other).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "cannot trust {} by --ca-cert-hash {other}",
            cp.url
        )),
        "{}",
        stderr(&out)
    );
    // Another CA's certificate as --ca-file: refused when the agent first asks the server.
    let other_ca = cp.write("other-ca.crt", kumo_pki::Ca::generate().unwrap().cert_pem());
    let out = Command::new(kumo_exe())
        .args(["agent", "--server", &cp.url, "--node-name", "n-file"])
        .args([
            "--ca-file",
            other_ca.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--data-dir", cp.dir.path().join("n-file").to_str().unwrap()])
        .env("KUMO_TOKEN", &cp.token)
        .env("HOME", cp.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "cannot verify the server certificate of {}: invalid peer certificate: UnknownIssuer (is the CA of --ca-file, --ca-cert-hash or",
            cp.url
        )),
        "{}",
        stderr(&out)
    );
    let mut joined = agent("n-hash", &hash);
    let client = cp.client();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let node: Option<Node> = client.get_opt("", "n-hash").await.unwrap();
        if node.is_some() {
            break;
        }
        if let Some(status) = joined.try_wait().unwrap() {
            panic!("the agent stopped: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never joined"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It keeps the CA it found, the owner's only.
    let kept = cp.dir.path().join("n-hash").join("ca.crt");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), cp.ca_pem);
    assert_eq!(mode(&kept), 0o600);
    joined.kill().unwrap();
    joined.wait().unwrap();
}
