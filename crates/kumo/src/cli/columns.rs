//! The columns `kumo get` prints for each kind, derived from objects as kubectl derives them.

use super::format::{age, bytes, Table};
use super::{text, time_at};
use chrono::{DateTime, Utc};
use kumo_api::meta::ConditionStatus;
use kumo_api::{KindInfo, Node, Pod, GPU_RESOURCE};
use serde_json::Value;

/// How a table is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub wide: bool,
    /// Adds a leading NAMESPACE column (for namespaced kinds).
    pub all_namespaces: bool,
}

/// The table of `objects`, all of `kind`.
pub fn table(kind: &KindInfo, objects: &[Value], layout: Layout, now: DateTime<Utc>) -> Table {
    let mut t = Table {
        headers: headers(kind, layout)
            .into_iter()
            .map(String::from)
            .collect(),
        rows: Vec::new(),
    };
    t.rows = objects.iter().map(|o| row(kind, o, layout, now)).collect();
    t
}

/// The header of a kind's table.
pub fn headers(kind: &KindInfo, layout: Layout) -> Vec<&'static str> {
    let mut h = Vec::new();
    if layout.all_namespaces && kind.namespaced {
        h.push("NAMESPACE");
    }
    let (base, wide): (&[&str], &[&str]) = match (kind.group, kind.kind) {
        ("", "Pod") => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE"],
        ),
        ("", "Node") => (
            &["NAME", "STATUS", "AGE", "VERSION"],
            &["INTERNAL-IP", "CPU", "MEMORY", "GPUS"],
        ),
        ("", "Namespace") => (&["NAME", "STATUS", "AGE"], &[]),
        ("", "Event") => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        // As kubectl, and when it was last renewed (a stale one is a leader gone quiet).
        (kumo_api::lease::GROUP, "Lease") => (&["NAME", "HOLDER", "AGE"], &["RENEWED"]),
        ("kumo.dev", "MLTask") => (
            &[
                "NAME", "PHASE", "QUEUE", "POSITION", "GPUS", "ATTEMPTS", "AGE",
            ],
            &["NODES", "GPU USE", "REASON"],
        ),
        ("kumo.dev", "Queue") => (&["NAME", "QUOTA", "PENDING", "RUNNING", "GPUS", "AGE"], &[]),
        // As kubectl: the role granted (`ClusterRole/view`), and to whom when wide.
        (kumo_api::rbac::GROUP, "RoleBinding" | "ClusterRoleBinding") => (
            &["NAME", "ROLE", "AGE"],
            &["USERS", "GROUPS", "SERVICEACCOUNTS"],
        ),
        _ => (&["NAME", "AGE"], &[]),
    };
    h.extend_from_slice(base);
    if layout.wide {
        h.extend_from_slice(wide);
    }
    h
}

