//! A WhatsApp message's `contextInfo`, both ways: reading the cues of an incoming message — who
//! it mentions (`mentionedJid`: the linked account by its number or its LID), what it quotes
//! (`stanzaId`, `participant`, `quotedMessage`) — and writing the quote of the message a reply
//! answers (WA Web `msgContextInfo`; whatsapp-rust `build_quote_context`). Also the reference a
//! reply keeps of the message it answers (`Cues::reply_ref`): the message id, its author and its
//! text (bounded), since a WhatsApp quote carries all three. Sans-io: no client, no clock.

use super::adapter::Own;
use crate::vocab::{Cues, Quote};
use whatsapp_rust::Jid;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::waproto::whatsapp as wa;

/// Characters of a quoted message's text given to the agent: enough for the gist of what is
/// answered, bounded so a quoted essay does not crowd the turn.
pub const QUOTE_TEXT_MAX: usize = 280;
/// Characters of a push name kept (WhatsApp limits push names to 25; a forged one is cut).
pub const SENDER_NAME_MAX: usize = 64;
/// Mentions looked at per message (WhatsApp clients cap a mention list far below this).
pub const MENTIONS_MAX: usize = 256;

/// The `contextInfo` of the message's content, wherever the content keeps it.
pub fn of(msg: &wa::Message) -> Option<&wa::ContextInfo> {
    let base = msg.get_base_message();
    macro_rules! first {
        ($($field:ident),+ $(,)?) => {
            $(
                if let Some(m) = base.$field.as_option()
                    && let Some(ctx) = m.context_info.as_option()
                {
                    return Some(ctx);
                }
            )+
        };
    }
    first!(
        extended_text_message,
        image_message,
        video_message,
        audio_message,
        document_message,
        sticker_message,
    );
    None
}

