//! The conversation router: the event loop between the channels' intake and the agents.
//!
//! [`crate::intake`] makes each allowed message durable and sends it here; [`turns`] decides which turn
//! runs next (one per session, batched, bounded); [`runner`] runs a turn against its agent with the
//! ack and accumulation timeouts and queues the reply for [`crate::delivery`]; [`feedback`] keeps
//! the user's reactions for the session's next turn. After a restart,
//! [`Router::resume`] re-queues every unanswered message, so each is answered exactly once.
//!
//! The loop beats the router's row on the board each time it turns, and turns at least every
//! [`TICK`] even when nothing arrives: a loop blocked in its body stops beating.

pub mod feedback;
pub mod runner;
pub mod turns;

use crate::intake::{self, Event, Intake};
use crate::shutdown::Shutdown;
use crate::status::Reporter;
use crate::store::StoredMessage;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Inbound events waiting for the router; the intake waits (backpressure) beyond this.
const EVENT_QUEUE: usize = 256;
/// The loop turns at least this often while nothing arrives, so an idle router still beats.
pub const TICK: Duration = Duration::from_secs(5);
/// The router row's allowance: one [`TICK`], plus the loop's own work between two turns (all in
/// memory: queueing, scheduling, spawning turns) and the scheduling delays of a loaded box.
pub const ALLOWANCE: Duration = Duration::from_secs(10);
/// The router's row on the board (also its `hang:` fault point).
pub const ROW: &str = "router";

/// The router's loop: schedules turns and runs them as tasks.
pub struct Router {
    events: mpsc::Receiver<Event>,
    turns: turns::Turns,
    shared: Arc<runner::Shared>,
    tasks: JoinSet<runner::Finished>,
    /// Which session each running task serves, to recover if one dies.
    running: HashMap<tokio::task::Id, String>,
    /// Reactions waiting for their session's next turn.
    feedback: feedback::Feedback,
}

impl Router {
    /// Builds the router and the intake that feeds it.
    pub fn new(
        shared: Arc<runner::Shared>,
        policies: crate::policy::Policies,
        scope: crate::config::SessionScope,
        agent_for: crate::vocab::PerChannel<String>,
    ) -> (Router, Intake) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let core = intake::Core {
            policies,
            store: shared.store.clone(),
            events: tx,
            metrics: shared.metrics.clone(),
            scope,
            agent_for,
            recent: Default::default(),
            named_groups: Default::default(),
        };
        let turns = turns::Turns::new(shared.cfg.max_concurrent_turns);
        (
            Router {
                events: rx,
                turns,
                shared,
                tasks: JoinSet::new(),
                running: HashMap::new(),
                feedback: feedback::Feedback::default(),
            },
            Intake::new(Arc::new(core)),
        )
    }

    /// Re-queues messages that were accepted but not answered before a restart, in order.
    pub fn resume(&mut self, pending: Vec<StoredMessage>) {
        for msg in pending {
            self.push(msg);
        }
    }

    fn push(&mut self, msg: StoredMessage) {
        let session = msg.rec.session.clone();
        self.turns.push(&session, turns::Queued::from(msg));
    }

    fn start_turns(&mut self) {
        while let Some(mut turn) = self.turns.next_turn() {
            let session = turn.session.clone();
            match turn.messages.first() {
                // A reset ends the conversation the feedback was about.
                Some(m) if m.is_reset => self.feedback.forget(&session),
                // `/start`, `/help`: no agent call; the feedback waits for one.
                Some(m) if m.command.is_some() => {}
                _ => turn.feedback = self.feedback.take(&session),
            }
            let handle = self
                .tasks
                .spawn(runner::run_turn(self.shared.clone(), turn));
            self.running.insert(handle.id(), session);
        }
        self.shared.metrics.queued_messages.store(
            self.turns.queued() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Runs until shutdown (or every intake is gone), beating `row` at each turn of the loop.
    pub async fn run(mut self, row: Reporter, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            row.beat();
            // `CLAWBOX_FAULT=hang:router`: the loop awaits something that never comes.
            crate::fault::hang(ROW).await;
            self.start_turns();
            tokio::select! {
                // Nothing arrived for a tick: turn anyway, so the beat shows the loop is free.
                _ = tick.tick() => {}
                ev = self.events.recv() => match ev {
                    Some(Event::Inbound(msg)) => self.push(msg),
                    Some(Event::Feedback { session, note }) => {
                        if !self.feedback.note(&session, note) {
                            tracing::debug!("feedback dropped: too many sessions with notes waiting");
                        }
                    }
                    None => break,
                },
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => match joined {
                    Ok((id, finished)) => {
                        self.running.remove(&id);
                        self.turns.done(&finished.session, finished.more_in_store);
                    }
                    Err(e) => {
                        // A bug in the runner itself; its messages stay pending in the store and
                        // are answered after the next restart.
                        if let Some(session) = self.running.remove(&e.id()) {
                            tracing::error!(session = %session, error = %e, "turn task died");
                            self.turns.done(&session, false);
                        }
                    }
                },
                _ = shutdown.wait() => break,
            }
        }
        // Ended on purpose (shutdown, or no channel is left to feed it): nothing to watch.
        row.set(crate::status::State::Off, "stopped");
        // Unfinished turns stay pending in the store and resume after the restart.
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::status::{Board, State};
    use tokio::time::Instant;

    fn router() -> (Router, Intake) {
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(runner::Shared {
            store: crate::store::Store::open_in_memory(metrics.clone()).unwrap(),
            metrics,
            cfg: crate::config::RouterConfig::default(),
            agents: HashMap::new(),
            default_agent: "echo".into(),
            outlets: Default::default(),
        });
        Router::new(
            shared,
            crate::policy::Policies::default(),
            crate::config::SessionScope::default(),
            Default::default(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_router_keeps_beating_and_its_row_is_off_once_it_ends() {
        let board = Board::default();
        let row = board.register_internal(ROW, ALLOWANCE);
        let (router, intake) = router();
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(router.run(row, shutdown));
        // Nothing arrives for ten allowances: the loop still turns, so the row is never overdue.
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(board.stalled(Instant::now()).is_empty());
        }
        trigger.trip();
        task.await.unwrap();
        drop(intake);
        assert_eq!(board.snapshot()[0].state, State::Off);
        tokio::time::advance(ALLOWANCE * 2).await;
        assert!(
            board.stalled(Instant::now()).is_empty(),
            "off is not watched"
        );
    }
}
