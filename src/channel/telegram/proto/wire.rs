//! The Bot API's wire types: the response envelope, the objects this bridge reads (User, Chat,
//! Update, Message) and the request bodies it sends. Never `deny_unknown_fields`: Bot API objects
//! gain fields over time. Shapes only: reading an answer is [`super::classify`]'s job.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"ok":true,"result":…}` or `{"ok":false,"error_code":N,"description":S,"parameters":{…}}`.
#[derive(Deserialize, Debug)]
pub struct Envelope<T> {
    pub ok: bool,
    pub result: Option<T>,
    pub error_code: Option<i64>,
    pub description: Option<String>,
    pub parameters: Option<ResponseParameters>,
}

#[derive(Deserialize, Debug, Default)]
pub struct ResponseParameters {
    pub retry_after: Option<u64>,
    pub migrate_to_chat_id: Option<i64>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
}

/// A MessageEntity: a span of the text (offset and length in UTF-16 code units) and its kind.
#[derive(Deserialize, Debug, Clone)]
pub struct MessageEntity {
    #[serde(rename = "type")]
    pub kind: String,
    pub offset: i64,
    pub length: i64,
    /// For `text_mention`: the user mentioned.
    pub user: Option<User>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Deserialize, Debug)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<Message>,
    pub edited_message: Option<Message>,
    /// A user's reactions on a message changed (asked for in `allowed_updates`).
    pub message_reaction: Option<super::commands::MessageReaction>,
}

/// The fields of a Message this bridge reads; the media fields are only checked for presence.
#[derive(Deserialize, Debug)]
pub struct Message {
    pub message_id: i64,
    pub date: i64,
    pub chat: Chat,
    pub from: Option<User>,
    pub sender_chat: Option<Chat>,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub entities: Option<Vec<MessageEntity>>,
    pub caption_entities: Option<Vec<MessageEntity>>,
    /// The message this one replies to (without its own `reply_to_message`).
    pub reply_to_message: Option<Box<Message>>,
    /// The forum topic (or, outside forums, the reply thread) the message belongs to.
    pub message_thread_id: Option<i64>,
    /// True when the message was sent in a forum topic.
    pub is_topic_message: Option<bool>,
    pub photo: Option<IgnoredAny>,
    pub video: Option<IgnoredAny>,
    pub video_note: Option<IgnoredAny>,
    pub animation: Option<IgnoredAny>,
    pub voice: Option<IgnoredAny>,
    pub audio: Option<IgnoredAny>,
    pub document: Option<IgnoredAny>,
    pub sticker: Option<IgnoredAny>,
    /// Everything else, to name an unsupported kind.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

/// The body of a getUpdates request.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct GetUpdates {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    pub timeout: u64,
    pub limit: u8,
    pub allowed_updates: Vec<&'static str>,
}

/// The body of a sendMessage request.
#[derive(Serialize, Debug)]
pub struct SendMessage<'a> {
    pub chat_id: Value,
    pub text: &'a str,
    /// The forum topic to send in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_thread_id: Option<i64>,
    /// The message this one replies to (quotes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_parameters: Option<ReplyParameters>,
}

/// ReplyParameters: which message a send replies to.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ReplyParameters {
    pub message_id: i64,
    /// Send anyway when the message is gone (deleted meanwhile): the answer matters more than
    /// the quote.
    pub allow_sending_without_reply: bool,
}

/// The body of a sendChatAction request.
#[derive(Serialize, Debug)]
pub struct SendChatAction {
    pub chat_id: Value,
    pub action: &'static str,
}

/// A chat id as the Bot API wants it: an integer when it is one, else the string (`@channel`).
pub fn chat_id_json(chat: &str) -> Value {
    match chat.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(chat),
    }
}
