//! Checked clock arithmetic for loops that add user numbers or stored times to the time: past
//! the calendar's end (chrono's range) the answer is `None`, "never", never a panic (chrono's
//! `+` and `TimeDelta::seconds` panic on overflow).

use kumo_api::Time;
use std::time::Duration;

/// `t` plus `seconds` (negative goes back); `None` outside the calendar.
pub fn add_seconds(t: Time, seconds: i64) -> Option<Time> {
    chrono::TimeDelta::try_seconds(seconds).and_then(|d| t.checked_add_signed(d))
}

/// `t` plus `d`; `None` outside the calendar.
pub fn add(t: Time, d: Duration) -> Option<Time> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
}

/// How long from `now` until `t`: zero once `t` has passed.
pub fn until(t: Time, now: Time) -> Duration {
    (t - now).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_never() {
        let now: Time = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for (seconds, expected) in [
            (10, Some(1_800_000_010)),
            (-10, Some(1_799_999_990)),
            (9_000_000_000_000_000_000, None),
            (i64::MAX, None),
            (i64::MIN, None),
            // Within TimeDelta's range, beyond the calendar's.
            (9_000_000_000_000_000, None),
        ] {
            assert_eq!(
                add_seconds(now, seconds).map(|t| t.timestamp()),
                expected,
                "{seconds}"
            );
        }
        assert_eq!(add(now, Duration::MAX), None);
        assert_eq!(add(Time::MAX_UTC, Duration::from_secs(1)), None);
        assert_eq!(
            add(now, Duration::from_secs(5)).map(|t| t.timestamp()),
            Some(1_800_000_005)
        );
        assert!(until(Time::MAX_UTC, Time::MIN_UTC) > Duration::ZERO);
        assert_eq!(until(now, Time::MAX_UTC), Duration::ZERO);
    }
}
