//! The Telegram Bot API, sans-io: response envelopes and their classification, the long-poll state
//! machine (offset over the contiguous confirmed prefix, backoff, status words) and update →
//! [`Inbound`] conversion. The wire types live in `wire`, the per-chat/global send limiter and
//! the typing repeat schedule in `pacing`; both are re-exported here.
//!
//! Bytes and `now` in, decisions out. Never opens a socket, reads a clock, sleeps or logs a body:
//! [`super::driver`] does the I/O and the waiting.

mod commands;
pub mod cues;
mod pacing;
#[cfg(test)]
mod tests;
mod wire;

pub use commands::{MENU, command_of, my_commands, set_reaction};
pub use cues::Me;
pub use pacing::{
    GLOBAL_PER_SECOND, MAX_TRACKED_CHATS, MAX_TYPING_CHATS, MAX_TYPING_DURATION, PER_CHAT_INTERVAL,
    RateLimiter, TYPING_REPEAT, TypingSchedule,
};
pub use wire::{
    Chat, Envelope, GetUpdates, Message, MessageEntity, ReplyParameters, ResponseParameters,
    SendChatAction, SendMessage, Update, User, chat_id_json,
};

use crate::channel::SendError;
use crate::retry::{self, Backoff};
use crate::status::State;
use crate::vocab::{ChannelKind, Content, Inbound, MediaKind};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// Updates asked for per getUpdates: Telegram's own maximum; a full batch of ordinary messages is
/// far below [`MAX_UPDATES_BODY`].
pub const UPDATES_LIMIT: u8 = 100;
/// Largest getUpdates response read: 100 updates of at most 4096-character texts plus metadata fit
/// several times over; anything bigger is not a Bot API answer.
pub const MAX_UPDATES_BODY: usize = 4 * 1024 * 1024;
/// Largest getMe response read: one User object.
pub const MAX_GETME_BODY: usize = 16 * 1024;
/// Largest sendMessage response read: one Message echoing at most 4096 characters and entities.
pub const MAX_SEND_BODY: usize = 256 * 1024;
/// Largest sendChatAction response read: `{"ok":true,"result":true}`.
pub const MAX_ACTION_BODY: usize = 16 * 1024;
/// The getUpdates HTTP deadline is the long-poll timeout plus this grace, so the server always
/// answers an idle poll before the client gives up on it.
pub const POLL_GRACE: Duration = Duration::from_secs(10);
/// Status detail for a 409 Conflict.
pub const CONFLICT_DETAIL: &str =
    "another bot instance or a webhook is using this token — retrying";
/// Status detail when Telegram refuses the token.
pub const TOKEN_REJECTED_DETAIL: &str = "token rejected by Telegram — check token_file";

// ---------------------------------------------------------------------------------------------
// Classification.

