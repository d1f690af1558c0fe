//! Issue #14: numbers past their bound (the App whose `deploy.timeoutSeconds:
//! 9000000000000000000` panicked the app controller, the MLTask with such an
//! `activeDeadlineSeconds`) are refused with a 422 naming the field and the bound, by `kumo
//! apply` and by every CLI path that builds these objects; and the loops go on serving the
//! apps created next.

use super::*;

const HUGE: i64 = 9_000_000_000_000_000_000;

/// Runs the CLI, expecting it to fail with `expected` in its stderr.
fn refused(c: &Cluster, args: &[&str], expected: &str) {
    let out = c.kumo(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kumo {args:?} succeeded");
    assert!(err.contains(expected), "kumo {args:?}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_past_their_bound_are_refused_and_the_loops_go_on() {
    let c = Cluster::up(&[]);
    let client = c.client();

    // The App, by `kumo apply` and by the API.
    let mut app: serde_json::Value = serde_json::from_str(&app_manifest("huge", 1, "1")).unwrap();
    app["spec"]["deploy"]["timeoutSeconds"] = serde_json::json!(HUGE);
    let f = c.write("huge.json", &app.to_string());
    let timeout_refused = "spec.deploy.timeoutSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive";
    refused(&c, &["apply", "-f", f.to_str().unwrap()], timeout_refused);
    let typed: App = serde_json::from_value(app).unwrap();
    let err = client.create(&typed).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    assert!(err.to_string().contains(timeout_refused), "{err}");

    // The MLTask, by `kumo apply`, by `kumo submit` and by the API.
    let task = serde_json::json!({"apiVersion": "kumo.dev/v1", "kind": "MLTask",
        "metadata": {"name": "forever"},
        "spec": {"runtimeClassName": "process", "command": ["true"], "activeDeadlineSeconds": HUGE}});
    let f = c.write("forever.json", &task.to_string());
    let deadline_refused = "spec.activeDeadlineSeconds: Invalid value: 9000000000000000000: must be between 1 and 31536000, inclusive";
    refused(&c, &["apply", "-f", f.to_str().unwrap()], deadline_refused);
    refused(
        &c,
        &[
            "submit",
            "forever",
            "--runtime",
            "process",
            "--deadline",
            &HUGE.to_string(),
            "--",
            "true",
        ],
        deadline_refused,
    );
    let typed: kumo_api::MLTask = serde_json::from_value(task).unwrap();
    let err = client.create(&typed).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    assert!(err.to_string().contains(deadline_refused), "{err}");

    // `kumo app create` and `kumo scale` refuse counts past the bound.
    let replicas_refused =
        "spec.processes.web.replicas: Invalid value: 5000: must be between 0 and 1000, inclusive";
    refused(
        &c,
        &[
            "app",
            "create",
            "many",
            "--runtime",
            "process",
            "--replicas",
            "5000",
            "--command",
            "true",
        ],
        replicas_refused,
    );
    c.apply("fine.json", &app_manifest("fine", 2, "1"));
    refused(&c, &["scale", "fine", "web=5000"], replicas_refused);

    // None of it reached a loop: the app applied next is served, at its own count.
    wait_app(&client, "fine", "two ready replicas", serving(1, 2)).await;
    let names: Vec<String> = client
        .list::<App>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.metadata.name)
        .collect();
    assert_eq!(names, vec!["fine"], "nothing refused was stored");
    let tasks = client
        .list::<kumo_api::MLTask>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items;
    assert!(tasks.is_empty(), "nothing refused was stored");
}
