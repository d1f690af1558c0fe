//! The Node authorizer (Kubernetes' model): a node credential (`system:node:NAME` in
//! `system:nodes`) may do what its agent needs and no more: its own Node object and status,
//! the pods bound to it, and reading the Secrets, MLTasks, datasets and service-account tokens
//! those pods use. Pure: it decides over [`PodRefs`], the facts about pods the RBAC cache
//! keeps from a watch.

use crate::authz::Attributes;
use crate::error::{ApiError, ApiResult};
use crate::request::Kind;
use kumo_api::UserInfo;
use serde_json::Value;

/// What one pod ties to its node: the objects its node may read because of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub namespace: String,
    pub name: String,
    /// `spec.nodeName`; empty while unbound.
    pub node: String,
    /// Secrets named by `imagePullSecrets`, secret volumes and env.
    pub secrets: Vec<String>,
    /// The MLTask that owns the pod (a replica), if any.
    pub mltask: Option<String>,
    /// The dataset the pod mounts (`kumo.dev/dataset`).
    pub dataset: Option<String>,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
}

impl PodRefs {
    /// Reads the references from a stored pod (raw JSON, so fields other kinds of the pod
    /// spec add later are read without a typed change here).
    pub fn of(pod: &Value) -> PodRefs {
        let str_at = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let mut secrets = Vec::new();
        let each = |p: &str| {
            pod.pointer(p)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        for r in each("/spec/imagePullSecrets") {
            secrets.extend(str_at(&r, "/name"));
        }
        for v in each("/spec/volumes") {
            secrets.extend(str_at(&v, "/secret/secretName"));
        }
        for c in [each("/spec/containers"), each("/spec/initContainers")].concat() {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                secrets.extend(str_at(e, "/valueFrom/secretKeyRef/name"));
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                secrets.extend(str_at(e, "/secretRef/name"));
            }
        }
        let mltask = each("/metadata/ownerReferences")
            .iter()
            .find(|o| o.get("kind").and_then(Value::as_str) == Some("MLTask"))
            .and_then(|o| str_at(o, "/name"));
        PodRefs {
            namespace: str_at(pod, "/metadata/namespace").unwrap_or_else(|| "default".into()),
            name: str_at(pod, "/metadata/name").unwrap_or_default(),
            node: str_at(pod, "/spec/nodeName").unwrap_or_default(),
            secrets,
            mltask,
            dataset: pod
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(kumo_api::keys::ANNOTATION_DATASET))
                .and_then(Value::as_str)
                .map(str::to_string),
            service_account: str_at(pod, "/spec/serviceAccountName")
                .unwrap_or_else(|| "default".into()),
        }
    }
}

/// NodeRestriction on create: a node creates only its own Node object (the authorizer let the
/// create through without a name, which is in the body), without the administrator's labels.
pub fn restrict_create(user: &UserInfo, kind: Kind, body: &Value) -> ApiResult<()> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let name = body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.is("", "nodes") && name != node {
        return Err(ApiError::forbidden(format!(
            "nodes {name:?} is forbidden: node {node:?} may not act for node {name:?}"
        )));
    }
    let labels = body.pointer("/metadata/labels").and_then(Value::as_object);
    if kind.is("", "nodes")
        && labels.is_some_and(|l| l.keys().any(|k| k.starts_with(RESTRICTED_LABEL_PREFIX)))
    {
        return Err(ApiError::forbidden(format!(
            "nodes {name:?} is forbidden: node {node:?} may not set labels under {RESTRICTED_LABEL_PREFIX}"
        )));
    }
    Ok(())
}

/// Labels with this prefix are the administrator's, for isolating workloads by node: no node
/// sets them on itself (Kubernetes' NodeRestriction).
pub const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

/// NodeRestriction on a node's update or patch of its own Node object (`new` makes the
/// written object from the stored one): its spec (taints, unschedulable) and its
/// `node-restriction.kubernetes.io/` labels are the administrator's.
/// NodeRestriction for deletes: a node deletes only pods bound to it, checked against the
/// store (the authorizer lets a node's delete of a pod it does not know through, so that the
/// delete of a pod already gone answers 404).
pub async fn restrict_delete(
    app: &crate::App,
    user: &UserInfo,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if !kind.is_pod() {
        return Ok(());
    }
    let key = crate::keys::object_key(&kind, ns, name);
    let Some(kv) = app.store.get(&key).await.map_err(ApiError::store)? else {
        return Ok(()); // the delete answers 404
    };
    let pod = crate::keys::decode(&app.transformer, &kv)?;
    let bound = pod
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str);
    if bound == Some(node) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "pods {name:?} is forbidden: node {node:?} may delete only pods bound to it"
    )))
}