/// One object's row, matching `headers`.
pub fn row(kind: &KindInfo, obj: &Value, layout: Layout, now: DateTime<Utc>) -> Vec<String> {
    let mut r = Vec::new();
    if layout.all_namespaces && kind.namespaced {
        r.push(text(obj, "/metadata/namespace").to_string());
    }
    let name = text(obj, "/metadata/name").to_string();
    let created = age(time_at(obj, "/metadata/creationTimestamp"), now);
    match (kind.group, kind.kind) {
        ("", "Pod") => {
            let pod: Pod = serde_json::from_value(obj.clone()).unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            let ready = status
                .container_statuses
                .iter()
                .filter(|c| c.ready && c.state.running.is_some())
                .count();
            r.extend([
                name,
                format!("{ready}/{}", pod.spec.containers.len()),
                pod_status(&pod),
                restarts(&pod, now),
                created,
            ]);
            if layout.wide {
                r.push(status.pod_ip.unwrap_or_else(none));
                r.push(pod.spec.node_name.clone().unwrap_or_else(none));
            }
        }
        ("", "Node") => {
            let node: Node = serde_json::from_value(obj.clone()).unwrap_or_default();
            let status = node.status.clone().unwrap_or_default();
            let version = status
                .node_info
                .as_ref()
                .map(|i| i.kumo_version.clone())
                .unwrap_or_default();
            let version = match version.as_str() {
                "" => none(),
                v if v.starts_with('v') => v.to_string(),
                v => format!("v{v}"),
            };
            r.extend([name, node_status(&node), created, version]);
            if layout.wide {
                let ip = status
                    .addresses
                    .iter()
                    .find(|a| a.type_ == "InternalIP")
                    .or(status.addresses.first())
                    .map(|a| a.address.clone())
                    .unwrap_or_else(none);
                let resources = if status.allocatable.is_empty() {
                    &status.capacity
                } else {
                    &status.allocatable
                };
                let cpu = resources
                    .get("cpu")
                    .map(|q| q.as_str().to_string())
                    .unwrap_or_else(none);
                let memory = resources
                    .get("memory")
                    .map(|q| bytes(q.units_ceil()))
                    .unwrap_or_else(none);
                r.extend([ip, cpu, memory, gpus(&node)]);
            }
        }
        ("", "Namespace") => {
            let phase = match text(obj, "/status/phase") {
                "" => "Active",
                p => p,
            };
            r.extend([name, phase.to_string(), created]);
        }
        ("", "Event") => {
            let seen = event_time(obj);
            let object = format!(
                "{}/{}",
                text(obj, "/involvedObject/kind").to_ascii_lowercase(),
                text(obj, "/involvedObject/name")
            );
            r.extend([
                age(seen, now),
                text(obj, "/type").to_string(),
                text(obj, "/reason").to_string(),
                object,
                text(obj, "/message").replace('\n', " "),
            ]);
        }
        (kumo_api::lease::GROUP, "Lease") => {
            r.extend([name, text(obj, "/spec/holderIdentity").to_string(), created]);
            if layout.wide {
                r.push(age(time_at(obj, "/spec/renewTime"), now));
            }
        }
        ("kumo.dev", "MLTask") => r.extend(super::mltask_columns::task_row(
            obj,
            name,
            created,
            layout.wide,
        )),
        ("kumo.dev", "Queue") => r.extend(super::mltask_columns::queue_row(obj, name, created)),
        (kumo_api::rbac::GROUP, "RoleBinding" | "ClusterRoleBinding") => {
            let role = format!(
                "{}/{}",
                text(obj, "/roleRef/kind"),
                text(obj, "/roleRef/name")
            );
            r.extend([name, role, created]);
            if layout.wide {
                let subjects = obj.get("subjects").and_then(|s| s.as_array());
                let of = |kind: &str| {
                    let names: Vec<String> = subjects
                        .into_iter()
                        .flatten()
                        .filter(|s| text(s, "/kind") == kind)
                        .map(|s| match text(s, "/namespace") {
                            "" => text(s, "/name").to_string(),
                            ns => format!("{ns}/{}", text(s, "/name")),
                        })
                        .collect();
                    names.join(",")
                };
                r.extend([of("User"), of("Group"), of("ServiceAccount")]);
            }
        }
        _ => r.extend([name, created]),
    }
    r
}

fn none() -> String {
    "<none>".to_string()
}

/// When an event last happened: lastTimestamp, else firstTimestamp, else its creation.
pub fn event_time(ev: &Value) -> Option<DateTime<Utc>> {
    time_at(ev, "/lastTimestamp")
        .or_else(|| time_at(ev, "/firstTimestamp"))
        .or_else(|| time_at(ev, "/metadata/creationTimestamp"))
}

/// The STATUS column of a pod, as kubectl derives it: a container's waiting or terminated
/// reason (the first container's wins), `Terminating` while deleting, else the phase.
pub fn pod_status(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut reason = format!("{:?}", status.phase);
    if let Some(r) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        reason = r.to_string();
    }
    let mut has_running = false;
    for c in status.container_statuses.iter().rev() {
        let waiting = c
            .state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty());
        if let Some(w) = waiting {
            reason = w.to_string();
        } else if let Some(t) = &c.state.terminated {
            reason = match (t.reason.as_deref().filter(|r| !r.is_empty()), t.signal) {
                (Some(r), _) => r.to_string(),
                (None, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                (None, _) => format!("ExitCode:{}", t.exit_code),
            };
        } else if c.ready && c.state.running.is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True);
        reason = if ready { "Running" } else { "NotReady" }.to_string();
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = if status.reason.as_deref() == Some("NodeLost") {
            "Unknown"
        } else {
            "Terminating"
        }
        .to_string();
    }
    reason
}

/// `0`, or `3 (2m ago)` with the time since the last restart.
fn restarts(pod: &Pod, now: DateTime<Utc>) -> String {
    let statuses = pod
        .status
        .as_ref()
        .map(|s| s.container_statuses.as_slice())
        .unwrap_or_default();
    let count: i64 = statuses.iter().map(|c| i64::from(c.restart_count)).sum();
    let last = statuses
        .iter()
        .filter_map(|c| c.last_state.terminated.as_ref().and_then(|t| t.finished_at))
        .max();
    match last {
        Some(t) if count > 0 => format!("{count} ({} ago)", age(Some(t), now)),
        _ => count.to_string(),
    }
}

/// `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` when cordoned.
pub fn node_status(node: &Node) -> String {
    let conditions = node
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut s = match conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status)
    {
        Some(ConditionStatus::True) => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.spec.unschedulable {
        s.push_str(",SchedulingDisabled");
    }
    s
}

