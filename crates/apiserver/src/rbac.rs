//! The server's authorizer: `system:masters` always, then the Node authorizer for node
//! credentials, then RBAC. It answers from memory: a snapshot of the RBAC objects and of what
//! each pod ties to its node, kept by a list+watch of the store (relisting when its revision is
//! compacted), so a new binding takes effect as soon as the watch brings it (milliseconds).
//! [`ensure_defaults`] writes the built-in policy at every start.

use crate::authz::{Attributes, Authorizer, Decision};
use crate::error::{ApiError, ApiResult};
use crate::keys::{decode, object_key};
use crate::node_authz::{self, NodeDecision, PodRefs};
use crate::request::Kind;
use crate::transformer::Transformer;
use crate::App;
use kumo_api::rbac::{self, Policy};
use kumo_api::user::GROUP_MASTERS;
use kumo_store::{EventKind, Store};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";
const PODS_PREFIX: &str = "/registry/core/pods/";
const TASKS_PREFIX: &str = "/registry/kumo.dev/mltasks/";

#[derive(Default)]
struct Snapshot {
    /// RBAC objects by store key.
    rbac: BTreeMap<String, Value>,
    /// The policy built from `rbac`, rebuilt on every change of it.
    policy: Policy,
    /// What each pod ties to its node, by node (`""` for unbound pods), then by store key.
    pods: HashMap<String, BTreeMap<String, PodRefs>>,
    /// The node each pod's entry is filed under, by store key.
    node_of: HashMap<String, String>,
    /// The revision each pod's entry was written at, by store key: a binding learned from the
    /// bind handler ([`Authorizer::pod_bound`]) is newer than the watch's events before it,
    /// which must not undo it.
    pod_rev: HashMap<String, u64>,
    /// The revision up to which the pods watch (or list) has been applied.
    pods_seen: u64,
    /// The store keys of the MLTasks there are: a node may learn that a task of its past
    /// pods is gone (a 404), so that it removes the task's directories.
    tasks: HashSet<String>,
}

impl Snapshot {
    fn remove_pod(&mut self, key: &str) {
        if let Some(node) = self.node_of.remove(key) {
            if let Some(pods) = self.pods.get_mut(&node) {
                pods.remove(key);
                if pods.is_empty() {
                    self.pods.remove(&node);
                }
            }
        }
    }

    fn put_pod(&mut self, key: String, refs: PodRefs) {
        self.remove_pod(&key);
        self.node_of.insert(key.clone(), refs.node.clone());
        self.pods
            .entry(refs.node.clone())
            .or_default()
            .insert(key, refs);
    }

    fn rebuild_policy(&mut self) {
        let mut p = Policy::default();
        for (key, v) in &self.rbac {
            let rest = &key[RBAC_PREFIX.len()..];
            let plural = rest.split('/').next().unwrap_or("");
            let v = v.clone();
            // Objects were validated when written; one that no longer decodes grants nothing.
            let _ = match plural {
                "roles" => serde_json::from_value(v).map(|r| p.roles.push(r)),
                "clusterroles" => serde_json::from_value(v).map(|r| p.cluster_roles.push(r)),
                "rolebindings" => serde_json::from_value(v).map(|r| p.role_bindings.push(r)),
                "clusterrolebindings" => {
                    serde_json::from_value(v).map(|r| p.cluster_role_bindings.push(r))
                }
                _ => Ok(()),
            };
        }
        self.policy = p;
    }
}

/// RBAC with the Node authorizer in front, over a watched snapshot.
pub struct RbacAuthorizer {
    snapshot: RwLock<Snapshot>,
}

/// Which part of the snapshot a watch keeps.
#[derive(Clone, Copy)]
enum Part {
    Rbac,
    Pods,
    Tasks,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Rbac => RBAC_PREFIX,
            Part::Pods => PODS_PREFIX,
            Part::Tasks => TASKS_PREFIX,
        }
    }
}

impl RbacAuthorizer {
    /// Lists the RBAC objects, pods and MLTasks, then keeps them current from a watch in the
    /// background (for as long as the runtime runs). Returns once the first list is in.
    pub async fn start(
        store: Arc<dyn Store>,
        transformer: Arc<Transformer>,
    ) -> Result<Arc<RbacAuthorizer>, kumo_store::StoreError> {
        let authorizer = Arc::new(RbacAuthorizer {
            snapshot: RwLock::new(Snapshot::default()),
        });
        for part in [Part::Rbac, Part::Pods, Part::Tasks] {
            let rev = authorizer.relist(&store, &transformer, part).await?;
            let (a, s, t) = (
                Arc::clone(&authorizer),
                Arc::clone(&store),
                Arc::clone(&transformer),
            );
            tokio::spawn(async move { a.keep(s, t, part, rev).await });
        }
        Ok(authorizer)
    }

