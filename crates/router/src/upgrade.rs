//! HTTP/1.1 upgrades (WebSocket and others): after both sides switched, copy bytes both ways.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::balance::Lease;

/// Joins the client's and the backend's upgraded connections until either side closes or the
/// router's drain time is over. The lease keeps the endpoint's request counted meanwhile.
pub(crate) async fn tunnel(
    client: OnUpgrade,
    backend: OnUpgrade,
    lease: Lease,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let upstream = lease.endpoint().addr;
    let (client, backend) = match tokio::join!(client, backend) {
        (Ok(c), Ok(b)) => (c, b),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(%upstream, error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => match copied {
            Ok((up, down)) => tracing::debug!(%upstream, up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(%upstream, error = %e, "upgraded connection broke"),
        },
        _ = stop.wait_for(|stop| *stop) => tracing::debug!(%upstream, "upgraded connection closed by shutdown"),
    }
    drop(lease);
}
