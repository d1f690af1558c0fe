//! RBAC in Kubernetes' shape (`rbac.authorization.k8s.io/v1`): Role, ClusterRole, RoleBinding,
//! ClusterRoleBinding, their validation, and the pure evaluator that says whether a set of
//! roles and bindings allows a request. No IO: the API server keeps the objects in memory and
//! asks [`Policy::allows`].

use crate::meta::ObjectMeta;
use crate::user::UserInfo;
use crate::validation::{decode, Errors, FieldError};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "rbac.authorization.k8s.io";
/// The wildcard of verbs, groups and resources.
pub const ALL: &str = "*";
/// The label kumo's built-in policy carries (as Kubernetes').
pub const LABEL_BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";
pub const BOOTSTRAPPING_DEFAULTS: &str = "rbac-defaults";
/// Annotation on a built-in object: `false` keeps the server from reconciling it at start.
pub const ANNOTATION_AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The prefix of a service account's user name: `system:serviceaccount:NS:NAME`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// One permission: verbs on resources (or non-resource URLs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// Who a binding grants its role to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    pub name: String,
    /// A service account's namespace (a RoleBinding's own when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `rbac.authorization.k8s.io` for users and groups (filled in when absent), empty for
    /// service accounts.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
}

/// The role a binding grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

macro_rules! role {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            #[serde(default)]
            pub api_version: String,
            #[serde(default)]
            pub kind: String,
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub rules: Vec<PolicyRule>,
        }
    };
}

macro_rules! binding {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            #[serde(default)]
            pub api_version: String,
            #[serde(default)]
            pub kind: String,
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub subjects: Vec<Subject>,
            #[serde(default)]
            pub role_ref: RoleRef,
        }
    };
}

role!(
    /// Permissions within one namespace.
    Role
);
role!(
    /// Permissions anywhere (through a ClusterRoleBinding) or in one namespace (through a
    /// RoleBinding).
    ClusterRole
);
binding!(
    /// Grants a Role or ClusterRole within the binding's namespace.
    RoleBinding
);
binding!(
    /// Grants a ClusterRole in every namespace and at the cluster scope.
    ClusterRoleBinding
);

/// RBAC object names are path segments (`system:basic-user` is one), as in Kubernetes.
pub fn check_path_segment_name(errors: &mut Errors, path: &str, name: &str) {
    if name.is_empty() {
        errors.add(path, "Required value: name is required");
    } else if name == "." || name == ".." {
        errors.add(
            path,
            format!("Invalid value: {name:?}: may not be '.' or '..'"),
        );
    } else if name.contains('/') || name.contains('%') {
        errors.add(
            path,
            format!("Invalid value: {name:?}: may not contain '/' or '%'"),
        );
    } else if name.len() > 253 {
        errors.add(
            path,
            format!("Invalid value: {name:?}: must be no more than 253 characters"),
        );
    }
}