pub async fn restrict_update(
    app: &crate::App,
    user: &UserInfo,
    kind: Kind,
    name: &str,
    new: impl FnOnce(&Value) -> Value,
) -> ApiResult<()> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if !kind.is("", "nodes") {
        return Ok(());
    }
    let key = crate::keys::object_key(&kind, None, name);
    let Some(kv) = app.store.get(&key).await.map_err(ApiError::store)? else {
        return Ok(()); // the write answers 404
    };
    let old = crate::keys::decode(&app.transformer, &kv)?;
    let new = new(&old);
    let spec = |v: &Value| -> kumo_api::node::NodeSpec {
        v.get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default()
    };
    let forbidden = |what: &str| {
        Err(ApiError::forbidden(format!(
            "nodes {name:?} is forbidden: node {node:?} may not change {what}"
        )))
    };
    if spec(&old) != spec(&new) {
        return forbidden("its spec (taints, unschedulable): they are the administrator's");
    }
    let restricted = |v: &Value| -> Vec<(String, Value)> {
        v.pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(RESTRICTED_LABEL_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    if restricted(&old) != restricted(&new) {
        return forbidden(&format!("labels under {RESTRICTED_LABEL_PREFIX}"));
    }
    Ok(())
}

/// A node refused a pod (get, update or patch of the pod or its status) that the authorizer's
/// graph does not show bound to it: its graph comes from a watch, which may lag the node's own
/// (a busy server publishes a binding to every watch before the bind handler tells the
/// authorizer). The pod is read from the store; when it is bound to this node the authorizer
/// learns it ([`crate::authz::Authorizer::pod_bound`]) and `true` says to ask again. A pod bound
/// elsewhere, or gone, teaches nothing: the refusal stands.
pub async fn learn_refused_pod(app: &crate::App, a: &Attributes) -> bool {
    let Some(node) = a.user.node_name() else {
        return false;
    };
    let pod_request = a.api_group.is_empty()
        && a.resource == "pods"
        && matches!(a.subresource.as_str(), "" | "status")
        && matches!(a.verb, "get" | "update" | "patch")
        && !a.name.is_empty()
        && !a.namespace.is_empty();
    let Some(kind) = Kind::lookup("", "v1", "pods").filter(|_| pod_request) else {
        return false;
    };
    let key = crate::keys::object_key(&kind, Some(&a.namespace), &a.name);
    let Ok(Some(kv)) = app.store.get(&key).await else {
        return false;
    };
    let Ok(pod) = crate::keys::decode(&app.transformer, &kv) else {
        return false;
    };
    if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
        return false;
    }
    app.authorizer.pod_bound(&key, &pod, kv.mod_revision);
    true
}

/// The Node authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeDecision {
    Allow,
    /// Refused, with why; RBAC may still allow it.
    Deny(String),
    /// Not a request the Node authorizer decides on.
    NoOpinion,
}

