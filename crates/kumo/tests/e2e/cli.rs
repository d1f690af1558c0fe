//! The CLI as a user types it, against a control plane: apply, get, describe, wait, delete, errors.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `kumo server` alone: pods stay Pending (no node), which is all these tests need.
fn control_plane() -> Cluster {
    Cluster::start_with(vec!["server".to_string()])
}

/// Runs the CLI against `c` with an explicit `--server` (the token from the client config:
/// never in argv).
fn cli(c: &Cluster, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &c.url]);
    c.kumo(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PODS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers: [{name: main, image: busybox, command: [sleep, '3600']}]
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: team}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox}]
";

#[test]
fn apply_is_create_then_unchanged_then_configured() {
    let c = control_plane();
    let f = c.write("pods.yaml", PODS);
    let f = f.to_str().unwrap();
    let out = cli(&c, &["apply", "-f", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "namespace/team created\npod/web created\npod/job created\n"
    );
    assert_eq!(
        stdout(&cli(&c, &["apply", "-f", f])),
        "namespace/team unchanged\npod/web unchanged\npod/job unchanged\n"
    );
    let relabeled = c.write(
        "relabeled.yaml",
        &PODS.replace("{app: web}", "{app: web, tier: front}"),
    );
    let out = cli(&c, &["apply", "-f", relabeled.to_str().unwrap()]);
    assert_eq!(
        stdout(&out),
        "namespace/team unchanged\npod/web configured\npod/job unchanged\n"
    );
    let labels = stdout(&cli(&c, &["get", "pod", "web", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&labels).expect("json");
    assert_eq!(v["metadata"]["labels"]["tier"], "front");

    // The output of `get -o yaml` applies back unchanged.
    let yaml = stdout(&cli(&c, &["get", "pod", "web", "-o", "yaml"]));
    let out = c.kumo_stdin(&["apply", "-f", "-", "--server", &c.url], Some(&yaml));
    assert_eq!(stdout(&out), "pod/web unchanged\n", "{}", stderr(&out));
}

#[test]
fn an_invalid_file_changes_nothing() {
    let c = control_plane();
    let f = c.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: first}\nspec: {containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n   x: [\n",
    );
    let out = cli(&c, &["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml: document 2: invalid YAML at line 10, column 5: "),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    let get = cli(&c, &["get", "pod", "first"]);
    assert_eq!(
        stderr(&get),
        "Error from server (NotFound): pods \"first\" not found\n"
    );
    assert_eq!(get.status.code(), Some(1));

    let f = c.write(
        "foo.yaml",
        "apiVersion: v1\nkind: Foo\nmetadata: {name: a}\n",
    );
    let out = cli(&c, &["apply", "-f", f.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("foo.yaml: document 1: unknown kind \"Foo\" (apiVersion \"v1\")"),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn create_namespace_as_kubectl_does() {
    let c = control_plane();
    let out = cli(&c, &["create", "namespace", "team-b"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "namespace/team-b created\n");
    let out = cli(&c, &["get", "ns", "team-b", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = cli(&c, &["create", "ns", "team-b"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    // A name that is no DNS label is refused before anything is sent.
    let bad = cli(&c, &["create", "namespace", "Team_B"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("invalid namespace: metadata.name"),
        "{}",
        stderr(&bad)
    );
    let get = cli(&c, &["get", "ns", "Team_B"]);
    assert_eq!(get.status.code(), Some(1));
}

#[test]
fn invalid_fields_are_caught_before_anything_is_sent() {
    let c = control_plane();
    let f = c.write(
        "mixed.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec: {containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: [{name: c, image: x, resources: {limits: {memory: 12XB}}}]}\n",
    );
    let out = cli(&c, &["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.contains("mixed.yaml: document 2: Pod \"bad\" is invalid: spec.containers[0].resources.limits.memory: invalid quantity \"12XB\""),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
}

#[test]
fn server_rejections_are_reported_and_the_rest_applies() {
    let c = control_plane();
    let f = c.write(
        "mixed.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: nowhere}\nspec: {containers: [{name: c, image: x}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec: {containers: [{name: c, image: x}]}\n",
    );
    let out = cli(&c, &["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "pod/good created\n");
    let err = stderr(&out);
    assert!(err.starts_with("Error from server (NotFound): "), "{err}");
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
}

#[test]
fn get_describe_wait_delete() {
    let c = control_plane();
    let f = c.write("pods.yaml", PODS);
    assert!(cli(&c, &["apply", "-f", f.to_str().unwrap()])
        .status
        .success());

    let table = stdout(&cli(&c, &["get", "pods"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "NAME   READY   STATUS    RESTARTS   AGE",
        "{table}"
    );
    assert!(
        lines[1].starts_with("web    0/1     Pending   0          "),
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    let all = stdout(&cli(&c, &["get", "po", "-A", "-o", "wide"]));
    assert!(
        all.starts_with("NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE   IP       NODE\n"),
        "{all}"
    );
    assert_eq!(
        stdout(&cli(&c, &["get", "pods", "-A", "-o", "name"])),
        "pod/web\npod/job\n"
    );
    assert_eq!(
        stdout(&cli(&c, &["get", "pods", "-l", "app=web", "-o", "name"])),
        "pod/web\n"
    );
    assert_eq!(
        stdout(&cli(&c, &["get", "ns/team", "pod/web", "-o", "name"])),
        "namespace/team\npod/web\n"
    );
    let empty = cli(&c, &["get", "pods", "-n", "nowhere"]);
    assert_eq!(
        (stdout(&empty), stderr(&empty)),
        (
            String::new(),
            "No resources found in nowhere namespace.\n".into()
        )
    );
    let unknown = cli(&c, &["get", "pdos"]);
    let plurals: Vec<&str> = kumo_api::kinds().iter().map(|k| k.plural).collect();
    assert_eq!(
        stderr(&unknown),
        format!(
            "error: unknown resource type \"pdos\": try {}\n",
            plurals.join(", ")
        )
    );
    assert_eq!(unknown.status.code(), Some(1));

    let met = cli(
        &c,
        &[
            "wait",
            "pod/web",
            "--for=condition=PodScheduled=False",
            "--timeout",
            "10s",
        ],
    );
    assert_eq!(stdout(&met), "pod/web condition met\n", "{}", stderr(&met));
    // The scheduler has said why the pod waits: describe shows it.
    let text = stdout(&cli(&c, &["describe", "pod", "web"]));
    for want in [
        "Name:            web\n",
        "Labels:          app=web\n",
        "Status:          Pending\n",
        "  PodScheduled   False",
        "Events:",
    ] {
        assert!(text.contains(want), "describe lacks {want:?}:\n{text}");
    }

    let late = cli(
        &c,
        &[
            "wait",
            "pod/web",
            "--for=condition=Ready",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(
        stderr(&late),
        "error: timed out waiting for the condition on pods/web\n"
    );
    assert_eq!(late.status.code(), Some(1));
    let bad = cli(&c, &["wait", "pod/web", "--for=ready"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("use condition=TYPE"),
        "{}",
        stderr(&bad)
    );

    let del = cli(&c, &["delete", "pod", "web", "--wait", "--timeout", "20s"]);
    assert_eq!(stdout(&del), "pod \"web\" deleted\n", "{}", stderr(&del));
    assert_eq!(
        stderr(&cli(&c, &["get", "pod", "web"])),
        "Error from server (NotFound): pods \"web\" not found\n"
    );
    let again = cli(&c, &["delete", "pod", "web"]);
    assert_eq!(
        (again.status.code(), stderr(&again)),
        (
            Some(1),
            "Error from server (NotFound): pods \"web\" not found\n".into()
        )
    );
    let gone = cli(&c, &["wait", "pod/web", "--for=delete", "--timeout", "1s"]);
    assert_eq!(stdout(&gone), "pod/web condition met\n");

    let version = cli(&c, &["version"]);
    assert_eq!(
        stdout(&version),
        "Client Version: v0.1.0\nServer Version: v0.1.0\n",
        "{}",
        stderr(&version)
    );
}

#[test]
fn get_watch_prints_each_change() {
    let c = control_plane();
    let mut child = Command::new(kumo_exe())
        .args(["get", "pods", "-w", "--server", &c.url])
        .env("KUMO_TOKEN", &c.token)
        // The flags name the server; the token is in the environment, the CA in the config.
        .env("KUMO_CONFIG", c.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kumo get -w");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("NAME   READY   STATUS   RESTARTS   AGE")
    );
    let f = c.write("pods.yaml", PODS);
    assert!(cli(&c, &["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a row for the new pod");
    assert!(line.starts_with("web    0/1     Pending"), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_unreachable_server_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(kumo_exe())
            .args(args)
            .env("HOME", dir.path())
            .env("KUMO_CONFIG", dir.path().join("none"))
            .env("KUMO_TOKEN", "t")
            .output()
            .expect("run kumo")
    };
    let out = run(&["get", "pods", "--server", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: cannot reach kumo server at http://127.0.0.1:1: connection refused (is `kumo up` running?)\n"
    );
    let out = run(&["version", "--server", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "Client Version: v0.1.0\n");
    assert!(
        stderr(&out).contains("cannot reach kumo server at http://127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_node_flags_stop_up_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let data = dir.path().join("data");
    for (flags, wanted) in [
        (
            vec!["--cdi-spec-dir", file.to_str().unwrap()],
            format!("--cdi-spec-dir {} is not a directory", file.display()),
        ),
        (
            vec!["--node-name", "Bad_Name"],
            "--node-name \"Bad_Name\" is not valid".to_string(),
        ),
        (
            vec!["--image-gc-low-threshold", "90"],
            "--image-gc-low-threshold (90) must not be above --image-gc-high-threshold (85)"
                .to_string(),
        ),
    ] {
        let out = Command::new(kumo_exe())
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(&flags)
            .env("HOME", dir.path())
            .output()
            .expect("run kumo up");
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr(&out).contains(&wanted), "{}", stderr(&out));
        assert!(!data.exists(), "{flags:?} left a data dir");
        assert!(
            !dir.path().join(".kumo").exists(),
            "{flags:?} left a client config"
        );
    }
}
