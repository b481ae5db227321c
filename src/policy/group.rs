//! The group rule: whether a group message starts a turn, is only remembered as context, or is
//! dropped. Pure: a message in, a verdict out. Built from `[channels.<channel>.groups]`
//! ([`crate::config::groups`]).
//!
//! In order: groups off → drop (`group`); a group not allowed → drop (`group_not_allowed`); a
//! sender not allowed in it → drop (`group_sender_not_allowed`); a message that does not address
//! the assistant → context only (`group_unaddressed`: no turn, no write); else a turn.
//! Addressed: the channel says the message mentions the assistant (from the wire's mention list,
//! never guessed from the text), or it replies to one of the assistant's messages, or a mention
//! pattern matches its text as a whole word (case-insensitive), or the group does not require a
//! mention.

use super::Verdict;
use crate::config::groups::{ANY, GroupPolicy, GroupsConfig};
use crate::metrics::DropReason;
use crate::vocab::{Content, Inbound};
use std::collections::{HashMap, HashSet};

/// Who in a group may address the assistant.
#[derive(Debug, Clone)]
enum Senders {
    Anyone,
    /// The listed ids (either of the sender's address forms may be the listed one).
    Listed(HashSet<String>),
    /// Whoever the channel's DM rule lets in.
    AsDm,
}

/// One group's settings that differ from the channel's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSettings {
    pub require_mention: Option<bool>,
    /// The agent (config name) this group's turns go to.
    pub agent: Option<String>,
    /// The system prompt this group's turns use instead of the agent's.
    pub system_prompt: Option<String>,
}

/// One channel's group rule.
#[derive(Debug, Clone)]
pub struct GroupRule {
    policy: GroupPolicy,
    allow_all: bool,
    allow: HashSet<String>,
    senders: Senders,
    require_mention: bool,
    /// Lowercased.
    patterns: Vec<String>,
    chats: HashMap<String, GroupSettings>,
}

