//! App and Release validation as data, and the release rules (what is a release, what changed).

use crate::app::{App, ReleaseContent};
use crate::object::admit;
use serde_json::{json, Value};

fn check(spec: Value, expected: &str) {
    let app = json!({"apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "web"}, "spec": spec});
    let got = match admit::<App>(app, true) {
        Ok(_) => "ok".to_string(),
        Err(errors) => crate::validation::join_errors(&errors),
    };
    assert_eq!(got, expected);
}

#[test]
fn valid_apps_get_defaults() {
    let app = json!({"apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "web"},
                     "spec": {"runtimeClassName": "process", "processes": {"web": {"command": ["./server"]}}}});
    let out = admit::<App>(app, true).unwrap();
    assert_eq!(out["spec"]["processes"]["web"]["replicas"], 1);
    assert_eq!(out["spec"]["deploy"]["strategy"], "BlueGreen");
    check(
        json!({"image": "127.0.0.1:5000/web:2",
               "processes": {"web": {"command": ["./server"], "replicas": 3, "port": 8080, "protocol": "h2c"},
                             "worker": {"command": ["./worker"], "replicas": 0}},
               "env": {"DATABASE_URL": "postgres://db"}, "resources": {"cpu": "500m", "memory": "256Mi"},
               "healthcheck": {"path": "/healthz", "timeoutSeconds": 2}, "domains": ["web.example.test"],
               "deploy": {"strategy": "Rolling", "drainSeconds": 30}}),
        "ok",
    );
}

#[test]
fn bad_apps_name_their_field() {
    let proc_app = |web: Value| json!({"runtimeClassName": "process", "processes": {"web": web}});
    let cases = [
        (proc_app(json!({})), "spec.processes.web.command: Required value: a process needs a command when the app has no image"),
        (json!({"processes": {"web": {"command": ["x"], "port": 80}}}), "spec.image: Required value: an image is required unless runtimeClassName is \"process\""),
        (proc_app(json!({"command": ["x"], "replicas": -1})), "spec.processes.web.replicas: Invalid value: -1: must be between 0 and 1000, inclusive"),
        (proc_app(json!({"command": ["x"], "replicas": 1001})), "spec.processes.web.replicas: Invalid value: 1001: must be between 0 and 1000, inclusive"),
        (proc_app(json!({"command": ["x"], "replicas": 9_000_000_000_i64})), "spec.processes.web.replicas: invalid value: integer `9000000000`, expected i32"),
        (proc_app(json!({"command": ["x"], "port": 0})), "spec.processes.web.port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        (proc_app(json!({"command": ["x"], "port": 70000})), "spec.processes.web.port: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (proc_app(json!({"command": ["x"], "protocol": "h3"})), "spec.processes.web.protocol: unknown variant `h3`, expected `http1` or `h2c`"),
        (json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}, "domains": ["Bad_Domain!"]}),
         "spec.domains[0]: Invalid value: \"Bad_Domain!\": must be a lower-case DNS name (a-z, 0-9, '-', '.')"),
        (json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}, "domains": ["a.test", "a.test"]}),
         "spec.domains[1]: Duplicate value: \"a.test\""),
        (json!({"runtimeClassName": "process", "processes": {}}), "spec.processes: Required value: an app needs at least one process"),
        (json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}, "env": {"1X": "y"}}),
         "spec.env.1X: Invalid value: \"1X\": must be a C identifier"),
        (json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}, "healthcheck": {"path": "healthz"}}),
         "spec.healthcheck.path: Invalid value: \"healthz\": must start with '/'"),
        (json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}, "deploy": {"strategy": "Canary"}}),
         "spec.deploy.strategy: unknown variant `Canary`, expected `BlueGreen` or `Rolling`"),
        (json!({"image": "x", "processes": {"web": {}}}), "spec.processes.web.port: Required value: the web process of an image app needs a port"),
        (json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}, "resources": {"memory": "500m"}}),
         "spec.resources.memory: Invalid value: \"500m\": must be a whole number"),
        (json!({"runtimeClassName": "process", "processes": {"a-very-long-process-name-that-does-not-fit-in-a-pod-name": {"command": ["x"]}}}),
         "spec.processes.a-very-long-process-name-that-does-not-fit-in-a-pod-name: Invalid value: \"a-very-long-process-name-that-does-not-fit-in-a-pod-name\": the app's and the process's names together must be at most 47 characters (replicas are named {app}-v{N}-{process}-{random})"),
    ];
    for (spec, expected) in cases {
        check(spec, expected);
    }
}

