//! Group and supergroup chats in the fake Telegram: messages from members with their names, the
//! entities Telegram's server adds (`mention` for every `@username` in the text, `text_mention`
//! for a member picked without a username), replies (`reply_to_message`, the replied-to message
//! without its own reply) and forum topics (`message_thread_id`, `is_topic_message`).
//!
//! As the real server: group ids are negative (basic groups small, supergroups `-100…`); a
//! basic group shares the bot's message counter with private chats, a supergroup numbers its own
//! messages.

use super::*;
use server::bot_user;

/// A group chat as the Bot API's Chat object describes it.
#[derive(Clone, Debug)]
pub struct GroupChat {
    pub id: i64,
    pub title: String,
    /// "group" or "supergroup".
    pub kind: &'static str,
    /// A supergroup with topics.
    pub is_forum: bool,
}

impl GroupChat {
    /// A basic group (id e.g. -4012345678).
    pub fn group(id: i64, title: &str) -> GroupChat {
        GroupChat {
            id,
            title: title.into(),
            kind: "group",
            is_forum: false,
        }
    }

    /// A supergroup (id e.g. -1001234567890).
    pub fn supergroup(id: i64, title: &str) -> GroupChat {
        GroupChat {
            id,
            title: title.into(),
            kind: "supergroup",
            is_forum: false,
        }
    }

    fn json(&self) -> Value {
        let mut c = json!({"id": self.id, "title": self.title, "type": self.kind});
        if self.is_forum {
            c["is_forum"] = json!(true);
        }
        c
    }
}

/// One message posted by a member.
#[derive(Clone, Debug, Default)]
pub struct GroupPost {
    pub from_id: i64,
    pub first_name: String,
    pub text: String,
    /// The message (by id, in this chat) it replies to.
    pub reply_to: Option<i64>,
    /// A `text_mention` of the bot over these UTF-16 units (offset, length) of the text, as a
    /// client sends when a member picks the bot from the member list.
    pub text_mention_of_bot: Option<(usize, usize)>,
    /// The forum topic it is posted in.
    pub thread: Option<i64>,
}

impl GroupPost {
    pub fn new(from_id: i64, first_name: &str, text: &str) -> GroupPost {
        GroupPost {
            from_id,
            first_name: first_name.into(),
            text: text.into(),
            ..GroupPost::default()
        }
    }

    pub fn replying_to(mut self, message_id: i64) -> GroupPost {
        self.reply_to = Some(message_id);
        self
    }
}

/// The `mention` entities Telegram's server finds in a text: `@` then 5 to 32 letters, digits or
/// underscores, not preceded by a word character; offsets and lengths in UTF-16 units.
fn mention_entities(text: &str) -> Vec<Value> {
    let chars: Vec<char> = text.chars().collect();
    let units = |cs: &[char]| cs.iter().map(|c| c.len_utf16()).sum::<usize>();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' && (i == 0 || !word(chars[i - 1])) {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if (5..=32).contains(&(j - i - 1)) {
                out.push(json!({"type": "mention", "offset": units(&chars[..i]),
                                "length": units(&chars[i..j])}));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

impl FakeTelegram {
    /// Posts `post` in `chat`; returns the message's id in that chat.
    pub fn push_group_post(&self, chat: &GroupChat, post: GroupPost) -> i64 {
        let (quoted, bot) = {
            let st = self.inner.lock();
            let q = post
                .reply_to
                .and_then(|id| st.messages.get(&(chat.id, id)).map(|(_, m)| m.clone()));
            (q, bot_user(&st))
        };
        let from = json!({"id": post.from_id, "is_bot": false, "first_name": post.first_name,
                          "language_code": "en"});
        let mut fill = json!({"text": post.text});
        let mut entities = mention_entities(&post.text);
        if let Some((offset, length)) = post.text_mention_of_bot {
            entities.push(
                json!({"type": "text_mention", "offset": offset, "length": length,
                                 "user": bot}),
            );
        }
        if !entities.is_empty() {
            fill["entities"] = Value::Array(entities);
        }
        if let Some(mut q) = quoted {
            if let Some(m) = q.as_object_mut() {
                m.remove("reply_to_message");
            }
            fill["reply_to_message"] = q;
        }
        if let Some(t) = post.thread {
            fill["message_thread_id"] = json!(t);
            fill["is_topic_message"] = json!(true);
        }
        self.push_message("message", chat.json(), from, fill);
        // push_message numbered it: the newest message of the chat.
        let st = self.inner.lock();
        st.messages
            .keys()
            .filter(|(c, _)| *c == chat.id)
            .map(|(_, id)| *id)
            .max()
            .unwrap_or(0)
    }

    /// The messages the bot sent to `chat_id`.
    pub fn sent_to(&self, chat_id: i64) -> Vec<SentMessage> {
        self.sent()
            .into_iter()
            .filter(|m| m.chat_id == chat_id)
            .collect()
    }
}
