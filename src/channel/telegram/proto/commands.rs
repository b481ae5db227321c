//! Telegram's conversation cues, sans-io: the bot commands (`/start`, `/reset`, `/new`, `/help`,
//! also as `/cmd@botusername`) and the list registered with `setMyCommands` so they show in the
//! menu; the user's reactions (`message_reaction` updates) read as [`Content::Reaction`]; and the
//! `setMessageReaction` body of the acknowledgement reaction.
//!
//! Bot API: <https://core.telegram.org/bots/api#setmycommands>,
//! <https://core.telegram.org/bots/api#messagereactionupdated>,
//! <https://core.telegram.org/bots/api#setmessagereaction>.

use crate::vocab::{ChannelKind, Command, Content, Inbound};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The commands registered with `setMyCommands`, in menu order, with their descriptions.
pub const MENU: [(&str, &str); 4] = [
    ("start", "What this bot is"),
    ("new", "Start a fresh conversation"),
    ("reset", "Start a fresh conversation"),
    ("help", "What I understand"),
];

/// Longest reaction emoji kept (Telegram's are one or two characters with selectors).
const MAX_EMOJI_CHARS: usize = 16;

/// The command `text` is, when it is one addressed to this bot: `/cmd`, `/cmd args…` or
/// `/cmd@<bot>` with `bot` this bot's username (case-insensitive; a command for another bot is
/// plain text). `None` for anything else.
pub fn command_of(text: &str, bot_username: Option<&str>) -> Option<Command> {
    let word = text.trim_start().strip_prefix('/')?;
    let word = word.split_whitespace().next()?;
    let (name, addressee) = match word.split_once('@') {
        Some((n, a)) => (n, Some(a)),
        None => (word, None),
    };
    if let Some(a) = addressee {
        if !bot_username.is_some_and(|me| me.eq_ignore_ascii_case(a)) {
            return None;
        }
    }
    match name.to_ascii_lowercase().as_str() {
        "start" => Some(Command::Start),
        "reset" | "new" => Some(Command::Reset),
        "help" => Some(Command::Help),
        _ => None,
    }
}

/// The body of `setMyCommands`: [`MENU`] for the default scope.
pub fn my_commands() -> Value {
    let commands: Vec<Value> = MENU
        .iter()
        .map(|(c, d)| serde_json::json!({"command": c, "description": d}))
        .collect();
    serde_json::json!({ "commands": commands })
}

/// The body of `setMessageReaction`: `emoji` on message `message_id`, or no reaction (`""`).
pub fn set_reaction(chat: &str, message_id: u64, emoji: &str) -> Value {
    let reaction: Vec<Value> = if emoji.is_empty() {
        Vec::new()
    } else {
        vec![serde_json::json!({"type": "emoji", "emoji": emoji})]
    };
    serde_json::json!({
        "chat_id": super::chat_id_json(chat),
        "message_id": message_id,
        "reaction": reaction,
    })
}

/// `MessageReactionUpdated`: a user changed their reactions on a message.
#[derive(Deserialize, Debug)]
pub struct MessageReaction {
    pub chat: super::Chat,
    pub message_id: i64,
    pub user: Option<super::User>,
    pub actor_chat: Option<super::Chat>,
    pub date: i64,
    #[serde(default)]
    pub new_reaction: Vec<ReactionType>,
}

/// `ReactionType`: an emoji, a custom emoji or a paid reaction.
#[derive(Deserialize, Serialize, Debug)]
pub struct ReactionType {
    #[serde(rename = "type")]
    pub kind: String,
    pub emoji: Option<String>,
}

/// A reaction update as a message: the newest emoji the user set (`""` when they took their
/// reactions off, or set only custom or paid ones: nothing to note). Its id is the update's.
pub fn reaction_to_inbound(update_id: i64, r: MessageReaction) -> Inbound {
    let sender = r
        .user
        .as_ref()
        .map(|u| u.id)
        .or(r.actor_chat.as_ref().map(|c| c.id))
        .unwrap_or(r.chat.id);
    let emoji: String = r
        .new_reaction
        .iter()
        .rev()
        .find(|t| t.kind == "emoji")
        .and_then(|t| t.emoji.as_deref())
        .unwrap_or("")
        .chars()
        .take(MAX_EMOJI_CHARS)
        .collect();
    Inbound {
        channel: ChannelKind::Telegram,
        id: update_id.to_string(),
        chat: r.chat.id.to_string(),
        sender: sender.to_string(),
        sender_alt: None,
        author: sender.to_string(),
        wire_seq: 0,
        is_group: r.chat.kind != "private",
        content: Content::Reaction {
            emoji,
            target_id: r.message_id.to_string(),
        },
        ts_ms: u64::try_from(r.date).unwrap_or(0).saturating_mul(1000),
        cues: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_with_and_without_the_bot_name() {
        let me = Some("Clawbox_Test_Bot");
        assert_eq!(command_of("/start", me), Some(Command::Start));
        assert_eq!(command_of("/reset", me), Some(Command::Reset));
        assert_eq!(command_of("/new", None), Some(Command::Reset));
        assert_eq!(command_of(" /help please", me), Some(Command::Help));
        assert_eq!(
            command_of("/reset@clawbox_test_bot", me),
            Some(Command::Reset)
        );
        assert_eq!(command_of("/reset@other_bot", me), None);
        assert_eq!(command_of("/reset@x", None), None);
        assert_eq!(command_of("/stop", me), None);
        assert_eq!(command_of("reset", me), None);
        assert_eq!(command_of("/", me), None);
        assert_eq!(command_of("a /start", me), None);
    }

    #[test]
    fn a_reaction_update_becomes_a_reaction_from_its_user() {
        let r: MessageReaction = serde_json::from_value(serde_json::json!({
            "chat": {"id": 42, "type": "private"}, "message_id": 7,
            "user": {"id": 42, "is_bot": false, "first_name": "A"}, "date": 1,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}]
        }))
        .unwrap();
        let m = reaction_to_inbound(9, r);
        assert_eq!(m.sender, "42");
        assert_eq!(
            m.content,
            Content::Reaction {
                emoji: "👍".into(),
                target_id: "7".into()
            }
        );
        let off: MessageReaction = serde_json::from_value(serde_json::json!({
            "chat": {"id": 42, "type": "private"}, "message_id": 7, "date": 1,
            "user": {"id": 42, "first_name": "A"},
            "new_reaction": [{"type": "custom_emoji", "custom_emoji_id": "5"}]
        }))
        .unwrap();
        assert!(matches!(reaction_to_inbound(10, off).content,
            Content::Reaction { ref emoji, .. } if emoji.is_empty()));
        let body = set_reaction("42", 7, "👀");
        assert_eq!(body["reaction"][0]["emoji"], "👀");
        assert_eq!(set_reaction("42", 7, "")["reaction"], serde_json::json!([]));
        assert_eq!(my_commands()["commands"][2]["command"], "reset");
    }
}
