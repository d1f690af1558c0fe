//! The Pod Security Standards levels as a table: pod specs and the fields each level refuses.

use super::*;
use crate::pod::Pod;
use serde_json::json;

/// The fields `level` refuses in the pod whose spec is `spec` (a JSON pod spec with one
/// container `c` added first when it names none).
fn check_spec(spec: serde_json::Value, level: Level) -> Vec<String> {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    let pod: Pod = crate::validation::decode(json!({"metadata": {"name": "p"}, "spec": spec}))
        .expect("a valid pod");
    super::check(&pod.spec, level)
        .into_iter()
        .map(|e| e.path)
        .collect()
}

fn restricted_container(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"name": "c", "image": "busybox", "securityContext": {
        "allowPrivilegeEscalation": false,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}});
    if let (Some(c), Some(extra)) = (c["securityContext"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

#[test]
fn levels_as_a_table() {
    use Level::*;
    let cases: Vec<(serde_json::Value, Level, Vec<&str>)> = vec![
        // A plain container runs at baseline, not at restricted.
        (json!({}), Baseline, vec![]),
        (
            json!({}),
            Restricted,
            vec![
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
                "spec.containers[0].securityContext.capabilities.drop",
                "spec.containers[0].securityContext.runAsNonRoot",
                "spec.containers[0].securityContext.seccompProfile",
            ],
        ),
        // The process runtime is host access.
        (
            json!({"runtimeClassName": "process", "containers": [{"name": "c", "command": ["true"]}]}),
            Baseline,
            vec!["spec.runtimeClassName"],
        ),
        (
            json!({"runtimeClassName": "process", "containers": [{"name": "c", "command": ["true"]}]}),
            Privileged,
            vec![],
        ),
        // Capabilities: the baseline list is fine, SYS_ADMIN, SYS_TIME and ALL are not.
        (
            json!({"containers": [{"name": "c", "image": "i", "securityContext": {"capabilities": {"add": ["CHOWN", "cap_net_bind_service"]}}}]}),
            Baseline,
            vec![],
        ),
        (
            json!({"containers": [{"name": "c", "image": "i", "securityContext": {"capabilities": {"add": ["CHOWN", "SYS_ADMIN", "CAP_SYS_TIME", "ALL"]}}}]}),
            Baseline,
            vec![
                "spec.containers[0].securityContext.capabilities.add[1]",
                "spec.containers[0].securityContext.capabilities.add[2]",
                "spec.containers[0].securityContext.capabilities.add[3]",
            ],
        ),
        (
            json!({"containers": [{"name": "c", "image": "i", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
            Privileged,
            vec![],
        ),
        (
            json!({"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}),
            Baseline,
            vec!["spec.containers[0].securityContext.privileged"],
        ),
        (
            json!({"hostNetwork": true, "hostPID": true, "hostIPC": false}),
            Baseline,
            vec!["spec.hostNetwork", "spec.hostPID"],
        ),
        (
            json!({"volumes": [{"name": "v", "hostPath": {"path": "/etc"}}, {"name": "e", "emptyDir": {}}]}),
            Baseline,
            vec!["spec.volumes[0].hostPath"],
        ),
        (
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}]}]}),
            Baseline,
            vec!["spec.containers[0].ports[1].hostPort"],
        ),
        (
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}},
                   "containers": [{"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}),
            Baseline,
            vec![
                "spec.securityContext.seccompProfile.type",
                "spec.containers[0].securityContext.seccompProfile.type",
            ],
        ),
        // Restricted: a container that sets everything passes; each missing piece is named.
        (
            json!({"containers": [restricted_container(json!({}))]}),
            Restricted,
            vec![],
        ),
        (
            json!({"containers": [restricted_container(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}}))]}),
            Restricted,
            vec!["spec.containers[0].securityContext.capabilities.add[1]"],
        ),
        (
            json!({"containers": [restricted_container(json!({"runAsUser": 0}))]}),
            Restricted,
            vec!["spec.containers[0].securityContext.runAsUser"],
        ),
        (
            json!({"containers": [restricted_container(json!({"allowPrivilegeEscalation": true}))]}),
            Restricted,
            vec!["spec.containers[0].securityContext.allowPrivilegeEscalation"],
        ),
        // runAsNonRoot and seccompProfile may come from the pod.
        (
            json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
                   "containers": [{"name": "c", "image": "i", "securityContext": {
                       "allowPrivilegeEscalation": false, "capabilities": {"drop": ["all"]}}}]}),
            Restricted,
            vec![],
        ),
        (
            json!({"securityContext": {"runAsNonRoot": false, "runAsUser": 0},
                   "containers": [restricted_container(json!({"runAsNonRoot": null}))]}),
            Restricted,
            vec![
                "spec.securityContext.runAsUser",
                "spec.securityContext.runAsNonRoot",
            ],
        ),
        (
            json!({"volumes": [{"name": "v", "hostPath": {"path": "/srv"}}],
                   "containers": [restricted_container(json!({}))]}),
            Restricted,
            vec!["spec.volumes[0].hostPath"],
        ),
    ];
    for (i, (spec, level, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            check_spec(spec.clone(), level),
            want,
            "case {i} at {level}: {spec}"
        );
    }
}

#[test]
fn a_refusal_names_level_and_fields() {
    let errs = vec![FieldError::new(
        "spec.runtimeClassName",
        "host process runtime (x)",
    )];
    assert_eq!(
        refusal(Level::Baseline, &errs),
        "violates PodSecurity \"baseline:latest\": spec.runtimeClassName: host process runtime (x) (the namespace's pod-security.kubernetes.io/enforce label sets the level)"
    );
}

#[test]
fn namespace_labels() {
    let check = |pairs: &[(&str, &str)]| -> Vec<String> {
        let labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut e = Errors::default();
        validate_namespace_labels(&labels, &mut e);
        e.0.into_iter().map(|e| e.path).collect()
    };
    assert!(check(&[
        (LABEL_ENFORCE, "restricted"),
        (LABEL_ENFORCE_VERSION, "v1.32")
    ])
    .is_empty());
    assert_eq!(
        check(&[
            (LABEL_ENFORCE, "admin"),
            ("pod-security.kubernetes.io/warn-version", "1.2")
        ]),
        vec![
            "metadata.labels.pod-security.kubernetes.io/enforce",
            "metadata.labels.pod-security.kubernetes.io/warn-version",
        ]
    );
    let labels = |v: &str| BTreeMap::from([(LABEL_ENFORCE.to_string(), v.to_string())]);
    assert_eq!(Level::of_namespace(&BTreeMap::new()), Level::Baseline);
    assert_eq!(
        Level::of_namespace(&labels("privileged")),
        Level::Privileged
    );
    assert_eq!(Level::of_namespace(&labels("nonsense")), Level::Restricted);
}
