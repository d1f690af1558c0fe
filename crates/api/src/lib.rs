//! kumo's API types: kinds, metadata, quantities, selectors and validation. Pure: no IO, no clock.
//!
//! These are the only serde wire types; every component speaks them.

pub mod app;
pub mod audit;
pub mod bounds;
pub mod cidr;
pub mod dataset;
pub mod event;
pub mod exec;
pub mod gpu_usage;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod mltask;
pub mod namespace;
pub mod node;
pub mod object;
pub mod patch;
pub mod pod;
pub mod pod_security;
pub mod quantity;
pub mod rbac;
pub mod rbac_defaults;
pub mod secret;
pub mod selector;
pub mod service_account;
pub mod status;
pub mod token;
pub mod user;
pub mod validation;

pub use app::{App, Release};
pub use event::{Event, EventSource};
pub use lease::Lease;
pub use meta::{Condition, ConditionStatus, ObjectMeta, ObjectReference, OwnerReference, Time};
pub use mltask::{MLTask, Queue};
pub use namespace::Namespace;
pub use node::Node;
pub use object::{kind_by_name, kind_by_plural, kind_by_type, kinds, KindInfo, Resource};
pub use pod::{Pod, PodPhase, RestartPolicy, GPU_RESOURCE};
pub use quantity::Quantity;
pub use secret::Secret;
pub use selector::{FieldSelector, LabelSelector};
pub use service_account::{ServiceAccount, TokenRequest};
pub use status::{ObjectList, Status, WatchEvent, WatchEventType};
pub use token::Token;
pub use user::UserInfo;
pub use validation::FieldError;

/// The namespace objects go to when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The namespace of the control plane's own objects (its Leases), made at server start.
pub const SYSTEM_NAMESPACE: &str = "kumo-system";
/// The version of this build, reported by `/version` and `kumo version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod mltask_tests;
