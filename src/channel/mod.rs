//! The channel boundary: what a connector hands the core ([`Inbound`]) and what the core asks of a
//! connector ([`ChannelCommand`]).
//!
//! A connector never talks to agents, never decides who is allowed, never sleeps for pacing: it
//! turns its wire protocol into [`Inbound`] values, submits each through [`crate::router::Intake`]
//! and acknowledges upstream only after the submit returned `Ok` (the message is durable by then),
//! and it carries out [`ChannelCommand`]s (typing, send) reporting each outcome.

pub mod console;
pub mod telegram;
pub mod whatsapp;

use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::router::Intake;
use crate::shutdown::Shutdown;
use crate::status::Reporter;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};

use std::fmt;
use tokio::sync::oneshot;

/// Which channel a message belongs to. The string form is stored on disk: never rename one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ChannelKind {
    Console,
    Telegram,
    WhatsApp,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [
        ChannelKind::Console,
        ChannelKind::Telegram,
        ChannelKind::WhatsApp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Console => "console",
            ChannelKind::Telegram => "telegram",
            ChannelKind::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Dense index for per-channel metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of media a channel can report. The placeholder text is `<media:KIND>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }
}

/// What a message carries, before it is rendered to the text an agent sees.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Content {
    Text(String),
    Media {
        kind: MediaKind,
        caption: Option<String>,
    },
    Reaction {
        emoji: String,
        target_id: String,
    },
}

impl Content {
    /// The text the agent receives: text as is, media as `<media:KIND>` plus the caption on the next
    /// line, a reaction as a short description.
    pub fn render(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Media { kind, caption } => match caption.as_deref().map(str::trim) {
                Some(c) if !c.is_empty() => format!("<media:{}>\n{c}", kind.as_str()),
                _ => format!("<media:{}>", kind.as_str()),
            },
            Content::Reaction { emoji, target_id } => {
                format!("[reacted {emoji} to message {target_id}]")
            }
        }
    }
}

/// One message received by a channel, in the core's terms.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Inbound {
    pub channel: ChannelKind,
    /// The channel's own id for this message; unique within the channel. The dedupe key.
    pub id: String,
    /// Where replies go (Telegram chat id, WhatsApp chat JID, "console").
    pub chat: String,
    /// Who sent it, in the form the allowlist uses: E.164 (`+4915…`) or a Telegram user id.
    pub sender: String,
    /// Who sent it as the wire names them (WhatsApp: the sender JID with its device; Telegram:
    /// the user id): the same on every redelivery, so part of the dedupe key with `chat` and `id`.
    pub author: String,
    /// Where the channel numbers messages in order (Telegram: the message id in the bot's own
    /// message box, for private chats), this message's number; else 0. A reply to it comes after
    /// it: the lower bound a send in doubt is settled from.
    pub wire_seq: u64,
    /// Group chats are not handled yet: the policy drops them.
    pub is_group: bool,
    pub content: Content,
    /// Sent time, milliseconds since the Unix epoch, as the channel reports it.
    pub ts_ms: u64,
}

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

/// What the core asks a channel to do. Sent by [`crate::delivery`] in pacing order.
#[derive(Debug)]
pub enum ChannelCommand {
    /// Show (or stop showing) "typing…" in a chat. Best effort: no outcome reported.
    Typing { chat: String, on: bool },
    /// Send one chunk of a reply. `key` is stable for this chunk across restarts: channels whose
    /// protocol lets the client choose message ids derive the id from it, so a resend is deduped.
    /// The connector calls `arm` right before the request leaves (never before a wait).
    Send {
        chat: String,
        text: String,
        key: String,
        /// The highest `wire_seq` of the messages this reply answers (0: none known).
        after: u64,
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

/// Static facts about a channel that the core needs.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSpec {
    pub kind: ChannelKind,
    /// Longest text one message may carry (Telegram 4096 characters); longer replies are chunked.
    pub max_chars: usize,
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
