//! Host ports for process-runtime replicas: a pod annotated `kumo.dev/port: auto` gets a free
//! port of this node, recorded in its `kumo.dev/assigned-port` annotation (so a restart and a
//! restarted agent reuse it, and the router finds `hostIP:port`) and given as `PORT`.

use kumo_api::keys::{
    format_port, parse_port, ANNOTATION_ASSIGNED_PORT, ANNOTATION_PORT, PORT_AUTO,
};
use kumo_api::pod::EnvVar;
use kumo_api::Pod;
use kumo_client::{Client, ClientError};

/// Whether the pod asks the agent for a port (process pods only: the others have their own
/// network namespace and their declared port).
pub fn wants_port(pod: &Pod) -> bool {
    crate::plan::is_process_pod(pod)
        && pod
            .metadata
            .annotations
            .get(ANNOTATION_PORT)
            .map(String::as_str)
            == Some(PORT_AUTO)
}

/// The port the agent gave the pod, if any.
pub fn assigned_port(pod: &Pod) -> Option<u16> {
    pod.metadata
        .annotations
        .get(ANNOTATION_ASSIGNED_PORT)
        .and_then(|p| parse_port(p))
}

/// The pod as its containers run: with an assigned port, every container's `PORT` is it.
pub fn with_assigned_port(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    if let Some(port) = assigned_port(&pod) {
        for c in &mut pod.spec.containers {
            c.env.retain(|e| e.name != "PORT");
            c.env.push(EnvVar {
                name: "PORT".into(),
                value: port.to_string(),
            });
        }
    }
    pod
}

/// The pod to start: unchanged unless it asks for a port; then with its port, picking and
/// recording one first if it has none yet.
pub async fn ensure(client: &Client, pod: &Pod) -> Result<Pod, ClientError> {
    if !wants_port(pod) || assigned_port(pod).is_some() {
        return Ok(with_assigned_port(pod));
    }
    let port = free_port().map_err(|e| ClientError::Request(format!("no free port: {e}")))?;
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_ASSIGNED_PORT: format_port(port)}}});
    let updated: Pod = client
        .patch(pod.metadata.ns(), &pod.metadata.name, &patch)
        .await?;
    tracing::info!(pod = %kumo_client::cache_key(pod), port, "assigned a host port");
    Ok(with_assigned_port(&updated))
}

/// A port nothing listens on now: the kernel's pick for port 0.
fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("0.0.0.0", 0))?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_api::pod::Container;

    #[test]
    fn the_assigned_port_is_the_env_port() {
        let mut pod = Pod::default();
        pod.spec.containers.push(Container {
            name: "web".into(),
            env: vec![EnvVar {
                name: "PORT".into(),
                value: "1".into(),
            }],
            ..Default::default()
        });
        assert_eq!(with_assigned_port(&pod), pod);
        pod.metadata
            .annotations
            .insert(ANNOTATION_PORT.into(), "auto".into());
        assert!(!wants_port(&pod), "an OCI pod has its own port");
        pod.spec.runtime_class_name = Some("process".into());
        assert!(wants_port(&pod));
        pod.metadata
            .annotations
            .insert(ANNOTATION_ASSIGNED_PORT.into(), "4321".into());
        let env = &with_assigned_port(&pod).spec.containers[0].env;
        assert_eq!(env.len(), 1);
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_str()),
            ("PORT", "4321")
        );
    }
}
