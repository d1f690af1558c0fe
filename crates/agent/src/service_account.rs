//! A pod's service-account token: the agent asks the API for a token of the pod's account bound
//! to the pod (as the node), writes `token`, `ca.crt` and `namespace` (0644) into the pod's own
//! directory in its sandbox, and mounts that read-only at Kubernetes' path
//! ([`MOUNT_PATH`]) in every container. A `process` container shares the host's mount namespace
//! view, so it gets the directory's host path in [`ENV_DIR`] instead. Every container also gets
//! `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, naming the API server the agent
//! uses. The token is replaced (written aside, then renamed over) once 80% of its life has
//! passed, so a reader sees the old token or the new one, never a part.

use kumo_api::pod::{EnvVar, NodeDir, Volume, VolumeMount};
use kumo_api::service_account::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, DEFAULT_EXPIRATION_SECONDS,
    DEFAULT_SERVICE_ACCOUNT, ENV_DIR, MOUNT_PATH, TOKEN_REQUEST_API_VERSION,
};
use kumo_api::Pod;
use kumo_client::Client;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// The volume the agent adds for the token directory: not a DNS label, so no volume of the
/// pod's own can have its name.
pub const VOLUME: &str = "kube-api-access.kumo";
/// The files of the token directory.
pub const TOKEN_FILE: &str = "token";
pub const CA_FILE: &str = "ca.crt";
pub const NAMESPACE_FILE: &str = "namespace";

/// Whether the agent gives `pod` its account's token (unless the pod, or its account at the
/// pod's creation, turned that off).
pub fn wants_token(pod: &Pod) -> bool {
    pod.spec.automount_service_account_token != Some(false)
}

/// The account a pod runs as (`default` for pods stored before accounts existed).
pub fn account_of(pod: &Pod) -> &str {
    pod.spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
}

/// The host and port of a server URL (`http://127.0.0.1:7400` → `127.0.0.1`, `7400`), the
/// scheme's port when it names none.
pub fn host_port(server: &str) -> (String, String) {
    let (scheme, rest) = server.split_once("://").unwrap_or(("https", server));
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if scheme == "http" { "80" } else { "443" };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
        let port = after.strip_prefix(':').unwrap_or(default_port);
        return (host.to_string(), port.to_string());
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.to_string()),
        None => (authority.to_string(), default_port.to_string()),
    }
}

/// When a token that lives `lifetime` from now is replaced: after 80% of it.
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.8)
}

/// The pod as it runs: the API server's address in every container and, when it has a token
/// directory `dir`, that mounted read-only at [`MOUNT_PATH`] (or, for a `process` pod, named by
/// [`ENV_DIR`]); what a container set itself is left alone.
pub fn with_token_dir(pod: &Pod, dir: Option<&Path>, (host, port): (&str, &str)) -> Pod {
    let mut pod = pod.clone();
    let process = crate::plan::is_process_pod(&pod);
    if let (false, Some(dir)) = (process, dir) {
        pod.spec.volumes.push(Volume {
            name: VOLUME.to_string(),
            node_dir: Some(NodeDir(dir.to_path_buf())),
            ..Default::default()
        });
    }
    let dir_env = dir.map(|d| d.display().to_string());
    for c in &mut pod.spec.containers {
        if !process && dir.is_some() && !c.volume_mounts.iter().any(|m| m.mount_path == MOUNT_PATH)
        {
            c.volume_mounts.push(VolumeMount {
                name: VOLUME.to_string(),
                mount_path: MOUNT_PATH.to_string(),
                read_only: true,
            });
        }
        let mut vars = vec![
            ("KUBERNETES_SERVICE_HOST", host),
            ("KUBERNETES_SERVICE_PORT", port),
        ];
        if let (true, Some(d)) = (process, &dir_env) {
            vars.push((ENV_DIR, d));
        }
        for (name, value) in vars {
            if !c.env.iter().any(|e| e.name == name) {
                c.env.push(EnvVar {
                    name: name.to_string(),
                    value: value.to_string(),
                });
            }
        }
    }
    pod
}

/// Writes `bytes` to `dir/name` (0644) through a temporary file renamed over it.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    // A umask may have taken bits off; containers of any user must read the files.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Fills `dir` with the token directory's files.
pub fn write_files(dir: &Path, token: &str, ca: &[u8], namespace: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    // The token last: its presence says the directory is complete.
    replace_file(dir, CA_FILE, ca)?;
    replace_file(dir, NAMESPACE_FILE, namespace.as_bytes())?;
    replace_file(dir, TOKEN_FILE, token.as_bytes())
}

/// Whether `dir` holds a token (written by [`write_files`]).
pub fn has_token(dir: &Path) -> bool {
    dir.join(TOKEN_FILE).is_file()
}

/// Gets pods their tokens.
pub struct ServiceAccountTokens {
    client: Client,
    host: String,
    port: String,
    /// The cluster CA the agent trusts the API server with, written as `ca.crt`.
    ca: Vec<u8>,
    /// The lifetime asked for each token.
    lifetime: Duration,
}

impl ServiceAccountTokens {
    /// Tokens through `client`, whose server the containers are told of; `ca` is written as
    /// `ca.crt` (empty when the agent's client config carries no CA).
    pub fn new(client: Client, ca: Vec<u8>) -> Self {
        let (host, port) = host_port(client.server());
        ServiceAccountTokens {
            client,
            host,
            port,
            ca,
            lifetime: Duration::from_secs(DEFAULT_EXPIRATION_SECONDS as u64),
        }
    }

