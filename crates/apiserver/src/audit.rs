//! The audit step of the request path: which requests are recorded (the policy), and the
//! `audit.k8s.io/v1` Event of one, built from what the path learnt of it (user, attributes,
//! source, final code). The file it goes to is [`crate::audit_log`].
//!
//! Recorded: every request that may change state (any verb but get, list and watch, on the
//! object and the data paths), every exec, every log read and every Secret read, whatever the
//! outcome (401, 403 and other refusals included). Other reads are not: they would drown the
//! changes in the controllers' and agents' polling, and they reveal nothing secret.

use crate::audit_log::AuditLog;
use crate::authz::Attributes;
use crate::error::{ApiError, ApiResult};
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use http::{header, HeaderMap, Method};
use kumo_api::audit::{self as wire, Event, ObjectRef, ResponseStatus};
use kumo_api::UserInfo;
use std::net::SocketAddr;

/// Whether a request with these attributes is recorded.
pub fn audited(verb: &str, api_group: &str, resource: &str, subresource: &str) -> bool {
    let read = matches!(verb, "get" | "list" | "watch");
    let core = api_group.is_empty();
    !read
        || (core && resource == "pods" && matches!(subresource, "log" | "exec"))
        || (core && resource == "secrets")
}

/// The verb of a request that could not be parsed, from its method.
fn verb_of_method(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// The user of a request whose credential was missing or refused.
pub fn anonymous() -> UserInfo {
    UserInfo {
        username: wire::ANONYMOUS_USER.into(),
        uid: String::new(),
        groups: vec![wire::GROUP_UNAUTHENTICATED.into()],
    }
}

/// What the request path learnt of one request, filled in as it goes.
pub(crate) struct Facts {
    /// The authenticated user, or [`anonymous`].
    pub user: UserInfo,
    /// What the request asks, once parsed.
    pub attributes: Option<Attributes>,
    /// The API version of the object path (`v1`).
    pub api_version: &'static str,
    /// A response that streams on (exec, a followed log, a watch): recorded when it starts.
    pub long_running: bool,
    /// The name a create gave its object (the path has none).
    pub created_name: Option<String>,
    /// The request's [`wire::REASON_HEADER`].
    pub reason: Option<String>,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            user: anonymous(),
            attributes: None,
            api_version: "",
            long_running: false,
            created_name: None,
            reason: None,
        }
    }
}

impl Facts {
    /// Whether the request is recorded; `method` decides for a request that was not parsed.
    fn audited(&self, method: &Method) -> bool {
        match &self.attributes {
            Some(a) => audited(a.verb, &a.api_group, &a.resource, &a.subresource),
            None => !matches!(verb_of_method(method), "get"),
        }
    }
}

/// What is known of a request as it arrives: everything the event needs that the handler
/// consumes.
pub(crate) struct Received {
    id: uuid::Uuid,
    at: DateTime<Utc>,
    method: Method,
    uri: String,
    source: Option<SocketAddr>,
    user_agent: String,
}

impl Received {
    pub fn of(req: &Request) -> Self {
        Received {
            id: uuid::Uuid::new_v4(),
            at: Utc::now(),
            method: req.method().clone(),
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| req.uri().path().to_string()),
            // kumo-serve puts the peer's address on every request.
            source: req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
        }
    }
}

