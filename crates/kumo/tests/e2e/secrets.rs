//! Pull secrets: a registry that wants credentials, a `kubernetes.io/dockerconfigjson` Secret
//! made with `kumo create secret docker-registry`, and pods of that namespace naming it.

use crate::harness::*;
use crate::pods::phase;
use kumo_api::{Event, Pod, PodPhase};
use kumo_client::ListParams;
use kumo_image::testing::{Registry, AUTH_PASSWORD, AUTH_USER};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn pod(name: &str, ns: &str, image: &str, secret: Option<&str>, policy: &str) -> String {
    let secrets = secret
        .map(|s| format!("  imagePullSecrets: [{{name: {s}}}]\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  restartPolicy: Never\n{secrets}  containers:\n  - name: main\n    image: \"{image}\"\n    imagePullPolicy: {policy}\n    command: [\"/bin/sh\", \"-c\", \"echo pulled-ok\"]\n")
}

fn pull_error(p: &Pod) -> Option<String> {
    let w = p
        .status
        .as_ref()?
        .container_statuses
        .first()?
        .state
        .waiting
        .clone()?;
    matches!(
        w.reason.as_deref(),
        Some("ErrImagePull") | Some("ImagePullBackOff")
    )
    .then(|| w.message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_of_the_pods_namespace_authenticate_pulls() {
    let registry = Registry::start_with_auth().expect("docker-registry with auth");
    let (image, _) = registry.push_busybox("private:1").expect("push busybox");
    let c = Cluster::up(&[]);
    let client = c.client();
    c.apply(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n",
    );

    // Without credentials the registry's own refusal is the pod's status.
    c.apply(
        "anon.yaml",
        &pod("anon", "default", &image, None, "IfNotPresent"),
    );
    let p = wait_pod(&client, "default", "anon", T, |p| pull_error(p).is_some()).await;
    let msg = pull_error(&p).unwrap().to_lowercase();
    assert!(msg.contains("unauthorized") || msg.contains("401"), "{msg}");

    // A bad secret is refused and nothing is created.
    let o = c.kumo(&[
        "create",
        "secret",
        "generic",
        "bad",
        "--from-literal",
        "bad key=x",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("data[bad key]"), "{err}");
    let o = c.kumo(&["get", "secret", "bad"]);
    assert!(!o.status.success());

    let o = c.kumo(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "-n",
        "team-a",
        "--docker-server",
        registry.addr(),
        "--docker-username",
        AUTH_USER,
        "--docker-password",
        AUTH_PASSWORD,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = c.kumo(&["get", "secrets", "-n", "team-a"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("regcred"));

    c.apply(
        "authed.yaml",
        &pod("authed", "team-a", &image, Some("regcred"), "Always"),
    );
    let p = wait_pod(&client, "team-a", "authed", T, |p| {
        phase(p).is_some_and(|ph| ph.is_terminal())
    })
    .await;
    assert_eq!(phase(&p), Some(PodPhase::Succeeded), "{:#?}", p.status);
    let o = c.kumo(&["logs", "authed", "-n", "team-a"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "pulled-ok\n");

    // The secret belongs to team-a: a pod elsewhere naming it pulls without it, and says so.
    c.apply(
        "other.yaml",
        &pod("other", "default", &image, Some("regcred"), "Always"),
    );
    let p = wait_pod(&client, "default", "other", T, |p| pull_error(p).is_some()).await;
    assert!(pull_error(&p)
        .unwrap()
        .to_lowercase()
        .contains("unauthorized"));
    let events = client
        .list::<Event>(Some("default"), &ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason == "FailedToRetrieveImagePullSecret"
                && e.involved_object.name == "other"),
        "{:#?}",
        events.items
    );
}
