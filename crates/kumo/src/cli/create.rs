//! `kumo create secret docker-registry|generic NAME ...` and `kumo create namespace NAME`: make
//! an object from flags, as kubectl does, so that registry credentials never have to be
//! base64-encoded by hand and a namespace needs no manifest.

use super::{client, NamespaceArgs};
use anyhow::{anyhow, bail};
use kumo_api::validation::Errors;
use kumo_api::{Namespace, Resource, Secret};
use std::io::Read;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(subcommand)]
    pub what: CreateWhat,
}

#[derive(clap::Subcommand, Debug)]
pub enum CreateWhat {
    /// Create a Secret
    #[command(subcommand)]
    Secret(SecretKind),
    /// Create a Namespace (alias: ns)
    #[command(visible_alias = "ns")]
    Namespace(NamespaceCreateArgs),
}

#[derive(clap::Args, Debug)]
pub struct NamespaceCreateArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    pub name: String,
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretKind {
    /// Registry credentials for pods' imagePullSecrets (type kubernetes.io/dockerconfigjson)
    DockerRegistry(DockerRegistryArgs),
    /// Opaque values from literals
    Generic(GenericArgs),
}

#[derive(clap::Args, Debug)]
pub struct DockerRegistryArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    pub name: String,
    /// The registry (host[:port])
    #[arg(long)]
    pub docker_server: String,
    #[arg(long)]
    pub docker_username: String,
    /// The password (or token); see also --password-stdin
    #[arg(long, conflicts_with = "password_stdin")]
    pub docker_password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(clap::Args, Debug)]
pub struct GenericArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    pub name: String,
    /// KEY=VALUE (repeatable)
    #[arg(long = "from-literal", required = true)]
    pub literals: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn run(args: CreateArgs) -> anyhow::Result<ExitCode> {
    super::finish(create(args).await)
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let kind = match args.what {
        CreateWhat::Secret(kind) => kind,
        CreateWhat::Namespace(a) => return create_namespace(a).await,
    };
    let (connect, ns, mut secret) = match kind {
        SecretKind::DockerRegistry(a) => {
            let password = match (a.docker_password, a.password_stdin) {
                (Some(p), _) => p,
                (None, true) => {
                    let mut p = String::new();
                    std::io::stdin().read_to_string(&mut p)?;
                    p.trim_end_matches(['\r', '\n']).to_string()
                }
                (None, false) => bail!("--docker-password or --password-stdin is required"),
            };
            if a.docker_server.is_empty() || a.docker_username.is_empty() {
                bail!("--docker-server and --docker-username must not be empty");
            }
            let s =
                Secret::docker_registry(&a.name, &a.docker_server, &a.docker_username, &password);
            (a.connect, a.ns, s)
        }
        SecretKind::Generic(a) => {
            let mut s = Secret::default();
            s.metadata.name = a.name.clone();
            for lit in &a.literals {
                let (k, v) = lit
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--from-literal {lit:?}: expected KEY=VALUE"))?;
                s.string_data.insert(k.to_string(), v.to_string());
            }
            s.normalize();
            (a.connect, a.ns, s)
        }
    };
    secret.metadata.namespace = Some(ns.or_default().to_string());
    // Checked here too, so a bad name or key is reported before anything is sent.
    let mut errors = Errors::default();
    kumo_api::object::validate_meta(&secret.metadata, true, false, &mut errors);
    secret.validate(&mut errors);
    if let Err(errs) = errors.into_result() {
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        bail!("invalid secret: {}", lines.join("; "));
    }
    let client = client(&connect)?;
    let created = client.create(&secret).await?;
    println!("secret/{} created", created.metadata.name);
    Ok(ExitCode::SUCCESS)
}

async fn create_namespace(a: NamespaceCreateArgs) -> anyhow::Result<ExitCode> {
    let mut ns = Namespace::default();
    ns.metadata.name = a.name;
    let mut errors = Errors::default();
    kumo_api::object::validate_meta(&ns.metadata, false, true, &mut errors);
    if let Err(errs) = errors.into_result() {
        let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        bail!("invalid namespace: {}", lines.join("; "));
    }
    let created = client(&a.connect)?.create(&ns).await?;
    println!("namespace/{} created", created.metadata.name);
    Ok(ExitCode::SUCCESS)
}
