//! `kumo logs`: copies a pod container's log to stdout, following it with `-f`.

use super::{client, kind_and_name, NamespaceArgs};
use anyhow::bail;
use kumo_client::LogParams;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The pod: NAME or pod/NAME; or mltask/NAME for every replica of a task
    #[arg(value_name = "POD")]
    pub pod: String,
    /// Keep printing as the container writes
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<i64>,
    /// The container (default: the pod's only one)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// With app/NAME: only this process's replicas
    #[arg(long)]
    pub process: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    super::finish(logs(args).await)
}

/// The pod's name from `NAME` or `pod/NAME`.
fn pod_name(arg: &str) -> anyhow::Result<String> {
    if !arg.contains('/') {
        return super::check_name(arg);
    }
    let (kind, name) = kind_and_name(arg)?;
    if kind.kind != "Pod" {
        bail!(
            "logs are read from pods, not {}: kumo logs pod/NAME",
            kind.plural
        );
    }
    Ok(name)
}

async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    if let Some(app) = args.pod.strip_prefix("app/") {
        return super::app_logs::logs(&args, app).await;
    }
    if args.tail.is_some_and(|t| t < 0) {
        bail!("--tail must be 0 or more lines");
    }
    if let Some(task) = super::mltask_logs::task_name(&args.pod)? {
        let client = client(&args.connect)?;
        return super::mltask_logs::logs(
            &client,
            args.ns.or_default(),
            &task,
            args.follow,
            args.tail,
        )
        .await;
    }
    let name = pod_name(&args.pod)?;
    let client = client(&args.connect)?;
    let params = LogParams {
        container: args.container.clone(),
        follow: args.follow,
        tail_lines: args.tail,
    };
    let mut stream = client.logs(args.ns.or_default(), &name, &params).await?;
    let mut stdout = std::io::stdout();
    loop {
        let chunk = tokio::select! {
            c = stream.next_chunk() => c,
            _ = tokio::signal::ctrl_c() => break,
        };
        match chunk {
            None => break,
            Some(Ok(bytes)) => {
                // A closed pipe (`kumo logs x | head`) ends the copy quietly.
                if stdout
                    .write_all(&bytes)
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
            Some(Err(e)) => bail!("the log stream of pod {name} broke: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names() {
        assert_eq!(pod_name("web").ok(), Some("web".into()));
        assert_eq!(pod_name("po/web").ok(), Some("web".into()));
        assert_eq!(
            pod_name("node/n1").map_err(|e| e.to_string()).err(),
            Some("logs are read from pods, not nodes: kumo logs pod/NAME".into())
        );
    }
}
