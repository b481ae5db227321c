//! Turn scheduling: at most one turn in flight per session, messages that arrive meanwhile batched
//! into the next turn, a bounded number of turns across all sessions. Pure: no I/O, no clock.
//!
//! Messages are already durable in the inbox when they get here, so the in-memory queues are only
//! a cache: when a session's queue is full the session is marked *spilled* and its next turn reads
//! its pending messages from the store instead. Nothing acknowledged is ever lost to a full queue.
//! A 🗑️ reset is a batch boundary: it runs as its own turn, between the messages around it.

use crate::store::{InboxRecord, StoredMessage};
use crate::vocab::{ChannelKind, Command};
use heapless::Deque;
use std::collections::{HashMap, VecDeque};

/// Messages held in memory per session; beyond this the session spills to the store.
pub const MAX_QUEUED_PER_SESSION: usize = 32;
/// Messages joined into one turn at most; the rest wait for the next turn.
pub const MAX_BATCH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Inbox sequence number.
    pub seq: u64,
    /// The message's channel (parsed by the store, never here).
    pub channel: ChannelKind,
    pub rec: InboxRecord,
    pub is_reset: bool,
    /// `/start` or `/help` (a reset is `is_reset`): answered by the router, no agent call.
    pub command: Option<Command>,
}

impl Queued {
    /// Runs as a turn of its own: a reset or a command.
    pub fn alone(&self) -> bool {
        self.is_reset || self.command.is_some()
    }
}

impl From<StoredMessage> for Queued {
    fn from(m: StoredMessage) -> Queued {
        let is_reset = crate::session::is_reset(&m.rec.text);
        Queued {
            command: Command::from_code(m.rec.command).filter(|c| *c != Command::Reset),
            is_reset,
            seq: m.seq,
            channel: m.channel,
            rec: m.rec,
        }
    }
}

/// A turn to run now.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub session: String,
    /// The batch, in arrival order; empty when `spilled` (read it from the store).
    pub messages: Vec<Queued>,
    /// The in-memory queue overflowed: the turn must load the session's pending rows from the store.
    pub spilled: bool,
    /// Feedback notes (reactions) for this turn's agent request; filled by the router.
    pub feedback: Vec<String>,
}

#[derive(Default)]
struct SessionQueue {
    in_flight: bool,
    queued: Deque<Queued, MAX_QUEUED_PER_SESSION>,
    spilled: bool,
    ready: bool,
}

pub struct Turns {
    sessions: HashMap<String, SessionQueue>,
    ready: VecDeque<String>,
    running: usize,
    max_running: usize,
}

impl Turns {
    pub fn new(max_running: usize) -> Turns {
        Turns {
            sessions: HashMap::new(),
            ready: VecDeque::new(),
            running: 0,
            max_running: max_running.max(1),
        }
    }

    /// A durable message arrived for `session`.
    pub fn push(&mut self, session: &str, msg: Queued) {
        let q = self.sessions.entry(session.to_string()).or_default();
        if !q.spilled && q.queued.push_back(msg).is_err() {
            // Full: drop the cache; the store has every message and the next turn reads it there.
            q.spilled = true;
            q.queued.clear();
        }
        if !q.in_flight && !q.ready {
            q.ready = true;
            self.ready.push_back(session.to_string());
        }
    }

    /// The next turn to start, if a slot is free and a session is waiting.
    pub fn next_turn(&mut self) -> Option<Turn> {
        while self.running < self.max_running {
            let session = self.ready.pop_front()?;
            let Some(q) = self.sessions.get_mut(&session) else {
                continue;
            };
            q.ready = false;
            if q.in_flight {
                continue;
            }
            let turn = if q.spilled {
                q.spilled = false;
                Turn {
                    session: session.clone(),
                    messages: Vec::new(),
                    spilled: true,
                    feedback: Vec::new(),
                }
            } else {
                let messages = take_batch(&mut q.queued);
                if messages.is_empty() {
                    continue;
                }
                Turn {
                    session: session.clone(),
                    messages,
                    spilled: false,
                    feedback: Vec::new(),
                }
            };
            q.in_flight = true;
            self.running += 1;
            return Some(turn);
        }
        None
    }

