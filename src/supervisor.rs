//! Runs each channel and agent connection in its own task and restarts it after an error or a
//! panic, with capped, jittered backoff ([`crate::retry::RESTART`]), while the others carry on. A task that returns `Ok` is
//! finished for good (shutdown, or it needs the owner: token rejected, logged out).
//!
//! Waiting to restart is progress: the task's row on the board is told the restart is coming
//! (the wait plus the standing allowance to its first beat), so a channel that keeps failing is
//! retried here, not escalated to a watchdog restart of the whole process.

use crate::metrics::Metrics;
use crate::retry::{self, Backoff};
use crate::shutdown::Shutdown;
use crate::status::Reporter;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// After shutdown begins, a task gets this long to return before it is aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Spawns `make()` under supervision; the returned handle ends when the task is finished for good.
/// `row`, the task's row on the board, beats for each restart wait.
pub fn supervise<F, Fut, E>(
    name: String,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
    row: Option<Reporter>,
    make: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    tokio::spawn(async move {
        let seed = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut backoff = Backoff::new(retry::RESTART, seed);
        let repeat_site = format!("task {name}");
        loop {
            let started = Instant::now();
            let mut task = tokio::spawn(make());
            let joined = tokio::select! {
                j = &mut task => j,
                _ = shutdown.wait() => {
                    if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                        tracing::warn!(task = %name, "did not stop in time; aborting it");
                        task.abort();
                    }
                    return;
                }
            };
            match joined {
                Ok(Ok(())) => {
                    tracing::debug!(task = %name, "finished");
                    return;
                }
                Ok(Err(e)) => {
                    let e = e.to_string();
                    match crate::repeat::admit(&repeat_site, &e) {
                        Some(note) => {
                            tracing::warn!(task = %name, error = %e, "failed; restarting{note}")
                        }
                        None => tracing::debug!(task = %name, error = %e, "failed; restarting"),
                    }
                }
                Err(e) if e.is_panic() => {
                    tracing::error!(task = %name, "panicked; restarting (a bug: please report it)")
                }
                Err(_) => return,
            }
            if shutdown.is_tripped() {
                return;
            }
            Metrics::inc(&metrics.task_restarts);
            if started.elapsed() >= retry::HEALTHY_RUN {
                backoff.reset();
                crate::repeat::settled(&repeat_site);
            }
            let delay = backoff.next_delay();
            if let Some(row) = &row {
                row.beat_within(delay + crate::status::DEFAULT_ALLOWANCE);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_others_carry_on() {
        let metrics = Arc::new(Metrics::default());
        let (trigger, shutdown) = Shutdown::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let flaky = supervise(
            "flaky".into(),
            metrics.clone(),
            shutdown.clone(),
            None,
            move || {
                let r = r.clone();
                async move {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    if n < 2 {
                        panic!("boom {n}");
                    }
                    Ok::<(), String>(())
                }
            },
        );
        let steady_ticks = Arc::new(AtomicU32::new(0));
        let t = steady_ticks.clone();
        let sd = shutdown.clone();
        let steady = supervise(
            "steady".into(),
            metrics.clone(),
            shutdown.clone(),
            None,
            move || {
                let t = t.clone();
                let mut sd = sd.clone();
                async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => { t.fetch_add(1, Ordering::SeqCst); }
                            _ = sd.wait() => return Ok::<(), String>(()),
                        }
                    }
                }
            },
        );
        flaky.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "two panics, then success");
        assert_eq!(metrics.task_restarts.load(Ordering::SeqCst), 2);
        assert!(
            steady_ticks.load(Ordering::SeqCst) > 5,
            "the other task kept running"
        );
        trigger.trip();
        steady.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_keeps_failing_is_retried_here_not_reported_stalled() {
        let board = crate::status::Board::default();
        let row = board.register("telegram", true);
        let metrics = Arc::new(Metrics::default());
        let (trigger, shutdown) = Shutdown::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = supervise("telegram".into(), metrics, shutdown, Some(row), move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("cannot start")
            }
        });
        // Ten times the longest restart wait: the task never beats by itself, yet the row is
        // never overdue while the supervisor keeps retrying.
        for _ in 0..300 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(board.stalled(Instant::now()).is_empty());
        }
        assert!(
            runs.load(Ordering::SeqCst) > 10,
            "the waits reached the cap"
        );
        trigger.trip();
        task.await.unwrap();
    }
}
