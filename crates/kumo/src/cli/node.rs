//! `kumo cordon`, `uncordon` and `drain`: a node out of scheduling, and emptied, as kubectl does.
//!
//! Drain cordons the node, then asks an eviction (`pods/{name}/eviction`) of each pod on it and
//! waits until they are gone. App replicas go once their replacement is Ready on another node,
//! MLTasks stop gracefully and go back to their queue without losing an attempt; a pod no
//! controller replaces is refused (nothing is changed) unless `--force`.

use super::{client, out};
use crate::duration::parse_timeout;
use anyhow::{anyhow, bail};
use http::Method;
use kumo_api::keys::{pod_owner, PodOwner as Owner, ANNOTATION_EVICTION_REQUESTED};
use kumo_api::{Node, Pod};
use kumo_client::{Client, ListParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct CordonArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The node's name
    pub node: String,
}

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The node's name
    pub node: String,
    /// How long to wait for the node's pods to go (0: no limit; at most 8760h)
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Also delete pods that no App or MLTask replaces (they are gone for good)
    #[arg(long)]
    pub force: bool,
    /// Seconds each pod gets to stop (default: the pod's own grace period)
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=kumo_api::bounds::MAX_DURATION_SECONDS))]
    pub grace_period: Option<i64>,
}

pub async fn cordon(args: CordonArgs) -> anyhow::Result<ExitCode> {
    super::finish(set_unschedulable(&args, true).await)
}

pub async fn uncordon(args: CordonArgs) -> anyhow::Result<ExitCode> {
    super::finish(set_unschedulable(&args, false).await)
}

async fn set_unschedulable(args: &CordonArgs, on: bool) -> anyhow::Result<ExitCode> {
    let name = super::check_name(&args.node)?;
    let client = client(&args.connect)?;
    let node = get_node(&client, &name).await?;
    let (done, already) = if on {
        ("cordoned", "already cordoned")
    } else {
        ("uncordoned", "already uncordoned")
    };
    if node.spec.unschedulable == on {
        out(format!("node/{name} {already}"));
        return Ok(ExitCode::SUCCESS);
    }
    cordon_node(&client, &name, on).await?;
    out(format!("node/{name} {done}"));
    Ok(ExitCode::SUCCESS)
}

async fn get_node(client: &Client, name: &str) -> anyhow::Result<Node> {
    client
        .get_opt::<Node>("", name)
        .await?
        .ok_or_else(|| anyhow!("node {name:?} not found"))
}

async fn cordon_node(client: &Client, name: &str, on: bool) -> anyhow::Result<()> {
    let _: Node = client
        .patch("", name, &json!({"spec": {"unschedulable": on}}))
        .await?;
    Ok(())
}

pub async fn drain(args: DrainArgs) -> anyhow::Result<ExitCode> {
    super::finish(drain_node(args).await)
}

fn owner(pod: &Pod) -> Owner {
    pod_owner(&pod.metadata.labels)
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.ns(), pod.metadata.name)
}

/// The pods that hold the node: not ended (an ended pod runs nothing and holds nothing).
fn holding(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| {
            !p.status
                .as_ref()
                .map(|s| s.phase)
                .unwrap_or_default()
                .is_terminal()
        })
        .collect()
}

/// Why a pod is still on the node, for the timeout's message.
fn waiting_for(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "stopping".into();
    }
    match owner(pod) {
        Owner::App(app)
            if pod
                .metadata
                .annotations
                .contains_key(ANNOTATION_EVICTION_REQUESTED) =>
        {
            format!("app {app}: waiting for its replacement to be ready on another node")
        }
        Owner::MLTask(task) => format!("mltask {task}: stopping its replicas"),
        _ => "not evicted yet".into(),
    }
}

async fn pods_on(client: &Client, node: &str) -> anyhow::Result<Vec<Pod>> {
    let list = client
        .list::<Pod>(None, &ListParams::fields(&format!("spec.nodeName={node}")))
        .await?;
    Ok(holding(list.items))
}

