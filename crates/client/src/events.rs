//! Records Events about objects (scheduled, started, killed) for `kumo describe`.

use crate::client::Client;
use kumo_api::{Event, EventSource, ObjectMeta, ObjectReference, Resource};

/// Writes Events on behalf of one component.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    component: String,
    host: Option<String>,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventRecorder {
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Self {
        EventRecorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
        }
    }

    /// Records an event; failures are logged, never fatal (events are best effort, as in Kubernetes).
    pub async fn record<K: Resource>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let m = obj.meta();
        let ns = if K::NAMESPACED {
            m.ns().to_string()
        } else {
            kumo_api::DEFAULT_NAMESPACE.to_string()
        };
        let now = chrono::Utc::now();
        let event = Event {
            metadata: ObjectMeta {
                name: format!(
                    "{}.{:x}",
                    m.name,
                    now.timestamp_nanos_opt().unwrap_or_default()
                ),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version()),
                kind: K::KIND.to_string(),
                namespace: m.namespace.clone().filter(|_| K::NAMESPACED),
                name: m.name.clone(),
                uid: m.uid.clone(),
            },
            reason: reason.to_string(),
            message: message.into(),
            type_: match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_string(),
            source: Some(EventSource {
                component: self.component.clone(),
                host: self.host.clone(),
            }),
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            count: 1,
            ..Default::default()
        };
        if let Err(e) = self.client.create(&event).await {
            tracing::debug!(reason, error = %e, "could not record event");
        }
    }
}
