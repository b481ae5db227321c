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
    /// Group chats are not handled yet: the policy drops them.
    pub is_group: bool,
    pub content: Content,
    /// Sent time, milliseconds since the Unix epoch, as the channel reports it.
    pub ts_ms: u64,
}

/// Why a send failed, and what the delivery loop should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Transient (network, 5xx, not connected): retry the same chunk later.
    Retry(String),
    /// The channel asked for a specific wait (Telegram 429 `retry_after`): retry after it.
    RetryAfter(std::time::Duration),
    /// The channel's own rate limit says not yet; nothing was sent. Not a failure: the delivery
    /// loop waits this long and marks the chunk in flight again only when it can really go, so a
    /// crash during the wait leaves no chunk "in doubt".
    NotYet(std::time::Duration),
    /// Will never succeed (chat gone, blocked by the user, text rejected): give up on this reply.
    Permanent(String),
    /// The request may have reached the server and the answer was lost (the connection broke or
    /// timed out after sending): whether the message went out is unknown. Resent only by channels
    /// whose sends are idempotent.
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
    Send {
        chat: String,
        text: String,
        key: String,
        done: oneshot::Sender<Result<(), SendError>>,
    },
}

/// Static facts about a channel that the core needs.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSpec {
    pub kind: ChannelKind,
    /// Longest text one message may carry (Telegram 4096 characters); longer replies are chunked.
    pub max_chars: usize,
    /// True when resending a chunk with the same `key` cannot produce a second message, so a send
    /// whose outcome is unknown after a crash may be repeated safely.
    pub idempotent_send: bool,
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
