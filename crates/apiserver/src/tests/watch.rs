//! Watch streams: replay from a revision, initial ADDED events, selectors, 410, bookmarks,
//! and shutdown.

use super::*;

/// The lines of a watch response.
pub(super) struct Lines {
    body: Incoming,
    buf: Vec<u8>,
}

impl Lines {
    pub(super) async fn open(s: &Server, path: &str) -> Lines {
        let response = s.send(req("GET", path, None)).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        Lines {
            body: response.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ends.
    pub(super) async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line[..i]).expect("each line is json"));
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .expect("an event arrives in time");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(data) = frame.expect("the stream is intact").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event's type and object name.
    pub(super) async fn expect(&mut self, type_: &str, name: &str) -> Value {
        let event = self.next().await.expect("the stream goes on");
        assert_eq!(
            (
                event["type"].as_str(),
                event["object"]["metadata"]["name"].as_str()
            ),
            (Some(type_), Some(name)),
            "{event}"
        );
        event
    }
}

#[tokio::test]
async fn watch_from_a_revision_replays_in_order() {
    let s = Server::start().await;
    let a = s.create(PODS, pod("a")).await;
    let patched = s
        .check(
            req(
                "PATCH",
                &format!("{PODS}/a"),
                Some(json!({"metadata": {"labels": {"x": "1"}}})),
            ),
            200,
            "",
        )
        .await;
    s.create("/api/v1/nodes", node("n1")).await; // another prefix: not in this watch
    let deleted = s
        .check(req("DELETE", &format!("{PODS}/a"), None), 200, "")
        .await;

    let mut w = Lines::open(
        &s,
        &format!("{PODS}?watch=true&resourceVersion={}", rv(&a) - 1),
    )
    .await;
    let e = w.expect("ADDED", "a").await;
    assert_eq!(rv(&e["object"]), rv(&a));
    let e = w.expect("MODIFIED", "a").await;
    assert_eq!(e["object"]["metadata"]["labels"]["x"], "1");
    assert_eq!(rv(&e["object"]), rv(&patched));
    let e = w.expect("DELETED", "a").await;
    assert_eq!(rv(&e["object"]), rv(&deleted));
    assert!(
        rv(&deleted) > rv(&patched) + 1,
        "the node's write came between"
    );
    // Then live events.
    s.create(PODS, pod("b")).await;
    w.expect("ADDED", "b").await;
}

#[tokio::test]
async fn watch_without_revision_lists_first_and_filters() {
    let s = Server::start().await;
    s.create(PODS, pod("a")).await;
    let mut db = pod("b");
    db["metadata"]["labels"] = json!({"app": "db"});
    s.create(PODS, db).await;

    let mut all = Lines::open(&s, &format!("{PODS}?watch=1")).await;
    all.expect("ADDED", "a").await;
    all.expect("ADDED", "b").await;
    let mut web = Lines::open(
        &s,
        &format!("{PODS}?watch=1&resourceVersion=0&labelSelector=app%3Dweb"),
    )
    .await;
    web.expect("ADDED", "a").await;

    s.create(PODS, pod("c")).await;
    all.expect("ADDED", "c").await;
    web.expect("ADDED", "c").await;
    // b starts matching: ADDED; a stops matching: DELETED.
    s.check(
        req(
            "PATCH",
            &format!("{PODS}/b"),
            Some(json!({"metadata": {"labels": {"app": "web"}}})),
        ),
        200,
        "",
    )
    .await;
    s.check(
        req(
            "PATCH",
            &format!("{PODS}/a"),
            Some(json!({"metadata": {"labels": {"app": "db"}}})),
        ),
        200,
        "",
    )
    .await;
    all.expect("MODIFIED", "b").await;
    all.expect("MODIFIED", "a").await;
    web.expect("ADDED", "b").await;
    web.expect("DELETED", "a").await;
    // Deleting a (no longer matching) is not sent to the filtered watch.
    s.check(req("DELETE", &format!("{PODS}/a"), None), 200, "")
        .await;
    s.check(req("DELETE", &format!("{PODS}/c"), None), 200, "")
        .await;
    all.expect("DELETED", "a").await;
    all.expect("DELETED", "c").await;
    web.expect("DELETED", "c").await;

    // Field selectors, on cluster-scoped kinds too.
    let mut nodes = Lines::open(
        &s,
        "/api/v1/nodes?watch=true&fieldSelector=metadata.name%3Dn2",
    )
    .await;
    s.create("/api/v1/nodes", node("n1")).await;
    s.create("/api/v1/nodes", node("n2")).await;
    nodes.expect("ADDED", "n2").await;
}

#[tokio::test]
async fn compacted_revision_is_gone() {
    let s = Server::with(MemStore::with_window(2), Duration::from_secs(5)).await;
    for i in 0..5 {
        s.create(PODS, pod(&format!("p{i}"))).await;
    }
    let status = s
        .check(
            req("GET", &format!("{PODS}?watch=true&resourceVersion=1"), None),
            410,
            "too old resource version: 1 (",
        )
        .await;
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["kind"], "Status");
}

