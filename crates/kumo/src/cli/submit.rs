//! `kumo submit`: creates an MLTask from flags and follows its status until it starts (or, with
//! `--follow`, until it ends).

use super::{client, out, NamespaceArgs};
use anyhow::{anyhow, bail};
use kumo_api::mltask::{MLTask, MLTaskStatus, TaskPhase};
use kumo_api::{kind_by_name, Quantity, Queue};
use kumo_client::{Client, ListParams, Watched};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The task's name
    pub name: String,
    /// Container image to run (runc by default, or --runtime runsc)
    #[arg(long)]
    pub image: Option<String>,
    /// Runtime class: `process` runs the command on the node without an image; runc, runsc
    #[arg(long)]
    pub runtime: Option<String>,
    /// GPUs per replica
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gpus: i64,
    /// Replicas (one pod each); WORLD_SIZE
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub parallelism: i32,
    /// CPU per replica (e.g. 2, 500m)
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory per replica (e.g. 8Gi)
    #[arg(long)]
    pub memory: Option<String>,
    /// GPU model the nodes must have (their kumo.dev/gpu-model label)
    #[arg(long)]
    pub gpu_model: Option<String>,
    /// Queue to wait in
    #[arg(long, default_value = kumo_api::mltask::DEFAULT_QUEUE)]
    pub queue: String,
    /// Higher goes first in its queue
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Whole-gang restarts after a replica fails
    #[arg(long, allow_negative_numbers = true)]
    pub max_retries: Option<i32>,
    /// Stop the task after this many seconds (also lets it backfill)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub deadline: Option<i64>,
    /// Port replicas rendezvous on (MASTER_PORT, default 29500)
    #[arg(long)]
    pub master_port: Option<u16>,
    /// Training data: an absolute directory on the nodes (read-only at /data), or a dataset name
    #[arg(long, value_name = "DIR|DATASET")]
    pub data: Option<String>,
    /// Where the task's /output is kept, relative to the output root
    #[arg(long, value_name = "PATH")]
    pub output: Option<String>,
    /// Scratch space at /scratch (SCRATCH_DIR), kept across retries on the same node; a size
    /// limit such as 50Gi, or "none"
    #[arg(long, value_name = "SIZE")]
    pub scratch: Option<String>,
    /// An environment variable for every replica, K=V; repeatable
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Follow the task to its end; exit non-zero unless it Succeeded
    #[arg(short = 'f', long, conflicts_with = "detach")]
    pub follow: bool,
    /// Return as soon as the task is created
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// The command and its arguments (after --)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    super::finish(submit(args).await)
}

/// The task the flags describe, as the API would store it (validated with the server's rules).
pub fn task_from(args: &SubmitArgs) -> anyhow::Result<Value> {
    let name = super::check_name(&args.name)?;
    let mut resources = json!({"gpus": args.gpus});
    for (key, value) in [("cpu", &args.cpu), ("memory", &args.memory)] {
        if let Some(v) = value {
            Quantity::parse(v).map_err(|_| anyhow!("--{key}: invalid quantity {v:?}"))?;
            resources[key] = json!(v);
        }
    }
    if let Some(m) = &args.gpu_model {
        resources["gpuModel"] = json!(m);
    }
    let mut env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--env {kv:?} is not K=V"))?;
        env.push(json!({"name": k, "value": v}));
    }
    let mut spec = json!({
        "command": args.command,
        "parallelism": args.parallelism,
        "resources": resources,
        "queue": args.queue,
        "priority": args.priority,
    });
    let fields = [
        ("image", args.image.as_ref().map(|v| json!(v))),
        ("runtimeClassName", args.runtime.as_ref().map(|v| json!(v))),
        ("maxRetries", args.max_retries.map(|v| json!(v))),
        ("activeDeadlineSeconds", args.deadline.map(|v| json!(v))),
        ("masterPort", args.master_port.map(|v| json!(v))),
        ("env", (!env.is_empty()).then(|| json!(env))),
        ("output", args.output.as_ref().map(|p| json!({"path": p}))),
        (
            "scratch",
            args.scratch.as_ref().map(|s| match s.as_str() {
                "none" => json!({}),
                size => json!({"sizeLimit": size}),
            }),
        ),
        (
            "data",
            args.data.as_ref().map(|d| match d.starts_with('/') {
                true => json!({"hostPath": d}),
                false => json!({"dataset": d}),
            }),
        ),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            spec[key] = v;
        }
    }
    let task = json!({
        "apiVersion": "kumo.dev/v1", "kind": "MLTask",
        "metadata": {"name": name, "namespace": args.ns.or_default()},
        "spec": spec,
    });
    let kind = kind_by_name("mltasks").ok_or_else(|| anyhow!("this kumo does not know MLTasks"))?;
    (kind.admit)(task).map_err(|errors| {
        anyhow!(
            "the task is not valid: {}",
            kumo_api::validation::join_errors(&errors)
        )
    })
}

