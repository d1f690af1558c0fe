//! A real etcd for tests: Debian's `etcd` binary on free loopback ports in a temporary
//! directory, killed when dropped; one member ([`TestEtcd`]) or a cluster of several
//! ([`TestEtcdCluster`]) whose members can be killed, stopped and restarted one by one.

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

/// Runs `start` again, on fresh ports, while etcd finds one of its ports taken: a port free when
/// picked may be taken before etcd binds it (by another test's listener, or as the local port of
/// any outgoing connection, which comes from the same range). Bounded: five tries.
fn on_fresh_ports<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let mut tries = 1;
    loop {
        match start() {
            Err(e) if tries < 5 && e.to_string().contains("address already in use") => tries += 1,
            other => return other,
        }
    }
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
        on_fresh_ports(|| Self::start_once(tls.clone()))
    }

    fn start_once(tls: Option<TlsFiles>) -> std::io::Result<Self> {
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

/// Who a member is within its cluster: its name and `--initial-cluster`.
struct Membership<'a> {
    name: &'a str,
    initial_cluster: &'a str,
}

fn spawn(dir: &Path, ports: Ports, tls: Option<&TlsFiles>) -> std::io::Result<Child> {
    let initial_cluster = format!("test=http://127.0.0.1:{}", ports.peer);
    let member = Membership {
        name: "test",
        initial_cluster: &initial_cluster,
    };
    spawn_member(dir, ports, tls, &member)
}

fn spawn_member(
    dir: &Path,
    ports: Ports,
    tls: Option<&TlsFiles>,
    member: &Membership,
) -> std::io::Result<Child> {
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
        .arg(format!("--name={}", member.name))
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster={}", member.initial_cluster))
        .arg("--initial-cluster-token=kumo-test")
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

/// One member of a [`TestEtcdCluster`].
#[derive(Debug)]
struct Member {
    name: String,
    /// `None` while killed or stopped.
    child: Option<Child>,
    ports: Ports,
    dir: PathBuf,
}

/// A cluster of etcd members on loopback, each on its own free ports and data directory; every
/// member is killed when the cluster is dropped.
#[derive(Debug)]
pub struct TestEtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    /// Holds every member's data directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl TestEtcdCluster {
    /// Starts `size` members and waits (bounded) until each is healthy.
    pub fn start(size: usize) -> std::io::Result<Self> {
        on_fresh_ports(|| Self::start_once(size))
    }

    fn start_once(size: usize) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let member_dir = dir.path().join(format!("m{i}"));
            std::fs::create_dir_all(&member_dir)?;
            members.push(Member {
                name: format!("m{i}"),
                child: None,
                ports: Ports {
                    client: free_port()?,
                    peer: free_port()?,
                    metrics: free_port()?,
                },
                dir: member_dir,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.ports.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestEtcdCluster {
            members,
            initial_cluster,
            dir,
        };
        // Every member first: none is healthy before a quorum has started.
        for i in 0..size {
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].ports.client)
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `etcd://HOST:PORT,HOST:PORT,…` for `kumo server --store`.
    pub fn store_url(&self) -> String {
        let hosts: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_string())
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let m = &self.members[i];
        let membership = Membership {
            name: &m.name,
            initial_cluster: &self.initial_cluster,
        };
        let child = spawn_member(&m.dir, m.ports, None, &membership)?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Whether member `i` answers `/health` with a healthy body now.
    pub fn healthy(&self, i: usize) -> bool {
        healthy(self.members[i].ports.metrics)
    }

    fn wait_healthy(&mut self, i: usize) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.healthy(i) {
                return Ok(());
            }
            let m = &mut self.members[i];
            if let Some(child) = m.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(m.dir.join("etcd.log")).unwrap_or_default();
                    return Err(std::io::Error::other(format!(
                        "etcd member {} exited ({status}): {log}",
                        m.name
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd member {} not healthy within {START_TIMEOUT:?}",
                    m.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills member `i` with SIGKILL (a crash), keeping its data.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops member `i` with SIGTERM (a clean shutdown), waiting for it; killed when it has not
    /// stopped within 20 s.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.members[i].child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts member `i` again on its ports and data, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(i)
    }
}

impl Drop for TestEtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
