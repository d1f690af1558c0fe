//! Failover: two `kumo server`s on a three-member etcd, a client config listing both, and
//! the server the watchers use killed with SIGKILL: they resume on the other from the same
//! resourceVersion, without a relist, missing or repeating nothing. And a one-member etcd
//! killed under a write stream: the API answers 503 with the reason, and recovers by itself.

use crate::harness::*;
use kumo_api::{Namespace, ObjectMeta};
use kumo_client::{Change, Client, ClientConfig, Informer, ListParams, Watched};
use kumo_store::test_etcd::{TestEtcd, TestEtcdCluster};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const PREFIX: &str = "fo-";

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta::named(None, name),
        ..Default::default()
    }
}

/// Waits until `cond` holds, failing after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One watch event of a test namespace: type, name and resourceVersion.
type Seen = (String, String, u64);

/// Follows namespaces as `kumo get -w` does: after a broken stream, watch again from the last
/// revision seen (through the client, which picks the server). Only this test's namespaces
/// are recorded.
async fn follow(client: Client, mut rv: String, seen: Arc<Mutex<Vec<Seen>>>) {
    loop {
        let Ok(mut stream) = client
            .watch::<Namespace>(None, &ListParams::default(), &rv)
            .await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while let Some(Ok(item)) = stream.next().await {
            let (kind, ns) = match item {
                Watched::Added(n) => ("ADDED", n),
                Watched::Modified(n) => ("MODIFIED", n),
                Watched::Deleted(n) => ("DELETED", n),
                Watched::Bookmark(r) => {
                    rv = r;
                    continue;
                }
                Watched::Error(status) => panic!("watch error: {}", status.message),
            };
            rv = ns.metadata.resource_version.clone().unwrap_or_default();
            if ns.metadata.name.starts_with(PREFIX) {
                seen.lock().unwrap().push((
                    kind.to_string(),
                    ns.metadata.name.clone(),
                    ns.metadata.revision(),
                ));
            }
        }
    }
}

fn added(seen: &Mutex<Vec<Seen>>) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(kind, _, _)| kind == "ADDED")
        .count()
}