async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let task: MLTask = serde_json::from_value(task_from(&args)?)?;
    let client = client(&args.connect)?;
    if task.spec.queue != kumo_api::mltask::DEFAULT_QUEUE
        && client
            .get_opt::<Queue>("", &task.spec.queue)
            .await?
            .is_none()
    {
        bail!(
            "spec.queue: queue {:?} does not exist (see kumo get queues)",
            task.spec.queue
        );
    }
    if let Some(name) = task.spec.data.as_ref().and_then(|d| d.dataset.as_ref()) {
        if let Err(e) = kumo_client::data::get_dataset(&client, name).await {
            if e.is_not_found() {
                bail!(
                    "spec.data.dataset: dataset {name:?} does not exist (see kumo dataset ls; push it with kumo dataset push DIR {name})"
                );
            }
            return Err(e.into());
        }
    }
    let created = client.create(&task).await?;
    out(format!(
        "mltask.kumo.dev/{} submitted",
        created.metadata.name
    ));
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    follow(
        &client,
        created.metadata.ns(),
        &created.metadata.name,
        args.follow,
    )
    .await
}

/// One line saying where a task stands.
pub fn describe_status(name: &str, st: &MLTaskStatus) -> String {
    let mut line = format!("{name}: {:?}", st.phase);
    if let Some(p) = st.queue_position {
        line.push_str(&format!(" (position {p})"));
    }
    if st.attempts > 1 {
        line.push_str(&format!(", attempt {}", st.attempts));
    }
    let detail = match st.phase {
        TaskPhase::Queued => st.pending_reason.clone(),
        TaskPhase::Admitted | TaskPhase::Running => {
            let mut nodes: Vec<&str> = st
                .replicas
                .iter()
                .filter_map(|r| r.node.as_deref())
                .collect();
            nodes.dedup();
            (!nodes.is_empty())
                .then(|| format!("{} replica(s) on {}", st.replicas.len(), nodes.join(", ")))
        }
        _ => st.message.clone(),
    };
    if let Some(d) = detail {
        line.push_str(": ");
        line.push_str(&d);
    }
    line
}

