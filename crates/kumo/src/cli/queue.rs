//! `kumo queue [QUEUE]`: the tasks waiting in queues, in admission order, with why they wait;
//! and `kumo cancel NAME`.

use super::format::{human_duration, Table};
use super::{client, out, NamespaceArgs};
use chrono::{DateTime, Utc};
use kumo_api::mltask::{MLTask, TaskPhase};
use kumo_client::ListParams;
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// Only this queue (default: every queue)
    pub queue: Option<String>,
    /// Also list admitted and running tasks
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only the tasks of this namespace (default: every namespace one may list)
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

pub async fn run(args: QueueArgs) -> anyhow::Result<ExitCode> {
    super::finish(queue(args).await)
}

async fn queue(args: QueueArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    let params = ListParams::default();
    let tasks = match &args.namespace {
        Some(ns) => client.list::<MLTask>(Some(ns), &params).await?,
        None => match client.list::<MLTask>(None, &params).await {
            // Who may list tasks only in their own namespace sees theirs, with their places.
            Err(e) if e.code() == Some(403) => {
                let ns = kumo_api::DEFAULT_NAMESPACE;
                eprintln!("note: you may not list the tasks of every namespace; showing namespace {ns} (choose one with -n)");
                client.list::<MLTask>(Some(ns), &params).await?
            }
            other => other?,
        },
    }
    .items;
    let table = queue_table(&tasks, args.queue.as_deref(), args.all, Utc::now());
    if table.rows.is_empty() {
        match &args.queue {
            Some(q) => out(format!("No tasks waiting in queue {q}.")),
            None => out("No tasks waiting."),
        }
    } else {
        print!("{}", table.render(true));
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of waiting tasks (and, with `all`, admitted ones), by queue then position.
pub fn queue_table(tasks: &[MLTask], only: Option<&str>, all: bool, now: DateTime<Utc>) -> Table {
    let mut rows: Vec<(&MLTask, TaskPhase)> = tasks
        .iter()
        .filter(|t| only.is_none_or(|q| t.spec.queue == q))
        .map(|t| (t, t.status.as_ref().map(|s| s.phase).unwrap_or_default()))
        .filter(|(_, phase)| {
            *phase == TaskPhase::Queued
                || (all && matches!(phase, TaskPhase::Admitted | TaskPhase::Running))
        })
        .collect();
    let position = |t: &MLTask| t.status.as_ref().and_then(|s| s.queue_position);
    rows.sort_by_key(|(t, phase)| {
        (
            t.spec.queue.clone(),
            *phase == TaskPhase::Queued,
            position(t).unwrap_or(u32::MAX),
            t.metadata.creation_timestamp,
        )
    });
    let mut table = Table::new(&[
        "QUEUE", "POSITION", "TASK", "GPUS", "PRIORITY", "WAITING", "REASON",
    ]);
    for (t, phase) in rows {
        let st = t.status.clone().unwrap_or_default();
        let (pos, waiting, reason) = if phase == TaskPhase::Queued {
            (
                position(t).map_or("-".to_string(), |p| p.to_string()),
                t.metadata
                    .creation_timestamp
                    .map_or("<unknown>".into(), |c| human_duration(now - c)),
                st.pending_reason.clone().unwrap_or_default(),
            )
        } else {
            ("-".to_string(), "-".to_string(), format!("{phase:?}"))
        };
        let name = if t.metadata.ns() == kumo_api::DEFAULT_NAMESPACE {
            t.metadata.name.clone()
        } else {
            format!("{}/{}", t.metadata.ns(), t.metadata.name)
        };
        table.rows.push(vec![
            t.spec.queue.clone(),
            pos,
            name,
            format!("{}×{}", t.spec.parallelism, t.spec.resources.gpus),
            t.spec.priority.to_string(),
            waiting,
            reason,
        ]);
    }
    table
}

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The task's name (or mltask/NAME)
    pub name: String,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    super::finish(cancel_task(args).await)
}

async fn cancel_task(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let name = match args.name.split_once('/') {
        Some(_) => {
            let (kind, name) = super::kind_and_name(&args.name)?;
            if kind.kind != "MLTask" {
                anyhow::bail!("only MLTasks are cancelled: kumo cancel NAME");
            }
            name
        }
        None => super::check_name(&args.name)?,
    };
    let client = client(&args.connect)?;
    let task: MLTask = client
        .patch(
            args.ns.or_default(),
            &name,
            &json!({"spec": {"cancel": true}}),
        )
        .await?;
    let phase = task.status.map(|s| s.phase).unwrap_or_default();
    if phase.is_finished() && phase != TaskPhase::Cancelled {
        out(format!("mltask.kumo.dev/{name} already ended ({phase:?})"));
    } else {
        out(format!("mltask.kumo.dev/{name} cancelled"));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn waiting_tasks_in_line() {
        let now = Utc.timestamp_opt(1_700_000_600, 0).unwrap();
        let tasks: Vec<MLTask> = serde_json::from_value(json!([
            {"metadata": {"name": "b", "creationTimestamp": "2023-11-14T22:13:20Z"},
             "spec": {"runtimeClassName": "process", "command": ["x"], "parallelism": 2, "resources": {"gpus": 4}},
             "status": {"phase": "Queued", "queuePosition": 2, "pendingReason": "needs 2×4 GPUs; free: n1 0"}},
            {"metadata": {"name": "a", "creationTimestamp": "2023-11-14T22:18:20Z"},
             "spec": {"runtimeClassName": "process", "command": ["x"], "resources": {"gpus": 2}, "priority": 5},
             "status": {"phase": "Queued", "queuePosition": 1, "pendingReason": "needs 1×2 GPUs; free: n1 0"}},
            {"metadata": {"name": "r"}, "spec": {"runtimeClassName": "process", "command": ["x"]},
             "status": {"phase": "Running"}}
        ]))
        .unwrap();
        let expected = "\
QUEUE     POSITION   TASK   GPUS   PRIORITY   WAITING   REASON
default   1          a      1×2    5          5m        needs 1×2 GPUs; free: n1 0
default   2          b      2×4    0          10m       needs 2×4 GPUs; free: n1 0
";
        assert_eq!(queue_table(&tasks, None, false, now).render(true), expected);
        assert_eq!(queue_table(&tasks, None, true, now).rows.len(), 3);
        assert!(queue_table(&tasks, Some("research"), true, now)
            .rows
            .is_empty());
    }
}
