//! `kumo config [APP]`, `kumo config set APP K=V ...`, `kumo config unset APP K ...`: an app's
//! environment; every change is a new release.

use super::app_edit::{latest_version, parse_pairs, update_app, wait_release};
use super::{client, out, NamespaceArgs};
use anyhow::bail;
use kumo_api::app::App;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    #[command(subcommand)]
    pub command: Option<ConfigCommand>,
    /// The app (default: every app)
    pub app: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Set variables: a new release
    Set {
        app: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Remove variables: a new release
    Unset {
        app: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

/// A change to an app's spec.
type Edit = Box<dyn Fn(&App) -> anyhow::Result<App>>;

pub async fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    super::finish(config(args).await)
}

async fn config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    let ns = args.ns.or_default();
    let (app, cause, edit): (String, String, Edit) = match args.command {
        None => {
            let apps = match &args.app {
                Some(name) => vec![client.get::<App>(ns, name).await?],
                None => {
                    client
                        .list::<App>(Some(ns), &Default::default())
                        .await?
                        .items
                }
            };
            for a in &apps {
                if args.app.is_none() {
                    out(format!("=== {}", a.metadata.name));
                }
                for (k, v) in &a.spec.env {
                    out(format!("{k}={v}"));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(ConfigCommand::Set { app, pairs }) => {
            let pairs = parse_pairs(&pairs)?;
            let cause = format!(
                "Set {}",
                pairs.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            let edit = move |a: &App| {
                let mut a = a.clone();
                a.spec.env.extend(pairs.clone());
                Ok(a)
            };
            (app, cause, Box::new(edit))
        }
        Some(ConfigCommand::Unset { app, keys }) => {
            let cause = format!("Unset {}", keys.join(", "));
            let edit = move |a: &App| {
                let missing: Vec<&String> = keys
                    .iter()
                    .filter(|k| !a.spec.env.contains_key(*k))
                    .collect();
                if !missing.is_empty() {
                    bail!("app {} has no config var {:?}", a.metadata.name, missing[0]);
                }
                let mut a = a.clone();
                a.spec.env.retain(|k, _| !keys.contains(k));
                Ok(a)
            };
            (app, cause, Box::new(edit))
        }
    };
    let before = latest_version(&client, ns, &app).await?;
    let (old, new) = update_app(&client, ns, &app, Some(&cause), edit).await?;
    if old.spec == new.spec {
        out(format!("app {app}: no change"));
        return Ok(ExitCode::SUCCESS);
    }
    let r = wait_release(&client, ns, &app, before).await?;
    out(format!("{cause}: release v{} of app {app}", r.spec.version));
    Ok(ExitCode::SUCCESS)
}
