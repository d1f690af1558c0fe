//! Prometheus metrics: requests by app and status class, latency by app, upstream errors.
//!
//! The request path counts through [`AppMetrics`], one per app kept in the route snapshot:
//! its series handles are looked up (and their label strings made) once per app, not per
//! request.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `1xx` … `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StatusClass(u8);

impl StatusClass {
    fn of(status: http::StatusCode) -> Self {
        StatusClass((status.as_u16() / 100).clamp(1, 5) as u8)
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        write!(encoder, "{}xx", self.0)
    }
}

/// Why a request to a backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[repr(usize)]
#[allow(non_camel_case_types)]
pub(crate) enum UpstreamError {
    /// Connection refused or not established in time (the request was retried elsewhere).
    connect,
    /// No response head within the route's timeout.
    timeout,
    /// The connection failed after the request went out.
    reset,
    /// The response body broke off.
    body,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    app: String,
    kind: UpstreamError,
}

/// The router's metrics registry. Requests that match no route count under `app=""`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<AppLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<ErrorLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("kumo_router");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<AppLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by app and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response, by app",
            duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed attempts toward backends, by app and kind",
            upstream_errors.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
        }
    }

    /// The handles of `app`'s series. A series appears in the output once it is first used,
    /// as it did when each request looked it up.
    pub(crate) fn app(self: &Arc<Self>, app: &str) -> Arc<AppMetrics> {
        Arc::new(AppMetrics {
            metrics: self.clone(),
            app: app.to_string(),
            requests: Default::default(),
            duration: OnceLock::new(),
            errors: Default::default(),
        })
    }

    /// The metrics in the Prometheus text exposition format (for a `/metrics` endpoint).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Failed attempts toward `app`'s backends so far, of every kind.
    pub fn upstream_errors_of(&self, app: &str) -> u64 {
        [
            UpstreamError::connect,
            UpstreamError::timeout,
            UpstreamError::reset,
            UpstreamError::body,
        ]
        .into_iter()
        .filter_map(|kind| {
            let labels = ErrorLabels {
                app: app.to_string(),
                kind,
            };
            self.upstream_errors.get(&labels).map(|c| c.get())
        })
        .sum()
    }
}

/// One app's series, created on first use and then counted without a lookup.
pub(crate) struct AppMetrics {
    metrics: Arc<Metrics>,
    app: String,
    /// By status class, `1xx` first.
    requests: [OnceLock<Counter>; 5],
    duration: OnceLock<Histogram>,
    /// By [`UpstreamError`] discriminant.
    errors: [OnceLock<Counter>; 4],
}

impl AppMetrics {
    pub(crate) fn observe(&self, status: http::StatusCode, seconds: f64) {
        let class = StatusClass::of(status);
        self.requests[usize::from(class.0 - 1)]
            .get_or_init(|| {
                self.metrics.requests.get_or_create_owned(&RequestLabels {
                    app: self.app.clone(),
                    class,
                })
            })
            .inc();
        self.duration
            .get_or_init(|| {
                self.metrics.duration.get_or_create_owned(&AppLabels {
                    app: self.app.clone(),
                })
            })
            .observe(seconds);
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamError) {
        self.errors[kind as usize]
            .get_or_init(|| {
                self.metrics
                    .upstream_errors
                    .get_or_create_owned(&ErrorLabels {
                        app: self.app.clone(),
                        kind,
                    })
            })
            .inc();
    }
}

impl std::fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppMetrics")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}
