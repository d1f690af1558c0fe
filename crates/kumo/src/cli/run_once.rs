//! `kumo run APP -- CMD`: a one-off process in the app's current release (its image, config and
//! runtime), with its output attached; exits with the command's exit code.

use super::{client, NamespaceArgs};
use anyhow::{anyhow, bail};
use kumo_api::app::{release_name, App, Release, LABEL_ONE_OFF};
use kumo_api::{Pod, RestartPolicy};
use kumo_client::LogParams;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How long a one-off pod may take to start (image pulls included).
const START_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    pub app: String,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The one-off pod: the release's replica shape with the given command, run once.
pub fn one_off_pod(app: &App, release: &Release, command: &[String]) -> Pod {
    let mut pod = kumo_controllers::apps::pods::replica(app, release, "run");
    pod.metadata.generate_name = Some(format!("{}-run-", app.metadata.name));
    pod.metadata
        .labels
        .insert(LABEL_ONE_OFF.into(), "true".into());
    pod.spec.restart_policy = RestartPolicy::Never;
    pod.spec.containers[0].command = command.to_vec();
    pod
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    super::finish(one_off(args).await)
}

async fn one_off(args: RunArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    let ns = args.ns.or_default();
    let app: App = client.get(ns, &args.app).await?;
    let status = app.status.clone().unwrap_or_default();
    let version = status
        .active_release
        .or(status.latest_release)
        .ok_or_else(|| anyhow!("app {} has no release yet", args.app))?;
    let release: Release = client.get(ns, &release_name(&args.app, version)).await?;
    let pod = client
        .create(&one_off_pod(&app, &release, &args.command))
        .await?;
    let name = pod.metadata.name.clone();
    let result = attach(&client, ns, &name).await;
    // The pod has done its job (or the command failed to start): it goes either way.
    let _ = client.delete::<Pod>(ns, &name, Some(0)).await;
    result
}

async fn attach(client: &kumo_client::Client, ns: &str, name: &str) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        let pod: Pod = client.get(ns, name).await?;
        let started = pod.status.as_ref().is_some_and(|s| {
            s.phase.is_terminal()
                || s.container_statuses
                    .iter()
                    .any(|c| c.state.running.is_some() || c.state.terminated.is_some())
        });
        if started {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("pod {name} did not start within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let params = LogParams {
        container: None,
        follow: true,
        tail_lines: None,
    };
    let mut stream = client.logs(ns, name, &params).await?;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next_chunk().await {
        match chunk {
            Ok(bytes) => {
                let _ = stdout.write_all(&bytes).and_then(|_| stdout.flush());
            }
            Err(e) => bail!("the output of {name} broke off: {e}"),
        }
    }
    loop {
        let pod: Pod = client.get(ns, name).await?;
        let code = pod
            .status
            .as_ref()
            .filter(|s| s.phase.is_terminal())
            .and_then(|s| s.container_statuses.first())
            .and_then(|c| c.state.terminated.as_ref())
            .map(|t| t.exit_code);
        if let Some(code) = code {
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("pod {name} did not finish");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
