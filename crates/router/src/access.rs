//! What is recorded when a response ends: the access log line and the request metrics.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, StatusCode, Uri};

use crate::access_log::{push_padded, push_quoted, push_rfc3339, push_u64, LogWriter};
use crate::balance::Lease;
use crate::metrics::{AppMetrics, Metrics, UpstreamError};
use crate::snapshot::Target;
use crate::upstream::Pooled;

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
    pub conn: Option<Pooled>,
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
        // The fields and their quoting are those of the `tracing` event this line replaced,
        // written without the formatting machinery where it is simple to.
        log.line(|buf| {
            push_rfc3339(buf, SystemTime::now());
            buf.extend_from_slice(b"  INFO kumo_router::access: method=");
            buf.extend_from_slice(r.method.as_str().as_bytes());
            buf.extend_from_slice(b" host=");
            buf.extend_from_slice(r.host.as_bytes());
            buf.extend_from_slice(b" path=");
            buf.extend_from_slice(r.uri.path().as_bytes());
            buf.extend_from_slice(b" status=");
            push_u64(buf, u64::from(r.status.as_u16()));
            buf.extend_from_slice(b" app=");
            buf.extend_from_slice(app.as_bytes());
            let _ = match r.upstream {
                Some(addr) => write!(buf, " upstream=\"{addr}\""),
                None => buf.write_all(b" upstream=\"-\""),
            };
            // Milliseconds to the microsecond.
            let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            buf.extend_from_slice(b" duration_ms=");
            push_u64(buf, micros / 1000);
            buf.push(b'.');
            push_padded(buf, micros % 1000, 3);
            buf.extend_from_slice(b" request_id=");
            push_quoted(buf, r.request_id.to_str().unwrap_or("-"));
            buf.extend_from_slice(b" end=");
            let _ = match &end {
                End::Complete => buf.write_all(b"complete"),
                End::BodyError(e) => write!(buf, "upstream body error: {e}"),
                End::Dropped => buf.write_all(b"client gone"),
            };
        });
    }
}
