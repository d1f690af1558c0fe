//! The `Resource` trait every kind implements, and the kind registry the apiserver and CLI share.

use crate::meta::ObjectMeta;
use crate::validation::{
    check_name, decode, is_label_value, is_qualified_name, Errors, FieldError,
};
use crate::{
    App, Event, Lease, MLTask, Namespace, Node, Pod, Queue, Release, Secret, ServiceAccount, Token,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// A kind of object served by the API.
pub trait Resource: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// API group, empty for the core group (`v1`).
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    const PLURAL: &'static str;
    const NAMESPACED: bool;

    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// Semantic checks beyond the shape of the object; the default accepts everything.
    fn validate(&self, _errors: &mut Errors) {}

    /// `v1` or `group/version`.
    fn api_version() -> String {
        api_version(Self::GROUP, Self::VERSION)
    }

    /// Sets `apiVersion` and `kind` to this kind's.
    fn set_type_meta(&mut self);

    /// The URL path of a collection: all namespaces when `ns` is `None` for namespaced kinds.
    fn collection_path(ns: Option<&str>) -> String {
        collection_path(
            Self::GROUP,
            Self::VERSION,
            Self::PLURAL,
            if Self::NAMESPACED { ns } else { None },
        )
    }

    /// The URL path of one object.
    fn object_path(ns: Option<&str>, name: &str) -> String {
        format!(
            "{}/{}",
            Self::collection_path(Some(ns.unwrap_or(crate::DEFAULT_NAMESPACE))),
            name
        )
    }
}

/// `v1` for the core group, else `group/version`.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The URL path of a collection of a kind.
pub fn collection_path(group: &str, version: &str, plural: &str, ns: Option<&str>) -> String {
    let root = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    match ns {
        Some(ns) => format!("{root}/namespaces/{ns}/{plural}"),
        None => format!("{root}/{plural}"),
    }
}

macro_rules! resource {
    ($ty:ty, $group:expr, $version:expr, $kind:expr, $plural:expr, $namespaced:expr, $validate:expr) => {
        impl Resource for $ty {
            const GROUP: &'static str = $group;
            const VERSION: &'static str = $version;
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            const NAMESPACED: bool = $namespaced;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn validate(&self, errors: &mut Errors) {
                let f: fn(&Self, &mut Errors) = $validate;
                f(self, errors)
            }
            fn set_type_meta(&mut self) {
                self.api_version = Self::api_version();
                self.kind = Self::KIND.to_string();
            }
        }
    };
}

resource!(Pod, "", "v1", "Pod", "pods", true, |p, e| {
    crate::pod::validate_pod_spec(&p.spec, e)
});
resource!(Node, "", "v1", "Node", "nodes", false, |n, e| {
    crate::node::validate_node_spec(&n.spec, e)
});
resource!(
    Namespace,
    "",
    "v1",
    "Namespace",
    "namespaces",
    false,
    |n, e| crate::pod_security::validate_namespace_labels(&n.metadata.labels, e)
);
resource!(
    MLTask,
    "kumo.dev",
    "v1",
    "MLTask",
    "mltasks",
    true,
    |t, e| crate::mltask::validate_mltask_spec(&t.spec, e)
);
resource!(Queue, "kumo.dev", "v1", "Queue", "queues", false, |q, e| {
    crate::mltask::validate_queue_spec(&q.spec, e)
});
resource!(Secret, "", "v1", "Secret", "secrets", true, |s, e| {
    crate::secret::validate_secret(s, e)
});
resource!(
    ServiceAccount,
    "",
    "v1",
    "ServiceAccount",
    "serviceaccounts",
    true,
    |_, _| {}
);
resource!(Event, "", "v1", "Event", "events", true, |ev, e| {
    if ev.involved_object.name.is_empty() {
        e.add("involvedObject.name", "Required value");
    }
    if ev.reason.is_empty() {
        e.add("reason", "Required value");
    }
});

resource!(
    Lease,
    crate::lease::GROUP,
    "v1",
    "Lease",
    "leases",
    true,
    crate::lease::validate_lease
);

resource!(App, "kumo.dev", "v1", "App", "apps", true, |a, e| {
    crate::app::validate_app_spec(&a.metadata.name, &a.spec, e)
});
resource!(
    Release,
    "kumo.dev",
    "v1",
    "Release",
    "releases",
    true,
    |r, e| { crate::app::validate_release(r, e) }
);
resource!(
    Token,
    "auth.kumo.dev",
    "v1",
    "Token",
    "tokens",
    false,
    |t, e| crate::token::validate_token(t, e)
);

