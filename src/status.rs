//! Each component's state, one board shared by `/healthz`, `clawbox status`, systemd's `STATUS=`
//! line and the watchdog.
//!
//! A component (a channel, an agent, the store's threads, the router's loop) owns a [`Reporter`]
//! for its row: it sets its state in plain words and beats when its work makes progress — a
//! channel when its poll or connection loop completes a step, the store when its threads answer
//! a no-op, the router when its loop turns. A beat also says when the next one is due: within
//! the row's standing allowance ([`Reporter::beat`]), or within the time the step that starts now
//! may legitimately take ([`Reporter::beat_within`]: a 50 s long poll, a Retry-After wait). A row
//! past its due time is stalled ([`Board::stalled`]), and the watchdog stops feeding systemd.
//! Nothing else beats: a loop that hangs stops beating, whatever the hang.
//!
//! Fixed set of rows, made at start-up: memory does not grow with uptime.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// The standing allowance of a watched row registered with [`Board::register`]: its first beat
/// after start-up (reading the store, building a client) and any plain [`Reporter::beat`] must
/// come within this. Components with a known pace announce their own with
/// [`Reporter::beat_within`] or [`Board::register_internal`].
pub const DEFAULT_ALLOWANCE: Duration = Duration::from_secs(30);

/// The coarse state of a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Starting or connecting.
    Starting,
    /// Working.
    Up,
    /// Working poorly or retrying (reconnecting, rate limited, conflict being retried).
    Degraded,
    /// Stopped and needs the owner (token rejected, logged out, pairing required). Other components
    /// carry on. Does not count against readiness or the watchdog.
    NeedsOwner,
    /// Stopped on purpose (shutdown, disabled).
    Off,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Up => "up",
            State::Degraded => "degraded",
            State::NeedsOwner => "needs-owner",
            State::Off => "off",
        }
    }
    /// Whether `/healthz` counts this row as healthy.
    pub fn healthy(self) -> bool {
        matches!(self, State::Up | State::Off)
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    pub state: State,
    /// Plain words for the owner: "@mybot", "token rejected — check token_file", "linked +49…".
    pub detail: String,
    pub last_beat: Instant,
    /// The next beat is due by then; a watched row past it is stalled.
    pub due: Instant,
    /// Watched rows must beat; an agent row that only changes on use is not watched.
    pub watched: bool,
    /// How long a plain [`Reporter::beat`] gives until the next one.
    pub allowance: Duration,
    /// Machinery the owner never configured (the store's threads, the router's loop): watched like
    /// any other row and listed in `/healthz`, but left out of the owner's `STATUS=` line.
    pub internal: bool,
}

impl Row {
    /// Whether the watchdog waits for this row's beats now (not while off or waiting for the
    /// owner).
    fn watched_now(&self) -> bool {
        self.watched && !matches!(self.state, State::Off | State::NeedsOwner)
    }
}

#[derive(Default)]
struct Inner {
    rows: Vec<Row>,
}

/// The shared board. Cheap to clone.
#[derive(Clone, Default)]
pub struct Board {
    inner: Arc<Mutex<Inner>>,
}

/// Handle for one row.
#[derive(Clone)]
pub struct Reporter {
    board: Board,
    index: usize,
}

impl Board {
    // A poisoned lock only means another thread panicked mid-update of plain data; the rows are
    // still valid values, so keep serving them.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a component's row; `watched` rows must beat (within [`DEFAULT_ALLOWANCE`] unless a
    /// beat says otherwise) for the watchdog to be fed.
    pub fn register(&self, name: &str, watched: bool) -> Reporter {
        self.add(name, State::Starting, watched, DEFAULT_ALLOWANCE, false)
    }

    /// Adds a row for internal machinery, up from the start, that must beat within `allowance`.
    pub fn register_internal(&self, name: &str, allowance: Duration) -> Reporter {
        self.add(name, State::Up, true, allowance, true)
    }

    fn add(
        &self,
        name: &str,
        state: State,
        watched: bool,
        allowance: Duration,
        internal: bool,
    ) -> Reporter {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.rows.push(Row {
            name: name.to_string(),
            state,
            detail: String::new(),
            last_beat: now,
            due: now + allowance,
            watched,
            allowance,
            internal,
        });
        Reporter {
            board: self.clone(),
            index: inner.rows.len() - 1,
        }
    }

    pub fn snapshot(&self) -> Vec<Row> {
        self.lock().rows.clone()
    }

