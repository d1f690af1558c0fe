//! Image pulls: which are in flight, which failed and when to try again. The decision of what
//! a container waiting for its image should do next is pure ([`decide`]).
//!
//! Policies as in Kubernetes: `IfNotPresent` pulls a missing image; `Never` refuses a missing
//! one (`ErrImageNeverPull`); `Always` pulls once per pod (restarts of its containers reuse it).
//! A failed pull shows `ErrImagePull` with the registry's message, then `ImagePullBackOff` until
//! it is retried after `base * 2^(failures-1)`, capped at five minutes. The back-off is the pod's
//! own, as kubelet keys it by pod and image: pods pull with their own namespace's credentials,
//! and one whose pull is refused must not hold back another's. One pull of an image runs at a
//! time; pods that wait for it are queued again when it ends.

use crate::model::Waiting;
use kumo_api::pod::PullPolicy;
use kumo_api::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const REASON_ERR_IMAGE_PULL: &str = "ErrImagePull";
pub const REASON_IMAGE_PULL_BACKOFF: &str = "ImagePullBackOff";
pub const REASON_NEVER_PULL: &str = "ErrImageNeverPull";
/// The longest wait between two pulls of an image that keeps failing.
pub const MAX_PULL_BACKOFF: Duration = Duration::from_secs(300);

/// A failed pull of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub at: Time,
    pub failures: u32,
    /// Whether `ErrImagePull` was shown for it already (later: `ImagePullBackOff`).
    pub reported: bool,
}

/// The node's pulls.
#[derive(Debug, Clone, Default)]
pub struct PullTable {
    pub in_flight: BTreeSet<String>,
    /// Pods (keys) waiting for an image's pull in flight, to queue again when it ends.
    pub waiters: BTreeMap<String, BTreeSet<String>>,
    /// Failed pulls, by `(pod uid, image)`.
    pub failed: BTreeMap<(String, String), Failure>,
    /// `(pod uid, image)` pulled for a pod whose policy is `Always`.
    pub pulled_for: BTreeSet<(String, String)>,
}

impl PullTable {
    /// A pull of `image` for pod `uid` ended; returns the pods that waited for it.
    pub fn finish(
        &mut self,
        uid: &str,
        image: &str,
        result: Result<(), String>,
        now: Time,
    ) -> BTreeSet<String> {
        self.in_flight.remove(image);
        let key = (uid.to_string(), image.to_string());
        match result {
            Ok(()) => {
                self.failed.remove(&key);
                self.pulled_for.insert(key);
            }
            Err(message) => {
                let failures = self.failed.get(&key).map_or(0, |f| f.failures) + 1;
                self.failed.insert(
                    key,
                    Failure {
                        message,
                        at: now,
                        failures,
                        reported: false,
                    },
                );
            }
        }
        self.waiters.remove(image).unwrap_or_default()
    }

    /// Pod `key` waits for the pull of `image` in flight.
    pub fn wait_for(&mut self, image: &str, key: &str) {
        self.waiters
            .entry(image.to_string())
            .or_default()
            .insert(key.to_string());
    }

    /// Forgets what was pulled for pod `uid`, and its failures.
    pub fn forget_pod(&mut self, uid: &str) {
        self.pulled_for.retain(|(u, _)| u != uid);
        self.failed.retain(|(u, _), _| u != uid);
    }
}

/// What a container waiting for its image does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullStep {
    /// The image is here: go on.
    Ready,
    /// Start a pull (and show `waiting` meanwhile).
    Pull { waiting: Waiting },
    /// Wait (come back after `retry_in`, if set).
    Wait {
        waiting: Waiting,
        retry_in: Option<Duration>,
    },
}

fn waiting(reason: &str, message: String) -> Waiting {
    Waiting {
        reason: reason.to_string(),
        message: Some(message),
    }
}

/// The back-off after `failures` failed pulls.
pub fn pull_backoff(base: Duration, failures: u32) -> Duration {
    // At most 2^16 times the base, as before the curve was shared.
    kumo_client::retry::delay(base, MAX_PULL_BACKOFF, failures.min(17))
}