/// The GPU count: `2`, `2 (fake)` for devices made up by `--fake-gpus`, `0` without any.
pub fn gpus(node: &Node) -> String {
    let status = node.status.clone().unwrap_or_default();
    if status.gpus.is_empty() {
        return status
            .capacity
            .get(GPU_RESOURCE)
            .map(|q| q.units_ceil().to_string())
            .unwrap_or_else(|| "0".into());
    }
    let fake = status.gpus.iter().filter(|g| g.fake).count();
    match fake {
        0 => status.gpus.len().to_string(),
        f if f == status.gpus.len() => format!("{f} (fake)"),
        f => format!("{} ({f} fake)", status.gpus.len()),
    }
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

    /// Renders `objects` (JSON) of `kind` and compares with the expected text.
    fn check(kind: &str, layout: Layout, objects: Value, expected: &str) {
        let kind = super::super::resolve_kind(kind).unwrap();
        let objects = objects.as_array().cloned().unwrap_or_default();
        let got = table(kind, &objects, layout, now()).render(true);
        assert_eq!(got, expected, "\n{got}");
    }

    const NARROW: Layout = Layout {
        wide: false,
        all_namespaces: false,
    };

    fn pod(name: &str, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-05-01T11:57:00Z"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": status,
        })
    }

    #[test]
    fn pod_status_column() {
        let running = json!({"phase": "Running", "containerStatuses": [
            {"name": "main", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2024-05-01T11:58:00Z"}}}]});
        let crash = json!({"phase": "Running", "containerStatuses": [
            {"name": "main", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:59:30Z"}}}]});
        let creating = json!({"phase": "Pending", "containerStatuses": [
            {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        let no_runtime = json!({"phase": "Pending", "containerStatuses": [
            {"name": "main", "state": {"waiting": {"reason": "RuntimeClassNotFound", "message": "no gvisor"}}}]});
        let done = json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
        let failed = json!({"phase": "Failed", "containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]});
        let killed = json!({"phase": "Failed", "containerStatuses": [
            {"name": "main", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]});
        let unscheduled = json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]});
        let mut terminating = pod("terminating", running.clone());
        terminating["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:59Z");
        check(
            "pods",
            NARROW,
            json!([
                pod("running", running),
                pod("crash", crash),
                pod("creating", creating),
                pod("no-runtime", no_runtime),
                pod("done", done),
                pod("failed", failed),
                pod("killed", killed),
                pod("unscheduled", unscheduled),
                pod("fresh", Value::Null),
                terminating,
            ]),
            "\
NAME          READY   STATUS                 RESTARTS      AGE
running       1/1     Running                0             3m
crash         0/1     CrashLoopBackOff       4 (30s ago)   3m
creating      0/1     ContainerCreating      0             3m
no-runtime    0/1     RuntimeClassNotFound   0             3m
done          0/1     Completed              0             3m
failed        0/1     Error                  0             3m
killed        0/1     Signal:9               0             3m
unscheduled   0/1     Pending                0             3m
fresh         0/1     Pending                0             3m
terminating   1/1     Terminating            0             3m
",
        );
    }

    #[test]
    fn bindings_show_their_role_and_subjects() {
        let b = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "ml", "namespace": "team-a", "creationTimestamp": "2024-05-01T11:57:00Z"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ml-team"},
                {"kind": "Group", "name": "interns"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "team-a"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ml-engineer"}
        });
        check(
            "rolebindings",
            NARROW,
            json!([b]),
            "\
NAME   ROLE                      AGE
ml     ClusterRole/ml-engineer   3m
",
        );
        let wide = Layout {
            wide: true,
            all_namespaces: false,
        };
        check(
            "rolebindings",
            wide,
            json!([b]),
            "\
NAME   ROLE                      AGE   USERS   GROUPS            SERVICEACCOUNTS
ml     ClusterRole/ml-engineer   3m    alice   ml-team,interns   team-a/ci
",
        );
    }

    #[test]
    fn leases_show_their_holder() {
        let lease = |name: &str, holder: Value| {
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kumo-system", "creationTimestamp": "2024-05-01T11:57:00Z"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "renewTime": "2024-05-01T11:59:57.500000Z"},
            })
        };
        let leases = json!([
            lease("kumo-scheduler", json!("host-a_127.0.0.1:7400")),
            lease("kumo-apps-controller", Value::Null)
        ]);
        check(
            "leases",
            NARROW,
            leases.clone(),
            "\
NAME                   HOLDER                  AGE
kumo-scheduler         host-a_127.0.0.1:7400   3m
kumo-apps-controller                           3m
",
        );
        let wide = Layout {
            wide: true,
            all_namespaces: false,
        };
        check(
            "lease",
            wide,
            leases,
            "\
NAME                   HOLDER                  AGE   RENEWED
kumo-scheduler         host-a_127.0.0.1:7400   3m    2s
kumo-apps-controller                           3m    2s
",
        );
    }

    #[test]
    fn pods_wide_in_all_namespaces() {
        let mut p = pod("web", json!({"phase": "Running", "podIP": "10.88.0.5"}));
        p["spec"]["nodeName"] = json!("node-1");
        check(
            "po",
            Layout {
                wide: true,
                all_namespaces: true,
            },
            json!([p, pod("queued", json!({"phase": "Pending"}))]),
            "\
NAMESPACE   NAME     READY   STATUS    RESTARTS   AGE   IP          NODE
default     web      0/1     Running   0          3m    10.88.0.5   node-1
default     queued   0/1     Pending   0          3m    <none>      <none>
",
        );
    }

    #[test]
    fn nodes() {
        let node = |name: &str, ready: &str, unschedulable: bool, gpus: Value| {
            json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "creationTimestamp": "2024-04-27T12:00:00Z"},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "capacity": {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "2"},
                    "allocatable": {"cpu": "7500m", "memory": "15Gi", "nvidia.com/gpu": "2"},
                    "conditions": [{"type": "Ready", "status": ready}],
                    "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "10.0.0.2"}],
                    "nodeInfo": {"kumoVersion": "0.1.0"},
                    "gpus": gpus,
                },
            })
        };
        let fake = json!([
            {"index": 0, "uuid": "GPU-fake-0", "model": "Fake A100", "healthy": true, "fake": true},
            {"index": 1, "uuid": "GPU-fake-1", "model": "Fake A100", "healthy": true, "fake": true}]);
        let objects = json!([
            node("gpu-1", "True", false, fake),
            node("cpu-1", "False", true, json!([])),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "new"}}),
        ]);
        check(
            "nodes",
            NARROW,
            objects.clone(),
            "\
NAME    STATUS                        AGE         VERSION
gpu-1   Ready                         4d          v0.1.0
cpu-1   NotReady,SchedulingDisabled   4d          v0.1.0
new     Unknown                       <unknown>   <none>
",
        );
        check(
            "no",
            Layout {
                wide: true,
                all_namespaces: true,
            },
            objects,
            "\
NAME    STATUS                        AGE         VERSION   INTERNAL-IP   CPU      MEMORY   GPUS
gpu-1   Ready                         4d          v0.1.0    10.0.0.2      7500m    15Gi     2 (fake)
cpu-1   NotReady,SchedulingDisabled   4d          v0.1.0    10.0.0.2      7500m    15Gi     2
new     Unknown                       <unknown>   <none>    <none>        <none>   <none>   0
",
        );
    }

    #[test]
    fn namespaces_and_events() {
        check(
            "ns",
            NARROW,
            json!([
                {"metadata": {"name": "default", "creationTimestamp": "2024-05-01T10:00:00Z"}, "status": {"phase": "Active"}},
                {"metadata": {"name": "old", "creationTimestamp": "2024-05-01T11:59:15Z", "deletionTimestamp": "2024-05-01T12:00:00Z"}, "status": {"phase": "Terminating"}},
            ]),
            "NAME      STATUS        AGE\ndefault   Active        120m\nold       Terminating   45s\n",
        );
        check(
            "ev",
            NARROW,
            json!([{
                "metadata": {"name": "web.1", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": "web"},
                "reason": "Scheduled", "type": "Normal", "message": "Successfully assigned default/web to node-1",
                "lastTimestamp": "2024-05-01T11:59:50Z", "count": 1,
            }]),
            "\
LAST SEEN   TYPE     REASON      OBJECT    MESSAGE
10s         Normal   Scheduled   pod/web   Successfully assigned default/web to node-1
",
        );
    }

    #[test]
    fn kinds_without_columns_show_name_and_age() {
        static MLTASK: KindInfo = KindInfo {
            group: "kumo.dev",
            version: "v1",
            kind: "Dataset",
            plural: "datasets",
            singular: "dataset",
            short_names: &[],
            namespaced: true,
            has_status: true,
            label_names: true,
            admit: Ok,
            validate_update: |_, _| Vec::new(),
        };
        let task = json!({"metadata": {"name": "train", "namespace": "ml", "creationTimestamp": "2024-05-01T11:59:15Z"}});
        let got = table(
            &MLTASK,
            &[task],
            Layout {
                wide: true,
                all_namespaces: true,
            },
            now(),
        )
        .render(true);
        assert_eq!(got, "NAMESPACE   NAME    AGE\nml          train   45s\n");
    }
}
