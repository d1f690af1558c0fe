//! The Lease kind (`coordination.k8s.io/v1`): who holds a named lock, and until when.
//!
//! Leader election rests on it: an elector reads the Lease, and writes it back conditional on
//! the `resourceVersion` it read, so that of two electors racing for it exactly one wins.

use crate::bounds::{check_range, MAX_DURATION_SECONDS};
use crate::meta::{ObjectMeta, Time};
use crate::validation::Errors;
use serde::{Deserialize, Serialize};

/// The API group of Leases.
pub const GROUP: &str = "coordination.k8s.io";
/// The longest holder identity accepted (a host name and a listen address fit many times).
pub const MAX_HOLDER_LEN: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lease {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeaseSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSpec {
    /// Who holds the lease; absent or empty when nobody does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired it (MicroTime).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "micro_time")]
    pub acquire_time: Option<Time>,
    /// When the current holder last renewed it (MicroTime).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "micro_time")]
    pub renew_time: Option<Time>,
    /// How many times the lease changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
}

impl LeaseSpec {
    /// The holder, `None` when the lease is free (absent or empty identity).
    pub fn holder(&self) -> Option<&str> {
        self.holder_identity.as_deref().filter(|h| !h.is_empty())
    }
}

/// Checks a Lease's spec, naming field paths.
pub fn validate_lease(lease: &Lease, errors: &mut Errors) {
    let spec = &lease.spec;
    if let Some(h) = &spec.holder_identity {
        if h.len() > MAX_HOLDER_LEN {
            errors.add(
                "spec.holderIdentity",
                format!("Too long: must have at most {MAX_HOLDER_LEN} bytes"),
            );
        }
    }
    if let Some(d) = spec.lease_duration_seconds {
        check_range(
            errors,
            "spec.leaseDurationSeconds",
            i64::from(d),
            1,
            MAX_DURATION_SECONDS,
        );
    }
    if let Some(t) = spec.lease_transitions {
        if t < 0 {
            errors.add(
                "spec.leaseTransitions",
                format!("Invalid value: {t}: must be greater than or equal to 0"),
            );
        }
    }
}

/// `MicroTime` on the wire: RFC 3339 with exactly six fractional digits, as Kubernetes writes it.
/// Any RFC 3339 time is read.
pub mod micro_time {
    use crate::meta::Time;
    use chrono::{DateTime, SecondsFormat};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Formats a time as a MicroTime.
    pub fn format(t: &Time) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub fn serialize<S: Serializer>(t: &Option<Time>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Some(t.to_utc()))
            .map_err(|e| serde::de::Error::custom(format!("invalid time {text:?}: {e}")))
    }
}
