//! The runtime's behaviour as data, on tokio's paused clock: times are exact and no test
//! sleeps in real time.

use super::*;
use std::sync::Mutex;
use tokio::time::Instant;

const BASE: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(30);

/// A cache that is synced when the test says so.
struct Gate(tokio::sync::watch::Receiver<bool>);

impl Synced for Gate {
    fn wait_synced(&self) -> BoxFuture<'_> {
        let mut rx = self.0.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        })
    }
}

/// What happened, in order: (milliseconds since the start, what).
type Log = Mutex<Vec<(u64, String)>>;

fn note(log: &Log, start: Instant, what: String) {
    let ms = (Instant::now() - start).as_millis() as u64;
    log.lock().unwrap().push((ms, what));
}

fn check(log: &Log, want: &[(u64, &str)]) {
    let got = log.lock().unwrap().clone();
    let want: Vec<(u64, String)> = want.iter().map(|(t, s)| (*t, s.to_string())).collect();
    assert_eq!(got, want);
}

/// Keys sent on a channel, the sender kept open.
fn keys(
    ks: &[&str],
) -> (
    mpsc::UnboundedSender<String>,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    for k in ks {
        tx.send(k.to_string()).unwrap();
    }
    (tx, rx)
}

fn metrics(log: &Log, start: Instant) -> impl Metrics<String, String> + '_ {
    move |key: &String, failure: &Failure<String>, retry: &Retry| {
        note(
            log,
            start,
            format!(
                "{key} failed ({failure}), retry {} in {:?}",
                retry.attempt, retry.delay
            ),
        )
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_key_is_retried_with_the_shared_back_off_and_a_panic_is_a_failure() {
    let (start, log) = (Instant::now(), Log::default());
    let calls = Mutex::new(0);
    let (_tx, rx) = keys(&["a"]);
    let controller = Controller::new(BASE, MAX).feeds(rx, |k: &String| Some(k.clone()));
    let reconcile = |key: String| {
        let (calls, log) = (&calls, &log);
        async move {
            let n = {
                let mut c = calls.lock().unwrap();
                *c += 1;
                *c
            };
            note(log, start, format!("{key} {n}"));
            match n {
                1 => Err("no".to_string()),
                2 => panic!("boom"),
                3 => Ok(Some(Duration::from_secs(5))),
                _ => Err("again".to_string()),
            }
        }
    };
    controller
        .run(
            reconcile,
            metrics(&log, start),
            tokio::time::sleep(Duration::from_secs(6)),
        )
        .await;
    check(
        &log,
        &[
            (0, "a 1"),
            (0, "a failed (no), retry 1 in 200ms"),
            (200, "a 2"),
            (200, "a failed (panicked: boom), retry 2 in 400ms"),
            (600, "a 3"),
            // Success forgot the failures; the requeue-after brings it back.
            (5600, "a 4"),
            (5600, "a failed (again), retry 1 in 200ms"),
            (5800, "a 5"),
            (5800, "a failed (again), retry 2 in 400ms"),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn keys_are_deduplicated_and_wait_for_the_caches_and_the_initial_keys() {
    let (start, log) = (Instant::now(), Log::default());
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let (_tx, rx) = keys(&["a", "b", "a", "a", "b"]);
    let controller = Controller::new(BASE, MAX)
        .feeds(rx, |k: &String| (k != "skip").then(|| k.clone()))
        .waits_for(Gate(synced_rx))
        .initial(|| vec!["c".to_string(), "a".to_string()]);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        synced_tx.send(true).unwrap();
        std::future::pending::<()>().await
    });
    let reconcile = |key: String| {
        let log = &log;
        async move {
            note(log, start, key);
            Ok::<_, String>(None)
        }
    };
    controller
        .run(
            reconcile,
            metrics(&log, start),
            tokio::time::sleep(Duration::from_secs(2)),
        )
        .await;
    check(&log, &[(1000, "a"), (1000, "b"), (1000, "c")]);
}

#[tokio::test(start_paused = true)]
async fn keys_run_concurrently_up_to_the_bound_and_one_key_never_twice() {
    let (start, log) = (Instant::now(), Log::default());
    let (tx, rx) = keys(&["a", "b", "c"]);
    let controller = Controller::new(BASE, MAX)
        .feeds(rx, |k: &String| Some(k.clone()))
        .concurrency(2);
    let reconcile = |key: String| {
        let (log, tx) = (&log, tx.clone());
        async move {
            note(log, start, format!("{key} starts"));
            if key == "a" && log.lock().unwrap().len() == 1 {
                // "a" changes while it is being reconciled: it runs again once done.
                tx.send("a".to_string()).unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, String>(None)
        }
    };
    controller
        .run(
            reconcile,
            metrics(&log, start),
            tokio::time::sleep(Duration::from_millis(3500)),
        )
        .await;
    check(
        &log,
        &[
            (0, "a starts"),
            (0, "b starts"),
            (1000, "c starts"),
            (1000, "a starts"),
        ],
    );
}

struct PassMetrics<'a>(&'a Log, Instant);

impl Metrics<(), String> for PassMetrics<'_> {
    fn failed(&self, _: &(), failure: &Failure<String>, retry: &Retry) {
        let what = format!("failed ({failure}), retry in {:?}", retry.delay);
        note(self.0, self.1, what)
    }
    fn left_out(&self, unit: &str, why: &str, retry: &Retry) {
        let what = format!("{unit} left out ({why}), retry in {:?}", retry.delay);
        note(self.0, self.1, what)
    }
}

/// What the n-th pass (from 1) does.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Busy this many ms, reporting a cost of that many ms.
    Ok(u64, u64),
    /// Leaves unit "x" out.
    LeftOut,
    /// Only waits for changes (no requeue-after).
    Idle,
    Panic,
}

