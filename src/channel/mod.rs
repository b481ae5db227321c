//! The connector contract: what the core asks of a connector ([`ChannelCommand`], with [`Arm`] for
//! the moment a chunk leaves) and what a connector gets from the core ([`ChannelContext`]). The
//! words both sides use ([`Inbound`](crate::vocab::Inbound), [`ChannelKind`](crate::vocab::ChannelKind),
//! …) are in [`crate::vocab`].
//!
//! A connector never talks to agents, never decides who is allowed, never sleeps for pacing: it
//! turns its wire protocol into [`Inbound`](crate::vocab::Inbound) values, submits each through [`crate::intake::Intake`]
//! and acknowledges upstream only after the submit returned `Ok` (the message is durable by then),
//! and it carries out [`ChannelCommand`]s (typing, send) reporting each outcome.

pub mod console;
pub mod telegram;
pub mod whatsapp;

use crate::http::HttpClient;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::status::Reporter;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

use std::fmt;
use tokio::sync::oneshot;

/// The moment a reply chunk may leave the box. A connector calls [`Arm::arm`] right before it puts
/// the chunk's request on the wire — after its own rate limits, connection checks and probes, so
/// a chunk is "in doubt" after a crash only when a request carrying it may really have reached the
/// server. Arming marks the chunk in flight in the store (fsynced) with the connector's `hint`,
/// which [`ChannelCommand::Reconcile`] gets back to settle the chunk's fate.
pub struct Arm {
    store: Option<Store>,
    seq: u64,
    armed: Arc<std::sync::Mutex<Option<u64>>>,
}

impl Arm {
    /// An arm for outbox row `seq`; `armed` reports the hint once armed.
    pub fn new(store: Store, seq: u64, armed: Arc<std::sync::Mutex<Option<u64>>>) -> Arm {
        Arm {
            store: Some(store),
            seq,
            armed,
        }
    }

    /// An arm that records nothing (tests and tools that drive a connector without a store).
    pub fn unrecorded() -> Arm {
        Arm::observed(Arc::default())
    }

    /// An arm that records nothing but reports the hint in `armed` (tests).
    pub fn observed(armed: Arc<std::sync::Mutex<Option<u64>>>) -> Arm {
        Arm {
            store: None,
            seq: 0,
            armed,
        }
    }

    /// Marks the chunk in flight, durably, with `hint`; the request may go once this returns Ok.
    /// An error means nothing may be sent (the delivery loop retries the chunk later).
    pub async fn arm(&self, hint: u64) -> Result<(), SendError> {
        *self.armed.lock().unwrap_or_else(|p| p.into_inner()) = Some(hint);
        if let Some(store) = &self.store {
            store
                .mark_in_flight(self.seq, hint)
                .await
                .map_err(|e| SendError::Retry(format!("could not record the send: {e}")))?;
        }
        crate::fault::crash_point("before-send");
        Ok(())
    }
}

impl fmt::Debug for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arm").field("seq", &self.seq).finish()
    }
}

/// What a connector found out about a chunk whose send may or may not have reached the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doubt {
    /// It arrived: never send it again.
    Sent,
    /// It did not arrive, or sending it again cannot make a second message (WhatsApp: the same
    /// message id): send it (again).
    NotSent,
    /// Ask again after this long (too early to tell; rate limited).
    NotYet(std::time::Duration),
    /// Could not find out now (the link is down): ask again later.
    Unresolved(String),
    /// Cannot be found out on this channel: it is not resent, to never send it twice.
    Unknowable,
}

/// Why a send failed, and what the delivery loop should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Transient (network, 5xx, not connected): retry the same chunk later.
    Retry(String),
    /// The channel asked for a specific wait (Telegram 429 `retry_after`): retry after it.
    RetryAfter(std::time::Duration),
    /// The channel's own rate limit says not yet; nothing was sent (the chunk was not armed).
    /// Not a failure: the delivery loop waits this long and asks again.
    NotYet(std::time::Duration),
    /// Will never succeed (chat gone, blocked by the user, text rejected): give up on this reply.
    Permanent(String),
    /// The request may have reached the server and the answer was lost (the connection broke or
    /// timed out after sending): whether the message went out is unknown. The delivery loop
    /// settles it with [`ChannelCommand::Reconcile`] before anything else is sent.
    InDoubt(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Retry(why) => write!(f, "temporary failure: {why}"),
            SendError::RetryAfter(d) => write!(f, "rate limited, retry after {d:?}"),
            SendError::NotYet(d) => write!(f, "not yet (own rate limit), in {d:?}"),
            SendError::Permanent(why) => write!(f, "rejected: {why}"),
            SendError::InDoubt(why) => write!(f, "outcome unknown: {why}"),
        }
    }
}

/// The message a reaction goes on, as the inbox stored it: each channel picks what its wire
/// needs (WhatsApp: the id, and the author in a group; Telegram: the message id, `wire_seq` in a
/// private chat, the reply reference in a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactTarget {
    pub msg_id: String,
    pub author: String,
    pub wire_seq: u64,
    /// How a reply quotes the message (`InboxRecord::reply_ref`; set for group messages).
    pub reply_ref: String,
}

/// What the core asks a channel to do. Sent by [`crate::delivery`] in pacing order.
#[derive(Debug)]
pub enum ChannelCommand {
    /// Show (or stop showing) "typing…" in a chat. Best effort: no outcome reported.
    Typing { chat: String, on: bool },
    /// Put `emoji` on a received message, or take the bot's reaction off (`emoji` empty): the
    /// acknowledgement of a slow turn. Best effort: no outcome reported.
    React {
        chat: String,
        target: ReactTarget,
        emoji: String,
    },
    /// Send one chunk of a reply. `key` is stable for this chunk across restarts: channels whose
    /// protocol lets the client choose message ids derive the id from it, so a resend is deduped.
    /// The connector calls `arm` right before the request leaves (never before a wait).
    Send {
        chat: String,
        text: String,
        key: String,
        /// The highest `wire_seq` of the messages this reply answers (0: none known).
        after: u64,
        /// The message this reply answers, when it should be quoted (replies in groups).
        reply_to: Option<ReplyTo>,
        arm: Arm,
        done: oneshot::Sender<Result<(), SendError>>,
    },
    /// Settle a chunk whose send may have reached the server: `hint` is what the connector gave
    /// [`Arm::arm`], `since_ms` when the outcome became unknown (ms since the epoch).
    Reconcile {
        chat: String,
        key: String,
        hint: u64,
        since_ms: u64,
        done: oneshot::Sender<Doubt>,
    },
}

/// The message a reply chunk answers: the channel's own reference of it
/// (`OutboxRecord::reply_ref`: Telegram `<message_id>` or `<message_id>:<topic thread id>`;
/// WhatsApp the message id), and whether this chunk quotes it (the first chunk of the reply
/// does; every chunk stays in the same topic or thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub reference: String,
    pub quote: bool,
}

/// Everything a channel task gets from the core. The command receiver lives behind a mutex outside
/// the task so that a restarted task (after an error or panic) picks up the same queue.
#[derive(Clone)]
pub struct ChannelContext {
    pub intake: Intake,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    pub http: HttpClient,
    pub commands: Arc<Mutex<mpsc::Receiver<ChannelCommand>>>,
    pub shutdown: Shutdown,
}

/// Why a channel task stopped with an error; the supervisor restarts it after a backoff.
#[derive(Debug)]
pub struct ChannelError(pub String);

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ChannelError {}
