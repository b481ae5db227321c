//! The sans-io core of the WhatsApp channel's messages: library message types → [`Inbound`], the
//! self chat and its echo suppression, the outgoing message id derived from a chunk key; and the
//! reconnect timings that [`super::lifecycle`] applies.
//!
//! No sockets, no clock (`now` is passed in), no tokio. Never decides who may talk to the
//! assistant (the core's policy does); never logs message bodies.

use crate::vocab::{ChannelKind, Content, Inbound, MediaKind};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;
use whatsapp_rust::Jid;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::waproto::whatsapp as wa;

/// The sender recorded for the owner's own "message yourself" chat; the lead's policy allows it
/// when `self_chat` is on.
pub const SELF_SENDER: &str = "self";
/// Ids of messages we sent, remembered so their echo in the self chat is never answered.
pub const MAX_SENT_IDS: usize = 1024;
/// How long a sent id is remembered: echoes arrive within seconds; an offline replay after a
/// restart is caught by the reply prefix instead.
pub const SENT_ID_TTL: Duration = Duration::from_secs(30 * 60);

/// The outgoing message id for a reply chunk: `3EB0` + 16 upper-hex characters of SHA-256(key),
/// the shape of WhatsApp Web's ids. The same chunk always gets the same id, so a resend after a
/// crash is the same message.
pub fn message_id_for(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut s = String::with_capacity(20);
    s.push_str("3EB0");
    for b in &d.as_ref()[..8] {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Who we are, for telling the self chat apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Own {
    /// Phone-number user part (digits).
    pub pn: Option<String>,
    /// LID user part.
    pub lid: Option<String>,
}

impl Own {
    /// `jid` names the linked account (by its number or its LID, any device).
    pub fn is_own(&self, jid: &Jid) -> bool {
        (jid.is_pn() && self.pn.as_deref() == Some(jid.user.as_str()))
            || (jid.is_lid() && self.lid.as_deref() == Some(jid.user.as_str()))
    }
}

/// Recently sent ids (bounded, with a TTL).
#[derive(Debug, Default)]
pub struct SentIds {
    at: HashMap<String, Instant>,
    order: VecDeque<String>,
}

impl SentIds {
    pub fn remember(&mut self, id: &str, now: Instant) {
        self.expire(now);
        if self.at.insert(id.to_string(), now).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > MAX_SENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }

    pub fn contains(&mut self, id: &str, now: Instant) -> bool {
        self.expire(now);
        self.at.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.order.front() {
            match self.at.get(front) {
                Some(t) if now.saturating_duration_since(*t) < SENT_ID_TTL => break,
                _ => {
                    if let Some(old) = self.order.pop_front() {
                        self.at.remove(&old);
                    }
                }
            }
        }
    }
}

/// Why a library message is not submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Our own reply coming back in the self chat.
    SelfEcho,
    /// Something the owner wrote to someone else from the phone: not for the assistant.
    OwnOutgoing,
    /// Self chat while `self_chat` is off.
    SelfChatOff,
    /// Nothing an agent can use (protocol messages, edits, removed reactions, polls, …).
    Unsupported,
    /// A status update (`status@broadcast`): never a conversation with the assistant.
    Status,
    /// A broadcast list's copy (`<id>@broadcast`).
    BroadcastList,
    /// A channel post (`@newsletter`).
    Newsletter,
}

impl Skip {
    /// The drop reason counted for this skip on `/metrics`, when it is counted there (the
    /// owner's own messages and unsupported kinds are not drops of someone's message).
    pub fn drop_reason(self) -> Option<crate::metrics::DropReason> {
        use crate::metrics::DropReason;
        match self {
            Skip::SelfEcho => Some(DropReason::SelfEcho),
            Skip::Status => Some(DropReason::Status),
            Skip::BroadcastList => Some(DropReason::BroadcastList),
            Skip::Newsletter => Some(DropReason::Newsletter),
            Skip::OwnOutgoing | Skip::SelfChatOff | Skip::Unsupported => None,
        }
    }
}

/// The result of looking at one message.
// A short-lived return value, matched at once and never stored: boxing the message would cost an
// allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    Submit(Inbound),
    Skip(Skip),
}

