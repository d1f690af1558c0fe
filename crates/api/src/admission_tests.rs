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
        (pod(json!({"containers": [{"name": "c", "image": "x", "bogus": 1}]})), "spec.containers[0].bogus: unknown field `bogus`, expected one of `name`, `image`, `command`, `args`, `env`, `workingDir`, `resources`, `ports`, `imagePullPolicy`, `securityContext`, `volumeMounts`, `readinessProbe`"),
        (pod(json!({"containers": []})), "spec.containers: Required value: a pod needs at least one container"),
        (pod(json!({"containers": [{"name": "c"}]})), "spec.containers[0].image: Required value: an image is required unless runtimeClassName is \"process\""),
        (pod(json!({"runtimeClassName": "process", "containers": [{"name": "c"}]})), "spec.containers[0].command: Required value: a process container needs a command"),
        (pod(json!({"containers": [{"name": "C_1", "image": "x"}]})), "spec.containers[0].name: Invalid value: \"C_1\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', start and end with an alphanumeric character, and be at most 63 characters"),
        (pod(json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]})), "spec.containers[0].resources.requests.cpu: Invalid value: \"2\": must be less than or equal to the limit \"1\""),
        (pod(json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "500m"}}}]})), "spec.containers[0].resources.limits.nvidia.com/gpu: Invalid value: \"500m\": must be a whole number"),
        (pod(json!({"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "x"}]})), "spec.restartPolicy: unknown variant `Sometimes`, expected one of `Always`, `OnFailure`, `Never`"),
        (pod(json!({"terminationGracePeriodSeconds": -1, "containers": [{"name": "c", "image": "x"}]})), "spec.terminationGracePeriodSeconds: Invalid value: -1: must be between 0 and 31536000, inclusive"),
        (pod(json!({"terminationGracePeriodSeconds": i64::MAX, "containers": [{"name": "c", "image": "x"}]})), "spec.terminationGracePeriodSeconds: Invalid value: 9223372036854775807: must be between 0 and 31536000, inclusive"),
        (pod(json!({"containers": [{"name": "c", "image": "x", "readinessProbe": {"tcpSocket": {}, "timeoutSeconds": 9_000_000_000_000_000_000_i64}}]})), "spec.containers[0].readinessProbe.timeoutSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive"),
        (pod(json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000}]}]})), "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ];
    for (object, expected) in cases {
        check(object, expected);
    }
}

#[test]
fn valid_oci_pod_with_volumes_and_security() {
    check(
        pod(json!({
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": true},
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "data", "hostPath": {"path": "/srv/data", "type": "DirectoryOrCreate"}}
            ],
            "containers": [{
                "name": "c", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {
                    "runAsGroup": 1000, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["NET_ADMIN", "CAP_SYS_TIME"], "drop": ["all"]}
                },
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/tmp"},
                    {"name": "data", "mountPath": "/data", "readOnly": true}
                ]
            }]
        })),
        "ok",
    );
}

