//! HTTP/1.1 toward backends: keep-alive connections pooled per endpoint, taken before the
//! request is handed over. Requests without a body go over [`H1Conn`]s, driven by the client
//! connection's own task ([`crate::h1`]); requests with a body and upgrades over hyper's
//! client connections, each with a task of its own.
//!
//! Why not hyper-util's pooled client (still used for h2c): per request it boxes its future,
//! looks the connection up in one map keyed by scheme and authority, spawns a task to put back
//! a connection whose response has a body, and consumes the request even when it cannot
//! connect, so the router cloned the headers of every attempt in case it had to try another
//! endpoint. Here a connection is taken first — an endpoint that refuses it leaves the request
//! untouched for the next one — and goes back to its endpoint's idle list when the response
//! body has ended ([`crate::access::Completion`]).

use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::BoxError;
use crate::h1::{ExchangeError, H1Body, H1Conn};

/// A connection to one backend, ready for one request at a time.
pub(crate) type H1Sender = SendRequest<Incoming>;

/// An idle connection older than this is closed rather than reused (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint; more are closed when their response ends.
const MAX_IDLE: usize = 512;

/// A connection whose response has been read to its end, on its way back to the pool.
#[derive(Debug)]
pub(crate) enum Pooled {
    Hyper(H1Sender),
    Inline(H1Conn),
}

/// One endpoint's idle keep-alive connections, the most recently used last (it is the likeliest
/// to be still open, and the others age out).
#[derive(Default)]
pub(crate) struct IdleConns {
    hyper: Mutex<Vec<Idle<H1Sender>>>,
    inline: Mutex<Vec<Idle<H1Conn>>>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

fn lock<T>(list: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding the lock; a poisoned list is still a valid list.
    list.lock().unwrap_or_else(|e| e.into_inner())
}

/// The most recently used connection of `list` that is still open and young enough.
fn take_from<C>(
    list: &Mutex<Vec<Idle<C>>>,
    now: Instant,
    closed: impl Fn(&C) -> bool,
) -> Option<C> {
    let mut idle = lock(list);
    while let Some(c) = idle.pop() {
        if !closed(&c.conn) && now.saturating_duration_since(c.since) < IDLE_TIMEOUT {
            return Some(c.conn);
        }
    }
    None
}

fn put_into<C>(list: &Mutex<Vec<Idle<C>>>, conn: C, now: Instant) {
    let mut idle = lock(list);
    if idle.len() < MAX_IDLE {
        idle.push(Idle { conn, since: now });
    }
}

impl IdleConns {
    fn take(&self, now: Instant) -> Option<H1Sender> {
        take_from(&self.hyper, now, SendRequest::is_closed)
    }

    fn take_inline(&self, now: Instant) -> Option<H1Conn> {
        take_from(&self.inline, now, H1Conn::is_stale)
    }

    /// Puts back a connection whose last response has been read to its end.
    pub fn put(&self, conn: Pooled, now: Instant) {
        match conn {
            Pooled::Hyper(sender) if !sender.is_closed() => put_into(&self.hyper, sender, now),
            Pooled::Hyper(_) => {}
            Pooled::Inline(conn) => put_into(&self.inline, conn, now),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.hyper).len() + lock(&self.inline).len()
    }
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hyper, inline) = (lock(&self.hyper).len(), lock(&self.inline).len());
        write!(f, "IdleConns(hyper: {hyper}, inline: {inline})")
    }
}

/// How one request toward one endpoint went.
pub(crate) enum Sent {
    /// No connection could be had: the request was not sent and comes back.
    Refused(BoxError, Request<Incoming>),
    /// The connection failed once the request was (or may have been) on its way.
    Failed(hyper::Error),
    /// The response head; the connection goes back to the pool once its body has ended.
    Answered(Response<Incoming>, H1Sender),
}

/// How a request without a body went toward one endpoint.
// The response is the common case; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Exchanged {
    /// No connection could be had, or the request could not be written: it was not sent.
    Refused(BoxError),
    /// The connection failed once the request was on its way.
    Failed(BoxError),
    /// The response; its body carries the connection back to the pool once read to its end.
    Answered(Response<H1Body>),
}

/// Opens and reuses HTTP/1.1 connections.
#[derive(Debug, Clone)]
pub(crate) struct H1Client {
    connect_timeout: Duration,
    builder: http1::Builder,
}

