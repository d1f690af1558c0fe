//! `kumo app create`, `kumo apps`, `kumo releases`, `kumo open`: making and reading Apps.

use super::app_edit::releases;
use super::format::{age, Table};
use super::{client, out, NamespaceArgs};
use anyhow::bail;
use kumo_api::app::{App, AppSpec, ProcessSpec, Protocol, WEB_PROCESS};
use kumo_api::pod::RUNTIME_PROCESS;
use kumo_api::{ObjectMeta, Resource};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AppArgs {
    #[command(subcommand)]
    pub command: AppCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app: from an image, or a command run by the process runtime
    Create(CreateArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    pub name: String,
    /// The image every process runs
    #[arg(long)]
    pub image: Option<String>,
    /// Runtime class: `process` runs the command as a host process (no image); runc, runsc
    #[arg(long)]
    pub runtime: Option<String>,
    /// The port the web process listens on (`PORT`; the process runtime picks free ports)
    #[arg(long)]
    pub port: Option<i64>,
    /// Web replicas
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,
    /// The web process speaks HTTP/2 without TLS (gRPC)
    #[arg(long)]
    pub h2c: bool,
    /// Readiness: GET this path (default: a TCP connect to the port)
    #[arg(long, value_name = "PATH")]
    pub healthcheck: Option<String>,
    /// A domain the router sends to this app; repeatable
    #[arg(long = "domain")]
    pub domains: Vec<String>,
    /// The web process's command (the rest of the line)
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The App `kumo app create` makes.
pub fn new_app(args: &CreateArgs) -> anyhow::Result<App> {
    if args.image.is_none() && args.runtime.as_deref() != Some(RUNTIME_PROCESS) {
        bail!("give --image IMG, or --runtime process with --command");
    }
    let mut app = App {
        metadata: ObjectMeta::named(Some(args.ns.or_default()), &args.name),
        spec: AppSpec {
            image: args.image.clone(),
            runtime_class_name: args.runtime.clone(),
            domains: args.domains.clone(),
            healthcheck: args
                .healthcheck
                .clone()
                .map(|path| kumo_api::app::Healthcheck {
                    path: Some(path),
                    timeout_seconds: None,
                }),
            ..Default::default()
        },
        ..Default::default()
    };
    app.spec.processes.insert(
        WEB_PROCESS.into(),
        ProcessSpec {
            command: args.command.clone(),
            replicas: args.replicas,
            port: args.port,
            protocol: args.h2c.then_some(Protocol::H2c),
        },
    );
    app.set_type_meta();
    // The same admission the server runs, so a mistake is named before anything is sent.
    let value = serde_json::to_value(&app)?;
    if let Err(errors) = kumo_api::object::admit::<App>(value, true) {
        bail!(
            "the app is invalid: {}",
            kumo_api::validation::join_errors(&errors)
        );
    }
    Ok(app)
}

pub async fn run(args: AppArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AppCommand::Create(a) => super::finish(create(a).await),
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let app = new_app(&args)?;
    let client = client(&args.connect)?;
    client.create(&app).await?;
    out(format!("app/{} created", args.name));
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct AppsArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

/// `kumo apps`: one line per app.
pub async fn list(args: AppsArgs) -> anyhow::Result<ExitCode> {
    super::finish(
        async {
            let client = client(&args.connect)?;
            let apps = client
                .list::<App>(Some(args.ns.or_default()), &Default::default())
                .await?
                .items;
            let now = chrono::Utc::now();
            let mut t = Table::new(&["NAME", "RELEASE", "STATUS", "WEB", "DOMAINS", "AGE"]);
            for a in &apps {
                let s = a.status.clone().unwrap_or_default();
                let want = a.spec.processes.get(WEB_PROCESS).map_or(0, |p| p.replicas);
                t.rows.push(vec![
                    a.metadata.name.clone(),
                    s.active_release.map_or("-".into(), |v| format!("v{v}")),
                    s.phase.unwrap_or_else(|| "Pending".into()),
                    format!("{}/{want}", s.ready.get(WEB_PROCESS).copied().unwrap_or(0)),
                    a.spec.domains.join(","),
                    age(a.metadata.creation_timestamp, now),
                ]);
            }
            if apps.is_empty() {
                eprintln!("No apps in namespace {}.", args.ns.or_default());
            } else {
                print!("{}", t.render(true));
            }
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

#[derive(clap::Args, Debug)]
pub struct AppNameArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    pub app: String,
}

/// `kumo releases APP`: newest first, as Heroku lists them.
pub async fn list_releases(args: AppNameArgs) -> anyhow::Result<ExitCode> {
    super::finish(
        async {
            let client = client(&args.connect)?;
            let ns = args.ns.or_default();
            let app: App = client.get(ns, &args.app).await?;
            let active = app.status.and_then(|s| s.active_release);
            let now = chrono::Utc::now();
            let mut t = Table::new(&["VERSION", "STATUS", "DESCRIPTION", "BY", "AGE"]);
            for r in releases(&client, ns, &args.app).await?.iter().rev() {
                let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
                t.rows.push(vec![
                    format!("v{}", r.spec.version),
                    if Some(r.spec.version) == active {
                        "Active".into()
                    } else {
                        format!("{phase:?}")
                    },
                    r.spec.description.clone(),
                    r.spec.changed_by.clone().unwrap_or_else(|| "-".into()),
                    age(r.metadata.creation_timestamp, now),
                ]);
            }
            print!("{}", t.render(true));
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// `kumo open APP`: the app's URL.
pub async fn open(args: AppNameArgs) -> anyhow::Result<ExitCode> {
    super::finish(
        async {
            let client = client(&args.connect)?;
            let app: App = client.get(args.ns.or_default(), &args.app).await?;
            match app.spec.domains.first() {
                Some(d) => out(format!("http://{d}/")),
                None => bail!(
                    "app {} has no domain: add one to spec.domains (kumo app create --domain)",
                    args.app
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn create_checks_before_sending() {
        let parse = |line: &[&str]| match crate::Cli::try_parse_from(line) {
            Ok(crate::Cli {
                command:
                    crate::Command::App(AppArgs {
                        command: AppCommand::Create(a),
                    }),
            }) => a,
            other => panic!("{other:?}"),
        };
        let a = parse(&[
            "kumo", "app", "create", "web", "--image", "r/web:1", "--port", "8080",
        ]);
        let app = new_app(&a).unwrap();
        assert_eq!(app.spec.processes["web"].port, Some(8080));
        let a = parse(&[
            "kumo",
            "app",
            "create",
            "web",
            "--image",
            "r/web:1",
            "--port",
            "1",
            "--healthcheck",
            "up",
        ]);
        assert_eq!(
            new_app(&a).unwrap_err().to_string(),
            "the app is invalid: spec.healthcheck.path: Invalid value: \"up\": must start with '/'"
        );
        let a = parse(&[
            "kumo",
            "app",
            "create",
            "web",
            "--image",
            "r/web:1",
            "--port",
            "1",
            "--replicas",
            "1001",
        ]);
        assert_eq!(
            new_app(&a).unwrap_err().to_string(),
            "the app is invalid: spec.processes.web.replicas: Invalid value: 1001: must be between 0 and 1000, inclusive"
        );
        let a = parse(&["kumo", "app", "create", "web", "--image", "r/web:1"]);
        assert_eq!(
            new_app(&a).unwrap_err().to_string(),
            "the app is invalid: spec.processes.web.port: Required value: the web process of an image app needs a port"
        );
        let a = parse(&[
            "kumo",
            "app",
            "create",
            "web",
            "--runtime",
            "process",
            "--command",
            "python3",
            "-m",
            "http.server",
        ]);
        assert_eq!(
            new_app(&a).unwrap().spec.processes["web"].command,
            ["python3", "-m", "http.server"]
        );
    }

    #[test]
    fn the_example_app_is_valid() {
        let text = include_str!("../../../../examples/app.yaml");
        let value: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let app = kumo_api::object::admit::<App>(value, true).unwrap();
        assert_eq!(app["spec"]["processes"]["web"]["replicas"], 3);
    }
}
