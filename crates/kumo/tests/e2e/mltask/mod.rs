//! MLTasks end to end with fake GPUs: queueing with positions and reasons, quotas and backfill
//! (`queueing`), and running gangs: environment, rendezvous, restarts, cancel, logs (`running`).
//! Helpers shared by both are here.

mod data;
mod gpu_use;
mod queueing;
mod running;

use crate::harness::*;
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_api::{Event, Pod};
use kumo_client::{Client, ListParams, Watched};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub(super) const T: Duration = Duration::from_secs(40);

/// Waits until `pred` holds for the task, following a watch; panics after `timeout`.
pub(super) async fn wait_task(
    client: &Client,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&MLTask) -> bool,
) -> MLTask {
    let params = ListParams::fields(&format!("metadata.name={name}"));
    let mut last: Option<MLTask> = None;
    let result = tokio::time::timeout(timeout, async {
        loop {
            let Ok(mut w) = client.watch::<MLTask>(Some("default"), &params, "").await else {
                continue;
            };
            while let Some(Ok(ev)) = w.next().await {
                if let Watched::Added(t) | Watched::Modified(t) = ev {
                    if pred(&t) {
                        return t;
                    }
                    last = Some(t);
                }
            }
        }
    })
    .await;
    match result {
        Ok(t) => t,
        Err(_) => panic!("mltask {name} did not reach the expected state within {timeout:?}; last seen: {last:#?}"),
    }
}

/// Waits until the task waits for exactly `reason` (earlier passes may have seen less of the
/// cluster and said something else); panics after `T` showing the last one.
pub(super) async fn wait_reason(client: &Client, name: &str, reason: &str) -> MLTask {
    wait_task(client, name, T, |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.pending_reason.as_deref() == Some(reason))
    })
    .await
}

pub(super) fn phase(t: &MLTask) -> TaskPhase {
    t.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

pub(super) fn is(p: TaskPhase) -> impl Fn(&MLTask) -> bool {
    move |t| phase(t) == p
}

pub(super) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kumo submit NAME --runtime process -d FLAGS -- sh -c SCRIPT`, which must succeed.
pub(super) fn submit(c: &Cluster, name: &str, flags: &[&str], script: &str) {
    let mut args = vec!["submit", name, "--runtime", "process", "-d"];
    args.extend_from_slice(flags);
    args.extend(["--", "/bin/sh", "-c", script]);
    let out = c.kumo(&args);
    assert!(out.status.success(), "submit {name}: {}", text(&out));
}

/// A shell loop that waits for `file` (the test's go signal) before exiting 0.
pub(super) fn wait_for_file(file: &Path) -> String {
    format!("while [ ! -e {} ]; do sleep 0.1; done", file.display())
}

pub(super) async fn task_pods(client: &Client, name: &str) -> Vec<Pod> {
    client
        .list::<Pod>(
            Some("default"),
            &ListParams::labels(&format!("kumo.dev/mltask={name}")),
        )
        .await
        .unwrap()
        .items
}

pub(super) async fn event_reasons(client: &Client, name: &str) -> Vec<String> {
    client
        .list::<Event>(Some("default"), &ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.kind == "MLTask" && e.involved_object.name == name)
        .map(|e| format!("{}: {}", e.reason, e.message))
        .collect()
}

/// Waits until an event about the task starts with `prefix` (`Reason: message`); panics after `T`.
pub(super) async fn wait_event(client: &Client, name: &str, prefix: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let events = event_reasons(client, name).await;
        if events.iter().any(|e| e.starts_with(prefix)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event {prefix:?} about {name}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free TCP port on loopback.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kumo agent` joining `cp` as `node` with `gpus` fake GPUs.
pub(super) fn start_agent(cp: &Cluster, node: &str, gpus: &str) -> Child {
    let dir = cp.dir.path().join(node);
    Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &cp.url,
            "--join",
            &cp.join_token(),
            "--ca-file",
            cp.ca_file().to_str().unwrap(),
            "--node-name",
            node,
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "500ms",
            "--fake-gpus",
            gpus,
        ])
        .args(["--no-pod-network", "--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}
