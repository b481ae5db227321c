//! The channels' way in: policy first, then the durable write (which dedupes by channel + id),
//! then the hand-off to the turn scheduler. A channel acknowledges upstream only after
//! [`Intake::submit`] returned `Ok`, so every acknowledged message is on disk.

use super::{Event, IntakeError, Submitted, session};
use crate::channel::Inbound;
use crate::config::SessionScope;
use crate::metrics::{DropReason, Metrics};
use crate::policy::{Policies, Verdict};
use crate::store::{Accepted, InboxRecord, Store, records::INBOX_PENDING};
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

pub(super) struct Core {
    pub policies: Policies,
    pub store: Store,
    pub events: mpsc::Sender<Event>,
    pub metrics: Arc<Metrics>,
    pub scope: SessionScope,
    /// Agent name per channel (index by `ChannelKind::index`).
    pub agent_for: [String; crate::channel::ChannelKind::ALL.len()],
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
    pub(super) fn new(core: Arc<Core>) -> Intake {
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

    /// Policy, dedupe, durable write, then hand to the turn scheduler. Returns once durable.
    pub async fn submit(&self, msg: Inbound) -> Result<Submitted, IntakeError> {
        match &self.inner {
            Inner::Test(tx) => {
                let (reply, rx) = tokio::sync::oneshot::channel();
                tx.send(Submission { msg, reply })
                    .await
                    .map_err(|_| IntakeError::ShuttingDown)?;
                rx.await.map_err(|_| IntakeError::ShuttingDown)?
            }
            Inner::Core(core) => core.submit(msg).await,
        }
    }
}

impl Core {
    async fn submit(&self, msg: Inbound) -> Result<Submitted, IntakeError> {
        if let Verdict::Drop(why) = self.policies.check(&msg) {
            self.metrics.dropped(msg.channel, why);
            tracing::debug!(channel = %msg.channel, reason = why.as_str(), "dropped by policy");
            return Ok(Submitted::Dropped(why));
        }
        let mut text = msg.content.render();
        if text.chars().count() > MAX_INBOUND_CHARS {
            text = text.chars().take(MAX_INBOUND_CHARS).collect::<String>()
                + "\n[…message cut: too long]";
        }
        let rec = InboxRecord {
            channel: msg.channel.as_str().to_string(),
            msg_id: msg.id.clone(),
            chat: msg.chat.clone(),
            sender: msg.sender.clone(),
            text,
            ts_ms: msg.ts_ms,
            session: session::identity(self.scope, &msg),
            state: INBOX_PENDING,
            accepted_ms: crate::store::now_ms(),
            agent: self.agent_for[msg.channel.index()].clone(),
        };
        if self
            .metrics
            .inbox_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            >= MAX_UNANSWERED
        {
            tracing::warn!(channel = %msg.channel, "{MAX_UNANSWERED} messages already wait for an answer; leaving this one with the server for now");
            return Err(IntakeError::Busy);
        }
        match self.store.accept(rec.clone()).await {
            Ok(Accepted::Duplicate) => {
                self.metrics.dropped(msg.channel, DropReason::Duplicate);
                tracing::debug!(channel = %msg.channel, id = %msg.id, "duplicate ignored");
                Ok(Submitted::Duplicate)
            }
            Ok(Accepted::New(seq)) => {
                Metrics::inc(&self.metrics.messages_in[msg.channel.index()]);
                Metrics::inc(&self.metrics.inbox_pending);
                tracing::info!(channel = %msg.channel, id = %msg.id, seq, "accepted");
                crate::fault::crash_point("after-accept");
                // Durable already: if the router is gone (shutdown), the restart resumes it.
                let _ = self.events.send(Event::Inbound(seq, rec)).await;
                Ok(Submitted::Accepted)
            }
            Err(e) => Err(IntakeError::Store(e.to_string())),
        }
    }
}
