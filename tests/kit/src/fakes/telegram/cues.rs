//! The fake Bot API's conversation cues: `setMyCommands` (validated like the real server and
//! recorded), `setMessageReaction` (only known messages, only Telegram's reaction emoji, at most
//! one reaction for a bot; recorded), and the user's reactions as `message_reaction` updates.
//! Shapes from the Bot API reference (setMyCommands, setMessageReaction, MessageReactionUpdated,
//! ReactionTypeEmoji); error words as the real server answers.

use super::server::{chat_param, error, int_param, ok};
use super::{FakeTelegram, Inner, now_unix};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{Value, json};

/// The emoji a `ReactionTypeEmoji` may carry (Bot API reference, "ReactionTypeEmoji").
const REACTION_EMOJI: &[&str] = &[
    "❤",
    "👍",
    "👎",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "🕊",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "❤‍🔥",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "⚡",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "👨‍💻",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "✍",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "☃",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "🤷‍♂",
    "🤷",
    "🤷‍♀",
    "😡",
];

/// One setMessageReaction the client made (successful or not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactionCall {
    pub chat_id: i64,
    pub message_id: i64,
    /// The emoji set; `None`: the bot's reaction was taken off (an empty `reaction` list).
    pub emoji: Option<String>,
}

impl FakeTelegram {
    /// The user `from_user_id` sets `emoji` on message `message_id` of the private chat
    /// `chat_id`: a `message_reaction` update (delivered only to a bot that asks for it in
    /// `allowed_updates`, like the real server). Returns its update_id.
    pub fn push_reaction(
        &self,
        from_user_id: i64,
        chat_id: i64,
        message_id: i64,
        emoji: &str,
    ) -> i64 {
        self.push_raw(json!({"message_reaction": {
            "chat": Self::private_chat(chat_id),
            "message_id": message_id,
            "user": Self::user(from_user_id),
            "date": now_unix(),
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": emoji}],
        }}))
    }

    /// Every setMessageReaction call, in order.
    pub fn reactions(&self) -> Vec<ReactionCall> {
        self.calls_of("setMessageReaction")
            .into_iter()
            .map(|c| ReactionCall {
                chat_id: int_param(&c.params, "chat_id").unwrap_or(0),
                message_id: int_param(&c.params, "message_id").unwrap_or(0),
                emoji: reaction_list(&c.params).and_then(|l| {
                    l.first()
                        .and_then(|r| r["emoji"].as_str().map(str::to_string))
                }),
            })
            .collect()
    }

    /// The command names of the last setMyCommands call, in order.
    pub fn my_commands(&self) -> Option<Vec<String>> {
        let last = self.calls_of("setMyCommands").pop()?;
        Some(
            commands_param(&last.params)?
                .iter()
                .filter_map(|c| c["command"].as_str().map(str::to_string))
                .collect(),
        )
    }
}

/// A list parameter: a JSON array, or (form/query) a JSON-serialized one.
fn json_list(v: Option<&Value>) -> Option<Vec<Value>> {
    match v? {
        Value::String(s) => serde_json::from_str::<Vec<Value>>(s).ok(),
        Value::Array(a) => Some(a.clone()),
        _ => None,
    }
}

fn reaction_list(params: &Value) -> Option<Vec<Value>> {
    match params.get("reaction") {
        None => Some(Vec::new()),
        v => json_list(v),
    }
}

fn commands_param(params: &Value) -> Option<Vec<Value>> {
    json_list(params.get("commands"))
}

/// setMyCommands: 1–100 commands of 1–32 characters `[a-z0-9_]`, descriptions of 1–256.
pub(super) fn set_my_commands(params: &Value) -> Response<Full<Bytes>> {
    let Some(commands) = commands_param(params) else {
        return error(400, "Bad Request: can't parse commands JSON object");
    };
    if commands.len() > 100 {
        return error(400, "Bad Request: too many commands specified");
    }
    for c in &commands {
        let name = c["command"].as_str().unwrap_or("");
        let valid = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return error(400, "Bad Request: BOT_COMMAND_INVALID");
        }
        let description = c["description"].as_str().unwrap_or("").trim();
        if !(1..=256).contains(&description.chars().count()) {
            return error(400, "Bad Request: command description must be non-empty");
        }
    }
    ok(json!(true))
}

/// setMessageReaction on a message of the chat; an empty list takes the bot's reaction off.
pub(super) fn set_message_reaction(inner: &Inner, params: &Value) -> Response<Full<Bytes>> {
    let st = inner.lock();
    let chat_id = match chat_param(&st, params) {
        Ok((id, _)) => id,
        Err(why) => return error(400, why),
    };
    let Some(message_id) = int_param(params, "message_id") else {
        return error(400, "Bad Request: message identifier is not specified");
    };
    if !st.messages.contains_key(&(chat_id, message_id)) {
        return error(400, "Bad Request: MESSAGE_ID_INVALID");
    }
    let Some(list) = reaction_list(params) else {
        return error(400, "Bad Request: can't parse reaction types JSON object");
    };
    if list.len() > 1 {
        return error(400, "Bad Request: REACTIONS_TOO_MANY");
    }
    for r in &list {
        let emoji = r["emoji"].as_str().unwrap_or("");
        if r["type"] != "emoji" || !REACTION_EMOJI.contains(&emoji) {
            return error(400, "Bad Request: REACTION_INVALID");
        }
    }
    ok(json!(true))
}
