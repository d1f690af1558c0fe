//! `kumo describe pod`: metadata, status, each container's state and resources, conditions.

use super::detail::Detail;
use super::format::{age, timestamp, Table};
use chrono::{DateTime, Utc};
use kumo_api::meta::{Condition, ConditionStatus};
use kumo_api::pod::{Container, ContainerState, ContainerStatus};
use kumo_api::{Pod, Quantity};
use std::collections::BTreeMap;

pub fn pod(d: &mut Detail, pod: &Pod, now: DateTime<Utc>) {
    let status = pod.status.clone().unwrap_or_default();
    let meta = &pod.metadata;
    d.field(0, "Name", &meta.name);
    d.field(0, "Namespace", meta.ns());
    let node = match (&pod.spec.node_name, &status.host_ip) {
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n.clone(),
        (None, _) => "<none>".to_string(),
    };
    d.field(0, "Node", node);
    d.field_opt(
        0,
        "Runtime Class Name",
        pod.spec.runtime_class_name.as_deref(),
    );
    d.field_opt(0, "Start Time", status.start_time.map(timestamp));
    d.map(0, "Labels", &meta.labels);
    d.map(0, "Annotations", &meta.annotations);
    match meta.deletion_timestamp {
        Some(t) => {
            d.field(
                0,
                "Status",
                format!("Terminating (lasts {})", age(Some(t), now)),
            );
            d.field(
                0,
                "Termination Grace Period",
                format!("{}s", pod.spec.grace_period_seconds()),
            );
        }
        None => d.field(0, "Status", format!("{:?}", status.phase)),
    }
    d.field_opt(0, "Reason", status.reason.as_deref());
    d.field_opt(0, "Message", status.message.as_deref());
    d.field(
        0,
        "IP",
        status.pod_ip.clone().unwrap_or_else(|| "<none>".into()),
    );
    d.field(
        0,
        "Restart Policy",
        format!("{:?}", pod.spec.restart_policy),
    );
    d.section(0, "Containers");
    for c in &pod.spec.containers {
        let cs = status.container_statuses.iter().find(|s| s.name == c.name);
        container(d, c, cs);
    }
    conditions(d, &status.conditions);
    d.map(0, "Node-Selectors", &pod.spec.node_selector);
    let tolerations: Vec<String> = pod
        .spec
        .tolerations
        .iter()
        .map(|t| {
            let mut s = t.key.clone().unwrap_or_default();
            if let Some(v) = t.value.as_deref().filter(|v| !v.is_empty()) {
                s = format!("{s}={v}");
            }
            if let Some(e) = t.effect {
                s = format!("{s}:{e:?}");
            }
            if t.operator == Some(kumo_api::pod::TolerationOperator::Exists) {
                s = format!("{s} op=Exists");
            }
            s
        })
        .collect();
    d.field(
        0,
        "Tolerations",
        if tolerations.is_empty() {
            "<none>".to_string()
        } else {
            tolerations.join("\n")
        },
    );
}

fn container(d: &mut Detail, c: &Container, cs: Option<&ContainerStatus>) {
    d.section(1, &c.name);
    d.field_opt(
        2,
        "Container ID",
        cs.and_then(|s| s.container_id.as_deref()),
    );
    d.field(
        2,
        "Image",
        c.image.clone().unwrap_or_else(|| "<none>".into()),
    );
    for (key, list) in [("Command", &c.command), ("Args", &c.args)] {
        if !list.is_empty() {
            d.field(2, key, "");
            for part in list {
                d.text(3, part);
            }
        }
    }
    if !c.ports.is_empty() {
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.container_port,
                    p.protocol.as_deref().unwrap_or("TCP")
                )
            })
            .collect();
        d.field(2, "Ports", ports.join(", "));
    }
    match cs {
        Some(s) => {
            state(d, "State", &s.state);
            if !s.last_state.is_empty() {
                state(d, "Last State", &s.last_state);
            }
            d.field(2, "Ready", if s.ready { "True" } else { "False" });
            d.field(2, "Restart Count", s.restart_count.to_string());
            for r in &s.allocated_resources_status {
                let ids: Vec<&str> = r.resources.iter().map(|h| h.resource_id.as_str()).collect();
                d.field(2, &format!("Allocated {}", r.name), ids.join(","));
            }
        }
        None => {
            d.field(2, "State", "Waiting");
            d.field(2, "Ready", "False");
            d.field(2, "Restart Count", "0");
        }
    }
    resources(d, "Limits", &c.resources.limits);
    resources(d, "Requests", &c.resources.requests);
    if c.env.is_empty() {
        d.field(2, "Environment", "<none>");
    } else {
        d.section(2, "Environment");
        for e in &c.env {
            d.field(3, &e.name, &e.value);
        }
    }
}

fn state(d: &mut Detail, key: &str, s: &ContainerState) {
    if let Some(w) = &s.waiting {
        d.field(2, key, "Waiting");
        d.field_opt(3, "Reason", w.reason.as_deref());
        d.field_opt(3, "Message", w.message.as_deref());
    } else if let Some(r) = &s.running {
        d.field(2, key, "Running");
        d.field_opt(3, "Started", r.started_at.map(timestamp));
    } else if let Some(t) = &s.terminated {
        d.field(2, key, "Terminated");
        d.field_opt(3, "Reason", t.reason.as_deref());
        d.field_opt(3, "Message", t.message.as_deref());
        d.field(3, "Exit Code", t.exit_code.to_string());
        d.field_opt(3, "Signal", t.signal.map(|s| s.to_string()));
        d.field_opt(3, "Started", t.started_at.map(timestamp));
        d.field_opt(3, "Finished", t.finished_at.map(timestamp));
    } else {
        d.field(2, key, "Waiting");
    }
}

fn resources(d: &mut Detail, key: &str, map: &BTreeMap<String, Quantity>) {
    if !map.is_empty() {
        d.section(2, key);
        for (name, q) in map {
            d.field(3, name, q.as_str());
        }
    }
}

/// `Conditions:` as a table of Type, Status, Reason and Message.
pub fn conditions(d: &mut Detail, conditions: &[Condition]) {
    if conditions.is_empty() {
        d.field(0, "Conditions", "<none>");
        return;
    }
    d.section(0, "Conditions");
    let mut t = Table::new(&["Type", "Status", "Reason", "Message"]);
    t.rows
        .push(t.headers.iter().map(|h| "-".repeat(h.len())).collect());
    for c in conditions {
        let status = match c.status {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        };
        t.rows.push(vec![
            c.type_.clone(),
            status.to_string(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    d.table(1, &t);
}