fn validate_rules(rules: &[PolicyRule], namespaced: bool, errors: &mut Errors) {
    for (i, r) in rules.iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        if r.verbs.is_empty() {
            errors.add(
                at("verbs"),
                "Required value: verbs must contain at least one value",
            );
        }
        if !r.non_resource_urls.is_empty() {
            if namespaced {
                errors.add(
                    at("nonResourceURLs"),
                    "Invalid value: namespaced rules cannot apply to non-resource URLs",
                );
            }
            if !r.api_groups.is_empty() || !r.resources.is_empty() {
                errors.add(
                    at("nonResourceURLs"),
                    "Invalid value: rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if r.api_groups.is_empty() {
            errors.add(
                at("apiGroups"),
                "Required value: resource rules must supply at least one api group",
            );
        }
        if r.resources.is_empty() {
            errors.add(
                at("resources"),
                "Required value: resource rules must supply at least one resource",
            );
        }
    }
}

fn validate_subjects(subjects: &[Subject], namespaced: bool, errors: &mut Errors) {
    for (i, s) in subjects.iter().enumerate() {
        let at = |f: &str| format!("subjects[{i}].{f}");
        if s.name.is_empty() {
            errors.add(at("name"), "Required value");
        }
        match s.kind.as_str() {
            "User" | "Group" => {
                if s.api_group != GROUP {
                    errors.add(
                        at("apiGroup"),
                        format!("Unsupported value: {:?}: supported values: {GROUP:?}", s.api_group),
                    );
                }
            }
            "ServiceAccount" => {
                if !s.api_group.is_empty() {
                    errors.add(
                        at("apiGroup"),
                        format!("Unsupported value: {:?}: supported values: \"\"", s.api_group),
                    );
                }
                if s.namespace.is_empty() && !namespaced {
                    errors.add(at("namespace"), "Required value");
                }
            }
            other => errors.add(
                at("kind"),
                format!(
                    "Unsupported value: {other:?}: supported values: \"User\", \"Group\", \"ServiceAccount\""
                ),
            ),
        }
    }
}

fn validate_role_ref(r: &RoleRef, namespaced: bool, errors: &mut Errors) {
    if r.api_group != GROUP {
        errors.add(
            "roleRef.apiGroup",
            format!(
                "Unsupported value: {:?}: supported values: {GROUP:?}",
                r.api_group
            ),
        );
    }
    match r.kind.as_str() {
        "ClusterRole" => {}
        "Role" if namespaced => {}
        other => errors.add(
            "roleRef.kind",
            format!(
                "Unsupported value: {other:?}: supported values: {}",
                if namespaced {
                    "\"Role\", \"ClusterRole\""
                } else {
                    "\"ClusterRole\""
                }
            ),
        ),
    }
    if r.name.is_empty() {
        errors.add("roleRef.name", "Required value");
    }
}

/// Fills in what Kubernetes' v1 defaults: a user's or group's `apiGroup`.
fn default_subjects(subjects: &mut [Subject]) {
    for s in subjects {
        if s.api_group.is_empty() && (s.kind == "User" || s.kind == "Group") {
            s.api_group = GROUP.to_string();
        }
    }
}

/// Admission of the four kinds: decode, default, validate (the name as a path segment).
pub fn admit<K: crate::Resource>(
    value: serde_json::Value,
) -> Result<serde_json::Value, Vec<FieldError>> {
    let mut obj: K = decode(value).map_err(|e| vec![e])?;
    obj.set_type_meta();
    let mut json =
        serde_json::to_value(&obj).map_err(|e| vec![FieldError::new("", e.to_string())])?;
    if let Some(subjects) = json.get_mut("subjects") {
        let mut list: Vec<Subject> = serde_json::from_value(subjects.take())
            .map_err(|e| vec![FieldError::new("subjects", e.to_string())])?;
        default_subjects(&mut list);
        *subjects = serde_json::to_value(list).unwrap_or_default();
    }
    let obj: K = decode(json.clone()).map_err(|e| vec![e])?;
    let mut errors = Errors::default();
    let meta = obj.meta();
    if meta.name.is_empty() && meta.generate_name.is_none() {
        errors.add(
            "metadata.name",
            "Required value: name or generateName is required",
        );
    } else if !meta.name.is_empty() {
        check_path_segment_name(&mut errors, "metadata.name", &meta.name);
    }
    crate::object::validate_meta_fields(meta, K::NAMESPACED, &mut errors);
    obj.validate(&mut errors);
    errors.into_result()?;
    Ok(json)
}

pub(crate) fn validate_role(r: &Role, e: &mut Errors) {
    validate_rules(&r.rules, true, e)
}

pub(crate) fn validate_cluster_role(r: &ClusterRole, e: &mut Errors) {
    validate_rules(&r.rules, false, e)
}

pub(crate) fn validate_role_binding(b: &RoleBinding, e: &mut Errors) {
    validate_subjects(&b.subjects, true, e);
    validate_role_ref(&b.role_ref, true, e);
}

pub(crate) fn validate_cluster_role_binding(b: &ClusterRoleBinding, e: &mut Errors) {
    validate_subjects(&b.subjects, false, e);
    validate_role_ref(&b.role_ref, false, e);
}

/// A binding's `roleRef` never changes (delete and recreate the binding instead).
pub fn binding_update(old: &serde_json::Value, new: &serde_json::Value) -> Vec<FieldError> {
    if old.get("roleRef") != new.get("roleRef") {
        vec![FieldError::new(
            "roleRef",
            "Invalid value: cannot change roleRef",
        )]
    } else {
        Vec::new()
    }
}

/// What a request asks, as far as RBAC cares (Kubernetes' resource attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub verb: &'a str,
    pub api_group: &'a str,
    pub resource: &'a str,
    /// Empty, or `log`, `exec`, `status`, …
    pub subresource: &'a str,
    /// Empty for cluster-scoped objects and requests across all namespaces.
    pub namespace: &'a str,
    /// Empty for create, list and watch.
    pub name: &'a str,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == ALL || x == want)
}

