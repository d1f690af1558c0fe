//! Service accounts: a pod reads its account's token where the agent put it and calls the API
//! server as `system:serviceaccount:NS:NAME`; runc and runsc pods see `token`, `ca.crt` and
//! `namespace` at Kubernetes' path and the server's address in their environment; the token is
//! replaced in place (here: at once after an agent restart) and refused once its pod is gone; a
//! pod whose token cannot be had waits, saying why.

use crate::harness::*;
use crate::pods::phase;
use base64::Engine;
use kumo_api::{Pod, PodPhase};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const USER: &str = "system:serviceaccount:default:default";

fn logs(c: &Cluster, pod: &str) -> String {
    String::from_utf8_lossy(&c.kumo(&["logs", pod]).stdout).into_owned()
}

/// Waits until the pod's log holds `n` lines.
async fn log_lines(c: &Cluster, pod: &str, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let lines: Vec<String> = logs(c, pod).lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {pod} logged {lines:?}, not {n} lines"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The claims of a JWT, unverified (the API server checks them; this reads what they say).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

/// The token names the pod's account and the pod itself.
fn check_claims(token: &str, pod: &Pod) {
    let c = claims(token);
    assert_eq!(c["sub"], USER, "{c}");
    assert_eq!(c["kubernetes.io"]["namespace"], "default");
    assert_eq!(c["kubernetes.io"]["serviceaccount"]["name"], "default");
    assert_eq!(
        c["kubernetes.io"]["pod"]["name"],
        pod.metadata.name.as_str()
    );
    assert_eq!(
        c["kubernetes.io"]["pod"]["uid"],
        pod.metadata.uid.as_deref().unwrap()
    );
}

/// `GET path` with `token` through curl: the status code and the body.
fn get(c: &Cluster, path: &str, token: &str) -> (u16, String) {
    let url = &c.url;
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(c.ca_file())
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{url}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("a status line");
    (
        code.trim().parse().expect("a status code"),
        body.to_string(),
    )
}

/// The API server knows the request as the service account's: RBAC, which grants the account
/// nothing by default, refuses it naming the account.
fn assert_as_account(code: u16, body: &str) {
    assert_eq!(
        code, 403,
        "the token was not taken as the account's: {body}"
    );
    assert!(body.contains(&format!("User \\\"{USER}\\\"")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_pod_calls_the_api_as_its_service_account() {
    let mut c = Cluster::up(&[]);
    let client = c.client();
    // The process runtime shares the host's file system view: the token's directory comes in
    // KUMO_SERVICE_ACCOUNT_DIR. The pod calls the API itself with curl.
    let script = r#"d=$KUMO_SERVICE_ACCOUNT_DIR; echo $d; cat $d/namespace; echo; /usr/bin/curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $(cat $d/token)" --cacert $d/ca.crt https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods; /usr/bin/curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer x$(cat $d/token)" --cacert $d/ca.crt https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods; exec sleep 3600"#;
    let manifest = process_pod("sa-proc", "Always", script)
        .replace("spec:\n", "spec:\n  terminationGracePeriodSeconds: 1\n");
    c.apply("sa-proc.yaml", &manifest);
    let pod = wait_pod(&client, "default", "sa-proc", T, pod_ready).await;
    assert_eq!(pod.spec.service_account_name.as_deref(), Some("default"));
    let lines = log_lines(&c, "sa-proc", 4).await;
    let dir = std::path::PathBuf::from(&lines[0]);
    assert_eq!(lines[1], "default", "{lines:?}");
    // The pod's own call went through as the account, a changed token's did not.
    assert_eq!(lines[2], "403", "the pod's call with its token: {lines:?}");
    assert_eq!(lines[3], "401", "{lines:?}");
    assert!(dir.starts_with(c.data_dir()), "{dir:?}");

    let token = std::fs::read_to_string(dir.join("token")).expect("token file");
    check_claims(&token, &pod);
    let (code, body) = get(&c, "/api/v1/namespaces/default/pods", &token);
    assert_as_account(code, &body);
    // Bound to `view`, the account reads its namespace's pods (RBAC's ServiceAccount subject).
    c.apply(
        "sa-view.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: sa-view, namespace: default}\nsubjects: [{kind: ServiceAccount, name: default, namespace: default}]\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\n",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = get(&c, "/api/v1/namespaces/default/pods", &token);
        if code == 200 {
            assert!(body.contains("PodList"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {code}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kumo(&["delete", "rolebinding", "sa-view"]);
    use std::os::unix::fs::MetadataExt;
    for f in ["token", "ca.crt", "namespace"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644, "{f}");
    }

    // A restarted agent does not know the token's age: it replaces it at once, in place, while
    // the container keeps running.
    let pid = container_pid(&pod).expect("a pid");
    c.restart();
    let deadline = tokio::time::Instant::now() + T;
    let fresh = loop {
        let now = std::fs::read_to_string(dir.join("token")).unwrap_or_default();
        if !now.is_empty() && now != token {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the token was not replaced after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(process_alive(pid), "the container kept running");
    check_claims(&fresh, &pod);
    let (code, body) = get(&c, "/api/v1/namespaces/default/pods", &fresh);
    assert_as_account(code, &body);

    // Once the pod is gone from the API its tokens are refused, within a second.
    let o = c.kumo(&["delete", "pod", "sa-proc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let client = c.client();
    let deadline = tokio::time::Instant::now() + T;
    while client
        .get_opt::<Pod>("default", "sa-proc")
        .await
        .expect("get pod")
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod is not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = tokio::time::Instant::now();
    loop {
        let (code, body) = get(&c, "/api/v1/namespaces/default/pods", &fresh);
        if code == 401 {
            assert!(body.contains("no longer exists"), "{body}");
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(1),
            "a deleted pod's token still works: {code}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runc_and_runsc_pods_find_their_token_at_the_kubernetes_path() {
    let registry = kumo_image::testing::Registry::start().expect("docker-registry");
    let (image, _) = registry.push_busybox("sa:1").expect("push busybox");
    let c = Cluster::up(&[]);
    let client = c.client();
    let script = "d=/var/run/secrets/kubernetes.io/serviceaccount; cat $d/namespace; echo; test -s $d/token && echo token; test -f $d/ca.crt && echo ca.crt; echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; touch $d/x 2>/dev/null && echo writable || echo read-only; cat $d/token";
    let off = "test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo mounted || echo none; echo $KUBERNETES_SERVICE_PORT";
    for (name, extra, script) in [
        ("sa-runc", "", script),
        ("sa-runsc", "  runtimeClassName: runsc\n", script),
        ("sa-off", "  automountServiceAccountToken: false\n", off),
    ] {
        c.apply(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n{extra}  containers:\n  - name: main\n    image: \"{image}\"\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n"
            ),
        );
    }
    let port = c.url.rsplit(':').next().unwrap().to_string();
    for name in ["sa-runc", "sa-runsc", "sa-off"] {
        let p = wait_pod(&client, "default", name, T, |p| {
            phase(p).is_some_and(|ph| ph.is_terminal())
        })
        .await;
        assert_eq!(
            phase(&p),
            Some(PodPhase::Succeeded),
            "{name}: {:#?}",
            p.status
        );
    }
    for name in ["sa-runc", "sa-runsc"] {
        let pod: Pod = client.get("default", name).await.unwrap();
        let out = logs(&c, name);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..5],
            [
                "default",
                "token",
                "ca.crt",
                &format!("127.0.0.1:{port}"),
                "read-only"
            ],
            "{name}: {out}"
        );
        check_claims(lines[5], &pod);
    }
    assert_eq!(logs(&c, "sa-off"), format!("none\n{port}\n"));
}

/// The message of the first container's waiting state.
fn waiting_message(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.first())
        .and_then(|c| c.state.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_token_waits_and_starts_once_it_gets_one() {
    let c = Cluster::up(&[]);
    let client = c.client();
    c.apply(
        "ci.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: ci\n",
    );
    // Admitted while `ci` exists, then held off the node (no node has the label) until the
    // account is gone, then bound by hand: the agent's token request is refused.
    let manifest = process_pod("sa-wait", "Always", "exec sleep 3600").replace(
        "spec:\n",
        "spec:\n  serviceAccountName: ci\n  terminationGracePeriodSeconds: 1\n  nodeSelector: {nowhere: \"true\"}\n",
    );
    c.apply("sa-wait.yaml", &manifest);
    let o = c.kumo(&["delete", "serviceaccount", "ci"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    client
        .bind("default", "sa-wait", "node-1")
        .await
        .expect("bind");
    let p = wait_pod(&client, "default", "sa-wait", T, |p| {
        crate::containers::waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let message = waiting_message(&p);
    assert!(
        message.contains("cannot get a token of service account default/ci")
            && message.contains("serviceaccounts \"ci\" not found"),
        "{message}"
    );
    // The account back, the next try gets a token and the container starts.
    c.apply(
        "ci.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: ci\n",
    );
    let p = wait_pod(&client, "default", "sa-wait", T, pod_ready).await;
    let dir = c
        .data_dir()
        .join("agent/sandboxes")
        .join(p.metadata.uid.as_deref().unwrap())
        .join("serviceaccount");
    let token = std::fs::read_to_string(dir.join("token")).expect("token");
    assert_eq!(claims(&token)["sub"], "system:serviceaccount:default:ci");
}
