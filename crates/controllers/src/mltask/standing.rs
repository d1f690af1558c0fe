//! How often a waiting task's place in line and reason are written. Pure.
//!
//! A long queue shifts with every admission, and rewriting every waiting task each time would
//! cost a write per waiting task per admission: a change of `queuePosition` or `pendingReason`
//! alone is written at most every second for the first three in line, every five seconds up to
//! position 100 and every thirty seconds beyond (a thousand queued tasks used to cost three
//! writes each while they waited, more than their whole run). The pass applies this before it
//! builds any write, so a held-back change costs a comparison, not a copy of the task.
//!
//! An admitted task's replica pods showing up `Pending` is held back the same way (for a second):
//! the admission write already says where each replica goes, and a short task's next write
//! (Running, or Succeeded) comes sooner; a replica still pending after a second is written then.

use kumo_api::mltask::{MLTaskStatus, ReplicaStatus, TaskPhase};
use kumo_api::{PodPhase, Time};
use std::collections::BTreeMap;
use std::time::Duration;

/// Whether `new` differs from `old` only in where the task stands in its queue and why, or in
/// replicas whose pods were first seen `Pending`.
/// (Field by field rather than on copies: a long queue asks this of every waiting task per pass;
/// the destructuring makes a new status field a compile error here until it is compared.)
pub fn only_standing_changed(old: Option<&MLTaskStatus>, new: &MLTaskStatus) -> bool {
    let Some(old) = old else {
        return false;
    };
    let MLTaskStatus {
        phase,
        queue_position: _,
        pending_reason: _,
        attempts,
        start_time,
        completion_time,
        conditions,
        replicas,
        message,
        master_addr,
        retry_at,
        submit_revision,
    } = new;
    *phase == old.phase
        && *attempts == old.attempts
        && *start_time == old.start_time
        && *completion_time == old.completion_time
        && *conditions == old.conditions
        && replicas_only_appeared(&old.replicas, replicas)
        && *message == old.message
        && *master_addr == old.master_addr
        && *retry_at == old.retry_at
        && *submit_revision == old.submit_revision
}

/// Whether `new` replicas are `old` ones, but for pods first seen `Pending`.
fn replicas_only_appeared(old: &[ReplicaStatus], new: &[ReplicaStatus]) -> bool {
    old.len() == new.len()
        && old.iter().zip(new).all(|(o, n)| {
            let ReplicaStatus {
                rank,
                pod,
                node,
                gpus,
                phase,
                exit_code,
                gpu_usage,
            } = n;
            (*phase == o.phase || (o.phase.is_none() && *phase == Some(PodPhase::Pending)))
                && *rank == o.rank
                && *pod == o.pod
                && *node == o.node
                && *gpus == o.gpus
                && *exit_code == o.exit_code
                && *gpu_usage == o.gpu_usage
        })
}

/// How long a task's queue position and reason (or its replicas' first `Pending`) may lag
/// behind; the nearer the front, the fresher.
pub fn standing_interval(new: &MLTaskStatus) -> Duration {
    if new.phase == TaskPhase::Admitted {
        return Duration::from_secs(1);
    }
    match new.queue_position {
        Some(p) if p <= 3 => Duration::from_secs(1),
        Some(p) if p > 100 => LONGEST_INTERVAL,
        _ => Duration::from_secs(5),
    }
}

/// The longest `standing_interval`: a write older than this holds nothing back.
pub const LONGEST_INTERVAL: Duration = Duration::from_secs(30);

/// When `new` may be written, if it must wait: it changes only the task's standing, and the
/// task's status was written (`written`: by key, when) less than its interval ago.
pub fn held_until(
    key: &str,
    old: Option<&MLTaskStatus>,
    new: &MLTaskStatus,
    written: &BTreeMap<String, Time>,
    now: Time,
) -> Option<Time> {
    let at = *written.get(key)?;
    let interval = chrono::Duration::from_std(standing_interval(new)).ok()?;
    (now - at < interval && only_standing_changed(old, new)).then(|| at + interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn only_a_changed_standing_is_throttled() {
        let waiting = |p: u32, reason: &str| MLTaskStatus {
            queue_position: Some(p),
            pending_reason: Some(reason.into()),
            ..Default::default()
        };
        assert!(only_standing_changed(
            Some(&waiting(5, "a")),
            &waiting(4, "b")
        ));
        let mut admitted = waiting(1, "a");
        admitted.phase = kumo_api::mltask::TaskPhase::Admitted;
        assert!(!only_standing_changed(Some(&waiting(1, "a")), &admitted));
        assert!(!only_standing_changed(None, &waiting(1, "a")));
        assert_eq!(standing_interval(&waiting(2, "a")), Duration::from_secs(1));
        assert_eq!(standing_interval(&waiting(40, "a")), Duration::from_secs(5));
        assert_eq!(
            standing_interval(&waiting(100, "a")),
            Duration::from_secs(5)
        );
        assert_eq!(
            standing_interval(&waiting(101, "a")),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn a_standing_change_waits_out_its_interval() {
        let t = |s: i64| chrono::Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
        let waiting = |p: u32| MLTaskStatus {
            queue_position: Some(p),
            ..Default::default()
        };
        let written: BTreeMap<String, Time> = [("default/a".to_string(), t(0))].into();
        let held = |p: u32, now: i64| {
            held_until(
                "default/a",
                Some(&waiting(9)),
                &waiting(p),
                &written,
                t(now),
            )
        };
        assert_eq!(held(8, 2), Some(t(5)));
        assert_eq!(held(8, 5), None);
        assert_eq!(
            held(2, 0),
            Some(t(1)),
            "the next few in line are kept fresher"
        );
        assert_eq!(
            held_until("default/b", Some(&waiting(9)), &waiting(8), &written, t(1)),
            None,
            "never written by this controller: written now"
        );
        let mut admitted = waiting(9);
        admitted.phase = kumo_api::mltask::TaskPhase::Admitted;
        assert_eq!(
            held_until("default/a", Some(&waiting(9)), &admitted, &written, t(1)),
            None
        );
    }

    #[test]
    fn replica_pods_first_seen_pending_wait_a_second() {
        let t = |ms: i64| {
            chrono::Utc
                .timestamp_millis_opt(1_700_000_000_000 + ms)
                .unwrap()
        };
        let replica = |phase: Option<PodPhase>| ReplicaStatus {
            rank: 0,
            pod: "a-0".into(),
            node: Some("n1".into()),
            phase,
            ..Default::default()
        };
        let admitted = |phase: Option<PodPhase>| MLTaskStatus {
            phase: TaskPhase::Admitted,
            replicas: vec![replica(phase)],
            ..Default::default()
        };
        let written: BTreeMap<String, Time> = [("default/a".to_string(), t(0))].into();
        let held = |old: Option<PodPhase>, new: Option<PodPhase>, now: i64| {
            held_until(
                "default/a",
                Some(&admitted(old)),
                &admitted(new),
                &written,
                t(now),
            )
        };
        assert_eq!(held(None, Some(PodPhase::Pending), 300), Some(t(1000)));
        assert_eq!(held(None, Some(PodPhase::Pending), 1000), None);
        assert_eq!(
            held(None, Some(PodPhase::Running), 300),
            None,
            "a running replica is news"
        );
        assert_eq!(held(Some(PodPhase::Pending), None, 300), None);
        let mut moved = admitted(Some(PodPhase::Pending));
        moved.replicas[0].node = Some("n2".into());
        assert_eq!(
            held_until("default/a", Some(&admitted(None)), &moved, &written, t(300)),
            None
        );
    }
}
