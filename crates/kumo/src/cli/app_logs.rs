//! `kumo logs app/NAME [-f] [--process web]`: the logs of an app's replicas, each line prefixed
//! with the replica's pod name; with `-f`, replicas that start later (a rollout's) join in.

use super::{client, out};
use kumo_api::app::{LABEL_APP, LABEL_PROCESS};
use kumo_api::Pod;
use kumo_client::{Client, ListParams, LogParams, Watched};
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
    let params = ListParams::labels(&selector(app, args.process.as_deref()));
    let list = client.list::<Pod>(Some(&ns), &params).await?;
    let mut pods = list.items;
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let log_params = LogParams {
        container: None,
        follow: args.follow,
        tail_lines: args.tail,
    };
    if !args.follow {
        for pod in pods.iter().filter(|p| started(p)) {
            copy(&client, &ns, &pod.metadata.name, &log_params).await;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Following: every replica that runs now, and every one that starts later (a rollout's).
    let mut followed = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut follow = |pod: &Pod, tasks: &mut tokio::task::JoinSet<()>| {
        if started(pod) && followed.insert(pod.metadata.name.clone()) {
            let (client, ns, name, params) = (
                client.clone(),
                ns.clone(),
                pod.metadata.name.clone(),
                log_params.clone(),
            );
            tasks.spawn(async move { copy(&client, &ns, &name, &params).await });
        }
    };
    for pod in &pods {
        follow(pod, &mut tasks);
    }
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut watch = client.watch::<Pod>(Some(&ns), &params, &rv).await?;
    loop {
        tokio::select! {
            event = watch.next() => match event {
                Some(Ok(Watched::Added(p) | Watched::Modified(p))) => follow(&p, &mut tasks),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a pod's container has started, so it has a log.
fn started(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.container_statuses.iter().any(|c| {
            c.state.running.is_some() || c.state.terminated.is_some() || c.restart_count > 0
        })
    })
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
