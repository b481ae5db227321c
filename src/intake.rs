//! The channels' way in ([`Intake`], handed to every connector; the router holds the other end):
//! policy first, then the write (which dedupes by channel + id), then the hand-off to the turn
//! scheduler. The hand-off happens as soon as the write is committed, while
//! its fsync runs, so the agent call does not wait for the disk; [`Intake::submit`] returns `Ok`
//! only after the fsync, and a channel acknowledges upstream only then, so every acknowledged
//! message is on disk. (No reply can leave before that fsync either: see `store::writer`.)
//!
//! A group message that does not address the assistant is neither written nor handed on: it is
//! kept in memory as its group's recent context ([`crate::recent`]), which the next addressed
//! message of that group carries in its text ([`crate::turn_text`]).

use crate::config::SessionScope;
use crate::metrics::{DropReason, Metrics};
use crate::policy::{Policies, Verdict};
use crate::recent::{Recent, Snapshot};
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
/// Groups whose dropped messages were logged with their id (so the owner can copy it into the
/// config), once each; beyond this many, no more are named until a restart.
pub const MAX_GROUPS_NAMED: usize = 64;

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
// Almost every event is an `Inbound`: boxing it would cost an allocation per message to shrink
// the rare feedback note.
#[allow(clippy::large_enum_variant)]
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
    /// Groups' recent context (memory only; bounded in [`crate::recent`]).
    pub recent: std::sync::Mutex<Recent>,
    /// Groups already named in the log as not taken part in ([`MAX_GROUPS_NAMED`]).
    pub named_groups:
        std::sync::Mutex<std::collections::HashSet<(crate::vocab::ChannelKind, String)>>,
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
        // Per group, how far the context was already taken by an earlier message of this batch.
        let mut taken: std::collections::HashMap<(crate::vocab::ChannelKind, String), u64> =
            Default::default();
        for msg in msgs {
            match self.policies.check(&msg) {
                Verdict::Allow => {}
                Verdict::Drop(why) => {
                    if matches!(why, DropReason::Group | DropReason::GroupNotAllowed) {
                        self.name_group(&msg, why);
                    }
                    self.metrics.dropped(msg.channel, why);
                    tracing::debug!(channel = %msg.channel, reason = why.as_str(), "dropped by policy");
                    out.push(Some(Ok(Submitted::Dropped(why))));
                    continue;
                }
                Verdict::Context => {
                    let why = DropReason::GroupUnaddressed;
                    self.remember(&msg);
                    self.metrics.dropped(msg.channel, why);
                    tracing::debug!(channel = %msg.channel, "group message kept as context");
                    out.push(Some(Ok(Submitted::Dropped(why))));
                    continue;
                }
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
            let snap = if msg.is_group {
                let key = (msg.channel, msg.chat.clone());
                let after = taken.get(&key).copied().unwrap_or(0);
                let snap = self.recent().snapshot(msg.channel, &msg.chat, after);
                if snap.upto > 0 {
                    taken.insert(key, snap.upto);
                }
                snap
            } else {
                Snapshot::default()
            };
            let rec = self.record(&msg, &snap.lines);
            writes.push((out.len(), msg.channel, rec, snap.upto));
            out.push(None);
        }
        if !writes.is_empty() {
            let recs = writes.iter().map(|(_, _, r, _)| r.clone()).collect();
            match self.store.accept_visible(recs).await {
                Ok((outcomes, durable)) => {
                    let written: Vec<usize> = writes.iter().map(|(at, _, _, _)| *at).collect();
                    for ((at, channel, rec, upto), outcome) in writes.into_iter().zip(outcomes) {
                        if upto > 0 && matches!(outcome, Accepted::New(_)) {
                            // The agent gets these lines with this message: they are not context
                            // for the next one.
                            self.recent().consume(channel, &rec.chat, upto);
                        }
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
                    for (at, _, _, _) in writes {
                        out[at] = Some(Err(IntakeError::Store(e.to_string())));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(IntakeError::ShuttingDown)))
            .collect()
    }

    /// Says once per group, at info, that a group's messages are dropped and under which id, so
    /// the owner can allow it (`[channels.<channel>.groups] allow`). Ids only, never a body.
    fn name_group(&self, msg: &Inbound, why: DropReason) {
        let mut named = self.named_groups.lock().unwrap_or_else(|p| p.into_inner());
        let key = (msg.channel, msg.chat.clone());
        if named.len() >= MAX_GROUPS_NAMED || !named.insert(key) {
            return;
        }
        let what = if why == DropReason::Group {
            "groups are off (policy = \"off\")"
        } else {
            "it is not in allow"
        };
        tracing::info!(channel = %msg.channel, group = %msg.chat, "ignoring group {}: {what}; to let the assistant take part, see [channels.{}.groups]", msg.chat, msg.channel);
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps an unaddressed group message as its group's recent context. Reactions are not
    /// conversation: they are not kept.
    fn remember(&self, msg: &Inbound) {
        if matches!(msg.content, crate::vocab::Content::Reaction { .. }) {
            return;
        }
        let line = crate::turn_text::context_line(msg, &msg.content.render());
        self.recent()
            .remember(msg.channel, &msg.chat, &msg.id, &line);
    }

    /// The record of an accepted message; `context`: its group's recent lines.
    fn record(&self, msg: &Inbound, context: &[String]) -> InboxRecord {
        let mut body = msg.content.render();
        if body.chars().count() > MAX_INBOUND_CHARS {
            body = body.chars().take(MAX_INBOUND_CHARS).collect::<String>()
                + "\n[…message cut: too long]";
        }
        let text = crate::turn_text::compose(msg, &body, context);
        let group = self.policies.group_settings(msg);
        let agent = group
            .and_then(|g| g.agent.clone())
            .unwrap_or_else(|| self.agent_for[msg.channel].clone());
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
            agent,
            reply_ref: if msg.is_group {
                msg.cues.reply_ref.clone().unwrap_or_else(|| msg.id.clone())
            } else {
                String::new()
            },
            system_prompt: group
                .and_then(|g| g.system_prompt.clone())
                .unwrap_or_default(),
            command: match &msg.content {
                crate::vocab::Content::Command(c) => c.code(),
                _ => 0,
            },
            // In a group, the ack reaction only on a message that named the assistant (a
            // mention or a reply to it), not on every message of a group without require_mention.
            quiet: msg.is_group
                && !(msg.cues.mentions_me || msg.cues.quote.as_ref().is_some_and(|q| q.to_me)),
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
    use crate::vocab::{ChannelKind, Content, Cues};

    fn core(events: mpsc::Sender<Event>) -> Core {
        let cfg = crate::config::Config::parse(
            "[channels.telegram]\nenabled = false\nallow_from = [1]\n\
             [channels.telegram.groups]\npolicy = \"open\"\nallow_from = [\"*\"]\n",
            None,
        )
        .unwrap();
        let metrics = Arc::new(Metrics::default());
        Core {
            policies: Policies::from_config(&cfg),
            store: Store::open_in_memory(metrics.clone()).unwrap(),
            events,
            metrics,
            scope: SessionScope::PerChat,
            agent_for: PerChannel::from_fn(|_| "echo".to_string()),
            recent: Default::default(),
            named_groups: Default::default(),
        }
    }

    fn said(id: u32, name: &str, text: &str, to_me: bool) -> Inbound {
        Inbound {
            channel: ChannelKind::Telegram,
            id: id.to_string(),
            chat: "-100".into(),
            sender: id.to_string(),
            sender_alt: None,
            author: id.to_string(),
            wire_seq: 0,
            is_group: true,
            content: Content::Text(text.into()),
            ts_ms: 0,
            cues: Cues {
                sender_name: Some(name.into()),
                mentions_me: to_me,
                reply_ref: Some(format!("m{id}")),
                ..Cues::default()
            },
        }
    }

    /// One batch: context lines go with the first addressed message only, the next addressed
    /// message of the same batch gets what came after it, and nothing unaddressed is written.
    #[tokio::test]
    async fn context_goes_once_with_the_addressed_message_that_follows_it() {
        let (tx, mut rx) = mpsc::channel(8);
        let core = core(tx);
        let out = core
            .submit(vec![
                said(1, "Bob", "one", false),
                said(2, "Carol", "two", false),
                said(3, "Alice", "@bot hi", true),
                said(4, "Bob", "three", false),
                said(5, "Alice", "@bot and?", true),
                said(6, "Bob", "later", false),
            ])
            .await;
        let outcomes: Vec<_> = out.into_iter().map(Result::unwrap).collect();
        let unaddressed = Submitted::Dropped(DropReason::GroupUnaddressed);
        assert_eq!(
            outcomes,
            vec![
                unaddressed,
                unaddressed,
                Submitted::Accepted,
                unaddressed,
                Submitted::Accepted,
                unaddressed
            ]
        );
        let mut texts = Vec::new();
        while let Ok(Event::Inbound(m)) = rx.try_recv() {
            assert_eq!(m.rec.reply_ref, format!("m{}", m.rec.msg_id));
            texts.push(m.rec.text);
        }
        assert_eq!(
            texts,
            vec![
                "[recent messages]\n[Bob] one\n[Carol] two\n[/recent messages]\n[Alice] @bot hi",
                "[recent messages]\n[Bob] three\n[/recent messages]\n[Alice] @bot and?",
            ]
        );
        // What came after stays for the next one; what was given is forgotten.
        let snap = core.recent().snapshot(ChannelKind::Telegram, "-100", 0);
        assert_eq!(snap.lines, vec!["[Bob] later"]);
    }

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
