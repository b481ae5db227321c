//! `[channels.<channel>.groups]`: whether the assistant takes part in group chats, which groups,
//! who in them may address it, what counts as addressing it, and per-group overrides. The same
//! table for WhatsApp and Telegram; only the id forms differ, and [`check`] knows them.
//!
//! ```toml
//! [channels.telegram.groups]
//! policy = "allowlist"            # "off" (default) | "allowlist" | "open"
//! allow = [-1001234567890, "-4012345678"]   # group chat ids; "*" for every group
//! allow_from = [123456789]        # who may address it in a group; default: who may DM it; "*": anyone
//! require_mention = true          # default
//! mention_patterns = ["claw"]     # extra words that address it (case-insensitive, whole words)
//!
//! [channels.telegram.groups.chats."-1001234567890"]
//! require_mention = false
//! system_prompt = "You are the family's helper. Be brief."
//! agent = "family"
//! ```
//!
//! Ids are written as TOML strings or integers and kept as strings (Telegram chat ids are
//! negative integers; WhatsApp group ids are JIDs, `<digits>[-<digits>]@g.us`).

use super::check::Checker;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The wildcard in `allow` and `allow_from`.
pub const ANY: &str = "*";
/// Longest mention pattern: a name or a word, not a sentence.
pub const MAX_PATTERN_CHARS: usize = 64;

/// `policy`: whether group messages are looked at at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupPolicy {
    /// Every group message is dropped (reason `group`), as before groups existed.
    #[default]
    Off,
    /// Only the groups in `allow` (or all with `"*"`).
    Allowlist,
    /// Every group the account is in.
    Open,
}

/// A group or sender id as written: a string or an integer (Telegram ids are numbers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Int(i64),
    Str(String),
}

impl Id {
    /// The id as the channel reports it in [`crate::vocab::Inbound`] (`chat`, `sender`).
    pub fn as_string(&self) -> String {
        match self {
            Id::Int(n) => n.to_string(),
            Id::Str(s) => s.clone(),
        }
    }
}

/// One `[channels.<channel>.groups]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    pub policy: GroupPolicy,
    /// Groups the assistant answers in under `policy = "allowlist"`; `"*"`: all.
    pub allow: Vec<Spanned<Id>>,
    /// Who in an allowed group may address the assistant. Not set: whoever may DM it (the
    /// channel's `dm_policy` and `allow_from`). `["*"]`: anyone in the group.
    pub allow_from: Option<Vec<Spanned<Id>>>,
    /// Only messages that address the assistant start a turn (a mention, a reply to one of its
    /// messages, a mention pattern); the others are kept in memory as recent context.
    pub require_mention: bool,
    /// Extra words that address the assistant, e.g. its name: matched case-insensitively as whole
    /// words anywhere in the text.
    pub mention_patterns: Vec<Spanned<String>>,
    /// Per-group overrides, keyed by group id (always a quoted key: `chats."-100123"`).
    pub chats: BTreeMap<String, GroupOverride>,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            policy: GroupPolicy::Off,
            allow: Vec::new(),
            allow_from: None,
            require_mention: true,
            mention_patterns: Vec::new(),
            chats: BTreeMap::new(),
        }
    }
}

/// `[channels.<channel>.groups.chats."<id>"]`: what differs in one group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOverride {
    pub require_mention: Option<bool>,
    /// Replaces the agent's own `system_prompt` for this group's turns (agents that take one:
    /// `openai`).
    pub system_prompt: Option<Spanned<String>>,
    /// The agent (by `[agents.<name>]`) this group's messages go to.
    pub agent: Option<Spanned<String>>,
}

/// Which id forms a channel's groups table takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForms {
    Telegram,
    WhatsApp,
}

impl IdForms {
    fn table(self) -> &'static str {
        match self {
            IdForms::Telegram => "channels.telegram.groups",
            IdForms::WhatsApp => "channels.whatsapp.groups",
        }
    }

    /// `None` when `id` is a group id of this channel, else what would be valid.
    fn group_problem(self, id: &str) -> Option<&'static str> {
        let ok = match self {
            IdForms::Telegram => id.parse::<i64>().is_ok_and(|n| n < 0),
            IdForms::WhatsApp => id.strip_suffix("@g.us").is_some_and(|user| {
                !user.is_empty()
                    && user.len() <= 40
                    && user
                        .split('-')
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            }),
        };
        (!ok).then_some(match self {
            IdForms::Telegram => {
                "Telegram group ids are negative numbers, e.g. -1001234567890 (see the README: \"Groups\"), or \"*\""
            }
            IdForms::WhatsApp => {
                "WhatsApp group ids are JIDs ending in @g.us, e.g. \"120363012345678901@g.us\", or \"*\""
            }
        })
    }

    /// `None` when `id` names a sender of this channel, else what would be valid.
    fn sender_problem(self, id: &str) -> Option<&'static str> {
        let ok = match self {
            IdForms::Telegram => id.parse::<i64>().is_ok_and(|n| n > 0),
            IdForms::WhatsApp => super::check::is_e164(id) || super::check::is_lid(id),
        };
        (!ok).then_some(match self {
            IdForms::Telegram => "Telegram user ids are positive numbers, e.g. 123456789, or \"*\"",
            IdForms::WhatsApp => {
                "WhatsApp senders are E.164 numbers (\"+491701234567\") or LIDs (\"123456789012345@lid\"), or \"*\""
            }
        })
    }
}

