//! The built-in RBAC policy the API server creates at start and reconciles on every start:
//! Kubernetes' `cluster-admin`, `admin`, `edit`, `view`, `system:basic-user` and
//! `system:node-bootstrapper`, and kumo's `ml-engineer` (+ `ml-engineer-datasets`) and
//! `app-developer`, with the bindings Kubernetes makes (`system:masters`,
//! `system:authenticated`, `system:bootstrappers`).

use crate::meta::ObjectMeta;
use crate::rbac::{
    rule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject, ALL,
    BOOTSTRAPPING_DEFAULTS, GROUP, LABEL_BOOTSTRAPPING,
};
use crate::Resource;

/// The group of join tokens' users (`system:bootstrap:NAME`).
pub const GROUP_BOOTSTRAPPERS: &str = "system:bootstrappers";

const KUMO: &str = "kumo.dev";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const ALL_VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn meta(name: &str) -> ObjectMeta {
    let mut m = ObjectMeta::named(None, name);
    m.labels.insert(
        LABEL_BOOTSTRAPPING.to_string(),
        BOOTSTRAPPING_DEFAULTS.to_string(),
    );
    m.annotations
        .insert(crate::rbac::ANNOTATION_AUTOUPDATE.into(), "true".into());
    m
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    let mut r = ClusterRole {
        metadata: meta(name),
        rules,
        ..Default::default()
    };
    r.set_type_meta();
    r
}

/// What `view` may read in a namespace: everything but Secrets (and tokens).
fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "",
            &[
                "pods",
                "pods/log",
                "pods/status",
                "events",
                "serviceaccounts",
            ],
            READ,
        ),
        rule(
            KUMO,
            &[
                "apps",
                "apps/status",
                "releases",
                "releases/status",
                "mltasks",
                "mltasks/status",
                "mltasks/output",
                "queues",
            ],
            READ,
        ),
        // Cluster-scoped: these reach only through a ClusterRoleBinding to `view`.
        rule("", &["namespaces"], READ),
        rule(KUMO, &["datasets", "blobs"], &["get", "list"]),
    ]
}

/// `edit`: `view`, plus writing the namespace's objects, Secrets, and exec into pods.
fn edit_rules() -> Vec<PolicyRule> {
    let mut rules = view_rules();
    rules.extend([
        rule("", &["secrets"], READ),
        rule("", &["pods", "secrets", "serviceaccounts"], WRITE),
        rule("", &["pods/exec"], &["create", "get"]),
        rule("", &["pods/eviction"], &["create"]),
        rule("", &["serviceaccounts/token"], &["create"]),
        rule(KUMO, &["apps", "releases", "mltasks"], WRITE),
        rule(KUMO, &["datasets", "blobs"], &["update", "delete"]),
    ]);
    rules
}

/// `admin`: `edit`, plus the namespace's Roles and RoleBindings.
fn admin_rules() -> Vec<PolicyRule> {
    let mut rules = edit_rules();
    rules.push(rule(GROUP, &["roles", "rolebindings"], ALL_VERBS));
    rules
}

fn ml_engineer_rules() -> Vec<PolicyRule> {
    vec![
        rule(KUMO, &["mltasks"], ALL_VERBS),
        rule(KUMO, &["mltasks/status", "mltasks/output"], READ),
        rule(KUMO, &["queues"], READ),
        rule("", &["pods", "pods/log", "events"], READ),
    ]
}

/// Datasets, blobs and queues are cluster-scoped: a RoleBinding cannot grant them, so an ML
/// engineer gets them through a ClusterRoleBinding to this role.
fn ml_engineer_datasets_rules() -> Vec<PolicyRule> {
    vec![
        rule(KUMO, &["datasets", "blobs"], &["get", "list", "update"]),
        rule(KUMO, &["queues"], READ),
    ]
}

/// What `kumo deploy`, `config`, `scale`, `rollback`, `logs` and `ps` call.
fn app_developer_rules() -> Vec<PolicyRule> {
    vec![
        rule(KUMO, &["apps"], ALL_VERBS),
        rule(KUMO, &["apps/status", "releases", "releases/status"], READ),
        rule("", &["pods", "pods/log", "events"], READ),
    ]
}

/// The built-in cluster roles.
pub fn cluster_roles() -> Vec<ClusterRole> {
    vec![
        cluster_role("cluster-admin", vec![rule(ALL, &[ALL], &[ALL])]),
        cluster_role("admin", admin_rules()),
        cluster_role("edit", edit_rules()),
        cluster_role("view", view_rules()),
        cluster_role("ml-engineer", ml_engineer_rules()),
        cluster_role("ml-engineer-datasets", ml_engineer_datasets_rules()),
        cluster_role("app-developer", app_developer_rules()),
        cluster_role(
            "system:basic-user",
            vec![rule(
                "authorization.k8s.io",
                &["selfsubjectaccessreviews"],
                &["create"],
            )],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule("", &["nodes/credential"], &["create"])],
        ),
    ]
}

fn binding(name: &str, role: &str, group: &str) -> ClusterRoleBinding {
    let mut b = ClusterRoleBinding {
        metadata: meta(name),
        subjects: vec![Subject {
            kind: "Group".into(),
            name: group.into(),
            namespace: String::new(),
            api_group: GROUP.into(),
        }],
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        ..Default::default()
    };
    b.set_type_meta();
    b
}

/// The built-in cluster role bindings.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    vec![
        binding("cluster-admin", "cluster-admin", crate::user::GROUP_MASTERS),
        binding(
            "system:basic-user",
            "system:basic-user",
            crate::user::GROUP_AUTHENTICATED,
        ),
        binding(
            "system:node-bootstrapper",
            "system:node-bootstrapper",
            GROUP_BOOTSTRAPPERS,
        ),
    ]
}
