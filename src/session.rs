//! Session identity and keys: which chat's messages form one conversation, what the agent calls
//! it, and what resets it. Pure.
//!
//! A session's identity is `<channel>-<id>` where the id follows the configured scope; its key, as
//! agents see it, is `agent:<agent_id>:<prefix>-<identity>`, with `-r<generation>` appended once a
//! 🗑️ reset has started a new generation.

use crate::config::SessionScope;
use crate::vocab::Inbound;

/// Longest session id (OpenClaw caps keys at 512 characters; this leaves room for the prefix).
pub const MAX_ID_CHARS: usize = 256;

/// Removes control characters, replaces `:` `/` `\` with `-`, and caps the length.
pub fn clean(id: &str) -> String {
    id.chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if matches!(c, ':' | '/' | '\\') {
                '-'
            } else {
                c
            }
        })
        .take(MAX_ID_CHARS)
        .collect()
}

/// The session identity of a message under `scope`. A group is one conversation: under
/// `per_user` its messages form the group's session (keyed by the group, as under `per_chat`),
/// never the sender's DM session, so what is said in a group does not leak into a person's
/// private conversation or the other way round. `per_user_per_chat` keeps one session per person
/// per group.
pub fn identity(scope: SessionScope, msg: &Inbound) -> String {
    let ch = msg.channel.as_str();
    let raw = match scope {
        SessionScope::PerChat => format!("{ch}-{}", msg.chat),
        SessionScope::PerUser if msg.is_group => format!("{ch}-{}", msg.chat),
        SessionScope::PerUser => format!("{ch}-{}", msg.sender),
        SessionScope::PerUserPerChat => format!("{ch}-{}-{}", msg.sender, msg.chat),
    };
    clean(&raw)
}

/// The key agents see: `agent:<agent_id>:<prefix>-<identity>[-r<generation>]`.
pub fn key(agent_id: &str, prefix: &str, identity: &str, generation: u32) -> String {
    if generation == 0 {
        format!("agent:{}:{}-{identity}", clean(agent_id), clean(prefix))
    } else {
        format!(
            "agent:{}:{}-{identity}-r{generation}",
            clean(agent_id),
            clean(prefix)
        )
    }
}

/// True when the text is only 🗑️ (U+1F5D1, with or without the emoji presentation selector U+FE0F),
/// surrounding whitespace ignored.
pub fn is_reset(text: &str) -> bool {
    let t = text.trim();
    t == "\u{1F5D1}" || t == "\u{1F5D1}\u{FE0F}"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{ChannelKind, Content};

    fn msg(chat: &str, sender: &str) -> Inbound {
        Inbound {
            channel: ChannelKind::WhatsApp,
            id: "x".into(),
            chat: chat.into(),
            sender: sender.into(),
            sender_alt: None,
            author: sender.into(),
            wire_seq: 0,
            is_group: false,
            content: Content::Text(String::new()),
            ts_ms: 0,
            cues: Default::default(),
        }
    }

    #[test]
    fn identity_follows_scope_and_is_clean() {
        let m = msg("4917@s.whatsapp.net", "+4917");
        assert_eq!(
            identity(SessionScope::PerChat, &m),
            "whatsapp-4917@s.whatsapp.net"
        );
        assert_eq!(identity(SessionScope::PerUser, &m), "whatsapp-+4917");
        assert_eq!(
            identity(SessionScope::PerUserPerChat, &m),
            "whatsapp-+4917-4917@s.whatsapp.net"
        );
        let g = Inbound {
            is_group: true,
            ..msg("120363@g.us", "+4917")
        };
        assert_eq!(
            identity(SessionScope::PerUser, &g),
            "whatsapp-120363@g.us",
            "a group never joins the sender's DM session"
        );
        assert_eq!(identity(SessionScope::PerChat, &g), "whatsapp-120363@g.us");
        assert_eq!(
            identity(SessionScope::PerUserPerChat, &g),
            "whatsapp-+4917-120363@g.us"
        );
        assert_eq!(clean("a:b/c\\d\u{7}e"), "a-b-c-de");
        assert_eq!(clean(&"x".repeat(1000)).chars().count(), MAX_ID_CHARS);
    }

    #[test]
    fn keys_and_generations() {
        assert_eq!(
            key("main", "clawbox", "telegram-42", 0),
            "agent:main:clawbox-telegram-42"
        );
        assert_eq!(
            key("main", "clawbox", "telegram-42", 3),
            "agent:main:clawbox-telegram-42-r3"
        );
    }

    #[test]
    fn only_the_wastebasket_resets() {
        assert!(is_reset("🗑️"));
        assert!(is_reset("\u{1F5D1}"));
        assert!(is_reset("  🗑️ \n"));
        assert!(!is_reset("🗑️ please"));
        assert!(!is_reset("🗑️🗑️"));
        assert!(!is_reset(""));
    }
}
