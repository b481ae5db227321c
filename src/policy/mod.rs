//! The DM allowlist: who may talk to the assistant, per channel. Pure: a message in, a verdict out.
//! A sender is matched by identity: the channel hands both address forms it knows (`sender`,
//! `sender_alt`), and an entry naming either lets the message in; the policy never resolves one
//! form into the other itself (the channel does, see `channel::whatsapp::lid`).
//!
//! Runs first, before anything is stored, any agent is called, any receipt or typing is sent. A
//! replay after a reconnect goes through the same check, so it cannot slip past.
//!
//! Group messages follow the channel's group rule ([`group`]).

pub mod group;

use crate::config::{Config, DmPolicy};
use crate::metrics::DropReason;
use crate::vocab::{ChannelKind, Inbound, PerChannel};
use group::{GroupRule, GroupSettings};
use std::collections::HashSet;

/// The sender id a channel gives the owner writing in their own "message yourself" chat.
pub const OWNER_SELF: &str = "self";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A group message that does not address the assistant: no turn and no write, only kept in
    /// memory as recent context (counted as [`DropReason::GroupUnaddressed`]).
    Context,
    Drop(DropReason),
}

/// One channel's rule.
#[derive(Debug, Clone)]
pub struct Policy {
    dm: DmPolicy,
    allow: HashSet<String>,
    /// The owner's own sender id (WhatsApp's "message yourself" chat): always allowed, whatever
    /// `dm_policy` says about other people.
    owner: Option<String>,
    /// The channel's group rule; none: every group message is dropped.
    groups: Option<GroupRule>,
}

impl Policy {
    pub fn new(dm: DmPolicy, allow_from: impl IntoIterator<Item = String>) -> Policy {
        Policy {
            dm,
            allow: allow_from.into_iter().collect(),
            owner: None,
            groups: None,
        }
    }

    /// Also takes part in groups, under `rule`.
    pub fn with_groups(mut self, rule: GroupRule) -> Policy {
        self.groups = Some(rule);
        self
    }

    /// A group's overrides (agent, system prompt), if the config has any for it.
    pub fn group_settings(&self, chat: &str) -> Option<&GroupSettings> {
        self.groups.as_ref().and_then(|g| g.settings(chat))
    }

    /// Lets everyone in: the local console, whose only user is the person at the keyboard.
    pub fn open() -> Policy {
        Policy::new(DmPolicy::Open, [])
    }

    /// Also lets the owner's own sender id in.
    pub fn with_owner(mut self, owner: &str) -> Policy {
        self.owner = Some(owner.to_string());
        self
    }

    /// On the allowlist by identity, not by address form: either of the sender's addresses the
    /// channel knows (WhatsApp: the number and the LID of one person) may be the listed one.
    fn allows(&self, msg: &Inbound) -> bool {
        self.allow.contains(&msg.sender)
            || msg
                .sender_alt
                .as_ref()
                .is_some_and(|alt| self.allow.contains(alt))
    }

    pub fn check(&self, msg: &Inbound) -> Verdict {
        if msg.is_group {
            return match &self.groups {
                None => Verdict::Drop(DropReason::Group),
                Some(g) => g.check(msg, || self.check_dm(msg) == Verdict::Allow),
            };
        }
        self.check_dm(msg)
    }

    /// The DM rule, whatever kind of chat the message came from.
    fn check_dm(&self, msg: &Inbound) -> Verdict {
        if self.owner.as_deref() == Some(msg.sender.as_str()) {
            return Verdict::Allow;
        }
        match self.dm {
            DmPolicy::Disabled => Verdict::Drop(DropReason::Disabled),
            DmPolicy::Open => Verdict::Allow,
            DmPolicy::Allowlist if self.allows(msg) => Verdict::Allow,
            DmPolicy::Allowlist => Verdict::Drop(DropReason::NotAllowed),
        }
    }
}

/// The rules of every channel. A channel without a rule lets nobody in.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_channel: PerChannel<Option<Policy>>,
}

impl Policies {
    pub fn from_config(cfg: &Config) -> Policies {
        let mut p = Policies::default();
        p.set(ChannelKind::Console, Policy::open());
        if let Some(t) = &cfg.channels.telegram {
            p.set(
                ChannelKind::Telegram,
                Policy::new(
                    t.dm_policy,
                    t.allow_from.iter().map(|id| id.get_ref().to_string()),
                )
                .with_groups(GroupRule::from_config(&t.groups)),
            );
        }
        if let Some(w) = &cfg.channels.whatsapp {
            p.set(ChannelKind::WhatsApp, {
                let p = Policy::new(
                    w.dm_policy,
                    w.allow_from.iter().map(|n| n.get_ref().clone()),
                )
                .with_groups(GroupRule::from_config(&w.groups));
                // The WhatsApp connector reports the owner's "message yourself" chat as this sender.
                if w.self_chat {
                    p.with_owner(OWNER_SELF)
                } else {
                    p
                }
            });
        }
        p
    }

