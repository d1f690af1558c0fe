//! MLTask validation as data: a spec in, the exact field errors out.

use crate::mltask::{is_contained_path, MLTask};
use crate::object::admit;
use serde_json::{json, Value};

fn check(spec: Value, expected: &str) {
    let task = json!({"apiVersion": "kumo.dev/v1", "kind": "MLTask", "metadata": {"name": "resnet"}, "spec": spec});
    let got = match admit::<MLTask>(task, true) {
        Ok(_) => "ok".to_string(),
        Err(errors) => crate::validation::join_errors(&errors),
    };
    assert_eq!(got, expected);
}

#[test]
fn valid_tasks_get_defaults() {
    let task = json!({"apiVersion": "kumo.dev/v1", "kind": "MLTask", "metadata": {"name": "t"},
                      "spec": {"runtimeClassName": "process", "command": ["python", "train.py"]}});
    let out = admit::<MLTask>(task, true).unwrap();
    assert_eq!(out["spec"]["parallelism"], 1);
    assert_eq!(out["spec"]["queue"], "default");
    assert_eq!(out["spec"]["maxRetries"], 3);
    assert_eq!(out["spec"]["resources"]["gpus"], 0);
    check(
        json!({"image": "127.0.0.1:5000/train:1", "command": ["python"], "parallelism": 4,
               "resources": {"gpus": 2, "cpu": "8", "memory": "32Gi", "gpuModel": "H100"},
               "data": {"dataset": "imagenet-mini"}, "output": {"path": "models/resnet"},
               "scratch": {"sizeLimit": "50Gi"}, "queue": "research", "priority": 10, "maxRetries": 3,
               "activeDeadlineSeconds": 86400}),
        "ok",
    );
}

#[test]
fn bad_tasks_name_their_field() {
    let cases = [
        (json!({"runtimeClassName": "process", "command": ["x"], "parallelism": 0}), "spec.parallelism: Invalid value: 0: must be between 1 and 1000, inclusive"),
        (json!({"runtimeClassName": "process", "command": ["x"], "resources": {"gpus": -1}}), "spec.resources.gpus: Invalid value: -1: must be between 0 and 64, inclusive"),
        (json!({"command": ["x"]}), "spec.image: Required value: an image is required unless runtimeClassName is \"process\""),
        (json!({"runtimeClassName": "process"}), "spec.command: Required value: a task without an image needs a command"),
        (
            json!({"runtimeClassName": "process", "command": ["x"], "output": {"path": "../../etc"}}),
            "spec.output.path: Invalid value: \"../../etc\": must be a relative path that stays inside the output root",
        ),
        (json!({"runtimeClassName": "process", "command": ["x"], "data": {}}), "spec.data: Invalid value: give exactly one of dataset or hostPath"),
        (json!({"runtimeClassName": "process", "command": ["x"], "data": {"hostPath": "srv"}}), "spec.data.hostPath: Invalid value: \"srv\": must be an absolute path"),
        (json!({"runtimeClassName": "process", "command": ["x"], "queue": "Research"}), "spec.queue: Invalid value: \"Research\": must be a DNS label"),
        (json!({"runtimeClassName": "process", "command": ["x"], "resources": {"memory": "12XB"}}), "spec.resources.memory: invalid quantity \"12XB\""),
        (json!({"runtimeClassName": "process", "command": ["x"], "env": [{"name": "1BAD", "value": "x"}]}), "spec.env[0].name: Invalid value: \"1BAD\": must be a C identifier"),
        (json!({"runtimeClassName": "process", "command": ["x"], "resources": {"memory": "1500m"}}), "spec.resources.memory: Invalid value: \"1500m\": must be a whole number"),
        (json!({"runtimeClassName": "process", "command": ["x"], "nodeSelector": {"pool": "a b"}}), "spec.nodeSelector.pool: Invalid value: pool=a b: not a valid label"),
        (json!({"runtimeClassName": "process", "command": ["x"], "gpus": 2}), "spec.gpus: unknown field `gpus`, expected one of `image`, `runtimeClassName`, `command`, `args`, `env`, `workingDir`, `parallelism`, `resources`, `data`, `output`, `scratch`, `queue`, `priority`, `maxRetries`, `activeDeadlineSeconds`, `masterPort`, `nodeSelector`, `cancel`"),
    ];
    for (spec, expected) in cases {
        check(spec, expected);
    }
}

