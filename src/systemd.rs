//! systemd notify (interim: the full version lands from its own branch).

use crate::shutdown::Shutdown;
use crate::status::Board;
use std::time::Duration;

pub fn ready() {}
pub fn status(_line: &str) {}
pub fn stopping() {}
pub fn watchdog_interval() -> Option<Duration> {
    None
}
pub async fn watchdog_loop(
    _board: Board,
    _period: Duration,
    _stall_after: Duration,
    mut shutdown: Shutdown,
) {
    shutdown.wait().await;
}
