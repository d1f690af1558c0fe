//! What a reconcile loop does with a failure: a per-key doubling back-off, a count of the
//! loop's failures for its log lines, and guards that turn a panic into a failure, so that one
//! bad object never stops a loop. The guards rely on unwinding: no profile may set
//! `panic = "abort"`.

use futures_util::FutureExt;
use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Why a guarded reconcile did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E> {
    #[error(transparent)]
    Error(E),
    /// It panicked (the panic's message); the panic hook has printed where.
    #[error("panicked: {0}")]
    Panic(String),
}

/// Runs a reconcile, catching a panic in it as [`Failure::Panic`]. What the future held is
/// dropped with it; a loop's shared state is behind locks that a panic does not poison for
/// good (`unwrap_or_else(|e| e.into_inner())`), which is why asserting unwind safety is sound.
pub async fn guard<T, E>(reconcile: impl Future<Output = Result<T, E>>) -> Result<T, Failure<E>> {
    match AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result.map_err(Failure::Error),
        Err(payload) => Err(Failure::Panic(panic_message(payload.as_ref()))),
    }
}

/// Runs a pure step (one object's share of a pass), catching a panic as its message.
pub fn guard_pure<T>(step: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(step)).map_err(|p| panic_message(p.as_ref()))
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// The delay after `attempt` consecutive failures: `base * 2^(attempt-1)`, at most `max`.
/// The one back-off curve of the project: [`Backoff`], the informer's relist delay, the
/// agent's restart and pull back-offs and the MLTask gang back-off all call it, each with
/// its own base and cap.
pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << shift).min(max)
}

/// What one failure earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Consecutive failures of this key, this one included.
    pub attempt: u32,
    /// How long to wait before trying the key again.
    pub delay: Duration,
    /// The loop's failures since it started, every key together.
    pub total: u64,
}

/// Consecutive failures per key and the delay they earn (client-go's per-item exponential
/// rate limiter); a success forgets the key. Shared by every loop, keyed or pass-shaped
/// (a pass-shaped loop uses one key).
#[derive(Debug)]
pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    failures: Mutex<BTreeMap<K, u32>>,
    total: AtomicU64,
}

impl<K: Ord + Clone> Backoff<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: Mutex::new(BTreeMap::new()),
            total: AtomicU64::new(0),
        }
    }

    /// Counts a failure of `key`.
    pub fn failed(&self, key: &K) -> Retry {
        let attempt = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        Retry {
            attempt,
            delay: delay(self.base, self.max, attempt),
            total: self.total.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Forgets `key`'s failures: its next failure waits `base` again.
    pub fn succeeded(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The loop's failures since it started.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_failure_up_to_the_cap_and_reset_on_success() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let got: Vec<(u32, u64, u64)> = (0..10)
            .map(|_| {
                let r = b.failed(&"a");
                (r.attempt, r.delay.as_millis() as u64, r.total)
            })
            .collect();
        let want: Vec<(u32, u64, u64)> =
            [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
                .iter()
                .enumerate()
                .map(|(i, ms)| (i as u32 + 1, *ms, i as u64 + 1))
                .collect();
        assert_eq!(got, want);
        // Another key has its own count; the loop's total counts both.
        assert_eq!(b.failed(&"b").delay, Duration::from_millis(200));
        b.succeeded(&"a");
        let r = b.failed(&"a");
        assert_eq!(
            (r.attempt, r.delay, r.total),
            (1, Duration::from_millis(200), 12)
        );
        assert_eq!(b.total(), 12);
    }

    #[test]
    fn delays_never_overflow() {
        for (base, attempt, want) in [
            (Duration::MAX, 1, Duration::from_secs(30)),
            (Duration::from_secs(1), u32::MAX, Duration::from_secs(30)),
            (Duration::ZERO, 5, Duration::ZERO),
        ] {
            assert_eq!(delay(base, Duration::from_secs(30), attempt), want);
        }
    }

    #[tokio::test]
    async fn a_panicking_reconcile_is_a_failure() {
        let ok: Result<i32, Failure<String>> = guard(async { Ok::<_, String>(1) }).await;
        assert_eq!(ok.unwrap(), 1);
        let err = guard(async { Err::<i32, _>("no".to_string()) }).await;
        assert!(matches!(err, Err(Failure::Error(e)) if e == "no"));
        let panicked = guard(async {
            if true {
                panic!("overflow at {}", 7);
            }
            Ok::<i32, String>(1)
        })
        .await;
        assert_eq!(panicked.unwrap_err().to_string(), "panicked: overflow at 7");
        assert_eq!(guard_pure(|| 2), Ok(2));
        assert_eq!(
            guard_pure(|| -> i32 { panic!("static") }),
            Err("static".to_string())
        );
    }
}
