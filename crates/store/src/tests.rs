//! Behaviour tests of the `Store` contract, written once and run against every backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tempfile::TempDir;

use crate::test_etcd::{TestEtcd, TestEtcdCluster};
use crate::{
    event_bytes, EtcdConfig, EtcdStore, Event, EventKind, KeyValue, MemStore, RedbStore, Revision,
    Store, StoreError, WatchStream, WatchWindow,
};

/// How long a test waits for an event it knows is coming before it fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
enum Backend {
    Mem,
    Redb,
    Etcd,
}

/// A fresh store; the directory (redb) or the etcd process lives as long as the harness.
struct Harness {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
    _etcd: Option<TestEtcd>,
}

async fn open(backend: Backend, window: WatchWindow) -> Harness {
    match backend {
        Backend::Mem => Harness {
            store: Arc::new(MemStore::with_window(window)),
            _dir: None,
            _etcd: None,
        },
        Backend::Redb => {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open(&dir.path().join("kumo.redb"), window).unwrap();
            Harness {
                store: Arc::new(store),
                _dir: Some(dir),
                _etcd: None,
            }
        }
        Backend::Etcd => {
            // One etcd per test: the contract names exact revisions, and etcd's revisions are
            // global, so tests sharing one etcd would see each other's writes.
            let etcd = TestEtcd::start().unwrap();
            let config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
            // An empty etcd is at revision 1; the contract counts writes from 0.
            let store = EtcdStore::connect_at_base(&config, window, 1)
                .await
                .unwrap();
            assert_eq!(store.current_revision().await.unwrap(), 0);
            Harness {
                store: Arc::new(store),
                _dir: None,
                _etcd: Some(etcd),
            }
        }
    }
}

/// `name: window;` runs `async fn name(store: Arc<dyn Store>)` on a fresh store of each backend.
macro_rules! on_every_backend {
    ($($name:ident: $window:expr;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mem() {
                let Harness { store, _dir, _etcd } = open(Backend::Mem, $window.into()).await;
                super::$name(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redb() {
                let Harness { store, _dir, _etcd } = open(Backend::Redb, $window.into()).await;
                super::$name(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                let Harness { store, _dir, _etcd } = open(Backend::Etcd, $window.into()).await;
                super::$name(store).await;
            }
        }
    )*};
}

on_every_backend! {
    writes_follow_the_contract: 100;
    list_is_sorted_by_prefix_at_a_revision: 100;
    concurrent_writes_get_global_increasing_revisions: 1000;
    racing_conditional_updates_lose_nothing: 1000;
    watch_replays_then_follows_live_writes: 10_000;
    watch_filters_by_prefix: 100;
    progress_advances_over_non_matching_events: 100;
    old_revisions_are_compacted: 5;
    large_values_are_compacted_by_bytes: WatchWindow::new(100, 4 * BIG_EVENT);
    dropping_the_store_ends_watches: 100;
    a_list_larger_than_4_mib_is_answered: 100;
}

fn show(result: &Result<KeyValue, StoreError>) -> String {
    match result {
        Ok(kv) => format!(
            "{}={} c{} m{}",
            kv.key,
            String::from_utf8_lossy(&kv.value),
            kv.create_revision,
            kv.mod_revision
        ),
        Err(StoreError::NotFound(key)) => format!("not found {key}"),
        Err(StoreError::AlreadyExists(key)) => format!("exists {key}"),
        Err(StoreError::Conflict { key, current }) => format!("conflict {key} current={current}"),
        Err(e) => format!("error {e}"),
    }
}

fn show_event(event: &Event) -> String {
    let kind = match (event.kind, event.created) {
        (EventKind::Put, true) => "create",
        (EventKind::Put, false) => "update",
        (EventKind::Delete, _) => "delete",
    };
    format!("{kind} {}", show(&Ok(event.kv.clone())))
}

async fn next_event(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(PATIENCE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(other) => panic!("expected an event, got {other:?}"),
        Err(_) => panic!("no event within {PATIENCE:?}"),
    }
}

async fn next_events(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next_event(stream).await);
    }
    events
}