/// Settings the conversion needs.
#[derive(Debug, Clone)]
pub struct Rules {
    pub self_chat: bool,
    pub self_prefix: String,
}

/// E.164 (`+` and digits) from a phone-number JID's user part.
pub fn e164(user: &str) -> Option<String> {
    (!user.is_empty() && user.bytes().all(|b| b.is_ascii_digit())).then(|| format!("+{user}"))
}

/// The sender's other address as the library's LID↔PN mapping knows it (the shell reads it:
/// [`super::identity`]); digits, no server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub pn: Option<String>,
    pub lid: Option<String>,
}

/// A sender's two address forms for the policy (`sender`, `sender_alt`): the number (`+<digits>`)
/// from the sender, the message's alternate address (`sender_pn`/`sender_lid`) or the mapping
/// (`known`), with the LID (`<digits>@lid`) beside it when known; the LID alone when no number is
/// known; the bare JID for anything else.
pub fn sender_forms(sender: &Jid, alt: Option<&Jid>, known: &Known) -> (String, Option<String>) {
    let of = |pick: fn(&Jid) -> bool| {
        [Some(sender), alt]
            .into_iter()
            .flatten()
            .find(|j| pick(j))
            .map(|j| j.user.to_string())
    };
    let pn = of(|j| j.is_pn()).or_else(|| known.pn.clone());
    let lid = of(|j| j.is_lid()).or_else(|| known.lid.clone());
    super::lid::forms(pn.as_deref(), lid.as_deref())
        .unwrap_or_else(|| (sender.to_non_ad().to_string(), None))
}

/// The content an agent can use, or None.
pub fn content(msg: &wa::Message) -> Option<Content> {
    let base = msg.get_base_message();
    if let Some(r) = base.reaction_message.as_option() {
        let emoji = r.text.clone().unwrap_or_default();
        let target = r.key.as_option().and_then(|k| k.id.clone());
        return match (emoji.is_empty(), target) {
            (false, Some(target_id)) => Some(Content::Reaction { emoji, target_id }),
            _ => None,
        };
    }
    let media = if base.image_message.is_set() {
        Some(MediaKind::Image)
    } else if base.video_message.is_set() {
        Some(MediaKind::Video)
    } else if base.audio_message.is_set() {
        Some(MediaKind::Audio)
    } else if base.document_message.is_set() {
        Some(MediaKind::Document)
    } else if base.sticker_message.is_set() {
        Some(MediaKind::Sticker)
    } else {
        None
    };
    if let Some(kind) = media {
        let caption = msg
            .get_caption()
            .map(str::to_string)
            .filter(|c| !c.trim().is_empty());
        return Some(Content::Media { kind, caption });
    }
    msg.text_content()
        .filter(|t| !t.is_empty())
        .map(|t| Content::Text(t.to_string()))
}

