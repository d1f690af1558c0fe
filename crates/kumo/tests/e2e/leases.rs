//! Leader election under `kumo up`: each control loop holds its own Lease in kumo-system, a
//! restarted server takes its leases back at once, and bad election flags stop `kumo up`.

use crate::harness::{kumo_exe, process_pod, wait_pod, Cluster, LOOPS};
use kumo_api::lease::Lease;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// `kumo get leases -n kumo-system` as name → holder (empty when released).
fn holders(c: &Cluster) -> BTreeMap<String, String> {
    let out = c.kumo(&["get", "leases", "-n", "kumo-system"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "HOLDER", "AGE"], "{text}");
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let holder = if cols.len() == 3 { cols[1] } else { "" };
            (cols[0].to_string(), holder.to_string())
        })
        .collect()
}

/// Waits until every loop's Lease is held by `holder` (any one holder when `None`).
fn wait_held(c: &Cluster, holder: Option<&str>, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let now = holders(c);
        let names: Vec<&str> = now.keys().map(String::as_str).collect();
        let first = now.values().next().cloned().unwrap_or_default();
        let want = holder.unwrap_or(&first);
        if names == LOOPS && !want.is_empty() && now.values().all(|h| h == want) {
            return want.to_string();
        }
        assert!(
            start.elapsed() < within,
            "leases not all held by {holder:?} within {within:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates a process pod and waits until the scheduler binds it; returns how long that took.
async fn scheduled(c: &Cluster, name: &str) -> Duration {
    let f = c.write(&format!("{name}.yaml"), &process_pod(name, "Never", "true"));
    let start = Instant::now();
    assert!(c
        .kumo(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    wait_pod(&c.client(), "default", name, Duration::from_secs(30), |p| {
        p.spec.node_name.is_some()
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_loop_holds_a_lease_and_takes_it_back_after_a_restart() {
    let mut c = Cluster::up(&[]);
    let holder = wait_held(&c, None, Duration::from_secs(10));
    // The server's host and listen address.
    let listen = c.url.trim_start_matches("https://").to_string();
    assert!(holder.ends_with(&format!("_{listen}")), "{holder}");
    let lease: Lease = c
        .client()
        .get("kumo-system", "kumo-scheduler")
        .await
        .unwrap();
    assert_eq!(lease.spec.lease_duration_seconds, Some(15));
    assert!(lease.spec.renew_time.is_some());
    let transitions = lease.spec.lease_transitions;

    // A graceful restart releases the leases and takes them again.
    c.restart();
    wait_held(&c, Some(&holder), Duration::from_secs(10));
    let took = scheduled(&c, "after-restart").await;
    assert!(took < Duration::from_secs(10), "scheduling took {took:?}");

    // A crash leaves them held; the same server takes its own back without waiting for the
    // 15 s lease to run out.
    c.kill9();
    let relaunched = Instant::now();
    c.relaunch();
    let took = scheduled(&c, "after-crash").await;
    assert!(
        relaunched.elapsed() < Duration::from_secs(12),
        "the restarted server waited for its own lease: pod scheduled {took:?} after apply, {:?} after relaunch",
        relaunched.elapsed()
    );
    assert_eq!(wait_held(&c, Some(&holder), Duration::from_secs(1)), holder);
    let lease: Lease = c
        .client()
        .get("kumo-system", "kumo-scheduler")
        .await
        .unwrap();
    // One transition for taking it back after the graceful restart's release; none for the
    // crash: the same holder renewed it.
    assert_eq!(
        lease.spec.lease_transitions,
        transitions.map(|t| t + 1),
        "{lease:?}"
    );
}

#[test]
fn bad_election_flags_stop_kumo_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (flags, wanted) in [
        (
            ["--leader-elect-renew-deadline", "20s"],
            "--leader-elect-renew-deadline: renew deadline (20s) must be shorter than the lease duration (15s)",
        ),
        (
            ["--leader-elect-retry-period", "10s"],
            "--leader-elect-retry-period: retry period (10s) must be above zero and shorter than the renew deadline (10s)",
        ),
    ] {
        let out = Command::new(kumo_exe())
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(flags)
            .env("HOME", dir.path())
            .output()
            .expect("run kumo up");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(wanted), "{stderr}");
        assert!(!data.exists(), "{flags:?} left a data dir");
    }
}