enum Op {
    Create(&'static str, &'static str),
    Update(&'static str, &'static str, Option<Revision>),
    Delete(&'static str, Option<Revision>),
}

async fn run(store: &dyn Store, op: &Op) -> Result<KeyValue, StoreError> {
    match *op {
        Op::Create(key, value) => store.create(key, value.into()).await,
        Op::Update(key, value, expected) => store.update(key, value.into(), expected).await,
        Op::Delete(key, expected) => store.delete(key, expected).await,
    }
}

async fn writes_follow_the_contract(store: Arc<dyn Store>) {
    use Op::*;
    let steps = [
        (Create("/a", "v1"), "/a=v1 c1 m1"),
        (Update("/a", "v2", Some(1)), "/a=v2 c1 m2"),
        (Update("/a", "v3", Some(1)), "conflict /a current=2"),
        (Update("/a", "v3", None), "/a=v3 c1 m3"),
        (Create("/a", "x"), "exists /a"),
        (Update("/missing", "x", None), "not found /missing"),
        (Delete("/missing", None), "not found /missing"),
        (Delete("/a", Some(2)), "conflict /a current=3"),
        (Delete("/a", Some(3)), "/a=v3 c1 m4"),
        (Update("/a", "x", None), "not found /a"),
        (Delete("/a", None), "not found /a"),
        (Create("/a", "v4"), "/a=v4 c5 m5"),
        (Create("/b", "w"), "/b=w c6 m6"),
        (Delete("/b", None), "/b=w c6 m7"),
    ];
    for (i, (op, expected)) in steps.iter().enumerate() {
        let got = run(&*store, op).await;
        assert_eq!(show(&got), *expected, "step {i}");
        if let Ok(kv) = got {
            assert_eq!(store.current_revision().await.unwrap(), kv.mod_revision);
        }
    }
    let a = store.get("/a").await.unwrap();
    assert_eq!(a.map(|kv| show(&Ok(kv))).as_deref(), Some("/a=v4 c5 m5"));
    assert_eq!(store.get("/b").await.unwrap(), None);
    assert_eq!(store.get("/missing").await.unwrap(), None);

    // Refused writes leave no event and no hole in the revisions.
    let mut stream = store.watch("", 0).await.unwrap();
    let history: Vec<String> = next_events(&mut stream, 7)
        .await
        .iter()
        .map(show_event)
        .collect();
    assert_eq!(
        history,
        [
            "create /a=v1 c1 m1",
            "update /a=v2 c1 m2",
            "update /a=v3 c1 m3",
            "delete /a=v3 c1 m4",
            "create /a=v4 c5 m5",
            "create /b=w c6 m6",
            "delete /b=w c6 m7",
        ]
    );
    assert_eq!(stream.progress(), 7);
}

async fn list_is_sorted_by_prefix_at_a_revision(store: Arc<dyn Store>) {
    for key in [
        "/registry/pods/default/web",
        "/registry/podsx/z",
        "/registry/pods/default/api",
        "/registry/nodes/n1",
        "/registry/pods/kube/dns",
    ] {
        store.create(key, key.into()).await.unwrap();
    }
    store.delete("/registry/nodes/n1", None).await.unwrap();
    let cases: [(&str, &[&str]); 5] = [
        (
            "/registry/pods/",
            &[
                "/registry/pods/default/api",
                "/registry/pods/default/web",
                "/registry/pods/kube/dns",
            ],
        ),
        (
            "/registry/pods",
            &[
                "/registry/pods/default/api",
                "/registry/pods/default/web",
                "/registry/pods/kube/dns",
                "/registry/podsx/z",
            ],
        ),
        (
            "/registry/pods/default/",
            &["/registry/pods/default/api", "/registry/pods/default/web"],
        ),
        ("/registry/nodes/", &[]),
        ("/nothing", &[]),
    ];
    for (prefix, expected) in cases {
        let (items, revision) = store.list(prefix).await.unwrap();
        let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, expected, "prefix {prefix:?}");
        assert_eq!(revision, 6, "prefix {prefix:?}");
        assert!(items.iter().all(|kv| kv.value == kv.key.as_bytes()));
    }
}