/// Turns one decrypted message into what the core receives (or why not).
pub fn classify(
    msg: &wa::Message,
    info: &MessageInfo,
    own: &Own,
    rules: &Rules,
    sent: &mut SentIds,
    known: &Known,
    now: Instant,
) -> Classified {
    let src = &info.source;
    // Not conversations with the assistant: looked at before anything else, so they cost nothing.
    if src.chat.is_status_broadcast() {
        return Classified::Skip(Skip::Status);
    }
    if src.chat.is_broadcast_list() {
        return Classified::Skip(Skip::BroadcastList);
    }
    if src.chat.is_newsletter() {
        return Classified::Skip(Skip::Newsletter);
    }
    let self_chat = src.is_from_me && !src.is_group && own.is_own(&src.chat);
    if src.is_from_me && !self_chat {
        return Classified::Skip(Skip::OwnOutgoing);
    }
    if self_chat {
        if !rules.self_chat {
            return Classified::Skip(Skip::SelfChatOff);
        }
        if sent.contains(&info.id, now) {
            return Classified::Skip(Skip::SelfEcho);
        }
    }
    let Some(content) = content(msg) else {
        return Classified::Skip(Skip::Unsupported);
    };
    if self_chat {
        // Our reply replayed after a restart (its id forgotten) still carries the prefix.
        if let Content::Text(t) = &content {
            if !rules.self_prefix.is_empty() && t.starts_with(&rules.self_prefix) {
                return Classified::Skip(Skip::SelfEcho);
            }
        }
    }
    let (sender, sender_alt) = if self_chat {
        (SELF_SENDER.to_string(), None)
    } else {
        sender_forms(&src.sender, src.sender_alt.as_ref(), known)
    };
    Classified::Submit(Inbound {
        channel: ChannelKind::WhatsApp,
        id: info.id.clone(),
        chat: src.chat.to_non_ad().to_string(),
        sender,
        sender_alt,
        author: src.sender.to_string(),
        wire_seq: 0,
        is_group: src.is_group || src.chat.is_group(),
        content,
        ts_ms: u64::try_from(info.timestamp.timestamp_millis()).unwrap_or(0),
        cues: super::context_info::read(msg, &info.push_name, &info.id, &src.sender, own),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::buffa::MessageField;
    use whatsapp_rust::wacore::types::message::MessageSource;

    fn jid(s: &str) -> Jid {
        s.parse().unwrap()
    }

    fn own() -> Own {
        Own {
            pn: Some("491700000001".into()),
            lid: Some("100000000000001".into()),
        }
    }

    fn rules() -> Rules {
        Rules {
            self_chat: true,
            self_prefix: "🤖 ".into(),
        }
    }

    fn info(chat: &str, sender: &str, from_me: bool, id: &str) -> MessageInfo {
        MessageInfo {
            source: MessageSource {
                chat: jid(chat),
                sender: jid(sender),
                is_from_me: from_me,
                is_group: chat.ends_with("@g.us"),
                ..Default::default()
            },
            id: id.into(),
            timestamp: whatsapp_rust::wacore::chrono::DateTime::from_timestamp(1_700_000_000, 0)
                .unwrap(),
            ..Default::default()
        }
    }

    fn text(t: &str) -> wa::Message {
        wa::Message {
            conversation: Some(t.into()),
            ..Default::default()
        }
    }

    fn go(msg: &wa::Message, i: &MessageInfo, sent: &mut SentIds) -> Classified {
        classify(
            msg,
            i,
            &own(),
            &rules(),
            sent,
            &Known::default(),
            Instant::now(),
        )
    }

    #[test]
    fn a_text_from_a_contact() {
        let mut sent = SentIds::default();
        let i = info(
            "491701111111@s.whatsapp.net",
            "491701111111:3@s.whatsapp.net",
            false,
            "ABC",
        );
        let Classified::Submit(m) = go(&text("hi"), &i, &mut sent) else {
            panic!("submitted")
        };
        assert_eq!(m.channel, ChannelKind::WhatsApp);
        assert_eq!(m.id, "ABC");
        assert_eq!(m.chat, "491701111111@s.whatsapp.net");
        assert_eq!(m.sender, "+491701111111");
        assert!(!m.is_group);
        assert_eq!(m.content, Content::Text("hi".into()));
        assert_eq!(m.ts_ms, 1_700_000_000_000);
    }

    #[test]
    fn extended_text_media_captions_and_reactions() {
        let mut sent = SentIds::default();
        let i = info(
            "491701111111@s.whatsapp.net",
            "491701111111@s.whatsapp.net",
            false,
            "X",
        );
        let ext = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("with a link".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(go(&ext, &i, &mut sent), Classified::Submit(m) if m.content == Content::Text("with a link".into()))
        );
        let img = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some("look".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(go(&img, &i, &mut sent), Classified::Submit(m)
            if m.content == Content::Media { kind: MediaKind::Image, caption: Some("look".into()) }));
        let sticker = wa::Message {
            sticker_message: MessageField::some(Default::default()),
            ..Default::default()
        };
        assert!(matches!(go(&sticker, &i, &mut sent), Classified::Submit(m)
            if m.content == Content::Media { kind: MediaKind::Sticker, caption: None }));
        let doc = wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                caption: Some("  ".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(go(&doc, &i, &mut sent), Classified::Submit(m)
            if m.content == Content::Media { kind: MediaKind::Document, caption: None }));
        let react = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                text: Some("👍".into()),
                key: MessageField::some(wa::MessageKey {
                    id: Some("3EB0TARGET".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(go(&react, &i, &mut sent), Classified::Submit(m)
            if m.content == Content::Reaction { emoji: "👍".into(), target_id: "3EB0TARGET".into() }));
        let unreact = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                text: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            go(&unreact, &i, &mut sent),
            Classified::Skip(Skip::Unsupported)
        );
        assert_eq!(
            go(&wa::Message::default(), &i, &mut sent),
            Classified::Skip(Skip::Unsupported)
        );
    }

    #[test]
    fn lid_senders_map_to_their_number_when_known() {
        let lid = jid("100000000000777@lid");
        let none = Known::default();
        let known = |pn: Option<&str>, lid: Option<&str>| Known {
            pn: pn.map(str::to_string),
            lid: lid.map(str::to_string),
        };
        let both = |n: &str, l: &str| (n.to_string(), Some(l.to_string()));
        // LID-only: the number from the mapping, or the LID alone.
        assert_eq!(
            sender_forms(&lid, None, &known(Some("491702222222"), None)),
            both("+491702222222", "100000000000777@lid")
        );
        assert_eq!(
            sender_forms(&jid("100000000000777:2@lid"), None, &none),
            ("100000000000777@lid".to_string(), None)
        );
        // LID with the number as the message's alternate address.
        assert_eq!(
            sender_forms(&lid, Some(&jid("491703333333@s.whatsapp.net")), &none),
            both("+491703333333", "100000000000777@lid")
        );
        // A number, with its LID from the message or the mapping, or alone.
        let pn = jid("491704444444:3@s.whatsapp.net");
        assert_eq!(
            sender_forms(&pn, Some(&jid("100000000000888@lid")), &none),
            both("+491704444444", "100000000000888@lid")
        );
        assert_eq!(
            sender_forms(&pn, None, &known(None, Some("100000000000999"))),
            both("+491704444444", "100000000000999@lid")
        );
        assert_eq!(
            sender_forms(&pn, None, &none),
            ("+491704444444".to_string(), None)
        );
    }

    #[test]
    fn groups_are_reported_as_groups() {
        let mut sent = SentIds::default();
        let i = info(
            "120363000000000001@g.us",
            "491701111111@s.whatsapp.net",
            false,
            "G",
        );
        assert!(matches!(go(&text("hi all"), &i, &mut sent), Classified::Submit(m) if m.is_group));
    }

    #[test]
    fn a_group_message_carries_its_member_and_cues() {
        let mut sent = SentIds::default();
        let mut i = info(
            "120363000000000001@g.us",
            "100000000000777:2@lid",
            false,
            "G2",
        );
        i.source.sender_alt = Some(jid("491701111111@s.whatsapp.net"));
        i.push_name = "Alice".into();
        let msg = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("@bot and you?".into()),
                context_info: MessageField::some(wa::ContextInfo {
                    mentioned_jid: vec!["100000000000001@lid".into()],
                    stanza_id: Some("3EB0X".into()),
                    participant: Some("491700000001@s.whatsapp.net".into()),
                    quoted_message: MessageField::some(text("earlier answer")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Classified::Submit(m) = go(&msg, &i, &mut sent) else {
            panic!("submitted")
        };
        assert!(m.is_group);
        assert_eq!(m.chat, "120363000000000001@g.us");
        assert_eq!(
            m.sender, "+491701111111",
            "as the DM allowlist names people"
        );
        assert_eq!(m.sender_alt.as_deref(), Some("100000000000777@lid"));
        assert_eq!(m.cues.sender_name.as_deref(), Some("Alice"));
        assert!(m.cues.mentions_me, "our LID in mentionedJid");
        let q = m.cues.quote.expect("quote");
        assert_eq!((q.id.as_str(), q.to_me), ("3EB0X", true));
        assert_eq!(q.text, "earlier answer");
        assert_eq!(
            m.cues.reply_ref.as_deref(),
            Some("G2:100000000000777@lid\n@bot and you?"),
            "a reply quotes the id, its author and its text"
        );
    }

    #[test]
    fn status_broadcast_lists_and_newsletters_are_skipped_and_counted() {
        let mut sent = SentIds::default();
        for (chat, skip, reason) in [
            ("status@broadcast", Skip::Status, "status"),
            (
                "1700000000@broadcast",
                Skip::BroadcastList,
                "broadcast_list",
            ),
            (
                "120363000000000009@newsletter",
                Skip::Newsletter,
                "newsletter",
            ),
        ] {
            let i = info(chat, "491701111111@s.whatsapp.net", false, "B");
            assert_eq!(go(&text("news"), &i, &mut sent), Classified::Skip(skip));
            assert_eq!(skip.drop_reason().map(|r| r.as_str()), Some(reason));
        }
        assert_eq!(Skip::OwnOutgoing.drop_reason(), None);
    }

    #[test]
    fn self_chat_is_the_owner_and_echoes_are_never_answered() {
        let mut sent = SentIds::default();
        let now = Instant::now();
        // The owner writes in "message yourself" (phone-number or LID addressing).
        for chat in ["491700000001@s.whatsapp.net", "100000000000001@lid"] {
            let i = info(chat, "491700000001:0@s.whatsapp.net", true, "OWNER1");
            let Classified::Submit(m) = classify(
                &text("what's up"),
                &i,
                &own(),
                &rules(),
                &mut sent,
                &Known::default(),
                now,
            ) else {
                panic!("self chat submitted")
            };
            assert_eq!(m.sender, SELF_SENDER);
        }
        // Our own reply echoes back with the id we chose.
        let ours = message_id_for("outbox:7:0");
        sent.remember(&ours, now);
        let i = info(
            "491700000001@s.whatsapp.net",
            "491700000001:5@s.whatsapp.net",
            true,
            &ours,
        );
        assert_eq!(
            classify(
                &text("🤖 hello"),
                &i,
                &own(),
                &rules(),
                &mut sent,
                &Known::default(),
                now
            ),
            Classified::Skip(Skip::SelfEcho)
        );
        // After a restart the id is forgotten, but the prefix still marks it as ours.
        let mut fresh = SentIds::default();
        assert_eq!(
            classify(
                &text("🤖 hello"),
                &i,
                &own(),
                &rules(),
                &mut fresh,
                &Known::default(),
                now
            ),
            Classified::Skip(Skip::SelfEcho)
        );
        // The owner writing to someone else is not for the assistant.
        let i = info(
            "491709999999@s.whatsapp.net",
            "491700000001@s.whatsapp.net",
            true,
            "OUT",
        );
        assert_eq!(
            go(&text("hey"), &i, &mut sent),
            Classified::Skip(Skip::OwnOutgoing)
        );
        // self_chat off.
        let off = Rules {
            self_chat: false,
            ..rules()
        };
        let i = info(
            "491700000001@s.whatsapp.net",
            "491700000001@s.whatsapp.net",
            true,
            "S",
        );
        assert_eq!(
            classify(
                &text("x"),
                &i,
                &own(),
                &off,
                &mut sent,
                &Known::default(),
                now
            ),
            Classified::Skip(Skip::SelfChatOff)
        );
    }

    #[test]
    fn sent_ids_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut s = SentIds::default();
        for i in 0..(MAX_SENT_IDS + 10) {
            s.remember(&format!("id{i}"), t0);
        }
        assert_eq!(s.len(), MAX_SENT_IDS);
        assert!(!s.contains("id0", t0), "oldest evicted");
        assert!(s.contains(&format!("id{}", MAX_SENT_IDS + 9), t0));
        assert!(!s.contains("id20", t0 + SENT_ID_TTL), "expired");
        assert!(s.is_empty());
    }

    #[test]
    fn message_ids_are_stable_and_shaped_like_whatsapp_web() {
        let a = message_id_for("outbox:12:0");
        assert_eq!(a, message_id_for("outbox:12:0"));
        assert_ne!(a, message_id_for("outbox:12:1"));
        assert_eq!(a.len(), 20);
        assert!(a.starts_with("3EB0"));
        assert!(
            a[4..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        );
        // SHA-256("abc") = ba7816bf8f01cfea…
        assert_eq!(message_id_for("abc"), "3EB0BA7816BF8F01CFEA");
    }
}
