//! The kubectl-style commands, generic over kinds through `kumo_api::KindInfo` and untyped JSON.

pub mod app;
pub mod app_edit;
pub mod app_logs;
pub mod apply;
pub mod auth;
pub mod completion;
pub mod config;
pub mod create;
pub mod dataset;
pub mod delete;
pub mod deploy;
pub mod describe;
pub mod down;
pub mod exec;
pub mod get;
pub mod image;
pub mod logs;
pub mod run_once;
pub mod secrets;
pub mod token;
pub mod version;
pub mod wait;
// MLTasks: submit, queue, cancel, and the logs of every replica.
pub mod mltask_logs;
pub mod node;
pub mod queue;
pub mod submit;

mod columns;
mod describe_mltask;
mod describe_node;
mod describe_pod;
mod detail;
mod format;
mod manifest;
mod mltask_columns;
mod watch;

use crate::ConnectArgs;
use anyhow::anyhow;
use kumo_api::{kind_by_name, kinds, KindInfo, Status};
use kumo_client::{Client, ClientConfig, ClientError};
use std::process::ExitCode;

/// `-n/--namespace`, shared by the commands that act in one namespace.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NamespaceArgs {
    /// Namespace (default: the object's own, else "default")
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl NamespaceArgs {
    /// The namespace given, else `default`.
    pub fn or_default(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(kumo_api::DEFAULT_NAMESPACE)
    }
}

/// A client for the server named by the flags, the client config, or the default address.
pub fn client(connect: &ConnectArgs) -> anyhow::Result<Client> {
    let config = ClientConfig::resolve(connect.server.clone(), connect.token()?)
        .map_err(anyhow::Error::msg)?;
    Ok(Client::new(&config)?)
}

/// Prints a line to stdout; a closed stdout (`kumo get pods | head -1`) is not an error.
pub fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Whether an error is the server being unreachable, which ends a command over many objects.
pub fn is_connect(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ClientError>(),
        Some(ClientError::Connect { .. })
    )
}

/// Turns a server error into kubectl's `Error from server (Reason): message` and exit 1; other
/// errors go up to `main`, which prints them as `error: ...`.
pub fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match result {
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ClientError::Api(status)) => {
                eprintln!("{}", server_error(status));
                Ok(ExitCode::FAILURE)
            }
            // The reader went away (`kumo get pods | head -1`): nothing more to say.
            _ if e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                Ok(ExitCode::SUCCESS)
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// `Error from server (NotFound): pods "x" not found`.
pub fn server_error(status: &Status) -> String {
    let reason = if status.reason.is_empty() {
        "Unknown"
    } else {
        status.reason.as_str()
    };
    format!("Error from server ({reason}): {}", status.message)
}

/// What to print for an error of one item among several (kubectl goes on with the others).
pub fn item_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Api(status)) => server_error(status),
        _ => format!("error: {e:#}"),
    }
}

/// The kind a user typed: `pods`, `pod`, `po`, `Pod`, or `mltasks.kumo.dev`.
pub fn resolve_kind(name: &str) -> anyhow::Result<&'static KindInfo> {
    let found = kind_by_name(name).or_else(|| {
        let (plural, group) = name.split_once('.')?;
        kinds()
            .iter()
            .find(|k| k.group.eq_ignore_ascii_case(group) && k.matches_name(plural))
    });
    found.ok_or_else(|| {
        let known: Vec<&str> = kinds().iter().map(|k| k.plural).collect();
        anyhow!("unknown resource type {name:?}: try {}", known.join(", "))
    })
}

/// Splits `KIND/NAME`, resolving the kind.
pub fn kind_and_name(text: &str) -> anyhow::Result<(&'static KindInfo, String)> {
    match text.split_once('/') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
            let name = check_name(name)?;
            Ok((resolve_kind(kind)?, name))
        }
        _ => Err(anyhow!("{text:?} is not KIND/NAME: write it like pod/web")),
    }
}

/// Rejects names that cannot be part of a URL path; the server checks the rest.
pub fn check_name(name: &str) -> anyhow::Result<String> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "/?#%\\".contains(c);
    if name.is_empty() || name.contains(bad) || name == "." || name == ".." {
        return Err(anyhow!(
            "invalid name {name:?}: names are lower-case letters, digits, '-' and '.'"
        ));
    }
    Ok(name.to_string())
}

/// `pod`, or `mltask.kumo.dev` for a kind in a group: how `apply` and `-o name` name objects.
pub fn kind_ref(kind: &KindInfo) -> String {
    if kind.group.is_empty() {
        kind.singular.to_string()
    } else {
        format!("{}.{}", kind.singular, kind.group)
    }
}

/// `pods`, or `mltasks.kumo.dev`: how server messages name a kind.
pub fn resource(kind: &KindInfo) -> String {
    if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

/// The collection path of a kind; `ns` is ignored for cluster-scoped kinds, `None` lists all.
pub fn collection(kind: &KindInfo, ns: Option<&str>) -> String {
    kumo_api::object::collection_path(
        kind.group,
        kind.version,
        kind.plural,
        if kind.namespaced { ns } else { None },
    )
}

/// The path of one object.
pub fn object_path(kind: &KindInfo, ns: &str, name: &str) -> String {
    format!("{}/{name}", collection(kind, Some(ns)))
}

/// A string at a JSON pointer, empty when absent.
pub fn text<'a>(v: &'a serde_json::Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
}

/// A timestamp at a JSON pointer.
pub fn time_at(v: &serde_json::Value, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text(v, pointer))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_aliases() {
        let cases: [(&str, Option<&str>); 14] = [
            ("pods", Some("Pod")),
            ("pod", Some("Pod")),
            ("po", Some("Pod")),
            ("Pod", Some("Pod")),
            ("PODS", Some("Pod")),
            ("nodes", Some("Node")),
            ("no", Some("Node")),
            ("node", Some("Node")),
            ("namespaces", Some("Namespace")),
            ("ns", Some("Namespace")),
            ("events", Some("Event")),
            ("ev", Some("Event")),
            ("pdos", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                resolve_kind(input).ok().map(|k| k.kind),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn unknown_kind_names_the_known_ones() {
        let err = resolve_kind("pdos")
            .map(|k| k.kind)
            .unwrap_err()
            .to_string();
        let plurals: Vec<&str> = kumo_api::kinds().iter().map(|k| k.plural).collect();
        assert!(plurals.starts_with(&["namespaces", "nodes", "pods", "events"]));
        assert_eq!(
            err,
            format!("unknown resource type \"pdos\": try {}", plurals.join(", "))
        );
    }

    #[test]
    fn kind_slash_name() {
        let (kind, name) = kind_and_name("po/web")
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((kind.kind, name.as_str()), ("Pod", "web"));
        for bad in ["pod", "pod/", "/web", "pod/a b", "pdos/web"] {
            assert!(kind_and_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        let pod = resolve_kind("pod")
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let node = resolve_kind("node")
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            object_path(pod, "ns1", "web"),
            "/api/v1/namespaces/ns1/pods/web"
        );
        assert_eq!(collection(pod, None), "/api/v1/pods");
        assert_eq!(object_path(node, "ignored", "n1"), "/api/v1/nodes/n1");
        assert_eq!(kind_ref(pod), "pod");
        assert_eq!(resource(node), "nodes");
    }

    #[test]
    fn server_errors_read_like_kubectl() {
        let s = Status::failure(404, "NotFound", "pods \"x\" not found");
        assert_eq!(
            server_error(&s),
            "Error from server (NotFound): pods \"x\" not found"
        );
    }
}
