//! The audit log through the real binary: a burst of changes whose every answered request has
//! its line even when the server is killed with SIGKILL right after the last answer; `kumo exec
//! --reason` and log reads recorded; bad flags and an unwritable log refused at start.

use crate::harness::*;
use http::Method;
use kumo_api::audit::Event;
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The events of the cluster's audit log.
fn events(c: &Cluster) -> Vec<Event> {
    let path = c.data_dir().join("audit.log");
    let mode = std::fs::metadata(&path)
        .expect("audit.log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// What identifies one of the burst's requests in the log.
type Key = (String, String, String, u16);

fn key_of(e: &Event) -> Option<Key> {
    let o = e.object_ref.as_ref()?;
    Some((
        e.verb.clone(),
        o.resource.clone(),
        o.name.clone(),
        e.response_status.code,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_change_survives_kill_9() {
    let mut c = Cluster::start_with(vec!["server".to_string()]);
    let client = c.client();
    let secrets = "/api/v1/namespaces/default/secrets";
    // Four clients at once, each creating, patching and deleting its own Secrets, with a
    // refused create and delete among them; every answer is noted.
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let client = client.clone();
        workers.spawn(async move {
            let mut answered: Vec<Key> = Vec::new();
            let mut send = async |method: Method,
                                  verb: &str,
                                  path: String,
                                  name: &str,
                                  body: Option<serde_json::Value>| {
                let body = body.map(|b| {
                    let ct = if method == Method::PATCH {
                        "application/merge-patch+json"
                    } else {
                        "application/json"
                    };
                    (ct, serde_json::to_vec(&b).unwrap())
                });
                let code = match client.send(method, &path, body).await {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => e.code().unwrap_or_else(|| panic!("{path}: {e}")),
                };
                answered.push((verb.into(), "secrets".into(), name.into(), code));
            };
            for i in 0..25 {
                let name = format!("s-{w}-{i}");
                let secret = json!({"metadata": {"name": name}, "stringData": {"k": "v"}});
                send(
                    Method::POST,
                    "create",
                    secrets.into(),
                    &name,
                    Some(secret.clone()),
                )
                .await;
                send(
                    Method::PATCH,
                    "patch",
                    format!("{secrets}/{name}"),
                    &name,
                    Some(json!({"metadata": {"labels": {"i": "x"}}})),
                )
                .await;
                if i % 5 == 0 {
                    send(Method::POST, "create", secrets.into(), &name, Some(secret)).await;
                    send(
                        Method::DELETE,
                        "delete",
                        format!("{secrets}/ghost-{w}-{i}"),
                        &format!("ghost-{w}-{i}"),
                        None,
                    )
                    .await;
                }
                send(
                    Method::DELETE,
                    "delete",
                    format!("{secrets}/{name}"),
                    &name,
                    None,
                )
                .await;
            }
            answered
        });
    }
    let mut answered = Vec::new();
    while let Some(done) = workers.join_next().await {
        answered.extend(done.unwrap());
    }
    // Right after the last answer: no graceful stop, no chance to flush anything.
    c.kill9();
    assert_eq!(answered.len(), 4 * (25 * 3 + 5 * 2));
    let codes: std::collections::BTreeSet<u16> = answered.iter().map(|k| k.3).collect();
    assert_eq!(
        codes,
        [200, 201, 404, 409].into(),
        "the burst had successes and refusals"
    );

    let events = events(&c);
    let mut lines: BTreeMap<Key, usize> = BTreeMap::new();
    for e in &events {
        if let Some(k) = key_of(e) {
            *lines.entry(k).or_default() += 1;
        }
    }
    for k in &answered {
        assert_eq!(lines.get(k), Some(&1), "{k:?} has exactly one line");
    }
    let ours = events
        .iter()
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "secrets")
        })
        .collect::<Vec<_>>();
    assert_eq!(ours.len(), answered.len(), "no other Secret line");
    for e in ours {
        assert_eq!(e.user.username, "admin");
        assert_eq!(e.source_ips, vec!["127.0.0.1".to_string()]);
        assert_eq!(e.stage, "ResponseComplete");
        assert!(e.user_agent.starts_with("kumo/"), "{}", e.user_agent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reasons_and_log_reads_are_recorded() {
    // Bad flags and a log that cannot be opened stop the server before it serves.
    let dir = tempfile::tempdir().unwrap();
    for (args, message) in [
        (
            &["server", "--audit-log-maxsize", "0"][..],
            "invalid value '0' for '--audit-log-maxsize <AUDIT_LOG_MAXSIZE>': must be a whole number of MiB from 1 to 1048576",
        ),
        (
            &["server", "--audit-log-maxbackup", "1001"][..],
            "must be a whole number from 0 to 1000",
        ),
        (
            &["server", "--audit-log", "/dev/null/audit.log"][..],
            "cannot open the audit log /dev/null/audit.log (--audit-log): Not a directory",
        ),
    ] {
        let err = refused_start(dir.path(), args);
        assert!(err.contains(message), "{args:?}: {err}");
    }

    let c = Cluster::up(&[]);
    let client = c.client();
    c.apply(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  runtimeClassName: process\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    command: [\"/bin/sh\", \"-c\", \"echo started; exec sleep 3600\"]\n",
    );
    wait_pod(
        &client,
        "default",
        "sleeper",
        Duration::from_secs(60),
        pod_ready,
    )
    .await;

    let reason = "INC-42: 再起動 of a stuck worker";
    let o = c.kumo(&[
        "exec", "--reason", reason, "sleeper", "--", "/bin/sh", "-c", "exit 7",
    ]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = c.kumo(&["exec", "sleeper", "--", "/bin/true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = c.kumo(&["logs", "sleeper"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Bad reasons are refused by the CLI before anything is sent.
    let long = "x".repeat(1025);
    for (bad, message) in [
        ("", "must not be empty"),
        ("two\nlines", "must not contain control characters"),
        (long.as_str(), "must be at most 1024 bytes, not 1025"),
    ] {
        let o = c.kumo(&["exec", "--reason", bad, "sleeper", "--", "/bin/true"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(message),
            "{bad:?}: {err}"
        );
    }

    let events = events(&c);
    let execs: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.subresource == "exec")
        })
        .collect();
    assert_eq!(execs.len(), 2, "{execs:#?}");
    for e in &execs {
        let o = e.object_ref.as_ref().unwrap();
        assert_eq!(
            (
                e.verb.as_str(),
                o.resource.as_str(),
                o.namespace.as_str(),
                o.name.as_str()
            ),
            ("create", "pods", "default", "sleeper")
        );
        assert_eq!(
            (e.stage.as_str(), e.response_status.code),
            ("ResponseStarted", 101)
        );
        assert_eq!(e.user.username, "admin");
        assert!(e.user_agent.starts_with("kumo/"), "{}", e.user_agent);
        assert!(
            e.request_uri.contains("command=%2Fbin%2F"),
            "{}",
            e.request_uri
        );
    }
    assert_eq!(
        execs[0]
            .annotations
            .get("kumo.dev/reason")
            .map(String::as_str),
        Some(reason)
    );
    assert!(execs[1].annotations.is_empty());
    let logs: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.object_ref
                .as_ref()
                .is_some_and(|o| o.subresource == "log")
        })
        .collect();
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(
        (logs[0].verb.as_str(), logs[0].response_status.code),
        ("get", 200)
    );
    // The agent's heartbeats and the scheduler's binding are changes too; reads of pods are not.
    assert!(events.iter().any(|e| e
        .object_ref
        .as_ref()
        .is_some_and(|o| o.subresource == "binding" && o.name == "sleeper")));
    assert!(!events
        .iter()
        .any(|e| matches!(e.verb.as_str(), "get" | "list" | "watch")
            && e.object_ref
                .as_ref()
                .is_some_and(|o| o.resource == "pods" && o.subresource.is_empty())));
}