#[test]
fn app_numbers_are_bounded() {
    let app = |extra: Value| {
        let mut spec =
            json!({"runtimeClassName": "process", "processes": {"web": {"command": ["x"]}}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    let cases = [
        // The App: this timeout overflowed the controller's clock arithmetic.
        (app(json!({"deploy": {"timeoutSeconds": 9_000_000_000_000_000_000_i64}})),
         "spec.deploy.timeoutSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive"),
        (app(json!({"deploy": {"timeoutSeconds": 0}})),
         "spec.deploy.timeoutSeconds: Invalid value: 0: must be between 1 and 31536000, inclusive"),
        (app(json!({"deploy": {"timeoutSeconds": 31_536_000}})), "ok"),
        (app(json!({"deploy": {"drainSeconds": i64::MAX}})),
         "spec.deploy.drainSeconds: Invalid value: 9223372036854775807: must be between 0 and 31536000, inclusive"),
        (app(json!({"deploy": {"drainSeconds": -1}})),
         "spec.deploy.drainSeconds: Invalid value: -1: must be between 0 and 31536000, inclusive"),
        (app(json!({"deploy": {"drainSeconds": 0}})), "ok"),
        (app(json!({"healthcheck": {"timeoutSeconds": 0}})),
         "spec.healthcheck.timeoutSeconds: Invalid value: 0: must be between 1 and 31536000, inclusive"),
        (app(json!({"healthcheck": {"timeoutSeconds": i64::MAX}})),
         "spec.healthcheck.timeoutSeconds: Invalid value: 9223372036854775807: must be between 1 and 31536000, inclusive"),
        (app(json!({"processes": {"web": {"command": ["x"], "replicas": 1000}}})), "ok"),
    ];
    for (spec, expected) in cases {
        check(spec, expected);
    }
}

#[test]
fn release_numbers_are_bounded() {
    let check = |spec: Value, expected: &str| {
        let release = json!({"apiVersion": "kumo.dev/v1", "kind": "Release", "metadata": {"name": "web-v1"}, "spec": spec});
        let got = match admit::<crate::app::Release>(release, true) {
            Ok(_) => "ok".to_string(),
            Err(errors) => crate::validation::join_errors(&errors),
        };
        assert_eq!(got, expected);
    };
    check(
        json!({"app": "web", "version": 1, "processes": {"web": {"replicas": 2}}}),
        "ok",
    );
    check(
        json!({"app": "web", "version": 0}),
        "spec.version: Invalid value: 0: must be between 1 and 999999, inclusive",
    );
    check(
        json!({"app": "web", "version": 1, "processes": {"web": {"replicas": 5000}},
               "healthcheck": {"timeoutSeconds": 9_000_000_000_000_000_000_i64}}),
        "spec.processes.web.replicas: Invalid value: 5000: must be between 0 and 1000, inclusive, \
         spec.healthcheck.timeoutSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive",
    );
}

fn content(image: &str, env: &[(&str, &str)], replicas: i32) -> ReleaseContent {
    let mut c = ReleaseContent {
        image: Some(image.into()),
        ..Default::default()
    };
    c.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c.processes.insert(
        "web".into(),
        crate::app::ProcessSpec {
            replicas,
            port: Some(8080),
            ..Default::default()
        },
    );
    c
}

#[test]
fn scaling_is_not_a_release_but_config_is() {
    let v1 = content("web:1", &[("A", "1")], 1);
    assert!(v1.same_build(&content("web:1", &[("A", "1")], 5)));
    assert!(!v1.same_build(&content("web:1", &[("A", "2")], 1)));
    assert!(!v1.same_build(&content("web:2", &[("A", "1")], 1)));
}

#[test]
fn changes_are_described() {
    let v1 = content("web:1", &[("A", "1"), ("B", "1")], 1);
    assert_eq!(v1.describe_change(None), "Deploy web:1");
    let cases = [
        (
            content("web:2", &[("A", "1"), ("B", "1")], 1),
            "Deploy web:2",
        ),
        (
            content("web:1", &[("A", "2"), ("B", "1"), ("C", "1")], 1),
            "Set A, C",
        ),
        (content("web:1", &[("A", "1")], 1), "Unset B"),
        (content("web:2", &[("B", "1")], 1), "Deploy web:2; Unset A"),
    ];
    let mut changed = v1.clone();
    changed.processes.get_mut("web").unwrap().command = vec!["./server2".into()];
    changed
        .processes
        .insert("worker".into(), Default::default());
    assert_eq!(
        changed.describe_change(Some(&v1)),
        "Change process web; Add process worker"
    );
    assert_eq!(
        v1.describe_change(Some(&changed)),
        "Change process web; Remove process worker"
    );
    for (new, expected) in cases {
        assert_eq!(new.describe_change(Some(&v1)), expected);
    }
}

#[test]
fn releases_are_immutable() {
    let old = json!({"spec": {"app": "web", "version": 1, "image": "a"}, "status": {}});
    let mut new = old.clone();
    new["status"] = json!({"phase": "Active"});
    assert!(crate::app::release_update(&old, &new).is_empty());
    new["spec"]["image"] = json!("b");
    assert_eq!(
        crate::validation::join_errors(&crate::app::release_update(&old, &new)),
        "spec: Forbidden: a release is immutable; change the app to make a new release"
    );
}

#[test]
fn readiness_probes_name_their_field() {
    let pod = |probe: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "x", "readinessProbe": probe}]}})
    };
    let got = |probe: Value| match admit::<crate::Pod>(pod(probe), true) {
        Ok(_) => "ok".to_string(),
        Err(errors) => crate::validation::join_errors(&errors),
    };
    let cases = [
        (json!({"httpGet": {"path": "/healthz"}, "timeoutSeconds": 2}), "ok"),
        (json!({"tcpSocket": {"port": 8080}}), "ok"),
        (json!({}), "spec.containers[0].readinessProbe: Invalid value: give exactly one of httpGet or tcpSocket"),
        (json!({"tcpSocket": {"port": 0}}), "spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        (json!({"httpGet": {"path": "x"}}), "spec.containers[0].readinessProbe.httpGet.path: Invalid value: \"x\": must start with '/'"),
        (json!({"tcpSocket": {}, "periodSeconds": 0}), "spec.containers[0].readinessProbe.periodSeconds: Invalid value: 0: must be between 1 and 31536000, inclusive"),
    ];
    for (probe, expected) in cases {
        assert_eq!(got(probe), expected);
    }
}