#[tokio::test]
async fn a_revision_dropped_for_bytes_is_gone() {
    // Room for many events by count, but only a few pods' worth of bytes.
    let window = kumo_store::WatchWindow::new(10_000, 8 * 1024);
    let s = Server::with(MemStore::with_window(window), Duration::from_secs(5)).await;
    let mut big = pod("big");
    big["metadata"]["annotations"] = json!({"filler": "x".repeat(3000)});
    let mut revisions = Vec::new();
    for i in 0..6 {
        let mut p = big.clone();
        p["metadata"]["name"] = json!(format!("big{i}"));
        revisions.push(rv(&s.create(PODS, p).await));
    }
    s.check(
        req(
            "GET",
            &format!("{PODS}?watch=true&resourceVersion={}", revisions[0]),
            None,
        ),
        410,
        "too old resource version",
    )
    .await;
    // The newest are still there to resume from.
    let mut w = Lines::open(
        &s,
        &format!("{PODS}?watch=true&resourceVersion={}", revisions[4]),
    )
    .await;
    w.expect("ADDED", "big5").await;
}

#[tokio::test]
async fn bookmarks_report_progress() {
    let s = Server::with(MemStore::new(), Duration::from_millis(50)).await;
    let a = s.create(PODS, pod("a")).await;
    let mut w = Lines::open(
        &s,
        &format!(
            "{PODS}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
            rv(&a)
        ),
    )
    .await;
    let n = s.create("/api/v1/nodes", node("n1")).await; // advances the store, not this prefix
    loop {
        let e = w.next().await.unwrap();
        assert_eq!(e["type"], "BOOKMARK", "{e}");
        assert_eq!(e["object"]["kind"], "Pod");
        assert_eq!(e["object"]["apiVersion"], "v1");
        if rv(&e["object"]) == rv(&n) {
            break;
        }
        assert_eq!(rv(&e["object"]), rv(&a));
    }
    // Without allowWatchBookmarks, none: the next line is the next event.
    let mut quiet = Lines::open(&s, &format!("{PODS}?watch=true&resourceVersion={}", rv(&n))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.create(PODS, pod("b")).await;
    quiet.expect("ADDED", "b").await;
}

#[tokio::test]
async fn watches_end_on_timeout_and_shutdown() {
    let s = Server::start().await;
    let mut timed = Lines::open(&s, &format!("{PODS}?watch=true&timeoutSeconds=1")).await;
    assert_eq!(timed.next().await, None);
    let mut w = Lines::open(&s, &format!("{PODS}?watch=true")).await;
    s.stop().await;
    assert_eq!(
        w.next().await,
        None,
        "the stream ends when the server stops"
    );
}

/// Polls `cond` until it holds, failing after 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn client_disconnect_ends_the_watch() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_keep, rx) = tokio::sync::watch::channel(false);
    let config = Config {
        bookmark_interval: Duration::from_millis(50),
        ..Config::new(Arc::new(MemStore::new()), vec![TOKEN.to_string()])
    };
    let app = Arc::new(crate::App::new(config, rx));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = crate::build(Arc::clone(&app));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let open = || app.open_streams.load(Ordering::Relaxed);

    // Idle (nothing ever written after the headers) and busy (bookmarks) watches alike.
    for query in ["watch=true", "watch=true&allowWatchBookmarks=true"] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET {PODS}?{query} HTTP/1.1\r\nHost: kumo\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        eventually("the watch is open", || open() == 1).await;
        drop(tcp);
        eventually(
            &format!("the {query} watch ends after the client went"),
            || open() == 0,
        )
        .await;
    }
}

#[tokio::test]
async fn compaction_mid_stream_ends_with_an_error_line() {
    use kumo_store::Store;

    let store = Arc::new(MemStore::with_window(2));
    let (_keep, rx) = tokio::sync::watch::channel(false);
    let config = Config::new(store.clone(), vec![TOKEN.to_string()]);
    let app = Arc::new(crate::App::new(config, rx));
    let params = crate::watch::WatchParams {
        kind: crate::Kind::lookup("", "v1", "pods").unwrap(),
        ns: None,
        label_selector: Default::default(),
        field_selector: Default::default(),
        resource_version: None,
        bookmarks: false,
        timeout: None,
    };
    let response = crate::watch::watch(&app, params).await.unwrap();
    // More writes than the store keeps, before the stream reads any: it falls behind.
    for i in 0..5 {
        store
            .create(&format!("/registry/core/pods/default/p{i}"), b"{}".to_vec())
            .await
            .unwrap();
    }
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .expect("the stream ends")
        .unwrap()
        .to_bytes();
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
    assert_eq!(
        app.open_streams.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn a_watch_outlives_the_idle_and_header_timeouts() {
    let limits = kumo_serve::Limits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        max_anonymous: 16,
    };
    let s = Server::with_limits(MemStore::new(), Duration::from_secs(5), limits).await;
    let mut lines = Lines::open(&s, &format!("{PODS}?watch=true")).await;
    // Quiet for more than three times both timeouts: the stream is a response in flight, not
    // an idle connection.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.create(PODS, pod("late")).await;
    lines.expect("ADDED", "late").await;
    s.stop().await;
}