async fn concurrent_writes_get_global_increasing_revisions(store: Arc<dyn Store>) {
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let key = format!("/w/{w}");
                let mut revisions = vec![store.create(&key, vec![]).await.unwrap().mod_revision];
                for _ in 0..24 {
                    let kv = store.update(&key, vec![], None).await.unwrap();
                    revisions.push(kv.mod_revision);
                }
                revisions
            })
        })
        .collect();
    let mut all = Vec::new();
    for writer in writers {
        let revisions = writer.await.unwrap();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
        all.extend(revisions);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<Revision>>());
    assert_eq!(store.current_revision().await.unwrap(), 100);
}

/// Writers racing on one key with compare-and-swap (as API clients do with resourceVersion):
/// writes committed together must still see each other, so no increment is lost, and a watch
/// sees every committed value once, in order.
async fn racing_conditional_updates_lose_nothing(store: Arc<dyn Store>) {
    store.create("/counter", b"0".to_vec()).await.unwrap();
    let mut watch = store.watch("/counter", 1).await.unwrap();
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..10 {
                    loop {
                        let kv = store.get("/counter").await.unwrap().unwrap();
                        let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                        let next = (n + 1).to_string().into_bytes();
                        match store.update("/counter", next, Some(kv.mod_revision)).await {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for w in writers {
        conflicts += w.await.unwrap();
    }
    let kv = store.get("/counter").await.unwrap().unwrap();
    assert_eq!(kv.value, b"80");
    assert_eq!(kv.mod_revision, 81);
    let seen: Vec<String> = next_events(&mut watch, 80)
        .await
        .iter()
        .map(|e| String::from_utf8(e.kv.value.clone()).unwrap())
        .collect();
    let expected: Vec<String> = (1..=80).map(|n| n.to_string()).collect();
    assert_eq!(seen, expected);
    // Every retry was a refused stale write: 80 successes plus the conflicts, nothing else.
    assert_eq!(
        store.current_revision().await.unwrap(),
        81,
        "{conflicts} conflicts"
    );
}

async fn watch_replays_then_follows_live_writes(store: Arc<dyn Store>) {
    let mut expected = Vec::new();
    for i in 0..10 {
        expected.push(store.create(&format!("/w/old{i}"), vec![i]).await.unwrap());
    }
    expected.drain(..5);
    let mut stream = store.watch("/w/", 5).await.unwrap();
    assert_eq!(stream.progress(), 5);

    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..200u32 {
                let key = format!("/w/live{}", i % 7);
                let value = i.to_le_bytes().to_vec();
                let kv = if i < 7 {
                    store.create(&key, value).await
                } else {
                    store.update(&key, value, None).await
                };
                written.push(kv.unwrap());
            }
            written
        })
    };
    let seen: Vec<KeyValue> = next_events(&mut stream, 205)
        .await
        .into_iter()
        .map(|e| e.kv)
        .collect();
    expected.extend(writer.await.unwrap());
    assert_eq!(seen, expected);
    let revisions: Vec<Revision> = seen.iter().map(|kv| kv.mod_revision).collect();
    assert_eq!(revisions, (6..=210).collect::<Vec<_>>());
    assert_eq!(stream.progress(), 210);
}

async fn watch_filters_by_prefix(store: Arc<dyn Store>) {
    // (prefix, after, expected revisions among the first five writes)
    let cases: [(&str, Revision, &[Revision]); 6] = [
        ("/a/", 0, &[1, 3]),
        ("/a", 0, &[1, 3, 4]),
        ("/b/", 2, &[5]),
        ("", 0, &[1, 2, 3, 4, 5]),
        ("", 3, &[4, 5]),
        ("/c/", 0, &[]),
    ];
    // Watches from revisions not reached yet wait for them.
    let mut streams = Vec::new();
    for (prefix, after, _) in cases {
        streams.push(store.watch(prefix, after).await.unwrap());
    }
    for key in ["/a/1", "/b/1", "/a/2", "/ab/1", "/b/2"] {
        store.create(key, vec![]).await.unwrap();
    }
    // Each case ends at a sentinel under its own prefix.
    let sentinel = |case: usize, prefix: &str| format!("{prefix}~end{case}");
    for (case, (prefix, _, _)) in cases.iter().enumerate() {
        store.create(&sentinel(case, prefix), vec![]).await.unwrap();
    }
    for (case, ((prefix, _, expected), mut stream)) in cases.into_iter().zip(streams).enumerate() {
        let sentinel = sentinel(case, prefix);
        let mut seen = Vec::new();
        loop {
            let event = next_event(&mut stream).await;
            assert!(event.kv.key.starts_with(prefix), "{prefix:?}: {event:?}");
            if event.kv.key == sentinel {
                break;
            }
            seen.push(event.revision());
        }
        seen.retain(|&r| r <= 5);
        assert_eq!(seen, expected, "prefix {prefix:?}");
    }
}