#[test]
fn contained_paths() {
    for (path, ok) in [
        ("models/resnet", true),
        ("a", true),
        ("", false),
        ("/abs", false),
        ("a/../../b", false),
        ("..", false),
    ] {
        assert_eq!(is_contained_path(path), ok, "{path}");
    }
}

#[test]
fn only_cancel_and_priority_change_after_creation() {
    let kind = crate::kind_by_name("mlt").unwrap();
    let task = |extra: Value| {
        let mut spec = json!({"runtimeClassName": "process", "command": ["x"]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        (kind.admit)(json!({"apiVersion": "kumo.dev/v1", "kind": "MLTask", "metadata": {"name": "t"}, "spec": spec}))
            .unwrap()
    };
    let old = task(json!({}));
    assert!((kind.validate_update)(&old, &task(json!({"cancel": true, "priority": 5}))).is_empty());
    let errors = (kind.validate_update)(&old, &task(json!({"parallelism": 2})));
    assert_eq!(
        crate::validation::join_errors(&errors),
        "spec: Forbidden: only spec.cancel and spec.priority may change after an MLTask is created"
    );
}

#[test]
fn queues_are_served_cluster_wide() {
    let kind = crate::kind_by_name("queues").unwrap();
    assert!(!kind.namespaced && kind.has_status);
    let err = (kind.admit)(json!({"apiVersion": "kumo.dev/v1", "kind": "Queue", "metadata": {"name": "research"}, "spec": {"gpuQuota": -1}}))
        .unwrap_err();
    assert_eq!(
        crate::validation::join_errors(&err),
        "spec.gpuQuota: Invalid value: -1: must be between 0 and 1000000, inclusive"
    );
}

#[test]
fn task_numbers_are_bounded() {
    let task = |extra: Value| {
        let mut spec = json!({"runtimeClassName": "process", "command": ["x"]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    let cases = [
        // The task: this deadline overflowed the controller's clock arithmetic.
        (task(json!({"activeDeadlineSeconds": 9_000_000_000_000_000_000_i64})),
         "spec.activeDeadlineSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive"),
        (task(json!({"activeDeadlineSeconds": 0})),
         "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 31536000, inclusive"),
        (task(json!({"activeDeadlineSeconds": 31_536_000})), "ok"),
        (task(json!({"parallelism": 1001})), "spec.parallelism: Invalid value: 1001: must be between 1 and 1000, inclusive"),
        (task(json!({"parallelism": 1000})), "ok"),
        (task(json!({"resources": {"gpus": i64::MAX}})),
         "spec.resources.gpus: Invalid value: 9223372036854775807: must be between 0 and 64, inclusive"),
        (task(json!({"priority": i32::MAX})),
         "spec.priority: Invalid value: 2147483647: must be between -1000000000 and 1000000000, inclusive"),
        (task(json!({"priority": -1_000_000_000})), "ok"),
        (task(json!({"maxRetries": -1})), "spec.maxRetries: Invalid value: -1: must be between 0 and 100, inclusive"),
        (task(json!({"maxRetries": i32::MAX})),
         "spec.maxRetries: Invalid value: 2147483647: must be between 0 and 100, inclusive"),
        (task(json!({"masterPort": 0})), "spec.masterPort: Invalid value: 0: must be between 1 and 65535, inclusive"),
    ];
    for (spec, expected) in cases {
        check(spec, expected);
    }
    let kind = crate::kind_by_name("queues").unwrap();
    let err = (kind.admit)(json!({"apiVersion": "kumo.dev/v1", "kind": "Queue", "metadata": {"name": "q"}, "spec": {"gpuQuota": i64::MAX}}))
        .unwrap_err();
    assert_eq!(
        crate::validation::join_errors(&err),
        "spec.gpuQuota: Invalid value: 9223372036854775807: must be between 0 and 1000000, inclusive"
    );
}
