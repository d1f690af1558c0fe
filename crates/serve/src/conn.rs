//! One connection: hyper's HTTP/1 state machine, and beside it a watchdog that closes the
//! connection when its request head is late or it has been idle too long.
//!
//! hyper's own `header_read_timeout` is off: its timer starts whenever hyper waits for a head,
//! idle keep-alive included, so it would close an agent's kept-alive connection between
//! heartbeats as if it were a slow client. Here the head timer starts at the accept, or at the
//! first byte of a later request, and the idle timer covers the wait between requests.

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower_service::Service;

use crate::{Authenticate, Limits};

/// How long a connection accepted beyond the anonymous cap has for its first request head:
/// enough for a client that sends its request right after connecting (as every real client
/// does), far less than the header timeout a slow client could otherwise hold a socket for.
pub(crate) const PROBATION_HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The answer to a request without a valid credential on a connection on probation; the
/// connection closes after it.
fn over_the_cap() -> http::Response<Body> {
    let status = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too many connections that have not authenticated: present a valid bearer token","reason":"ServiceUnavailable","code":503}"#;
    let mut response = http::Response::new(Body::from(status));
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// A place among the anonymous connections, or among those on probation (accepted beyond the
/// anonymous cap), given up on drop.
pub(crate) struct Anonymous {
    count: Arc<AtomicUsize>,
    probation: bool,
}

impl Anonymous {
    pub(crate) fn count(count: &Arc<AtomicUsize>, probation: bool) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Anonymous {
            count: Arc::clone(count),
            probation,
        }
    }
}

impl Drop for Anonymous {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the connection is, as the watchdog needs it.
struct State {
    /// Requests whose response body is not yet fully sent (or dropped).
    in_flight: usize,
    /// When the first byte of a later request's head arrived (while no request was in flight).
    head_started: Option<Instant>,
    /// Since when nothing is in flight (the accept, at first).
    idle_since: Instant,
    /// Whether a request head was ever complete.
    served: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the watchdog after every change of `state`.
    changed: Notify,
    /// Held until a request authenticates.
    anonymous: Mutex<Option<Anonymous>>,
    /// Accepted beyond the anonymous cap: the first request must authenticate, and soon.
    probation: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
        self.changed.notify_one();
    }

    fn bytes_arrived(&self) {
        let mut state = lock(&self.state);
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Notes a request whose head is complete; whether the connection is still anonymous.
    fn request_started(&self, authenticated: bool) -> bool {
        let anonymous = {
            let mut place = lock(&self.anonymous);
            if authenticated {
                place.take();
            }
            place.is_some()
        };
        self.update(|s| {
            s.in_flight += 1;
            s.head_started = None;
            s.served = true;
        });
        anonymous
    }

    /// When the connection is to be closed, and why; `None` while a request is in flight.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let s = lock(&self.state);
        if s.in_flight > 0 {
            return None;
        }
        let (from, limit, why) = match (s.served, s.head_started) {
            (false, _) if self.probation => (
                s.idle_since,
                limits.header_timeout.min(PROBATION_HEAD_TIMEOUT),
                "on probation: no request head in time",
            ),
            // The first head is timed from the accept: a byte now and then does not extend it.
            (false, _) => (
                s.idle_since,
                limits.header_timeout,
                "no request head in time",
            ),
            (true, Some(at)) => (
                at,
                limits.header_timeout,
                "request head not complete in time",
            ),
            (true, None) => (s.idle_since, limits.idle_timeout, "idle"),
        };
        from.checked_add(limit).map(|at| (at, why))
    }
}

/// A request in flight until its response body is dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        });
    }
}

/// The connection's stream (TCP, or TLS over it), noting when bytes arrive.
struct Watched<S> {
    io: S,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.shared.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Resolves, with the reason, when the connection is to be closed.
async fn watchdog(shared: &Shared, limits: &Limits) -> &'static str {
    loop {
        // `notify_one` keeps a permit when nobody waits, so no change is missed in between.
        match shared.deadline(limits) {
            Some((at, why)) if at <= Instant::now() => return why,
            Some((at, _)) => tokio::select! {
                _ = shared.changed.notified() => {}
                _ = tokio::time::sleep_until(at) => {}
            },
            None => shared.changed.notified().await,
        }
    }
}

/// Serves one connection until it ends, the watchdog closes it, or the server stops (then it
/// finishes the request in flight and closes). On probation (accepted beyond the anonymous
/// cap) its first request head must come within [`PROBATION_HEAD_TIMEOUT`] and carry a valid
/// credential, or the connection is closed (after a 503). With `tls` the handshake comes
/// first, timed from the accept like the first request head it precedes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    authenticate: Authenticate,
    tls: Option<tokio_rustls::TlsAcceptor>,
    anonymous: Anonymous,
    mut stop: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let Some(acceptor) = tls else {
        return serve_io(
            tcp,
            accepted,
            peer,
            router,
            limits,
            authenticate,
            anonymous,
            stop,
        )
        .await;
    };
    let limit = if anonymous.probation {
        limits.header_timeout.min(PROBATION_HEAD_TIMEOUT)
    } else {
        limits.header_timeout
    };
    let handshake = tokio::select! {
        done = tokio::time::timeout(limit, acceptor.accept(tcp)) => done,
        _ = async { drop(stop.wait_for(|stop| *stop).await) } => return,
    };
    match handshake {
        Ok(Ok(tls)) => {
            serve_io(
                tls,
                accepted,
                peer,
                router,
                limits,
                authenticate,
                anonymous,
                stop,
            )
            .await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(%peer, "tls handshake not complete in time"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_io<S>(
    io: S,
    accepted: Instant,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    authenticate: Authenticate,
    anonymous: Anonymous,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            in_flight: 0,
            head_started: None,
            idle_since: accepted,
            served: false,
        }),
        changed: Notify::new(),
        probation: anonymous.probation,
        anonymous: Mutex::new(Some(anonymous)),
    });
    let io = TokioIo::new(Watched {
        io,
        shared: Arc::clone(&shared),
    });
    let service = {
        let shared = Arc::clone(&shared);
        hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            // Who is on the other end, for the audit log (axum's `ConnectInfo`).
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let anonymous = shared.request_started(authenticate(req.headers()));
            let refuse = shared.probation && anonymous;
            let in_flight = InFlight(Arc::clone(&shared));
            let mut router = router.clone();
            async move {
                let response = if refuse {
                    over_the_cap()
                } else {
                    match router.call(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                };
                // The request stays in flight for as long as its body is being sent.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &in_flight;
                        frame
                    }))
                }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let why = tokio::select! {
        result = conn.as_mut() => return finished(peer, result),
        why = watchdog(&shared, &limits) => why,
        _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
            // hyper's graceful shutdown would wait for a head that has begun, or for a first
            // one; with nothing in flight there is nothing to finish.
            if lock(&shared.state).in_flight == 0 {
                return;
            }
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => return finished(peer, result),
                why = watchdog(&shared, &limits) => why,
            }
        }
    };
    // Dropping the connection closes the socket; nothing is in flight on it.
    tracing::debug!(%peer, why, "closing a connection");
}

fn finished(peer: SocketAddr, result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
