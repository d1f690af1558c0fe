//! A client of two API servers over one shared in-memory store: requests and watches move to
//! the other server when one stops answering (cut like a killed process: open connections
//! dropped, new ones refused) or answers `503`, and stay there.

mod common;
use common::proxy;

use kumo_api::Pod;
use kumo_client::{Change, Client, ClientConfig, ClientError, Informer, ListParams, Watched};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

const TOKEN: &str = "t0ken";

/// An API server on `store`.
async fn server(store: Arc<kumo_store::MemStore>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = kumo_apiserver::Config::new(store, vec![TOKEN.into()]);
    tokio::spawn(kumo_apiserver::serve(
        listener,
        config,
        std::future::pending(),
    ));
    addr
}

/// A server whose store is away: it answers every request `503` and counts them.
async fn unavailable() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":503,"reason":"ServiceUnavailable","message":"storage unavailable: etcd away"}"#;
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, asked)
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn client(servers: &[SocketAddr]) -> Client {
    Client::new(&ClientConfig {
        server: url(servers[0]),
        servers: servers[1..].iter().map(|a| url(*a)).collect(),
        token: TOKEN.into(),
        ..Default::default()
    })
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

/// Waits until `cond` holds, failing after `within`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_move_to_the_other_server_and_stay_there() {
    let store = Arc::new(kumo_store::MemStore::new());
    let (a, cut_a) = proxy(server(store.clone()).await).await;
    let b = server(store).await;
    let c = client(&[a, b]);
    c.create(&pod("before")).await.unwrap();
    assert_eq!(c.server(), url(a));

    cut_a.cut().await;
    // A read that breaks on the dead server is asked again of the next one.
    let got = c.get::<Pod>("default", "before").await.unwrap();
    assert_eq!(got.metadata.name, "before");
    assert_eq!(
        c.server(),
        url(b),
        "the client sticks to the server that answered"
    );
    c.create(&pod("after")).await.unwrap();
    assert_eq!(c.server(), url(b));
    // Clones share the choice.
    assert_eq!(c.clone().server(), url(b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_503_gives_way_and_is_not_asked_again() {
    let store = Arc::new(kumo_store::MemStore::new());
    let (away, asked) = unavailable().await;
    let b = server(store).await;
    let c = client(&[away, b]);
    c.create(&pod("p")).await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(c.server(), url(b));
    for _ in 0..3 {
        c.get::<Pod>("default", "p").await.unwrap();
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the server that answered 503 is not asked again while the other answers"
    );

    // Alone, the 503 is the answer, with its reason.
    let err = client(&[away])
        .get::<Pod>("default", "p")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(503));
    assert_eq!(err.to_string(), "storage unavailable: etcd away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_moves_even_a_write_and_with_every_server_gone_the_last_error_is_told()
{
    let gone: Vec<SocketAddr> = {
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(l.local_addr().unwrap());
        }
        addrs
    };
    // A write that cannot connect goes to the next server: it cannot have been carried out.
    let b = server(Arc::new(kumo_store::MemStore::new())).await;
    let c = client(&[gone[0], b]);
    c.create(&pod("p")).await.unwrap();
    assert_eq!(c.server(), url(b));

    let err = client(&gone).get::<Pod>("default", "p").await.unwrap_err();
    match err {
        ClientError::Connect { server, reason } => {
            assert_eq!(server, url(gone[1]));
            assert_eq!(reason, "connection refused");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

/// Follows pods as `kumo get -w` does: watch from a revision, and after a broken stream watch
/// again from the last revision seen. Every event is recorded as `TYPE name`.
async fn follow(client: Client, mut rv: String, events: Arc<std::sync::Mutex<Vec<String>>>) {
    loop {
        let Ok(mut stream) = client.watch::<Pod>(None, &ListParams::default(), &rv).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while let Some(Ok(item)) = stream.next().await {
            let (kind, pod) = match item {
                Watched::Added(p) => ("ADDED", p),
                Watched::Modified(p) => ("MODIFIED", p),
                Watched::Deleted(p) => ("DELETED", p),
                Watched::Bookmark(r) => {
                    rv = r;
                    continue;
                }
                Watched::Error(status) => panic!("watch error: {}", status.message),
            };
            rv = pod.metadata.resource_version.clone().unwrap_or_default();
            events
                .lock()
                .unwrap()
                .push(format!("{kind} {}", pod.metadata.name));
        }
    }
}

/// Takes the changes that have arrived, by pod name.
fn drain(rx: &mut mpsc::UnboundedReceiver<Change<Pod>>, seen: &mut BTreeMap<String, usize>) {
    while let Ok(change) = rx.try_recv() {
        match change {
            Change::Applied(p) => *seen.entry(p.metadata.name.clone()).or_default() += 1,
            Change::Deleted(p) => panic!("unexpected deletion of {}", p.metadata.name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_on_the_other_server_without_a_relist_or_a_lost_or_repeated_event() {
    const N: usize = 40;
    let store = Arc::new(kumo_store::MemStore::new());
    let (a, cut_a) = proxy(server(store.clone()).await).await;
    let b = server(store).await;
    let writer = client(&[b]);
    let (informer, mut rx) = Informer::<Pod>::start(client(&[a, b]), None, ListParams::default());
    informer.wait_synced().await;
    let watcher = client(&[a, b]);
    let start = watcher
        .list::<Pod>(None, &ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let following = tokio::spawn(follow(watcher.clone(), start, events.clone()));
    let mut seen = BTreeMap::new();
    for i in 0..N / 2 {
        writer.create(&pod(&format!("p{i:02}"))).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "the first half", || {
        drain(&mut rx, &mut seen);
        seen.len() == N / 2 && events.lock().unwrap().len() == N / 2
    })
    .await;
    assert_eq!(watcher.server(), url(a));

    // Server A dies with the watches open; the rest is created while they move to B. The last
    // pod marks the end: a watch is ordered, so anything repeated or late comes before it.
    cut_a.cut().await;
    for i in N / 2..N {
        writer.create(&pod(&format!("p{i:02}"))).await.unwrap();
    }
    wait_until(Duration::from_secs(10), "every pod", || {
        drain(&mut rx, &mut seen);
        seen.len() == N && events.lock().unwrap().len() >= N
    })
    .await;
    following.abort();
    assert_eq!(watcher.server(), url(b));
    let expected: Vec<String> = (0..N).map(|i| format!("ADDED p{i:02}")).collect();
    assert_eq!(*events.lock().unwrap(), expected);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    assert_eq!(informer.list().len(), N);
    assert_eq!(informer.lists(), 1, "the informer resumed without a relist");
}
