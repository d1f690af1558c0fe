//! A writer killed with SIGKILL mid-stream loses no acknowledged write, on redb and on etcd.
//!
//! The test re-runs its own executable as the writer (told so by an environment variable), reads
//! the revisions it acknowledges, kills it at an arbitrary point, reopens the file (or kills and
//! restarts etcd too) and checks.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use kumo_store::test_etcd::TestEtcd;
use kumo_store::{EtcdConfig, EtcdStore, RedbStore, Store};

const CHILD_ENV: &str = "KUMO_STORE_CRASH_WRITER";
const ACKS_BEFORE_KILL: usize = 100;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match std::env::var_os(CHILD_ENV) {
        Some(target) => {
            let target = target.to_str().expect("utf-8 target").to_owned();
            match target.strip_prefix("etcd=") {
                Some(endpoint) => runtime.block_on(async {
                    let config = EtcdConfig::new(vec![endpoint.to_owned()]);
                    let store = EtcdStore::connect(&config, 1000).await.expect("connect");
                    write_forever(&store).await
                }),
                None => runtime.block_on(async {
                    let store = RedbStore::open(Path::new(&target), 1000).expect("open");
                    write_forever(&store).await
                }),
            }
        }
        None => {
            runtime.block_on(crash_and_recover());
            runtime.block_on(crash_and_recover_on_etcd());
            // A closing line CI reads: this binary has its own harness.
            println!("crash: 2 passed, 0 failed");
        }
    }
}

/// The child: create `/crash/{i}` = i, printing "revision i" once each write returned.
async fn write_forever(store: &dyn Store) {
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let kv = store
            .create(&format!("/crash/{i:08}"), i.to_string().into())
            .await;
        let kv = kv.expect("create");
        writeln!(out, "{} {i}", kv.mod_revision).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Runs the writer against `target` until it has acknowledged enough, then kills it with
/// SIGKILL mid-stream; returns the (revision, index) pairs it acknowledged.
fn write_then_kill(target: &std::ffi::OsStr) -> Vec<(u64, u64)> {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, target)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut acked = Vec::new();
    while acked.len() < ACKS_BEFORE_KILL {
        let line = lines.next().expect("writer ended early").expect("read");
        let (revision, i) = line.split_once(' ').expect("revision and index");
        acked.push((revision.parse::<u64>().unwrap(), i.parse::<u64>().unwrap()));
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    acked
}

/// Every acknowledged write is there with the revision it was acknowledged at.
async fn check_acked(store: &dyn Store, acked: Vec<(u64, u64)>) {
    for (revision, i) in acked {
        let kv = store.get(&format!("/crash/{i:08}")).await.unwrap();
        let kv = kv.unwrap_or_else(|| panic!("acknowledged write {i} lost"));
        assert_eq!(
            (kv.mod_revision, kv.value),
            (revision, i.to_string().into_bytes())
        );
    }
}

/// The writer and etcd both killed with SIGKILL: once etcd restarts on its data, every write
/// the writer saw acknowledged is there, and nothing else but whole writes.
async fn crash_and_recover_on_etcd() {
    let mut etcd = TestEtcd::start().expect("etcd");
    let target = format!("etcd={}", etcd.endpoint);
    let acked = write_then_kill(target.as_ref());
    etcd.kill();
    etcd.restart().expect("etcd restarts on its data");
    let config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
    let store = EtcdStore::connect(&config, 1000).await.expect("reconnect");
    let current = store.current_revision().await.unwrap();
    let (items, listed_at) = store.list("/crash/").await.unwrap();
    assert_eq!(listed_at, current);
    // An empty etcd is at revision 1; each create took the next one.
    assert_eq!(
        items.len() as u64,
        current - 1,
        "one key per committed write"
    );
    assert!(items.len() >= ACKS_BEFORE_KILL, "{} keys", items.len());
    check_acked(&store, acked).await;
}

async fn crash_and_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kumo.redb");
    let acked = write_then_kill(path.as_os_str());

    let store = RedbStore::open(&path, 1000).expect("reopen after kill");
    let current = store.current_revision().await.unwrap();
    let (items, listed_at) = store.list("/crash/").await.unwrap();
    assert_eq!(listed_at, current);
    assert!(current >= ACKS_BEFORE_KILL as u64, "current {current}");
    assert_eq!(items.len() as u64, current, "one key per committed write");
    check_acked(&store, acked).await;
    // The event log is whole: a watch from 0 replays every committed write in order.
    let mut stream = store.watch("/crash/", 0).await.unwrap();
    for expected in 1..=current {
        let event = stream.next().await.unwrap().unwrap();
        assert_eq!(event.revision(), expected);
    }
    assert_eq!(stream.progress(), current);
}
