//! `kumo secrets reencrypt`: every Secret read and written back, so that each is stored under
//! the first key of the server's encryption config (the rewrite step of a key rotation, as
//! `kubectl get secrets -A -o json | kubectl replace -f -` is in Kubernetes).

use super::{client, item_error, out};
use kumo_api::Secret;
use kumo_client::ListParams;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SecretsArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretsCommand {
    /// Rewrite every Secret with the encryption config's current key (after a key rotation)
    Reencrypt,
}

pub async fn run(args: SecretsArgs) -> anyhow::Result<ExitCode> {
    super::finish(secrets(args).await)
}

async fn secrets(args: SecretsArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    let SecretsCommand::Reencrypt = args.command;
    let list = client.list::<Secret>(None, &ListParams::default()).await?;
    let (mut rewritten, mut failed) = (0usize, 0usize);
    for s in &list.items {
        let ns = s
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(kumo_api::DEFAULT_NAMESPACE);
        let name = &s.metadata.name;
        // An empty merge patch changes nothing but is written when the stored bytes are stale
        // (plain, or under a key that is no longer first); a Secret changed meanwhile was
        // written with the current key already.
        match client
            .patch::<Secret>(ns, name, &serde_json::json!({}))
            .await
        {
            Ok(_) => rewritten += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                failed += 1;
                eprintln!("secret {ns}/{name}: {}", item_error(&e.into()));
            }
        }
    }
    out(format!(
        "{rewritten} secret(s) stored with the current key{}",
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    ));
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
