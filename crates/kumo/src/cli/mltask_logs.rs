//! `kumo logs mltask/NAME`: every replica's log interleaved, each line prefixed with its rank.

use super::out;
use anyhow::bail;
use kumo_api::keys::{LABEL_RANK, LABEL_TASK};
use kumo_api::mltask::MLTask;
use kumo_api::Pod;
use kumo_client::{Client, ListParams, LogParams, Watched};
use std::collections::BTreeSet;
use std::process::ExitCode;
use tokio::sync::mpsc;

/// The task named by `mltask/NAME` (or `mlt/NAME`, ...); `None` for other kinds.
pub fn task_name(arg: &str) -> anyhow::Result<Option<String>> {
    if !arg.contains('/') {
        return Ok(None);
    }
    let (kind, name) = super::kind_and_name(arg)?;
    Ok((kind.kind == "MLTask").then_some(name))
}

/// `[rank N] line`.
pub fn prefixed(rank: &str, line: &str) -> String {
    format!("[rank {rank}] {line}")
}

/// What the copy loop hears about.
enum Msg {
    Line(String),
    Error(String),
    /// A replica's log stream ended.
    Ended,
    /// A replica pod appeared or changed (with `-f`: a restarted gang's new pods).
    Pod(Box<Pod>),
    /// The task finished: no new replicas will come.
    Finished,
}

fn rank(p: &Pod) -> String {
    p.metadata
        .labels
        .get(LABEL_RANK)
        .cloned()
        .unwrap_or_default()
}

/// Whether a replica has a log to read: its container started.
fn has_started(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .is_some_and(|c| c.state.running.is_some() || c.state.terminated.is_some())
}

/// Copies one replica's log into `tx`, each line prefixed with its rank.
fn attach(client: &Client, ns: &str, pod: &Pod, params: LogParams, tx: mpsc::UnboundedSender<Msg>) {
    let (client, ns, rank, name) = (
        client.clone(),
        ns.to_string(),
        rank(pod),
        pod.metadata.name.clone(),
    );
    tokio::spawn(async move {
        match client.logs(&ns, &name, &params).await {
            Ok(mut stream) => {
                while let Some(line) = stream.next_line().await {
                    let msg = match line {
                        Ok(l) => Msg::Line(prefixed(&rank, &l)),
                        Err(e) => Msg::Error(format!("the log stream of {name} broke: {e}")),
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::Error(format!("replica {rank} ({name}): {e}")));
            }
        }
        let _ = tx.send(Msg::Ended);
    });
}

/// With `-f`: tells the copy loop about replica pods as they come and go, and when the task is
/// done.
fn watch_replicas(client: &Client, ns: &str, name: &str, tx: mpsc::UnboundedSender<Msg>) {
    let (client, ns, name) = (client.clone(), ns.to_string(), name.to_string());
    let pods_tx = tx.clone();
    let pods_client = client.clone();
    let pods_ns = ns.clone();
    let selector = format!("{LABEL_TASK}={name}");
    tokio::spawn(async move {
        loop {
            let params = ListParams::labels(&selector);
            let Ok(mut w) = pods_client.watch::<Pod>(Some(&pods_ns), &params, "").await else {
                return;
            };
            while let Some(Ok(ev)) = w.next().await {
                if let Watched::Added(p) | Watched::Modified(p) = ev {
                    if pods_tx.send(Msg::Pod(Box::new(p))).is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        let params = ListParams::fields(&format!("metadata.name={name}"));
        loop {
            let mut w = match client.watch::<MLTask>(Some(&ns), &params, "").await {
                Ok(w) => w,
                // The server is gone: nothing more will come; end once the streams have.
                Err(e) => {
                    let _ = tx.send(Msg::Error(format!("cannot follow mltask {name}: {e}")));
                    let _ = tx.send(Msg::Finished);
                    return;
                }
            };
            while let Some(Ok(ev)) = w.next().await {
                let done = match ev {
                    Watched::Added(t) | Watched::Modified(t) => {
                        t.status.is_some_and(|s| s.phase.is_finished())
                    }
                    Watched::Deleted(_) => true,
                    _ => false,
                };
                if done {
                    let _ = tx.send(Msg::Finished);
                    return;
                }
            }
        }
    });
}

/// Copies the logs of every replica of `name`, line by line, as they come. With `follow`, it
/// goes on through gang restarts (the new replicas' logs follow) until the task has finished
/// and every replica's log has ended.
pub async fn logs(
    client: &Client,
    ns: &str,
    name: &str,
    follow: bool,
    tail: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let task: MLTask = client.get(ns, name).await?;
    let mut pods = client
        .list::<Pod>(
            Some(ns),
            &ListParams::labels(&format!("{LABEL_TASK}={name}")),
        )
        .await?
        .items;
    pods.sort_by_key(|p| rank(p).parse::<u32>().unwrap_or(u32::MAX));
    let finished = task.status.as_ref().is_some_and(|s| s.phase.is_finished());
    // Following a task that has not finished waits for its replicas; otherwise say why none.
    let will_come = follow && !finished;
    if pods.is_empty() && !will_come {
        let st = task.status.unwrap_or_default();
        let why = st
            .pending_reason
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        bail!(
            "mltask {name} has no replicas to read logs from ({:?}{why})",
            st.phase
        );
    }
    let params = LogParams {
        container: None,
        follow,
        tail_lines: tail,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut attached: BTreeSet<String> = BTreeSet::new();
    let mut streams = 0usize;
    for pod in pods.iter().filter(|p| !follow || has_started(p)) {
        attached.insert(pod.metadata.uid.clone().unwrap_or_default());
        attach(client, ns, pod, params.clone(), tx.clone());
        streams += 1;
    }
    let mut done = !follow || finished;
    if follow && !finished {
        watch_replicas(client, ns, name, tx.clone());
    }
    let mut failed = false;
    while streams > 0 || !done {
        let next = tokio::select! {
            n = rx.recv() => n,
            _ = tokio::signal::ctrl_c() => break,
        };
        match next {
            None => break,
            Some(Msg::Line(line)) => out(line),
            Some(Msg::Error(e)) => {
                eprintln!("error: {e}");
                failed = true;
            }
            Some(Msg::Ended) => streams = streams.saturating_sub(1),
            Some(Msg::Finished) => done = true,
            Some(Msg::Pod(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if has_started(&pod) && attached.insert(uid) {
                    attach(client, ns, &pod, params.clone(), tx.clone());
                    streams += 1;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert_eq!(
            task_name("mltask/resnet").unwrap().as_deref(),
            Some("resnet")
        );
        assert_eq!(task_name("mlt/resnet").unwrap().as_deref(), Some("resnet"));
        assert_eq!(task_name("pod/web").unwrap(), None);
        assert_eq!(task_name("web").unwrap(), None);
        assert_eq!(prefixed("3", "loss=0.1"), "[rank 3] loss=0.1");
    }
}