/// Decides a request of node `node` over the pods the server knows (those bound to `node`
/// suffice: the others are filtered out).
pub fn decide<'a>(
    node: &str,
    a: &Attributes,
    pods: impl Iterator<Item = &'a PodRefs> + Clone,
    task_exists: &dyn Fn(&str, &str) -> bool,
    pod_known: &dyn Fn(&str, &str) -> bool,
) -> NodeDecision {
    use NodeDecision::*;
    let mine = pods.filter(|p| p.node == node);
    let in_ns = mine.clone().filter(|p| p.namespace == a.namespace);
    let verb = a.verb;
    let read = matches!(verb, "get" | "list" | "watch");
    let unrelated = || {
        Deny(format!(
            "node {node:?} cannot {verb} {} {:?} in namespace {:?}: no relationship found between node {node:?} and this object",
            a.resource_path(),
            a.name,
            a.namespace
        ))
    };
    let own = |allow: bool| {
        if a.name == node || (a.name.is_empty() && verb == "create") {
            if allow {
                Allow
            } else {
                Deny(format!(
                    "node {node:?} may not {verb} {}",
                    a.resource_path()
                ))
            }
        } else if a.name.is_empty() {
            Deny(format!(
                "node {node:?} may not {verb} {}",
                a.resource_path()
            ))
        } else {
            Deny(format!("node {node:?} may not act for node {:?}", a.name))
        }
    };
    match (
        a.api_group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        // Any node may read Node objects; it writes only its own (the create handler checks
        // the created object's name).
        ("", "nodes", "") if read => Allow,
        ("", "nodes", "" | "status") => own(matches!(verb, "get" | "create" | "update" | "patch")),
        ("", "nodes", "servingcertificate" | "credential") => own(verb == "create"),
        ("", "nodes", _) => own(false),
        // Its agent watches the pods bound to it (by field selector; Kubernetes allows the
        // list and watch of every pod to nodes too).
        ("", "pods", "") if matches!(verb, "list" | "watch") => Allow,
        // Its pods: the agent reads them, writes their status and annotations (ports, GPUs),
        // and makes the final delete of a pod it stopped, as the kubelet does.
        ("", "pods", "" | "status")
            if matches!(verb, "get" | "update" | "patch")
                || (verb == "delete" && a.subresource.is_empty()) =>
        {
            if in_ns.clone().any(|p| p.name == a.name) {
                Allow
            } else if verb == "delete" && !pod_known(&a.namespace, &a.name) {
                // The final delete of a pod already gone (or not yet seen by the watch): the
                // handler answers 404, or refuses a pod bound elsewhere from the store itself
                // (`restrict_delete`).
                Allow
            } else {
                unrelated()
            }
        }
        ("", "pods", _) => unrelated(),
        ("", "events", "") if matches!(verb, "create" | "update" | "patch") => Allow,
        ("", "secrets", "") if verb == "get" => {
            if in_ns.clone().any(|p| p.secrets.contains(&a.name)) {
                Allow
            } else {
                unrelated()
            }
        }
        ("", "serviceaccounts", "token") if verb == "create" => {
            if in_ns.clone().any(|p| p.service_account == a.name) {
                Allow
            } else {
                unrelated()
            }
        }
        ("", "secrets" | "serviceaccounts", _) => unrelated(),
        // The MLTasks of its pods; and a task that is gone, so that its agent learns (404) to
        // remove the task's directories (which outlive its pods, for retries on the node).
        ("kumo.dev", "mltasks", "" | "output") if matches!(verb, "get" | "update") => {
            let related = in_ns
                .clone()
                .any(|p| p.mltask.as_deref() == Some(a.name.as_str()));
            let ok = match (verb, a.subresource.as_str()) {
                ("get", "") => related || !task_exists(&a.namespace, &a.name),
                ("get", _) | ("update", "output") => related,
                _ => false,
            };
            if ok {
                Allow
            } else {
                unrelated()
            }
        }
        ("kumo.dev", "datasets", "") if verb == "get" => {
            if mine
                .clone()
                .any(|p| p.dataset.as_deref() == Some(a.name.as_str()))
            {
                Allow
            } else {
                unrelated()
            }
        }
        // Blobs are addressed by their content's digest: a node that knows one (from a dataset
        // it may read) may fetch it, and uploads its replicas' outputs as blobs.
        ("kumo.dev", "blobs", "") if matches!(verb, "get" | "update") && !a.name.is_empty() => {
            Allow
        }
        _ => NoOpinion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> Vec<PodRefs> {
        let pod = |ns: &str, name: &str, node: &str, secret: &str, task: &str| {
            PodRefs::of(&json!({
                "metadata": {"namespace": ns, "name": name,
                    "annotations": {"kumo.dev/dataset": format!("ds-{name}")},
                    "ownerReferences": [{"apiVersion": "kumo.dev/v1", "kind": "MLTask", "name": task, "uid": "u"}]},
                "spec": {"nodeName": node, "imagePullSecrets": [{"name": secret}],
                    "containers": [{"name": "c", "image": "i",
                        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": format!("env-{secret}"), "key": "k"}}}]}],
                    "volumes": [{"name": "v", "secret": {"secretName": format!("vol-{secret}")}}]}
            }))
        };
        vec![
            pod("a", "p1", "n1", "pull1", "t1"),
            pod("a", "p2", "n2", "pull2", "t2"),
        ]
    }

    /// `verb resource[/sub] [ns/]name` by node n1, expected answer (`allow`, `none`, or the
    /// denial's text).
    fn check(verb: &'static str, group: &str, resource: &str, object: &str, expected: &str) {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let (ns, name) = object.split_once('/').unwrap_or(("", object));
        let a = Attributes {
            user: UserInfo::new("system:node:n1", &["system:nodes"]),
            verb,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        let pods = pods();
        let tasks = |ns: &str, name: &str| ns == "a" && (name == "t1" || name == "t2");
        let known = |ns: &str, name: &str| pods.iter().any(|p| p.namespace == ns && p.name == name);
        let got = match decide("n1", &a, pods.iter(), &tasks, &known) {
            NodeDecision::Allow => "allow".to_string(),
            NodeDecision::NoOpinion => "none".to_string(),
            NodeDecision::Deny(r) => r,
        };
        assert!(
            got.contains(expected),
            "{verb} {resource}/{sub} {object}: {got}"
        );
    }

    #[test]
    fn a_node_does_what_its_agent_needs_and_no_more() {
        check("get", "", "nodes", "n1", "allow");
        check("get", "", "nodes", "n2", "allow");
        check("create", "", "nodes", "", "allow");
        check("update", "", "nodes/status", "n1", "allow");
        check("patch", "", "nodes", "n1", "allow");
        check(
            "update",
            "",
            "nodes/status",
            "n2",
            "node \"n1\" may not act for node \"n2\"",
        );
        check(
            "delete",
            "",
            "nodes",
            "n1",
            "node \"n1\" may not delete nodes",
        );
        check("create", "", "nodes/credential", "n1", "allow");
        check(
            "create",
            "",
            "nodes/servingcertificate",
            "n2",
            "may not act for node \"n2\"",
        );
        check("watch", "", "pods", "", "allow");
        check("update", "", "pods/status", "a/p1", "allow");
        check("patch", "", "pods", "a/p1", "allow");
        check(
            "update",
            "",
            "pods/status",
            "a/p2",
            "no relationship found between node \"n1\" and this object",
        );
        check("update", "", "pods/status", "b/p1", "no relationship");
        check("delete", "", "pods", "a/p1", "allow");
        check("delete", "", "pods", "a/p2", "no relationship");
        // A pod no node is known to hold (already gone): through to the handler's 404, or to
        // restrict_delete's check against the store.
        check("delete", "", "pods", "a/gone", "allow");
        check("get", "", "pods", "a/gone", "no relationship");
        check("create", "", "pods/exec", "a/p1", "no relationship");
        check("create", "", "events", "a/", "allow");
        check("get", "", "secrets", "a/pull1", "allow");
        check("get", "", "secrets", "a/env-pull1", "allow");
        check("get", "", "secrets", "a/vol-pull1", "allow");
        check("get", "", "secrets", "a/pull2", "no relationship");
        check("list", "", "secrets", "a/", "no relationship");
        check("create", "", "serviceaccounts/token", "a/default", "allow");
        check(
            "create",
            "",
            "serviceaccounts/token",
            "b/default",
            "no relationship",
        );
        check("get", "kumo.dev", "mltasks", "a/t1", "allow");
        check("update", "kumo.dev", "mltasks/output", "a/t1", "allow");
        check("update", "kumo.dev", "mltasks", "a/t1", "no relationship");
        check("get", "kumo.dev", "mltasks", "a/t2", "no relationship");
        check("get", "kumo.dev", "mltasks", "a/gone", "allow");
        check(
            "get",
            "kumo.dev",
            "mltasks/output",
            "a/gone",
            "no relationship",
        );
        check("get", "kumo.dev", "datasets", "ds-p1", "allow");
        check("get", "kumo.dev", "datasets", "ds-p2", "no relationship");
        check("get", "kumo.dev", "blobs", "sha256:ab", "allow");
        check("get", "kumo.dev", "apps", "a/web", "none");
    }
}