/// What the checks need to know about the declared agents.
pub(super) struct Agents<'a> {
    /// The name is a declared agent (or the built-in echo).
    pub known: &'a dyn Fn(&str) -> bool,
    /// The declared names, for the message.
    pub declared: &'a str,
    /// The named agent takes a system prompt (openai).
    pub takes_prompt: &'a dyn Fn(&str) -> bool,
}

/// Checks one groups table: id forms, patterns, override keys and agents; `channel_agent` is the
/// agent the channel's messages go to unless an override names another.
pub(super) fn check(
    c: &mut Checker<'_>,
    g: &GroupsConfig,
    forms: IdForms,
    agents: &Agents<'_>,
    channel_agent: &str,
) {
    let (known, declared) = (agents.known, agents.declared);
    let table = forms.table();
    for id in &g.allow {
        let v = id.get_ref().as_string();
        if v != ANY
            && let Some(why) = forms.group_problem(&v)
        {
            c.err_at(id, format!("[{table}] allow: `{v}`: {why}"));
        }
    }
    if g.policy == GroupPolicy::Allowlist && g.allow.is_empty() {
        c.err(format!(
            "[{table}]: policy = \"allowlist\" with an empty allow lets no group in; add group ids \
             (allow = [...]) or \"*\", or set policy = \"open\""
        ));
    }
    for id in g.allow_from.iter().flatten() {
        let v = id.get_ref().as_string();
        if v != ANY
            && let Some(why) = forms.sender_problem(&v)
        {
            c.err_at(id, format!("[{table}] allow_from: `{v}`: {why}"));
        }
    }
    for p in &g.mention_patterns {
        let v = p.get_ref();
        if v.trim().is_empty() || v.chars().count() > MAX_PATTERN_CHARS {
            c.err_at(
                p,
                format!(
                    "[{table}] mention_patterns: a pattern is a word or name of 1 to \
                     {MAX_PATTERN_CHARS} characters"
                ),
            );
        }
    }
    for (key, o) in &g.chats {
        if let Some(why) = forms.group_problem(key) {
            c.err(format!("[{table}.chats.\"{key}\"]: {why}"));
        }
        if let Some(a) = &o.agent
            && !known(a.get_ref())
        {
            c.err_at(
                a,
                format!("no agent named `{}`; declared: {declared}", a.get_ref()),
            );
        }
        if let Some(s) = &o.system_prompt {
            let agent = o
                .agent
                .as_ref()
                .map_or(channel_agent, |a| a.get_ref().as_str());
            if s.get_ref().trim().is_empty() {
                c.err_at(
                    s,
                    format!(
                        "[{table}.chats.\"{key}\"] system_prompt is empty; leave it out instead"
                    ),
                );
            } else if known(agent) && !(agents.takes_prompt)(agent) {
                c.err_at(
                    s,
                    format!(
                        "[{table}.chats.\"{key}\"] system_prompt: this group's agent `{agent}` is \
                         not an openai agent, which is the kind that takes a system prompt; set \
                         agent = \"<an openai agent>\" here or leave system_prompt out"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_forms() {
        let t = IdForms::Telegram;
        assert!(t.group_problem("-1001234567890").is_none());
        assert!(t.group_problem("-42").is_none());
        assert!(t.group_problem("42").is_some());
        assert!(t.group_problem("abc").is_some());
        assert!(t.sender_problem("123").is_none());
        assert!(t.sender_problem("-123").is_some());
        let w = IdForms::WhatsApp;
        assert!(w.group_problem("120363012345678901@g.us").is_none());
        assert!(w.group_problem("491701234567-1600000000@g.us").is_none());
        assert!(w.group_problem("@g.us").is_some());
        assert!(w.group_problem("12-@g.us").is_some());
        assert!(w.group_problem("491701234567@s.whatsapp.net").is_some());
        assert!(w.sender_problem("+491701234567").is_none());
        assert!(w.sender_problem("123456789012345@lid").is_none());
        assert!(w.sender_problem("491701234567").is_some());
    }
}
