//! A writer killed with SIGKILL mid-stream loses no acknowledged write.
//!
//! The test re-runs its own executable as the writer (told so by an environment variable), reads
//! the revisions it acknowledges, kills it at an arbitrary point, reopens the file and checks.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use kumo_store::{RedbStore, Store};

const CHILD_ENV: &str = "KUMO_STORE_CRASH_WRITER";
const ACKS_BEFORE_KILL: usize = 100;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match std::env::var_os(CHILD_ENV) {
        Some(path) => runtime.block_on(write_forever(Path::new(&path))),
        None => {
            runtime.block_on(crash_and_recover());
            // A closing line CI reads: this binary has its own harness.
            println!("crash: 1 passed, 0 failed");
        }
    }
}

/// The child: create `/crash/{i}` = i, printing "revision i" once each write returned.
async fn write_forever(path: &Path) {
    let store = RedbStore::open(path, 1000).expect("open");
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

async fn crash_and_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kumo.redb");
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, &path)
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

    let store = RedbStore::open(&path, 1000).expect("reopen after kill");
    let current = store.current_revision().await.unwrap();
    let (items, listed_at) = store.list("/crash/").await.unwrap();
    assert_eq!(listed_at, current);
    assert!(current >= ACKS_BEFORE_KILL as u64, "current {current}");
    assert_eq!(items.len() as u64, current, "one key per committed write");
    for (revision, i) in acked {
        let kv = store.get(&format!("/crash/{i:08}")).await.unwrap();
        let kv = kv.unwrap_or_else(|| panic!("acknowledged write {i} lost"));
        assert_eq!(
            (kv.mod_revision, kv.value),
            (revision, i.to_string().into_bytes())
        );
    }
    // The event log is whole: a watch from 0 replays every committed write in order.
    let mut stream = store.watch("/crash/", 0).await.unwrap();
    for expected in 1..=current {
        let event = stream.next().await.unwrap().unwrap();
        assert_eq!(event.revision(), expected);
    }
    assert_eq!(stream.progress(), current);
}