    pub fn set(&mut self, ch: ChannelKind, policy: Policy) {
        self.by_channel[ch] = Some(policy);
    }

    pub fn check(&self, msg: &Inbound) -> Verdict {
        match &self.by_channel[msg.channel] {
            Some(p) => p.check(msg),
            None => Verdict::Drop(DropReason::Disabled),
        }
    }

    /// The overrides of the group `msg` came from, if any.
    pub fn group_settings(&self, msg: &Inbound) -> Option<&GroupSettings> {
        if !msg.is_group {
            return None;
        }
        self.by_channel[msg.channel]
            .as_ref()
            .and_then(|p| p.group_settings(&msg.chat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Content;

    fn msg(sender: &str, group: bool) -> Inbound {
        Inbound {
            channel: ChannelKind::Telegram,
            id: "1".into(),
            chat: "c".into(),
            sender: sender.into(),
            sender_alt: None,
            author: sender.into(),
            wire_seq: 0,
            is_group: group,
            content: Content::Text("hi".into()),
            ts_ms: 0,
            cues: Default::default(),
        }
    }

    fn from(sender: &str, alt: Option<&str>) -> Inbound {
        Inbound {
            channel: ChannelKind::WhatsApp,
            sender_alt: alt.map(str::to_string),
            ..msg(sender, false)
        }
    }

    /// One person, two address forms: a number or a LID on the list lets the person in whichever
    /// form the message names them by, as long as the channel knows the other form.
    #[test]
    fn the_allowlist_matches_either_address_form() {
        let p = Policy::new(
            DmPolicy::Allowlist,
            [
                "+491701111111".to_string(),
                "200000000000042@lid".to_string(),
            ],
        );
        let allow = Verdict::Allow;
        let stranger = Verdict::Drop(DropReason::NotAllowed);
        // Listed by number: the number itself, or a LID whose number the channel knows.
        assert_eq!(p.check(&from("+491701111111", None)), allow);
        assert_eq!(
            p.check(&from("+491701111111", Some("200000000000001@lid"))),
            allow
        );
        // Listed by LID: the LID alone, or a number whose LID the channel knows.
        assert_eq!(p.check(&from("200000000000042@lid", None)), allow);
        assert_eq!(
            p.check(&from("+491702222222", Some("200000000000042@lid"))),
            allow
        );
        // A LID whose number is not known is not the listed number; strangers in either form.
        assert_eq!(p.check(&from("200000000000001@lid", None)), stranger);
        assert_eq!(
            p.check(&from("+491703333333", Some("200000000000003@lid"))),
            stranger
        );
        assert_eq!(p.check(&from("200000000000003@lid", None)), stranger);
        // The alternate form never bypasses the other rules.
        let group = Inbound {
            is_group: true,
            ..from("+491701111111", Some("200000000000042@lid"))
        };
        assert_eq!(p.check(&group), Verdict::Drop(DropReason::Group));
        let off = Policy::new(DmPolicy::Disabled, ["200000000000042@lid".to_string()]);
        assert_eq!(
            off.check(&from("+491702222222", Some("200000000000042@lid"))),
            Verdict::Drop(DropReason::Disabled)
        );
    }

    #[test]
    fn allowlist_open_disabled_and_groups() {
        let p = Policy::new(DmPolicy::Allowlist, ["42".to_string()]);
        assert_eq!(p.check(&msg("42", false)), Verdict::Allow);
        assert_eq!(
            p.check(&msg("43", false)),
            Verdict::Drop(DropReason::NotAllowed)
        );
        assert_eq!(p.check(&msg("42", true)), Verdict::Drop(DropReason::Group));
        assert_eq!(Policy::open().check(&msg("anyone", false)), Verdict::Allow);
        assert_eq!(
            Policy::new(DmPolicy::Disabled, ["42".to_string()]).check(&msg("42", false)),
            Verdict::Drop(DropReason::Disabled)
        );
        assert_eq!(
            Policies::default().check(&msg("42", false)),
            Verdict::Drop(DropReason::Disabled)
        );
        let owned = Policy::new(DmPolicy::Disabled, []).with_owner(OWNER_SELF);
        assert_eq!(
            owned.check(&msg(OWNER_SELF, false)),
            Verdict::Allow,
            "the owner's self chat"
        );
        assert_eq!(
            owned.check(&msg("43", false)),
            Verdict::Drop(DropReason::Disabled)
        );
    }
}
