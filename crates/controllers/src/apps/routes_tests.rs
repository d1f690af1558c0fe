//! The routing policy as data: which replicas each app's route sends to, and which drain.

use super::*;
use serde_json::json;

fn app(name: &str, active: Option<i64>, draining: Option<i64>) -> App {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"runtimeClassName": "process", "domains": [format!("{name}.test")],
                 "processes": {"web": {"command": ["x"]}}},
        "status": {"activeRelease": active,
                   "draining": draining.map(|r| json!({"release": r, "until": "2030-01-01T00:00:00Z"}))}
    }))
    .unwrap()
}

fn pod(name: &str, app: &str, release: i64, process: &str, port: u16, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
                     "labels": {LABEL_APP: app, LABEL_RELEASE: release.to_string(), LABEL_PROCESS: process},
                     "annotations": {ANNOTATION_ASSIGNED_PORT: port.to_string(), ANNOTATION_PROTOCOL: "h2c"}},
        "spec": {"containers": [{"name": process, "command": ["x"]}]},
        "status": {"podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    }))
    .unwrap()
}

fn ids(e: &[Endpoint]) -> Vec<String> {
    e.iter().map(|e| format!("{}@{}", e.id, e.addr)).collect()
}

#[test]
fn routes_go_to_ready_web_replicas_of_the_active_release() {
    let apps = [app("a", Some(2), Some(1)), app("b", None, None)];
    let pods = [
        pod("a-v2-web-1", "a", 2, "web", 4001, true),
        pod("a-v2-web-2", "a", 2, "web", 4002, false),
        pod("a-v2-worker-1", "a", 2, "worker", 4003, true),
        pod("a-v1-web-1", "a", 1, "web", 4000, true),
        pod("a-v3-web-1", "a", 3, "web", 4004, true),
    ];
    let t = route_table(&apps, &pods).0;
    assert_eq!(t.routes.len(), 2);
    let a = &t.routes[0];
    assert_eq!(a.hosts, vec!["a.test"]);
    assert_eq!(a.protocol, BackendProtocol::H2c);
    assert_eq!(ids(&a.endpoints), vec!["a-v2-web-1@127.0.0.1:4001"]);
    assert_eq!(ids(&a.draining), vec!["a-v1-web-1@127.0.0.1:4000"]);
    // An app with nothing active yet still has its host: 503, not 404.
    let b = &t.routes[1];
    assert_eq!((b.app.as_str(), b.endpoints.len()), ("b", 0));
    assert_eq!(b.protocol, BackendProtocol::Http1);

    // A replica the controller drains out gets no new requests.
    let mut pods = pods.to_vec();
    pods[0]
        .metadata
        .annotations
        .insert(ANNOTATION_DRAIN_UNTIL.into(), "2030-01-01T00:00:00Z".into());
    pods.push(pod("a-v2-web-3", "a", 2, "web", 4005, true));
    let t = route_table(&apps[..1], &pods).0;
    assert_eq!(
        ids(&t.routes[0].endpoints),
        vec!["a-v2-web-3@127.0.0.1:4005"]
    );
    assert_eq!(
        ids(&t.routes[0].draining),
        vec!["a-v1-web-1@127.0.0.1:4000", "a-v2-web-1@127.0.0.1:4001"]
    );

    // Switched, but no new replica seen ready yet: the draining ones keep serving.
    let t = route_table(&apps[..1], &pods[1..5]).0;
    assert_eq!(
        ids(&t.routes[0].endpoints),
        vec!["a-v1-web-1@127.0.0.1:4000"]
    );
    assert!(t.routes[0].draining.is_empty());
}