resource!(
    crate::rbac::Role,
    "rbac.authorization.k8s.io",
    "v1",
    "Role",
    "roles",
    true,
    crate::rbac::validate_role
);
resource!(
    crate::rbac::ClusterRole,
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRole",
    "clusterroles",
    false,
    crate::rbac::validate_cluster_role
);
resource!(
    crate::rbac::RoleBinding,
    "rbac.authorization.k8s.io",
    "v1",
    "RoleBinding",
    "rolebindings",
    true,
    crate::rbac::validate_role_binding
);
resource!(
    crate::rbac::ClusterRoleBinding,
    "rbac.authorization.k8s.io",
    "v1",
    "ClusterRoleBinding",
    "clusterrolebindings",
    false,
    crate::rbac::validate_cluster_role_binding
);

/// What the apiserver and CLI know about a kind without knowing its Rust type.
pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub has_status: bool,
    /// Names must be DNS labels (else DNS subdomains).
    pub label_names: bool,
    /// Decodes, defaults and validates an object, returning its normalized JSON.
    pub admit: fn(serde_json::Value) -> Result<serde_json::Value, Vec<FieldError>>,
    /// Checks an update against the stored object (immutable fields).
    pub validate_update: fn(&serde_json::Value, &serde_json::Value) -> Vec<FieldError>,
}

impl KindInfo {
    pub fn api_version(&self) -> String {
        api_version(self.group, self.version)
    }

    /// Whether `name` (as typed on a command line) names this kind.
    pub fn matches_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        name == self.plural || name == self.singular || self.short_names.contains(&name.as_str())
    }
}

impl Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KindInfo({})", self.kind)
    }
}

/// Decodes, defaults and validates a typed object, returning its normalized JSON.
pub fn admit<K: Resource>(
    value: serde_json::Value,
    label_names: bool,
) -> Result<serde_json::Value, Vec<FieldError>> {
    let mut obj: K = decode(value).map_err(|e| vec![e])?;
    obj.set_type_meta();
    let mut errors = Errors::default();
    validate_meta(obj.meta(), K::NAMESPACED, label_names, &mut errors);
    obj.validate(&mut errors);
    errors.into_result()?;
    serde_json::to_value(&obj).map_err(|e| vec![FieldError::new("", e.to_string())])
}

/// Checks the metadata rules shared by every kind.
pub fn validate_meta(meta: &ObjectMeta, namespaced: bool, label_names: bool, errors: &mut Errors) {
    if meta.name.is_empty() && meta.generate_name.is_none() {
        errors.add(
            "metadata.name",
            "Required value: name or generateName is required",
        );
    } else if !meta.name.is_empty() {
        check_name(errors, "metadata.name", &meta.name, label_names);
    }
    validate_meta_fields(meta, namespaced, errors);
}

/// Checks the metadata rules shared by every kind but the name's: namespace, labels, annotations.
pub fn validate_meta_fields(meta: &ObjectMeta, namespaced: bool, errors: &mut Errors) {
    if let Some(ns) = &meta.namespace {
        if !namespaced {
            errors.add("metadata.namespace", "Forbidden: not allowed on this type");
        } else {
            check_name(errors, "metadata.namespace", ns, true);
        }
    }
    for (k, v) in &meta.labels {
        if !is_qualified_name(k) {
            errors.add(
                format!("metadata.labels.{k}"),
                format!("Invalid value: {k:?}: not a valid label key"),
            );
        } else if !is_label_value(v) {
            errors.add(
                format!("metadata.labels.{k}"),
                format!("Invalid value: {v:?}: not a valid label value"),
            );
        }
    }
    for k in meta.annotations.keys() {
        if !is_qualified_name(k) {
            errors.add(
                format!("metadata.annotations.{k}"),
                format!("Invalid value: {k:?}: not a valid annotation key"),
            );
        }
    }
}

fn pod_update(old: &serde_json::Value, new: &serde_json::Value) -> Vec<FieldError> {
    // Only the scheduler's binding may set spec.nodeName, and nothing else in a pod spec changes.
    if old.get("spec") != new.get("spec") {
        vec![FieldError::new("spec", "Forbidden: pod updates may not change fields other than metadata (labels, annotations, finalizers) and status")]
    } else {
        Vec::new()
    }
}

/// Secrets are stored with `stringData` folded into `data`.
fn admit_secret(value: serde_json::Value) -> Result<serde_json::Value, Vec<FieldError>> {
    let mut s: Secret = decode(value).map_err(|e| vec![e])?;
    s.normalize();
    let value = serde_json::to_value(&s).map_err(|e| vec![FieldError::new("", e.to_string())])?;
    admit::<Secret>(value, false)
}

/// Tokens are stored without their secret, whatever a client sends.
fn admit_token(value: serde_json::Value) -> Result<serde_json::Value, Vec<FieldError>> {
    let mut t: Token = decode(value).map_err(|e| vec![e])?;
    if let Some(status) = &mut t.status {
        status.token = None;
    }
    let value = serde_json::to_value(&t).map_err(|e| vec![FieldError::new("", e.to_string())])?;
    admit::<Token>(value, false)
}

