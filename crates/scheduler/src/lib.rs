//! The scheduler: a pure placement core (`core`) and the loop that binds pods (`run`).

pub mod core;
pub mod run;

pub use core::{place, NodeView, Resources, Strategy, Unschedulable};
pub use run::{run, SchedulerConfig};
