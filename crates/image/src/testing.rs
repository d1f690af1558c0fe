//! Test helpers for this crate, the agent and end-to-end tests: a busybox OCI image built from
//! `/bin/busybox`, a `docker-registry` on loopback to push it to, and a mount guard.
//!
//! Needs the system packages `busybox-static`, `docker-registry` and `skopeo`.

use crate::store::ImageStore;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Digests of the image written by [`write_busybox_layout`].
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Manifest digest (what the store calls the image's digest).
    pub manifest: String,
    pub config: String,
    /// Compressed layer digests, bottom first: a gzip busybox layer, then an uncompressed layer
    /// that whites out `/etc/group`, makes `/var/empty` opaque and adds `/etc/motd`.
    pub layers: Vec<String>,
}

/// Files in the base layer besides `/bin/busybox`: links `/bin/<applet>` → `busybox`.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "hostname", "id", "env", "ps", "mount",
    "wget", "nc", "ip", "kill", "test", "head", "grep",
];

/// Writes an OCI image layout at `dir` holding one busybox image tagged `tag`, with config
/// `Cmd ["/bin/sh"]`, `Env ["PATH=/bin", "KUMO_TEST=1"]`, `WorkingDir "/tmp"`.
pub fn write_busybox_layout(dir: &Path, tag: &str) -> io::Result<TestImage> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> io::Result<(String, usize)> {
        let d = crate::Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes)?;
        Ok((d.to_string(), bytes.len()))
    };

    // Layer 1: busybox, gzip.
    let busybox = std::fs::read("/bin/busybox")?;
    let mut b = tar::Builder::new(Vec::new());
    for d in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "root",
        "var",
        "var/empty",
    ] {
        append(&mut b, d, tar::EntryType::Directory, 0o755, &[], None)?;
    }
    append(
        &mut b,
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &busybox,
        None,
    )?;
    for a in APPLETS {
        append(
            &mut b,
            &format!("bin/{a}"),
            tar::EntryType::Symlink,
            0o777,
            &[],
            Some("busybox"),
        )?;
    }
    append(
        &mut b,
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        None,
    )?;
    append(
        &mut b,
        "etc/group",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:\nnobody:x:65534:\n",
        None,
    )?;
    append(
        &mut b,
        "var/empty/lower-only",
        tar::EntryType::Regular,
        0o644,
        b"hidden\n",
        None,
    )?;
    let tar1 = b.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar1)?;
    let gz1 = gz.finish()?;

    // Layer 2: whiteouts, uncompressed.
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "etc", tar::EntryType::Directory, 0o755, &[], None)?;
    append(
        &mut b,
        "etc/.wh.group",
        tar::EntryType::Regular,
        0o644,
        &[],
        None,
    )?;
    append(
        &mut b,
        "etc/motd",
        tar::EntryType::Regular,
        0o644,
        b"hello from kumo\n",
        None,
    )?;
    append(
        &mut b,
        "var/empty/.wh..wh..opq",
        tar::EntryType::Regular,
        0o644,
        &[],
        None,
    )?;
    let tar2 = b.into_inner()?;

    let (l1, s1) = put(&gz1)?;
    let (l2, s2) = put(&tar2)?;
    let diff1 = crate::Digest::of(&tar1).to_string();
    let diff2 = crate::Digest::of(&tar2).to_string();
    let config = serde_json::json!({
        "architecture": crate::manifest::host_platform().1,
        "os": "linux",
        "config": {
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/bin", "KUMO_TEST=1"],
            "WorkingDir": "/tmp"
        },
        "rootfs": { "type": "layers", "diff_ids": [diff1, diff2] }
    });
    let (c, cs) = put(&serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::OCI_MANIFEST,
        "config": { "mediaType": crate::manifest::OCI_CONFIG, "digest": c, "size": cs },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l1, "size": s1 },
            { "mediaType": crate::manifest::OCI_LAYER_TAR, "digest": l2, "size": s2 }
        ]
    });
    let (m, ms) = put(&serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": crate::manifest::OCI_MANIFEST, "digest": m, "size": ms,
            "annotations": { "org.opencontainers.image.ref.name": tag }
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(TestImage {
        manifest: m,
        config: c,
        layers: vec![l1, l2],
    })
}

/// Writes an OCI layout at `dir` with one tiny image tagged `tag`: a single uncompressed layer
/// holding `/hello` with `content` (distinct contents make distinct images, e.g. for GC tests).
pub fn write_tiny_layout(dir: &Path, tag: &str, content: &str) -> io::Result<TestImage> {
    let mut b = tar::Builder::new(Vec::new());
    append(
        &mut b,
        "hello",
        tar::EntryType::Regular,
        0o644,
        content.as_bytes(),
        None,
    )?;
    write_layout_with_layer(dir, tag, &b.into_inner()?)
}

/// Writes an OCI layout at `dir` with one image tagged `tag` whose only layer is `layer` (an
/// uncompressed tar), e.g. a hostile one made by a test.
pub fn write_layout_with_layer(dir: &Path, tag: &str, layer: &[u8]) -> io::Result<TestImage> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> io::Result<(String, usize)> {
        let d = crate::Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes)?;
        Ok((d.to_string(), bytes.len()))
    };
    let (l, ls) = put(layer)?;
    let config = serde_json::json!({
        "architecture": crate::manifest::host_platform().1, "os": "linux",
        "config": { "Cmd": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [l] }
    });
    let (c, cs) = put(&serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": crate::manifest::OCI_MANIFEST,
        "config": { "mediaType": crate::manifest::OCI_CONFIG, "digest": c, "size": cs },
        "layers": [{ "mediaType": crate::manifest::OCI_LAYER_TAR, "digest": l, "size": ls }]
    });
    let (m, ms) = put(&serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": crate::manifest::OCI_MANIFEST, "digest": m, "size": ms,
        "annotations": { "org.opencontainers.image.ref.name": tag } }] });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(TestImage {
        manifest: m,
        config: c,
        layers: vec![l],
    })
}

fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&str>,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    match link {
        Some(target) => b.append_link(&mut h, path, target),
        None => b.append_data(&mut h, path, data),
    }
}

/// Copies an image with skopeo (`src` and `dest` in skopeo's transport syntax), keeping its
/// digests except into a docker archive (which stores layers uncompressed).
pub fn skopeo_copy(src: &str, dest: &str) -> io::Result<()> {
    skopeo_copy_as(src, dest, None)
}

/// [`skopeo_copy`] with `user:password` for the destination registry.
pub fn skopeo_copy_as(src: &str, dest: &str, dest_creds: Option<&str>) -> io::Result<()> {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    if let Some(creds) = dest_creds {
        cmd.arg(format!("--dest-creds={creds}"));
    }
    if !dest.starts_with("docker-archive:") {
        cmd.arg("--preserve-digests");
    }
    let out = cmd.arg(src).arg(dest).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes an OCI archive (a tar of the layout) of `layout`'s image `tag` to `out`.
pub fn oci_archive(layout: &Path, tag: &str, out: &Path) -> io::Result<()> {
    skopeo_copy(
        &format!("oci:{}:{tag}", layout.display()),
        &format!("oci-archive:{}:{tag}", out.display()),
    )
}

/// The user of [`Registry::start_with_auth`].
pub const AUTH_USER: &str = "kumo";
/// Its password.
pub const AUTH_PASSWORD: &str = "kumo-test-pw";
/// `AUTH_USER:AUTH_PASSWORD` as an htpasswd line (bcrypt, cost 5).
const AUTH_HTPASSWD: &str = "kumo:$2b$05$vadlLU8eC09mxQVXLgWSt.3n0TrqZBQxHElkVLNsP8mq3HtXsaEpG";

/// A `docker-registry` serving plain HTTP on a free loopback port, storing into a temp dir;
/// killed when dropped.
pub struct Registry {
    child: Child,
    /// Whether it asks for [`AUTH_USER`] and [`AUTH_PASSWORD`] (basic auth).
    auth: bool,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`.
    pub fn start() -> io::Result<Registry> {
        Self::start_inner(false)
    }

    /// Starts a registry that wants basic auth as [`AUTH_USER`] / [`AUTH_PASSWORD`].
    pub fn start_with_auth() -> io::Result<Registry> {
        Self::start_inner(true)
    }

    fn start_inner(auth: bool) -> io::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{}",
                dir.path().join("storage").display(),
                if auth {
                    format!(
                        "auth:\n  htpasswd:\n    realm: kumo-test\n    path: {}\n",
                        dir.path().join("htpasswd").display()
                    )
                } else {
                    String::new()
                }
            ),
        )?;
        std::fs::write(dir.path().join("htpasswd"), format!("{AUTH_HTPASSWD}\n"))?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut registry = Registry {
            child,
            auth,
            addr,
            dir,
        };
        registry.wait_ready(Duration::from_secs(30))?;
        Ok(registry)
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "docker-registry exited with {status}: {}",
                    self.log()
                )));
            }
            if self.answers_v2() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "docker-registry did not answer on {} within {limit:?}: {}",
                    self.addr,
                    self.log()
                )));
            }
            // Polling a readiness condition with a deadline, not waiting for a fixed time.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_v2(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        let mut answer = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.")
            && answer.contains(if self.auth { " 401 " } else { " 200 " })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/<name>`, e.g. `reference("test:1")`.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// Pushes image `tag` of an OCI layout as `name` (`repo:tag`); returns its reference.
    pub fn push_layout(&self, layout: &Path, tag: &str, name: &str) -> io::Result<String> {
        let reference = self.reference(name);
        let creds = format!("{AUTH_USER}:{AUTH_PASSWORD}");
        skopeo_copy_as(
            &format!("oci:{}:{tag}", layout.display()),
            &format!("docker://{reference}"),
            self.auth.then_some(creds.as_str()),
        )?;
        Ok(reference)
    }

    /// Builds the busybox image ([`write_busybox_layout`]) and pushes it as `name`
    /// (`repo:tag`); returns its reference and digests.
    pub fn push_busybox(&self, name: &str) -> io::Result<(String, TestImage)> {
        let layout = tempfile::tempdir()?;
        let image = write_busybox_layout(layout.path(), "latest")?;
        let reference = self.push_layout(layout.path(), "latest", name)?;
        Ok((reference, image))
    }

    /// Where the registry keeps a blob's bytes (to corrupt it in a test).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unmounts a container rootfs when dropped, so a failing test leaves no mount behind.
pub struct MountGuard {
    store: ImageStore,
    container_dir: PathBuf,
}

impl MountGuard {
    pub fn new(store: &ImageStore, container_dir: &Path) -> MountGuard {
        MountGuard {
            store: store.clone(),
            container_dir: container_dir.to_path_buf(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.store.unmount_rootfs(&self.container_dir) {
            eprintln!("warning: {}", e.full_message());
        }
    }
}
