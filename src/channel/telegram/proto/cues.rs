//! A Telegram message's conversational cues ([`Cues`]): the sender's name, whether it mentions
//! the bot, what it replies to, and how a reply quotes it. Read from the wire only: `entities`
//! (and `caption_entities`) of type `mention` whose text is `@<bot username>` (case-insensitive,
//! as Telegram usernames are) or `text_mention` naming the bot's user id; `reply_to_message`
//! (to the bot when its `from.id` is the bot's). Offsets and lengths of entities count UTF-16
//! code units (Bot API, MessageEntity).

use super::wire::{Message, MessageEntity, User};
use crate::vocab::{Cues, Quote};

/// Longest quoted text kept from `reply_to_message`, in characters (the agent gets at most
/// [`crate::turn_text::MAX_QUOTE_CHARS`] of it).
pub const MAX_QUOTE_CHARS: usize = 1024;

/// Who the bot is, from getMe: what a mention of it looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    pub id: i64,
    /// Without the `@`.
    pub username: Option<String>,
}

/// `first_name last_name`, as Telegram clients show a user.
pub fn display_name(u: &User) -> String {
    match u
        .last_name
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        Some(last) => format!("{} {last}", u.first_name.trim()),
        None => u.first_name.trim().to_string(),
    }
}

/// The entity's text: `text` sliced by UTF-16 offset and length (None when out of range).
fn entity_text(text: &str, e: &MessageEntity) -> Option<String> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let start = usize::try_from(e.offset).ok()?;
    let end = start.checked_add(usize::try_from(e.length).ok()?)?;
    String::from_utf16(units.get(start..end)?).ok()
}

/// One entity names the bot.
fn names_me(text: &str, e: &MessageEntity, me: &Me) -> bool {
    match e.kind.as_str() {
        "mention" => me.username.as_deref().is_some_and(|u| {
            entity_text(text, e).is_some_and(|t| {
                t.strip_prefix('@')
                    .is_some_and(|name| name.eq_ignore_ascii_case(u))
            })
        }),
        "text_mention" => e.user.as_ref().is_some_and(|u| u.id == me.id),
        _ => false,
    }
}

/// The message's text or caption with its entities.
fn text_and_entities(m: &Message) -> Option<(&str, &[MessageEntity])> {
    if let Some(t) = &m.text {
        return Some((t, m.entities.as_deref().unwrap_or(&[])));
    }
    m.caption
        .as_deref()
        .map(|c| (c, m.caption_entities.as_deref().unwrap_or(&[])))
}

/// The topic thread a reply must go to: the message's own forum topic, when it is in one.
/// (In a forum, a message that is no explicit reply has `reply_to_message` set to its topic's
/// creation message; in the General topic, and outside forums, no thread is given.)
pub fn topic_thread(m: &Message) -> Option<i64> {
    m.message_thread_id
        .filter(|_| m.is_topic_message == Some(true))
        .filter(|t| *t > 1)
}

/// The cues of `m`; `quote_text` renders a replied-to message (text, caption or placeholder).
pub fn read(m: &Message, me: &Me, quote_text: impl Fn(&Message) -> String) -> Cues {
    let mentions_me =
        text_and_entities(m).is_some_and(|(text, ents)| ents.iter().any(|e| names_me(text, e, me)));
    let quote = m
        .reply_to_message
        .as_deref()
        // A forum topic's creation message is no quote (see `topic_thread`).
        .filter(|r| topic_thread(m) != Some(r.message_id))
        .map(|r| Quote {
            id: r.message_id.to_string(),
            author: r.from.as_ref().map(display_name).unwrap_or_default(),
            text: quote_text(r).chars().take(MAX_QUOTE_CHARS).collect(),
            to_me: r.from.as_ref().is_some_and(|u| u.id == me.id),
        });
    let reply_ref = match topic_thread(m) {
        Some(t) => format!("{}:{t}", m.message_id),
        None => m.message_id.to_string(),
    };
    Cues {
        sender_name: m.from.as_ref().map(display_name).filter(|n| !n.is_empty()),
        mentions_me,
        quote,
        reply_ref: Some(reply_ref),
    }
}