async fn drain_node(args: DrainArgs) -> anyhow::Result<ExitCode> {
    let name = super::check_name(&args.node)?;
    let client = client(&args.connect)?;
    let node = get_node(&client, &name).await?;
    let pods = pods_on(&client, &name).await?;
    // Refused before anything changes, as a drain that would lose pods must be asked for.
    let bare: Vec<String> = pods
        .iter()
        .filter(|p| owner(p) == Owner::None && p.metadata.deletion_timestamp.is_none())
        .map(key)
        .collect();
    if !bare.is_empty() && !args.force {
        bail!(
            "cannot drain node {name:?}: these pods are not replicas of an App or MLTask, so nothing would replace them (use --force to delete them): {}",
            bare.join(", ")
        );
    }
    if node.spec.unschedulable {
        out(format!("node/{name} already cordoned"));
    } else {
        cordon_node(&client, &name, true).await?;
        out(format!("node/{name} cordoned"));
    }
    let mut body = json!({"apiVersion": "policy/v1", "kind": "Eviction"});
    if let Some(g) = args.grace_period {
        body["deleteOptions"] = json!({"gracePeriodSeconds": g});
    }
    let mut left: BTreeMap<String, Pod> = BTreeMap::new();
    for pod in pods {
        let k = key(&pod);
        if pod.metadata.deletion_timestamp.is_none() {
            out(format!("evicting pod {k}"));
            let path = format!(
                "{}/eviction",
                <Pod as kumo_api::Resource>::object_path(
                    Some(pod.metadata.ns()),
                    &pod.metadata.name
                )
            );
            body["metadata"] = json!({"name": pod.metadata.name, "namespace": pod.metadata.ns()});
            let sent: Result<Value, _> = client
                .request_json(Method::POST, &path, Some(("application/json", &body)))
                .await;
            match sent {
                Ok(_) => {}
                Err(e) if e.is_not_found() => continue,
                Err(e) => bail!("cannot evict pod {k}: {e}"),
            }
        }
        left.insert(pod.metadata.uid.clone().unwrap_or_default(), pod);
    }
    let deadline = (!args.timeout.is_zero()).then(|| tokio::time::Instant::now() + args.timeout);
    loop {
        let now: BTreeMap<String, Pod> = pods_on(&client, &name)
            .await?
            .into_iter()
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
            .collect();
        left.retain(|uid, pod| {
            let still = now.contains_key(uid);
            if !still {
                out(format!("pod/{} evicted", pod.metadata.name));
            }
            still
        });
        // Keep the latest view of each pod for the message.
        for (uid, pod) in left.iter_mut() {
            if let Some(p) = now.get(uid) {
                *pod = p.clone();
            }
        }
        if left.is_empty() {
            out(format!("node/{name} drained"));
            return Ok(ExitCode::SUCCESS);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let held: Vec<String> = left
                .values()
                .map(|p| format!("{} ({})", key(p), waiting_for(p)))
                .collect();
            bail!(
                "drain of node {name:?} did not finish within {}: still on it: {} (the node stays cordoned; `kumo uncordon {name}` undoes it)",
                humantime(args.timeout),
                held.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `5m`, `90s`: the timeout as it was likely given.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::keys::{LABEL_APP, LABEL_PROCESS, LABEL_RELEASE, LABEL_TASK};

    fn pod(labels: Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "team", "labels": labels},
            "spec": {"containers": []},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn owners_and_what_holds_a_node() {
        let replica = json!({LABEL_APP: "web", LABEL_RELEASE: "3", LABEL_PROCESS: "web"});
        let cases = [
            (json!({}), Owner::None),
            (replica, Owner::App("web".into())),
            (json!({LABEL_APP: "web"}), Owner::None),
            (json!({LABEL_TASK: "train"}), Owner::MLTask("train".into())),
        ];
        for (labels, want) in cases {
            assert_eq!(owner(&pod(labels.clone(), "Running")), want, "{labels}");
        }
        let pods = vec![
            pod(json!({}), "Running"),
            pod(json!({}), "Succeeded"),
            pod(json!({}), "Failed"),
            pod(json!({}), "Pending"),
        ];
        assert_eq!(holding(pods).len(), 2);
        assert_eq!(humantime(Duration::from_secs(300)), "5m");
        assert_eq!(humantime(Duration::from_secs(90)), "90s");
        assert_eq!(humantime(Duration::from_millis(1500)), "1500ms");
    }
}
