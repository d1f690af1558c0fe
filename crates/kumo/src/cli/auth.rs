//! `kumo auth can-i VERB RESOURCE[/SUB] [NAME]`: asks the server whether a request would be
//! allowed (a SelfSubjectAccessReview, or a SubjectAccessReview with `--as`) and prints `yes`
//! (exit 0) or `no` (exit 1), as kubectl does.

use anyhow::bail;
use http::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuthCommand {
    /// Check whether an action is allowed: kumo auth can-i create mltasks -n team-a
    CanI(CanIArgs),
}

#[derive(clap::Args, Debug)]
pub struct CanIArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(flatten)]
    pub ns: super::NamespaceArgs,
    /// get, list, watch, create, update, patch, delete, … or *
    pub verb: String,
    /// pods, pods/log, mltasks, mltasks.kumo.dev, datasets, … or *
    pub resource: String,
    /// The object's name (for rules that name objects)
    pub name: Option<String>,
    /// Ask for this user instead of oneself (needs the right to create subjectaccessreviews)
    #[arg(long = "as")]
    pub as_user: Option<String>,
    /// A group of the user named by --as (repeatable)
    #[arg(long = "as-group")]
    pub as_group: Vec<String>,
}

/// What RBAC sees of a resource argument: group, resource, subresource, cluster-scoped.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    group: String,
    resource: String,
    subresource: String,
    cluster_scoped: bool,
}

/// Resources that are not kinds but are authorised as `kumo.dev` resources (the data paths)
/// or as access reviews.
const EXTRA: &[(&str, &str, bool)] = &[
    ("datasets", "kumo.dev", true),
    ("blobs", "kumo.dev", true),
    ("selfsubjectaccessreviews", "authorization.k8s.io", true),
    ("subjectaccessreviews", "authorization.k8s.io", true),
];

/// `pods/log` -> ("", pods, log); `mltasks.kumo.dev` -> (kumo.dev, mltasks); `*` -> (*, *).
fn target(arg: &str) -> anyhow::Result<Target> {
    let (resource, sub) = arg.split_once('/').unwrap_or((arg, ""));
    if resource.is_empty() {
        bail!("resource: Required value: name a resource such as pods or pods/log");
    }
    let t = |group: &str, resource: &str, cluster_scoped: bool| Target {
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        cluster_scoped,
    };
    if resource == "*" {
        return Ok(t("*", "*", false));
    }
    if let Ok(kind) = super::resolve_kind(resource) {
        return Ok(t(kind.group, kind.plural, !kind.namespaced));
    }
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    if let Some((r, g, c)) = EXTRA
        .iter()
        .find(|(r, g, _)| *r == plural && (group.is_empty() || group == *g))
    {
        return Ok(t(g, r, *c));
    }
    eprintln!("Warning: the server doesn't have a resource type {plural:?}");
    Ok(t(group, plural, false))
}

pub async fn run(args: AuthArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuthCommand::CanI(a) => super::finish(can_i(a).await),
    }
}

async fn can_i(args: CanIArgs) -> anyhow::Result<ExitCode> {
    if args.as_user.is_none() && !args.as_group.is_empty() {
        bail!("--as-group needs --as: name the user whose groups these are");
    }
    let t = target(&args.resource)?;
    let namespace = if t.cluster_scoped {
        String::new()
    } else {
        args.ns.or_default().to_string()
    };
    let attributes = json!({
        "namespace": namespace,
        "verb": args.verb,
        "group": t.group,
        "resource": t.resource,
        "subresource": t.subresource,
        "name": args.name.clone().unwrap_or_default(),
    });
    let (kind, plural, spec) = match &args.as_user {
        None => (
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            json!({"resourceAttributes": attributes}),
        ),
        Some(user) => {
            // As kubectl's impersonation: the user is authenticated, whatever else it is in.
            let mut groups = args.as_group.clone();
            if !groups
                .iter()
                .any(|g| g == kumo_api::user::GROUP_AUTHENTICATED)
            {
                groups.push(kumo_api::user::GROUP_AUTHENTICATED.to_string());
            }
            (
                "SubjectAccessReview",
                "subjectaccessreviews",
                json!({"resourceAttributes": attributes, "user": user, "groups": groups}),
            )
        }
    };
    let body = json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec});
    let client = super::client(&args.connect)?;
    let answer: Value = client
        .request_json(
            Method::POST,
            &format!("/apis/authorization.k8s.io/v1/{plural}"),
            Some(("application/json", &body)),
        )
        .await?;
    if answer.pointer("/status/allowed") == Some(&Value::Bool(true)) {
        super::out("yes");
        return Ok(ExitCode::SUCCESS);
    }
    match answer.pointer("/status/reason").and_then(Value::as_str) {
        Some(reason) if !reason.is_empty() => super::out(format!("no - {reason}")),
        _ => super::out("no"),
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(arg: &str, expected: (&str, &str, &str, bool)) {
        let t = target(arg).unwrap();
        let (group, resource, subresource, cluster_scoped) = expected;
        assert_eq!(
            t,
            Target {
                group: group.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                cluster_scoped
            },
            "{arg}"
        );
    }

    #[test]
    fn resources_are_named_as_rbac_sees_them() {
        check("pods", ("", "pods", "", false));
        check("po/log", ("", "pods", "log", false));
        check("pods/exec", ("", "pods", "exec", false));
        check("mltasks", ("kumo.dev", "mltasks", "", false));
        check(
            "mltasks.kumo.dev/output",
            ("kumo.dev", "mltasks", "output", false),
        );
        check("nodes/status", ("", "nodes", "status", true));
        check("datasets", ("kumo.dev", "datasets", "", true));
        check(
            "clusterrolebindings",
            ("rbac.authorization.k8s.io", "clusterrolebindings", "", true),
        );
        check("*", ("*", "*", "", false));
        check("widgets.example.com", ("example.com", "widgets", "", false));
        assert!(target("/log").is_err());
    }
}
