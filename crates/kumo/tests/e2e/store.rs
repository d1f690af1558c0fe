//! Durability and watches across restarts and crashes of the server.

use crate::harness::*;
use kumo_api::{Namespace, ObjectMeta};
use kumo_client::{ListParams, Watched};

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta::named(None, name),
        ..Default::default()
    }
}

/// Reads watch events until the stream ends, returning (name, revision) of ADDED namespaces.
async fn drain(
    mut w: kumo_client::WatchStream<Namespace>,
    until: usize,
    seen: &mut Vec<(String, u64)>,
) {
    while seen.len() < until {
        match w.next().await {
            Some(Ok(Watched::Added(ns))) => {
                seen.push((ns.metadata.name.clone(), ns.metadata.revision()))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_every_change_in_order_across_a_restart() {
    let mut c = Cluster::up(&[]);
    let client = c.client();
    let start = client
        .list::<Namespace>(None, &ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let w = client
        .watch::<Namespace>(None, &ListParams::default(), &start)
        .await
        .unwrap();
    for i in 0..20 {
        client
            .create(&namespace(&format!("before-{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    drain(w, 20, &mut seen).await;
    let last = seen.last().unwrap().1.to_string();

    c.restart();
    let client = c.client();
    let w = client
        .watch::<Namespace>(None, &ListParams::default(), &last)
        .await
        .unwrap();
    for i in 0..20 {
        client
            .create(&namespace(&format!("after-{i}")))
            .await
            .unwrap();
    }
    drain(w, 40, &mut seen).await;
    let expected: Vec<String> = (0..20)
        .map(|i| format!("before-{i}"))
        .chain((0..20).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(
        seen.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions must increase: {seen:?}"
    );

    // A watch from before the restart replays the whole history, in order, without gaps.
    let w = client
        .watch::<Namespace>(None, &ListParams::default(), &start)
        .await
        .unwrap();
    let mut replay = Vec::new();
    drain(w, 40, &mut replay).await;
    assert_eq!(replay, seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_loses_no_acknowledged_write() {
    let mut c = Cluster::up(&[]);
    let (acked, enough, writer) = write_namespaces_until_refused(c.client(), 60);
    // Crash once a good number of writes are acknowledged, while more are in flight.
    enough.notified().await;
    c.kill9();
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    c.relaunch();
    assert_no_acknowledged_write_lost(&c.client(), &acked).await;
}
