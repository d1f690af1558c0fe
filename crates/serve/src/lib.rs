//! HTTP/1 serving for the API server and the agent's endpoint, with the limits that keep slow or
//! strange clients from taking the server: a request-header timeout, an idle timeout, and a cap
//! on connections that have not authenticated.
//!
//! A connection counts as anonymous from its accept until one of its requests carries a valid
//! credential (the caller's [`Authenticate`]); beyond [`Limits::max_anonymous`] a new connection
//! is closed at once, so clients that connect and dawdle cannot use up the file descriptors
//! while authenticated clients (agents' heartbeats on their kept-alive connections) go on.
//! This crate knows nothing of tokens or paths: what authenticates is the caller's to say.
#![forbid(unsafe_code)]

mod conn;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What a connection may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a whole request head, from the connection's accept or from
    /// the first byte of a later request on it.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request once a response is done.
    /// A response still being sent (a watch, a followed log) is never idle.
    pub idle_timeout: Duration,
    /// The most connections open at once that have not authenticated.
    pub max_anonymous: usize,
}

impl Limits {
    /// Near kube-apiserver's 32 s `ReadHeaderTimeout`; hyper's own default too.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
    /// Longer than the 90 s a hyper or Go client keeps an idle connection in its pool, so the
    /// client lets go first and never sends on a connection the server is closing.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    pub const DEFAULT_MAX_ANONYMOUS: usize = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_anonymous: Self::DEFAULT_MAX_ANONYMOUS,
        }
    }
}

/// Whether a request's headers carry a valid credential.
pub type Authenticate = Arc<dyn Fn(&http::HeaderMap) -> bool + Send + Sync>;

/// How often at most a refused connection is logged (with the count since the last line).
const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// connection finish its request in flight (long-lived responses must end on their own signal)
/// and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    authenticate: Authenticate,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let anonymous = Arc::new(AtomicUsize::new(0));
    let mut conns = JoinSet::new();
    let mut refusals = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Only this loop adds to the count, so the check and the add below do not race.
        if anonymous.load(Ordering::Relaxed) >= limits.max_anonymous {
            drop(tcp);
            refusals.note(peer, limits.max_anonymous);
            continue;
        }
        // Without TCP_NODELAY a small write right after another (a watch event, a log line)
        // waits, in the kernel, for the client to acknowledge the first (Nagle's algorithm
        // against the peer's delayed ACK): 10-40 ms per event were measured before this.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        conns.spawn(conn::serve(
            tcp,
            peer,
            router.clone(),
            limits,
            Arc::clone(&authenticate),
            conn::Anonymous::count(&anonymous),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// An accept error: one connection's trouble is skipped; anything else (out of file
/// descriptors) is logged and waited out briefly instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Connections refused at the cap, logged at most every [`REFUSALS_LOG_EVERY`].
#[derive(Default)]
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: std::net::SocketAddr, max: usize) {
        self.unlogged += 1;
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < REFUSALS_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            refused = self.unlogged,
            last_peer = %peer,
            max,
            "refusing connections: {max} connections that have not authenticated are open"
        );
        self.unlogged = 0;
        self.logged_at = Some(Instant::now());
    }
}
