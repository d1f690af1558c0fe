//! `kumo logs app/NAME [-f] [--process web]`: the logs of an app's replicas, each line prefixed
//! with the replica's pod name (with `-f`, the replicas running when the command started).

use super::{client, out};
use kumo_api::app::{LABEL_APP, LABEL_PROCESS};
use kumo_api::Pod;
use kumo_client::{Client, ListParams, LogParams};
use std::process::ExitCode;

/// The label selector for an app's pods, of one process when given.
pub fn selector(app: &str, process: Option<&str>) -> String {
    match process {
        Some(p) => format!("{LABEL_APP}={app},{LABEL_PROCESS}={p}"),
        None => format!("{LABEL_APP}={app}"),
    }
}

pub async fn logs(args: &super::logs::LogsArgs, app: &str) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    let ns = args.ns.or_default().to_string();
    let _: kumo_api::app::App = client.get(&ns, app).await?;
    let mut pods = client
        .list::<Pod>(
            Some(&ns),
            &ListParams::labels(&selector(app, args.process.as_deref())),
        )
        .await?
        .items;
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let params = LogParams {
        container: None,
        follow: args.follow,
        tail_lines: args.tail,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for pod in pods {
        let (client, ns, params) = (client.clone(), ns.clone(), params.clone());
        let task = async move { copy(&client, &ns, &pod.metadata.name, &params).await };
        if args.follow {
            tasks.spawn(task);
        } else {
            task.await;
        }
    }
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn copy(client: &Client, ns: &str, pod: &str, params: &LogParams) {
    let mut stream = match client.logs(ns, pod, params).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{pod}: no logs: {e}");
            return;
        }
    };
    while let Some(Ok(line)) = stream.next_line().await {
        out(format!("{pod}| {}", line.trim_end_matches('\n')));
    }
}