#[test]
fn volume_and_security_errors_name_their_field() {
    let c = |extra: Value| {
        let mut c = json!({"name": "c", "image": "x"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        (
            pod(json!({"containers": [c(json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}))]})),
            r#"spec.containers[0].volumeMounts[0].name: Not found: "nope": no volume of that name in spec.volumes"#,
        ),
        (
            pod(json!({"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}], "containers": [c(json!({}))]})),
            r#"spec.volumes[1].name: Duplicate value: "v""#,
        ),
        (
            pod(json!({"volumes": [{"name": "v", "emptyDir": {}}], "containers": [c(json!({"volumeMounts": [{"name": "v", "mountPath": "data"}]}))]})),
            r#"spec.containers[0].volumeMounts[0].mountPath: Invalid value: "data": must be an absolute path"#,
        ),
        (
            pod(json!({"volumes": [{"name": "h", "hostPath": {"path": "srv"}}], "containers": [c(json!({}))]})),
            r#"spec.volumes[0].hostPath.path: Invalid value: "srv": must be an absolute path"#,
        ),
        (
            pod(json!({"volumes": [{"name": "h", "hostPath": {"path": "/srv/../etc"}}], "containers": [c(json!({}))]})),
            r#"spec.volumes[0].hostPath.path: Invalid value: "/srv/../etc": must not contain '..'"#,
        ),
        (
            pod(json!({"volumes": [{"name": "v"}], "containers": [c(json!({}))]})),
            "spec.volumes[0]: Required value: must specify a volume type (emptyDir or hostPath)",
        ),
        (
            pod(json!({"volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}], "containers": [c(json!({}))]})),
            "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type",
        ),
        (
            pod(json!({"volumes": [{"name": "v", "emptyDir": {"medium": "Disk"}}], "containers": [c(json!({}))]})),
            r#"spec.volumes[0].emptyDir.medium: Unsupported value: "Disk": supported values: "", "Memory""#,
        ),
        (
            pod(json!({"volumes": [{"name": "v", "hostPath": {"path": "/x", "type": "Folder"}}], "containers": [c(json!({}))]})),
            "spec.volumes[0].hostPath.type: unknown variant `Folder`, expected one of ``, `DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`, `Socket`, `CharDevice`, `BlockDevice`",
        ),
        (
            pod(json!({"containers": [c(json!({"securityContext": {"capabilities": {"add": ["NET_FLY"]}}}))]})),
            r#"spec.containers[0].securityContext.capabilities.add[0]: Unsupported value: "NET_FLY": not a Linux capability (use a name like "NET_ADMIN" or "CAP_NET_ADMIN", or "ALL")"#,
        ),
        (
            pod(json!({"containers": [c(json!({"securityContext": {"runAsUser": -1}}))]})),
            "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 and 4294967294, inclusive",
        ),
        (
            pod(json!({"securityContext": {"runAsGroup": -5}, "containers": [c(json!({}))]})),
            "spec.securityContext.runAsGroup: Invalid value: -5: must be between 0 and 4294967294, inclusive",
        ),
        (
            pod(json!({"securityContext": {"privileged": true}, "containers": [c(json!({}))]})),
            "spec.securityContext.privileged: unknown field `privileged`, expected one of `runAsUser`, `runAsGroup`, `runAsNonRoot`, `seccompProfile`",
        ),
        (
            pod(json!({"containers": [c(json!({"securityContext": {"privileged": true, "allowPrivilegeEscalation": false}}))]})),
            "spec.containers[0].securityContext.allowPrivilegeEscalation: Invalid value: false: cannot set allowPrivilegeEscalation to false and privileged to true",
        ),
        (
            pod(json!({"containers": [c(json!({"ports": [{"containerPort": 80, "hostPort": 70000}]}))]})),
            "spec.containers[0].ports[0].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            pod(json!({"securityContext": {"seccompProfile": {"type": "Localhost"}}, "containers": [c(json!({}))]})),
            "spec.securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
        ),
        (
            pod(json!({"containers": [c(json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/x.json"}}}))]})),
            r#"spec.containers[0].securityContext.seccompProfile.localhostProfile: Invalid value: "../../etc/x.json": must be a relative path of at most 255 characters without '.' or '..' components"#,
        ),
        (
            pod(json!({"containers": [c(json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x.json"}}}))]})),
            "spec.containers[0].securityContext.seccompProfile.localhostProfile: Forbidden: may only be set when seccomp type is Localhost",
        ),
        (
            pod(json!({"containers": [c(json!({"securityContext": {"seccompProfile": {"type": "Lax"}}}))]})),
            "spec.containers[0].securityContext.seccompProfile.type: unknown variant `Lax`, expected one of `RuntimeDefault`, `Unconfined`, `Localhost`",
        ),
        (
            pod(json!({"containers": [c(json!({"imagePullPolicy": "Sometimes"}))]})),
            "spec.containers[0].imagePullPolicy: unknown variant `Sometimes`, expected one of `Always`, `IfNotPresent`, `Never`",
        ),
    ];
    for (object, expected) in cases {
        check(object, expected);
    }
}

#[test]
fn pull_policy_defaults_as_in_kubernetes() {
    use crate::pod::{Container, PullPolicy};
    let policy = |image: &str, set: Option<PullPolicy>| {
        Container {
            image: Some(image.into()),
            image_pull_policy: set,
            ..Default::default()
        }
        .pull_policy()
    };
    assert_eq!(policy("busybox", None), PullPolicy::Always);
    assert_eq!(policy("busybox:latest", None), PullPolicy::Always);
    assert_eq!(policy("localhost:5000/busybox", None), PullPolicy::Always);
    assert_eq!(
        policy("localhost:5000/busybox:1.36", None),
        PullPolicy::IfNotPresent
    );
    assert_eq!(
        policy("busybox@sha256:abcd", None),
        PullPolicy::IfNotPresent
    );
    assert_eq!(
        policy("busybox", Some(PullPolicy::Never)),
        PullPolicy::Never
    );
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