    async fn relist(
        &self,
        store: &Arc<dyn Store>,
        t: &Transformer,
        part: Part,
    ) -> Result<kumo_store::Revision, kumo_store::StoreError> {
        let (kvs, rev) = store.list(part.prefix()).await?;
        if let Part::Tasks = part {
            let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            s.tasks = kvs.into_iter().map(|kv| kv.key).collect();
            return Ok(rev);
        }
        let decoded: Vec<(String, Value)> = kvs
            .iter()
            .filter_map(|kv| decode(t, kv).ok().map(|v| (kv.key.clone(), v)))
            .collect();
        let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        match part {
            Part::Rbac => {
                s.rbac = decoded.into_iter().collect();
                s.rebuild_policy();
            }
            Part::Pods => {
                s.pods.clear();
                s.node_of.clear();
                s.pod_rev = kvs
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.mod_revision))
                    .collect();
                s.pods_seen = rev;
                for (k, v) in decoded {
                    s.put_pod(k, PodRefs::of(&v));
                }
            }
            Part::Tasks => {}
        }
        Ok(rev)
    }

    /// Applies the watch's events; relists when the watch ends or falls behind.
    async fn keep(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        t: Arc<Transformer>,
        part: Part,
        mut rev: u64,
    ) {
        loop {
            let mut applied = 0usize;
            match store.watch(part.prefix(), rev).await {
                Ok(mut stream) => {
                    while let Some(event) = stream.next().await {
                        // A watch that fell behind the kept history ends with an error: relist.
                        let Ok(event) = event else { break };
                        self.apply(&t, part, &event);
                        applied += 1;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "rbac watch refused; relisting"),
            }
            if applied == 0 {
                // A watch that ends at once again and again (a store shutting down) is not
                // retried in a tight loop.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            loop {
                match self.relist(&store, &t, part).await {
                    Ok(r) => {
                        rev = r;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rbac relist failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }

    fn apply(&self, t: &Transformer, part: Part, event: &kumo_store::Event) {
        let key = event.kv.key.clone();
        if let Part::Tasks = part {
            let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            match event.kind {
                EventKind::Put => s.tasks.insert(key),
                EventKind::Delete => s.tasks.remove(&key),
            };
            return;
        }
        let value = match event.kind {
            EventKind::Put => decode(t, &event.kv).ok(),
            EventKind::Delete => None,
        };
        let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        match (part, value) {
            (Part::Rbac, Some(v)) => {
                s.rbac.insert(key, v);
                s.rebuild_policy();
            }
            (Part::Rbac, None) => {
                s.rbac.remove(&key);
                s.rebuild_policy();
            }
            (Part::Pods, value) => {
                let rev = event.revision();
                s.pods_seen = s.pods_seen.max(rev);
                // Older than what the bind handler told: that binding stays.
                if s.pod_rev.get(&key).is_some_and(|&known| known > rev) {
                    return;
                }
                match value {
                    Some(v) => {
                        s.pod_rev.insert(key.clone(), rev);
                        s.put_pod(key, PodRefs::of(&v));
                    }
                    None => {
                        s.pod_rev.remove(&key);
                        s.remove_pod(&key);
                    }
                }
            }
            (Part::Tasks, _) => {}
        }
    }
}

impl Authorizer for RbacAuthorizer {
    fn pod_bound(&self, key: &str, pod: &Value, revision: u64) {
        let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        // The watch has applied this write, or a later one (a delete): nothing to learn.
        if revision <= s.pods_seen || s.pod_rev.get(key).is_some_and(|&r| r >= revision) {
            return;
        }
        s.pod_rev.insert(key.to_string(), revision);
        s.put_pod(key.to_string(), PodRefs::of(pod));
    }

    fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.in_group(GROUP_MASTERS) {
            return Decision::Allow;
        }
        let s = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let mut node_refusal = None;
        if let Some(node) = a.user.node_name() {
            let mine = s.pods.get(node).into_iter().flat_map(|p| p.values());
            let task_exists =
                |ns: &str, name: &str| s.tasks.contains(&format!("{TASKS_PREFIX}{ns}/{name}"));
            let pod_known =
                |ns: &str, name: &str| s.node_of.contains_key(&format!("{PODS_PREFIX}{ns}/{name}"));
            match node_authz::decide(node, a, mine, &task_exists, &pod_known) {
                NodeDecision::Allow => return Decision::Allow,
                NodeDecision::Deny(reason) => node_refusal = Some(reason),
                NodeDecision::NoOpinion => {}
            }
        }
        let request = rbac::Request {
            verb: a.verb,
            api_group: &a.api_group,
            resource: &a.resource,
            subresource: &a.subresource,
            namespace: &a.namespace,
            name: &a.name,
        };
        if s.policy.allows(&a.user, &request).is_some() {
            return Decision::Allow;
        }
        Decision::Deny(node_refusal.unwrap_or_else(|| {
            let scope = if a.namespace.is_empty() {
                "a ClusterRoleBinding".to_string()
            } else {
                format!(
                    "a RoleBinding in namespace {:?} or a ClusterRoleBinding",
                    a.namespace
                )
            };
            format!(
                "no RBAC policy matched; {scope} of a role with verb {:?} on resource {:?} in API group {:?} to this user or one of its groups would allow it",
                a.verb,
                a.resource_path(),
                a.api_group
            )
        }))
    }
}

/// Creates the built-in cluster roles and bindings, and puts back the rules, subjects and
/// labels of those that changed (unless annotated `autoupdate: "false"`), as kube-apiserver
/// does at every start.
pub(crate) async fn ensure_defaults(app: &App) -> ApiResult<()> {
    let roles = kumo_api::rbac_defaults::cluster_roles()
        .into_iter()
        .map(|r| serde_json::to_value(r).map(|v| ("clusterroles", v)));
    let bindings = kumo_api::rbac_defaults::cluster_role_bindings()
        .into_iter()
        .map(|b| serde_json::to_value(b).map(|v| ("clusterrolebindings", v)));
    for item in roles.chain(bindings) {
        let (plural, want) = item.map_err(|e| ApiError::internal(e.to_string()))?;
        let kind = Kind::lookup(rbac::GROUP, "v1", plural)
            .ok_or_else(|| ApiError::internal("the rbac kinds are not registered"))?;
        reconcile(app, kind, want).await?;
    }
    Ok(())
}

async fn reconcile(app: &App, kind: Kind, want: Value) -> ApiResult<()> {
    let name = want["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = object_key(&kind, None, &name);
    let Some(kv) = app.store.get(&key).await.map_err(ApiError::store)? else {
        return match crate::create::create(app, kind, None, want).await {
            Ok(_) => Ok(()),
            Err(e) if e.0.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        };
    };
    let have = decode(&app.transformer, &kv)?;
    let autoupdate = have
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(rbac::ANNOTATION_AUTOUPDATE))
        .and_then(Value::as_str);
    if autoupdate == Some("false") {
        return Ok(());
    }
    let mut new = have.clone();
    for field in ["rules", "subjects", "roleRef"] {
        if let Some(v) = want.get(field) {
            new[field] = v.clone();
        }
    }
    for part in ["labels", "annotations"] {
        if let Some(Value::Object(want)) = want["metadata"].get(part) {
            let map = new["metadata"].as_object_mut().map(|m| {
                m.entry(part)
                    .or_insert_with(|| Value::Object(Default::default()))
            });
            if let Some(Value::Object(map)) = map {
                map.extend(want.clone());
            }
        }
    }
    if new == have {
        return Ok(());
    }
    tracing::info!(kind = kind.kind, %name, "reconciling a built-in rbac object");
    match crate::update::update(app, kind, None, &name, None, new).await {
        Ok(_) => Ok(()),
        // Another server reconciled it first; the next start looks again.
        Err(e) if e.code() == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::UserInfo;
    use kumo_store::{KeyValue, MemStore, Revision, StoreError, WatchStream};
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// Node n1's `update pods/status` of pod a/p after each step, the steps being the pods
    /// watch's events and the bind handler's `pod_bound` in the order they reach the
    /// authorizer. A step is `watch REV NODE` (a put; NODE `-` for unbound), `watch REV delete`,
    /// or `bound REV NODE`.
    fn check_learning(steps: &[&str], expected: &[bool]) {
        let authorizer = RbacAuthorizer {
            snapshot: RwLock::new(Snapshot::default()),
        };
        let t = Transformer::identity();
        let key = format!("{PODS_PREFIX}a/p");
        let pod = |node: &str| {
            let node = (node != "-").then_some(node);
            json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"nodeName": node}})
        };
        let mut got = Vec::new();
        for step in steps {
            let words: Vec<&str> = step.split(' ').collect();
            let rev: u64 = words[1].parse().unwrap();
            match (words[0], words[2]) {
                ("bound", node) => authorizer.pod_bound(&key, &pod(node), rev),
                ("watch", what) => {
                    let kind = if what == "delete" {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    };
                    let value =
                        serde_json::to_vec(&pod(if what == "delete" { "n1" } else { what }));
                    let event = kumo_store::Event {
                        kind,
                        kv: KeyValue {
                            key: key.clone(),
                            value: value.unwrap(),
                            create_revision: 1,
                            mod_revision: rev,
                        },
                        created: false,
                    };
                    authorizer.apply(&t, Part::Pods, &event);
                }
                _ => panic!("bad step {step}"),
            }
            let a = Attributes {
                user: UserInfo::new("system:node:n1", &["system:nodes"]),
                verb: "update",
                api_group: String::new(),
                resource: "pods".into(),
                subresource: "status".into(),
                namespace: "a".into(),
                name: "p".into(),
            };
            got.push(authorizer.authorize(&a) == Decision::Allow);
        }
        assert_eq!(got, expected, "{steps:?}");
    }

    #[test]
    fn a_binding_is_learned_from_the_bind_handler_before_the_watch_brings_it() {
        // The watch lags: the binding (rev 6) is known at once; the watch's older event for
        // the pod (its creation, unbound) does not undo it; the delete does.
        check_learning(
            &[
                "watch 5 -",
                "bound 6 n1",
                "watch 5 -",
                "watch 6 n1",
                "watch 7 delete",
            ],
            &[false, true, true, true, false],
        );
        // The watch was first: the late word of the bind handler brings back no deleted pod.
        check_learning(
            &["watch 5 -", "watch 6 n1", "watch 7 delete", "bound 6 n1"],
            &[false, true, false, false],
        );
        // A binding to another node gives n1 nothing.
        check_learning(&["watch 5 -", "bound 6 n2"], &[false, false]);
    }

    /// A store whose first watch answers that its revision is compacted.
    struct CompactedOnce {
        inner: MemStore,
        failed: AtomicBool,
    }

    #[async_trait::async_trait]
    impl Store for CompactedOnce {
        async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
            self.inner.list(prefix).await
        }
        async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
            self.inner.create(key, value).await
        }
        async fn update(
            &self,
            key: &str,
            value: Vec<u8>,
            expected: Option<Revision>,
        ) -> Result<KeyValue, StoreError> {
            self.inner.update(key, value, expected).await
        }
        async fn delete(
            &self,
            key: &str,
            expected: Option<Revision>,
        ) -> Result<KeyValue, StoreError> {
            self.inner.delete(key, expected).await
        }
        async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
            if prefix == RBAC_PREFIX && !self.failed.swap(true, Ordering::SeqCst) {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: after + 1,
                });
            }
            self.inner.watch(prefix, after).await
        }
        async fn current_revision(&self) -> Result<Revision, StoreError> {
            self.inner.current_revision().await
        }
    }

    fn get_pods(user: &UserInfo) -> Attributes {
        Attributes {
            user: user.clone(),
            verb: "get",
            api_group: String::new(),
            resource: "pods".into(),
            subresource: String::new(),
            namespace: "team-a".into(),
            name: "p".into(),
        }
    }

    #[tokio::test]
    async fn a_compacted_watch_relists_and_later_bindings_still_arrive() {
        let store = Arc::new(CompactedOnce {
            inner: MemStore::new(),
            failed: AtomicBool::new(false),
        });
        let identity = Arc::new(Transformer::identity());
        let authorizer = RbacAuthorizer::start(store.clone(), identity)
            .await
            .unwrap();
        let alice = UserInfo::new("alice", &[]);
        assert!(
            matches!(authorizer.authorize(&get_pods(&alice)), Decision::Deny(r) if r.starts_with("no RBAC policy matched"))
        );
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "alice"}, "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"}});
        for (key, v) in [
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/reader",
                role,
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/alice",
                binding,
            ),
        ] {
            store
                .create(key, serde_json::to_vec(&v).unwrap())
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while authorizer.authorize(&get_pods(&alice)) != Decision::Allow {
            assert!(
                Instant::now() < deadline,
                "the binding never reached the authorizer"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            store.failed.load(Ordering::SeqCst),
            "the first watch was refused"
        );
        // Removing the binding removes the grant.
        store
            .delete(
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/alice",
                None,
            )
            .await
            .unwrap();
        while authorizer.authorize(&get_pods(&alice)) == Decision::Allow {
            assert!(
                Instant::now() < deadline,
                "the deleted binding still grants"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