/// Reads a reply reference (`<message_id>` or `<message_id>:<thread>`) back: the message to
/// quote and the topic thread, if any. None when it is not one of ours.
pub fn parse_reply_ref(r: &str) -> Option<(i64, Option<i64>)> {
    match r.split_once(':') {
        Some((id, thread)) => Some((id.parse().ok()?, Some(thread.parse().ok()?))),
        None => Some((r.parse().ok()?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: serde_json::Value) -> Message {
        serde_json::from_value(v).unwrap()
    }

    fn me() -> Me {
        Me {
            id: 99,
            username: Some("Claw_Bot".into()),
        }
    }

    fn text(m: &Message) -> String {
        m.text.clone().unwrap_or_default()
    }

    #[test]
    fn mentions_are_read_from_entities_in_utf16_units() {
        // "🦀 @claw_bot hi": the crab is two UTF-16 units, so the mention starts at 3.
        let m = message(json!({"message_id": 5, "date": 0,
            "chat": {"id": -1, "type": "group"},
            "from": {"id": 7, "first_name": "Ann", "last_name": "Lee"},
            "text": "🦀 @claw_bot hi",
            "entities": [{"type": "mention", "offset": 3, "length": 9}]}));
        let c = read(&m, &me(), text);
        assert!(c.mentions_me);
        assert_eq!(c.sender_name.as_deref(), Some("Ann Lee"));
        assert_eq!(c.reply_ref.as_deref(), Some("5"));
        assert_eq!(c.quote, None);
        // Someone else's username, a bad offset, and a mention in plain text are not.
        for ents in [
            json!([{"type": "mention", "offset": 0, "length": 9}]),
            json!([{"type": "mention", "offset": 3, "length": 90}]),
            json!([]),
        ] {
            let m = message(json!({"message_id": 5, "date": 0,
                "chat": {"id": -1, "type": "group"}, "from": {"id": 7, "first_name": "Ann"},
                "text": "🦀 @claw_bot hi", "entities": ents}));
            assert!(!read(&m, &me(), text).mentions_me);
        }
        let tm = message(json!({"message_id": 6, "date": 0,
            "chat": {"id": -1, "type": "group"}, "from": {"id": 7, "first_name": "Ann"},
            "caption": "look Claw",
            "caption_entities": [{"type": "text_mention", "offset": 5, "length": 4,
                                  "user": {"id": 99, "is_bot": true, "first_name": "Claw"}}]}));
        assert!(
            read(&tm, &me(), text).mentions_me,
            "a text mention of the bot's id"
        );
    }

    #[test]
    fn replies_quote_and_replies_to_the_bot_address_it() {
        let m = message(json!({"message_id": 8, "date": 0,
            "chat": {"id": -100, "type": "supergroup", "is_forum": true},
            "from": {"id": 7, "first_name": "Ann"},
            "message_thread_id": 4, "is_topic_message": true,
            "text": "and?",
            "reply_to_message": {"message_id": 6, "date": 0,
                "chat": {"id": -100, "type": "supergroup"},
                "from": {"id": 99, "is_bot": true, "first_name": "Claw"},
                "text": "It opens at 10."}}));
        let c = read(&m, &me(), text);
        let q = c.quote.unwrap();
        assert_eq!(
            (q.id.as_str(), q.author.as_str(), q.text.as_str(), q.to_me),
            ("6", "Claw", "It opens at 10.", true)
        );
        assert_eq!(c.reply_ref.as_deref(), Some("8:4"), "in its forum topic");
        assert_eq!(parse_reply_ref("8:4"), Some((8, Some(4))));
        assert_eq!(parse_reply_ref("8"), Some((8, None)));
        assert_eq!(parse_reply_ref("x"), None);
        // In a topic, the topic's creation message is no reply.
        let m = message(json!({"message_id": 9, "date": 0,
            "chat": {"id": -100, "type": "supergroup", "is_forum": true},
            "from": {"id": 7, "first_name": "Ann"},
            "message_thread_id": 4, "is_topic_message": true, "text": "x",
            "reply_to_message": {"message_id": 4, "date": 0,
                "chat": {"id": -100, "type": "supergroup"},
                "from": {"id": 7, "first_name": "Ann"}, "forum_topic_created": {"name": "t"}}}));
        assert_eq!(read(&m, &me(), text).quote, None);
        // Outside forums a reply's thread id is no topic.
        let m = message(json!({"message_id": 10, "date": 0,
            "chat": {"id": -100, "type": "supergroup"},
            "from": {"id": 7, "first_name": "Ann"}, "message_thread_id": 3, "text": "x"}));
        assert_eq!(read(&m, &me(), text).reply_ref.as_deref(), Some("10"));
    }
}
