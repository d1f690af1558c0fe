//! Managed tokens through the CLI and the real server: create/ls/revoke, revocation and expiry
//! within a second, join tokens used once, and `kumo agent --join` keeping a credential of its
//! own (0600, no join token in it) that it rotates.

use crate::harness::*;
use http::Method;
use kumo_client::{Client, ClientConfig};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

fn server(extra: &[&str]) -> Cluster {
    let mut args = vec!["server".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Cluster::start_with(args)
}

fn text(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The secret `kumo token create` printed (the indented line after the first).
fn printed_secret(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("  ").filter(|s| !s.contains(' ')))
        .unwrap_or_else(|| panic!("no secret in {out:?}"))
        .to_string()
}

fn client(c: &Cluster, token: &str) -> Client {
    Client::new(&ClientConfig {
        token: token.to_string(),
        ..c.client_config()
    })
    .unwrap()
}

/// Polls until `token` is refused with a 401 saying `message`, for at most `within`.
async fn refused_within(c: &Cluster, token: &str, message: &str, within: Duration) {
    let user = client(c, token);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match user
            .list::<kumo_api::Namespace>(None, &Default::default())
            .await
        {
            Err(e) if e.code() == Some(401) && e.to_string().contains(message) => return,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "not refused with {message:?} within {within:?}: {:?}",
                other.map(|l| l.items.len())
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The token authenticates: its user may ask what it may do (a SelfSubjectAccessReview, which
/// every authenticated user may; RBAC grants a new user nothing else).
async fn works(c: &Cluster, token: &str) {
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "list", "resource": "namespaces"}},
    });
    client(c, token)
        .request_json::<serde_json::Value>(
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(("application/json", &review)),
        )
        .await
        .expect("the token is accepted");
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_and_revoked_within_a_second() {
    let c = server(&[]);
    // `kumo server` writes the admin's client config, private, and says where.
    let admin = c.data_dir().join("admin.config");
    assert_eq!(mode(&admin), 0o600);
    assert!(
        c.banner.is_empty() || !c.banner.iter().any(|l| l.contains(&c.token)),
        "{:?}",
        c.banner
    );
    assert!(!c.data_dir().join("tokens").exists());

    let out = text(&c.kumo(&[
        "token",
        "create",
        "alice",
        "--user",
        "alice",
        "--groups",
        "ml-team,ops",
    ]));
    let secret = printed_secret(&out);
    assert_eq!(secret.len(), 64, "{out}");
    works(&c, &secret).await;
    let ls = text(&c.kumo(&["token", "ls"]));
    let row = ls
        .lines()
        .find(|l| l.starts_with("alice "))
        .unwrap_or_else(|| panic!("{ls}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["alice", "alice", "ml-team,ops", "login", "never"],
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("admin ") && l.contains("system:masters")),
        "{ls}"
    );
    assert!(!ls.contains(&secret) && !ls.contains(&c.token));
    // Nor does any read of the API show it.
    let raw = text(&c.kumo(&["get", "tokens", "alice", "-o", "json"]));
    assert!(raw.contains("tokenHash") && !raw.contains(&secret), "{raw}");

    let out = text(&c.kumo(&["token", "revoke", "alice"]));
    assert_eq!(out, "token alice revoked\n");
    refused_within(&c, &secret, "invalid bearer token", Duration::from_secs(1)).await;
    let bad = c.kumo(&["token", "create", "x", "--user", "bad user"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("spec.user: Invalid value"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_ttl_works_then_is_expired() {
    let c = server(&[]);
    let out = text(&c.kumo(&["token", "create", "brief", "--user", "bob", "--ttl", "2s"]));
    let secret = printed_secret(&out);
    works(&c, &secret).await;
    refused_within(&c, &secret, "token expired", Duration::from_secs(4)).await;
    let ls = text(&c.kumo(&["token", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("brief ") && l.contains("expired")),
        "{ls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_works_once_and_not_after_it_expired() {
    let c = server(&[]);
    let out = text(&c.kumo(&["token", "create", "j1", "--join", "--ttl", "1h"]));
    let want = format!("  kumo agent --server {} --join ", c.url);
    assert!(out.lines().any(|l| l.starts_with(&want)), "{out}");
    let secret = c.join_token();
    let join = client(&c, &secret);
    let cred: kumo_api::Token = join
        .request_json(Method::POST, "/api/v1/nodes/n1/credential", None)
        .await
        .expect("the first use");
    assert_eq!(cred.spec.user, "system:node:n1");
    let again = join
        .request_json::<kumo_api::Token>(Method::POST, "/api/v1/nodes/n2/credential", None)
        .await
        .unwrap_err();
    assert!(
        matches!(again.code(), Some(401 | 403)) && again.to_string().contains("used"),
        "{again}"
    );

    let out = text(&c.kumo(&["token", "create", "j2", "--join", "--ttl", "1s"]));
    let line = out.lines().find(|l| l.starts_with(&want)).unwrap();
    let short = line
        .split_whitespace()
        .skip_while(|w| *w != "--join")
        .nth(1)
        .unwrap()
        .to_string();
    assert!(line.contains(" --ca-cert-hash sha256:"), "{line}");
    refused_within(&c, &short, "token expired", Duration::from_secs(3)).await;
    let late = client(&c, &short)
        .request_json::<kumo_api::Token>(Method::POST, "/api/v1/nodes/n3/credential", None)
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some(401), "{late}");
    assert!(client(&c, &c.token)
        .get_opt::<kumo_api::Node>("", "n3")
        .await
        .unwrap()
        .is_none());
}

/// `kumo agent --join` as a separate process.
fn join_agent(c: &Cluster, dir: &std::path::Path, join: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(kumo_exe());
    cmd.args(["agent", "--server", &c.url, "--node-name", "n1"])
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"])
        .args(["--no-pod-network", "--data-dir", dir.to_str().unwrap()])
        .args(["--ca-file", c.ca_file().to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env_remove("KUMO_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(j) = join {
        cmd.args(["--join", j]);
    }
    cmd.spawn().expect("spawn kumo agent")
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn saved(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("node-credential.json")).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_keeps_its_own_credential_and_rotates_it() {
    // Credentials live 6 s: the agent rotates at 4 s.
    let c = server(&["--node-credential-ttl", "6s"]);
    let admin = c.client();
    let dir = c.dir.path().join("agent-n1");
    let join = c.join_token();
    let agent = Killed(join_agent(&c, &dir, Some(&join)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while admin
        .get_opt::<kumo_api::Node>("", "n1")
        .await
        .unwrap()
        .is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "n1 never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let file = dir.join("node-credential.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&join), "the join token is not kept: {text}");
    let first = saved(&dir);
    works(&c, first["token"].as_str().unwrap()).await;

    // Two thirds into its life the agent swaps in a new credential, and goes on heartbeating
    // past the old one's expiry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while saved(&dir)["name"] == first["name"] {
        assert!(tokio::time::Instant::now() < deadline, "never rotated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_expiry: kumo_api::Time = serde_json::from_value(first["expires"].clone()).unwrap();
    let beat_after = |node: &kumo_api::Node, t: kumo_api::Time| {
        node.status
            .as_ref()
            .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"))
            .and_then(|c| c.last_heartbeat_time)
            .is_some_and(|b| b > t)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let node: kumo_api::Node = admin.get("", "n1").await.unwrap();
        if beat_after(&node, old_expiry + chrono::Duration::seconds(1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat after rotation: {:?}",
            node.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Restarted without a join token, it goes on with the saved credential.
    drop(agent);
    let restarted = chrono::Utc::now();
    let _agent = Killed(join_agent(&c, &dir, None));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let node: kumo_api::Node = admin.get("", "n1").await.unwrap();
        if beat_after(&node, restarted + chrono::Duration::seconds(1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat after restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While n1 holds a credential, no join token can make another agent n1.
    let other = c.dir.path().join("agent-n1-impostor");
    let out = Command::new(kumo_exe())
        .args(["agent", "--server", &c.url, "--node-name", "n1"])
        .args(["--join", &c.join_token(), "--listen", "127.0.0.1:0"])
        .args(["--data-dir", other.to_str().unwrap()])
        .args(["--ca-file", c.ca_file().to_str().unwrap()])
        .env_remove("KUMO_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already has a credential"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its credentials revoked (the current one and the one it rotated away from), the node is
    // refused; a new join token joins it again.
    drop(_agent);
    let name = saved(&dir)["name"].as_str().unwrap().to_string();
    let tokens = admin
        .list::<kumo_api::Token>(None, &Default::default())
        .await
        .unwrap();
    for t in tokens
        .items
        .iter()
        .filter(|t| t.spec.user == "system:node:n1")
    {
        admin
            .delete::<kumo_api::Token>("", &t.metadata.name, None)
            .await
            .unwrap();
    }
    assert!(tokens.items.iter().any(|t| t.metadata.name == name));
    refused_within(
        &c,
        saved(&dir)["token"].as_str().unwrap(),
        "invalid bearer token",
        Duration::from_secs(1),
    )
    .await;
    let out = Command::new(kumo_exe())
        .args(["agent", "--server", &c.url, "--node-name", "n1"])
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("KUMO_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not accepted (join again with --join)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejoined = chrono::Utc::now();
    let _agent = Killed(join_agent(&c, &dir, Some(&c.join_token())));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let node: kumo_api::Node = admin.get("", "n1").await.unwrap();
        if beat_after(&node, rejoined + chrono::Duration::seconds(1)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat after joining again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(saved(&dir)["name"].as_str(), Some(name.as_str()));

    // The join token was single-use: a second node cannot join with it.
    let other = c.dir.path().join("agent-n2");
    let out = Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &c.url,
            "--node-name",
            "n2",
            "--join",
            &join,
        ])
        .args([
            "--data-dir",
            other.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--ca-file",
            c.ca_file().to_str().unwrap(),
        ])
        .env_remove("KUMO_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("used up"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kumo_up_writes_the_admin_config_runs_its_agent_as_its_node_and_imports_old_tokens() {
    let mut c = Cluster::up(&[]);
    // The client config `kumo up` wrote holds the admin's token, privately.
    assert_eq!(mode(&c.config_path()), 0o600);
    let config = ClientConfig::load(&c.config_path()).unwrap();
    assert_eq!(config.token, c.token);
    // Its own agent acts as its node, with a node credential kept 0600 in the agent's dir.
    let ls = text(&c.kumo(&["token", "ls"]));
    assert!(
        ls.lines()
            .any(|l| l.contains("system:node:node-1") && l.contains(" node ")),
        "{ls}"
    );
    let agent_dir = c.data_dir().join("agent");
    assert_eq!(mode(&agent_dir.join("node-credential.json")), 0o600);
    let first = saved(&agent_dir);

    // A data dir from before managed tokens: its plain-text file is imported, then removed.
    c.stop();
    std::fs::write(c.data_dir().join("tokens"), "legacy-one\nlegacy-two\n").unwrap();
    c.relaunch();
    assert!(!c.data_dir().join("tokens").exists());
    works(&c, "legacy-one").await;
    works(&c, "legacy-two").await;
    works(&c, &c.token).await;
    let ls = text(&c.kumo(&["token", "ls"]));
    for name in ["admin ", "imported-0 ", "imported-1 "] {
        assert!(
            ls.lines()
                .any(|l| l.starts_with(name) && l.contains("system:masters")),
            "{name}: {ls}"
        );
    }
    assert!(!ls.contains("legacy"));
    // The agent went on with its saved credential.
    assert_eq!(saved(&agent_dir)["name"], first["name"]);
}
