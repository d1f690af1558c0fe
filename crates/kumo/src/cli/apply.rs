//! `kumo apply -f`: creates missing objects, updates those that differ, says which it did.

use super::manifest::{self, Manifest};
use super::{client, collection, item_error, kind_ref, object_path, NamespaceArgs};
use anyhow::anyhow;
use http::Method;
use kumo_api::patch::merge_patch;
use kumo_client::{Client, ClientError};
use serde_json::Value;
use std::process::ExitCode;

/// How many times an update is retried after a conflicting write by someone else.
const ATTEMPTS: usize = 5;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// A manifest file, a directory of them (.yaml, .yml, .json), or - for stdin; repeatable
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

/// What apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    super::finish(apply(args).await)
}

async fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    // Every document is checked before anything changes.
    let manifests = match manifest::load(&args.files, args.ns.namespace.as_deref()) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("error: nothing was applied: fix the manifests above and run apply again");
            return Ok(ExitCode::FAILURE);
        }
    };
    let client = client(&args.connect)?;
    let mut failed = false;
    for m in &manifests {
        match apply_one(&client, m).await {
            Ok(outcome) => super::out(format!(
                "{}/{} {}",
                kind_ref(m.kind),
                m.name,
                outcome.word()
            )),
            Err(e) if super::is_connect(&e) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("{}", item_error(&e));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn apply_one(client: &Client, m: &Manifest) -> anyhow::Result<Outcome> {
    let ns = m
        .namespace
        .as_deref()
        .unwrap_or(kumo_api::DEFAULT_NAMESPACE);
    let path = object_path(m.kind, ns, &m.name);
    let desired = without_server_fields(&m.object);
    let what = |verb: &str, e: ClientError| -> anyhow::Error {
        match e {
            ClientError::Api(mut status) => {
                status.message = format!(
                    "error when {verb} {}/{} ({}): {}",
                    kind_ref(m.kind),
                    m.name,
                    m.origin,
                    status.message
                );
                ClientError::Api(status).into()
            }
            other => other.into(),
        }
    };
    for _ in 0..ATTEMPTS {
        let live: Option<Value> = match client.request_json(Method::GET, &path, None).await {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(what("reading", e)),
        };
        let Some(live) = live else {
            let body = Some(("application/json", &desired));
            match client
                .request_json::<Value>(Method::POST, &collection(m.kind, Some(ns)), body)
                .await
            {
                Ok(_) => return Ok(Outcome::Created),
                // Created by someone else meanwhile: update it instead.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(what("creating", e)),
            }
        };
        let merged = merge_onto(&live, &desired);
        if same(m.kind, &merged, &live) {
            return Ok(Outcome::Unchanged);
        }
        match client
            .request_json::<Value>(Method::PUT, &path, Some(("application/json", &merged)))
            .await
        {
            Ok(_) => return Ok(Outcome::Configured),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(what("updating", e)),
        }
    }
    Err(anyhow!(
        "{}/{}: the object kept changing during {ATTEMPTS} attempts to update it: run apply again",
        kind_ref(m.kind),
        m.name
    ))
}

/// The manifest without what only the server sets (as in the output of `get -o yaml`).
pub fn without_server_fields(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(field);
            }
        }
    }
    v
}

/// The live object with the manifest merged onto it (a JSON merge patch): fields the manifest
/// does not mention (status, defaults, what controllers set) keep their live values, and the
/// live `resourceVersion` makes the update conditional.
pub fn merge_onto(live: &Value, desired: &Value) -> Value {
    let mut merged = live.clone();
    merge_patch(&mut merged, desired);
    merged
}

/// Whether two objects are the same once both are normalized as the server would store them.
fn same(kind: &kumo_api::KindInfo, a: &Value, b: &Value) -> bool {
    match ((kind.admit)(a.clone()), (kind.admit)(b.clone())) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2024-05-01T11:57:00Z", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}],
                     "restartPolicy": "Always", "nodeName": "node-1"},
            "status": {"phase": "Running"},
        })
    }

    /// Applies `manifest` onto the live pod: whether it counts as unchanged, and the merged labels.
    fn check(manifest: Value, unchanged: bool, labels: Value) {
        let kind = super::super::resolve_kind("pod").unwrap();
        let merged = merge_onto(&live_pod(), &without_server_fields(&manifest));
        assert_eq!(same(kind, &merged, &live_pod()), unchanged, "{manifest}");
        assert_eq!(merged["metadata"]["labels"], labels);
        assert_eq!(
            merged["metadata"]["resourceVersion"], "7",
            "the live version makes the update conditional"
        );
        assert_eq!(
            merged["status"],
            json!({"phase": "Running"}),
            "status is the server's"
        );
        assert_eq!(
            merged["spec"]["nodeName"], "node-1",
            "what the scheduler set stays"
        );
    }

    #[test]
    fn reapplying_the_same_manifest_is_unchanged() {
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}]},
        });
        check(manifest, true, json!({"app": "web"}));
    }

    #[test]
    fn output_of_get_is_unchanged_too() {
        let mut manifest = live_pod();
        manifest["metadata"]["resourceVersion"] = json!("3");
        manifest["status"] = json!({"phase": "Pending"});
        check(manifest, true, json!({"app": "web"}));
    }

    #[test]
    fn a_changed_label_is_configured() {
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "main", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}]},
        });
        check(manifest, false, json!({"app": "web", "tier": "front"}));
    }
}
