//! `kumo describe`: one object in detail, with its conditions and the events about it.

use super::columns::event_time;
use super::detail::Detail;
use super::format::{age, Table};
use super::watch::list;
use super::{
    client, describe_mltask, describe_node, describe_pod, kind_and_name, object_path, resolve_kind,
    text, NamespaceArgs,
};
use anyhow::bail;
use chrono::{DateTime, Utc};
use http::Method;
use kumo_api::{KindInfo, Node, Pod};
use kumo_client::Client;
use serde_json::Value;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// What to describe: a kind (pods, nodes, ...) followed by a name, or KIND/NAME
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// The object's name (or several)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn run(args: DescribeArgs) -> anyhow::Result<ExitCode> {
    super::finish(describe(args).await)
}

fn targets(args: &DescribeArgs) -> anyhow::Result<Vec<(&'static KindInfo, String)>> {
    if args.kind.contains('/') {
        return std::iter::once(&args.kind)
            .chain(&args.names)
            .map(|t| kind_and_name(t))
            .collect();
    }
    let kind = resolve_kind(&args.kind)?;
    if args.names.is_empty() {
        bail!(
            "describe needs a name: kumo describe {} NAME (list them with `kumo get {}`)",
            kind.singular,
            kind.plural
        );
    }
    args.names
        .iter()
        .map(|n| Ok((kind, super::check_name(n)?)))
        .collect()
}

