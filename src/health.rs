//! Loopback `/healthz` and `/metrics` (interim: the full server lands from its own branch).

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::status::Board;
use std::sync::Arc;

pub async fn serve(
    _listener: tokio::net::TcpListener,
    _board: Board,
    _metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) {
    shutdown.wait().await;
}

pub async fn status_command(_addr: std::net::SocketAddr) -> i32 {
    2
}
