//! Pod security: the Pod Security Standards levels by namespace label, hostPath volumes that
//! no symlink can redirect, and an MLTask's directories that no other pod can reach.

use crate::containers::{busybox_registry, waiting_message, waiting_reason};
use crate::harness::*;
use kumo_api::pod_security::LABEL_ENFORCE;
use kumo_api::{MLTask, Namespace, Pod};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Applies `manifest` expecting a refusal; returns the CLI's error output.
fn refused(c: &Cluster, file: &str, manifest: &str) -> String {
    let path = c.write(file, manifest);
    let o = c.kumo(&["apply", "-f", path.to_str().unwrap()]);
    assert!(!o.status.success(), "{file} was accepted");
    stderr(&o)
}

fn pod(ns: &str, name: &str, image: &str, extra_spec: &str, container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  restartPolicy: Never\n{extra_spec}  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/sh\", \"-c\", \"id -u\"]\n{container}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_enforce_their_pod_security_level() {
    let (_registry, image) = busybox_registry();
    let c = Cluster::up(&[]);
    let client = c.client();
    // `kumo up` is one person's machine: its default namespace is privileged, and says so.
    let ns: Namespace = client.get("", "default").await.unwrap();
    assert_eq!(
        ns.metadata.labels.get(LABEL_ENFORCE).map(String::as_str),
        Some("privileged")
    );
    c.apply(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: locked\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n",
    );

    // An unlabelled namespace is baseline: no host processes, no SYS_ADMIN or SYS_TIME.
    let err = refused(
        &c,
        "proc.yaml",
        &process_pod("host", "Never", "id").replace("name: host", "name: host\n  namespace: team"),
    );
    assert!(
        err.contains("pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": spec.runtimeClassName: host process runtime"),
        "{err}"
    );
    let caps = "    securityContext:\n      capabilities:\n        add: [NET_BIND_SERVICE, SYS_ADMIN, SYS_TIME]\n";
    let err = refused(&c, "caps.yaml", &pod("team", "caps", &image, "", caps));
    assert!(
        err.contains("spec.containers[0].securityContext.capabilities.add[1]: non-default capabilities (container \"main\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)"),
        "{err}"
    );
    assert!(err.contains("capabilities.add[2]"), "{err}");
    assert!(!err.contains("capabilities.add[0]"), "{err}");
    let host = "  hostNetwork: true\n  volumes:\n  - name: etc\n    hostPath: {path: /etc}\n";
    let err = refused(&c, "host.yaml", &pod("team", "hostly", &image, host, ""));
    assert!(
        err.contains("spec.hostNetwork: host namespaces (hostNetwork=true)")
            && err.contains("spec.volumes[0].hostPath: hostPath volumes (volume \"etc\")"),
        "{err}"
    );
    // Nothing of the refused pods was stored.
    for name in ["host", "caps", "hostly"] {
        assert!(client.get_opt::<Pod>("team", name).await.unwrap().is_none());
    }
    // A plain pod runs at baseline.
    c.apply("plain.yaml", &pod("team", "plain", &image, "", ""));
    wait_pod(&client, "team", "plain", T, |p| {
        p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    })
    .await;

    // Restricted wants a hardened container, and runs one.
    let err = refused(&c, "plain.yaml", &pod("locked", "plain", &image, "", ""));
    assert!(
        err.contains("violates PodSecurity \"restricted:latest\"")
            && err.contains("spec.containers[0].securityContext.allowPrivilegeEscalation")
            && err.contains("spec.containers[0].securityContext.runAsNonRoot")
            && err.contains("spec.containers[0].securityContext.seccompProfile"),
        "{err}"
    );
    let hardened = "    securityContext:\n      runAsNonRoot: true\n      runAsUser: 65534\n      allowPrivilegeEscalation: false\n      capabilities: {drop: [ALL]}\n      seccompProfile: {type: RuntimeDefault}\n";
    c.apply("hard.yaml", &pod("locked", "hard", &image, "", hardened));
    let p = wait_pod(&client, "locked", "hard", T, |p| {
        p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    })
    .await;
    assert_eq!(p.status.unwrap().phase, kumo_api::PodPhase::Succeeded);
    let o = c.kumo(&["logs", "hard", "-n", "locked"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "65534\n");

    // The example of a namespace with a process pod labels its namespace privileged.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/team.yaml");
    let o = c.kumo(&["apply", "-f", example]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_pod(&client, "team-a", "worker", T, |p| {
        p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    })
    .await;

    // A level the standard does not have is refused on the namespace, naming the label.
    let err = refused(
        &c,
        "bad-ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: odd\n  labels:\n    pod-security.kubernetes.io/enforce: admin\n",
    );
    assert!(
        err.contains(
            "metadata.labels.pod-security.kubernetes.io/enforce: Unsupported value: \"admin\""
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_cannot_be_redirected_or_reach_the_agent() {
    let (_registry, image) = busybox_registry();
    // Even with every host path allowed, symlinks and the agent's directories are refused.
    let c = Cluster::up(&["--allow-host-path", "/"]);
    let client = c.client();
    let host = tempfile::tempdir().unwrap();
    let plant = host.path().join("plant");
    let plant_s = plant.display().to_string();

    // The escape of the issue: one pod plants a link to / through its volume ...
    let first = format!(
        "  volumes:\n  - name: v\n    hostPath: {{path: {plant_s}, type: DirectoryOrCreate}}\n"
    );
    c.apply(
        "plant.yaml",
        &pod(
            "default",
            "plant",
            &image,
            &first,
            "    volumeMounts:\n    - {name: v, mountPath: /x}\n",
        )
        .replace("id -u", "ln -s / /x/root && echo planted"),
    );
    wait_pod(&client, "default", "plant", T, |p| {
        p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    })
    .await;
    assert!(std::fs::symlink_metadata(plant.join("root"))
        .unwrap()
        .file_type()
        .is_symlink());
    // ... and a second asks for the host's root through it: refused before anything runs.
    let second = format!("  volumes:\n  - name: v\n    hostPath: {{path: {plant_s}/root/etc}}\n");
    c.apply(
        "escape.yaml",
        &pod(
            "default",
            "escape",
            &image,
            &second,
            "    volumeMounts:\n    - {name: v, mountPath: /host}\n",
        )
        .replace("id -u", "cat /host/shadow"),
    );
    let p = wait_pod(&client, "default", "escape", T, |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let msg = waiting_message(&p);
    assert!(msg.contains("goes through a symbolic link"), "{msg}");

    // The agent's own directories (task data among them) and the data dir above them.
    let agent_dir = c.data_dir().join("agent").join("mltask");
    for (name, path) in [
        ("agent", agent_dir.display().to_string()),
        ("data", c.data_dir().display().to_string()),
        ("root", "/".to_string()),
    ] {
        let spec = format!(
            "  volumes:\n  - name: v\n    hostPath: {{path: {path}, type: DirectoryOrCreate}}\n"
        );
        c.apply(
            &format!("{name}.yaml"),
            &pod(
                "default",
                name,
                &image,
                &spec,
                "    volumeMounts:\n    - {name: v, mountPath: /host}\n",
            ),
        );
        let p = wait_pod(&client, "default", name, T, |p| {
            waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
        })
        .await;
        let msg = waiting_message(&p);
        assert!(
            msg.contains("overlaps the node agent's own directory"),
            "{name}: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_directories_belong_to_its_replicas_alone() {
    let (_registry, image) = busybox_registry();
    let c = Cluster::up(&[]);
    let client = c.client();
    let o = c.kumo(&[
        "submit",
        "victim",
        "--runtime",
        "process",
        "-d",
        "--output",
        "models/victim",
        "--scratch",
        "1Gi",
        "--",
        "sh",
        "-c",
        "echo secret > $OUTPUT_DIR/model && exec sleep 3600",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = tokio::time::Instant::now() + T;
    let uid = loop {
        let task: Option<MLTask> = client.get_opt("default", "victim").await.unwrap();
        let pod: Option<Pod> = client.get_opt("default", "victim-0").await.unwrap();
        let running = pod
            .and_then(|p| p.status)
            .is_some_and(|s| s.phase == kumo_api::PodPhase::Running);
        if let (true, Some(uid)) = (running, task.and_then(|t| t.metadata.uid)) {
            break uid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim task did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.apply(
        "other.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n",
    );
    // Pods that claim to be the task's rank 0 replica (its owner reference and rank), from
    // another namespace and under another name, are given none of its directories. (They carry
    // no `kumo.dev/mltask` label, so the MLTask controller leaves them alone and the agent's
    // own check is what refuses them.)
    for (ns, name) in [("other", "victim-0"), ("default", "spy")] {
        let meta = format!(
            "  labels: {{kumo.dev/rank: \"0\"}}\n  annotations: {{kumo.dev/output: models/victim, kumo.dev/scratch: \"\"}}\n  ownerReferences:\n  - {{apiVersion: kumo.dev/v1, kind: MLTask, name: victim, uid: {uid}}}\n"
        );
        let manifest = pod(ns, name, &image, "", "    volumeMounts: []\n")
            .replace(
                &format!("  namespace: {ns}\n"),
                &format!("  namespace: {ns}\n{meta}"),
            )
            .replace("id -u", "cat /output/model");
        c.apply(&format!("{ns}-{name}.yaml"), &manifest);
        let p = wait_pod(&client, ns, name, T, |p| {
            waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
        })
        .await;
        let msg = waiting_message(&p);
        assert!(
            msg.contains("output and scratch belong to the replicas of MLTask"),
            "{ns}/{name}: {msg}"
        );
    }
}

/// Replicas that the namespace's level refuses show the refusal on their owner: the
/// `ReplicaFailure` condition (reason `FailedCreate`) and a Warning event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_replicas_show_on_their_owner() {
    use kumo_api::meta::find_condition;
    let c = Cluster::up(&[]);
    let client = c.client();
    c.apply(
        "team.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
    );
    c.apply(
        "app.yaml",
        "apiVersion: kumo.dev/v1\nkind: App\nmetadata: {name: web, namespace: team}\nspec:\n  runtimeClassName: process\n  processes:\n    web: {command: [\"sleep\", \"3600\"], replicas: 1, port: 8080}\n",
    );
    let o = c.kumo(&[
        "submit",
        "train",
        "-n",
        "team",
        "--runtime",
        "process",
        "-d",
        "--",
        "sleep",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = "violates PodSecurity \"baseline:latest\": spec.runtimeClassName";
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let app: kumo_api::App = client.get("team", "web").await.unwrap();
        let task: MLTask = client.get("team", "train").await.unwrap();
        let app_cond = app
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "ReplicaFailure").cloned());
        let task_cond = task
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "ReplicaFailure").cloned());
        let shown = |c: &Option<kumo_api::Condition>| {
            c.as_ref().is_some_and(|c| {
                c.reason.as_deref() == Some("FailedCreate")
                    && c.message.as_deref().is_some_and(|m| m.contains(want))
            })
        };
        if shown(&app_cond) && shown(&task_cond) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ReplicaFailure: app {app_cond:?}, task {task_cond:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events =
        String::from_utf8_lossy(&c.kumo(&["get", "events", "-n", "team"]).stdout).into_owned();
    assert!(
        events.contains("FailedCreate") && events.contains("violates PodSecurity"),
        "{events}"
    );
}
