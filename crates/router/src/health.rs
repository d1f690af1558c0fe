//! Passive health of one endpoint: eject after consecutive failures, probe with one request later.
//!
//! Pure: every transition takes the current time as an argument.

use std::time::{Duration, Instant};

/// When to eject and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EjectPolicy {
    /// Consecutive failures that eject; 0 never ejects.
    pub after: u32,
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Healthy,
    Ejected {
        until: Instant,
    },
    /// The ejection expired and one request is testing the endpoint (half-open).
    Probing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Health {
    failures: u32,
    state: State,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            failures: 0,
            state: State::Healthy,
        }
    }
}

impl Health {
    /// Whether a new request may be sent here now.
    pub fn selectable(&self, now: Instant) -> bool {
        match self.state {
            State::Healthy => true,
            State::Ejected { until } => now >= until,
            State::Probing => false,
        }
    }

    /// A request was sent here: an expired ejection turns into the one probe.
    pub fn on_pick(&mut self, now: Instant) {
        if let State::Ejected { until } = self.state {
            if now >= until {
                self.state = State::Probing;
            }
        }
    }

    /// A good answer: the failure streak ends and a probe re-admits the endpoint. It does not
    /// lift a running ejection (that answer was started before the endpoint went bad).
    pub fn on_success(&mut self) {
        self.failures = 0;
        if self.state == State::Probing {
            self.state = State::Healthy;
        }
    }

    /// A connect failure, a timeout or a 5xx answer.
    pub fn on_failure(&mut self, now: Instant, policy: EjectPolicy) {
        self.failures = self.failures.saturating_add(1);
        if policy.after == 0 {
            return;
        }
        let eject = match self.state {
            State::Probing => true,
            State::Healthy => self.failures >= policy.after,
            State::Ejected { .. } => false,
        };
        if eject {
            self.state = State::Ejected {
                until: now.checked_add(policy.duration).unwrap_or(now),
            };
        }
    }

    /// The request ended with no verdict (the client left): a probe may be tried again at once.
    pub fn on_abandon(&mut self, now: Instant) {
        if self.state == State::Probing {
            self.state = State::Ejected { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Event {
        Pick(u64),
        Ok,
        Fail(u64),
        Abandon(u64),
    }
    use Event::*;

    const POLICY: EjectPolicy = EjectPolicy {
        after: 3,
        duration: Duration::from_secs(10),
    };

    /// Runs the events (times in seconds from an origin), then says whether the endpoint is
    /// selectable at each of `at`.
    fn check(events: &[Event], policy: EjectPolicy, at: &[(u64, bool)]) {
        let origin = Instant::now();
        let t = |s: u64| origin + Duration::from_secs(s);
        let mut h = Health::default();
        for e in events {
            match *e {
                Pick(s) => h.on_pick(t(s)),
                Ok => h.on_success(),
                Fail(s) => h.on_failure(t(s), policy),
                Abandon(s) => h.on_abandon(t(s)),
            }
        }
        for &(s, want) in at {
            assert_eq!(h.selectable(t(s)), want, "after {events:?} at {s}s");
        }
    }

    #[test]
    fn ejection_and_half_open_probe() {
        check(&[Fail(0), Fail(0)], POLICY, &[(0, true)]);
        check(
            &[Fail(0), Fail(0), Fail(1)],
            POLICY,
            &[(1, false), (10, false), (11, true)],
        );
        // A success in between resets the streak.
        check(
            &[Fail(0), Fail(0), Ok, Fail(0), Fail(0)],
            POLICY,
            &[(0, true)],
        );
        // The probe is the only request let through.
        check(
            &[Fail(0), Fail(0), Fail(0), Pick(10)],
            POLICY,
            &[(10, false), (99, false)],
        );
        // A good probe re-admits; a bad one ejects again for the full duration.
        check(
            &[Fail(0), Fail(0), Fail(0), Pick(10), Ok],
            POLICY,
            &[(10, true)],
        );
        check(
            &[Fail(0), Fail(0), Fail(0), Pick(10), Fail(12)],
            POLICY,
            &[(12, false), (21, false), (22, true)],
        );
        // A probe whose client left frees the slot for another probe.
        check(
            &[Fail(0), Fail(0), Fail(0), Pick(10), Abandon(11)],
            POLICY,
            &[(11, true)],
        );
        // A late success does not lift a running ejection.
        check(
            &[Fail(0), Fail(0), Fail(0), Ok],
            POLICY,
            &[(5, false), (10, true)],
        );
        // after = 0 never ejects.
        let never = EjectPolicy { after: 0, ..POLICY };
        check(&[Fail(0), Fail(0), Fail(0), Fail(0)], never, &[(0, true)]);
    }
}