/// Two `kumo server`s, A and B, on `etcd`.
fn two_servers(etcd: &TestEtcdCluster) -> (Cluster, Cluster) {
    let args = || vec!["server".into(), "--store".into(), etcd.store_url()];
    let a = Cluster::start_with(args());
    // Until a second server can join by itself, it starts on a copy of the first one's data
    // dir (its CA, service-account key, encryption config and tokens): a test fixture standing
    // for the shared bootstrap data.
    let b = Cluster::start_seeded(args(), &a.data_dir());
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_move_to_the_other_server_when_theirs_is_killed() {
    const N: usize = 30;
    let etcd = TestEtcdCluster::start(3).expect("a three-member etcd");
    let (mut a, b) = two_servers(&etcd);
    // One client config for both, as a user writes it: A first.
    let both = ClientConfig {
        servers: vec![b.url.clone()],
        ..a.client_config()
    };
    let writer = b.client();

    let watcher = Client::new(&both).unwrap();
    let (informer, mut changes) =
        Informer::<Namespace>::start(Client::new(&both).unwrap(), None, ListParams::default());
    informer.wait_synced().await;
    let start = watcher
        .list::<Namespace>(None, &ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let following = tokio::spawn(follow(watcher.clone(), start, seen.clone()));
    let applied = Arc::new(Mutex::new(BTreeSet::new()));
    let informed = {
        let applied = applied.clone();
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                if let Change::Applied(ns) = change {
                    if ns.metadata.name.starts_with(PREFIX) {
                        applied.lock().unwrap().insert(ns.metadata.name.clone());
                    }
                }
            }
        })
    };

    for i in 0..N / 2 {
        writer
            .create(&namespace(&format!("{PREFIX}{i:02}")))
            .await
            .unwrap();
    }
    wait_until(T, "the first half on server A", || {
        added(&seen) == N / 2 && applied.lock().unwrap().len() == N / 2
    })
    .await;
    assert_eq!(watcher.server(), a.url, "the watcher was on server A");

    a.kill9();
    for i in N / 2..N {
        writer
            .create(&namespace(&format!("{PREFIX}{i:02}")))
            .await
            .unwrap();
    }
    // A watch is ordered: once the last namespace is in, anything repeated came before it.
    wait_until(T, "every namespace through server B", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(kind, name, _)| kind == "ADDED" && *name == format!("{PREFIX}{:02}", N - 1))
            && applied.lock().unwrap().len() == N
    })
    .await;
    following.abort();
    informed.abort();

    assert_eq!(watcher.server(), b.url, "the watcher moved to server B");
    let seen = seen.lock().unwrap().clone();
    let added: Vec<String> = seen
        .iter()
        .filter(|(kind, _, _)| kind == "ADDED")
        .map(|(_, name, _)| name.clone())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("{PREFIX}{i:02}")).collect();
    assert_eq!(added, expected, "each namespace added once, in order");
    // Nothing repeated: revisions only grow along the watch.
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "a repeated or out-of-order event: {seen:?}"
    );
    assert_eq!(applied.lock().unwrap().len(), N);
    assert_eq!(
        informer.lists(),
        1,
        "the informer resumed on B without a relist"
    );

    // The CLI with `--server A,B`: A is dead, B answers.
    let servers = format!("{},{}", a.url, b.url);
    let out = b.kumo(&["get", "namespace", &expected[0], "--server", &servers]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&expected[0]));
    // A list with a hole in it is refused, naming the flag.
    let out = b.kumo(&["get", "namespaces", "--server", &format!("{},", b.url)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--server: entry 2 of"), "{stderr}");
}

/// A node's agent joined with `--server A,B` (the command `kumo token create --join` prints for
/// a CLI that knows both): when A is killed, its heartbeats go on through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_heartbeats_through_the_other_server_when_its_own_is_killed() {
    let etcd = TestEtcdCluster::start(3).expect("a three-member etcd");
    let (mut a, b) = two_servers(&etcd);
    let servers = format!("{},{}", a.url, b.url);
    let out = a.kumo(&["token", "create", "n1-join", "--join", "--server", &servers]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = printed
        .split_whitespace()
        .skip_while(|w| *w != "--join")
        .nth(1)
        .unwrap_or_else(|| panic!("no join command in {printed:?}"))
        .to_string();
    assert!(
        printed.contains(&format!("kumo agent --server {servers} --join {join}")),
        "{printed}"
    );
    let dir = a.dir.path().join("agent-n1");
    let agent = std::process::Command::new(kumo_exe())
        .args([
            "agent",
            "--server",
            &servers,
            "--node-name",
            "n1",
            "--join",
            &join,
        ])
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "500ms"])
        .args(["--no-pod-network", "--data-dir", dir.to_str().unwrap()])
        .args(["--ca-file", a.ca_file().to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env_remove("KUMO_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn kumo agent");
    let _agent = KilledOnDrop(agent);
    let admin = b.client();
    let beat_after = |node: &kumo_api::Node, t: kumo_api::Time| {
        node.status
            .as_ref()
            .and_then(|s| kumo_api::meta::find_condition(&s.conditions, "Ready"))
            .and_then(|c| c.last_heartbeat_time)
            .is_some_and(|beat| beat > t)
    };
    let heartbeat_after = |t: kumo_api::Time| {
        let admin = admin.clone();
        async move {
            let deadline = Instant::now() + T;
            loop {
                if let Ok(Some(node)) = admin.get_opt::<kumo_api::Node>("", "n1").await {
                    if beat_after(&node, t) {
                        return;
                    }
                }
                assert!(Instant::now() < deadline, "no heartbeat of n1 after {t}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    heartbeat_after(chrono::Utc::now()).await;

    a.kill9();
    let killed = chrono::Utc::now();
    // A heartbeat sent after the kill (a second on) can only have gone through B.
    heartbeat_after(killed + chrono::Duration::seconds(1)).await;
}

/// Kills a child process when dropped.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The one etcd member killed and restarted under a write stream through a serving `kumo
/// server` (etcd.rs checks a single write either side): while it is away the API answers 503
/// naming the store and the CLI says so; the same server then serves again by itself, every
/// acknowledged write is there, and an informer through it saw them all without a relist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_under_a_write_stream_loses_no_acknowledged_write() {
    let mut etcd = TestEtcd::start().expect("etcd");
    let store = format!("etcd://{}", etcd.endpoint.trim_start_matches("http://"));
    let c = Cluster::start_with(vec!["server".into(), "--store".into(), store]);
    let client = c.client();
    let (informer, _changes) =
        Informer::<Namespace>::start(c.client(), None, ListParams::default());
    informer.wait_synced().await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let (client, acked, refused) = (client.clone(), acked.clone(), refused.clone());
        tokio::spawn(async move {
            for i in 0.. {
                if *stopped.borrow() {
                    return;
                }
                let name = format!("{PREFIX}{i:04}");
                match client.create(&namespace(&name)).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(e) => {
                        assert_eq!(e.code(), Some(503), "{e}");
                        refused.lock().unwrap().push(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    };
    let count = |v: &Arc<Mutex<Vec<String>>>| v.lock().unwrap().len();
    wait_until(T, "writes before the outage", || count(&acked) >= 20).await;

    etcd.kill();
    wait_until(T, "writes refused while etcd is away", || {
        count(&refused) >= 3
    })
    .await;
    let reason = refused.lock().unwrap()[0].clone();
    assert!(
        reason.starts_with("storage unavailable: etcd at"),
        "{reason}"
    );
    let out = c.kumo(&["get", "namespaces"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ServiceUnavailable") && stderr.contains("storage unavailable"),
        "{stderr}"
    );

    etcd.restart().expect("etcd restarts on its data");
    // The same server process, not restarted, reconnects by itself and writes go on.
    let at_restart = count(&acked);
    wait_until(T, "writes after etcd is back", || {
        count(&acked) >= at_restart + 20
    })
    .await;
    let _ = stop.send(true);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert_no_acknowledged_write_lost(&client, &acked).await;
    wait_until(T, "the informer to hold every acknowledged write", || {
        acked.iter().all(|n| informer.get(n).is_some())
    })
    .await;
    assert_eq!(informer.lists(), 1, "the informer went on without a relist");
}
