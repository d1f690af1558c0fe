//! MLTask: queues, gang admission, and the controller that turns tasks into replica pods.

pub mod admission;
pub mod controller;
pub mod gang;
pub mod outcome;
pub mod pass;
pub mod replicas;
pub mod settled;
pub mod standing;

#[cfg(test)]
mod admission_tests;
#[cfg(test)]
mod pass_tests;
