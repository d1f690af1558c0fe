use super::*;
use crate::kind_by_type;
use crate::user::UserInfo;
use serde_json::json;

/// `rule` against `verb resource[/sub] [name]` in `group`.
fn check(rule: PolicyRule, request: (&str, &str, &str, &str), expected: bool) {
    let (verb, group, resource, name) = request;
    let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let r = Request {
        verb,
        api_group: group,
        resource,
        subresource: sub,
        namespace: "ns",
        name,
    };
    assert_eq!(rule_allows(&rule, &r), expected, "{rule:?} on {r:?}");
}

fn named(mut r: PolicyRule, names: &[&str]) -> PolicyRule {
    r.resource_names = names.iter().map(|s| s.to_string()).collect();
    r
}

#[test]
fn rules_match_as_kubernetes() {
    let pods = rule("", &["pods"], &["get", "list"]);
    check(pods.clone(), ("get", "", "pods", "a"), true);
    check(pods.clone(), ("list", "", "pods", ""), true);
    check(pods.clone(), ("delete", "", "pods", "a"), false);
    check(pods.clone(), ("get", "kumo.dev", "pods", "a"), false);
    // A resource does not cover its subresources.
    check(pods.clone(), ("get", "", "pods/log", "a"), false);
    check(
        rule("", &["pods/log"], &["get"]),
        ("get", "", "pods/log", "a"),
        true,
    );
    check(
        rule("", &["pods/log"], &["get"]),
        ("get", "", "pods", "a"),
        false,
    );
    // `*` resources cover subresources; `*/SUB` a subresource of anything.
    check(
        rule("", &["*"], &["get"]),
        ("get", "", "pods/log", "a"),
        true,
    );
    check(
        rule("", &["*/status"], &["update"]),
        ("update", "", "pods/status", "a"),
        true,
    );
    check(
        rule("", &["*/status"], &["update"]),
        ("update", "", "pods", "a"),
        false,
    );
    check(
        rule("*", &["*"], &["*"]),
        ("delete", "kumo.dev", "mltasks", "t"),
        true,
    );
    check(
        rule("kumo.dev", &["*"], &["*"]),
        ("delete", "", "pods", "t"),
        false,
    );
    // resourceNames narrow to those names; a request without a name never matches them.
    let one = named(rule("", &["secrets"], &["get", "list"]), &["pull"]);
    check(one.clone(), ("get", "", "secrets", "pull"), true);
    check(one.clone(), ("get", "", "secrets", "other"), false);
    check(one, ("list", "", "secrets", ""), false);
}

fn subject(kind: &str, name: &str, ns: &str) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        namespace: ns.into(),
        api_group: if kind == "ServiceAccount" { "" } else { GROUP }.into(),
    }
}

#[test]
fn subjects_match_users_groups_and_service_accounts() {
    let alice = UserInfo::new("alice", &["ml-team"]);
    let sa = UserInfo::new(
        "system:serviceaccount:team-a:builder",
        &["system:serviceaccounts"],
    );
    let cases = [
        (subject("User", "alice", ""), &alice, true),
        (subject("User", "bob", ""), &alice, false),
        (subject("Group", "ml-team", ""), &alice, true),
        (subject("Group", "system:authenticated", ""), &alice, true),
        (subject("Group", "app-team", ""), &alice, false),
        (subject("ServiceAccount", "builder", "team-a"), &sa, true),
        // No namespace: the binding's own (team-a here).
        (subject("ServiceAccount", "builder", ""), &sa, true),
        (subject("ServiceAccount", "builder", "team-b"), &sa, false),
        (subject("ServiceAccount", "other", "team-a"), &sa, false),
        (
            subject("User", "system:serviceaccount:team-a:builder", ""),
            &sa,
            true,
        ),
    ];
    for (s, user, want) in cases {
        assert_eq!(subject_matches(&s, user, "team-a"), want, "{s:?} {user:?}");
    }
}

fn policy() -> Policy {
    let crb = |name: &str, role: &str, s: Subject| ClusterRoleBinding {
        metadata: ObjectMeta::named(None, name),
        subjects: vec![s],
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        ..Default::default()
    };
    let rb = |ns: &str, kind: &str, role: &str, s: Subject| RoleBinding {
        metadata: ObjectMeta::named(Some(ns), "b"),
        subjects: vec![s],
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: kind.into(),
            name: role.into(),
        },
        ..Default::default()
    };
    Policy {
        roles: vec![Role {
            metadata: ObjectMeta::named(Some("team-b"), "reader"),
            rules: vec![rule("", &["secrets"], &["get"])],
            ..Default::default()
        }],
        cluster_roles: crate::rbac_defaults::cluster_roles(),
        role_bindings: vec![
            rb(
                "team-a",
                "ClusterRole",
                "ml-engineer",
                subject("User", "alice", ""),
            ),
            rb("team-b", "Role", "reader", subject("Group", "ml-team", "")),
            // A binding to a role that does not exist grants nothing.
            rb("team-c", "Role", "missing", subject("User", "alice", "")),
        ],
        cluster_role_bindings: [
            crate::rbac_defaults::cluster_role_bindings(),
            vec![crb(
                "ml-datasets",
                "ml-engineer-datasets",
                subject("Group", "ml-team", ""),
            )],
        ]
        .concat(),
    }
}