async fn progress_advances_over_non_matching_events(store: Arc<dyn Store>) {
    for key in ["/b/1", "/b/2", "/a/1", "/b/3"] {
        store.create(key, vec![]).await.unwrap();
    }
    let mut stream = store.watch("/a/", 0).await.unwrap();
    assert_eq!(
        stream.progress(),
        2,
        "the pending /a/1 at 3 is not yet returned"
    );
    assert_eq!(next_event(&mut stream).await.kv.key, "/a/1");
    assert_eq!(stream.progress(), 4);

    store.create("/b/4", vec![]).await.unwrap();
    store.create("/b/5", vec![]).await.unwrap();
    assert!(stream.next().now_or_never().is_none(), "nothing matches");
    assert_eq!(stream.progress(), 6);
    store.create("/a/2", vec![]).await.unwrap();
    assert_eq!(next_event(&mut stream).await.revision(), 7);
    assert_eq!(stream.progress(), 7);

    let cases = [
        ("/x/", 0, 7),
        ("/x/", 3, 7),
        ("/b/", 7, 7),
        ("/x/", 100, 100),
    ];
    for (prefix, after, progress) in cases {
        let stream = store.watch(prefix, after).await.unwrap();
        assert_eq!(stream.progress(), progress, "watch({prefix:?}, {after})");
    }
}

async fn old_revisions_are_compacted(store: Arc<dyn Store>) {
    for i in 0..20 {
        store.create(&format!("/k/{i:02}"), vec![]).await.unwrap();
    }
    for after in [0, 14] {
        match store.watch("/k/", after).await {
            Err(StoreError::Compacted {
                requested,
                compacted: 15,
            }) => assert_eq!(requested, after),
            other => panic!("watch after {after}: expected compacted, got {other:?}"),
        }
    }
    let mut stream = store.watch("/k/", 15).await.unwrap();
    let revisions: Vec<Revision> = next_events(&mut stream, 5)
        .await
        .iter()
        .map(Event::revision)
        .collect();
    assert_eq!(revisions, [16, 17, 18, 19, 20]);
    let (items, revision) = store.list("/k/").await.unwrap();
    assert_eq!((items.len(), revision), (20, 20), "compaction keeps data");
}

/// A value of 1 KiB; [`BIG_EVENT`] is what its event under `/big/NN` counts for.
const BIG: usize = 1024;
const BIG_EVENT: usize = "/big/00".len() + BIG + std::mem::size_of::<Event>();

#[test]
fn big_event_is_what_the_hub_counts() {
    let kv = KeyValue {
        key: "/big/00".into(),
        value: vec![0; BIG],
        create_revision: 1,
        mod_revision: 1,
    };
    let event = Event {
        kind: EventKind::Put,
        kv,
        created: true,
    };
    assert_eq!(event_bytes(&event), BIG_EVENT);
}

/// With room for 4 big events, 10 of them leave revisions 7 to 10 for watches to start after 6.
/// A list of more than gRPC's default 4 MiB: etcd's answer once failed to decode (30,000 pods
/// are tens of MiB). Values of 512 KiB stay below etcd's default request limit (1.5 MiB).
async fn a_list_larger_than_4_mib_is_answered(store: Arc<dyn Store>) {
    const VALUE: usize = 512 * 1024;
    for i in 0..10 {
        store
            .create(&format!("/many/{i:02}"), vec![b'x'; VALUE])
            .await
            .unwrap();
    }
    let (items, _) = store.list("/many/").await.expect("a 5 MiB list");
    assert_eq!(items.len(), 10);
    assert!(items.iter().all(|kv| kv.value.len() == VALUE));
}

