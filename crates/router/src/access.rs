//! What is recorded when a response ends: the access log line and the request metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, StatusCode};

use crate::balance::Lease;
use crate::metrics::{Metrics, UpstreamError};

/// One request as the access log sees it.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    pub start: Instant,
    pub method: Method,
    pub host: String,
    /// The path without the query (queries may carry secrets).
    pub path: String,
    pub request_id: HeaderValue,
    pub app: Option<Arc<str>>,
    pub upstream: Option<SocketAddr>,
    pub status: StatusCode,
}

/// How a response ended.
#[derive(Debug)]
pub(crate) enum End {
    Complete,
    /// The backend's body broke off.
    BodyError(String),
    /// The client went away (or the connection closed) before the end.
    Dropped,
}

/// Everything to settle when a response ends; carried by the response body.
#[derive(Debug)]
pub(crate) struct Completion {
    pub record: AccessRecord,
    /// Held so the endpoint counts the request as outstanding until its response ends.
    pub lease: Option<Lease>,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
}

impl Completion {
    pub fn finish(self, end: End) {
        let r = &self.record;
        let elapsed = r.start.elapsed();
        let app = r.app.as_deref().unwrap_or("");
        self.metrics.observe(app, r.status, elapsed.as_secs_f64());
        if let End::BodyError(_) = end {
            self.metrics.upstream_error(app, UpstreamError::body);
        }
        drop(self.lease);
        if self.access_log {
            let upstream = r.upstream.map(|a| a.to_string());
            let end = match &end {
                End::Complete => "complete".to_string(),
                End::BodyError(e) => format!("upstream body error: {e}"),
                End::Dropped => "client gone".to_string(),
            };
            tracing::info!(
                target: "kumo_router::access",
                method = %r.method,
                host = %r.host,
                path = %r.path,
                status = r.status.as_u16(),
                app = %app,
                upstream = upstream.as_deref().unwrap_or("-"),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                request_id = r.request_id.to_str().unwrap_or("-"),
                end = %end,
            );
        }
    }
}
