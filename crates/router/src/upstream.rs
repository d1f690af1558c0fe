//! HTTP/1.1 toward backends: keep-alive connections pooled per endpoint, taken before the
//! request is handed over.
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

/// A connection to one backend, ready for one request at a time.
pub(crate) type H1Sender = SendRequest<Incoming>;

/// An idle connection older than this is closed rather than reused (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per endpoint; more are closed when their response ends.
const MAX_IDLE: usize = 512;

/// One endpoint's idle keep-alive connections, the most recently used last (it is the likeliest
/// to be still open, and the others age out).
#[derive(Default)]
pub(crate) struct IdleConns(Mutex<Vec<Idle>>);

struct Idle {
    sender: H1Sender,
    since: Instant,
}

impl IdleConns {
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Nothing panics while holding the lock; a poisoned list is still a valid list.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, now: Instant) -> Option<H1Sender> {
        let mut idle = self.lock();
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && now.saturating_duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.sender);
            }
        }
        None
    }

    /// Puts back a connection whose last response has been read to its end.
    pub fn put(&self, sender: H1Sender, now: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: now });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdleConns({})", self.lock().len())
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

    async fn connect(&self, addr: SocketAddr) -> Result<H1Sender, BoxError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(connected) => connected?,
                Err(_) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into())
                }
            };
        // Request heads are small and latency-bound: no Nagle delay.
        stream.set_nodelay(true)?;
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
            idle.put(sender, now);
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