/// A token's type and secret hash never change; `ttlSeconds` is read on create only.
fn token_update(old: &serde_json::Value, new: &serde_json::Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old.pointer("/spec/type") != new.pointer("/spec/type") {
        errors.push(FieldError::new(
            "spec.type",
            "Invalid value: field is immutable",
        ));
    }
    let hash = |v: &serde_json::Value| v.pointer("/status/tokenHash").cloned();
    if hash(old) != hash(new) {
        errors.push(FieldError::new(
            "status.tokenHash",
            "Invalid value: field is immutable",
        ));
    }
    if new
        .pointer("/spec/ttlSeconds")
        .is_some_and(|v| !v.is_null())
    {
        errors.push(FieldError::new(
            "spec.ttlSeconds",
            "Forbidden: read on create only; change spec.expirationTimestamp",
        ));
    }
    errors
}

fn no_update_rules(_: &serde_json::Value, _: &serde_json::Value) -> Vec<FieldError> {
    Vec::new()
}

fn mltask_update(old: &serde_json::Value, new: &serde_json::Value) -> Vec<FieldError> {
    let spec = |v: &serde_json::Value| {
        serde_json::from_value::<crate::mltask::MLTaskSpec>(v.get("spec").cloned()?).ok()
    };
    let (Some(old), Some(new)) = (spec(old), spec(new)) else {
        return Vec::new();
    };
    let mut errors = Errors::default();
    crate::mltask::validate_mltask_update(&old, &new, &mut errors);
    errors.into_result().err().unwrap_or_default()
}

static KINDS: [KindInfo; 16] = [
    KindInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        has_status: true,
        label_names: true,
        admit: |v| admit::<Namespace>(v, true),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        has_status: true,
        label_names: false,
        admit: |v| admit::<Node>(v, false),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        has_status: true,
        label_names: true,
        admit: |v| admit::<Pod>(v, true),
        validate_update: pod_update,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        has_status: false,
        label_names: false,
        admit: |v| admit::<Event>(v, false),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: crate::lease::GROUP,
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        has_status: false,
        label_names: false,
        admit: |v| admit::<Lease>(v, false),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        has_status: false,
        label_names: false,
        admit: admit_secret,
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        has_status: false,
        label_names: false,
        admit: |v| admit::<ServiceAccount>(v, false),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "kumo.dev",
        version: "v1",
        kind: "App",
        plural: "apps",
        singular: "app",
        short_names: &[],
        namespaced: true,
        has_status: true,
        label_names: true,
        admit: |v| admit::<App>(v, true),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "kumo.dev",
        version: "v1",
        kind: "Release",
        plural: "releases",
        singular: "release",
        short_names: &["rel"],
        namespaced: true,
        has_status: true,
        label_names: true,
        admit: |v| admit::<Release>(v, true),
        validate_update: crate::app::release_update,
    },
    KindInfo {
        group: "kumo.dev",
        version: "v1",
        kind: "MLTask",
        plural: "mltasks",
        singular: "mltask",
        short_names: &["mlt"],
        namespaced: true,
        has_status: true,
        label_names: true,
        admit: |v| admit::<MLTask>(v, true),
        validate_update: mltask_update,
    },
    KindInfo {
        group: "kumo.dev",
        version: "v1",
        kind: "Queue",
        plural: "queues",
        singular: "queue",
        short_names: &["q"],
        namespaced: false,
        has_status: true,
        label_names: true,
        admit: |v| admit::<Queue>(v, true),
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "auth.kumo.dev",
        version: "v1",
        kind: "Token",
        plural: "tokens",
        singular: "token",
        short_names: &[],
        namespaced: false,
        has_status: true,
        label_names: false,
        admit: admit_token,
        validate_update: token_update,
    },
    KindInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        short_names: &[],
        namespaced: true,
        has_status: false,
        label_names: false,
        admit: crate::rbac::admit::<crate::rbac::Role>,
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        namespaced: false,
        has_status: false,
        label_names: false,
        admit: crate::rbac::admit::<crate::rbac::ClusterRole>,
        validate_update: no_update_rules,
    },
    KindInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        namespaced: true,
        has_status: false,
        label_names: false,
        admit: crate::rbac::admit::<crate::rbac::RoleBinding>,
        validate_update: crate::rbac::binding_update,
    },
    KindInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        namespaced: false,
        has_status: false,
        label_names: false,
        admit: crate::rbac::admit::<crate::rbac::ClusterRoleBinding>,
        validate_update: crate::rbac::binding_update,
    },
];

/// Every kind the API serves.
pub fn kinds() -> &'static [KindInfo] {
    &KINDS
}

/// The kind served at `group/version/plural`.
pub fn kind_by_plural(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind named by an object's `apiVersion` and `kind`.
pub fn kind_by_type(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// The kind a user typed (`pods`, `pod`, `po`, `Pod`).
pub fn kind_by_name(name: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.matches_name(name) || k.kind.eq_ignore_ascii_case(name))
}
