//! What is recorded when a response ends: the access log line and the request metrics.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode, Uri};

use crate::access_log::{LogWriter, Rfc3339};
use crate::balance::Lease;
use crate::metrics::{AppMetrics, Metrics, UpstreamError};
use crate::snapshot::Target;
use crate::upstream::H1Sender;

/// What every completion records into; one per router.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub metrics: Arc<Metrics>,
    /// The series of requests that matched no route (`app=""`).
    pub unrouted: Arc<AppMetrics>,
    pub log: Option<LogWriter>,
}

impl Recorder {
    pub fn new(metrics: Arc<Metrics>, log: Option<LogWriter>) -> Self {
        Recorder {
            unrouted: metrics.app(""),
            metrics,
            log,
        }
    }
}

/// One request as the access log sees it.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    pub start: Instant,
    pub method: Method,
    /// The normalized host, `-` when the request had none.
    pub host: String,
    /// Only its path is logged (queries may carry secrets).
    pub uri: Uri,
    pub request_id: HeaderValue,
    /// The route that took the request.
    pub target: Option<Arc<Target>>,
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
    /// The HTTP/1.1 connection the response came on: pooled again if the body ended well.
    pub conn: Option<H1Sender>,
    pub recorder: Arc<Recorder>,
}

impl Completion {
    pub fn finish(self, end: End) {
        let r = &self.record;
        let elapsed = r.start.elapsed();
        let metrics = match &r.target {
            Some(t) => &t.metrics,
            None => &self.recorder.unrouted,
        };
        metrics.observe(r.status, elapsed.as_secs_f64());
        if let End::BodyError(_) = end {
            metrics.upstream_error(UpstreamError::body);
        }
        if let (End::Complete, Some(conn), Some(lease)) = (&end, self.conn, &self.lease) {
            lease.keep(conn, r.start + elapsed);
        }
        drop(self.lease);
        let Some(log) = &self.recorder.log else {
            return;
        };
        let app = r.target.as_ref().map(|t| &*t.app).unwrap_or("");
        // The fields and their quoting are those of the `tracing` event this line replaced.
        log.line(|buf| {
            let _ = write!(
                buf,
                "{}  INFO kumo_router::access: method={} host={} path={} status={} app={app} upstream=",
                Rfc3339(SystemTime::now()),
                r.method,
                r.host,
                r.uri.path(),
                r.status.as_u16(),
            );
            let _ = match r.upstream {
                Some(addr) => write!(buf, "\"{addr}\""),
                None => write!(buf, "\"-\""),
            };
            let _ = write!(
                buf,
                " duration_ms={:?} request_id={:?} end=",
                elapsed.as_secs_f64() * 1000.0,
                r.request_id.to_str().unwrap_or("-"),
            );
            let _ = match &end {
                End::Complete => buf.write_all(b"complete"),
                End::BodyError(e) => write!(buf, "upstream body error: {e}"),
                End::Dropped => buf.write_all(b"client gone"),
            };
        });
    }
}
