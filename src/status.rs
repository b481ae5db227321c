//! Each component's state, one board shared by `/healthz`, `clawbox status`, systemd's `STATUS=`
//! line and the watchdog.
//!
//! A component (a channel, an agent) owns a [`Reporter`] for its row: it sets its state in plain
//! words and calls [`Reporter::beat`] each time its loop makes progress. The watchdog feeds systemd
//! only while every live row has beaten recently. Fixed set of rows, made at start-up: memory does
//! not grow with uptime.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

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
    /// Watched rows must beat; an agent row that only changes on use is not watched.
    pub watched: bool,
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

    /// Adds a row; `watched` rows must beat for the watchdog to be fed.
    pub fn register(&self, name: &str, watched: bool) -> Reporter {
        let mut inner = self.lock();
        inner.rows.push(Row {
            name: name.to_string(),
            state: State::Starting,
            detail: String::new(),
            last_beat: Instant::now(),
            watched,
        });
        Reporter {
            board: self.clone(),
            index: inner.rows.len() - 1,
        }
    }

    pub fn snapshot(&self) -> Vec<Row> {
        self.lock().rows.clone()
    }

    /// One line for systemd's `STATUS=`: `telegram: up (@bot); whatsapp: needs-owner (scan the QR)`.
    pub fn status_line(&self) -> String {
        self.snapshot()
            .iter()
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

    /// True while every watched row that should be running has beaten within `within`.
    pub fn all_progressing(&self, now: Instant, within: Duration) -> bool {
        self.lock()
            .rows
            .iter()
            .filter(|r| r.watched && !matches!(r.state, State::Off | State::NeedsOwner))
            .all(|r| now.saturating_duration_since(r.last_beat) <= within)
    }

    /// Names of watched rows that have not beaten within `within`.
    pub fn stalled(&self, now: Instant, within: Duration) -> Vec<String> {
        self.lock()
            .rows
            .iter()
            .filter(|r| r.watched && !matches!(r.state, State::Off | State::NeedsOwner))
            .filter(|r| now.saturating_duration_since(r.last_beat) > within)
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn all_healthy(&self) -> bool {
        self.lock().rows.iter().all(|r| r.state.healthy())
    }
}

impl Reporter {
    pub fn set(&self, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        let mut inner = self.board.lock();
        if let Some(row) = inner.rows.get_mut(self.index) {
            if row.state != state || row.detail != detail {
                tracing::info!(component = %row.name, state = state.as_str(), detail = %detail, "state");
            }
            row.state = state;
            row.detail = detail;
            if !crate::fault::stalled(&row.name) {
                row.last_beat = Instant::now();
            }
        }
    }

    /// The component's loop made progress (a poll returned, a frame arrived, a tick fired).
    pub fn beat(&self) {
        if let Some(row) = self.board.lock().rows.get_mut(self.index) {
            // `CLAWBOX_FAULT=stall:<name>` freezes this row, as a hung loop would (watchdog test).
            if crate::fault::stalled(&row.name) {
                return;
            }
            row.last_beat = Instant::now();
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

    #[tokio::test(start_paused = true)]
    async fn a_row_that_stops_beating_is_reported_stalled() {
        let board = Board::default();
        let a = board.register("telegram", true);
        let _b = board.register("agent", false);
        a.set(State::Up, "@bot");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(board.all_progressing(Instant::now(), Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!board.all_progressing(Instant::now(), Duration::from_secs(10)));
        assert_eq!(
            board.stalled(Instant::now(), Duration::from_secs(10)),
            vec!["telegram".to_string()]
        );
        a.beat();
        assert!(board.all_progressing(Instant::now(), Duration::from_secs(10)));
        assert_eq!(board.status_line(), "telegram: up (@bot); agent: starting");
    }
}
