//! The `ReplicaFailure` condition (Deployment's of that name) that an owner of replica pods
//! (an App, an MLTask) carries while the API refuses to create them, e.g. because the pod
//! security level of their namespace forbids what they ask for. Pure.

use kumo_api::meta::{set_condition, Condition, Time};
use kumo_api::{App, ConditionStatus, MLTask, Resource};
use kumo_client::{Client, ClientError, Informer};

/// The condition's type.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
/// Its reason while replicas are refused.
pub const FAILED_CREATE: &str = "FailedCreate";

/// Whether a create's error is the API refusing the pod itself (a 4xx other than the 409 of a
/// pod that already exists), rather than a fault to retry quietly.
pub fn is_refusal(e: &ClientError) -> bool {
    e.code()
        .is_some_and(|c| (400..500).contains(&c) && c != 409)
}

/// Sets the condition to the refusal's message, or removes it (`None`: a replica was created).
/// Returns whether the conditions changed.
pub fn set(conditions: &mut Vec<Condition>, refusal: Option<&str>, now: Time) -> bool {
    match refusal {
        Some(message) => set_condition(
            conditions,
            Condition::new(
                REPLICA_FAILURE,
                ConditionStatus::True,
                Some(FAILED_CREATE),
                Some(message.to_string()),
                now,
            ),
        ),
        None => {
            let before = conditions.len();
            conditions.retain(|c| c.type_ != REPLICA_FAILURE);
            conditions.len() != before
        }
    }
}

/// An owner of replica pods whose status carries conditions.
pub trait Owner: Resource {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

impl Owner for App {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.status.get_or_insert_with(Default::default).conditions
    }
}

impl Owner for MLTask {
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.status.get_or_insert_with(Default::default).conditions
    }
}

/// Sets (or, with `None`, clears) the condition on the latest copy of owner `key` the informer
/// has, and writes its status when that changes it; a conflicting write is left to the next
/// refusal, which sets it again. Clearing an owner that has no such condition (every created
/// replica) costs a lookup, no copy.
pub async fn mark<K: Owner>(
    client: &Client,
    owners: &Informer<K>,
    key: &str,
    refusal: Option<&str>,
) {
    let Some(shared) = owners.get_shared(key) else {
        return;
    };
    let mut conditions = shared.conditions().to_vec();
    if !set(&mut conditions, refusal, chrono::Utc::now()) {
        return;
    }
    let mut owner = K::clone(&shared);
    *owner.conditions_mut() = conditions;
    match client.update_status(&owner).await {
        Ok(stored) => owners.assume(stored),
        Err(e) => {
            tracing::debug!(owner = key, error = %e, "cannot write the ReplicaFailure condition")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_cleared() {
        let now = chrono::Utc::now();
        let mut c = Vec::new();
        assert!(set(&mut c, Some("pods \"a-1\" is forbidden"), now));
        assert!(!set(&mut c, Some("pods \"a-1\" is forbidden"), now));
        assert_eq!(c[0].type_, REPLICA_FAILURE);
        assert_eq!(c[0].reason.as_deref(), Some(FAILED_CREATE));
        assert!(set(&mut c, None, now));
        assert!(c.is_empty());
        assert!(!set(&mut c, None, now));
    }
}
