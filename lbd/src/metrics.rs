//! Prometheus metrics (placeholder; being written).
use std::sync::Arc;

use crate::daemon::Shared;

/// Serves `/metrics` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let _ = (listener, shared);
    std::future::pending::<()>().await
}
