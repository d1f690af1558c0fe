//! API errors: a Kubernetes `Status` with its HTTP code, and the constructors handlers share.

use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use kumo_api::{FieldError, KindInfo, Status};
use kumo_store::StoreError;

/// An error answered to the client as a `Status` body with `code` as the HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct ApiError(pub Box<Status>);

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

/// `pods`, or `mltasks.kumo.dev` for a group kind, as Kubernetes names resources in messages.
pub fn resource_name(kind: &KindInfo) -> String {
    if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Status::failure(code, reason, message)))
    }

    pub fn code(&self) -> u16 {
        self.0.code
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn not_found(kind: &KindInfo, name: &str) -> Self {
        Self::not_found_resource(&resource_name(kind), name)
    }

    /// `namespaces "x" not found`.
    pub fn not_found_resource(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} {name:?} not found"))
    }

    /// A 404 for a path that names nothing served.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource {path:?}"),
        )
    }

    pub fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow method {method} on {path:?}"),
        )
    }

    pub fn already_exists(kind: &KindInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", resource_name(kind)),
        )
    }

    /// The optimistic-concurrency conflict of a stale `resourceVersion`.
    pub fn stale(kind: &KindInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                resource_name(kind)
            ),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub fn invalid(kind: &KindInfo, name: &str, errors: &[FieldError]) -> Self {
        ApiError(Box::new(Status::invalid(kind.kind, name, errors)))
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("request body too large (limit {limit} bytes)"),
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "BadGateway", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// A store error with no better meaning in context: an expired revision, a store that does
    /// not answer (503 with the reason: etcd away, the client retries), or a server fault.
    pub fn store(err: StoreError) -> Self {
        match err {
            StoreError::Compacted {
                requested,
                compacted,
            } => Self::gone(requested, compacted),
            StoreError::Backend(reason) => {
                Self::unavailable(format!("storage unavailable: {reason}"))
            }
            StoreError::TooLarge(reason) => Self::new(413, "RequestEntityTooLarge", reason),
            other => Self::internal(format!("storage error: {other}")),
        }
    }
}

/// A JSON response with `code`.
pub fn json_response(code: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode response: {e}"),
        )
            .into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(err: StoreError, code: u16, reason: &str, message: &str) {
        let api = ApiError::store(err);
        assert_eq!(
            (api.0.code, api.0.reason.as_str(), api.0.message.as_str()),
            (code, reason, message)
        );
    }

    #[test]
    fn store_errors_map_to_statuses() {
        check(
            StoreError::Backend("etcd at http://127.0.0.1:1: connection refused".into()),
            503,
            "ServiceUnavailable",
            "storage unavailable: etcd at http://127.0.0.1:1: connection refused",
        );
        check(
            StoreError::TooLarge("the object is too large for etcd".into()),
            413,
            "RequestEntityTooLarge",
            "the object is too large for etcd",
        );
        check(
            StoreError::NotFound("/k".into()),
            500,
            "InternalError",
            "storage error: key \"/k\" not found",
        );
    }
}
