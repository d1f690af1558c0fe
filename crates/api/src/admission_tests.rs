//! Validation messages as data: a manifest in, the exact field error out.

use crate::kind_by_type;
use serde_json::{json, Value};

fn check(object: Value, expected: &str) {
    let kind = kind_by_type(
        object["apiVersion"].as_str().unwrap(),
        object["kind"].as_str().unwrap(),
    )
    .unwrap();
    let got = match (kind.admit)(object) {
        Ok(_) => "ok".to_string(),
        Err(errors) => crate::validation::join_errors(&errors),
    };
    assert_eq!(got, expected);
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn valid_process_pod() {
    check(
        pod(
            json!({"runtimeClassName": "process", "containers": [{"name": "c", "command": ["true"]}]}),
        ),
        "ok",
    );
}

#[test]
fn pod_errors_name_their_field() {
    let cases = [
        (
            pod(json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"memory": "12XB"}}}]})),
            r#"spec.containers[0].resources.limits.memory: invalid quantity "12XB""#,
        ),
        (pod(json!({"containers": [{"name": "c", "image": "x", "bogus": 1}]})), "spec.containers[0].bogus: unknown field `bogus`, expected one of `name`, `image`, `command`, `args`, `env`, `workingDir`, `resources`, `ports`"),
        (pod(json!({"containers": []})), "spec.containers: Required value: a pod needs at least one container"),
        (pod(json!({"containers": [{"name": "c"}]})), "spec.containers[0].image: Required value: an image is required unless runtimeClassName is \"process\""),
        (pod(json!({"runtimeClassName": "process", "containers": [{"name": "c"}]})), "spec.containers[0].command: Required value: a process container needs a command"),
        (pod(json!({"containers": [{"name": "C_1", "image": "x"}]})), "spec.containers[0].name: Invalid value: \"C_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters"),
        (pod(json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]})), "spec.containers[0].resources.requests.cpu: Invalid value: \"2\": must be less than or equal to the limit \"1\""),
        (pod(json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "500m"}}}]})), "spec.containers[0].resources.limits.nvidia.com/gpu: Invalid value: \"500m\": must be a whole number"),
        (pod(json!({"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "x"}]})), "spec.restartPolicy: unknown variant `Sometimes`, expected one of `Always`, `OnFailure`, `Never`"),
        (pod(json!({"terminationGracePeriodSeconds": -1, "containers": [{"name": "c", "image": "x"}]})), "spec.terminationGracePeriodSeconds: Invalid value: -1: must be >= 0"),
        (pod(json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]}]})), "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ];
    for (object, expected) in cases {
        check(object, expected);
    }
}

#[test]
fn metadata_errors() {
    check(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}), "metadata.name: Required value: name or generateName is required, spec.containers: Required value: a pod needs at least one container");
    check(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "Bad.Name"}}),
        "metadata.name: Invalid value: \"Bad.Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters",
    );
    check(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "x"}}),
        "metadata.namespace: Forbidden: not allowed on this type",
    );
    check(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b c"}}}),
        "metadata.labels.a: Invalid value: \"b c\": not a valid label value",
    );
    check(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "colour": "red"}}), "metadata.colour: unknown field `colour`, expected one of `name`, `generateName`, `namespace`, `uid`, `resourceVersion`, `generation`, `creationTimestamp`, `deletionTimestamp`, `deletionGracePeriodSeconds`, `labels`, `annotations`, `ownerReferences`, `finalizers`");
}

#[test]
fn admission_fills_defaults() {
    let kind = kind_by_type("v1", "Pod").unwrap();
    let out = (kind.admit)(pod(
        json!({"runtimeClassName": "process", "containers": [{"name": "c", "command": ["true"]}]}),
    ))
    .unwrap();
    assert_eq!(out["spec"]["restartPolicy"], "Always");
    assert_eq!(out["kind"], "Pod");
}