    pub fn server(&self) -> (&str, &str) {
        (&self.host, &self.port)
    }

    /// Asks a token bound to `pod` and writes the directory; returns how long until it should
    /// be replaced. The error says what failed, for the pod's waiting message.
    pub async fn issue(&self, pod: &Pod, dir: &Path) -> Result<Duration, String> {
        let ns = pod.metadata.ns();
        let account = account_of(pod);
        let request = TokenRequest {
            api_version: TOKEN_REQUEST_API_VERSION.to_string(),
            kind: "TokenRequest".to_string(),
            spec: TokenRequestSpec {
                expiration_seconds: Some(self.lifetime.as_secs() as i64),
                bound_object_ref: Some(BoundObjectReference {
                    kind: "Pod".to_string(),
                    api_version: "v1".to_string(),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{account}/token");
        let failed =
            |e: String| format!("cannot get a token of service account {ns}/{account}: {e}");
        let body = serde_json::to_value(&request).map_err(|e| failed(e.to_string()))?;
        let answer: TokenRequest = self
            .client
            .request_json(http::Method::POST, &path, Some(("application/json", &body)))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = answer
            .status
            .ok_or_else(|| failed("the answer holds no token".into()))?;
        write_files(dir, &status.token, &self.ca, ns)
            .map_err(|e| failed(format!("writing {}: {e}", dir.display())))?;
        let left = (status.expiration_timestamp - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        Ok(refresh_after(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::pod::Container;

    fn pod(runtime: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.spec.runtime_class_name = runtime.map(str::to_string);
        p.spec.containers = vec![
            Container {
                name: "a".into(),
                ..Default::default()
            },
            Container {
                name: "b".into(),
                env: vec![EnvVar {
                    name: "KUBERNETES_SERVICE_HOST".into(),
                    value: "mine".into(),
                }],
                volume_mounts: vec![VolumeMount {
                    name: "own".into(),
                    mount_path: MOUNT_PATH.into(),
                    read_only: false,
                }],
                ..Default::default()
            },
        ];
        p
    }

    fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    #[test]
    fn containers_see_the_directory_and_the_server() {
        let dir = Path::new("/sb/u1/serviceaccount");
        let p = with_token_dir(&pod(None), Some(dir), ("10.0.0.1", "7400"));
        assert_eq!(p.spec.volumes.len(), 1);
        assert_eq!(p.spec.volumes[0].node_dir, Some(NodeDir(dir.into())));
        let a = &p.spec.containers[0];
        assert_eq!(
            a.volume_mounts,
            vec![VolumeMount {
                name: VOLUME.into(),
                mount_path: MOUNT_PATH.into(),
                read_only: true
            }]
        );
        assert_eq!(env(a, "KUBERNETES_SERVICE_HOST"), Some("10.0.0.1"));
        assert_eq!(env(a, "KUBERNETES_SERVICE_PORT"), Some("7400"));
        assert_eq!(env(a, ENV_DIR), None);
        // What a container set itself stays.
        let b = &p.spec.containers[1];
        assert_eq!(b.volume_mounts.len(), 1);
        assert_eq!(b.volume_mounts[0].name, "own");
        assert_eq!(env(b, "KUBERNETES_SERVICE_HOST"), Some("mine"));

        let p = with_token_dir(&pod(Some("process")), Some(dir), ("10.0.0.1", "7400"));
        assert!(p.spec.volumes.is_empty());
        let a = &p.spec.containers[0];
        assert!(a.volume_mounts.is_empty());
        assert_eq!(env(a, ENV_DIR), Some("/sb/u1/serviceaccount"));
        assert_eq!(env(a, "KUBERNETES_SERVICE_PORT"), Some("7400"));

        // Without a token (automounting off) the server's address is still there.
        for runtime in [None, Some("process")] {
            let p = with_token_dir(&pod(runtime), None, ("10.0.0.1", "7400"));
            assert!(p.spec.volumes.is_empty());
            let a = &p.spec.containers[0];
            assert!(a.volume_mounts.is_empty());
            assert_eq!(env(a, ENV_DIR), None);
            assert_eq!(env(a, "KUBERNETES_SERVICE_HOST"), Some("10.0.0.1"));
        }
    }

    #[test]
    fn server_addresses() {
        for (url, host, port) in [
            ("http://127.0.0.1:7400", "127.0.0.1", "7400"),
            ("https://api.example:6443/", "api.example", "6443"),
            ("https://api.example", "api.example", "443"),
            ("http://api.example/x", "api.example", "80"),
            ("https://[fd00::1]:7400", "fd00::1", "7400"),
        ] {
            assert_eq!(host_port(url), (host.into(), port.into()), "{url}");
        }
    }

    #[test]
    fn accounts_and_automounting() {
        let mut p = Pod::default();
        assert_eq!(account_of(&p), "default");
        assert!(wants_token(&p));
        p.spec.service_account_name = Some("robot".into());
        p.spec.automount_service_account_token = Some(false);
        assert_eq!(account_of(&p), "robot");
        assert!(!wants_token(&p));
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
    }

    #[test]
    fn files_are_replaced_whole_and_readable() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sa");
        assert!(!has_token(&dir));
        write_files(&dir, "t1", b"", "team-a").unwrap();
        write_files(&dir, "t2", b"CA", "team-a").unwrap();
        assert!(has_token(&dir));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(
            (read(TOKEN_FILE), read(CA_FILE), read(NAMESPACE_FILE)),
            ("t2".into(), "CA".into(), "team-a".into())
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join(TOKEN_FILE)), 0o644);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file is left: {names:?}");
    }
}
