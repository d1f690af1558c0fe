//! A real etcd for tests: Debian's `etcd` binary on free loopback ports in a temporary
//! directory, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
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
    /// `http://127.0.0.1:PORT`, the client URL.
    pub endpoint: String,
    /// etcd's data directory (removed on drop).
    pub dir: tempfile::TempDir,
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
        let binary = std::env::var_os("KUMO_TEST_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(ETCD));
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(&binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("starting {}: {e}", binary.display()))
            })?;
        let mut etcd = TestEtcd {
            child,
            endpoint: client_url,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if healthy(client) {
                return Ok(etcd);
            }
            if let Some(status) = etcd.child.try_wait()? {
                let log =
                    std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default();
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

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}