    /// One line for systemd's `STATUS=` (and the displays): `telegram: up (@bot); whatsapp:
    /// needs-owner (scan the QR)`. Internal rows are left out: the owner configured none of them.
    pub fn status_line(&self) -> String {
        self.snapshot()
            .iter()
            .filter(|r| !r.internal)
            .map(|r| {
                if r.detail.is_empty() {
                    format!("{}: {}", r.name, r.state.as_str())
                } else {
                    format!("{}: {} ({})", r.name, r.state.as_str(), r.detail)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Names of the watched rows whose next beat was due before `now` (empty: all progressing).
    pub fn stalled(&self, now: Instant) -> Vec<String> {
        self.lock()
            .rows
            .iter()
            .filter(|r| r.watched_now() && now > r.due)
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn all_healthy(&self) -> bool {
        self.lock().rows.iter().all(|r| r.state.healthy())
    }
}

impl Reporter {
    /// Sets the row's state and words. Not a beat: words are not progress. A row that comes back
    /// from off or needs-owner (watched again) gets at least its standing allowance from now.
    pub fn set(&self, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        let mut inner = self.board.lock();
        if let Some(row) = inner.rows.get_mut(self.index) {
            if row.state != state || row.detail != detail {
                tracing::info!(component = %row.name, state = state.as_str(), detail = %detail, "state");
            }
            let was_watched = row.watched_now();
            row.state = state;
            row.detail = detail;
            if !was_watched && row.watched_now() {
                row.due = row.due.max(Instant::now() + row.allowance);
            }
        }
    }

    /// The component's work made progress; the next beat is due within the row's standing
    /// allowance.
    pub fn beat(&self) {
        self.beat_at(None);
    }

    /// The component's work made progress, and the step it starts now may legitimately take up to
    /// `next` (a long poll's deadline, a backoff or Retry-After wait, plus the work around it):
    /// the next beat is due within `next`, whether that is longer or shorter than the allowance.
    pub fn beat_within(&self, next: Duration) {
        self.beat_at(Some(next));
    }

    fn beat_at(&self, next: Option<Duration>) {
        let now = Instant::now();
        if let Some(row) = self.board.lock().rows.get_mut(self.index) {
            row.last_beat = now;
            row.due = now + next.unwrap_or(row.allowance);
        }
    }

    pub fn state(&self) -> State {
        self.board
            .lock()
            .rows
            .get(self.index)
            .map(|r| r.state)
            .unwrap_or(State::Off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_row_that_stops_beating_is_reported_stalled() {
        let board = Board::default();
        let a = board.register("telegram", true);
        let _b = board.register("agent", false);
        a.set(State::Up, "@bot");
        a.beat();
        tokio::time::advance(DEFAULT_ALLOWANCE).await;
        assert!(board.stalled(Instant::now()).is_empty(), "due exactly now");
        tokio::time::advance(secs(1)).await;
        // The unwatched agent row never stalls; set() is words, not progress.
        a.set(State::Degraded, "retrying");
        assert_eq!(board.stalled(Instant::now()), vec!["telegram".to_string()]);
        a.beat();
        assert!(board.stalled(Instant::now()).is_empty());
        assert_eq!(
            board.status_line(),
            "telegram: degraded (retrying); agent: starting"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_beat_announces_how_long_the_next_step_may_take() {
        let board = Board::default();
        let tg = board.register("telegram", true);
        // A long poll of 50 s + grace: longer than the standing allowance, not a stall.
        tg.beat_within(secs(65));
        tokio::time::advance(secs(64)).await;
        assert!(board.stalled(Instant::now()).is_empty());
        tokio::time::advance(secs(2)).await;
        assert_eq!(board.stalled(Instant::now()), vec!["telegram".to_string()]);
        // A 3 s backoff + slack: shorter than the allowance, and held to it.
        tg.beat_within(secs(8));
        tokio::time::advance(secs(9)).await;
        assert_eq!(board.stalled(Instant::now()), vec!["telegram".to_string()]);
        // A plain beat goes back to the standing allowance.
        tg.beat();
        tokio::time::advance(DEFAULT_ALLOWANCE - secs(1)).await;
        assert!(board.stalled(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rows_off_or_waiting_for_the_owner_are_unwatched_and_come_back_with_an_allowance() {
        let board = Board::default();
        let wa = board.register("whatsapp", true);
        wa.set(State::NeedsOwner, "scan the QR");
        tokio::time::advance(secs(600)).await;
        assert!(board.stalled(Instant::now()).is_empty());
        // Linked: watched again, from now, not from the last beat ten minutes ago.
        wa.set(State::Up, "linked +49…");
        assert!(board.stalled(Instant::now()).is_empty());
        tokio::time::advance(DEFAULT_ALLOWANCE + secs(1)).await;
        assert_eq!(board.stalled(Instant::now()), vec!["whatsapp".to_string()]);
        wa.set(State::Off, "stopped");
        assert!(board.stalled(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn internal_rows_are_watched_but_not_in_the_owners_status_line() {
        let board = Board::default();
        let w = board.register_internal("store-writer", secs(25));
        let tg = board.register("telegram", true);
        tg.set(State::Up, "@bot");
        assert_eq!(board.status_line(), "telegram: up (@bot)");
        assert_eq!(board.snapshot()[0].state, State::Up);
        tokio::time::advance(secs(20)).await;
        tg.beat();
        w.beat();
        tokio::time::advance(secs(24)).await;
        tg.beat();
        assert!(board.stalled(Instant::now()).is_empty());
        tokio::time::advance(secs(2)).await;
        assert_eq!(
            board.stalled(Instant::now()),
            vec!["store-writer".to_string()]
        );
    }
}
