//! Lease validation and MicroTime as data: a manifest in, the exact field error (or wire form) out.

use crate::kind_by_type;
use serde_json::{json, Value};

fn check(spec: Value, expected: &str) {
    let object = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "kumo-scheduler", "namespace": "kumo-system"}, "spec": spec});
    let kind = kind_by_type("coordination.k8s.io/v1", "Lease").unwrap();
    let got = match (kind.admit)(object) {
        Ok(v) => serde_json::to_string(&v["spec"]).unwrap(),
        Err(errors) => crate::validation::join_errors(&errors),
    };
    assert_eq!(got, expected);
}

#[test]
fn leases_admit_and_reject_with_field_paths() {
    let cases = [
        (json!({}), "{}"),
        (
            json!({"holderIdentity": "host-a:6443", "leaseDurationSeconds": 15,
                "acquireTime": "2026-12-07T15:00:00Z", "renewTime": "2026-12-07T15:00:02.5+01:00",
                "leaseTransitions": 3}),
            r#"{"holderIdentity":"host-a:6443","leaseDurationSeconds":15,"acquireTime":"2026-12-07T15:00:00.000000Z","renewTime":"2026-12-07T14:00:02.500000Z","leaseTransitions":3}"#,
        ),
        (
            json!({"leaseDurationSeconds": 0}),
            "spec.leaseDurationSeconds: Invalid value: 0: must be between 1 and 31536000, inclusive",
        ),
        (
            json!({"leaseDurationSeconds": -5}),
            "spec.leaseDurationSeconds: Invalid value: -5: must be between 1 and 31536000, inclusive",
        ),
        (
            json!({"leaseTransitions": -1}),
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            json!({"holderIdentity": "x".repeat(1025)}),
            "spec.holderIdentity: Too long: must have at most 1024 bytes",
        ),
        (
            json!({"renewTime": "yesterday"}),
            r#"spec.renewTime: invalid time "yesterday": premature end of input"#,
        ),
        (
            json!({"holder": "a"}),
            "spec.holder: unknown field `holder`, expected one of `holderIdentity`, `leaseDurationSeconds`, `acquireTime`, `renewTime`, `leaseTransitions`",
        ),
    ];
    for (spec, expected) in cases {
        check(spec, expected);
    }
}
