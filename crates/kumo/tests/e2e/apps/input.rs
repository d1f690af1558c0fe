//! Bad apps are refused with the field named, and nothing is half-applied.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_apps_are_refused_naming_the_field() {
    let c = Cluster::up(&[]);
    let base = |spec: serde_json::Value| {
        let mut app =
            serde_json::from_str::<serde_json::Value>(&app_manifest("bad", 1, "1")).unwrap();
        for (k, v) in spec.as_object().unwrap() {
            app["spec"][k] = v.clone();
        }
        app.to_string()
    };
    let cases = [
        (
            base(serde_json::json!({"processes": {"web": {}}})),
            "spec.processes.web.command: Required value",
        ),
        (
            base(serde_json::json!({"processes": {"web": {"command": ["x"], "replicas": -1}}})),
            "spec.processes.web.replicas: Invalid value: -1",
        ),
        (
            base(serde_json::json!({"processes": {"web": {"command": ["x"], "port": 70000}}})),
            "spec.processes.web.port: Invalid value: 70000",
        ),
        (
            base(serde_json::json!({"processes": {"web": {"command": ["x"], "protocol": "h3"}}})),
            "spec.processes.web.protocol: unknown variant `h3`",
        ),
        (
            base(serde_json::json!({"domains": ["Bad_Domain"]})),
            "spec.domains[0]: Invalid value: \"Bad_Domain\"",
        ),
    ];
    for (manifest, expected) in cases {
        let f = c.write("bad.json", &manifest);
        let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
        assert!(!out.status.success(), "{manifest}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected}: {err}");
    }
    // The API refuses it too (the CLI checks first), with a 422.
    let client = c.client();
    let mut app: App = serde_json::from_str(&app_manifest("bad", 1, "1")).unwrap();
    app.spec.processes.get_mut("web").unwrap().replicas = -1;
    let err = client.create(&app).await.unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");

    // A domain belongs to one app: the second app naming it is refused, naming the first.
    c.apply("one.json", &app_manifest("one", 1, "1"));
    let mut two = serde_json::from_str::<serde_json::Value>(&app_manifest("two", 1, "1")).unwrap();
    two["spec"]["domains"] = serde_json::json!(["two.test", "one.test"]);
    let f = c.write("two.json", &two.to_string());
    let out = c.kumo(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.domains[1]: Duplicate value: \"one.test\": already routed to app default/one"
        ),
        "{err}"
    );
    let apps = client
        .list::<App>(Some("default"), &Default::default())
        .await
        .unwrap()
        .items;
    let names: Vec<&str> = apps.iter().map(|a| a.metadata.name.as_str()).collect();
    assert_eq!(names, vec!["one"], "nothing half-applied");

    // `kumo app create` checks its flags the same way before sending anything.
    let out = c.kumo(&["app", "create", "x", "--runtime", "process"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.processes.web.command: Required value")
    );
    let out = c.kumo(&[
        "app",
        "create",
        "y",
        "--runtime",
        "process",
        "--domain",
        "y.test",
        "--healthcheck",
        "/",
        "--command",
        "sh",
        "-c",
        "exec python3 -m http.server $PORT",
    ]);
    assert_eq!(ok(&out), "app/y created\n");
    ok(&c.kumo(&[
        "wait",
        "app/y",
        "--for=condition=Available",
        "--timeout",
        "60s",
    ]));
}