    /// The session's turn finished. `more_in_store`: the store still holds pending messages of
    /// this session that were not in the turn (after a spill, beyond the batch).
    pub fn done(&mut self, session: &str, more_in_store: bool) {
        let Some(q) = self.sessions.get_mut(session) else {
            return;
        };
        if q.in_flight {
            q.in_flight = false;
            self.running = self.running.saturating_sub(1);
        }
        if more_in_store {
            q.spilled = true;
            q.queued.clear();
        }
        if (q.spilled || !q.queued.is_empty()) && !q.ready {
            q.ready = true;
            self.ready.push_back(session.to_string());
        } else if !q.spilled && q.queued.is_empty() && !q.ready {
            // Idle and empty: forget it, so memory does not grow with the number of chats ever seen.
            self.sessions.remove(session);
        }
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Messages held in memory across all sessions.
    pub fn queued(&self) -> usize {
        self.sessions.values().map(|q| q.queued.len()).sum()
    }
}

/// Splits the next batch off a queue: a leading reset or command alone, else messages up to the
/// next reset or command, at most [`MAX_BATCH`].
fn take_batch(q: &mut Deque<Queued, MAX_QUEUED_PER_SESSION>) -> Vec<Queued> {
    let mut out = Vec::new();
    if let Some(first) = q.front() {
        if first.alone() {
            return q.pop_front().into_iter().collect();
        }
    }
    while out.len() < MAX_BATCH {
        match q.front() {
            Some(m) if !m.alone() => {
                if let Some(m) = q.pop_front() {
                    out.push(m);
                }
            }
            _ => break,
        }
    }
    out
}

/// The same batching rule over messages loaded from the store (after a spill): returns the batch
/// and whether more remain.
pub fn batch_from(mut pending: Vec<Queued>) -> (Vec<Queued>, bool) {
    if pending.first().is_some_and(Queued::alone) {
        let more = pending.len() > 1;
        pending.truncate(1);
        return (pending, more);
    }
    let end = pending
        .iter()
        .take(MAX_BATCH)
        .position(Queued::alone)
        .unwrap_or(pending.len().min(MAX_BATCH));
    let more = pending.len() > end;
    pending.truncate(end);
    (pending, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(seq: u64, text: &str) -> Queued {
        Queued {
            seq,
            channel: ChannelKind::Telegram,
            rec: InboxRecord {
                text: text.into(),
                ..Default::default()
            },
            is_reset: text == "🗑️",
            command: (text == "/help").then_some(Command::Help),
        }
    }

    #[test]
    fn one_turn_per_session_and_batching() {
        let mut t = Turns::new(4);
        t.push("a", q(1, "one"));
        let first = t.next_turn().unwrap();
        assert_eq!(first.messages, vec![q(1, "one")]);
        // Three arrive during the turn: nothing starts for this session.
        t.push("a", q(2, "two"));
        t.push("a", q(3, "three"));
        t.push("a", q(4, "four"));
        assert_eq!(t.next_turn(), None);
        t.done("a", false);
        let second = t.next_turn().unwrap();
        assert_eq!(
            second.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        t.done("a", false);
        assert_eq!(t.next_turn(), None);
        assert_eq!(t.sessions.len(), 0, "idle sessions are forgotten");
    }

    #[test]
    fn sessions_run_concurrently_up_to_the_limit() {
        let mut t = Turns::new(2);
        for (i, s) in ["a", "b", "c"].iter().enumerate() {
            t.push(s, q(i as u64, "hi"));
        }
        let a = t.next_turn().unwrap();
        let b = t.next_turn().unwrap();
        assert_eq!((a.session.as_str(), b.session.as_str()), ("a", "b"));
        assert_eq!(t.next_turn(), None, "limit reached");
        t.done("a", false);
        assert_eq!(t.next_turn().unwrap().session, "c");
    }

    #[test]
    fn a_reset_is_its_own_turn() {
        let mut t = Turns::new(1);
        t.push("a", q(1, "x"));
        let _ = t.next_turn().unwrap();
        t.push("a", q(2, "before"));
        t.push("a", q(3, "🗑️"));
        t.push("a", q(4, "after"));
        t.done("a", false);
        assert_eq!(t.next_turn().unwrap().messages, vec![q(2, "before")]);
        t.done("a", false);
        assert_eq!(t.next_turn().unwrap().messages, vec![q(3, "🗑️")]);
        t.done("a", false);
        assert_eq!(t.next_turn().unwrap().messages, vec![q(4, "after")]);
    }

    #[test]
    fn a_command_is_its_own_turn() {
        let (b, more) = batch_from(vec![q(1, "a"), q(2, "/help"), q(3, "c")]);
        assert_eq!(b, vec![q(1, "a")]);
        assert!(more);
        let (b, _) = batch_from(vec![q(2, "/help"), q(3, "c")]);
        assert_eq!(b, vec![q(2, "/help")]);
        let mut t = Turns::new(1);
        t.push("a", q(1, "/help"));
        t.push("a", q(2, "x"));
        assert_eq!(t.next_turn().unwrap().messages, vec![q(1, "/help")]);
        t.done("a", false);
        assert_eq!(t.next_turn().unwrap().messages, vec![q(2, "x")]);
    }

    #[test]
    fn overflow_spills_to_the_store_and_loses_nothing() {
        let mut t = Turns::new(1);
        t.push("a", q(0, "first"));
        let _ = t.next_turn().unwrap();
        for i in 1..=(MAX_QUEUED_PER_SESSION as u64 + 5) {
            t.push("a", q(i, "m"));
        }
        t.done("a", false);
        let turn = t.next_turn().unwrap();
        assert!(turn.spilled && turn.messages.is_empty());
        // The runner loads 37 pending rows from the store; it takes a batch and reports more.
        let pending: Vec<Queued> = (1..=37).map(|i| q(i, "m")).collect();
        let (batch, more) = batch_from(pending);
        assert_eq!(batch.len(), MAX_BATCH);
        assert!(more);
        t.done("a", more);
        assert!(t.next_turn().unwrap().spilled);
    }

    #[test]
    fn batch_from_stops_at_a_reset() {
        let (b, more) = batch_from(vec![q(1, "a"), q(2, "🗑️"), q(3, "c")]);
        assert_eq!(b, vec![q(1, "a")]);
        assert!(more);
        let (b, more) = batch_from(vec![q(2, "🗑️"), q(3, "c")]);
        assert_eq!(b, vec![q(2, "🗑️")]);
        assert!(more);
        let (b, more) = batch_from(vec![q(3, "c")]);
        assert_eq!(b.len(), 1);
        assert!(!more);
    }
}
