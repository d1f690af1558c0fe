//! Reconcile loops that keep the cluster's actual state moving toward what the API says.
//!
//! Each controller is level-triggered: informer → de-duplicating queue → reconcile that
//! returns when to look again. The decisions are pure functions; IO stays at the edges.

pub mod apps;
pub mod event_ttl;
pub mod mltask;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replica_failure;
