//! `kumo delete`: deletes objects named on the command line or in manifests, optionally waiting.

use super::manifest;
use super::watch::wait_for;
use super::{client, item_error, kind_and_name, object_path, resolve_kind, NamespaceArgs};
use anyhow::bail;
use http::Method;
use kumo_api::KindInfo;
use kumo_client::{with_query, ClientError};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// A kind followed by names, or KIND/NAME arguments
    #[arg(value_name = "KIND")]
    pub kind: Option<String>,
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Delete the objects in these manifests (file, directory or -); repeatable
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        conflicts_with = "kind"
    )]
    pub files: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// Wait until the objects are gone
    #[arg(long)]
    pub wait: bool,
    /// How long to wait with --wait, e.g. 30s, 2m
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse_timeout)]
    pub timeout: Duration,
    /// Seconds a pod's containers get to stop (0: at once; default: the pod's own)
    #[arg(long, value_name = "SECONDS")]
    pub grace_period: Option<i64>,
    /// Treat objects that do not exist as deleted
    #[arg(long)]
    pub ignore_not_found: bool,
}

pub async fn run(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    super::finish(delete(args).await)
}

/// The objects to delete: (kind, namespace, name).
fn targets(args: &DeleteArgs) -> anyhow::Result<Vec<(&'static KindInfo, String, String)>> {
    let ns = args.ns.or_default().to_string();
    if !args.files.is_empty() {
        return match manifest::load(&args.files, args.ns.namespace.as_deref()) {
            Ok(ms) => Ok(ms
                .into_iter()
                .map(|m| (m.kind, m.namespace.unwrap_or_else(|| ns.clone()), m.name))
                .collect()),
            Err(errors) => bail!("{}\nnothing was deleted", errors.join("\n")),
        };
    }
    let Some(first) = &args.kind else {
        bail!("say what to delete: kumo delete KIND NAME..., kumo delete KIND/NAME..., or kumo delete -f FILE");
    };
    if first.contains('/') {
        return std::iter::once(first)
            .chain(&args.names)
            .map(|t| kind_and_name(t).map(|(k, n)| (k, ns.clone(), n)))
            .collect();
    }
    let kind = resolve_kind(first)?;
    if args.names.is_empty() {
        bail!(
            "say which {} to delete: kumo delete {} NAME...",
            kind.plural,
            kind.singular
        );
    }
    args.names
        .iter()
        .map(|n| Ok((kind, ns.clone(), super::check_name(n)?)))
        .collect()
}

async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    if args.grace_period.is_some_and(|g| g < 0) {
        bail!("--grace-period must be 0 or more seconds");
    }
    let targets = targets(&args)?;
    let client = client(&args.connect)?;
    let mut failed = false;
    let mut deleted = Vec::new();
    for (kind, ns, name) in &targets {
        let mut query = Vec::new();
        if let Some(g) = args.grace_period {
            query.push(("gracePeriodSeconds", g.to_string()));
        }
        let path = with_query(&object_path(kind, ns, name), &query);
        match client
            .request_json::<Value>(Method::DELETE, &path, None)
            .await
        {
            Ok(_) => {
                super::out(format!("{} {name:?} deleted", super::kind_ref(kind)));
                deleted.push((*kind, ns, name));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e @ ClientError::Connect { .. }) => return Err(e.into()),
            Err(e) => {
                failed = true;
                eprintln!("{}", item_error(&e.into()));
            }
        }
    }
    if args.wait {
        let deadline = tokio::time::Instant::now() + args.timeout;
        for (kind, ns, name) in deleted {
            if !wait_for(&client, kind, ns, name, &|o| o.is_none(), deadline).await? {
                bail!(
                    "timed out after {:?} waiting for {}/{name} to be deleted: it may still be stopping; check with `kumo get {} {name}`",
                    args.timeout,
                    super::resource(kind),
                    kind.plural
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn check(args: &[&str], expected: &str) {
        let got =
            match crate::Cli::try_parse_from(std::iter::once("kumo").chain(args.iter().copied())) {
                Err(e) => format!("parse error: {:?}", e.kind()),
                Ok(cli) => match cli.command {
                    crate::Command::Delete(d) => match targets(&d) {
                        Ok(t) => t
                            .iter()
                            .map(|(k, ns, n)| format!("{}/{ns}/{n}", k.singular))
                            .collect::<Vec<_>>()
                            .join(" "),
                        Err(e) => format!("error: {e}"),
                    },
                    _ => "not delete".into(),
                },
            };
        assert_eq!(got, expected, "{args:?}");
    }

    #[test]
    fn what_to_delete() {
        check(
            &["delete", "po", "a", "b", "-n", "dev"],
            "pod/dev/a pod/dev/b",
        );
        check(
            &["delete", "pod/a", "node/n1"],
            "pod/default/a node/default/n1",
        );
        check(&["delete"], "error: say what to delete: kumo delete KIND NAME..., kumo delete KIND/NAME..., or kumo delete -f FILE");
        check(
            &["delete", "pods"],
            "error: say which pods to delete: kumo delete pod NAME...",
        );
        check(
            &["delete", "pod", "x", "--timeout", "soon"],
            "parse error: ValueValidation",
        );
    }
}
