//! Bounds of user numbers: every count, duration, priority and size a loop computes with has a
//! ceiling checked at admission, so that no object the API accepts can overflow the arithmetic
//! done on it (the loops still check their arithmetic, for objects stored before a bound).

use crate::validation::Errors;
use std::fmt::Display;

/// The longest duration any spec may ask for, in seconds: a year. (Kubernetes leaves some of
/// these unbounded; kumo adds them to the clock, so it must not.)
pub const MAX_DURATION_SECONDS: i64 = 365 * 24 * 60 * 60;
/// Most replicas of one process of an app.
pub const MAX_REPLICAS: i32 = 1000;
/// Most replicas (pods) of one MLTask.
pub const MAX_PARALLELISM: i32 = 1000;
/// Most GPUs one replica of an MLTask may ask for (a replica runs on one node).
pub const MAX_GPUS_PER_REPLICA: i64 = 64;
/// Most whole-gang restarts of an MLTask.
pub const MAX_RETRIES: i32 = 100;
/// Priorities of MLTasks lie within ± this (Kubernetes' user PriorityClass range).
pub const MAX_PRIORITY: i32 = 1_000_000_000;
/// The largest GPU quota of a Queue.
pub const MAX_GPU_QUOTA: i64 = 1_000_000;
/// The newest release version an app may reach (replica names leave room for six digits).
pub const MAX_RELEASE_VERSION: i64 = 999_999;

/// Adds an error at `path` unless `min <= value <= max`, in Kubernetes' words.
pub fn check_range<T: PartialOrd + Display + Copy>(
    errors: &mut Errors,
    path: impl Into<String>,
    value: T,
    min: T,
    max: T,
) {
    if value < min || value > max {
        errors.add(
            path,
            format!("Invalid value: {value}: must be between {min} and {max}, inclusive"),
        );
    }
}

/// [`check_range`] for a duration in seconds, from `min` up to a year.
pub fn check_seconds(errors: &mut Errors, path: impl Into<String>, value: i64, min: i64) {
    check_range(errors, path, value, min, MAX_DURATION_SECONDS);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: i64, min: i64, max: i64, expected: &str) {
        let mut errors = Errors::default();
        check_range(&mut errors, "spec.x", value, min, max);
        let got = match errors.into_result() {
            Ok(()) => "ok".to_string(),
            Err(e) => crate::validation::join_errors(&e),
        };
        assert_eq!(got, expected, "{value} in {min}..={max}");
    }

    #[test]
    fn values_outside_the_range_name_the_field_and_the_bound() {
        check(1, 1, 10, "ok");
        check(10, 1, 10, "ok");
        check(
            0,
            1,
            10,
            "spec.x: Invalid value: 0: must be between 1 and 10, inclusive",
        );
        check(
            i64::MAX,
            1,
            MAX_DURATION_SECONDS,
            "spec.x: Invalid value: 9223372036854775807: must be between 1 and 31536000, inclusive",
        );
        check(
            i64::MIN,
            0,
            10,
            "spec.x: Invalid value: -9223372036854775808: must be between 0 and 10, inclusive",
        );
    }
}
