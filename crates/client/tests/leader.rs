//! Leader election against a real API server on an in-memory store: two candidates for one
//! Lease with short timings; a counter of running loops shows that at most one ever runs.

mod common;
use common::proxy;

use kumo_api::lease::Lease;
use kumo_client::leader::{run_while_leading, LeaseLock, Timing};
use kumo_client::{Client, ClientConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "kumo-system";
const NAME: &str = "kumo-test-loop";

/// Short, but with the same shape as Kubernetes' defaults (retry < renew deadline < lease).
fn timing() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(200),
    }
}

/// Which loops run now, and whether two ever ran at once.
#[derive(Default)]
struct Loops {
    running: AtomicUsize,
    overlaps: AtomicUsize,
    leader: Mutex<Option<String>>,
}

impl Loops {
    fn leader(&self) -> Option<String> {
        self.leader.lock().unwrap().clone()
    }
}

/// Held by a running loop; counts it out when the loop is dropped.
struct Running(Arc<Loops>);

impl Running {
    fn enter(loops: &Arc<Loops>, who: &str) -> Self {
        if loops.running.fetch_add(1, Ordering::SeqCst) != 0 {
            loops.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *loops.leader.lock().unwrap() = Some(who.to_string());
        Running(Arc::clone(loops))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.leader.lock().unwrap() = None;
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Candidate {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Candidate {
    fn start(client: Client, who: &str, loops: &Arc<Loops>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let lock = LeaseLock {
            namespace: NS.into(),
            name: NAME.into(),
            identity: who.into(),
        };
        let (loops, who) = (Arc::clone(loops), who.to_string());
        let make_loop = move || {
            let (loops, who) = (Arc::clone(&loops), who.clone());
            async move {
                let _running = Running::enter(&loops, &who);
                std::future::pending::<()>().await
            }
        };
        let task = tokio::spawn(run_while_leading(
            client,
            lock,
            timing(),
            make_loop,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        Candidate { task, stop }
    }

    /// Graceful shutdown: the loop stops and the lease is released.
    async fn shut_down(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}

async fn server() -> SocketAddr {
    let store = Arc::new(kumo_store::MemStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = kumo_apiserver::Config::new(store, vec!["t0ken".into()]);
    tokio::spawn(kumo_apiserver::serve(
        listener,
        config,
        std::future::pending(),
    ));
    addr
}

fn client(addr: SocketAddr) -> Client {
    Client::new(&ClientConfig {
        server: format!("http://{addr}"),
        token: "t0ken".into(),
        ..Default::default()
    })
    .unwrap()
}

/// Waits until `cond` holds, failing after `within`; returns how long it took.
async fn wait_until(within: Duration, what: &str, cond: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn lease(c: &Client) -> Lease {
    c.get::<Lease>(NS, NAME).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_and_a_release_hands_over_at_once() {
    let addr = server().await;
    let loops = Arc::new(Loops::default());
    // Both start together on an absent lease: one create wins, the other gets a 409.
    let a = Candidate::start(client(addr), "a", &loops);
    let b = Candidate::start(client(addr), "b", &loops);
    wait_until(Duration::from_secs(2), "a leader", || {
        loops.leader().is_some()
    })
    .await;
    let first = loops.leader().unwrap();
    // Several renewals later the same one leads, and the other never ran.
    tokio::time::sleep(timing().renew_deadline).await;
    assert_eq!(loops.leader().as_deref(), Some(first.as_str()));
    let held = lease(&client(addr)).await;
    assert_eq!(held.spec.holder(), Some(first.as_str()));
    assert_eq!(held.spec.lease_transitions, Some(0));
    assert_eq!(held.spec.lease_duration_seconds, Some(3));

    let (leader, other) = if first == "a" { (a, b) } else { (b, a) };
    leader.shut_down().await;
    // Released: the other takes over at its next retry, well before the lease would expire.
    let took = wait_until(timing().lease_duration, "the other to lead", || {
        loops.leader().is_some_and(|l| l != first)
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "handover after a release took {took:?}"
    );
    let held = lease(&client(addr)).await;
    assert_ne!(held.spec.holder(), Some(first.as_str()));
    assert_eq!(held.spec.lease_transitions, Some(1));
    other.shut_down().await;
    assert_eq!(lease(&client(addr)).await.spec.holder(), None);
    assert_eq!(loops.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(loops.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stops_renewing_is_replaced_within_the_lease() {
    let addr = server().await;
    let loops = Arc::new(Loops::default());
    let a = Candidate::start(client(addr), "a", &loops);
    wait_until(Duration::from_secs(2), "a to lead", || {
        loops.leader().as_deref() == Some("a")
    })
    .await;
    let b = Candidate::start(client(addr), "b", &loops);
    // Dropped without a release, as a crashed server: its loop goes with it.
    a.task.abort();
    let _ = a.task.await;
    let last = lease(&client(addr)).await;
    let renewed = last.spec.renew_time.unwrap();
    wait_until(
        timing().lease_duration + Duration::from_secs(1),
        "b to lead",
        || loops.leader().as_deref() == Some("b"),
    )
    .await;
    let taken = lease(&client(addr)).await;
    assert_eq!(taken.spec.holder(), Some("b"));
    assert_eq!(taken.spec.lease_transitions, Some(1));
    // Not before the lease ran out.
    assert!(taken.spec.acquire_time.unwrap() >= renewed + chrono::TimeDelta::seconds(3));
    b.shut_down().await;
    assert_eq!(loops.overlaps.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_before_another_takes_over() {
    let addr = server().await;
    let loops = Arc::new(Loops::default());
    let (through, cut) = proxy(addr).await;
    let a = Candidate::start(client(through), "a", &loops);
    wait_until(Duration::from_secs(2), "a to lead", || {
        loops.leader().as_deref() == Some("a")
    })
    .await;
    let b = Candidate::start(client(addr), "b", &loops);
    // a's renewals now fail while its loop still runs: it must stop within the renew
    // deadline, before b may take the lease.
    cut.cut().await;
    let stopped = wait_until(
        timing().renew_deadline + Duration::from_secs(1),
        "a to stop",
        || loops.leader().as_deref() != Some("a"),
    )
    .await;
    assert!(stopped <= timing().renew_deadline + Duration::from_millis(300));
    wait_until(
        timing().lease_duration + Duration::from_secs(1),
        "b to lead",
        || loops.leader().as_deref() == Some("b"),
    )
    .await;
    assert_eq!(loops.overlaps.load(Ordering::SeqCst), 0);
    b.shut_down().await;
    a.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_write_never_lets_both_lead() {
    let addr = server().await;
    let loops = Arc::new(Loops::default());
    let a = Candidate::start(client(addr), "a", &loops);
    wait_until(Duration::from_secs(2), "a to lead", || {
        loops.leader().as_deref() == Some("a")
    })
    .await;
    let b = Candidate::start(client(addr), "b", &loops);
    // A third party takes the lease under a's feet (conditional on what it read).
    let c = client(addr);
    let mut taken = lease(&c).await;
    taken.spec.holder_identity = Some("intruder".into());
    taken.spec.renew_time = Some(chrono::Utc::now());
    c.update(&taken).await.unwrap();
    // a sees it at its next renewal and stops; b waits for the intruder's lease to run out.
    wait_until(Duration::from_secs(1), "a to stop", || {
        loops.leader().is_none()
    })
    .await;
    let nobody = Instant::now();
    wait_until(
        timing().lease_duration + Duration::from_secs(1),
        "a new leader",
        || loops.leader().is_some(),
    )
    .await;
    assert!(
        nobody.elapsed() >= Duration::from_secs(2),
        "the intruder's lease was honoured"
    );
    assert_eq!(loops.overlaps.load(Ordering::SeqCst), 0);
    a.shut_down().await;
    b.shut_down().await;
    assert_eq!(loops.overlaps.load(Ordering::SeqCst), 0);
}
