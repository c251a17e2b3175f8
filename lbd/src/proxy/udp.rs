//! UDP proxy (placeholder; being written).
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Protocol;
use crate::daemon::Shared;

/// Serves the UDP virtual server listening on `key` with `socket` until aborted.
pub async fn serve(
    shared: Arc<Shared>,
    key: (SocketAddr, Protocol),
    socket: tokio::net::UdpSocket,
) {
    let _ = (shared, key, socket);
    std::future::pending::<()>().await
}
