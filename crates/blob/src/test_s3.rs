//! A real S3-compatible server for tests: moto's `moto_server` (PyPI `moto[server]`, installed
//! by scripts/test.sh) on a free loopback port in a temporary directory, killed when dropped.

use crate::url::{Credentials, S3Url};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to answer (it is a Python program: a second or two).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One moto server with one bucket, alive until dropped.
#[derive(Debug)]
pub struct TestS3 {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub dir: tempfile::TempDir,
}

/// One HTTP/1.0 request to moto; the status code, or `None` when it does not answer.
fn request(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut head = String::new();
    let _ = stream.read_to_string(&mut head);
    head.split_whitespace().nth(1)?.parse().ok()
}

impl TestS3 {
    /// Starts moto (`KUMO_TEST_MOTO` overrides the `moto_server` command), waits (bounded)
    /// until it answers, and makes the bucket `kumo-test`.
    pub fn start() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let program = std::env::var("KUMO_TEST_MOTO").unwrap_or_else(|_| "moto_server".into());
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::other(format!(
                    "starting {program} (pip install 'moto[server]'): {e}"
                ))
            })?;
        let mut s3 = TestS3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "kumo-test".into(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while request(port, "GET", "/").is_none() {
            if let Some(status) = s3.child.try_wait()? {
                let log =
                    std::fs::read_to_string(s3.dir.path().join("moto.log")).unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "moto exited ({status}): {log}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "moto not answering within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match request(port, "PUT", &format!("/{}", s3.bucket)) {
            Some(200) => Ok(s3),
            other => Err(std::io::Error::other(format!(
                "moto: creating the bucket answered {other:?}"
            ))),
        }
    }

    /// The bucket under `prefix` as a parsed URL.
    pub fn url(&self, prefix: &str) -> S3Url {
        S3Url {
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
        }
    }

    /// The `--blob-store` value for the bucket under `prefix`.
    pub fn flag(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region=us-east-1",
            self.bucket, self.endpoint
        )
    }

    /// Any key does: moto checks none.
    pub fn credentials() -> Credentials {
        Credentials {
            access_key_id: "kumo-test".into(),
            secret_access_key: "kumo-test-secret".into(),
            session_token: None,
        }
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
