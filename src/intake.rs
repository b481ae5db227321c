//! The channels' way in ([`Intake`], handed to every connector; the router holds the other end):
//! policy first, then the write (which dedupes by channel + id), then the hand-off to the turn
//! scheduler. The hand-off happens as soon as the write is committed, while
//! its fsync runs, so the agent call does not wait for the disk; [`Intake::submit`] returns `Ok`
//! only after the fsync, and a channel acknowledges upstream only then, so every acknowledged
//! message is on disk. (No reply can leave before that fsync either: see `store::writer`.)

use crate::config::SessionScope;
use crate::metrics::{DropReason, Metrics};
use crate::policy::{Policies, Verdict};
use crate::session;
use crate::store::{Accepted, InboxRecord, Store, StoredMessage, records::INBOX_PENDING};
use crate::vocab::{Inbound, PerChannel};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Longest message text handed to an agent, in characters; longer texts are cut with a marker.
/// (WhatsApp allows ~65k characters, Telegram 4096; an agent turn is not a document upload.)
pub const MAX_INBOUND_CHARS: usize = 16 * 1024;
/// Accepted-but-unanswered messages at most; beyond this the intake answers `Busy` and channels
/// leave new messages with the server, which redelivers them later. Half an hour of backlog at one
/// turn a second, and a bound on the scheduler's memory whatever the senders do.
pub const MAX_UNANSWERED: u64 = 2_000;

/// One message offered through a test intake, with the slot for its answer.
pub struct Submission {
    pub msg: Inbound,
    pub reply: tokio::sync::oneshot::Sender<Result<Submitted, IntakeError>>,
}

/// What became of a submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Durable in the inbox: the channel may acknowledge it upstream now.
    Accepted,
    /// Seen before (same channel and id): acknowledge upstream, nothing else happens.
    Duplicate,
    /// Not allowed by policy: acknowledge upstream (so it is not redelivered), nothing else happens.
    Dropped(DropReason),
    /// A reaction from an allowed sender, noted (in memory, nothing written) as feedback for the
    /// session's next turn: acknowledge upstream; it starts no turn and gets no read receipt.
    Noted,
}

#[derive(Debug, Clone)]
pub enum IntakeError {
    /// The store could not make it durable: do NOT acknowledge upstream; retry later.
    Store(String),
    /// The daemon is stopping: do not acknowledge.
    ShuttingDown,
    /// Too many messages are waiting for an answer: do not acknowledge; the server redelivers
    /// later. Keeps memory and the store bounded under a flood (e.g. `dm_policy = "open"`).
    Busy,
}

impl std::fmt::Display for IntakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntakeError::Store(e) => write!(f, "could not store the message: {e}"),
            IntakeError::ShuttingDown => f.write_str("shutting down"),
            IntakeError::Busy => {
                f.write_str("too many messages are waiting for an answer; retrying later")
            }
        }
    }
}

/// What the router's loop hears from the intake.
pub enum Event {
    /// A message is durable in the inbox.
    Inbound(StoredMessage),
    /// A reaction to be given to `session`'s next turn as feedback (see [`feedback_note`]).
    Feedback { session: String, note: String },
}

/// The note a reaction becomes in the next turn's text: `[feedback: 👍 on an earlier message]`.
/// A removed reaction (empty emoji) is `None`: nothing to say.
pub fn feedback_note(content: &crate::vocab::Content) -> Option<String> {
    match content {
        crate::vocab::Content::Reaction { emoji, .. } if !emoji.trim().is_empty() => {
            let emoji: String = emoji.chars().filter(|c| !c.is_control()).take(16).collect();
            Some(format!("[feedback: {emoji} on an earlier message]"))
        }
        _ => None,
    }
}

pub(crate) struct Core {
    pub policies: Policies,
    pub store: Store,
    pub events: mpsc::Sender<Event>,
    pub metrics: Arc<Metrics>,
    pub scope: SessionScope,
    /// Agent name per channel.
    pub agent_for: PerChannel<String>,
}

#[derive(Clone)]
enum Inner {
    Core(Arc<Core>),
    /// Test seam: submissions go to whoever holds the receiver, who answers them.
    Test(mpsc::Sender<Submission>),
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    inner: Inner,
}

impl Intake {
    pub(crate) fn new(core: Arc<Core>) -> Intake {
        Intake {
            inner: Inner::Core(core),
        }
    }

    /// An intake whose submissions arrive on the returned receiver, for testing a channel alone.
    pub fn test_channel(capacity: usize) -> (Intake, mpsc::Receiver<Submission>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Intake {
                inner: Inner::Test(tx),
            },
            rx,
        )
    }

    /// Policy, dedupe, write, hand to the turn scheduler. Returns once the write is durable.
    pub async fn submit(&self, msg: Inbound) -> Result<Submitted, IntakeError> {
        let mut one = self.submit_batch(vec![msg]).await;
        one.pop().unwrap_or(Err(IntakeError::ShuttingDown))
    }

    /// [`Intake::submit`] for messages that arrived together (a getUpdates answer): one durable
    /// write for the batch; one outcome per message, in order.
    pub async fn submit_batch(&self, msgs: Vec<Inbound>) -> Vec<Result<Submitted, IntakeError>> {
        match &self.inner {
            Inner::Test(tx) => {
                let mut out = Vec::with_capacity(msgs.len());
                for msg in msgs {
                    let (reply, rx) = tokio::sync::oneshot::channel();
                    let r = match tx.send(Submission { msg, reply }).await {
                        Ok(()) => rx.await.unwrap_or(Err(IntakeError::ShuttingDown)),
                        Err(_) => Err(IntakeError::ShuttingDown),
                    };
                    let failed = r.is_err();
                    out.push(r);
                    // Like a failed batch write: what follows is not taken.
                    if failed {
                        break;
                    }
                }
                out
            }
            Inner::Core(core) => core.submit(msgs).await,
        }
    }
}