impl GroupRule {
    pub fn from_config(g: &GroupsConfig) -> GroupRule {
        let ids = |v: &[toml::Spanned<crate::config::groups::Id>]| -> Vec<String> {
            v.iter().map(|i| i.get_ref().as_string()).collect()
        };
        let allow = ids(&g.allow);
        let senders = match &g.allow_from {
            None => Senders::AsDm,
            Some(list) => {
                let list = ids(list);
                if list.iter().any(|s| s == ANY) {
                    Senders::Anyone
                } else {
                    Senders::Listed(list.into_iter().collect())
                }
            }
        };
        GroupRule {
            policy: g.policy,
            allow_all: allow.iter().any(|s| s == ANY),
            allow: allow.into_iter().collect(),
            senders,
            require_mention: g.require_mention,
            patterns: g
                .mention_patterns
                .iter()
                .map(|p| p.get_ref().trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
            chats: g
                .chats
                .iter()
                .map(|(k, o)| {
                    (
                        k.clone(),
                        GroupSettings {
                            require_mention: o.require_mention,
                            agent: o.agent.as_ref().map(|a| a.get_ref().clone()),
                            system_prompt: o.system_prompt.as_ref().map(|s| s.get_ref().clone()),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The rule for `msg`, a group message; `dm_allows` says whether the channel's DM rule would
    /// let its sender in (used when the groups table names no `allow_from`).
    pub fn check(&self, msg: &Inbound, dm_allows: impl FnOnce() -> bool) -> Verdict {
        match self.policy {
            GroupPolicy::Off => return Verdict::Drop(DropReason::Group),
            GroupPolicy::Allowlist if !self.allow_all && !self.allow.contains(&msg.chat) => {
                return Verdict::Drop(DropReason::GroupNotAllowed);
            }
            GroupPolicy::Allowlist | GroupPolicy::Open => {}
        }
        let sender_ok = match &self.senders {
            Senders::Anyone => true,
            Senders::Listed(l) => {
                l.contains(&msg.sender) || msg.sender_alt.as_ref().is_some_and(|a| l.contains(a))
            }
            Senders::AsDm => dm_allows(),
        };
        if !sender_ok {
            return Verdict::Drop(DropReason::GroupSenderNotAllowed);
        }
        if self.addressed(msg) {
            Verdict::Allow
        } else {
            Verdict::Context
        }
    }

    /// The message addresses the assistant, or this group needs no mention.
    fn addressed(&self, msg: &Inbound) -> bool {
        let require = self
            .chats
            .get(&msg.chat)
            .and_then(|s| s.require_mention)
            .unwrap_or(self.require_mention);
        if !require || msg.cues.mentions_me || msg.cues.quote.as_ref().is_some_and(|q| q.to_me) {
            return true;
        }
        let text = match &msg.content {
            Content::Text(t) => t.as_str(),
            Content::Media { caption, .. } => caption.as_deref().unwrap_or(""),
            Content::Reaction { .. } => "",
            // A bot command (`/reset`, `/reset@thisbot`; the channel recognises only ours) is
            // addressed to the assistant by its nature.
            Content::Command(_) => return true,
        };
        let lower = text.to_lowercase();
        self.patterns.iter().any(|p| contains_word(&lower, p))
    }

    /// A group's overrides, if the config has any for it.
    pub fn settings(&self, chat: &str) -> Option<&GroupSettings> {
        self.chats.get(chat)
    }
}

/// `word` occurs in `text` with no letter, digit or `_` right before or after it.
pub fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let wordish = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(wordish) && !after.is_some_and(wordish) {
            return true;
        }
        // Move past the first character of this occurrence.
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{ChannelKind, Cues, Quote};

    fn rule(toml_text: &str) -> GroupRule {
        let g: GroupsConfig = toml::from_str(toml_text).unwrap();
        GroupRule::from_config(&g)
    }

    fn msg(chat: &str, sender: &str, text: &str) -> Inbound {
        Inbound {
            channel: ChannelKind::Telegram,
            id: "1".into(),
            chat: chat.into(),
            sender: sender.into(),
            sender_alt: None,
            author: sender.into(),
            wire_seq: 0,
            is_group: true,
            content: Content::Text(text.into()),
            ts_ms: 0,
            cues: Cues::default(),
        }
    }

    #[test]
    fn the_order_is_policy_group_sender_address() {
        let off = rule("");
        assert_eq!(
            off.check(&msg("-1", "7", "hi"), || true),
            Verdict::Drop(DropReason::Group)
        );
        let r = rule("policy = \"allowlist\"\nallow = [-1, \"-2\"]\nallow_from = [7]\n");
        assert_eq!(
            r.check(&msg("-3", "7", "hi"), || true),
            Verdict::Drop(DropReason::GroupNotAllowed)
        );
        assert_eq!(
            r.check(&msg("-2", "8", "hi"), || true),
            Verdict::Drop(DropReason::GroupSenderNotAllowed),
            "allow_from replaces the DM rule"
        );
        assert_eq!(r.check(&msg("-1", "7", "hi"), || false), Verdict::Context);
        let mut m = msg("-1", "7", "hi");
        m.cues.mentions_me = true;
        assert_eq!(r.check(&m, || false), Verdict::Allow);
        let mut m = msg("-1", "7", "hi");
        m.cues.quote = Some(Quote {
            to_me: true,
            ..Quote::default()
        });
        assert_eq!(r.check(&m, || false), Verdict::Allow, "a reply to it");
        m.cues.quote = Some(Quote::default());
        assert_eq!(r.check(&m, || false), Verdict::Context, "a reply to others");
    }

    #[test]
    fn senders_default_to_the_dm_rule_and_star_means_anyone() {
        let open = rule("policy = \"open\"\nrequire_mention = false\n");
        assert_eq!(open.check(&msg("-5", "9", "x"), || true), Verdict::Allow);
        assert_eq!(
            open.check(&msg("-5", "9", "x"), || false),
            Verdict::Drop(DropReason::GroupSenderNotAllowed)
        );
        let any = rule(
            "policy = \"allowlist\"\nallow = [\"*\"]\nallow_from = [\"*\"]\nrequire_mention = false\n",
        );
        assert_eq!(any.check(&msg("-5", "9", "x"), || false), Verdict::Allow);
        let alt =
            rule("policy = \"open\"\nallow_from = [\"+491701111111\"]\nrequire_mention = false\n");
        let mut m = msg("g@g.us", "1@lid", "x");
        m.sender_alt = Some("+491701111111".into());
        assert_eq!(alt.check(&m, || false), Verdict::Allow, "either form");
    }

    #[test]
    fn mention_patterns_match_whole_words_case_insensitively() {
        let r = rule(
            "policy = \"open\"\nallow_from = [\"*\"]\nmention_patterns = [\"Claw\", \"hey bot\"]\n",
        );
        for (text, addressed) in [
            ("claw, what now?", true),
            ("ask CLAW", true),
            ("(claw)", true),
            ("Hey Bot please", true),
            ("clawbox is a box", false),
            ("a claws b", false),
            ("seaclaw", false),
            ("claw_x", false),
            ("nothing", false),
        ] {
            let v = r.check(&msg("-1", "1", text), || false);
            assert_eq!(v == Verdict::Allow, addressed, "{text:?}");
        }
        assert!(contains_word("é claw é", "claw"));
        assert!(!contains_word("éclaw", "claw"));
        assert!(contains_word("clawclaw claw", "claw"), "a later occurrence");
    }

    #[test]
    fn per_group_require_mention_and_settings() {
        let r = rule(
            "policy = \"open\"\nallow_from = [\"*\"]\n[chats.\"-7\"]\nrequire_mention = false\nagent = \"fam\"\nsystem_prompt = \"be brief\"\n",
        );
        assert_eq!(r.check(&msg("-7", "1", "x"), || false), Verdict::Allow);
        assert_eq!(r.check(&msg("-8", "1", "x"), || false), Verdict::Context);
        let s = r.settings("-7").unwrap();
        assert_eq!(s.agent.as_deref(), Some("fam"));
        assert_eq!(s.system_prompt.as_deref(), Some("be brief"));
        assert!(r.settings("-8").is_none());
    }
}
