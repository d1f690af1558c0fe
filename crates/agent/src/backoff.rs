//! Restart back-off: `base * 2^restarts` capped at five minutes, and its Go-style spelling (`1m20s`).

use std::time::Duration;

/// The longest wait before a restart, as in kubelet.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long to wait before restarting a container that has been restarted `restarts` times.
pub fn backoff_delay(base: Duration, restarts: i32) -> Duration {
    // `restarts` restarts so far are `restarts + 1` failures: the first waits `base`.
    let failures = restarts.clamp(0, 31) as u32 + 1;
    kumo_client::retry::delay(base, MAX_BACKOFF, failures)
}

/// Spells a duration as Go's `time.Duration` does (`10s`, `2m40s`, `5m0s`, `1.5s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let hours = millis / 3_600_000;
    let minutes = (millis / 60_000) % 60;
    let secs_millis = millis % 60_000;
    let mut seconds = format!("{}", secs_millis / 1000);
    let frac = secs_millis % 1000;
    if frac != 0 {
        let f = format!("{frac:03}");
        seconds.push('.');
        seconds.push_str(f.trim_end_matches('0'));
    }
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_restart_and_caps_at_five_minutes() {
        let base = Duration::from_secs(10);
        let table: Vec<(i32, u64)> = vec![
            (0, 10),
            (1, 20),
            (2, 40),
            (3, 80),
            (4, 160),
            (5, 300),
            (6, 300),
            (100, 300),
            (-1, 10),
        ];
        for (restarts, secs) in table {
            assert_eq!(
                backoff_delay(base, restarts),
                Duration::from_secs(secs),
                "restarts {restarts}"
            );
        }
        assert_eq!(
            backoff_delay(Duration::from_millis(100), 3),
            Duration::from_millis(800)
        );
    }

    #[test]
    fn spells_durations_like_go() {
        for (d, s) in [
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(80), "1m20s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(3725), "1h2m5s"),
        ] {
            assert_eq!(format_duration(d), s);
        }
    }
}
