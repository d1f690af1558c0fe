//! Property tests of every parser in kumo-api that takes outside input: quantities, label and
//! field selectors, the admission of every kind (arbitrary JSON, arbitrary bytes, and valid
//! manifests with one part replaced), updates, merge patches and dataset manifests. Each must
//! answer Ok or Err, never panic; where text round-trips, it must.

use kumo_api::dataset::Manifest;
use kumo_api::quantity::MAX_MILLIS;
use kumo_api::{kinds, FieldSelector, LabelSelector, Quantity};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

/// Cases per property: enough to find the panics fixed so far, small enough for CI.
fn config() -> Config {
    Config::with_cases(384)
}

/// Strings from `alphabet`, up to `max` characters.
fn text_of(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..=max).prop_map(String::from_iter)
}

/// Any characters (control, non-ASCII and surrogate-free Unicode included).
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Text as the parsers meet it: mostly their own punctuation and words, some anything.
fn input_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text_of("0123456789.mkMGTPEi-+e ,=!() abinotxyz/_", 40),
        1 => any_text(24),
    ]
}

/// Strings that are worth putting in a manifest: names, quantities, paths, junk.
fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "a",
            "web",
            "default",
            "kube-system",
            "1",
            "500m",
            "2Gi",
            "-1",
            "170141183460469231731687303715.884105727",
            "9223372036854775807",
            "1e308",
            "9999999999Ei",
            "0.0000000001",
            "nvidia.com/gpu",
            "cpu",
            "memory",
            "Always",
            "Never",
            "OnFailure",
            "IfNotPresent",
            "runc",
            "runsc",
            "process",
            "/",
            "../x",
            "/data",
            "busybox:1.36",
            "TCP",
            "NoSchedule",
            "Exists",
            "Equal",
            "BlueGreen",
        ])
        .prop_map(str::to_string),
        any_text(12),
    ]
}

/// Field names of kumo's kinds, so that arbitrary objects reach past the first unknown field.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "apiVersion", "kind", "metadata", "name", "namespace", "labels", "annotations",
            "generateName", "spec", "status", "containers", "image", "command", "args", "env",
            "value", "resources", "requests", "limits", "cpu", "memory", "nvidia.com/gpu",
            "ports", "containerPort", "hostPort", "volumes", "volumeMounts", "mountPath",
            "emptyDir", "sizeLimit", "hostPath", "path", "restartPolicy", "nodeName",
            "runtimeClassName", "terminationGracePeriodSeconds", "tolerations", "key",
            "operator", "effect", "securityContext", "runAsUser", "privileged",
            "readinessProbe", "httpGet", "port", "parallelism", "gpus", "maxRetries",
            "processes", "replicas", "domains", "deploy", "gpuQuota", "data", "stringData",
            "type", "capacity", "allocatable", "taints", "unschedulable", "files", "size",
            "chunks", "mode", "dataset", "output", "queue", "priority", "timeoutSeconds",
        ])
        .prop_map(str::to_string),
        1 => any_text(8),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.5, -0.5, 1e308, -1e308, 1e-12, 3.0, 1.5e19])
            .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid manifest of every kind, with the fields validation looks deepest into.
fn valid_manifests() -> Vec<Value> {
    let container = json!({
        "name": "main", "image": "busybox:1.36", "command": ["/bin/sh", "-c", "true"],
        "env": [{"name": "A", "value": "1"}],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                      "limits": {"cpu": "500m", "memory": "64Mi", "nvidia.com/gpu": "1"}},
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
    });
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team-a", "labels": {"a": "b"}}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
               "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
               "status": {"capacity": {"cpu": "4", "memory": "8Gi"}}}),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"runtimeClassName": "runc", "restartPolicy": "Always",
                        "containers": [container],
                        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
                        "tolerations": [{"key": "k", "operator": "Exists"}]}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
               "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Started",
               "message": "started"}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "stringData": {"password": "hunter2"}, "data": {"token": "dG9rZW4="}}),
        json!({"apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "hello"},
               "spec": {"runtimeClassName": "process",
                        "processes": {"web": {"replicas": 3, "command": ["python3"]}},
                        "env": {"GREETING": "hi"}, "domains": ["hello.localhost"],
                        "healthcheck": {"path": "/", "timeoutSeconds": 2},
                        "deploy": {"strategy": "BlueGreen", "drainSeconds": 5}}}),
        json!({"apiVersion": "kumo.dev/v1", "kind": "Release", "metadata": {"name": "hello-v1"},
               "spec": {"app": "hello", "version": 1}}),
        json!({"apiVersion": "kumo.dev/v1", "kind": "MLTask", "metadata": {"name": "train"},
               "spec": {"runtimeClassName": "process", "command": ["/bin/sh"],
                        "parallelism": 2, "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
                        "maxRetries": 1, "data": {"dataset": "imagenet"},
                        "output": {"path": "models/a"}, "scratch": {"sizeLimit": "1Gi"},
                        "nodeSelector": {"pool": "gpu"}}}),
        json!({"apiVersion": "kumo.dev/v1", "kind": "Queue", "metadata": {"name": "research"},
               "spec": {"gpuQuota": 4}}),
    ]
}