impl H1Client {
    pub fn new(connect_timeout: Duration) -> Self {
        H1Client {
            connect_timeout,
            builder: http1::Builder::new(),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` over an idle connection of `idle`
    /// or a new one.
    pub async fn send(
        &self,
        addr: SocketAddr,
        idle: &IdleConns,
        mut req: Request<Incoming>,
        now: Instant,
    ) -> Sent {
        loop {
            let (mut sender, reused) = match idle.take(now) {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare, and its future would otherwise make every
                // request's future larger (and so slower to move).
                None => match Box::pin(self.connect(addr)).await {
                    Ok(sender) => (sender, false),
                    Err(e) => return Sent::Refused(e, req),
                },
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                let closed = io::Error::new(io::ErrorKind::ConnectionAborted, "connection closed");
                return Sent::Refused(closed.into(), req);
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Sent::Answered(response, sender),
                // Closed before the request was written: a keep-alive connection the backend
                // let go (try another, as hyper-util does), or a new one that died at once.
                Err(mut e) => match e.take_message() {
                    Some(back) if reused => req = back,
                    Some(back) => return Sent::Refused(e.into_error().into(), back),
                    None => return Sent::Failed(e.into_error()),
                },
            }
        }
    }

    /// Sends `req`, which has no body (origin-form URI, `Host` set), to `addr` over an idle
    /// connection of `idle` or a new one, within the caller's task.
    pub async fn exchange(
        &self,
        addr: SocketAddr,
        idle: &IdleConns,
        req: &Request<Incoming>,
        now: Instant,
    ) -> Exchanged {
        loop {
            let (conn, reused) = match idle.take_inline(now) {
                Some(conn) => (conn, true),
                // Boxed for the same reason as in `send`.
                None => match Box::pin(self.open(addr)).await {
                    Ok(stream) => (H1Conn::new(stream), false),
                    Err(e) => return Exchanged::Refused(e),
                },
            };
            match conn.exchange(req).await {
                Ok(response) => return Exchanged::Answered(response),
                // The write failed: the backend let the keep-alive connection go. As in `send`,
                // another connection is tried; a new one that fails is a refusal.
                Err(ExchangeError::Unsent(_)) if reused => continue,
                Err(ExchangeError::Unsent(e)) => return Exchanged::Refused(e.into()),
                Err(ExchangeError::Sent(e)) => return Exchanged::Failed(e),
            }
        }
    }

    /// A new connection to `addr`.
    async fn open(&self, addr: SocketAddr) -> Result<TcpStream, BoxError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(connected) => connected?,
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into())
                }
            };
        // Request heads are small and latency-bound: no Nagle delay.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn connect(&self, addr: SocketAddr) -> Result<H1Sender, BoxError> {
        let stream = self.open(addr).await?;
        let (sender, conn) = self.builder.handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "backend connection ended with an error");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that answers every request on a connection with "ok", counting connections.
    async fn backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = tx.send(());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_put_back_and_refusal_returns_the_request() {
        let (addr, mut accepted) = backend().await;
        let client = H1Client::new(Duration::from_secs(2));
        let idle = IdleConns::default();
        // hyper's server side gives us request bodies; an empty one will do.
        let (req_for, mut requests) = tokio::sync::mpsc::unbounded_channel();
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = server.accept().await.unwrap();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let _ = req_for.send(req);
                async { Ok::<_, std::convert::Infallible>(Response::new(String::new())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
        let mut front = TcpStream::connect(front).await.unwrap();
        front
            .write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();

        for _ in 0..2 {
            let req = requests.recv().await.unwrap();
            let now = Instant::now();
            let Sent::Answered(response, sender) = client.send(addr, &idle, req, now).await else {
                panic!("no answer");
            };
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
            assert_eq!(&body.to_bytes()[..], b"ok");
            idle.put(Pooled::Hyper(sender), now);
            assert_eq!(idle.len(), 1);
        }
        accepted.recv().await.unwrap();
        assert!(
            accepted.try_recv().is_err(),
            "a second connection was opened"
        );

        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        front
            .write_all(b"GET /c HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let req = requests.recv().await.unwrap();
        match client
            .send(dead_addr, &IdleConns::default(), req, Instant::now())
            .await
        {
            Sent::Refused(_, back) => assert_eq!(back.uri().path(), "/c"),
            _ => panic!("a dead endpoint answered"),
        }
    }
}
