//! Settling a sendMessage whose outcome is unknown, sans-io: did the chunk reach the chat?
//!
//! The Bot API has no idempotency key, so a sendMessage cut mid-flight (a broken link, a crash, a
//! power cut after the request left) cannot simply be repeated. But the bot can find its message:
//! - Message ids in private chats come from the bot's own message counter, shared by all its
//!   private chats (and basic groups), and only grow. The chunk, if it arrived, has an id above the
//!   highest one the bot knew when it armed the send: the `hint` stored with the in-flight mark.
//! - `editMessageReplyMarkup` on `(chat, id)` with no markup changes nothing and says whose message
//!   `id` is: "message is not modified" for one of the bot's own messages in that chat (clawbox
//!   never attaches markup), "message can't be edited" for the user's, "message to edit not
//!   found" for an id of another chat or one not used yet.
//! - clawbox sends one chunk at a time per channel and settles a chunk in doubt before sending
//!   anything else, so the first message of the bot's in that chat above `hint` is the chunk.
//!
//! So the probe asks ids `hint+1 ..= hint+`[`MAX_PROBES`] in order: the bot's own message there
//! means it arrived; none means it did not, and it is sent. The ids in between belong to messages
//! that reached the bot (in any private chat) after the last one it had seen when it armed the
//! send; more than [`MAX_PROBES`] of those within that moment would make the probe stop short.
//! A probe is made only [`SETTLE_AFTER`] after the outcome became unknown, so a request that did
//! reach Telegram has been carried out by then.

use super::proto::{ApiError, Fetched, classify};
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use std::time::Duration;

/// Ids probed above the hint: the messages that can reach a personal bot between the last update
/// it saw and its own send are a handful; 32 is ample, and 32 small requests settle a chunk in a
/// few seconds.
pub const MAX_PROBES: u64 = 32;
/// Pause between two probes: well under Telegram's ~30 requests/s per bot.
pub const PROBE_GAP: Duration = Duration::from_millis(100);
/// A request that reached Telegram is carried out within a second or two; probing this long after
/// the outcome became unknown cannot miss a message still being processed.
pub const SETTLE_AFTER: Duration = Duration::from_secs(10);
/// The store cursor holding the highest message id of the bot's own sends that it knows of
/// (written before a send is reported done, so it is durable whenever the send's record is).
pub const BOX_MAX_CURSOR: &str = "telegram.box_max";

/// The body of an editMessageReplyMarkup probe (no `reply_markup`: "remove the markup", which
/// changes nothing on a message without one).
#[derive(Serialize, Debug)]
pub struct Probe {
    pub chat_id: Value,
    pub message_id: i64,
}

/// What one probe said about one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// One of the bot's own messages in this chat.
    Ours,
    /// The user's message, another chat's id, or an id not used yet.
    NotOurs,
    /// The chat itself is gone or blocks the bot: a send would fail for good anyway.
    ChatGone,
    /// Rate limited: ask again after this long.
    RetryAfter(Duration),
    /// No usable answer now (network, 5xx): ask again later.
    Failed(String),
    /// An answer this probe does not understand: the fate of the chunk cannot be told.
    Unclear(String),
}

/// Classifies the answer to one probe.
pub fn classify_probe(fetched: Fetched<'_>) -> Probed {
    match classify::<IgnoredAny>(fetched) {
        // Markup was removed from a message of the bot's in this chat (clawbox never adds any,
        // so this is not expected; it still proves the message is the bot's).
        Ok(_) => Probed::Ours,
        Err(ApiError::Rejected { description, code }) => {
            let d = description.to_ascii_lowercase();
            if d.contains("message is not modified") {
                Probed::Ours
            } else if d.contains("message can't be edited")
                || d.contains("message to edit not found")
                || d.contains("message_id_invalid")
            {
                Probed::NotOurs
            } else if code == 403 || d.contains("chat not found") {
                Probed::ChatGone
            } else {
                Probed::Unclear(description)
            }
        }
        Err(ApiError::RetryAfter(d)) => Probed::RetryAfter(d),
        Err(ApiError::Transient(e)) => Probed::Failed(e),
        Err(ApiError::Conflict) => Probed::Failed("conflict".into()),
        Err(ApiError::TokenRejected) => Probed::Failed("token rejected".into()),
        Err(ApiError::Malformed(e)) => Probed::Failed(format!("malformed answer: {e}")),
        Err(ApiError::Invalid(e)) => Probed::Unclear(e),
    }
}

