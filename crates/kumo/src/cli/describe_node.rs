//! `kumo describe node`: capacity, GPUs (fake ones marked), conditions, and the pods it runs.

use super::describe_pod::conditions;
use super::detail::Detail;
use super::format::{age, bytes, timestamp, Table};
use chrono::{DateTime, Utc};
use kumo_api::{Node, Pod, Quantity, GPU_RESOURCE};
use std::collections::BTreeMap;

/// The resources summed for the pods on a node.
const RESOURCES: [&str; 3] = ["cpu", "memory", GPU_RESOURCE];

pub fn node(d: &mut Detail, node: &Node, pods: &[Pod], now: DateTime<Utc>) {
    let status = node.status.clone().unwrap_or_default();
    let meta = &node.metadata;
    d.field(0, "Name", &meta.name);
    d.map(0, "Labels", &meta.labels);
    d.map(0, "Annotations", &meta.annotations);
    d.field(
        0,
        "CreationTimestamp",
        meta.creation_timestamp
            .map(timestamp)
            .unwrap_or_else(|| "<unknown>".into()),
    );
    let taints: Vec<String> = node
        .spec
        .taints
        .iter()
        .map(|t| match &t.value {
            Some(v) => format!("{}={v}:{:?}", t.key, t.effect),
            None => format!("{}:{:?}", t.key, t.effect),
        })
        .collect();
    d.field(
        0,
        "Taints",
        if taints.is_empty() {
            "<none>".to_string()
        } else {
            taints.join("\n")
        },
    );
    d.field(0, "Unschedulable", node.spec.unschedulable.to_string());
    conditions(d, &status.conditions);
    if status.addresses.is_empty() {
        d.field(0, "Addresses", "<none>");
    } else {
        d.section(0, "Addresses");
        for a in &status.addresses {
            d.field(1, &a.type_, &a.address);
        }
    }
    quantities(d, "Capacity", &status.capacity);
    quantities(d, "Allocatable", &status.allocatable);
    if status.gpus.is_empty() {
        d.field(0, "GPUs", "<none>");
    } else {
        d.section(0, "GPUs");
        let mut t = Table::new(&["Index", "Model", "Memory", "Health", "UUID"]);
        for g in &status.gpus {
            let model = if g.fake {
                format!("{} (fake)", g.model)
            } else {
                g.model.clone()
            };
            let health = if g.healthy { "Healthy" } else { "Unhealthy" };
            t.rows.push(vec![
                g.index.to_string(),
                model,
                bytes(i128::from(g.memory_bytes)),
                health.into(),
                g.uuid.clone(),
            ]);
        }
        d.table(1, &t);
    }
    if let Some(info) = &status.node_info {
        d.section(0, "System Info");
        d.field(1, "Kumo Version", &info.kumo_version);
        d.field(1, "Kernel Version", &info.kernel_version);
        d.field(1, "Operating System", &info.operating_system);
        d.field(1, "Architecture", &info.architecture);
    }
    let classes = if status.runtime_classes.is_empty() {
        "<none>".to_string()
    } else {
        status.runtime_classes.join(", ")
    };
    d.field(0, "Runtime Classes", classes);
    let allocatable = if status.allocatable.is_empty() {
        &status.capacity
    } else {
        &status.allocatable
    };
    pods_table(d, pods, allocatable, now);
}

fn quantities(d: &mut Detail, key: &str, map: &BTreeMap<String, Quantity>) {
    if map.is_empty() {
        d.field(0, key, "<none>");
        return;
    }
    d.section(0, key);
    for (name, q) in map {
        d.field(1, name, q.as_str());
    }
}

/// A pod's limits of `resource`, in milli-units (no fallback, unlike requests).
fn limit_millis(pod: &Pod, resource: &str) -> i128 {
    pod.spec
        .containers
        .iter()
        .map(|c| c.resources.limits.get(resource).map_or(0, Quantity::millis))
        .sum()
}

/// `500m (6%)`: an amount of `resource` with its share of what the node offers.
fn amount(resource: &str, millis: i128, allocatable: &BTreeMap<String, Quantity>) -> String {
    let value = match resource {
        "cpu" if millis % 1000 == 0 => (millis / 1000).to_string(),
        "cpu" => format!("{millis}m"),
        "memory" => bytes(millis / 1000),
        _ => (millis / 1000).to_string(),
    };
    match allocatable
        .get(resource)
        .map(Quantity::millis)
        .filter(|a| *a > 0)
    {
        Some(total) => format!("{value} ({}%)", millis * 100 / total),
        None => value,
    }
}

fn pods_table(
    d: &mut Detail,
    pods: &[Pod],
    allocatable: &BTreeMap<String, Quantity>,
    now: DateTime<Utc>,
) {
    let running: Vec<&Pod> = pods
        .iter()
        .filter(|p| !p.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        .collect();
    d.field(
        0,
        "Non-terminated Pods",
        format!("({} in total)", running.len()),
    );
    if !running.is_empty() {
        let mut t = Table::new(&[
            "Namespace",
            "Name",
            "CPU Requests",
            "CPU Limits",
            "Memory Requests",
            "Memory Limits",
            "GPUs",
            "Age",
        ]);
        t.rows
            .push(t.headers.iter().map(|h| "-".repeat(h.len())).collect());
        for p in &running {
            t.rows.push(vec![
                p.metadata.ns().to_string(),
                p.metadata.name.clone(),
                amount("cpu", p.spec.request_millis("cpu"), allocatable),
                amount("cpu", limit_millis(p, "cpu"), allocatable),
                amount("memory", p.spec.request_millis("memory"), allocatable),
                amount("memory", limit_millis(p, "memory"), allocatable),
                (p.spec.request_millis(GPU_RESOURCE) / 1000).to_string(),
                age(p.metadata.creation_timestamp, now),
            ]);
        }
        d.table(1, &t);
    }
    d.section(0, "Allocated resources");
    d.text(
        1,
        "(Total limits may be over 100 percent, i.e., overcommitted.)",
    );
    let mut t = Table::new(&["Resource", "Requests", "Limits"]);
    t.rows
        .push(t.headers.iter().map(|h| "-".repeat(h.len())).collect());
    for r in RESOURCES {
        let requests: i128 = running.iter().map(|p| p.spec.request_millis(r)).sum();
        let limits: i128 = running.iter().map(|p| limit_millis(p, r)).sum();
        t.rows.push(vec![
            r.to_string(),
            amount(r, requests, allocatable),
            amount(r, limits, allocatable),
        ]);
    }
    d.table(1, &t);
}
