//! Releases and rollouts: blue-green and rolling changes under load, abandoned releases,
//! rollback, scaling, one-off runs, and image apps deployed with `kumo deploy`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_config_changes_abandon_rollback_and_one_off_runs() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    c.apply("web.json", &app_manifest("web", 2, "1"));
    wait_app(&client, "web", "v1 serving", serving(1, 2)).await;

    // Constant load while the config changes: no request fails, and the answers go from the
    // old config to the new one, never back.
    reaches_all(router, "web.test", &ready_names(&client, "web").await).await;
    let (follower, lines) = follow_logs(&c, "app/web");
    let load = Load::start(router, "web.test");
    let out = ok(&c.kumo(&["config", "set", "web", "V=2"]));
    assert!(out.contains("Set V: release v2 of app web"), "{out}");
    wait_app(&client, "web", "v2 serving", serving(2, 2)).await;
    // Once the router follows the switch, v2 answers; then stop.
    answers(router, "web.test", |body| body.ends_with(" 2\n")).await;
    let load = load.stop().await;
    assert!(load.len() > 10, "the load ran: {}", load.len());
    assert_eq!(versions(&load), vec!["1", "2"]);
    // `kumo logs app/web -f` showed the old replicas and picked up the new ones.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + T;
    while seen.len() < 4 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("log lines from every replica");
        if let Some((pod, text)) = line.split_once("| ") {
            if text.starts_with("listening on") {
                seen.insert(pod.to_string());
            }
        }
    }
    assert_eq!(
        seen.iter().filter(|p| p.starts_with("web-v2-web-")).count(),
        2,
        "{seen:?}"
    );
    drop(follower);

    // A release that never gets ready is abandoned; v2 keeps serving throughout. (A shorter
    // deadline for it: the deploy policy is not part of a release.)
    let patch = serde_json::json!({"spec": {"deploy": {"timeoutSeconds": 6}}});
    client.patch::<App>("default", "web", &patch).await.unwrap();
    let out = ok(&c.kumo(&["config", "set", "web", "UNHEALTHY=1"]));
    assert!(out.contains("release v3"), "{out}");
    let app = wait_app(&client, "web", "v3 abandoned", |a| {
        a.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Abandoned")
    })
    .await;
    let status = app.status.unwrap();
    assert_eq!(status.active_release, Some(2));
    assert!(status.message.unwrap().contains("release v3 abandoned"));
    let (code, body) = get(router, "web.test", "/").await.unwrap();
    assert_eq!((code, body.split_whitespace().nth(1)), (200, Some("2")));
    let releases = ok(&c.kumo(&["releases", "web"]));
    assert!(releases.contains("Abandoned"), "{releases}");
    assert!(releases.contains("Set UNHEALTHY"), "{releases}");
    let described = ok(&c.kumo(&["describe", "app", "web"]));
    assert!(described.contains("ReleaseAbandoned"), "{described}");
    assert!(described.contains("Traffic switched to v2"), "{described}");

    let patch = serde_json::json!({"spec": {"deploy": {"timeoutSeconds": 60}}});
    client.patch::<App>("default", "web", &patch).await.unwrap();

    // Rolling back to an unknown release changes nothing.
    let bad = c.kumo(&["rollback", "web", "v9"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("app web has no release v9"), "{err}");
    let count = client
        .list::<Release>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 3);

    // Rollback restores the config of v1 (UNHEALTHY gone, V=1), as release v4.
    let out = ok(&c.kumo(&["rollback", "web", "v1"]));
    assert!(out.contains("Rollback to v1: release v4"), "{out}");
    assert!(out.contains("v4 is serving"), "{out}");
    let app: App = client.get("default", "web").await.unwrap();
    assert_eq!(app.spec.env.get("V").map(String::as_str), Some("1"));
    assert!(!app.spec.env.contains_key("UNHEALTHY"));
    answers(router, "web.test", |body| body.ends_with(" 1\n")).await;
    let config = ok(&c.kumo(&["config", "web"]));
    assert_eq!(config, "V=1\n");

    // Scaling is not a release.
    ok(&c.kumo(&["scale", "web", "web=3"]));
    wait_app(&client, "web", "3 replicas of v4", serving(4, 3)).await;
    let count = client
        .list::<Release>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 4);
    let bad = c.kumo(&["scale", "web", "db=1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("app web has no process \"db\""));

    // A one-off run in the current release's config returns its exit code.
    let run = c.kumo(&["run", "web", "--", "/bin/sh", "-c", "echo hi $V; exit 3"]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hi 1\n");
    let run = c.kumo(&["run", "web", "--", "/bin/true"]);
    assert_eq!(run.status.code(), Some(0));

    // The listing verbs.
    let apps = ok(&c.kumo(&["apps"]));
    assert!(
        apps.contains("web") && apps.contains("v4") && apps.contains("3/3"),
        "{apps}"
    );
    assert_eq!(ok(&c.kumo(&["open", "web"])), "http://web.test/\n");
    let logs = ok(&c.kumo(&["logs", "app/web", "--process", "web"]));
    assert_eq!(logs.matches("listening on").count(), 3, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_apps_run_under_runc_and_deploy_follows_the_rollout() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (v1, _) = registry.push_busybox("web:1").expect("push busybox");
    let (v2, _) = registry.push_busybox("web:2").expect("push busybox");
    let (c, router) = cluster_with_router();
    let client = c.client();
    let script = "mkdir -p /www && echo $HOSTNAME $V > /www/index.html && exec /bin/busybox httpd -f -p $PORT -h /www";
    let app = serde_json::json!({
        "apiVersion": "kumo.dev/v1", "kind": "App", "metadata": {"name": "box"},
        "spec": {
            "image": v1,
            "processes": {"web": {"command": ["/bin/busybox", "sh", "-c", script], "replicas": 2, "port": 8080}},
            "env": {"V": "one"},
            "healthcheck": {"path": "/"},
            "domains": ["box.test"],
            "deploy": {"drainSeconds": 1, "timeoutSeconds": 30}
        }
    });
    c.apply("box.json", &app.to_string());
    wait_app(&client, "box", "v1 serving", serving(1, 2)).await;
    // Each replica on its own pod IP, PORT being the declared port.
    let pods = web_pods(&client, "box").await;
    for p in &pods {
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("pod IP");
        assert!(ip.starts_with("10."), "{ip}");
    }
    let names: std::collections::BTreeSet<String> =
        pods.iter().map(|p| p.metadata.name.clone()).collect();
    reaches_all(router, "box.test", &names).await;

    let out = ok(&c.kumo(&["deploy", "box", "--image", &v2]));
    assert!(
        out.contains(&format!("Deploy {v2}: release v2 of app box")),
        "{out}"
    );
    assert!(out.contains("v2 is serving"), "{out}");
    answers(router, "box.test", |body| body.starts_with("box-v2-web-")).await;
    let releases = ok(&c.kumo(&["releases", "box"]));
    assert!(releases.contains(&format!("Deploy {v2}")), "{releases}");

    // A one-off run in the image of the current release, under runc.
    let run = c.kumo(&[
        "run",
        "box",
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        "echo $V $KUMO_RELEASE; exit 4",
    ]);
    assert_eq!(
        run.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout), "one v2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_and_scale_down_drain_without_failing_requests() {
    let (c, router) = cluster_with_router();
    let client = c.client();
    let mut app: serde_json::Value = serde_json::from_str(&app_manifest("roll", 3, "1")).unwrap();
    app["spec"]["deploy"]["strategy"] = serde_json::json!("Rolling");
    c.apply("roll.json", &app.to_string());
    wait_app(&client, "roll", "v1 serving", serving(1, 3)).await;

    // One replica at a time; both versions serve meanwhile; no request fails.
    reaches_all(router, "roll.test", &ready_names(&client, "roll").await).await;
    let load = Load::start(router, "roll.test");
    ok(&c.kumo(&["config", "set", "roll", "V=2"]));
    wait_app(&client, "roll", "v2 serving", serving(2, 3)).await;
    let deadline = tokio::time::Instant::now() + T;
    while web_pods(&client, "roll").await.len() > 3 {
        assert!(tokio::time::Instant::now() < deadline, "old replicas stay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = load.stop().await;
    let v = versions(&seen);
    assert_eq!(v.first().map(String::as_str), Some("1"), "{v:?}");
    assert_eq!(v.last().map(String::as_str), Some("2"), "{v:?}");

    // Scaling down drains the replicas it removes: still no failed request.
    let load = Load::start(router, "roll.test");
    ok(&c.kumo(&["scale", "roll", "web=1"]));
    let deadline = tokio::time::Instant::now() + T;
    while web_pods(&client, "roll").await.len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "not scaled down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = load.stop().await;
    assert_eq!(versions(&seen), vec!["2"]);
    wait_app(&client, "roll", "1 replica", serving(2, 1)).await;
}