/// Cuts `s` to `max` characters (an ellipsis marks the cut).
fn bounded(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What a quoted message shows: its text or caption, or a placeholder for media.
fn quoted_text(q: &wa::Message) -> String {
    if let Some(t) = q.text_content().filter(|t| !t.is_empty()) {
        return bounded(t, QUOTE_TEXT_MAX);
    }
    if let Some(c) = q.get_caption().filter(|c| !c.is_empty()) {
        return bounded(c, QUOTE_TEXT_MAX);
    }
    let base = q.get_base_message();
    let placeholder = if base.image_message.is_set() {
        "[image]"
    } else if base.video_message.is_set() {
        "[video]"
    } else if base.audio_message.is_set() {
        "[voice message]"
    } else if base.document_message.is_set() {
        "[document]"
    } else if base.sticker_message.is_set() {
        "[sticker]"
    } else {
        ""
    };
    placeholder.to_string()
}

/// The cues of one incoming message: the sender's push name, whether its mention list names
/// the linked account (number or LID), what it quotes, and how a reply quotes it.
pub fn read(msg: &wa::Message, push_name: &str, id: &str, sender: &Jid, own: &Own) -> Cues {
    let ctx = of(msg);
    let mentions_me = ctx.is_some_and(|c| {
        c.mentioned_jid
            .iter()
            .take(MENTIONS_MAX)
            .filter_map(|j| j.parse::<Jid>().ok())
            .any(|j| own.is_own(&j))
    });
    let quote = ctx.and_then(|c| {
        let id = c.stanza_id.clone().filter(|i| !i.is_empty())?;
        let author = c.participant.clone().unwrap_or_default();
        let to_me = author.parse::<Jid>().is_ok_and(|j| own.is_own(&j));
        let text = c
            .quoted_message
            .as_option()
            .map(quoted_text)
            .unwrap_or_default();
        Some(Quote {
            id,
            author,
            text,
            to_me,
        })
    });
    let name = push_name.trim();
    Cues {
        sender_name: (!name.is_empty()).then(|| bounded(name, SENDER_NAME_MAX)),
        mentions_me,
        quote,
        reply_ref: Some(reply_ref(id, sender, &quoted_text(msg))),
    }
}

/// How a reply quotes message `id` by `sender` whose text is `text` (bounded by the caller, as
/// [`quoted_text`] does): `<id>:<sender without device>`, then a line with the text when there is
/// one. A WhatsApp quote names the author as well as the id, and carries the quoted text itself:
/// phones show the quote from that copy (message ids hold no `:`, JIDs no line break).
pub fn reply_ref(id: &str, sender: &Jid, text: &str) -> String {
    let head = format!("{id}:{}", sender.to_non_ad());
    if text.is_empty() {
        head
    } else {
        format!("{head}\n{text}")
    }
}

/// The `contextInfo` that quotes the message `reference` names (see [`reply_ref`]; a bare id
/// quotes without an author, as in a DM). None for an empty reference.
pub fn quote_context(reference: &str) -> Option<wa::ContextInfo> {
    let (head, text) = reference.split_once('\n').unwrap_or((reference, ""));
    let (id, author) = match head.split_once(':') {
        Some((id, author)) => (id, Some(author)),
        None => (reference, None),
    };
    if id.is_empty() {
        return None;
    }
    Some(wa::ContextInfo {
        stanza_id: Some(id.to_string()),
        participant: author.filter(|a| !a.is_empty()).map(str::to_string),
        // What the recipients' phones show in the quote (WA Web and Baileys repeat the quoted
        // message here; clients render this copy, not their own).
        quoted_message: MessageField::some(wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `msg` quoting the message `reference` names (a plain text becomes an extended text, as WA
/// Web sends a reply).
pub fn quoting(mut msg: wa::Message, reference: &str) -> wa::Message {
    if let Some(ctx) = quote_context(reference) {
        msg.set_context_info(ctx);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Own {
        Own {
            pn: Some("491700000001".into()),
            lid: Some("100000000000001".into()),
        }
    }

    fn with_ctx(text: &str, ctx: wa::ContextInfo) -> wa::Message {
        wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some(text.into()),
                context_info: MessageField::some(ctx),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sender() -> Jid {
        "491701111111:3@s.whatsapp.net".parse().unwrap()
    }

    #[test]
    fn a_mention_of_the_number_or_the_lid_addresses_us() {
        for me in [
            "491700000001@s.whatsapp.net",
            "100000000000001@lid",
            "491700000001:7@s.whatsapp.net",
        ] {
            let m = with_ctx(
                "@bot hi",
                wa::ContextInfo {
                    mentioned_jid: vec!["491702222222@s.whatsapp.net".into(), me.into()],
                    ..Default::default()
                },
            );
            assert!(
                read(&m, "Alice", "ID1", &sender(), &own()).mentions_me,
                "{me}"
            );
        }
        // Someone else, our number as a LID user (not our LID), and a mention in the text
        // alone are no mention of us.
        for other in [
            "491702222222@s.whatsapp.net",
            "491700000001@lid",
            "not a jid",
        ] {
            let m = with_ctx(
                "@491700000001",
                wa::ContextInfo {
                    mentioned_jid: vec![other.into()],
                    ..Default::default()
                },
            );
            assert!(
                !read(&m, "", "ID1", &sender(), &own()).mentions_me,
                "{other}"
            );
        }
        let plain = wa::Message {
            conversation: Some("@491700000001".into()),
            ..Default::default()
        };
        assert!(!read(&plain, "", "ID1", &sender(), &own()).mentions_me);
    }

    #[test]
    fn a_quote_is_read_bounded_and_knows_our_own_messages() {
        let long = "x".repeat(QUOTE_TEXT_MAX * 2);
        let m = with_ctx(
            "agreed",
            wa::ContextInfo {
                stanza_id: Some("3EB0AA".into()),
                participant: Some("100000000000001@lid".into()),
                quoted_message: MessageField::some(wa::Message {
                    conversation: Some(long),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let cues = read(&m, "  Bob  ", "ID2", &sender(), &own());
        let q = cues.quote.expect("a quote");
        assert_eq!(q.id, "3EB0AA");
        assert_eq!(q.author, "100000000000001@lid");
        assert!(q.to_me, "our LID wrote it");
        assert_eq!(q.text.chars().count(), QUOTE_TEXT_MAX);
        assert!(q.text.ends_with('…'));
        assert_eq!(cues.sender_name.as_deref(), Some("Bob"));
        assert_eq!(
            cues.reply_ref.as_deref(),
            Some("ID2:491701111111@s.whatsapp.net\nagreed"),
            "the id, the author and the text a reply quotes"
        );

        let theirs = with_ctx(
            "me too",
            wa::ContextInfo {
                stanza_id: Some("ABC".into()),
                participant: Some("491702222222@s.whatsapp.net".into()),
                quoted_message: MessageField::some(wa::Message {
                    image_message: MessageField::some(Default::default()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let q = read(&theirs, "", "ID3", &sender(), &own()).quote.unwrap();
        assert!(!q.to_me);
        assert_eq!(q.text, "[image]");
        assert_eq!(
            read(&theirs, "", "ID3", &sender(), &own()).sender_name,
            None
        );
    }

    #[test]
    fn a_reply_quotes_the_id_author_and_text_of_its_reference() {
        let r = reply_ref("ID9", &sender(), "what: do you think?\nsecond line");
        let msg = quoting(
            wa::Message {
                conversation: Some("answer".into()),
                ..Default::default()
            },
            &r,
        );
        assert!(msg.conversation.is_none(), "promoted to an extended text");
        let ext = msg.extended_text_message.as_option().unwrap();
        assert_eq!(ext.text.as_deref(), Some("answer"));
        let ctx = ext.context_info.as_option().unwrap();
        assert_eq!(ctx.stanza_id.as_deref(), Some("ID9"));
        assert_eq!(
            ctx.participant.as_deref(),
            Some("491701111111@s.whatsapp.net")
        );
        assert_eq!(
            ctx.quoted_message
                .as_option()
                .unwrap()
                .conversation
                .as_deref(),
            Some("what: do you think?\nsecond line"),
            "the quoted text travels with the quote"
        );
        // A bare id quotes without an author; nothing quotes nothing.
        let ctx = quote_context("ID8").unwrap();
        assert_eq!(ctx.stanza_id.as_deref(), Some("ID8"));
        assert_eq!(ctx.participant, None);
        assert!(quote_context("").is_none());
        let plain = quoting(
            wa::Message {
                conversation: Some("x".into()),
                ..Default::default()
            },
            "",
        );
        assert_eq!(plain.conversation.as_deref(), Some("x"));
    }
}
