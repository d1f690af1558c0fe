//! `kumo wait`: blocks until objects reach a condition, a phase, or are deleted.

use super::watch::wait_for;
use super::{client, kind_and_name, kind_ref, object_path, resolve_kind, NamespaceArgs};
use anyhow::bail;
use http::Method;
use kumo_api::KindInfo;
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// KIND/NAME (repeatable), or a kind followed by names
    #[arg(value_name = "KIND/NAME", required = true)]
    pub targets: Vec<String>,
    /// condition=Ready, condition=Ready=False, phase=Succeeded, or delete
    #[arg(long = "for", value_name = "CONDITION", value_parser = For::parse)]
    pub for_: For,
    /// How long to wait, e.g. 30s, 5m (0: check once; at most 8760h)
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum For {
    /// A condition of `status.conditions` with this status (`True`, `False`, `Unknown`).
    Condition {
        type_: String,
        status: String,
    },
    /// `status.phase`.
    Phase(String),
    Delete,
}

impl For {
    pub fn parse(text: &str) -> Result<For, String> {
        let usage = "use condition=TYPE, condition=TYPE=True|False|Unknown, phase=PHASE or delete";
        if text.eq_ignore_ascii_case("delete") {
            return Ok(For::Delete);
        }
        let (what, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("unknown --for {text:?}: {usage}"))?;
        match what.to_ascii_lowercase().as_str() {
            "condition" => {
                let (type_, status) = match rest.split_once('=') {
                    Some((t, s)) => (t, s),
                    None => (rest, "True"),
                };
                let status = ["True", "False", "Unknown"]
                    .into_iter()
                    .find(|s| s.eq_ignore_ascii_case(status))
                    .ok_or_else(|| {
                        format!("invalid condition status {status:?} in --for {text:?}: {usage}")
                    })?;
                if type_.is_empty() {
                    return Err(format!("--for {text:?} names no condition: {usage}"));
                }
                Ok(For::Condition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                })
            }
            "phase" if !rest.is_empty() && !rest.contains('=') => Ok(For::Phase(rest.to_string())),
            "phase" => Err(format!("--for {text:?} names no phase: {usage}")),
            _ => Err(format!("unknown --for {text:?}: {usage}")),
        }
    }

    /// Whether the object (`None`: it does not exist) is as wanted.
    pub fn holds(&self, obj: Option<&Value>) -> bool {
        match (self, obj) {
            (For::Delete, o) => o.is_none(),
            (_, None) => false,
            (For::Phase(p), Some(o)) => super::text(o, "/status/phase").eq_ignore_ascii_case(p),
            (For::Condition { type_, status }, Some(o)) => o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    super::text(c, "/type").eq_ignore_ascii_case(type_)
                        && super::text(c, "/status").eq_ignore_ascii_case(status)
                }),
        }
    }
}

fn targets(args: &WaitArgs) -> anyhow::Result<Vec<(&'static KindInfo, String)>> {
    let first = &args.targets[0];
    if first.contains('/') {
        return args.targets.iter().map(|t| kind_and_name(t)).collect();
    }
    let kind = resolve_kind(first)?;
    if args.targets.len() == 1 {
        bail!(
            "say which {} to wait for: kumo wait {}/NAME --for=...",
            kind.plural,
            kind.singular
        );
    }
    args.targets[1..]
        .iter()
        .map(|n| Ok((kind, super::check_name(n)?)))
        .collect()
}

pub async fn run(args: WaitArgs) -> anyhow::Result<ExitCode> {
    super::finish(wait(args).await)
}

async fn wait(args: WaitArgs) -> anyhow::Result<ExitCode> {
    let targets = targets(&args)?;
    let client = client(&args.connect)?;
    let ns = args.ns.or_default();
    let deadline = tokio::time::Instant::now() + args.timeout;
    for (kind, name) in &targets {
        // Checked once at once: a missing object is an error unless waiting for its deletion.
        let current: Option<Value> = match client
            .request_json(Method::GET, &object_path(kind, ns, name), None)
            .await
        {
            Ok(v) => Some(v),
            Err(e) if e.is_not_found() && args.for_ == For::Delete => None,
            Err(e) => return Err(e.into()),
        };
        let met = args.for_.holds(current.as_ref())
            || (!args.timeout.is_zero()
                && wait_for(&client, kind, ns, name, &|o| args.for_.holds(o), deadline).await?);
        if !met {
            bail!(
                "timed out waiting for the condition on {}/{name}",
                super::resource(kind)
            );
        }
        super::out(format!("{}/{name} condition met", kind_ref(kind)));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn for_values() {
        let cond = |t: &str, s: &str| {
            Ok(For::Condition {
                type_: t.into(),
                status: s.into(),
            })
        };
        let cases: [(&str, Result<For, String>); 9] = [
            ("condition=Ready", cond("Ready", "True")),
            ("condition=Ready=False", cond("Ready", "False")),
            ("condition=PodScheduled=unknown", cond("PodScheduled", "Unknown")),
            ("phase=Succeeded", Ok(For::Phase("Succeeded".into()))),
            ("delete", Ok(For::Delete)),
            ("condition=Ready=maybe", Err("invalid condition status \"maybe\" in --for \"condition=Ready=maybe\": use condition=TYPE, condition=TYPE=True|False|Unknown, phase=PHASE or delete".into())),
            ("ready", Err("unknown --for \"ready\": use condition=TYPE, condition=TYPE=True|False|Unknown, phase=PHASE or delete".into())),
            ("condition=", Err("--for \"condition=\" names no condition: use condition=TYPE, condition=TYPE=True|False|Unknown, phase=PHASE or delete".into())),
            ("phase=", Err("--for \"phase=\" names no phase: use condition=TYPE, condition=TYPE=True|False|Unknown, phase=PHASE or delete".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(For::parse(input), expected, "{input}");
        }
    }

    #[test]
    fn holds() {
        let pod = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}});
        let check = |f: &str, obj: Option<&Value>| {
            For::parse(f)
                .map(|f| f.holds(obj))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(check("condition=Ready", Some(&pod)));
        assert!(check("condition=ready", Some(&pod)));
        assert!(!check("condition=Ready=False", Some(&pod)));
        assert!(!check("condition=Initialized", Some(&pod)));
        assert!(check("phase=Running", Some(&pod)));
        assert!(!check("phase=Succeeded", Some(&pod)));
        assert!(!check("delete", Some(&pod)));
        assert!(check("delete", None));
        assert!(!check("condition=Ready", None));
        assert!(!check(
            "condition=Ready",
            Some(&json!({"status": {"conditions": "oops"}}))
        ));
    }

    #[test]
    fn bad_for_is_a_usage_error() {
        use clap::Parser;
        let err = crate::Cli::try_parse_from(["kumo", "wait", "pod/x", "--for", "ready"])
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
    }
}