async fn describe(args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let targets = targets(&args)?;
    let client = client(&args.connect)?;
    let ns = args.ns.or_default();
    let mut failed = false;
    for (i, (kind, name)) in targets.iter().enumerate() {
        if i > 0 {
            super::out("");
        }
        match describe_one(&client, kind, ns, name).await {
            Ok(text) => super::out(text.trim_end()),
            Err(e) if super::is_connect(&e) => return Err(e),
            Err(e) => {
                failed = true;
                eprintln!("{}", super::item_error(&e));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn describe_one(
    client: &Client,
    kind: &'static KindInfo,
    ns: &str,
    name: &str,
) -> anyhow::Result<String> {
    let obj: Value = client
        .request_json(Method::GET, &object_path(kind, ns, name), None)
        .await?;
    let now = Utc::now();
    let mut d = Detail::default();
    match (kind.group, kind.kind) {
        ("", "Pod") => describe_pod::pod(&mut d, &serde_json::from_value::<Pod>(obj.clone())?, now),
        ("", "Node") => {
            let node: Node = serde_json::from_value(obj.clone())?;
            let pod_kind = resolve_kind("pods")?;
            let listed = list(
                client,
                pod_kind,
                None,
                &[("fieldSelector", format!("spec.nodeName={name}"))],
            )
            .await?;
            let pods: Vec<Pod> = listed
                .items
                .into_iter()
                .filter_map(|p| serde_json::from_value(p).ok())
                .collect();
            describe_node::node(&mut d, &node, &pods, now);
        }
        ("kumo.dev", "MLTask") => {
            describe_mltask::mltask(&mut d, &serde_json::from_value(obj.clone())?, now)
        }
        _ => generic(&mut d, kind, &obj),
    }
    if kind.kind != "Event" {
        let events = events_about(client, kind, ns, name, text(&obj, "/metadata/uid")).await;
        events_section(&mut d, events, now);
    }
    Ok(d.render())
}

/// Any kind: metadata, then every other top-level field (spec, status, ...) as YAML.
fn generic(d: &mut Detail, kind: &KindInfo, obj: &Value) {
    d.field(0, "Name", text(obj, "/metadata/name"));
    if kind.namespaced {
        d.field(0, "Namespace", text(obj, "/metadata/namespace"));
    }
    let labels = string_map(obj.pointer("/metadata/labels"));
    d.map(0, "Labels", &labels);
    d.map(
        0,
        "Annotations",
        &string_map(obj.pointer("/metadata/annotations")),
    );
    d.field(0, "API Version", text(obj, "/apiVersion"));
    d.field(0, "Kind", text(obj, "/kind"));
    d.field(
        0,
        "CreationTimestamp",
        text(obj, "/metadata/creationTimestamp"),
    );
    let Some(map) = obj.as_object() else { return };
    for (key, value) in map {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let title = title(key);
        match value {
            Value::Object(_) | Value::Array(_) => {
                d.section(0, &title);
                let yaml = serde_yaml_ng::to_string(value)
                    .unwrap_or_else(|e| format!("<cannot show: {e}>"));
                for line in yaml.lines() {
                    d.text(1, line);
                }
            }
            Value::String(s) => d.field(0, &title, s.as_str()),
            Value::Null => d.field(0, &title, "<none>"),
            other => d.field(0, &title, other.to_string()),
        }
    }
}

/// `involvedObject` → `Involved Object`.
fn title(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
        } else if c.is_uppercase() {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

fn string_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The events about this object (by kind, namespace, name and uid), oldest first; an error says
/// why there are none.
async fn events_about(
    client: &Client,
    kind: &KindInfo,
    ns: &str,
    name: &str,
    uid: &str,
) -> Result<Vec<Value>, String> {
    let event_kind = resolve_kind("events").map_err(|e| e.to_string())?;
    let scope = if kind.namespaced { Some(ns) } else { None };
    let listed = list(
        client,
        event_kind,
        scope,
        &[("fieldSelector", format!("involvedObject.name={name}"))],
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut events: Vec<Value> = listed
        .items
        .into_iter()
        .filter(|e| {
            matches!(text(e, "/involvedObject/kind"), "")
                || text(e, "/involvedObject/kind") == kind.kind
        })
        // Not the events of an earlier object of the same name.
        .filter(|e| {
            let event_uid = text(e, "/involvedObject/uid");
            uid.is_empty() || event_uid.is_empty() || event_uid == uid
        })
        .filter(|e| {
            let event_ns = text(e, "/involvedObject/namespace");
            !kind.namespaced || event_ns.is_empty() || event_ns == ns
        })
        .collect();
    events.sort_by_key(event_time);
    Ok(events)
}

/// `Events:` as kubectl shows them: Type, Reason, Age (`10s (x3 over 2m)`), From, Message.
pub fn events_section(d: &mut Detail, events: Result<Vec<Value>, String>, now: DateTime<Utc>) {
    let events = match events {
        Ok(e) if e.is_empty() => return d.field(0, "Events", "<none>"),
        Ok(e) => e,
        Err(e) => return d.field(0, "Events", format!("<cannot list events: {e}>")),
    };
    d.section(0, "Events");
    let mut t = Table::new(&["Type", "Reason", "Age", "From", "Message"]);
    t.rows
        .push(t.headers.iter().map(|h| "-".repeat(h.len())).collect());
    for e in &events {
        let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
        let last = age(event_time(e), now);
        let seen = match super::time_at(e, "/firstTimestamp") {
            Some(first) if count > 1 => format!("{last} (x{count} over {})", age(Some(first), now)),
            _ => last,
        };
        t.rows.push(vec![
            text(e, "/type").to_string(),
            text(e, "/reason").to_string(),
            seen,
            text(e, "/source/component").to_string(),
            text(e, "/message").replace('\n', " "),
        ]);
    }
    d.table(1, &t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Describes `obj` of `kind` (with `events`) and compares the text.
    fn check(kind: &str, obj: Value, pods: Value, events: Value, expected: &str) {
        let kind = resolve_kind(kind).unwrap();
        let mut d = Detail::default();
        match kind.kind {
            "Pod" => describe_pod::pod(&mut d, &serde_json::from_value(obj).unwrap(), now()),
            "Node" => {
                let pods: Vec<Pod> = serde_json::from_value(pods).unwrap();
                describe_node::node(&mut d, &serde_json::from_value(obj).unwrap(), &pods, now())
            }
            _ => generic(&mut d, kind, &obj),
        }
        events_section(
            &mut d,
            Ok(events.as_array().cloned().unwrap_or_default()),
            now(),
        );
        let got = d.render();
        assert_eq!(got, expected, "\n{got}");
    }

    #[test]
    fn crashing_pod() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "creationTimestamp": "2024-05-01T11:50:00Z"},
            "spec": {
                "nodeName": "node-1",
                "containers": [{
                    "name": "main", "image": "busybox", "command": ["sh", "-c", "exit 1"],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "64Mi"}},
                }],
            },
            "status": {
                "phase": "Running", "hostIP": "10.0.0.2", "podIP": "10.88.0.7",
                "startTime": "2024-05-01T11:50:01Z",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [main]"},
                ],
                "containerStatuses": [{
                    "name": "main", "ready": false, "restartCount": 3, "containerID": "runc://abc",
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                        "startedAt": "2024-05-01T11:59:00Z", "finishedAt": "2024-05-01T11:59:01Z"}},
                }],
            },
        });
        let events = json!([
            {"type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web to node-1",
             "source": {"component": "scheduler"}, "lastTimestamp": "2024-05-01T11:50:00Z", "count": 1},
            {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container",
             "source": {"component": "agent", "host": "node-1"}, "firstTimestamp": "2024-05-01T11:55:00Z",
             "lastTimestamp": "2024-05-01T11:59:30Z", "count": 3},
        ]);
        check(
            "pod",
            pod,
            Value::Null,
            events,
            "\
Name:            web
Namespace:       default
Node:            node-1/10.0.0.2
Start Time:      Wed, 01 May 2024 11:50:01 +0000
Labels:          app=web
Annotations:     <none>
Status:          Running
IP:              10.88.0.7
Restart Policy:  Always
Containers:
  main:
    Container ID:   runc://abc
    Image:          busybox
    Command:
      sh
      -c
      exit 1
    State:          Waiting
      Reason:       CrashLoopBackOff
      Message:      back-off 40s restarting failed container
    Last State:     Terminated
      Reason:       Error
      Exit Code:    1
      Started:      Wed, 01 May 2024 11:59:00 +0000
      Finished:     Wed, 01 May 2024 11:59:01 +0000
    Ready:          False
    Restart Count:  3
    Limits:
      cpu:          1
      memory:       64Mi
    Requests:
      cpu:          250m
    Environment:
      MODE:         prod
Conditions:
  Type           Status   Reason               Message
  ----           ------   ------               -------
  PodScheduled   True
  Ready          False    ContainersNotReady   containers with unready status: [main]
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type      Reason      Age                From        Message
  ----      ------      ---                ----        -------
  Normal    Scheduled   10m                scheduler   Successfully assigned default/web to node-1
  Warning   BackOff     30s (x3 over 5m)   agent       Back-off restarting failed container
",
        );
    }

    #[test]
    fn gpu_node_with_pods() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "gpu-1", "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"kumo.dev/gpu-model": "Fake-A100"}},
            "spec": {"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "2"},
                "allocatable": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "2"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady", "message": "agent is posting status"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                "gpus": [{"index": 0, "uuid": "GPU-fake-0", "model": "Fake-A100", "memoryBytes": 85899345920u64, "healthy": true, "fake": true}],
                "runtimeClasses": ["process", "runc"],
            },
        });
        let pods = json!([
            {"metadata": {"name": "train", "namespace": "ml", "creationTimestamp": "2024-05-01T11:00:00Z"},
             "spec": {"containers": [{"name": "t", "image": "trainer", "resources": {
                 "requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}}}]},
             "status": {"phase": "Running"}},
            {"metadata": {"name": "done", "namespace": "ml"},
             "spec": {"containers": [{"name": "t", "image": "trainer", "resources": {"requests": {"cpu": "4"}}}]},
             "status": {"phase": "Succeeded"}},
        ]);
        check(
            "node",
            node,
            pods,
            json!([]),
            "\
Name:                 gpu-1
Labels:               kumo.dev/gpu-model=Fake-A100
Annotations:          <none>
CreationTimestamp:    Wed, 01 May 2024 10:00:00 +0000
Taints:               gpu=true:NoSchedule
Unschedulable:        false
Conditions:
  Type    Status   Reason       Message
  ----    ------   ------       -------
  Ready   True     AgentReady   agent is posting status
Addresses:
  InternalIP:      10.0.0.2
Capacity:
  cpu:             8
  memory:          16Gi
  nvidia.com/gpu:  2
Allocatable:
  cpu:             8
  memory:          16Gi
  nvidia.com/gpu:  2
GPUs:
  Index   Model              Memory   Health    UUID
  0       Fake-A100 (fake)   80Gi     Healthy   GPU-fake-0
Runtime Classes:      process, runc
Non-terminated Pods:  (1 in total)
  Namespace   Name    CPU Requests   CPU Limits   Memory Requests   Memory Limits   GPUs   Age
  ---------   ----    ------------   ----------   ---------------   -------------   ----   ---
  ml          train   2 (25%)        0 (0%)       4Gi (25%)         8Gi (50%)       1      60m
Allocated resources:
  (Total limits may be over 100 percent, i.e., overcommitted.)
  Resource         Requests    Limits
  --------         --------    ------
  cpu              2 (25%)     0 (0%)
  memory           4Gi (25%)   8Gi (50%)
  nvidia.com/gpu   1 (50%)     1 (50%)
Events:               <none>
",
        );
    }

    #[test]
    fn other_kinds_show_their_fields() {
        check(
            "ns",
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "team", "creationTimestamp": "2024-05-01T10:00:00Z"},
                   "status": {"phase": "Active"}}),
            Value::Null,
            json!([]),
            "\
Name:               team
Labels:             <none>
Annotations:        <none>
API Version:        v1
Kind:               Namespace
CreationTimestamp:  2024-05-01T10:00:00Z
Status:
  phase: Active
Events:             <none>
",
        );
    }
}
