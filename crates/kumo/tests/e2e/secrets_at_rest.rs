//! Secrets at rest: the store file holds no Secret value in any readable form, the data dir's
//! files are private, a key rotation keeps every Secret readable, and a bad encryption config
//! stops the server before it writes anything.

use crate::harness::*;
use kumo_api::Secret;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VALUE: &str = "e2e-plain-value-7f3c";
/// base64 of [`VALUE`] without its padding: how `data` holds it.
const VALUE_B64: &str = "ZTJlLXBsYWluLXZhbHVlLTdmM2M";
const KEY1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY2: &str = "HxscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgEAAAE=";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The server's private files and the modes they must have.
fn private_files(data: &Path) -> Vec<(std::path::PathBuf, u32)> {
    vec![
        (data.to_path_buf(), 0o700),
        (data.join("data"), 0o700),
        (data.join("store.redb"), 0o600),
        (data.join("admin.config"), 0o600),
        (data.join("encryption-config.yaml"), 0o600),
    ]
}

fn assert_private(data: &Path) {
    for (path, want) in private_files(data) {
        assert_eq!(mode(&path), want, "mode of {}", path.display());
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The store file's raw bytes (read while kumo is stopped).
fn store_bytes(c: &Cluster) -> Vec<u8> {
    std::fs::read(c.data_dir().join("store.redb")).expect("store file")
}

fn assert_no_plain_value(bytes: &[u8]) {
    assert!(
        !contains(bytes, VALUE),
        "the plain value is in the store file"
    );
    assert!(
        !contains(bytes, VALUE_B64),
        "the value's base64 is in the store file"
    );
}

fn create_secret(c: &Cluster, name: &str) {
    let literal = format!("password={VALUE}");
    let o = c.kumo(&[
        "create",
        "secret",
        "generic",
        name,
        "--from-literal",
        &literal,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

async fn password(c: &Cluster, name: &str) -> String {
    let s: Secret = c.client().get("default", name).await.expect("secret reads");
    s.data.get("password").cloned().unwrap_or_default()
}

fn encryption_config(keys: &[(&str, &str)]) -> String {
    let keys: String = keys
        .iter()
        .map(|(n, s)| format!("      - {{name: {n}, secret: {s}}}\n"))
        .collect();
    format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n{keys}  - identity: {{}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_in_the_store_file_and_data_files_are_private() {
    let mut c = Cluster::up(&[]);
    create_secret(&c, "s1");
    assert_eq!(password(&c, "s1").await, format!("{VALUE_B64}="));
    assert_private(&c.data_dir());
    let config = std::fs::read_to_string(c.data_dir().join("encryption-config.yaml")).unwrap();
    assert!(config.contains("kind: EncryptionConfiguration"), "{config}");

    c.stop();
    let bytes = store_bytes(&c);
    assert!(contains(&bytes, "k8s:enc:aesgcm:v1:key1:"));
    assert_no_plain_value(&bytes);

    // Files left readable (by an older kumo, or by hand) are tightened on the next start.
    for (path, want) in private_files(&c.data_dir()) {
        chmod(&path, want | 0o055);
    }
    c.relaunch();
    assert_private(&c.data_dir());
    assert_eq!(password(&c, "s1").await, format!("{VALUE_B64}="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_secrets_readable() {
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("encryption.yaml");
    std::fs::write(&path, encryption_config(&[("key1", KEY1)])).unwrap();
    let mut c = Cluster::up(&["--encryption-provider-config", path.to_str().unwrap()]);
    create_secret(&c, "s1");
    c.stop();
    let bytes = store_bytes(&c);
    assert!(contains(&bytes, "k8s:enc:aesgcm:v1:key1:"));
    assert!(!contains(&bytes, "k8s:enc:aesgcm:v1:key2:"));
    assert_no_plain_value(&bytes);
    // With a config given, none is made in the data dir.
    assert!(!c.data_dir().join("encryption-config.yaml").exists());

    // The new key first (the old one still reads), then every Secret rewritten with it.
    std::fs::write(&path, encryption_config(&[("key2", KEY2), ("key1", KEY1)])).unwrap();
    c.relaunch();
    assert_eq!(password(&c, "s1").await, format!("{VALUE_B64}="));
    let o = c.kumo(&["secrets", "reencrypt"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "1 secret(s) stored with the current key\n"
    );
    c.stop();
    let bytes = store_bytes(&c);
    assert!(contains(&bytes, "k8s:enc:aesgcm:v1:key2:"));
    assert_no_plain_value(&bytes);

    // The old key removed: the Secret still reads, and new ones are written.
    std::fs::write(&path, encryption_config(&[("key2", KEY2)])).unwrap();
    c.relaunch();
    assert_eq!(password(&c, "s1").await, format!("{VALUE_B64}="));
    create_secret(&c, "s2");
    assert_eq!(password(&c, "s2").await, format!("{VALUE_B64}="));
}

/// Runs `kumo server` with `config` and waits (bounded) for it to exit.
fn server_with_config(data: &Path, config: &Path) -> std::process::Output {
    let child = Command::new(kumo_exe())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--encryption-provider-config")
        .arg(config)
        .env("HOME", data.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kumo server");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    match rx.recv_timeout(deadline - Instant::now()) {
        Ok(out) => out.expect("kumo server output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("kumo server kept running with a bad encryption config");
        }
    }
}

#[test]
fn a_bad_encryption_config_stops_the_server_before_it_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let short = "AAECAwQFBgcICQoLDA0ODw==";
    let cases = [
        (
            "short-key.yaml",
            Some(encryption_config(&[("key1", short)])),
            "resources[0].providers[0].aesgcm.keys[0].secret: must be the base64 of 32 bytes (AES-256), not of 16",
        ),
        (
            "no-secret.yaml",
            Some(encryption_config(&[("key1", KEY1)]).replace(&format!(", secret: {KEY1}"), "")),
            "resources[0].providers[0].aesgcm.keys[0]: missing field `secret`",
        ),
        (
            "missing.yaml",
            None,
            "cannot read the encryption config",
        ),
    ];
    for (file, text, want) in cases {
        let path = tmp.path().join(file);
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        let out = server_with_config(&data, &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: {err}");
        assert!(err.contains(want), "{file}: {err}");
        assert!(
            err.contains("--encryption-provider-config"),
            "{file}: {err}"
        );
        assert!(!data.exists(), "{file}: the data dir was made");
    }
}
