//! What the client's integration tests share: a proxy standing in for a server that dies.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Cuts a [`proxy`]: once [`Cut::cut`] returns, the listener is closed and every connection
/// it carried is dropped, so the next request cannot slip through a connection not yet closed.
pub struct Cut {
    cut: watch::Sender<bool>,
    /// One clone per live part of the proxy (the accept loop and each connection); the cut
    /// is complete when only this one is left.
    alive: Arc<()>,
}

impl Cut {
    pub async fn cut(&self) {
        let _ = self.cut.send(true);
        // Each part drops its clone as it ends; a task poll away, never a fixed sleep.
        while Arc::strong_count(&self.alive) > 1 {
            tokio::task::yield_now().await;
        }
    }
}

/// A TCP proxy to `target` that can be cut, as a killed or partitioned server is: its open
/// connections are dropped and new ones refused.
pub async fn proxy(target: SocketAddr) -> (SocketAddr, Cut) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cuts) = watch::channel(false);
    let mut closing = cuts.clone();
    let alive = Arc::new(());
    let accept_alive = alive.clone();
    tokio::spawn(async move {
        let alive = accept_alive;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { return };
                    let mut cuts = cuts.clone();
                    let conn_alive = alive.clone();
                    tokio::spawn(async move {
                        let _alive = conn_alive;
                        if *cuts.borrow() {
                            return;
                        }
                        let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cuts.wait_for(|c| *c) => {}
                        }
                    });
                }
                // Dropping the listener refuses new connections.
                _ = closing.wait_for(|c| *c) => return,
            }
        }
    });
    (addr, Cut { cut, alive })
}
