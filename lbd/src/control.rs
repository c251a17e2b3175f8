//! Control socket (placeholder; being written).
use std::sync::Arc;

use crate::daemon::Shared;

/// Serves lbctl on `listener` (JSON lines).
pub async fn serve(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    let _ = (listener, shared);
    std::future::pending::<()>().await
}