/// Decides for a container of pod `uid` that needs `image`. Pure.
pub fn decide(
    table: &PullTable,
    uid: &str,
    image: &str,
    policy: PullPolicy,
    present: bool,
    now: Time,
    base: Duration,
) -> PullStep {
    let pulled_for_pod = table
        .pulled_for
        .contains(&(uid.to_string(), image.to_string()));
    let needs_pull = match policy {
        PullPolicy::Never => {
            if present {
                return PullStep::Ready;
            }
            return PullStep::Wait {
                waiting: waiting(
                    REASON_NEVER_PULL,
                    format!("Container image {image:?} is not present with pull policy of Never"),
                ),
                retry_in: Some(base),
            };
        }
        PullPolicy::IfNotPresent => !present,
        PullPolicy::Always => !pulled_for_pod,
    };
    if !needs_pull {
        return PullStep::Ready;
    }
    let failure = table.failed.get(&(uid.to_string(), image.to_string()));
    if table.in_flight.contains(image) {
        let w = match failure {
            Some(f) => waiting(
                REASON_IMAGE_PULL_BACKOFF,
                format!(
                    "Back-off pulling image {image:?}: {REASON_ERR_IMAGE_PULL}: {}",
                    f.message
                ),
            ),
            None => waiting("ContainerCreating", format!("Pulling image {image:?}")),
        };
        return PullStep::Wait {
            waiting: w,
            retry_in: None,
        };
    }
    if let Some(f) = failure {
        let retry_at = f.at
            + chrono::Duration::from_std(pull_backoff(base, f.failures))
                .unwrap_or(chrono::Duration::MAX);
        if now < retry_at {
            let reason = if f.reported {
                REASON_IMAGE_PULL_BACKOFF
            } else {
                REASON_ERR_IMAGE_PULL
            };
            let message = if f.reported {
                format!(
                    "Back-off pulling image {image:?}: {REASON_ERR_IMAGE_PULL}: {}",
                    f.message
                )
            } else {
                f.message.clone()
            };
            return PullStep::Wait {
                waiting: waiting(reason, message),
                retry_in: (retry_at - now).to_std().ok(),
            };
        }
        return PullStep::Pull {
            waiting: waiting(
                REASON_IMAGE_PULL_BACKOFF,
                format!(
                    "Back-off pulling image {image:?}: {REASON_ERR_IMAGE_PULL}: {}",
                    f.message
                ),
            ),
        };
    }
    PullStep::Pull {
        waiting: waiting("ContainerCreating", format!("Pulling image {image:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::t;
    use PullPolicy::*;

    const BASE: Duration = Duration::from_secs(10);

    fn reason(step: &PullStep) -> (&str, Option<&str>, Option<Duration>) {
        match step {
            PullStep::Ready => ("Ready", None, None),
            PullStep::Pull { waiting } => ("Pull", waiting.message.as_deref(), None),
            PullStep::Wait { waiting, retry_in } => (
                waiting.reason.as_str(),
                waiting.message.as_deref(),
                *retry_in,
            ),
        }
    }

    #[test]
    fn policies() {
        let table = PullTable::default();
        let d = |policy, present| decide(&table, "u", "img:1", policy, present, t(0), BASE);
        assert_eq!(d(IfNotPresent, true), PullStep::Ready);
        assert_eq!(reason(&d(IfNotPresent, false)).0, "Pull");
        assert_eq!(reason(&d(Always, true)).0, "Pull");
        assert_eq!(
            reason(&d(Never, false)),
            (
                "ErrImageNeverPull",
                Some("Container image \"img:1\" is not present with pull policy of Never"),
                Some(BASE)
            )
        );
        assert_eq!(d(Never, true), PullStep::Ready);
        let mut pulled = PullTable::default();
        pulled.finish("u", "img:1", Ok(()), t(0));
        assert_eq!(
            decide(&pulled, "u", "img:1", Always, true, t(1), BASE),
            PullStep::Ready
        );
        assert_eq!(
            reason(&decide(&pulled, "other", "img:1", Always, true, t(1), BASE)).0,
            "Pull"
        );
    }

    #[test]
    fn failures_back_off_with_the_registry_message() {
        let mut table = PullTable::default();
        table.in_flight.insert("img:1".into());
        assert_eq!(
            reason(&decide(
                &table,
                "u",
                "img:1",
                IfNotPresent,
                false,
                t(0),
                BASE
            )),
            ("ContainerCreating", Some("Pulling image \"img:1\""), None)
        );
        table.finish("u", "img:1", Err("manifest unknown".into()), t(0));
        assert_eq!(
            reason(&decide(
                &table,
                "u",
                "img:1",
                IfNotPresent,
                false,
                t(4),
                BASE
            )),
            (
                "ErrImagePull",
                Some("manifest unknown"),
                Some(Duration::from_secs(6))
            )
        );
        table
            .failed
            .get_mut(&("u".to_string(), "img:1".to_string()))
            .expect("failed")
            .reported = true;
        assert_eq!(
            reason(&decide(
                &table,
                "u",
                "img:1",
                IfNotPresent,
                false,
                t(5),
                BASE
            )),
            (
                "ImagePullBackOff",
                Some("Back-off pulling image \"img:1\": ErrImagePull: manifest unknown"),
                Some(Duration::from_secs(5))
            )
        );
        assert_eq!(
            reason(&decide(
                &table,
                "u",
                "img:1",
                IfNotPresent,
                false,
                t(10),
                BASE
            ))
            .0,
            "Pull"
        );
        table.finish("u", "img:1", Err("manifest unknown".into()), t(10));
        assert_eq!(
            reason(&decide(
                &table,
                "u",
                "img:1",
                IfNotPresent,
                false,
                t(11),
                BASE
            ))
            .2,
            Some(Duration::from_secs(19))
        );
        assert_eq!(pull_backoff(BASE, 9), MAX_PULL_BACKOFF);
    }

    #[test]
    fn a_pods_failed_pull_holds_back_only_that_pod() {
        let mut table = PullTable::default();
        table.in_flight.insert("img:1".into());
        // Another pod asks meanwhile: it waits for this pull and is told when it ends.
        table.wait_for("img:1", "team-a/authed");
        let waiters = table.finish("anon", "img:1", Err("401 unauthorized".into()), t(0));
        assert_eq!(waiters.into_iter().collect::<Vec<_>>(), ["team-a/authed"]);
        let d = |uid| decide(&table, uid, "img:1", Always, false, t(1), BASE);
        assert_eq!(reason(&d("anon")).0, "ErrImagePull");
        assert_eq!(reason(&d("authed")).0, "Pull", "another pod pulls at once");
        table.forget_pod("anon");
        assert!(table.failed.is_empty());
        assert!(table.finish("x", "img:1", Ok(()), t(2)).is_empty());
    }
}