impl Core {
    async fn submit(&self, msgs: Vec<Inbound>) -> Vec<Result<Submitted, IntakeError>> {
        let mut out: Vec<Option<Result<Submitted, IntakeError>>> = Vec::with_capacity(msgs.len());
        // (position in `out`, channel, record) of the messages to write.
        let mut writes = Vec::new();
        let mut pending = self
            .metrics
            .inbox_pending
            .load(std::sync::atomic::Ordering::Relaxed);
        for msg in msgs {
            if let Verdict::Drop(why) = self.policies.check(&msg) {
                self.metrics.dropped(msg.channel, why);
                tracing::debug!(channel = %msg.channel, reason = why.as_str(), "dropped by policy");
                out.push(Some(Ok(Submitted::Dropped(why))));
                continue;
            }
            if let crate::vocab::Content::Reaction { .. } = &msg.content {
                // Feedback, not a turn: no write, no fsync; the router keeps it for the next turn.
                if let Some(note) = feedback_note(&msg.content) {
                    let session = session::identity(self.scope, &msg);
                    Metrics::inc(&self.metrics.feedback);
                    tracing::debug!(channel = %msg.channel, "reaction noted as feedback");
                    let _ = self.events.send(Event::Feedback { session, note }).await;
                }
                out.push(Some(Ok(Submitted::Noted)));
                continue;
            }
            if pending >= MAX_UNANSWERED {
                tracing::warn!(channel = %msg.channel, "{MAX_UNANSWERED} messages already wait for an answer; leaving this one with the server for now");
                out.push(Some(Err(IntakeError::Busy)));
                continue;
            }
            pending += 1;
            writes.push((out.len(), msg.channel, self.record(&msg)));
            out.push(None);
        }
        if !writes.is_empty() {
            let recs = writes.iter().map(|(_, _, r)| r.clone()).collect();
            match self.store.accept_visible(recs).await {
                Ok((outcomes, durable)) => {
                    let written: Vec<usize> = writes.iter().map(|(at, _, _)| *at).collect();
                    for ((at, channel, rec), outcome) in writes.into_iter().zip(outcomes) {
                        out[at] = Some(Ok(self.accepted(channel, rec, outcome).await));
                    }
                    // Not acknowledged upstream unless durable. (The router may already run a turn
                    // for it: if the fsync failed, the server redelivers and the dedupe, or a
                    // restart, sorts it out; no reply is sent before a later fsync succeeds.)
                    match durable.wait().await {
                        Ok(()) => crate::fault::crash_point("after-accept"),
                        Err(e) => {
                            for at in written {
                                out[at] = Some(Err(IntakeError::Store(e.to_string())));
                            }
                        }
                    }
                }
                Err(e) => {
                    for (at, _, _) in writes {
                        out[at] = Some(Err(IntakeError::Store(e.to_string())));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(IntakeError::ShuttingDown)))
            .collect()
    }

    fn record(&self, msg: &Inbound) -> InboxRecord {
        let mut text = msg.content.render();
        if text.chars().count() > MAX_INBOUND_CHARS {
            text = text.chars().take(MAX_INBOUND_CHARS).collect::<String>()
                + "\n[…message cut: too long]";
        }
        InboxRecord {
            channel: msg.channel.as_str().to_string(),
            msg_id: msg.id.clone(),
            chat: msg.chat.clone(),
            sender: msg.sender.clone(),
            author: msg.author.clone(),
            wire_seq: msg.wire_seq,
            text,
            ts_ms: msg.ts_ms,
            session: session::identity(self.scope, msg),
            state: INBOX_PENDING,
            accepted_ms: crate::store::now_ms(),
            agent: self.agent_for[msg.channel].clone(),
            command: match &msg.content {
                crate::vocab::Content::Command(c) => c.code(),
                _ => 0,
            },
            quiet: msg.is_group && !msg.cues.mentions_me,
        }
    }

    /// After the write is committed: count, log, hand the new message to the scheduler.
    async fn accepted(
        &self,
        channel: crate::vocab::ChannelKind,
        rec: InboxRecord,
        outcome: Accepted,
    ) -> Submitted {
        match outcome {
            Accepted::Duplicate => {
                self.metrics.dropped(channel, DropReason::Duplicate);
                tracing::debug!(channel = %channel, id = %rec.msg_id, "duplicate ignored");
                Submitted::Duplicate
            }
            Accepted::New(seq) => {
                Metrics::inc(&self.metrics.messages_in[channel]);
                Metrics::inc(&self.metrics.inbox_pending);
                tracing::info!(channel = %channel, id = %rec.msg_id, seq, "accepted");
                // Committed: if the router is gone (shutdown), the restart resumes it.
                let msg = StoredMessage { seq, channel, rec };
                let _ = self.events.send(Event::Inbound(msg)).await;
                Submitted::Accepted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Content;

    #[test]
    fn a_reaction_becomes_a_feedback_note_a_removed_one_nothing() {
        let r = |e: &str| Content::Reaction {
            emoji: e.into(),
            target_id: "7".into(),
        };
        assert_eq!(
            feedback_note(&r("👍")).as_deref(),
            Some("[feedback: 👍 on an earlier message]")
        );
        assert_eq!(feedback_note(&r(" ")), None);
        assert_eq!(feedback_note(&Content::Text("hi".into())), None);
        let long = feedback_note(&r(&"👍".repeat(100))).unwrap();
        assert_eq!(long.chars().filter(|c| *c == '👍').count(), 16, "bounded");
    }
}
