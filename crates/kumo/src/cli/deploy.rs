//! `kumo deploy`, `kumo scale`, `kumo rollback`: changing what an app runs, and following the
//! rollout a new release starts.

use super::app_edit::{
    follow_rollout, latest_version, parse_scale, parse_version, releases, restore, rollback_target,
    update_app, wait_release,
};
use super::{client, out, NamespaceArgs};
use kumo_api::app::App;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    pub app: String,
    /// The image to deploy
    #[arg(long)]
    pub image: String,
    /// Return once the release is made, without following the rollout
    #[arg(long)]
    pub no_wait: bool,
}

/// `kumo deploy APP --image IMG`: exit 0 once the new release serves, 1 if it was abandoned.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    super::finish(
        async {
            let client = client(&args.connect)?;
            let ns = args.ns.or_default();
            let before = latest_version(&client, ns, &args.app).await?;
            let image = args.image.clone();
            let cause = format!("Deploy {image}");
            let (old, new) = update_app(&client, ns, &args.app, Some(&cause), |a: &App| {
                let mut a = a.clone();
                a.spec.image = Some(image.clone());
                Ok(a)
            })
            .await?;
            if old.spec == new.spec {
                out(format!("app {}: already runs {image}", args.app));
                return Ok(ExitCode::SUCCESS);
            }
            rollout(&client, ns, &args.app, before, &cause, args.no_wait).await
        }
        .await,
    )
}

async fn rollout(
    client: &kumo_client::Client,
    ns: &str,
    app: &str,
    before: i64,
    cause: &str,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let r = wait_release(client, ns, app, before).await?;
    out(format!("{cause}: release v{} of app {app}", r.spec.version));
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if follow_rollout(client, ns, app, r.spec.version).await? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    pub app: String,
    /// PROCESS=REPLICAS pairs
    #[arg(required = true, value_name = "PROCESS=N")]
    pub pairs: Vec<String>,
}

/// `kumo scale APP web=3 worker=0`: replica counts only; not a release (as on Heroku).
pub async fn scale(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    super::finish(
        async {
            let client = client(&args.connect)?;
            let ns = args.ns.or_default();
            let pairs = args.pairs.clone();
            let (_, new) = update_app(&client, ns, &args.app, None, move |a: &App| {
                let counts = parse_scale(a, &pairs)?;
                let mut a = a.clone();
                for (p, n) in counts {
                    if let Some(spec) = a.spec.processes.get_mut(&p) {
                        spec.replicas = n;
                    }
                }
                Ok(a)
            })
            .await?;
            let shape: Vec<String> = new
                .spec
                .processes
                .iter()
                .map(|(p, s)| format!("{p}={}", s.replicas))
                .collect();
            out(format!("app {}: {}", args.app, shape.join(" ")));
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    pub app: String,
    /// The release to restore, vN (default: the one before the active release)
    #[arg(value_name = "vN")]
    pub release: Option<String>,
    /// Return once the release is made, without following the rollout
    #[arg(long)]
    pub no_wait: bool,
}

/// `kumo rollback APP [vN]`: a new release with vN's image, config and processes.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    super::finish(
        async {
            let version = args.release.as_deref().map(parse_version).transpose()?;
            let client = client(&args.connect)?;
            let ns = args.ns.or_default();
            let rels = releases(&client, ns, &args.app).await?;
            let app: App = client.get(ns, &args.app).await?;
            let target = rollback_target(&app, &rels, version)?.clone();
            let before = rels.last().map_or(0, |r| r.spec.version);
            let cause = format!("Rollback to v{}", target.spec.version);
            let (old, new) = update_app(&client, ns, &args.app, Some(&cause), |a: &App| {
                Ok(restore(a, &target))
            })
            .await?;
            let content = kumo_api::app::ReleaseContent::of(&new.spec);
            let same_build = rels
                .last()
                .is_some_and(|l| l.spec.content.same_build(&content));
            if old.spec == new.spec || same_build {
                out(format!(
                    "app {} already runs what v{} ran",
                    args.app, target.spec.version
                ));
                return Ok(ExitCode::SUCCESS);
            }
            rollout(&client, ns, &args.app, before, &cause, args.no_wait).await
        }
        .await,
    )
}