#[test]
fn a_policy_grants_through_its_bindings_in_their_namespaces() {
    let p = policy();
    let alice = UserInfo::new("alice", &["ml-team"]);
    let admin = UserInfo::new("root", &[crate::user::GROUP_MASTERS]);
    type Case<'a> = (
        &'a UserInfo,
        (&'a str, &'a str, &'a str, &'a str, &'a str),
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (
            &alice,
            ("create", "kumo.dev", "mltasks", "team-a", ""),
            Some("RoleBinding \"b\" of ClusterRole \"ml-engineer\" in namespace \"team-a\""),
        ),
        (
            &alice,
            ("create", "kumo.dev", "mltasks", "team-x", ""),
            None,
        ),
        (&alice, ("create", "kumo.dev", "mltasks", "", ""), None),
        (
            &alice,
            ("get", "", "pods/log", "team-a", "p"),
            Some("RoleBinding \"b\" of ClusterRole \"ml-engineer\" in namespace \"team-a\""),
        ),
        (&alice, ("create", "", "pods/exec", "team-a", "p"), None),
        (
            &alice,
            ("get", "kumo.dev", "datasets", "", "mnist"),
            Some("ClusterRoleBinding \"ml-datasets\" of ClusterRole \"ml-engineer-datasets\""),
        ),
        (
            &alice,
            ("delete", "kumo.dev", "datasets", "", "mnist"),
            None,
        ),
        (
            &alice,
            ("get", "", "secrets", "team-b", "s"),
            Some("RoleBinding \"b\" of Role \"reader\" in namespace \"team-b\""),
        ),
        (&alice, ("get", "", "secrets", "team-c", "s"), None),
        (
            &alice,
            (
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
            ),
            Some("ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\""),
        ),
        (
            &admin,
            ("delete", "", "nodes", "", "n1"),
            Some("ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\""),
        ),
    ];
    for (user, (verb, group, resource, ns, name), want) in cases {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let r = Request {
            verb,
            api_group: group,
            resource,
            subresource: sub,
            namespace: ns,
            name,
        };
        assert_eq!(p.allows(user, &r).as_deref(), *want, "{r:?}");
    }
}

/// Admits `object` as its kind; the error messages joined.
fn admit_check(object: serde_json::Value, expected: Result<(), &str>) {
    let kind = kind_by_type(
        object["apiVersion"].as_str().unwrap(),
        object["kind"].as_str().unwrap(),
    )
    .unwrap();
    let got = (kind.admit)(object.clone())
        .map(|_| ())
        .map_err(|e| crate::validation::join_errors(&e));
    assert_eq!(
        got.as_ref().map(|_| ()).map_err(String::as_str),
        expected,
        "{object}"
    );
}

#[test]
fn objects_are_validated_with_field_paths() {
    let v = "rbac.authorization.k8s.io/v1";
    admit_check(
        json!({"apiVersion": v, "kind": "ClusterRole", "metadata": {"name": "system:basic-user"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
        Ok(()),
    );
    admit_check(json!({"apiVersion": v, "kind": "Role", "metadata": {"name": "r", "namespace": "a"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}, {"resources": ["pods"], "verbs": ["get"]}, {"nonResourceURLs": ["/x"], "verbs": ["get"]}]}),
        Err("rules[0].verbs: Required value: verbs must contain at least one value, rules[1].apiGroups: Required value: resource rules must supply at least one api group, rules[2].nonResourceURLs: Invalid value: namespaced rules cannot apply to non-resource URLs"));
    admit_check(
        json!({"apiVersion": v, "kind": "Role", "metadata": {"name": "a/b"}, "rules": []}),
        Err(r#"metadata.name: Invalid value: "a/b": may not contain '/' or '%'"#),
    );
    admit_check(json!({"apiVersion": v, "kind": "Role", "metadata": {"name": "r"}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "colour": 1}]}),
        Err("rules[0].colour: unknown field `colour`, expected one of `verbs`, `apiGroups`, `resources`, `resourceNames`, `nonResourceURLs`"));
    // Users and groups get their apiGroup filled in.
    admit_check(
        json!({"apiVersion": v, "kind": "RoleBinding", "metadata": {"name": "b", "namespace": "a"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "default"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
        Ok(()),
    );
    admit_check(
        json!({"apiVersion": v, "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
        "subjects": [{"kind": "Robot", "name": "r2"}, {"kind": "ServiceAccount", "name": "default"}, {"kind": "User", "name": ""}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}}),
        Err(
            r#"subjects[0].kind: Unsupported value: "Robot": supported values: "User", "Group", "ServiceAccount", subjects[1].namespace: Required value, subjects[2].name: Required value, roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#,
        ),
    );
    admit_check(
        json!({"apiVersion": v, "kind": "ClusterRoleBinding", "metadata": {"name": "b"}, "subjects": []}),
        Err(
            r#"roleRef.apiGroup: Unsupported value: "": supported values: "rbac.authorization.k8s.io", roleRef.kind: Unsupported value: "": supported values: "ClusterRole", roleRef.name: Required value"#,
        ),
    );
}

#[test]
fn a_binding_keeps_its_role_ref() {
    let b = |role: &str| json!({"roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role}, "subjects": []});
    assert!(binding_update(&b("view"), &b("view")).is_empty());
    assert_eq!(
        crate::validation::join_errors(&binding_update(&b("view"), &b("admin"))),
        "roleRef: Invalid value: cannot change roleRef"
    );
}

#[test]
fn the_built_in_policy_is_valid() {
    for r in crate::rbac_defaults::cluster_roles() {
        admit_check(serde_json::to_value(&r).unwrap(), Ok(()));
    }
    for b in crate::rbac_defaults::cluster_role_bindings() {
        admit_check(serde_json::to_value(&b).unwrap(), Ok(()));
    }
}