/// True for a chat whose message ids come from the bot's own counter (a private chat: positive
/// id). Supergroups and channels count on their own; clawbox answers only private chats today.
pub fn is_private(chat: &str) -> bool {
    chat.parse::<i64>().is_ok_and(|id| id > 0)
}

/// How long until a chunk whose outcome became unknown at `since_ms` may be probed, given `now_ms`
/// (both ms since the epoch). A clock set back (a Pi without a real-time clock after a power cut)
/// waits at most [`SETTLE_AFTER`].
pub fn wait_before_probe(since_ms: u64, now_ms: u64) -> Duration {
    let due = since_ms.saturating_add(SETTLE_AFTER.as_millis() as u64);
    Duration::from_millis(due.saturating_sub(now_ms)).min(SETTLE_AFTER)
}

/// The message id a successful sendMessage answer carries.
pub fn sent_message_id(fetched: Fetched<'_>) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Sent {
        message_id: i64,
    }
    classify::<Sent>(fetched).ok().map(|s| s.message_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(status: u16, v: Value) -> Probed {
        let b = serde_json::to_vec(&v).unwrap();
        classify_probe(Fetched::Body { status, body: &b })
    }

    #[test]
    fn probe_answers_say_whose_message_it_is() {
        let bad = |d: &str| json!({"ok": false, "error_code": 400, "description": d});
        assert_eq!(
            probe(
                400,
                bad(
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
                )
            ),
            Probed::Ours
        );
        assert_eq!(
            probe(400, bad("Bad Request: message can't be edited")),
            Probed::NotOurs
        );
        assert_eq!(
            probe(400, bad("Bad Request: message to edit not found")),
            Probed::NotOurs
        );
        assert_eq!(
            probe(400, bad("Bad Request: chat not found")),
            Probed::ChatGone
        );
        assert_eq!(
            probe(
                403,
                json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"})
            ),
            Probed::ChatGone
        );
        assert_eq!(
            probe(
                429,
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 5", "parameters": {"retry_after": 5}})
            ),
            Probed::RetryAfter(Duration::from_secs(5))
        );
        assert!(matches!(
            probe(
                502,
                json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})
            ),
            Probed::Failed(_)
        ));
        assert!(matches!(
            classify_probe(Fetched::Failed("connection reset")),
            Probed::Failed(_)
        ));
        assert!(matches!(
            probe(400, bad("Bad Request: something new")),
            Probed::Unclear(_)
        ));
        assert_eq!(
            probe(
                200,
                json!({"ok": true, "result": {"message_id": 7, "date": 1, "chat": {"id": 1, "type": "private"}}})
            ),
            Probed::Ours
        );
    }

    #[test]
    fn the_probe_waits_out_the_settling_time_once() {
        let s = SETTLE_AFTER.as_millis() as u64;
        assert_eq!(wait_before_probe(1_000, 1_000), SETTLE_AFTER);
        assert_eq!(
            wait_before_probe(1_000, 1_000 + s - 250),
            Duration::from_millis(250)
        );
        assert_eq!(wait_before_probe(1_000, 1_000 + s), Duration::ZERO);
        // A clock that went back (no RTC) waits no longer than the settling time.
        assert_eq!(wait_before_probe(10_000_000, 5), SETTLE_AFTER);
    }

    #[test]
    fn private_chats_are_positive_ids() {
        assert!(is_private("900001"));
        assert!(!is_private("-1001234"));
        assert!(!is_private("@channel"));
    }

    #[test]
    fn a_send_answer_gives_its_message_id() {
        let b = serde_json::to_vec(
            &json!({"ok": true, "result": {"message_id": 42, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "x"}}),
        )
        .unwrap();
        assert_eq!(
            sent_message_id(Fetched::Body {
                status: 200,
                body: &b
            }),
            Some(42)
        );
        assert_eq!(sent_message_id(Fetched::Failed("x")), None);
    }
}
