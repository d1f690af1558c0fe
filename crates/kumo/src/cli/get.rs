//! `kumo get`: tables like kubectl's, or the objects as YAML, JSON or names; `-w` follows changes.

use super::columns::{self, event_time, Layout};
use super::format::{grow_widths, render_row};
use super::watch::{list, RawWatch};
use super::{
    client, item_error, kind_and_name, kind_ref, object_path, resolve_kind, text, NamespaceArgs,
};
use anyhow::{anyhow, bail};
use http::Method;
use kumo_api::{KindInfo, WatchEventType};
use kumo_client::Client;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// What to list: pods (po), nodes (no), namespaces (ns), events (ev); or KIND/NAME
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// Names of the objects to show (default: all); or more KIND/NAME
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Output format: wide, yaml, json or name (default: a table)
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// Label selector, e.g. app=web,tier!=db
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. spec.nodeName=node-1,status.phase=Running
    #[arg(long)]
    pub field_selector: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// List in every namespace
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// After listing, print every change until interrupted
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Leave out the header line of tables
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

/// What was asked for: one kind's collection, or named objects.
enum Target {
    List(&'static KindInfo),
    Named(Vec<(&'static KindInfo, String)>),
}

fn target(args: &GetArgs) -> anyhow::Result<Target> {
    let named = if args.kind.contains('/') {
        std::iter::once(&args.kind)
            .chain(&args.names)
            .map(|t| kind_and_name(t))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        let kind = resolve_kind(&args.kind)?;
        if args.names.is_empty() {
            return Ok(Target::List(kind));
        }
        args.names
            .iter()
            .map(|n| Ok((kind, super::check_name(n)?)))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    if args.selector.is_some() || args.field_selector.is_some() {
        bail!("names cannot be given together with a selector: use either, not both");
    }
    Ok(Target::Named(named))
}

pub async fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    super::finish(get(args).await)
}

async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let target = target(&args)?;
    let client = client(&args.connect)?;
    let ns = args.ns.or_default().to_string();
    let mut query = Vec::new();
    if let Some(l) = &args.selector {
        query.push(("labelSelector", l.clone()));
    }
    if let Some(f) = &args.field_selector {
        query.push(("fieldSelector", f.clone()));
    }
    let mut out = Printer::new(&args);
    let mut failed = false;
    let (kind, rv, names) = match &target {
        Target::List(kind) => {
            let scope = if args.all_namespaces {
                None
            } else {
                Some(ns.as_str())
            };
            let mut listed = list(&client, kind, scope, &query).await?;
            if kind.kind == "Event" {
                listed.items.sort_by_key(event_time);
            }
            for item in &mut listed.items {
                fill_type(kind, item);
            }
            if listed.items.is_empty() && !args.watch {
                eprintln!("{}", no_resources(kind, scope));
            } else {
                out.print_all(kind, &listed.items, true)?;
            }
            (*kind, listed.resource_version, None)
        }
        Target::Named(named) => {
            let mut found = Vec::new();
            for (kind, name) in named {
                match fetch(&client, kind, &ns, name).await {
                    Ok(obj) => found.push((*kind, obj)),
                    Err(e) if super::is_connect(&e) => return Err(e),
                    Err(e) => {
                        failed = true;
                        eprintln!("{}", item_error(&e));
                    }
                }
            }
            out.print_named(&found)?;
            if !args.watch {
                return Ok(if failed {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
            let kinds: BTreeSet<&str> = named.iter().map(|(k, _)| k.kind).collect();
            if kinds.len() != 1 {
                bail!("watch needs objects of one kind: run one `kumo get -w` per kind");
            }
            let kind = named[0].0;
            let rv = found
                .iter()
                .map(|(_, o)| text(o, "/metadata/resourceVersion").to_string())
                .max_by_key(|v| v.parse::<u64>().unwrap_or(0))
                .unwrap_or_default();
            let names: BTreeSet<String> = named.iter().map(|(_, n)| n.clone()).collect();
            (kind, rv, Some(names))
        }
    };
    if !args.watch {
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let scope = if args.all_namespaces {
        None
    } else {
        Some(ns.as_str())
    };
    tokio::select! {
        r = follow(&client, kind, scope, &query, rv, names.as_ref(), &mut out) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// kubectl's `No resources found in default namespace.`
fn no_resources(kind: &KindInfo, scope: Option<&str>) -> String {
    match scope {
        Some(ns) if kind.namespaced => format!("No resources found in {ns} namespace."),
        _ => "No resources found".to_string(),
    }
}

async fn fetch(client: &Client, kind: &KindInfo, ns: &str, name: &str) -> anyhow::Result<Value> {
    let mut obj: Value = client
        .request_json(Method::GET, &object_path(kind, ns, name), None)
        .await?;
    fill_type(kind, &mut obj);
    Ok(obj)
}

/// Lists may leave out each item's apiVersion and kind; printed objects always carry them.
fn fill_type(kind: &KindInfo, obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        if !map.contains_key("kind") {
            let mut typed = serde_json::Map::new();
            typed.insert("apiVersion".into(), Value::String(kind.api_version()));
            typed.insert("kind".into(), Value::String(kind.kind.to_string()));
            typed.append(map);
            *map = typed;
        }
    }
}

/// Streams changes after `rv` until the watch fails for good.
async fn follow(
    client: &Client,
    kind: &'static KindInfo,
    scope: Option<&str>,
    query: &[(&str, String)],
    mut rv: String,
    names: Option<&BTreeSet<String>>,
    out: &mut Printer,
) -> anyhow::Result<()> {
    let mut query = query.to_vec();
    if let Some(names) = names.filter(|n| n.len() == 1) {
        query.push((
            "fieldSelector",
            format!(
                "metadata.name={}",
                names.iter().next().map(String::as_str).unwrap_or("")
            ),
        ));
    }
    let mut failures = 0;
    loop {
        let mut watch = match RawWatch::start(client, kind, scope, &query, &rv).await {
            Ok(w) => w,
            Err(e) if e.is_gone() => {
                rv = list(client, kind, scope, &query).await?.resource_version;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(event) = watch.next().await {
            let event = match event {
                Ok(ev) => ev,
                Err(_) => break,
            };
            failures = 0;
            let mut obj = event.object;
            match event.type_ {
                WatchEventType::Bookmark => {
                    rv = text(&obj, "/metadata/resourceVersion").to_string()
                }
                WatchEventType::Error => {
                    // Mostly `410 Gone`: the revision was compacted; start again from now.
                    rv = list(client, kind, scope, &query).await?.resource_version;
                    break;
                }
                WatchEventType::Added | WatchEventType::Modified | WatchEventType::Deleted => {
                    rv = text(&obj, "/metadata/resourceVersion").to_string();
                    if names.is_some_and(|n| !n.contains(text(&obj, "/metadata/name"))) {
                        continue;
                    }
                    fill_type(kind, &mut obj);
                    out.print_all(kind, std::slice::from_ref(&obj), false)?;
                }
            }
        }
        failures += 1;
        if failures > 5 {
            return Err(anyhow!(
                "the watch keeps failing: check the server with `kumo get nodes`"
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Writes objects in the chosen format; tables keep their column widths across watch events.
struct Printer {
    output: Option<Output>,
    layout: Layout,
    headers: bool,
    widths: Vec<usize>,
    printed_header: bool,
    printed_docs: usize,
}

impl Printer {
    fn new(args: &GetArgs) -> Self {
        Printer {
            output: args.output,
            layout: Layout {
                wide: args.output == Some(Output::Wide),
                all_namespaces: args.all_namespaces,
            },
            headers: !args.no_headers,
            widths: Vec::new(),
            printed_header: false,
            printed_docs: 0,
        }
    }

    /// Prints objects of one kind; `list` says they are a whole list (as opposed to watch events).
    fn print_all(&mut self, kind: &KindInfo, objects: &[Value], list: bool) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        match self.output {
            None | Some(Output::Wide) => {
                let table = columns::table(kind, objects, self.layout, chrono::Utc::now());
                if self.widths.is_empty() {
                    self.widths = table.widths();
                }
                if self.headers && !self.printed_header {
                    grow_widths(&mut self.widths, &table.headers);
                    write!(stdout, "{}", render_row(&table.headers, &self.widths))?;
                    self.printed_header = true;
                }
                for row in &table.rows {
                    grow_widths(&mut self.widths, row);
                    write!(stdout, "{}", render_row(row, &self.widths))?;
                }
            }
            Some(Output::Name) => {
                for o in objects {
                    writeln!(stdout, "{}/{}", kind_ref(kind), text(o, "/metadata/name"))?;
                }
            }
            Some(Output::Yaml) | Some(Output::Json) if list => {
                let doc = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": objects});
                self.document(&mut stdout, &doc)?;
            }
            Some(Output::Yaml) | Some(Output::Json) => {
                for o in objects {
                    self.document(&mut stdout, o)?;
                }
            }
        }
        stdout.flush()?;
        Ok(())
    }

    /// Prints objects fetched by name: one alone as itself, several as a List.
    fn print_named(&mut self, found: &[(&'static KindInfo, Value)]) -> anyhow::Result<()> {
        match self.output {
            Some(Output::Yaml) | Some(Output::Json) if found.len() == 1 => {
                self.document(&mut std::io::stdout().lock(), &found[0].1)
            }
            Some(Output::Yaml) | Some(Output::Json) if found.len() > 1 => {
                let items: Vec<&Value> = found.iter().map(|(_, o)| o).collect();
                let doc = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items});
                self.document(&mut std::io::stdout().lock(), &doc)
            }
            _ => {
                // One table per run of the same kind, as kubectl does for `get pod/a node/b`.
                let mut start = 0;
                while start < found.len() {
                    let kind = found[start].0;
                    let end = found[start..]
                        .iter()
                        .position(|(k, _)| k.kind != kind.kind)
                        .map_or(found.len(), |i| start + i);
                    if start > 0 {
                        if self.output != Some(Output::Name) {
                            super::out("");
                        }
                        self.widths.clear();
                        self.printed_header = false;
                    }
                    let objects: Vec<Value> =
                        found[start..end].iter().map(|(_, o)| o.clone()).collect();
                    self.print_all(kind, &objects, false)?;
                    start = end;
                }
                Ok(())
            }
        }
    }

    fn document(&mut self, w: &mut impl Write, doc: &Value) -> anyhow::Result<()> {
        if self.output == Some(Output::Json) {
            writeln!(w, "{}", serde_json::to_string_pretty(doc)?)?;
        } else {
            if self.printed_docs > 0 {
                writeln!(w, "---")?;
            }
            write!(w, "{}", serde_yaml_ng::to_string(doc)?)?;
        }
        self.printed_docs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<GetArgs, String> {
        let cli = crate::Cli::try_parse_from(std::iter::once("kumo").chain(args.iter().copied()))
            .map_err(|e| e.kind().to_string())?;
        match cli.command {
            crate::Command::Get(g) => Ok(g),
            _ => Err("not get".into()),
        }
    }

    fn describe(t: anyhow::Result<Target>) -> String {
        match t {
            Ok(Target::List(k)) => format!("list {}", k.plural),
            Ok(Target::Named(n)) => n
                .iter()
                .map(|(k, n)| format!("{}/{n}", k.singular))
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn targets() {
        let cases: [(&[&str], &str); 7] = [
            (&["get", "po"], "list pods"),
            (&["get", "pods", "a", "b"], "pod/a pod/b"),
            (&["get", "pod/a", "node/n1"], "pod/a node/n1"),
            (
                &["get", "pod/a", "b"],
                "error: \"b\" is not KIND/NAME: write it like pod/web",
            ),
            (
                &["get", "pdos"],
                "error: unknown resource type \"pdos\": try namespaces, nodes, pods, events, …",
            ),
            (
                &["get", "po", "a", "-l", "app=x"],
                "error: names cannot be given together with a selector: use either, not both",
            ),
            (&["get", "ns", "-A"], "list namespaces"),
        ];
        for (args, expected) in cases {
            let got = parse(args)
                .map(|a| describe(target(&a)))
                .unwrap_or_else(|e| format!("parse error: {e}"));
            // The list of known kinds grows with the API: its head is checked.
            match expected.strip_suffix(", …") {
                Some(head) => assert!(got.starts_with(head), "{args:?}: {got}"),
                None => assert_eq!(got, expected, "{args:?}"),
            }
        }
    }

    #[test]
    fn flags() {
        let a = parse(&[
            "get",
            "po",
            "-o",
            "wide",
            "-A",
            "-w",
            "--field-selector",
            "spec.nodeName=n1",
        ])
        .unwrap();
        assert_eq!(
            (a.output, a.all_namespaces, a.watch),
            (Some(Output::Wide), true, true)
        );
        assert!(
            parse(&["get", "po", "-n", "x", "-A"]).is_err(),
            "-n and -A conflict"
        );
        assert!(
            parse(&["get", "po", "-o", "table"]).is_err(),
            "unknown output format"
        );
    }

    #[test]
    fn empty_lists_say_where() {
        let pod = resolve_kind("pod").unwrap();
        let node = resolve_kind("node").unwrap();
        assert_eq!(
            no_resources(pod, Some("dev")),
            "No resources found in dev namespace."
        );
        assert_eq!(no_resources(pod, None), "No resources found");
        assert_eq!(no_resources(node, Some("default")), "No resources found");
    }

    #[test]
    fn list_items_get_their_type() {
        let pod = resolve_kind("pod").unwrap();
        let mut v = json!({"metadata": {"name": "a"}});
        fill_type(pod, &mut v);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#
        );
    }
}
