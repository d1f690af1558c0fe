//! `kumo logs mltask/NAME`: every replica's log interleaved, each line prefixed with its rank.

use super::out;
use anyhow::bail;
use kumo_api::mltask::MLTask;
use kumo_api::Pod;
use kumo_client::{Client, ListParams, LogParams};
use std::process::ExitCode;
use tokio::sync::mpsc;

/// Label on replica pods naming their task (set by the MLTask controller).
const LABEL_TASK: &str = "kumo.dev/mltask";
const LABEL_RANK: &str = "kumo.dev/rank";

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

/// Copies the logs of every replica of `name`, line by line, as they come.
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
    let rank = |p: &Pod| {
        p.metadata
            .labels
            .get(LABEL_RANK)
            .cloned()
            .unwrap_or_default()
    };
    pods.sort_by_key(|p| rank(p).parse::<u32>().unwrap_or(u32::MAX));
    if pods.is_empty() {
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
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<String, String>>();
    for pod in pods {
        let (client, tx, ns) = (client.clone(), tx.clone(), ns.to_string());
        let rank = rank(&pod);
        let params = LogParams {
            container: None,
            follow,
            tail_lines: tail,
        };
        tokio::spawn(async move {
            let name = pod.metadata.name.clone();
            let mut stream = match client.logs(&ns, &name, &params).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(format!("replica {rank} ({name}): {e}")));
                    return;
                }
            };
            while let Some(line) = stream.next_line().await {
                let msg = line
                    .map(|l| prefixed(&rank, &l))
                    .map_err(|e| format!("the log stream of {name} broke: {e}"));
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut failed = false;
    loop {
        let next = tokio::select! {
            n = rx.recv() => n,
            _ = tokio::signal::ctrl_c() => break,
        };
        match next {
            None => break,
            Some(Ok(line)) => out(line),
            Some(Err(e)) => {
                eprintln!("error: {e}");
                failed = true;
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
