//! Registry credentials for a pod's pulls: the first of its `imagePullSecrets` (Secrets of its
//! namespace, type `kubernetes.io/dockerconfigjson`) that has credentials for the image's
//! registry. A secret that is missing or unreadable is reported as an event and skipped, and the
//! pull goes on with the node's own credentials, as the kubelet does.

use kumo_api::secret::{image_registry, registry_host, DockerConfig};
use kumo_api::{Pod, Secret};
use kumo_client::{Client, EventRecorder, EventType};
use kumo_image::RegistryAuth;

/// The credentials `configs` hold for the registry of `image`.
pub fn credentials_for(configs: &[DockerConfig], image: &str) -> Option<(String, String)> {
    let registry = image_registry(image);
    configs.iter().find_map(|c| {
        c.auths
            .iter()
            .filter(|(key, _)| registry_host(key) == registry)
            .find_map(|(_, auth)| auth.credentials())
    })
}

/// The auth to pull `image` for `pod` with.
pub async fn auth_for(
    client: &Client,
    pod: &Pod,
    image: &str,
    recorder: &EventRecorder,
) -> RegistryAuth {
    if pod.spec.image_pull_secrets.is_empty() {
        return RegistryAuth::Anonymous;
    }
    let ns = pod.metadata.ns();
    let mut configs = Vec::new();
    for r in &pod.spec.image_pull_secrets {
        match client.get::<Secret>(ns, &r.name).await {
            Ok(secret) => match secret.docker_config() {
                Some(c) => configs.push(c),
                None => {
                    recorder
                        .record(
                            pod,
                            EventType::Warning,
                            "FailedToRetrieveImagePullSecret",
                            format!("Secret {ns}/{} holds no registry credentials (want type kubernetes.io/dockerconfigjson with .dockerconfigjson); pulling without it", r.name),
                        )
                        .await
                }
            },
            Err(e) => {
                recorder
                    .record(
                        pod,
                        EventType::Warning,
                        "FailedToRetrieveImagePullSecret",
                        format!(
                            "Unable to retrieve image pull secret {ns}/{}: {e}; pulling without it",
                            r.name
                        ),
                    )
                    .await
            }
        }
    }
    match credentials_for(&configs, image) {
        Some((username, password)) => RegistryAuth::Basic { username, password },
        None => RegistryAuth::Anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_the_image_registry() {
        let a = Secret::docker_registry("a", "https://ghcr.io", "ua", "pa")
            .docker_config()
            .unwrap();
        let b = Secret::docker_registry("b", "127.0.0.1:5000", "ub", "pb")
            .docker_config()
            .unwrap();
        let configs = [a, b];
        assert_eq!(
            credentials_for(&configs, "127.0.0.1:5000/web:1"),
            Some(("ub".into(), "pb".into()))
        );
        assert_eq!(
            credentials_for(&configs, "ghcr.io/x/y@sha256:00"),
            Some(("ua".into(), "pa".into()))
        );
        assert_eq!(credentials_for(&configs, "busybox"), None);
    }
}
