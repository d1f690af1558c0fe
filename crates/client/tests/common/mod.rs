//! What the client's integration tests share: a proxy standing in for a server that dies.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `target` that can be cut, as a killed or partitioned server is: its open
/// connections are dropped and new ones refused.
pub async fn proxy(target: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cuts) = watch::channel(false);
    let mut closing = cuts.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { return };
                    let mut cuts = cuts.clone();
                    tokio::spawn(async move {
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
    (addr, cut)
}
