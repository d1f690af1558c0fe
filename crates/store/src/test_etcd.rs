//! A real etcd for tests: Debian's `etcd` binary on free loopback ports in a temporary
//! directory, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where tests find etcd; `KUMO_TEST_ETCD` overrides it.
const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One single-member etcd, alive until dropped.
#[derive(Debug)]
pub struct TestEtcd {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` with TLS), the client URL.
    pub endpoint: String,
    /// etcd's data directory (removed on drop).
    pub dir: tempfile::TempDir,
    ports: Ports,
    tls: Option<TlsFiles>,
}

/// etcd's serving certificate and the CA its clients must present certificates from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

/// Client, peer and metrics (plain HTTP `/health`, also with TLS) ports, kept for a restart.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    peer: u16,
    metrics: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when etcd answers `/health` with a healthy body.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl TestEtcd {
    /// Starts etcd and waits (bounded) until it is healthy.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(None)
    }

    /// Starts etcd serving its clients over TLS, requiring client certificates.
    pub fn start_tls(tls: TlsFiles) -> std::io::Result<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<TlsFiles>) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = Ports {
            client: free_port()?,
            peer: free_port()?,
            metrics: free_port()?,
        };
        let child = spawn(dir.path(), ports, tls.as_ref())?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut etcd = TestEtcd {
            child,
            endpoint: format!("{scheme}://127.0.0.1:{}", ports.client),
            dir,
            ports,
            tls,
        };
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    /// Starts the killed etcd again on the same ports and data, and waits until it is healthy.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        self.child = spawn(self.dir.path(), self.ports, self.tls.as_ref())?;
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if healthy(self.ports.metrics) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "etcd exited ({status}): {log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd not healthy within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd now (as a crash would), keeping its data directory.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, ports: Ports, tls: Option<&TlsFiles>) -> std::io::Result<Child> {
    let binary = std::env::var_os("KUMO_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ETCD));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client_url = format!("{scheme}://127.0.0.1:{}", ports.client);
    let peer_url = format!("http://127.0.0.1:{}", ports.peer);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("etcd.log"))?;
    let mut command = Command::new(&binary);
    command
        .arg("--name=test")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=test={peer_url}"))
        .arg(format!(
            "--listen-metrics-urls=http://127.0.0.1:{}",
            ports.metrics
        ))
        .arg("--initial-cluster-state=new")
        .arg("--log-level=warn");
    if let Some(tls) = tls {
        command
            .arg(format!("--cert-file={}", tls.cert.display()))
            .arg(format!("--key-file={}", tls.key.display()))
            .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
            .arg("--client-cert-auth");
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("starting {}: {e}", binary.display())))
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}