/// Whether one rule allows the request, with Kubernetes' wildcards: `*` verbs, groups and
/// resources (a `*` resource covers subresources too), `*/SUB` for a subresource of any
/// resource, and `resourceNames` (which never match a request without a name).
pub fn rule_allows(rule: &PolicyRule, r: &Request) -> bool {
    if !has(&rule.verbs, r.verb) || !has(&rule.api_groups, r.api_group) {
        return false;
    }
    let combined = if r.subresource.is_empty() {
        r.resource.to_string()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let resource_ok = rule.resources.iter().any(|x| {
        x == ALL
            || *x == combined
            || (!r.subresource.is_empty() && x.strip_prefix("*/") == Some(r.subresource))
    });
    resource_ok
        && (rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == r.name))
}

/// Whether any of `rules` allows the request.
pub fn rules_allow(rules: &[PolicyRule], r: &Request) -> bool {
    rules.iter().any(|rule| rule_allows(rule, r))
}

/// Whether a binding's subject is this user. A service account subject without a namespace
/// means the binding's own.
pub fn subject_matches(s: &Subject, user: &UserInfo, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.username,
        "Group" => user.in_group(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            user.username
                .strip_prefix(SERVICE_ACCOUNT_PREFIX)
                .and_then(|rest| rest.split_once(':'))
                == Some((ns, s.name.as_str()))
        }
        _ => false,
    }
}

/// Every role and binding the server knows: what the authorizer decides on.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl Policy {
    fn cluster_role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_roles.iter().find(|r| r.metadata.name == name)
    }

    fn role(&self, ns: &str, name: &str) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.metadata.ns() == ns && r.metadata.name == name)
    }

    /// The rules a binding's roleRef points at (none when the role does not exist).
    fn rules_of(&self, role_ref: &RoleRef, ns: &str) -> &[PolicyRule] {
        match role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_role(&role_ref.name).map(|r| &r.rules[..]),
            "Role" => self.role(ns, &role_ref.name).map(|r| &r.rules[..]),
            _ => None,
        }
        .unwrap_or_default()
    }

    /// Which binding allows the request (`ClusterRoleBinding "x" of ClusterRole "y"`), or
    /// `None`. ClusterRoleBindings apply everywhere; a RoleBinding only to requests in its
    /// namespace.
    pub fn allows(&self, user: &UserInfo, r: &Request) -> Option<String> {
        for b in &self.cluster_role_bindings {
            if b.subjects.iter().any(|s| subject_matches(s, user, ""))
                && rules_allow(self.rules_of(&b.role_ref, ""), r)
            {
                return Some(format!(
                    "ClusterRoleBinding {:?} of ClusterRole {:?}",
                    b.metadata.name, b.role_ref.name
                ));
            }
        }
        if r.namespace.is_empty() {
            return None;
        }
        for b in self
            .role_bindings
            .iter()
            .filter(|b| b.metadata.ns() == r.namespace)
        {
            if b.subjects
                .iter()
                .any(|s| subject_matches(s, user, r.namespace))
                && rules_allow(self.rules_of(&b.role_ref, r.namespace), r)
            {
                return Some(format!(
                    "RoleBinding {:?} of {} {:?} in namespace {:?}",
                    b.metadata.name, b.role_ref.kind, b.role_ref.name, r.namespace
                ));
            }
        }
        None
    }
}

/// A rule for built-in roles: `verbs` on `resources` in `group`.
pub fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        verbs: own(verbs),
        api_groups: vec![group.to_string()],
        resources: own(resources),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "rbac_tests.rs"]
mod tests;
