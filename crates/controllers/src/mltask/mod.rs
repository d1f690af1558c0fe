//! MLTask: queues, gang admission and (to come) the controller that turns tasks into pods.

pub mod admission;

#[cfg(test)]
mod admission_tests;
