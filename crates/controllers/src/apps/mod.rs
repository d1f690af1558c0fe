//! The app controller: turns each change of an App into the next immutable Release and rolls
//! releases out blue-green (start the new replicas, switch when all are ready, drain, remove),
//! abandoning a release that does not become ready in time.
//!
//! `plan` is the pure core (App + its Releases + its pods + now → what to write); `run` is the
//! loop that observes through informers and acts through the API. `routes` is the routing
//! policy the router follows: the pure reading of the state the plan writes.

pub mod plan;
pub mod pods;
pub mod routes;
pub mod run;

pub use plan::{plan, Plan};
pub use run::run;