/// Runs a pass loop (requeue-after 10 s, cooldown of passes from 1 ms up to 10 ms) fed by a
/// change at each of `changes` (ms), until `until` ms: when each pass began, and failures.
async fn passes(answers: &[Answer], changes: &[u64], until: u64) -> Vec<(u64, String)> {
    let (start, log) = (Instant::now(), Log::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let changes = changes.to_vec();
    tokio::spawn(async move {
        for at in changes {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            let _ = tx.send(());
        }
        std::future::pending::<()>().await
    });
    let calls = Mutex::new(0usize);
    let pass = || {
        let (log, calls) = (&log, &calls);
        async move {
            let n = {
                let mut c = calls.lock().unwrap();
                *c += 1;
                *c
            };
            note(log, start, format!("pass {n}"));
            let (busy, cost) = match answers.get(n - 1).copied().unwrap_or(Answer::Panic) {
                Answer::Ok(busy, cost) => (busy, cost),
                Answer::Idle => return Ok(Passed::default()),
                Answer::LeftOut => {
                    return Ok(Passed {
                        left_out: vec![("x".into(), format!("pass {n}"))],
                        ..Passed::default()
                    })
                }
                Answer::Panic => panic!("pass {n}"),
            };
            tokio::time::sleep(Duration::from_millis(busy)).await;
            Ok::<_, String>(Passed {
                requeue_after: Some(Duration::from_secs(10)),
                cost: Duration::from_millis(cost),
                left_out: vec![],
            })
        }
    };
    Pass::new(BASE, MAX)
        .feeds(rx)
        .cooldown(Duration::from_millis(1), Duration::from_millis(10))
        .run(
            pass,
            PassMetrics(&log, start),
            tokio::time::sleep(Duration::from_millis(until)),
        )
        .await;
    let got = log.lock().unwrap().clone();
    got
}

#[tokio::test(start_paused = true)]
async fn passes_are_coalesced_cooled_down_and_retried_after_a_panic() {
    type Case<'a> = (&'a [Answer], &'a [u64], &'a [(u64, &'a str)]);
    use Answer::{Idle, LeftOut, Ok, Panic};
    let idle = Ok(0, 0);
    let cases: &[Case] = &[
        // Three changes during a 50 ms pass make one more pass, not three; the change at
        // 100 ms makes a third; then the requeue-after (10 s) makes the next.
        (
            &[Ok(50, 0), idle, idle, idle],
            &[10, 20, 30, 100],
            &[
                (0, "pass 1"),
                (50, "pass 2"),
                (100, "pass 3"),
                (10100, "pass 4"),
            ],
        ),
        // A pass that cost 5 ms holds the next back 5 ms after it ended; one of 20 ms, 10 ms
        // (changes at 1 and 11 ms came during those cooldowns).
        (
            &[Ok(0, 5), Ok(0, 20), idle, idle],
            &[1, 11],
            &[
                (0, "pass 1"),
                (10, "pass 2"),
                (40, "pass 3"),
                (10040, "pass 4"),
            ],
        ),
        // A panic is retried after the back-off, not at a change (the change at 100 ms makes
        // a pass once one succeeded); a success forgets the failures.
        (
            &[Panic, Panic, idle, Panic, idle],
            &[100],
            &[
                (0, "pass 1"),
                (0, "failed (panicked: pass 1), retry in 200ms"),
                (200, "pass 2"),
                (200, "failed (panicked: pass 2), retry in 400ms"),
                (600, "pass 3"),
                (600, "pass 4"),
                (600, "failed (panicked: pass 4), retry in 200ms"),
                (800, "pass 5"),
            ],
        ),
        // A pass that left a unit out is a failure of the pass: the next comes after the
        // back-off or at a change (at 300 ms), whichever is first; one without a
        // requeue-after waits for a change alone.
        (
            &[LeftOut, LeftOut, LeftOut, Idle],
            &[300],
            &[
                (0, "pass 1"),
                (0, "x left out (pass 1), retry in 200ms"),
                (200, "pass 2"),
                (200, "x left out (pass 2), retry in 400ms"),
                (300, "pass 3"),
                (300, "x left out (pass 3), retry in 800ms"),
                (1100, "pass 4"),
            ],
        ),
    ];
    for (answers, changes, want) in cases {
        let got = passes(answers, changes, 10_500).await;
        let want: Vec<(u64, String)> = want.iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(got, want, "answers {answers:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_feed_wakes_a_pass_only_when_it_says_so_and_caches_are_waited_for() {
    let (start, log) = (Instant::now(), Log::default());
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let (tx, rx) = mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        for at in [50, 100, 150, 200] {
            tokio::time::sleep_until(start + Duration::from_millis(at)).await;
            if at == 100 {
                synced_tx.send(true).unwrap();
            }
            tx.send(at).unwrap();
        }
        std::future::pending::<()>().await
    });
    let pass = || {
        let log = &log;
        async move {
            note(log, start, "pass".to_string());
            Ok::<_, String>(Passed::default())
        }
    };
    Pass::new(BASE, MAX)
        .waits_for(Gate(synced_rx))
        // Only items at multiples of 100 ms wake a pass.
        .feeds_with(rx, |at: &u64| at.is_multiple_of(100))
        .run(
            pass,
            PassMetrics(&log, start),
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await;
    // The first pass once synced (at 100 ms, whose item's permit makes a second at once),
    // then one at 200 ms; the item at 150 ms wakes nothing.
    check(&log, &[(100, "pass"), (100, "pass"), (200, "pass")]);
}

#[tokio::test(start_paused = true)]
async fn spawned_reconciles_are_bounded_and_drained_at_shutdown() {
    let (start, log) = (Instant::now(), Arc::new(Log::default()));
    let (_tx, rx) = keys(&["a", "b", "c"]);
    let reconcile = {
        let log = log.clone();
        move |key: String| {
            let log = log.clone();
            async move {
                note(&log, start, format!("{key} starts"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                note(&log, start, format!("{key} ends"));
                Ok::<_, String>(None)
            }
        }
    };
    let metrics = |_: &String, _: &Failure<String>, _: &Retry| {};
    let drained = Controller::new(BASE, MAX)
        .feeds(rx, |k: &String| Some(k.clone()))
        .concurrency(2)
        .run_spawned(
            reconcile,
            metrics,
            tokio::time::sleep(Duration::from_millis(1500)),
            Duration::from_secs(10),
        )
        .await;
    // "c" started before the shutdown and ended within the drain window.
    assert_eq!(drained, Some(start + Duration::from_millis(11_500)));
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    check(
        &log,
        &[
            (0, "a starts"),
            (0, "b starts"),
            (1000, "a ends"),
            (1000, "b ends"),
            (1000, "c starts"),
            (2000, "c ends"),
        ],
    );
    // Stopped before the caches were synced: nothing to drain, and the caller is told.
    let (_synced_tx, synced_rx) = tokio::sync::watch::channel(false);
    let stopped = Controller::<String>::new(BASE, MAX)
        .waits_for(Gate(synced_rx))
        .run_spawned(
            |_: String| async { Ok::<_, String>(None) },
            metrics,
            std::future::ready(()),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(stopped, None);
}
