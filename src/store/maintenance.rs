//! The store's own background task ([`Store::start_maintenance`]): makes lazily committed writes
//! durable every [`FLUSH_INTERVAL`] (a flush with nothing waiting writes nothing, so an idle box
//! writes nothing) and applies retention every [`GC_INTERVAL`], until shutdown.
//!
//! It never makes the final flush: the daemon stops every task first, then [`Store::close`]
//! flushes and closes the file, so nothing is committed after the close.

use super::{Store, now_ms};
use crate::shutdown::Shutdown;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often lazily committed writes are made durable while any are outstanding: the most a
/// cursor or a finished turn can lose to a power cut (both are recovered: inbound is deduplicated,
/// an unrecorded turn runs again).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// How often old inbox rows and idle sessions are removed: retention is by days and thousands of
/// rows, so a pass every ten minutes keeps the file bounded without waking the disk needlessly.
pub const GC_INTERVAL: Duration = Duration::from_secs(600);

impl Store {
    /// Spawns the store's maintenance task (flush and retention) on the current runtime; it
    /// returns once `shutdown` trips. The daemon awaits it with its other tasks, then closes the
    /// store.
    pub fn start_maintenance(&self, shutdown: Shutdown) -> JoinHandle<()> {
        tokio::spawn(maintain(self.clone(), shutdown))
    }
}

async fn maintain(store: Store, mut shutdown: Shutdown) {
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut gc = tokio::time::interval(GC_INTERVAL);
    loop {
        tokio::select! {
            _ = flush.tick() => { let _ = store.flush().await; }
            _ = gc.tick() => store.gc(now_ms()).await,
            _ = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::{Accepted, InboxRecord, TurnDone};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    /// Lets the maintenance task run what the clock made due.
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    /// Answered long ago: due for retention at the next pass.
    fn old_message() -> InboxRecord {
        InboxRecord {
            channel: "telegram".into(),
            msg_id: "1".into(),
            chat: "42".into(),
            author: "42".into(),
            session: "telegram-42".into(),
            accepted_ms: 1,
            ..InboxRecord::default()
        }
    }

    /// Under the paused clock: the lazy writes of a turn are fsynced at the first flush tick after
    /// them and not before; the answered row is collected at the next retention pass and not
    /// before; shutdown ends the task.
    #[tokio::test(start_paused = true)]
    async fn flushes_collects_and_stops_on_shutdown() {
        let metrics = Arc::new(Metrics::default());
        let store = Store::open_in_memory(metrics.clone()).unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let task = store.start_maintenance(shutdown);
        // The first ticks run at once, with nothing to do.
        settle().await;
        let fsyncs = || metrics.store_fsyncs.load(Relaxed);
        let commits = || metrics.store_commits.load(Relaxed);
        assert_eq!(
            (commits(), fsyncs()),
            (0, 0),
            "an idle store writes nothing"
        );

        let Accepted::New(seq) = store.accept(old_message()).await.unwrap() else {
            panic!("new")
        };
        store
            .turn_done(TurnDone {
                inbox: vec![seq],
                session: "telegram-42".into(),
                history: None,
                reset: false,
                new_generation: false,
                reply: None,
            })
            .await
            .unwrap();
        let lazy = fsyncs();
        tokio::time::advance(FLUSH_INTERVAL - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(fsyncs(), lazy, "not flushed before the interval");
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(fsyncs(), lazy + 1, "flushed at the interval");

        // Still kept (a redelivery is a duplicate) until the retention pass.
        let written = || metrics.store_bytes_written.load(Relaxed);
        let (before_gc, bytes) = (commits(), written());
        tokio::time::advance(GC_INTERVAL - FLUSH_INTERVAL - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(commits(), before_gc, "idle flushes and no pass yet");
        assert_eq!(
            store.accept(old_message()).await.unwrap(),
            Accepted::Duplicate
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert!(written() > bytes, "the retention pass removed rows");
        assert!(
            matches!(store.accept(old_message()).await.unwrap(), Accepted::New(_)),
            "the answered row was collected"
        );

        trigger.trip();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the task returns on shutdown")
            .unwrap();
    }
}
