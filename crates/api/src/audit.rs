//! The audit log's wire shape: Kubernetes' `audit.k8s.io/v1` Event (at level `Metadata`, one
//! JSON object per line), and the `Kumo-Audit-Reason` header a client sends to say why.

use crate::user::UserInfo;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "audit.k8s.io/v1";
pub const KIND: &str = "Event";
/// kumo records request metadata only: never request or response bodies (they hold Secrets).
pub const LEVEL_METADATA: &str = "Metadata";
/// The stage of a request whose whole response is decided when the line is written.
pub const STAGE_RESPONSE_COMPLETE: &str = "ResponseComplete";
/// The stage of a long-running response (exec, a followed log, a watch): written when its
/// headers are, before the stream.
pub const STAGE_RESPONSE_STARTED: &str = "ResponseStarted";
/// The user of a request whose credential was missing or refused.
pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const GROUP_UNAUTHENTICATED: &str = "system:unauthenticated";

/// The request header carrying why a person makes a request (`kumo exec --reason`).
pub const REASON_HEADER: &str = "kumo-audit-reason";
/// The annotation of the audit line that carries [`REASON_HEADER`].
pub const REASON_ANNOTATION: &str = "kumo.dev/reason";
/// The most bytes a reason may have.
pub const MAX_REASON_BYTES: usize = 1024;

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: UserInfo,
    #[serde(default, rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectRef>,
    pub response_status: ResponseStatus,
    /// RFC 3339 with microseconds (Kubernetes' MicroTime).
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// What the request was about; empty parts are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The answer's code, and for a failure its message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseStatus {
    pub code: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Checks a reason as sent in [`REASON_HEADER`]: UTF-8, at most [`MAX_REASON_BYTES`], no
/// control characters (a reason is one line of the log, and a terminal may show it).
pub fn check_reason(raw: &[u8]) -> Result<&str, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "must be UTF-8".to_string())?;
    if raw.len() > MAX_REASON_BYTES {
        return Err(format!(
            "must be at most {MAX_REASON_BYTES} bytes, not {}",
            raw.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(format!("must not contain control characters ({c:?})"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &[u8], expected: Result<&str, &str>) {
        assert_eq!(
            check_reason(raw),
            expected.map_err(str::to_string),
            "{raw:?}"
        );
    }

    #[test]
    fn reasons() {
        check(
            b"INC-42: restart stuck worker",
            Ok("INC-42: restart stuck worker"),
        );
        check("障害対応 #7".as_bytes(), Ok("障害対応 #7"));
        check(b"", Ok(""));
        check(&[b'a'; 1024], Ok(&"a".repeat(1024)));
        check(&[b'a'; 1025], Err("must be at most 1024 bytes, not 1025"));
        check(b"a\tb", Err("must not contain control characters ('\\t')"));
        check(b"a\nb", Err("must not contain control characters ('\\n')"));
        check(
            b"\x7f",
            Err("must not contain control characters ('\\u{7f}')"),
        );
        check(b"\xff\xfe", Err("must be UTF-8"));
    }

    #[test]
    fn events_have_kubernetes_field_names() {
        let event = Event {
            kind: KIND.into(),
            api_version: API_VERSION.into(),
            level: LEVEL_METADATA.into(),
            audit_id: "id".into(),
            stage: STAGE_RESPONSE_COMPLETE.into(),
            request_uri: "/api/v1/namespaces/default/pods".into(),
            verb: "create".into(),
            user: UserInfo::new("alice", &[]),
            source_ips: vec!["127.0.0.1".into()],
            user_agent: "kumo".into(),
            object_ref: Some(ObjectRef {
                resource: "pods".into(),
                namespace: "default".into(),
                api_version: "v1".into(),
                ..Default::default()
            }),
            response_status: ResponseStatus {
                code: 201,
                message: String::new(),
            },
            request_received_timestamp: "2026-01-01T00:00:00.000001Z".into(),
            stage_timestamp: "2026-01-01T00:00:00.000002Z".into(),
            annotations: Default::default(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                "auditID": "id", "stage": "ResponseComplete",
                "requestURI": "/api/v1/namespaces/default/pods", "verb": "create",
                "user": {"username": "alice", "groups": ["system:authenticated"]},
                "sourceIPs": ["127.0.0.1"], "userAgent": "kumo",
                "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
                "responseStatus": {"code": 201},
                "requestReceivedTimestamp": "2026-01-01T00:00:00.000001Z",
                "stageTimestamp": "2026-01-01T00:00:00.000002Z"
            })
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }
}