/// Replaces (or with `delete`, removes) the part of `value` that `steps` lead to: each step
/// picks a child of an object or array, modulo its size.
fn mutate(value: &mut Value, steps: &[usize], replacement: Value, delete: bool) {
    let Some((&step, rest)) = steps.split_first() else {
        *value = replacement;
        return;
    };
    let last = rest.is_empty();
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(step % map.len())
                .cloned()
                .unwrap_or_default();
            if last && delete {
                map.remove(&key);
            } else if let Some(child) = map.get_mut(&key) {
                mutate(child, rest, replacement, delete);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            if last && delete {
                items.remove(step % n);
            } else {
                mutate(&mut items[step % n], rest, replacement, delete);
            }
        }
        _ => *value = replacement,
    }
}

/// Admits `value` as every kind; each answers, none panics (a panic fails the property).
fn admit_as_every_kind(value: &Value) {
    for kind in kinds() {
        let _ = (kind.admit)(value.clone());
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn quantities_parse_or_fail_without_panicking(text in input_text()) {
        if let Ok(q) = Quantity::parse(&text) {
            prop_assert!((0..=MAX_MILLIS).contains(&q.millis()), "{text:?} -> {}", q.millis());
            prop_assert_eq!(q.as_str(), text.as_str());
        }
    }

    /// Well-formed numbers: in bounds and close to the value, or an error naming the text.
    #[test]
    fn quantities_are_exact_or_refused(
        whole in text_of("0123456789", 30),
        frac in text_of("0123456789", 9),
        dot in any::<bool>(),
        suffix in prop::sample::select(vec!["", "m", "k", "M", "G", "T", "P", "E",
                                            "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
    ) {
        prop_assume!(!whole.is_empty() || (dot && !frac.is_empty()));
        let text = if dot { format!("{whole}.{frac}{suffix}") } else { format!("{whole}{suffix}") };
        let number: f64 = format!("0{whole}.{}0", if dot { frac.as_str() } else { "" })
            .parse()
            .unwrap();
        let scale: f64 = match suffix {
            "" => 1.0, "m" => 1e-3, "k" => 1e3, "M" => 1e6, "G" => 1e9, "T" => 1e12,
            "P" => 1e15, "E" => 1e18, "Ki" => 1024.0, "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3), "Ti" => 1024f64.powi(4), "Pi" => 1024f64.powi(5),
            _ => 1024f64.powi(6),
        };
        let expected = number * scale * 1000.0;
        match Quantity::parse(&text) {
            Ok(q) => {
                let got = q.millis() as f64;
                prop_assert!(got >= expected * (1.0 - 1e-12) && got <= expected.ceil() * (1.0 + 1e-12) + 1.0,
                    "{text}: {got} for {expected}");
            }
            Err(e) => {
                prop_assert!(expected > 9.2e18, "{text} ({expected}) refused: {e}");
                let message = e.to_string();
                prop_assert!(message.contains(&format!("invalid quantity {text:?}")), "{message}");
            }
        }
    }

    #[test]
    fn quantities_round_trip_through_their_text(millis in 0..=i64::MAX) {
        let q = Quantity::from_millis(millis);
        prop_assert_eq!(Quantity::parse(q.as_str()).unwrap().millis(), i128::from(millis));
        let json = serde_json::to_string(&q).unwrap();
        prop_assert_eq!(serde_json::from_str::<Quantity>(&json).unwrap().millis(), i128::from(millis));
    }

    #[test]
    fn label_selectors_parse_or_fail_and_print_back(text in input_text()) {
        if let Ok(selector) = LabelSelector::parse(&text) {
            let printed = selector.to_string();
            let again = LabelSelector::parse(&printed);
            prop_assert_eq!(again, Ok(selector), "{:?} printed {:?}", text, printed);
        }
    }

    /// A selector built from valid keys and values prints to text that parses back to it.
    #[test]
    fn label_selectors_round_trip(
        reqs in prop::collection::vec(
            (0..6u8, text_of("abcxyz", 3), text_of("abcxyz019", 4), prop::collection::vec(text_of("abc19", 3), 0..3)),
            0..5,
        ),
    ) {
        let mut parts = Vec::new();
        for (op, key, value, set) in &reqs {
            let key = format!("k{key}");
            let set: Vec<&str> = set.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
            parts.push(match op {
                0 => format!("{key}={value}"),
                1 => format!("{key}!={value}"),
                2 => format!("{key} in ({})", set.join(",")),
                3 => format!("{key} notin ({})", set.join(",")),
                4 => key,
                _ => format!("!{key}"),
            });
        }
        let text = parts.join(",");
        let selector = LabelSelector::parse(&text).unwrap();
        prop_assert_eq!(selector.to_string(), text);
    }

    #[test]
    fn field_selectors_parse_or_fail_and_match_anything(text in input_text(), object in json_value()) {
        if let Ok(selector) = FieldSelector::parse(&text) {
            let _ = selector.matches(&object);
        }
    }

    #[test]
    fn field_selectors_round_trip(
        reqs in prop::collection::vec(
            (prop::collection::vec(text_of("abcxyzN", 4).prop_filter("a segment", |s| !s.is_empty()), 1..4),
             any::<bool>(), text_of("abcxyz019-", 6)),
            1..4,
        ),
    ) {
        let text = reqs
            .iter()
            .map(|(path, eq, value)| format!("{}{}{value}", path.join("."), if *eq { "=" } else { "!=" }))
            .collect::<Vec<_>>()
            .join(",");
        let selector = FieldSelector::parse(&text).unwrap();
        prop_assert_eq!(selector.to_string(), text.clone());
        prop_assert_eq!(FieldSelector::parse(&selector.to_string()).unwrap(), selector);
    }

    #[test]
    fn arbitrary_json_is_admitted_or_refused(value in json_value()) {
        admit_as_every_kind(&value);
    }

    #[test]
    fn arbitrary_bytes_are_admitted_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            admit_as_every_kind(&value);
        }
    }

    /// Valid manifests with one part replaced or removed: reaches validation's deeper checks.
    #[test]
    fn mutated_manifests_are_admitted_or_refused(
        which in 0..9usize,
        steps in prop::collection::vec(any::<usize>(), 1..7),
        replacement in json_value(),
        delete in any::<bool>(),
    ) {
        let bases = valid_manifests();
        let base = &bases[which % bases.len()];
        let mut value = base.clone();
        mutate(&mut value, &steps, replacement, delete);
        let kind = kinds()
            .iter()
            .find(|k| Some(k.kind) == base["kind"].as_str())
            .expect("every base names a served kind");
        let _ = (kind.admit)(value.clone());
        let _ = (kind.validate_update)(base, &value);
        let _ = (kind.validate_update)(&value, base);
    }

    #[test]
    fn merge_patches_apply_to_anything(mut target in json_value(), patch in json_value()) {
        kumo_api::patch::merge_patch(&mut target, &patch);
    }

    #[test]
    fn dataset_manifests_are_checked_without_panicking(value in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let parsed = [serde_json::from_value::<Manifest>(value), serde_json::from_slice::<Manifest>(&bytes)];
        for manifest in parsed.into_iter().flatten() {
            if manifest.validate().is_ok() {
                let _ = (manifest.size(), manifest.blobs(), manifest.digest());
            }
        }
    }

    /// Generated dataset manifests: paths of every shape, sizes up to u64::MAX.
    #[test]
    fn generated_dataset_manifests_are_checked(
        files in prop::collection::vec(
            (text_of("ab./", 8), prop_oneof![0..20_000_000u64, Just(u64::MAX), Just(u64::MAX / 2)],
             any::<u32>(), 0..6usize, any::<bool>()),
            0..6,
        ),
    ) {
        let digest = "a".repeat(64);
        let files: Vec<Value> = files
            .into_iter()
            .map(|(path, size, mode, chunks, good)| {
                let chunk = if good { digest.clone() } else { "A".repeat(64) };
                json!({"path": path, "size": size, "mode": mode, "chunks": vec![chunk; chunks]})
            })
            .collect();
        let manifest: Manifest = serde_json::from_value(json!({ "files": files })).unwrap();
        if manifest.validate().is_ok() {
            let _ = (manifest.size(), manifest.blobs(), manifest.digest());
        }
    }
}

#[test]
fn every_base_manifest_is_valid() {
    let mut refused = Vec::new();
    for base in valid_manifests() {
        let kind = kinds()
            .iter()
            .find(|k| Some(k.kind) == base["kind"].as_str())
            .unwrap();
        if let Err(errors) = (kind.admit)(base.clone()) {
            refused.push(format!("{}: {errors:?}", kind.kind));
        }
    }
    assert!(refused.is_empty(), "{refused:#?}");
}

/// The issue's value passed validation as a negative CPU request in release builds.
#[test]
fn the_issues_quantity_is_refused_naming_its_field() {
    let pod = kinds().iter().find(|k| k.kind == "Pod").unwrap();
    let value = "170141183460469231731687303715.884105727";
    let mut manifest = valid_manifests()[2].clone();
    manifest["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!(value);
    let errors = (pod.admit)(manifest).unwrap_err();
    let text = kumo_api::validation::join_errors(&errors);
    assert!(
        text.contains(&format!(
            "spec.containers[0].resources.requests.cpu: invalid quantity {value:?}: larger than the largest quantity"
        )),
        "{text}"
    );
}
