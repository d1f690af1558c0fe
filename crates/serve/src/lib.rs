//! HTTP/1 serving for the API server and the agent's endpoint, with the limits that keep slow or
//! strange clients from taking the server: a request-header timeout, an idle timeout, and a cap
//! on connections that have not authenticated.
//!
//! A connection counts as anonymous from its accept until one of its requests carries a valid
//! credential (the caller's [`Authenticate`]). Beyond [`Limits::max_anonymous`] a new connection
//! is on probation: its first request must arrive within a second and authenticate, or the
//! connection is closed (after a 503 for a request without a valid credential); beyond as many
//! again on probation, a new connection is closed at once. So clients that connect and dawdle
//! hold at most `max_anonymous` sockets for long, and authenticated clients go on: on their
//! kept-alive connections, and on new ones too (an HTTP client's pool opens one whenever its
//! idle connection is not back yet, so "keep your connection" alone would not do).
//! This crate knows nothing of tokens or paths: what authenticates is the caller's to say.
//!
//! With a TLS configuration every connection starts with the handshake, in the connection's
//! task and within the header timeout (the probation timeout on probation), and the
//! connection is anonymous during it; bytes that are not TLS end the connection unanswered.
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
    /// The most connections open at once that have not authenticated; as many again may be on
    /// probation (see the crate's documentation).
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

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves; then stops
/// accepting, lets every connection finish its request in flight (long-lived responses must
/// end on their own signal) and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    authenticate: Authenticate,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let anonymous = Arc::new(AtomicUsize::new(0));
    let on_probation = Arc::new(AtomicUsize::new(0));
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
        // Only this loop adds to the counts, so the checks and the adds below do not race.
        let probation = anonymous.load(Ordering::Relaxed) >= limits.max_anonymous;
        if probation && on_probation.load(Ordering::Relaxed) >= limits.max_anonymous {
            drop(tcp);
            refusals.note(peer, limits.max_anonymous, true);
            continue;
        }
        if probation {
            refusals.note(peer, limits.max_anonymous, false);
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
            tls.clone(),
            conn::Anonymous::count(
                if probation { &on_probation } else { &anonymous },
                probation,
            ),
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

/// Connections put on probation or refused at the cap, logged at most every
/// [`REFUSALS_LOG_EVERY`].
#[derive(Default)]
struct Refusals {
    refused: u64,
    on_probation: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: std::net::SocketAddr, max: usize, refused: bool) {
        if refused {
            self.refused += 1;
        } else {
            self.on_probation += 1;
        }
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < REFUSALS_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            refused = self.refused,
            on_probation = self.on_probation,
            last_peer = %peer,
            max,
            "{max} connections that have not authenticated are open: new ones must authenticate at once, or are refused"
        );
        self.refused = 0;
        self.on_probation = 0;
        self.logged_at = Some(Instant::now());
    }
}
