//! Running alone inside a test binary. Tests that measure time or resources — latency
//! percentiles, reconnect times, RSS, idle writes — each had a test binary of their own, and cargo
//! runs one binary at a time, so nothing else of the suite ran beside them. Grouped into one
//! binary (tests/system), they keep that: each takes [`alone`] (nothing else of the binary runs
//! meanwhile) or [`shared`] (runs beside other `shared` tests only, as the tests of one old binary
//! ran beside each other) as its first step. A test that panics drops its guard on unwinding, so a
//! failure does not stop the others. The lock is process-wide and works across the per-test
//! runtimes of `#[tokio::test]`.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static LOCK: RwLock<()> = RwLock::const_new(());

/// Nothing else that takes this lock runs until the guard is dropped (FIFO: a waiting `alone`
/// test is not starved by `shared` ones).
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().await
}

/// Runs beside other `shared` holders, never beside an `alone` one.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    LOCK.read().await
}