/// Prints a line each time the task's standing changes, until it starts (or ends, with `to_end`).
/// On a terminal the current line carries a spinner and how long it has held. Ctrl-C stops
/// following; the task goes on.
async fn follow(client: &Client, ns: &str, name: &str, to_end: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let spinner = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(format!("{name}: waiting for the controller"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let show = |line: &str, last: &str| match &spinner {
        Some(bar) => {
            if !last.is_empty() {
                bar.println(last);
            }
            bar.set_message(line.to_string());
            bar.reset_elapsed();
        }
        None => out(line),
    };
    let result = tokio::select! {
        r = watch_standing(client, ns, name, to_end, &show) => r,
        _ = tokio::signal::ctrl_c() => {
            if let Some(bar) = &spinner {
                bar.finish_and_clear();
            }
            eprintln!("stopped following; mltask {name} goes on (kumo get mltask {name})");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(bar) = &spinner {
        let last = bar.message();
        bar.finish_and_clear();
        out(last);
    }
    result
}

async fn watch_standing(
    client: &Client,
    ns: &str,
    name: &str,
    to_end: bool,
    show: &dyn Fn(&str, &str),
) -> anyhow::Result<ExitCode> {
    let params = ListParams::fields(&format!("metadata.name={name}"));
    let mut last = String::new();
    loop {
        let mut watch = client.watch::<MLTask>(Some(ns), &params, "").await?;
        while let Some(event) = watch.next().await {
            let task = match event {
                Ok(Watched::Added(t) | Watched::Modified(t)) => t,
                Ok(Watched::Deleted(_)) => bail!("mltask {name} was deleted"),
                Ok(_) => continue,
                Err(_) => break,
            };
            // Until the controller has looked at it, there is nothing to say.
            let Some(st) = task.status.clone() else {
                continue;
            };
            let line = describe_status(name, &st);
            if line != last {
                show(&line, &last);
                last = line;
            }
            let done = match st.phase {
                TaskPhase::Succeeded => return Ok(ExitCode::SUCCESS),
                TaskPhase::Failed | TaskPhase::Cancelled => return Ok(ExitCode::FAILURE),
                TaskPhase::Running => !to_end,
                _ => false,
            };
            if done {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<Value> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            submit: SubmitArgs,
        }
        let mut argv = vec!["kumo"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| anyhow!("{e}"))?;
        task_from(&cli.submit)
    }

    #[test]
    fn flags_become_a_task() {
        let t = parse(&[
            "resnet",
            "--runtime",
            "process",
            "--gpus",
            "2",
            "--parallelism",
            "4",
            "--queue",
            "research",
            "--priority",
            "10",
            "-e",
            "LR=0.1",
            "--",
            "python3",
            "-c",
            "print(1)",
        ])
        .unwrap();
        assert_eq!(t["spec"]["command"], json!(["python3", "-c", "print(1)"]));
        assert_eq!(t["spec"]["parallelism"], 4);
        assert_eq!(t["spec"]["resources"]["gpus"], 2);
        assert_eq!(t["spec"]["queue"], "research");
        assert_eq!(t["spec"]["env"][0]["value"], "0.1");
        assert_eq!(t["spec"]["maxRetries"], 3);
        let t = parse(&[
            "boxed",
            "--image",
            "train:1",
            "--runtime",
            "runsc",
            "--",
            "python",
        ])
        .unwrap();
        assert_eq!(
            (
                t["spec"]["image"].as_str(),
                t["spec"]["runtimeClassName"].as_str()
            ),
            (Some("train:1"), Some("runsc"))
        );
    }

    #[test]
    fn bad_flags_name_the_field() {
        let err = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert_eq!(
            err(&[
                "t",
                "--runtime",
                "process",
                "--parallelism",
                "0",
                "--",
                "true"
            ]),
            "the task is not valid: spec.parallelism: Invalid value: 0: must be between 1 and 1000, inclusive"
        );
        assert_eq!(
            err(&["t", "--runtime", "process", "--gpus", "-1", "--", "true"]),
            "the task is not valid: spec.resources.gpus: Invalid value: -1: must be between 0 and 64, inclusive"
        );
        // The deadline, refused before anything is sent.
        assert_eq!(
            err(&[
                "t",
                "--runtime",
                "process",
                "--deadline",
                "9000000000000000000",
                "--",
                "true"
            ]),
            "the task is not valid: spec.activeDeadlineSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive"
        );
        assert_eq!(
            err(&["t", "--runtime", "process", "--priority", "2147483647", "--", "true"]),
            "the task is not valid: spec.priority: Invalid value: 2147483647: must be between -1000000000 and 1000000000, inclusive"
        );
        assert_eq!(
            err(&[
                "t",
                "--runtime",
                "process",
                "--memory",
                "12XB",
                "--",
                "true"
            ]),
            "--memory: invalid quantity \"12XB\""
        );
        assert_eq!(
            err(&["t", "--", "true"]),
            "the task is not valid: spec.image: Required value: an image is required unless runtimeClassName is \"process\""
        );
    }
}

#[cfg(test)]
mod status_lines {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_line_per_standing() {
        let st = |v: Value| -> MLTaskStatus { serde_json::from_value(v).unwrap() };
        assert_eq!(
            describe_status(
                "t",
                &st(
                    json!({"phase": "Queued", "queuePosition": 1, "pendingReason": "needs 1×2 GPUs; free: n1 0"})
                )
            ),
            "t: Queued (position 1): needs 1×2 GPUs; free: n1 0"
        );
        assert_eq!(
            describe_status(
                "t",
                &st(json!({"phase": "Running", "attempts": 2,
                "replicas": [{"rank": 0, "pod": "t-0", "node": "a"}, {"rank": 1, "pod": "t-1", "node": "b"}]}))
            ),
            "t: Running, attempt 2: 2 replica(s) on a, b"
        );
        assert_eq!(
            describe_status(
                "t",
                &st(
                    json!({"phase": "Failed", "message": "replica 1 failed (exit code 3) on attempt 1 of 1; no retries left"})
                )
            ),
            "t: Failed: replica 1 failed (exit code 3) on attempt 1 of 1; no retries left"
        );
    }
}