fn micro_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The event of a request answered with `code` (and `message`, for a failure).
pub(crate) fn event(received: &Received, facts: &Facts, code: u16, message: &str) -> Event {
    let object_ref = facts.attributes.as_ref().map(|a| ObjectRef {
        resource: a.resource.clone(),
        namespace: a.namespace.clone(),
        name: match (&facts.created_name, a.name.is_empty()) {
            (Some(created), true) => created.clone(),
            _ => a.name.clone(),
        },
        api_group: a.api_group.clone(),
        api_version: facts.api_version.to_string(),
        subresource: a.subresource.clone(),
    });
    let verb = match &facts.attributes {
        Some(a) => a.verb.to_string(),
        None => verb_of_method(&received.method).to_string(),
    };
    let stage = if facts.long_running && code < 300 {
        wire::STAGE_RESPONSE_STARTED
    } else {
        wire::STAGE_RESPONSE_COMPLETE
    };
    let mut annotations = std::collections::BTreeMap::new();
    if let Some(reason) = &facts.reason {
        annotations.insert(wire::REASON_ANNOTATION.to_string(), reason.clone());
    }
    Event {
        kind: wire::KIND.into(),
        api_version: wire::API_VERSION.into(),
        level: wire::LEVEL_METADATA.into(),
        audit_id: received.id.to_string(),
        stage: stage.into(),
        request_uri: received.uri.clone(),
        verb,
        user: UserInfo {
            uid: String::new(),
            ..facts.user.clone()
        },
        source_ips: received
            .source
            .map(|s| s.ip().to_string())
            .into_iter()
            .collect(),
        user_agent: received.user_agent.clone(),
        object_ref,
        response_status: ResponseStatus {
            code,
            message: if code >= 400 {
                message.to_string()
            } else {
                String::new()
            },
        },
        request_received_timestamp: micro_time(received.at),
        stage_timestamp: micro_time(Utc::now()),
        annotations,
    }
}

/// The reason a request carries, checked: a bad one is a 400 naming the header.
pub(crate) fn reason(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(wire::REASON_HEADER) else {
        return Ok(None);
    };
    let text = wire::check_reason(value.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("header Kumo-Audit-Reason: {e}")))?;
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// Refuses (503) a request that is to be recorded while the log cannot be written, before it
/// does anything.
pub(crate) fn ready(log: Option<&AuditLog>, facts: &Facts, method: &Method) -> ApiResult<()> {
    match log {
        Some(log) if facts.audited(method) && !log.ready() => Err(ApiError::unavailable(
            "the audit log cannot be written: the request is refused rather than left unrecorded",
        )),
        _ => Ok(()),
    }
}

/// Writes the line of an answered request, before its answer leaves; if the line cannot be
/// written, the answer becomes a 503 (for a change already made, the client then cannot tell
/// it was, and retries or checks: better than a change nobody can trace).
pub(crate) fn record(
    log: &AuditLog,
    received: &Received,
    facts: &Facts,
    response: Response,
    message: &str,
) -> Response {
    if !facts.audited(&received.method) {
        return response;
    }
    let code = response.status().as_u16();
    match log.write(&event(received, facts, code, message)) {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(path = %log.path().display(), error = %e, uri = %received.uri, "cannot write the audit log");
            ApiError::unavailable(format!("the audit log cannot be written: {e}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(verb: &str, group: &str, resource: &str, subresource: &str, expected: bool) {
        assert_eq!(
            audited(verb, group, resource, subresource),
            expected,
            "{verb} {group}/{resource}/{subresource}"
        );
    }

    #[test]
    fn policy() {
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            check(verb, "", "pods", "", true);
            check(verb, "kumo.dev", "datasets", "", true);
        }
        check("update", "", "pods", "status", true);
        check("create", "", "pods", "binding", true);
        check("create", "", "pods", "exec", true);
        check("get", "", "pods", "log", true);
        for verb in ["get", "list", "watch"] {
            check(verb, "", "secrets", "", true);
            check(verb, "", "pods", "", false);
            check(verb, "", "configmaps", "", false);
            check(verb, "kumo.dev", "mltasks", "output", false);
            // Another group's "secrets" is not the core kind.
            check(verb, "example.com", "secrets", "", false);
        }
    }

    #[test]
    fn reasons_from_headers() {
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(
                wire::REASON_HEADER,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
            reason(&h).map_err(|e| (e.code(), e.0.message))
        };
        assert_eq!(reason(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with(b"INC-7").unwrap(), Some("INC-7".to_string()));
        assert_eq!(with(b"").unwrap(), None);
        assert_eq!(
            with("再起動".as_bytes()).unwrap(),
            Some("再起動".to_string())
        );
        assert_eq!(
            with(b"a\tb").unwrap_err(),
            (
                400,
                "header Kumo-Audit-Reason: must not contain control characters ('\\t')".into()
            )
        );
        assert_eq!(
            with(&[b'x'; 1025]).unwrap_err().1,
            "header Kumo-Audit-Reason: must be at most 1024 bytes, not 1025"
        );
    }
}
