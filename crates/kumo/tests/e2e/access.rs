//! Access end to end, as a team lead sets it up on `kumo up`: tokens the API manages, a role
//! bound per namespace, the refusals people see (403 naming who, what and where), the node's own
//! credential held to its node, and the audit log recording who was refused.

use crate::harness::*;
use kumo_api::{Node, Secret};
use kumo_client::{Client, ClientConfig};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The secret `kumo token create` printed (the indented line after the first).
fn create_token(c: &Cluster, name: &str, user: &str, groups: &str) -> String {
    let mut args = vec!["token", "create", name, "--user", user];
    if !groups.is_empty() {
        args.extend(["--groups", groups]);
    }
    let o = c.kumo(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("  ").filter(|s| !s.contains(' ')))
        .unwrap_or_else(|| panic!("no secret printed"))
        .to_string()
}

/// The CLI as the holder of `token` (from the environment, as a person would pass it), with
/// the server and CA from the cluster's client config.
fn kumo_as(c: &Cluster, token: &str, args: &[&str]) -> Output {
    Command::new(kumo_exe())
        .args(args)
        .env("KUMO_CONFIG", c.config_path())
        .env("HOME", c.dir.path())
        .env("KUMO_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .expect("kumo cli")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The CLI refused `args` with a 403 naming the user, the verb, the resource and the namespace.
fn refused(o: &Output, user: &str, verb: &str, resource: &str, ns: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "not refused: {err}");
    let want = format!("User \"{user}\" cannot {verb} resource \"{resource}\"");
    assert!(err.contains(&want), "{want:?} not in {err}");
    assert!(
        err.contains(&format!("in the namespace \"{ns}\"")),
        "{ns}: {err}"
    );
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_lead_grants_roles_and_people_get_just_those() {
    let c = Cluster::up(&[]);
    let admin = c.client();
    c.privileged_namespace("team-a");
    let pod = process_pod(
        "worker",
        "Always",
        "echo hello from worker; exec sleep 3600",
    )
    .replace("metadata:\n", "metadata:\n  namespace: team-a\n")
    .replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: 1\n");
    c.apply("worker.yaml", &pod);
    c.apply(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: team-a}\nstringData: {password: hunter2}\n",
    );
    wait_pod(&admin, "team-a", "worker", T, pod_ready).await;

    // The team lead's part: two people, one role each, in team-a only.
    let alice = create_token(&c, "alice", "alice", "ml-team");
    let bob = create_token(&c, "bob", "bob", "");
    c.apply(
        "bindings.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: ml-team, namespace: team-a}\n\
         subjects: [{kind: Group, name: ml-team}]\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: ml-engineer}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob, namespace: team-a}\n\
         subjects: [{kind: User, name: bob}]\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: app-developer}\n",
    );

    // Alice (ml-engineer): pods and logs in team-a, not exec, not Secrets, nothing elsewhere.
    let pods = ok(&kumo_as(&c, &alice, &["get", "pods", "-n", "team-a"]));
    assert!(pods.contains("worker"), "{pods}");
    let logs = ok(&kumo_as(&c, &alice, &["logs", "worker", "-n", "team-a"]));
    assert!(logs.contains("hello from worker"), "{logs}");
    let yes = ok(&kumo_as(
        &c,
        &alice,
        &["auth", "can-i", "create", "mltasks", "-n", "team-a"],
    ));
    assert_eq!(yes.trim(), "yes");
    refused(
        &kumo_as(
            &c,
            &alice,
            &["exec", "worker", "-n", "team-a", "--", "true"],
        ),
        "alice",
        "create",
        "pods/exec",
        "team-a",
    );
    refused(
        &kumo_as(&c, &alice, &["get", "secret", "db", "-n", "team-a"]),
        "alice",
        "get",
        "secrets",
        "team-a",
    );
    refused(
        &kumo_as(&c, &alice, &["get", "pods", "-n", "default"]),
        "alice",
        "list",
        "pods",
        "default",
    );
    // Only cluster-admin changes namespaces (and so their pod security level).
    let relabel = c.write(
        "relabel.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n    owner: alice\n",
    );
    let o = kumo_as(&c, &alice, &["apply", "-f", relabel.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("User \"alice\" cannot") && err.contains("resource \"namespaces\""),
        "{err}"
    );
    let ns: kumo_api::Namespace = admin.get("", "team-a").await.unwrap();
    assert!(!ns.metadata.labels.contains_key("owner"), "changed: {ns:?}");

    // Bob (app-developer): apps and logs in team-a; not MLTasks, not exec.
    ok(&kumo_as(&c, &bob, &["get", "apps", "-n", "team-a"]));
    ok(&kumo_as(&c, &bob, &["logs", "worker", "-n", "team-a"]));
    refused(
        &kumo_as(&c, &bob, &["get", "mltasks", "-n", "team-a"]),
        "bob",
        "list",
        "mltasks",
        "team-a",
    );
    refused(
        &kumo_as(&c, &bob, &["exec", "worker", "-n", "team-a", "--", "true"]),
        "bob",
        "create",
        "pods/exec",
        "team-a",
    );

    // A token nobody knows, and no token at all: 401, whatever the path.
    let o = kumo_as(&c, "not-a-token", &["get", "pods"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid bearer token"),
        "{}",
        stderr(&o)
    );

    // The node's own credential (what `kumo up`'s agent uses) is held to its node: its Node
    // and its pods, not another node, not a Secret none of its pods uses.
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.data_dir().join("agent").join("node-credential.json"))
            .expect("the node credential"),
    )
    .unwrap();
    let node = Client::new(&ClientConfig {
        token: saved["token"].as_str().unwrap().to_string(),
        ..c.client_config()
    })
    .unwrap();
    node.get::<Node>("", "node-1").await.expect("its own node");
    admin
        .create(
            &serde_json::from_value::<Node>(serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "other"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let patch = serde_json::json!({"metadata": {"labels": {"stolen": "yes"}}});
    let e = node.patch::<Node>("", "other", &patch).await.unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");
    assert!(e.to_string().contains("system:node:node-1"), "{e}");
    let e = node.get::<Secret>("team-a", "db").await.unwrap_err();
    assert_eq!(e.code(), Some(403), "{e}");

    // Who was refused is on record: Alice's exec, with her user and the 403.
    let audit = std::fs::read_to_string(c.data_dir().join("audit.log")).expect("audit.log");
    let exec = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["user"]["username"] == "alice" && e["objectRef"]["subresource"] == "exec")
        .unwrap_or_else(|| panic!("no line for alice's exec in {audit}"));
    assert_eq!(exec["responseStatus"]["code"], 403);
    assert_eq!(exec["objectRef"]["namespace"], "team-a");
    assert_eq!(exec["objectRef"]["name"], "worker");
}
