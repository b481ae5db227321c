//! Talking to systemd: `READY=1`, `STATUS=…`, `STOPPING=1` and the watchdog (`WATCHDOG=1`).
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is unset (run by hand, in tests, under another
//! supervisor). This module never decides readiness (the daemon does) and never sets environment
//! variables (edition 2024 makes that unsafe, and the crate forbids unsafe).
//!
//! The watchdog is fed from [`watchdog_loop`], a task on the same event loop as everything else:
//! that it runs at all proves the loop is alive, and it pings only while no watched row on the
//! [`Board`] is past its due beat. What counts as progress, and for how long a row may go without
//! it, is the board's business ([`crate::status`]); this module only reads it and pings. When a
//! row stalls, pings stop and systemd restarts the service (`WatchdogSec=` in the unit,
//! `Restart=on-failure`) within WatchdogSec of the last ping.

use crate::shutdown::Shutdown;
use crate::status::Board;
use sd_notify::NotifyState;
use std::time::Duration;
use tokio::time::Instant;

/// The shortest watchdog period accepted: a zero or tiny `WatchdogSec` must not turn the loop into
/// a busy spin (and `tokio::time::interval` refuses a zero period).
const MIN_PERIOD: Duration = Duration::from_millis(100);

fn send(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Tells systemd start-up is complete. Send only when really able to work.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// One status line for `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Tells systemd shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half of `WatchdogSec`, or `None` when systemd does not watch
/// this process (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`, or `WATCHDOG_PID` names another process).
pub fn watchdog_interval() -> Option<Duration> {
    std::env::var_os("NOTIFY_SOCKET")?;
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// What one watchdog tick should do.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    /// Send `WATCHDOG=1`.
    ping: bool,
    /// Watched components that have not beaten in time (empty when `ping`).
    stalled: Vec<String>,
    /// A new `STATUS=` line, when it differs from the last one sent.
    status: Option<String>,
}

/// Pure: reads the board at `now`, touches nothing.
fn watchdog_decision(board: &Board, now: Instant, last_status: &str) -> Decision {
    let stalled = board.stalled(now);
    let line = board.status_line();
    Decision {
        ping: stalled.is_empty(),
        stalled,
        status: (line != last_status).then_some(line),
    }
}

/// Every `period`: pings the watchdog while no watched row is past its due beat, and updates
/// `STATUS=` when the board's line changed. Returns on shutdown.
pub async fn watchdog_loop(board: Board, period: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(period.max(MIN_PERIOD));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let d = watchdog_decision(&board, Instant::now(), &last_status);
        if let Some(line) = d.status {
            status(&line);
            last_status = line;
        }
        if d.ping {
            send(&[NotifyState::Watchdog]);
        } else {
            tracing::warn!(
                stalled = ?d.stalled,
                "components stopped making progress; not feeding the systemd watchdog (systemd will restart clawbox)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;

    use crate::status::DEFAULT_ALLOWANCE;

    #[tokio::test(start_paused = true)]
    async fn pings_while_progressing_and_stops_when_a_component_stalls() {
        let board = Board::default();
        let tg = board.register("telegram", true);
        let _agent = board.register("agent", false);
        tg.set(State::Up, "@bot");

        let d = watchdog_decision(&board, Instant::now(), "");
        assert!(d.ping);
        assert!(d.stalled.is_empty());
        assert_eq!(
            d.status.as_deref(),
            Some("telegram: up (@bot); agent: starting")
        );

        // Same line again: no new STATUS=.
        let line = board.status_line();
        tokio::time::advance(DEFAULT_ALLOWANCE - Duration::from_secs(1)).await;
        let d = watchdog_decision(&board, Instant::now(), &line);
        assert_eq!(
            d,
            Decision {
                ping: true,
                stalled: vec![],
                status: None
            }
        );

        // Past the due beat: no ping, the stalled row is named.
        tokio::time::advance(Duration::from_secs(2)).await;
        let d = watchdog_decision(&board, Instant::now(), &line);
        assert!(!d.ping);
        assert_eq!(d.stalled, vec!["telegram".to_string()]);

        // A beat brings the pings back.
        tg.beat();
        assert!(watchdog_decision(&board, Instant::now(), &line).ping);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_step_announced_keeps_the_pings_and_a_stalled_internal_row_stops_them() {
        let board = Board::default();
        let tg = board.register("telegram", true);
        let writer = board.register_internal("store-writer", Duration::from_secs(25));
        tg.set(State::Up, "@bot");
        let line = board.status_line();
        // A long poll announced for 60 s; the writer answers every 5 s.
        tg.beat_within(Duration::from_secs(60));
        for _ in 0..11 {
            tokio::time::advance(Duration::from_secs(5)).await;
            writer.beat();
            assert!(watchdog_decision(&board, Instant::now(), &line).ping);
        }
        // The writer stops answering: the pings stop once its allowance is spent, not before.
        tg.beat_within(Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(watchdog_decision(&board, Instant::now(), &line).ping);
        tokio::time::advance(Duration::from_millis(1)).await;
        let d = watchdog_decision(&board, Instant::now(), &line);
        assert_eq!(
            d,
            Decision {
                ping: false,
                stalled: vec!["store-writer".to_string()],
                status: None
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_waiting_for_its_owner_does_not_stop_the_pings() {
        let board = Board::default();
        let wa = board.register("whatsapp", true);
        wa.set(State::NeedsOwner, "scan the QR");
        tokio::time::advance(DEFAULT_ALLOWANCE * 10).await;
        let d = watchdog_decision(&board, Instant::now(), "");
        assert!(d.ping);
        assert_eq!(
            d.status.as_deref(),
            Some("whatsapp: needs-owner (scan the QR)")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_returns_on_shutdown() {
        let board = Board::default();
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(watchdog_loop(board, Duration::from_secs(15), shutdown));
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(!task.is_finished());
        trigger.trip();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("loop returns promptly")
            .unwrap();
    }

    /// Runs only as a child of [`notifications_reach_the_socket`], with NOTIFY_SOCKET set.
    #[tokio::test(start_paused = true)]
    #[ignore = "run as a child process by notifications_reach_the_socket"]
    async fn notify_child() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        ready();
        status(&format!("interval {:?}", watchdog_interval()));
        let board = Board::default();
        board.register("telegram", true).set(State::Up, "@bot");
        let (_trigger, shutdown) = Shutdown::new();
        // The first tick fires at once; the loop runs in this task until the timeout cancels it.
        let looped = tokio::time::timeout(
            Duration::from_millis(500),
            watchdog_loop(board, Duration::from_secs(1), shutdown),
        )
        .await;
        assert!(looped.is_err(), "the loop only returns on shutdown");
        stopping();
    }

    fn run_child(sock: &std::path::Path, watchdog_pid: Option<&str>) -> Vec<String> {
        let listener = std::os::unix::net::UnixDatagram::bind(sock).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "systemd::tests::notify_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env("NOTIFY_SOCKET", sock)
        .env("WATCHDOG_USEC", "30000000")
        .env_remove("WATCHDOG_PID");
        if let Some(pid) = watchdog_pid {
            cmd.env("WATCHDOG_PID", pid);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "child failed: {out:?}");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        listener.set_nonblocking(true).unwrap();
        while let Ok(n) = listener.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let got = run_child(&dir.path().join("notify1"), None);
        assert_eq!(
            got,
            vec![
                "READY=1\n",
                "STATUS=interval Some(15s)\n",
                "STATUS=telegram: up (@bot)\n",
                "WATCHDOG=1\n",
                "STOPPING=1\n",
            ]
        );
        // WATCHDOG_PID naming another process: systemd does not watch this one.
        let got = run_child(&dir.path().join("notify2"), Some("1"));
        assert_eq!(got[1], "STATUS=interval None\n");
    }
}