/// What the HTTP client returned, in terms the core understands.
#[derive(Debug, Clone, Copy)]
pub enum Fetched<'a> {
    /// A response: status and body.
    Body { status: u16, body: &'a [u8] },
    /// The body exceeded its limit.
    TooLarge,
    /// Network failure or timeout (the words carry no URL and no token).
    Failed(&'a str),
    /// The request could not be built: api_root or the token makes no valid URL.
    Invalid(&'a str),
}

/// Why a Bot API call did not return a result, and so what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 429: wait exactly this long, then resend the same request.
    RetryAfter(Duration),
    /// 409: another getUpdates poller, or a webhook, holds the token.
    Conflict,
    /// 401/404: the token is wrong or revoked; retrying will not help.
    TokenRejected,
    /// 5xx, network, timeout: retry with backoff.
    Transient(String),
    /// Any other 4xx: this request will never succeed.
    Rejected { code: i64, description: String },
    /// Not the Bot API's JSON (or the wrong shape).
    Malformed(String),
    /// No valid URL could be built from api_root and the token.
    Invalid(String),
}

/// Turns a raw reply into the call's result or what went wrong.
pub fn classify<T: DeserializeOwned>(fetched: Fetched<'_>) -> Result<T, ApiError> {
    let (status, body) = match fetched {
        Fetched::Body { status, body } => (status, body),
        Fetched::TooLarge => return Err(ApiError::Malformed("response body too large".into())),
        Fetched::Failed(e) => return Err(ApiError::Transient(e.to_string())),
        Fetched::Invalid(e) => return Err(ApiError::Invalid(e.to_string())),
    };
    match serde_json::from_slice::<Envelope<T>>(body) {
        Ok(env) if env.ok => env
            .result
            .ok_or_else(|| ApiError::Malformed("\"ok\":true without a result".into())),
        Ok(env) => {
            let code = env.error_code.unwrap_or(i64::from(status));
            let description = env.description.unwrap_or_else(|| format!("HTTP {status}"));
            let retry_after = env.parameters.and_then(|p| p.retry_after);
            Err(error_for(code, description, retry_after))
        }
        // Not JSON: a proxy's or load balancer's page. The status alone still says a lot.
        Err(e) if !(200..300).contains(&status) => Err(error_for(
            i64::from(status),
            format!("HTTP {status}: {e}"),
            None,
        )),
        Err(e) => Err(ApiError::Malformed(format!(
            "line {} column {}: {}",
            e.line(),
            e.column(),
            e.classify_name()
        ))),
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

fn error_for(code: i64, description: String, retry_after: Option<u64>) -> ApiError {
    match code {
        429 => ApiError::RetryAfter(
            Duration::from_secs(retry_after.unwrap_or(1).max(1)).min(retry::RETRY_AFTER_CAP),
        ),
        409 => ApiError::Conflict,
        401 | 404 => ApiError::TokenRejected,
        400..=499 => ApiError::Rejected { code, description },
        _ => ApiError::Transient(description),
    }
}

/// The outcome of a sendMessage, as the delivery loop wants it. A 2xx whose body cannot be read
/// still counts as sent: Telegram answers 2xx only after the message exists, and repeating it
/// would show the user the chunk twice.
pub fn send_outcome(fetched: Fetched<'_>) -> Result<(), SendError> {
    match classify::<IgnoredAny>(fetched) {
        Ok(_) => Ok(()),
        Err(ApiError::Malformed(_))
            if matches!(
                fetched,
                Fetched::Body {
                    status: 200..=299,
                    ..
                }
            ) =>
        {
            Ok(())
        }
        Err(ApiError::RetryAfter(d)) => Err(SendError::RetryAfter(d)),
        Err(ApiError::Rejected { description, .. }) => Err(SendError::Permanent(description)),
        Err(ApiError::Invalid(e)) => Err(SendError::Permanent(format!("bad Bot API URL: {e}"))),
        Err(ApiError::TokenRejected) => Err(SendError::Retry(TOKEN_REJECTED_DETAIL.into())),
        Err(ApiError::Conflict) => Err(SendError::Retry("conflict".into())),
        // A 5xx may come from a proxy in front of Telegram after the message was made: settle it.
        Err(ApiError::Transient(e)) if matches!(fetched, Fetched::Body { .. }) => {
            Err(SendError::InDoubt(e))
        }
        Err(ApiError::Transient(e)) => Err(SendError::Retry(e)),
        Err(ApiError::Malformed(e)) => Err(SendError::Retry(format!("malformed response: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Update → Inbound.

/// Message kinds reported as `[unsupported message: KIND]`, checked in this order.
const UNSUPPORTED_KINDS: &[&str] = &[
    "location",
    "venue",
    "contact",
    "poll",
    "dice",
    "game",
    "invoice",
    "story",
    "paid_media",
    "giveaway",
    "giveaway_winners",
    "checklist",
    "successful_payment",
    "new_chat_members",
    "left_chat_member",
    "pinned_message",
    "web_app_data",
];

/// One update of a batch, in update_id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub update_id: i64,
    /// `None`: nothing to submit (an unreadable update, or a kind we do not handle); it is
    /// confirmed as soon as everything before it is.
    pub inbound: Option<Inbound>,
    /// The message's id when it counts on the bot's own message counter (a private chat): see
    /// [`super::doubt`].
    pub box_msg_id: Option<i64>,
}

/// Converts one update; `Err` when it is unreadable (its id, if readable, is still returned).
/// Mentions of the bot are not recognised (no getMe answer known): see [`convert_for`].
pub fn convert(raw: Value, handle_edits: bool) -> Result<Item, Option<i64>> {
    convert_for(raw, handle_edits, &Me::default())
}

/// [`convert`] for the bot `me` (from getMe): its mentions and replies to it are recognised.
pub fn convert_for(raw: Value, handle_edits: bool, me: &Me) -> Result<Item, Option<i64>> {
    let id_hint = raw.get("update_id").and_then(Value::as_i64);
    let update: Update = serde_json::from_value(raw).map_err(|_| id_hint)?;
    if let Some(r) = update.message_reaction {
        return Ok(Item {
            update_id: update.update_id,
            inbound: Some(commands::reaction_to_inbound(update.update_id, r)),
            box_msg_id: None,
        });
    }
    let message = match (update.message, update.edited_message) {
        (Some(m), _) => Some(m),
        (None, Some(m)) if handle_edits => Some(m),
        _ => None,
    };
    let box_msg_id = message
        .as_ref()
        .filter(|m| m.chat.kind == "private")
        .map(|m| m.message_id);
    let inbound = message.map(|m| {
        let mut inbound = message_to_inbound(update.update_id, m, me);
        if let Content::Text(t) = &inbound.content {
            if let Some(c) = command_of(t, me.username.as_deref()) {
                inbound.content = Content::Command(c);
            }
        }
        inbound
    });
    Ok(Item {
        update_id: update.update_id,
        inbound,
        box_msg_id,
    })
}

fn message_to_inbound(update_id: i64, m: Message, me: &Me) -> Inbound {
    let cues = cues::read(&m, me, |r| content_of(r).render());
    let sender = m
        .from
        .as_ref()
        .map(|u| u.id)
        .or(m.sender_chat.as_ref().map(|c| c.id))
        .unwrap_or(m.chat.id);
    let content = content_of(&m);
    Inbound {
        channel: ChannelKind::Telegram,
        id: update_id.to_string(),
        chat: m.chat.id.to_string(),
        sender: sender.to_string(),
        sender_alt: None,
        author: sender.to_string(),
        wire_seq: if m.chat.kind == "private" {
            u64::try_from(m.message_id).unwrap_or(0)
        } else {
            0
        },
        is_group: m.chat.kind != "private",
        content,
        ts_ms: u64::try_from(m.date).unwrap_or(0).saturating_mul(1000),
        cues,
    }
}

/// What a message carries: its text, a media placeholder with the caption, or the name of an
/// unsupported kind.
fn content_of(m: &Message) -> Content {
    let media = |kind| Content::Media {
        kind,
        caption: m.caption.clone(),
    };
    if let Some(t) = &m.text {
        Content::Text(t.clone())
    } else if m.photo.is_some() {
        media(MediaKind::Image)
    } else if m.video.is_some() || m.video_note.is_some() || m.animation.is_some() {
        media(MediaKind::Video)
    } else if m.voice.is_some() || m.audio.is_some() {
        media(MediaKind::Audio)
    } else if m.document.is_some() {
        media(MediaKind::Document)
    } else if m.sticker.is_some() {
        media(MediaKind::Sticker)
    } else {
        let kind = UNSUPPORTED_KINDS
            .iter()
            .find(|k| m.other.contains_key(**k))
            .copied()
            .unwrap_or("unknown");
        Content::Text(format!("[unsupported message: {kind}]"))
    }
}

// ---------------------------------------------------------------------------------------------
// The long-poll state machine.

/// A status change for the channel's row.
pub type Status = (State, String);

/// What the driver does after a getMe.
#[derive(Debug, PartialEq, Eq)]
pub enum StartStep {
    /// Known: go on polling.
    Ready { status: Status },
    /// Wait, then ask again.
    Wait { delay: Duration, status: Status },
    /// Stop for good (return Ok): the owner must act.
    Stop { status: Status },
}

/// What the driver does after a getUpdates.
#[derive(Debug, PartialEq, Eq)]
pub enum PollStep {
    /// A batch was stored: submit [`Poller::next_submission`] until it returns `None`.
    Deliver {
        status: Option<Status>,
        /// Polling works again after a failure: count a reconnect.
        recovered: bool,
        /// Updates that could not be read and were skipped.
        malformed: usize,
    },
    /// Wait, then poll again with the same offset.
    Wait {
        delay: Duration,
        status: Option<Status>,
        /// The whole response was unreadable (why): count one malformed.
        malformed: Option<String>,
    },
    /// Stop for good (return Ok): the owner must act.
    Stop { status: Status },
}

/// The long poller's memory: the next offset, the batch being submitted, the backoff.
pub struct Poller {
    timeout_s: u64,
    handle_edits: bool,
    /// The offset of the next getUpdates: everything below it is confirmed.
    offset: Option<i64>,
    /// Last offset handed out by [`Poller::take_offset_to_save`].
    saved: Option<i64>,
    batch: VecDeque<Item>,
    backoff: Backoff,
    /// A poll failed since the last success.
    failing: bool,
    /// `@username`, once getMe answered.
    up_detail: String,
    /// Set after a TooLarge answer: ask for one update at a time until one poll succeeds.
    small_batches: bool,
    /// The highest private-chat message id seen in any update (see [`super::doubt`]).
    box_max: i64,
    /// The bot, once getMe answered: its mentions and `/cmd@<bot>` commands are recognised.
    me: Me,
}

impl Poller {
    pub fn new(timeout_s: u64, handle_edits: bool, saved_offset: Option<i64>, seed: u64) -> Self {
        Poller {
            timeout_s,
            handle_edits,
            offset: saved_offset,
            saved: saved_offset,
            batch: VecDeque::new(),
            backoff: Backoff::new(retry::LINK, seed),
            failing: false,
            up_detail: String::new(),
            small_batches: false,
            box_max: 0,
            me: Me::default(),
        }
    }

    /// The highest private-chat message id seen in any update so far.
    pub fn box_max(&self) -> i64 {
        self.box_max
    }

    /// The offset of the next getUpdates.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// Handles the getMe answer.
    pub fn handle_get_me(&mut self, fetched: Fetched<'_>) -> StartStep {
        match classify::<User>(fetched) {
            Ok(me) => {
                self.backoff.reset();
                self.me = Me {
                    id: me.id,
                    username: me.username.clone(),
                };
                self.up_detail = match me.username {
                    Some(u) => format!("@{u}"),
                    None => me.first_name,
                };
                StartStep::Ready {
                    status: (State::Up, self.up_detail.clone()),
                }
            }
            Err(ApiError::TokenRejected) => StartStep::Stop {
                status: (State::NeedsOwner, TOKEN_REJECTED_DETAIL.into()),
            },
            Err(ApiError::Invalid(_)) => StartStep::Stop {
                status: (
                    State::NeedsOwner,
                    "no valid Bot API URL from api_root and the token — check both".into(),
                ),
            },
            Err(ApiError::RetryAfter(d)) => StartStep::Wait {
                delay: d,
                status: (State::Degraded, rate_limited_detail(d)),
            },
            Err(e) => StartStep::Wait {
                delay: self.backoff.next_delay(),
                status: (State::Degraded, failure_detail(&e)),
            },
        }
    }

    /// The next getUpdates request.
    pub fn request(&self) -> GetUpdates {
        // `message_reaction` is only sent to bots that ask for it: the user's 👍/👎 feedback.
        let mut allowed_updates = vec!["message", "message_reaction"];
        if self.handle_edits {
            allowed_updates.push("edited_message");
        }
        GetUpdates {
            offset: self.offset,
            timeout: self.timeout_s,
            limit: if self.small_batches { 1 } else { UPDATES_LIMIT },
            allowed_updates,
        }
    }

    /// The HTTP deadline of a getUpdates.
    pub fn request_deadline(&self) -> Duration {
        Duration::from_secs(self.timeout_s) + POLL_GRACE
    }

    /// Handles a getUpdates answer. Any batch still pending is discarded (it was not confirmed,
    /// so Telegram sends it again).
    pub fn handle_updates(&mut self, fetched: Fetched<'_>) -> PollStep {
        self.batch.clear();
        let raw = match classify::<Vec<Value>>(fetched) {
            Ok(raw) => raw,
            Err(e) => return self.poll_failed(e, matches!(fetched, Fetched::TooLarge)),
        };
        let recovered = std::mem::take(&mut self.failing);
        self.small_batches = false;
        self.backoff.reset();
        let mut malformed = 0;
        let mut items = Vec::with_capacity(raw.len());
        for update in raw {
            match convert_for(update, self.handle_edits, &self.me) {
                Ok(item) => items.push(item),
                Err(Some(update_id)) => {
                    malformed += 1;
                    items.push(Item {
                        update_id,
                        inbound: None,
                        box_msg_id: None,
                    });
                }
                // No readable id: it cannot be skipped on its own; a later good update moves the
                // offset past it.
                Err(None) => malformed += 1,
            }
        }
        items.sort_by_key(|i| i.update_id);
        if let Some(m) = items.iter().filter_map(|i| i.box_msg_id).max() {
            self.box_max = self.box_max.max(m);
        }
        let floor = self.offset.unwrap_or(i64::MIN);
        self.batch
            .extend(items.into_iter().filter(|i| i.update_id >= floor));
        PollStep::Deliver {
            status: recovered.then(|| (State::Up, self.up_detail.clone())),
            recovered,
            malformed,
        }
    }

    fn poll_failed(&mut self, e: ApiError, too_large: bool) -> PollStep {
        self.failing = true;
        match e {
            ApiError::TokenRejected => PollStep::Stop {
                status: (State::NeedsOwner, TOKEN_REJECTED_DETAIL.into()),
            },
            ApiError::Invalid(_) => PollStep::Stop {
                status: (
                    State::NeedsOwner,
                    "no valid Bot API URL from api_root and the token — check both".into(),
                ),
            },
            ApiError::RetryAfter(d) => PollStep::Wait {
                delay: d,
                status: Some((State::Degraded, rate_limited_detail(d))),
                malformed: None,
            },
            ApiError::Conflict => PollStep::Wait {
                delay: self.backoff.next_delay(),
                status: Some((State::Degraded, CONFLICT_DETAIL.into())),
                malformed: None,
            },
            ApiError::Malformed(why) => {
                if too_large {
                    self.small_batches = true;
                }
                PollStep::Wait {
                    delay: self.backoff.next_delay(),
                    status: None,
                    malformed: Some(why),
                }
            }
            e @ (ApiError::Transient(_) | ApiError::Rejected { .. }) => PollStep::Wait {
                delay: self.backoff.next_delay(),
                status: Some((State::Degraded, failure_detail(&e))),
                malformed: None,
            },
        }
    }

    /// The next message of the batch to submit. Skippable updates at the front are confirmed on
    /// the way. The same message is returned until [`Poller::confirm`] or
    /// [`Poller::submit_failed`].
    pub fn next_submission(&mut self) -> Option<&Inbound> {
        while let Some(front) = self.batch.front() {
            if front.inbound.is_some() {
                break;
            }
            self.confirm();
        }
        self.batch.front().and_then(|i| i.inbound.as_ref())
    }

    /// Every message of the batch still to submit, in order (at most [`UPDATES_LIMIT`] of them).
    pub fn submissions(&self) -> Vec<Inbound> {
        self.batch
            .iter()
            .filter_map(|i| i.inbound.clone())
            .collect()
    }

    /// The front of the batch is durable (or deliberately skipped): move the offset past it.
    pub fn confirm(&mut self) {
        if let Some(item) = self.batch.pop_front() {
            let next = item.update_id.saturating_add(1);
            self.offset = Some(self.offset.map_or(next, |o| o.max(next)));
        }
    }

    /// The intake could not make the front durable: drop the rest of the batch (it comes again
    /// from the same offset) and say how long to wait.
    pub fn submit_failed(&mut self) -> Duration {
        self.batch.clear();
        self.backoff.next_delay()
    }

    /// The offset to persist, if it moved since the last call.
    pub fn take_offset_to_save(&mut self) -> Option<i64> {
        if self.offset != self.saved {
            self.saved = self.offset;
            self.offset
        } else {
            None
        }
    }
}

fn rate_limited_detail(d: Duration) -> String {
    format!("rate limited by Telegram — retrying in {} s", d.as_secs())
}

fn failure_detail(e: &ApiError) -> String {
    match e {
        ApiError::Transient(why) => format!("cannot reach Telegram ({why}) — retrying"),
        ApiError::Rejected { code, description } => {
            format!("Telegram refused the poll ({code} {description}) — retrying")
        }
        ApiError::Conflict => CONFLICT_DETAIL.into(),
        ApiError::Malformed(why) => format!("unreadable answer from Telegram ({why}) — retrying"),
        ApiError::RetryAfter(d) => rate_limited_detail(*d),
        ApiError::TokenRejected => TOKEN_REJECTED_DETAIL.into(),
        ApiError::Invalid(why) => format!("bad Bot API URL ({why})"),
    }
}

/// The saved offset's bytes: 8-byte big-endian i64.
pub fn encode_offset(offset: i64) -> Vec<u8> {
    offset.to_be_bytes().to_vec()
}

/// Reads a saved offset; `None` if it is not 8 bytes.
pub fn decode_offset(bytes: &[u8]) -> Option<i64> {
    <[u8; 8]>::try_from(bytes).ok().map(i64::from_be_bytes)
}
