//! The scheduler: a pure placement core (`core`) and the loop that binds pods (`run`).

pub mod cluster;
pub mod core;
pub mod run;

pub use cluster::{feasible_nodes_to_find, Cluster};
pub use core::{place, place_gang, NodeView, Resources, Strategy, Unschedulable};
pub use run::{run, SchedulerConfig};