async fn large_values_are_compacted_by_bytes(store: Arc<dyn Store>) {
    for i in 0..10 {
        store
            .create(&format!("/big/{i:02}"), vec![0; BIG])
            .await
            .unwrap();
    }
    match store.watch("/big/", 5).await {
        Err(StoreError::Compacted {
            requested: 5,
            compacted: 6,
        }) => {}
        other => panic!("expected compacted at 6, got {other:?}"),
    }
    let mut stream = store.watch("/big/", 6).await.unwrap();
    let revisions: Vec<Revision> = next_events(&mut stream, 4)
        .await
        .iter()
        .map(Event::revision)
        .collect();
    assert_eq!(revisions, [7, 8, 9, 10]);
}

async fn dropping_the_store_ends_watches(store: Arc<dyn Store>) {
    let mut stream = store.watch("/", 0).await.unwrap();
    store.create("/k", vec![]).await.unwrap();
    drop(store);
    assert_eq!(next_event(&mut stream).await.revision(), 1);
    let end = tokio::time::timeout(PATIENCE, stream.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

// ---- redb only: what survives a restart ----

fn reopen(path: &Path, window: impl Into<WatchWindow>) -> RedbStore {
    RedbStore::open(path, window).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_data_and_history_survive_reopen() {
    use Op::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kumo.redb");
    let store = reopen(&path, 100);
    let ops = [
        Create("/p/a", "1"),
        Create("/p/b", "1"),
        Update("/p/a", "2", Some(1)),
        Create("/q/x", "1"),
        Delete("/p/b", None),
        Create("/p/c", "1"),
        Update("/p/c", "2", None),
    ];
    for op in &ops {
        run(&store, op).await.unwrap();
    }
    let before_list = store.list("/").await.unwrap();
    let mut before = store.watch("/p/", 2).await.unwrap();
    let history = next_events(&mut before, 4).await;
    drop(store);

    let store = reopen(&path, 100);
    assert_eq!(store.current_revision().await.unwrap(), 7);
    assert_eq!(store.list("/").await.unwrap(), before_list);
    assert_eq!(store.get("/p/b").await.unwrap(), None);
    let a = store.get("/p/a").await.unwrap().unwrap();
    assert_eq!(show(&Ok(a)), "/p/a=2 c1 m3");

    // A watch from before the restart resumes with exactly the later events, then live ones.
    let mut after = store.watch("/p/", 2).await.unwrap();
    assert_eq!(next_events(&mut after, 4).await, history);
    assert_eq!(
        history.iter().map(show_event).collect::<Vec<_>>(),
        [
            "update /p/a=2 c1 m3",
            "delete /p/b=1 c2 m5",
            "create /p/c=1 c6 m6",
            "update /p/c=2 c6 m7",
        ]
    );
    let kv = store.create("/p/d", vec![]).await.unwrap();
    assert_eq!(kv.mod_revision, 8);
    assert_eq!(next_event(&mut after).await.kv, kv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_log_is_trimmed_to_the_window_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kumo.redb");
    let store = reopen(&path, 5);
    for i in 0..30 {
        store.create(&format!("/k/{i:02}"), vec![]).await.unwrap();
    }
    assert_eq!(store.logged_events().unwrap(), 5);
    drop(store);

    // (window on reopen, watch after, Ok(first..=last replayed) or Err(compacted))
    type Replay = Result<(Revision, Revision), Revision>;
    let cases: [(usize, Revision, Replay); 5] = [
        (5, 25, Ok((26, 30))),
        (5, 24, Err(25)),
        (3, 27, Ok((28, 30))),
        (3, 26, Err(27)),
        (100, 24, Err(25)),
    ];
    for (window, after, expected) in cases {
        let store = reopen(&path, window);
        let got = match store.watch("/k/", after).await {
            Ok(mut stream) => {
                let n = (30 - after) as usize;
                let events = next_events(&mut stream, n).await;
                Ok((events[0].revision(), events[n - 1].revision()))
            }
            Err(StoreError::Compacted { compacted, .. }) => Err(compacted),
            Err(e) => panic!("window {window}, after {after}: {e}"),
        };
        assert_eq!(got, expected, "window {window}, after {after}");
    }

    // A larger window grows the log again; a smaller one trims it a few events per write.
    let store = reopen(&path, 100);
    for i in 0..45 {
        store
            .create(&format!("/more/{i:02}"), vec![])
            .await
            .unwrap();
    }
    assert_eq!(store.logged_events().unwrap(), 50);
    drop(store);
    let store = reopen(&path, 5);
    let trimmed: Vec<u64> = {
        let mut sizes = Vec::new();
        for i in 0..7 {
            store.create(&format!("/trim/{i}"), vec![]).await.unwrap();
            sizes.push(store.logged_events().unwrap());
        }
        sizes
    };
    assert_eq!(trimmed, [43, 36, 29, 22, 15, 8, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_log_is_bounded_in_bytes_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kumo.redb");
    let window = WatchWindow::new(100, 4 * BIG_EVENT);
    let store = reopen(&path, window);
    for i in 0..10 {
        store
            .create(&format!("/big/{i:02}"), vec![0; BIG])
            .await
            .unwrap();
    }
    // The log trims what the hub dropped as of the commit before: revisions 6 to 10 stay.
    assert_eq!(store.logged_events().unwrap(), 5);
    drop(store);
    let store = reopen(&path, window);
    assert!(matches!(
        store.watch("/big/", 5).await,
        Err(StoreError::Compacted { compacted: 6, .. })
    ));
    let mut stream = store.watch("/big/", 6).await.unwrap();
    let revisions: Vec<Revision> = next_events(&mut stream, 4)
        .await
        .iter()
        .map(Event::revision)
        .collect();
    assert_eq!(revisions, [7, 8, 9, 10]);
    // Reopened with room for 2: only the newest 2 are read back.
    drop(stream);
    drop(store);
    let store = reopen(&path, WatchWindow::new(100, 2 * BIG_EVENT));
    assert!(matches!(
        store.watch("/big/", 7).await,
        Err(StoreError::Compacted { compacted: 8, .. })
    ));
}

#[test]
fn redb_open_rejects_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    match RedbStore::open(&path, 10) {
        Err(StoreError::Backend(_)) => {}
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn redb_file_is_private_and_tightened_on_open() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kumo.redb");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    drop(reopen(&path, 10));
    assert_eq!(mode(&path), 0o600);
    // A file left readable by an older kumo is tightened, and still opens as the same store.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(reopen(&path, 10));
    assert_eq!(mode(&path), 0o600);
}

// ---- etcd only: what a real cluster adds ----

async fn etcd_store(etcd: &TestEtcd) -> EtcdStore {
    let config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
    EtcdStore::connect(&config, 1000).await.unwrap()
}

/// A value over etcd's request limit (1.5 MiB by default) is the writer's fault, not an outage:
/// `TooLarge` (the API answers 413), and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_a_value_over_its_request_limit_as_too_large() {
    let etcd = TestEtcd::start().unwrap();
    let store = etcd_store(&etcd).await;
    match store.create("/huge", vec![b'x'; 2 * 1024 * 1024]).await {
        Err(StoreError::TooLarge(message)) => {
            assert!(message.contains("--max-request-bytes"), "{message}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(store.get("/huge").await.unwrap(), None);
    store.create("/small", b"x".to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_a_prompt_error_naming_the_endpoints() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoints = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1)),
    ];
    let mut config = EtcdConfig::new(endpoints.clone());
    config.connect_timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    match EtcdStore::connect(&config, 10).await {
        Err(StoreError::Backend(message)) => {
            assert!(
                message.contains(&endpoints.join(",")) && message.contains("unreachable"),
                "{message}"
            );
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Two stores on one etcd, as two API servers: one global order, and each one's watch sees the
/// other's writes in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_two_stores_share_one_order() {
    let etcd = TestEtcd::start().unwrap();
    let (a, b) = (etcd_store(&etcd).await, etcd_store(&etcd).await);
    let start = a.current_revision().await.unwrap();
    let mut watch_b = b.watch("/p/", start).await.unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        let (writer, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let kv = writer.create(&format!("/p/{i}"), vec![i]).await.unwrap();
        // A stale write through the other store is refused by etcd.
        let stale = other
            .update(&kv.key, vec![], Some(kv.mod_revision - 1))
            .await;
        assert!(
            matches!(&stale, Err(StoreError::Conflict { current, .. }) if *current == kv.mod_revision),
            "{stale:?}"
        );
        written.push(kv);
    }
    let seen: Vec<KeyValue> = next_events(&mut watch_b, 10)
        .await
        .into_iter()
        .map(|e| e.kv)
        .collect();
    assert_eq!(seen, written);
    assert_eq!(a.list("/p/").await.unwrap(), b.list("/p/").await.unwrap());
}

/// The member of `cluster` that leads it now, asked of each member in turn.
async fn etcd_leader(cluster: &TestEtcdCluster) -> usize {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        for i in 0..cluster.len() {
            let Ok(mut client) = etcd_client::Client::connect([cluster.endpoint(i)], None).await
            else {
                continue;
            };
            if let Ok(status) = client.status().await {
                let me = status.header().map(|h| h.member_id());
                if me == Some(status.leader()) {
                    return i;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "no etcd leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A three-member etcd whose leader is killed under a stream of writes through a store given
/// every member: the writes go on, and every acknowledged write is in the store and in its
/// watch, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_member_killed_under_writes_loses_no_acknowledged_write() {
    let mut cluster = TestEtcdCluster::start(3).unwrap();
    let store = Arc::new(
        EtcdStore::connect(&EtcdConfig::new(cluster.endpoints()), 10_000)
            .await
            .unwrap(),
    );
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/w/", start).await.unwrap();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<KeyValue>::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let (store, acked) = (store.clone(), acked.clone());
        tokio::spawn(async move {
            let mut failed = 0;
            for i in 0.. {
                if *stopped.borrow() {
                    break;
                }
                // A write refused while etcd elects a leader may still have been applied:
                // the next one takes a new key, and only acknowledged ones are counted.
                match store.create(&format!("/w/{i:05}"), vec![]).await {
                    Ok(kv) => acked.lock().unwrap().push(kv),
                    Err(_) => failed += 1,
                }
            }
            failed
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            while acked.lock().unwrap().len() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "writes stopped at {}",
                    acked.lock().unwrap().len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(50).await;
    let leader = etcd_leader(&cluster).await;
    cluster.kill(leader);
    let at_kill = acked_count();
    // Writes go on with two members of three.
    wait_for(at_kill + 100).await;
    let _ = stop.send(true);
    let failed = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    let (items, _) = store.list("/w/").await.unwrap();
    let there: std::collections::BTreeSet<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    let lost: Vec<&str> = acked
        .iter()
        .map(|kv| kv.key.as_str())
        .filter(|k| !there.contains(k))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {lost:?} ({failed} refused)"
    );
    // The store's watch went on across the member's death too: every write, in order (the
    // refused ones that were applied after all among them).
    let mut seen = Vec::new();
    while seen.len() < items.len() {
        seen.push(next_event(&mut watch).await.kv);
    }
    assert_eq!(seen, items);
    assert!(acked.iter().all(|kv| seen.contains(kv)));

    // The killed member, restarted on its data, catches up: read through it alone, the same.
    cluster.restart(leader).unwrap();
    let only = EtcdStore::connect(&EtcdConfig::new(vec![cluster.endpoint(leader)]), 10)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while only.list("/w/").await.map(|(l, _)| l).ok().as_ref() != Some(&items) {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted member never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// etcd going away: calls fail with a backend error naming it, and once it is back the store
/// and its watches carry on with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_fails_calls_then_recovers() {
    let mut etcd = TestEtcd::start().unwrap();
    let store = etcd_store(&etcd).await;
    let before = store.create("/o/before", vec![]).await.unwrap();
    let mut watch = store.watch("/o/", before.mod_revision).await.unwrap();
    etcd.kill();
    match store.create("/o/down", vec![]).await {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains(&etcd.endpoint), "{message}")
        }
        other => panic!("expected a backend error while etcd is down, got {other:?}"),
    }
    etcd.restart().unwrap();
    // The client reconnects by itself; the first calls may still fail while it does.
    let deadline = std::time::Instant::now() + PATIENCE;
    let after = loop {
        match store.create("/o/after", vec![]).await {
            Ok(kv) => break kv,
            Err(StoreError::Backend(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("etcd back, the store still fails: {e}"),
        }
    };
    assert_eq!(next_event(&mut watch).await.kv, after);
    assert_eq!(store.get("/o/before").await.unwrap(), Some(before));
}

/// A new store (an API server started later) serves watches from its own start: a watch
/// from before it answers `Compacted`, and the client relists as from a 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_from_before_the_store_started_is_compacted() {
    let etcd = TestEtcd::start().unwrap();
    let first = etcd_store(&etcd).await;
    let kv = first.create("/c/0", vec![]).await.unwrap();
    first.create("/c/1", vec![]).await.unwrap();
    let later = etcd_store(&etcd).await;
    match later.watch("/c/", kv.mod_revision).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!(
            (requested, compacted),
            (kv.mod_revision, kv.mod_revision + 1)
        ),
        other => panic!("expected compacted, got {other:?}"),
    }
    let (items, revision) = later.list("/c/").await.unwrap();
    assert_eq!(items.len(), 2);
    let mut watch = later.watch("/c/", revision).await.unwrap();
    let next = first.create("/c/2", vec![]).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv, next);
}

/// The periodic compaction compacts etcd's history (to the revision seen one interval earlier)
/// and keeps the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compacts_periodically() {
    let etcd = TestEtcd::start().unwrap();
    let store = Arc::new(etcd_store(&etcd).await);
    let first = store.create("/k", b"1".to_vec()).await.unwrap();
    store.update("/k", b"2".to_vec(), None).await.unwrap();
    store.compact_periodically(Duration::from_millis(200));
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    let old = etcd_client::GetOptions::new().with_revision(first.mod_revision as i64);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match raw.get("/k", Some(old.clone())).await {
            Err(e) if e.to_string().contains("compacted") => break,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!(
                "expected revision {} compacted, got {other:?}",
                first.mod_revision
            ),
        }
    }
    let kv = store.get("/k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"2");
}

/// etcd with its users on: the store reaches it as a user with a password; without one, or
/// with a wrong one, connecting fails with an error naming the endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_auth_needs_the_user_and_password() {
    let etcd = TestEtcd::start().unwrap();
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    raw.user_add("root", "s3cret", None).await.unwrap();
    raw.user_grant_role("root", "root").await.unwrap();
    raw.auth_enable().await.unwrap();

    let with = |user: Option<(&str, &str)>| {
        let mut config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
        config.user = user.map(|(u, p)| (u.to_owned(), p.to_owned()));
        config.connect_timeout = Duration::from_secs(3);
        config
    };
    let store = EtcdStore::connect(&with(Some(("root", "s3cret"))), 100)
        .await
        .unwrap();
    let kv = store.create("/auth/k", b"v".to_vec()).await.unwrap();
    let mut watch = store.watch("/auth/", kv.mod_revision - 1).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv, kv);

    for user in [None, Some(("root", "wrong"))] {
        match EtcdStore::connect(&with(user), 100).await {
            Err(StoreError::Backend(message)) => {
                assert!(message.contains(&etcd.endpoint), "{user:?}: {message}")
            }
            other => panic!("{user:?}: expected a backend error, got {other:?}"),
        }
    }
}

/// A write to a key that is not kumo's (not UTF-8) still moves the watch feed on: a watch
/// after it neither hangs nor misses the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_foreign_keys_do_not_stall_watches() {
    let etcd = TestEtcd::start().unwrap();
    let store = etcd_store(&etcd).await;
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    raw.put(vec![0xff, 0xfe], "x", None).await.unwrap();
    let now = store.current_revision().await.unwrap();
    let mut watch = store.watch("", now).await.unwrap();
    assert_eq!(watch.progress(), now);
    let kv = store.create("/k", vec![]).await.unwrap();
    assert_eq!(next_event(&mut watch).await.kv, kv);
}
