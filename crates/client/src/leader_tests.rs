//! The election decision and the timing checks as data.

use crate::leader::{decide, Decision, Timing, TimingError};
use kumo_api::lease::LeaseSpec;
use kumo_api::Time;
use serde_json::{json, Value};
use std::time::Duration;

const NOW: &str = "2026-12-07T15:00:20Z";

fn t(s: &str) -> Time {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// `current` is the Lease's spec as JSON (`null`: no Lease); `expected` the decision, with a
/// written spec as JSON.
fn check(current: Value, expected: Value) {
    let spec: Option<LeaseSpec> = serde_json::from_value(current).unwrap();
    let got = match decide(spec.as_ref(), "me", &Timing::default(), t(NOW)) {
        Decision::Create(s) => json!({"create": s}),
        Decision::Write(s) => json!({"write": s}),
        Decision::Held { holder, expires } => json!({"held": holder, "expires": expires
            .map(|e| kumo_api::lease::micro_time::format(&e))}),
    };
    assert_eq!(got, expected, "{spec:?}");
}

#[test]
fn decisions() {
    let mine = |acquired: &str, transitions: i32| {
        json!({"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": acquired,
            "renewTime": "2026-12-07T15:00:20.000000Z", "leaseTransitions": transitions})
    };
    let cases = [
        // Absent: created, no transition yet.
        (
            Value::Null,
            json!({"create": mine("2026-12-07T15:00:20.000000Z", 0)}),
        ),
        // Ours: renewed, keeping when it was acquired and the count.
        (
            json!({"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-12-07T14:00:00Z",
                "renewTime": "2026-12-07T15:00:18Z", "leaseTransitions": 4}),
            json!({"write": mine("2026-12-07T14:00:00.000000Z", 4)}),
        ),
        // Ours even when expired (a restarted server with the same identity takes it back).
        (
            json!({"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "2026-12-07T14:00:00Z",
                "renewTime": "2026-12-07T14:00:00Z", "leaseTransitions": 4}),
            json!({"write": mine("2026-12-07T14:00:00.000000Z", 4)}),
        ),
        // Another's, renewed 5 s ago: held until renewTime + its duration.
        (
            json!({"holderIdentity": "other", "leaseDurationSeconds": 15,
                "renewTime": "2026-12-07T15:00:15Z", "leaseTransitions": 2}),
            json!({"held": "other", "expires": "2026-12-07T15:00:30.000000Z"}),
        ),
        // The holder's own duration counts, not ours.
        (
            json!({"holderIdentity": "other", "leaseDurationSeconds": 60,
                "renewTime": "2026-12-07T14:59:30Z"}),
            json!({"held": "other", "expires": "2026-12-07T15:00:30.000000Z"}),
        ),
        // Expiring exactly now: taken.
        (
            json!({"holderIdentity": "other", "leaseDurationSeconds": 15,
                "renewTime": "2026-12-07T15:00:05Z", "leaseTransitions": 2}),
            json!({"write": mine("2026-12-07T15:00:20.000000Z", 3)}),
        ),
        // Expired: taken, one more transition.
        (
            json!({"holderIdentity": "other", "leaseDurationSeconds": 15,
                "renewTime": "2026-12-07T14:00:00Z", "leaseTransitions": 2}),
            json!({"write": mine("2026-12-07T15:00:20.000000Z", 3)}),
        ),
        // Released (holder cleared): taken at once.
        (
            json!({"leaseDurationSeconds": 1, "renewTime": "2026-12-07T15:00:19Z", "leaseTransitions": 7}),
            json!({"write": mine("2026-12-07T15:00:20.000000Z", 8)}),
        ),
        (
            json!({"holderIdentity": "", "renewTime": "2026-12-07T15:00:19Z"}),
            json!({"write": mine("2026-12-07T15:00:20.000000Z", 1)}),
        ),
        // Another holder that never renewed: expired.
        (
            json!({"holderIdentity": "other"}),
            json!({"write": mine("2026-12-07T15:00:20.000000Z", 1)}),
        ),
        // The count saturates.
        (
            json!({"leaseTransitions": 2147483647}),
            json!({"write": mine("2026-12-07T15:00:20.000000Z", 2147483647)}),
        ),
    ];
    for (current, expected) in cases {
        check(current, expected);
    }
    // A renew time at the calendar's end never expires (no overflow, no panic).
    let far = LeaseSpec {
        holder_identity: Some("other".into()),
        lease_duration_seconds: Some(i32::MAX),
        renew_time: Some(Time::MAX_UTC),
        ..LeaseSpec::default()
    };
    assert_eq!(
        decide(Some(&far), "me", &Timing::default(), t(NOW)),
        Decision::Held {
            holder: "other".into(),
            expires: None
        }
    );
}

#[test]
fn timings() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    let check = |lease, renew, retry, expected: Result<(), &str>| {
        let timing = Timing {
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        };
        assert_eq!(
            timing.check().map_err(|e: TimingError| e.to_string()),
            expected.map_err(str::to_string),
            "{timing:?}"
        );
    };
    check(s(15), s(10), s(2), Ok(()));
    check(s(2), ms(1500), ms(200), Ok(()));
    check(
        s(10),
        s(10),
        s(2),
        Err("renew deadline (10s) must be shorter than the lease duration (10s)"),
    );
    check(
        s(15),
        s(10),
        s(10),
        Err("retry period (10s) must be above zero and shorter than the renew deadline (10s)"),
    );
    check(
        s(15),
        s(10),
        s(0),
        Err("retry period (0ns) must be above zero and shorter than the renew deadline (10s)"),
    );
    check(
        ms(1500),
        s(1),
        ms(100),
        Err("lease duration must be a whole number of seconds between 1s and 31536000s, got 1.5s"),
    );
    check(
        s(0),
        s(0),
        s(0),
        Err("lease duration must be a whole number of seconds between 1s and 31536000s, got 0ns"),
    );
    assert_eq!(Timing::default().check(), Ok(()));
}
