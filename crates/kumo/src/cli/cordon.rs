//! `kumo cordon NODE` / `kumo uncordon NODE`: mark a node (un)schedulable, as kubectl does
//! (`spec.unschedulable`); the scheduler then places no new pod there, and `kumo get nodes`
//! shows it `SchedulingDisabled`. Pods already there keep running.

use super::client;
use anyhow::bail;
use kumo_api::Node;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CordonArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    /// The node's name
    pub node: String,
}

/// What kubectl prints for a change of `spec.unschedulable` to `to` from `was`.
fn message(node: &str, was: bool, to: bool) -> String {
    let verb = if to { "cordoned" } else { "uncordoned" };
    if was == to {
        format!("node/{node} already {verb}")
    } else {
        format!("node/{node} {verb}")
    }
}

/// Sets the node's `spec.unschedulable`.
pub async fn run(args: CordonArgs, unschedulable: bool) -> anyhow::Result<ExitCode> {
    let c = client(&args.connect)?;
    let Some(node) = c.get_opt::<Node>("", &args.node).await? else {
        bail!("node {:?} not found", args.node);
    };
    let was = node.spec.unschedulable;
    if was != unschedulable {
        // A merge patch of the one field: no conflict with the agent's status updates.
        let patch = serde_json::json!({"spec": {"unschedulable": unschedulable}});
        c.patch::<Node>("", &args.node, &patch).await?;
    }
    super::out(message(&args.node, was, unschedulable));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_kubectl_prints_them() {
        let check = |was, to, expected: &str| assert_eq!(message("n1", was, to), expected);
        check(false, true, "node/n1 cordoned");
        check(true, true, "node/n1 already cordoned");
        check(true, false, "node/n1 uncordoned");
        check(false, false, "node/n1 already uncordoned");
    }
}
