//! Shutdown signal shared by every task: the daemon trips it once; each task selects on
//! [`Shutdown::wait`] and returns promptly.

use tokio::sync::watch;

/// Cheap to clone; every clone sees the same trip.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// Held by the daemon; dropping it also trips the signal.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    pub fn is_tripped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (or the trigger was dropped).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    pub fn trip(&self) {
        let _ = self.0.send(true);
    }
}
