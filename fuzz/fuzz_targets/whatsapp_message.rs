//! Fuzz target `whatsapp_message`: an arbitrary decrypted WhatsApp message (the padded protobuf
//! plaintext, unpadded and decoded by the library exactly as it does after decryption) plus
//! arbitrary envelope addresses, through the WhatsApp adapter's `classify` (message → `Inbound`, or
//! why it is skipped). Owns nothing else.
//!
//! Input: a header of text lines, a NUL byte, then the padded plaintext. Header lines: chat JID,
//! sender JID, sender's alternate JID (empty: none), flags (`m` from me, `g` group envelope, `s`
//! self chat allowed, `e` the id is one we just sent, `3` padding version 3 instead of 2), message
//! id, timestamp (Unix seconds), the phone number behind a LID sender (empty: unknown), the
//! sender's push name (absent: none).
//!
//! Asserts: never panics; a submitted message carries the envelope's id, a sender, and exactly the
//! content `content()` reads from the message; the owner's messages to others are never submitted;
//! an echo of an id we sent is never submitted; status, broadcast lists and newsletters are never
//! submitted; the cues stay within their bounds (quote text, sender name) and a mention or a quote
//! "to me" names one of our own addresses; a decoded message survives a protobuf round trip.
#![no_main]

use clawbox::channel::whatsapp::adapter::{
    self, Classified, Own, Rules, SELF_SENDER, SentIds, Skip,
};
use clawbox::channel::whatsapp::context_info::{self, QUOTE_TEXT_MAX, SENDER_NAME_MAX};
use clawbox::vocab::ChannelKind;
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;
use whatsapp_rust::Jid;
use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::chrono::DateTime;
use whatsapp_rust::wacore::messages::decode_plaintext;
use whatsapp_rust::wacore::types::message::{MessageInfo, MessageSource};
use whatsapp_rust::wacore_binary::JidExt;

/// Our own numbers in every run.
const OWN_PN: &str = "491700000001";
const OWN_LID: &str = "100000000000001";

fuzz_target!(|data: &[u8]| {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (header, padded) = (&data[..nul], &data[nul + 1..]);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let mut lines = header.split('\n');
    let mut line = || lines.next().unwrap_or("");
    let (chat, sender, alt, flags, id, ts, lid_pn, push_name) = (
        line(),
        line(),
        line(),
        line(),
        line(),
        line(),
        line(),
        line(),
    );
    // Addresses the library could not parse never reach the adapter.
    let (Ok(chat), Ok(sender)) = (chat.parse::<Jid>(), sender.parse::<Jid>()) else {
        return;
    };
    let sender_alt = if alt.is_empty() {
        None
    } else {
        match alt.parse::<Jid>() {
            Ok(j) => Some(j),
            Err(_) => return,
        }
    };
    let Some(timestamp) = ts
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
    else {
        return;
    };
    let version = if flags.contains('3') { 3 } else { 2 };
    let Ok(msg) = decode_plaintext(padded, version) else {
        return;
    };

    // The decoded message survives the library's own protobuf round trip.
    let again = whatsapp_rust::waproto::whatsapp::Message::decode_from_slice(&msg.encode_to_vec())
        .expect("a decoded message re-encodes to something decodable");
    assert_eq!(again, msg, "protobuf round trip changed the message");

    let from_me = flags.contains('m');
    let info = MessageInfo {
        source: MessageSource {
            chat,
            sender,
            is_from_me: from_me,
            is_group: flags.contains('g'),
            sender_alt,
            ..Default::default()
        },
        id: id.into(),
        push_name: push_name.into(),
        timestamp,
        ..Default::default()
    };
    let own = Own {
        pn: Some(OWN_PN.into()),
        lid: Some(OWN_LID.into()),
    };
    let rules = Rules {
        self_chat: flags.contains('s'),
        self_prefix: "🤖 ".into(),
    };
    let now = Instant::now();
    let mut sent = SentIds::default();
    let echo = flags.contains('e');
    if echo {
        sent.remember(id, now);
    }
    // The sender's other address form as the identity lookup would give it (a number).
    let known = adapter::Known {
        pn: (!lid_pn.is_empty()).then(|| lid_pn.to_string()),
        lid: None,
    };
    let got = adapter::classify(&msg, &info, &own, &rules, &mut sent, &known, now);

    let c = &info.source.chat;
    let self_chat = from_me
        && !info.source.is_group
        && ((c.is_pn() && c.user == OWN_PN) || (c.is_lid() && c.user == OWN_LID));
    match got {
        Classified::Submit(m) => {
            assert_eq!(m.channel, ChannelKind::WhatsApp);
            assert_eq!(m.id, id);
            assert!(!m.sender.is_empty(), "a message without a sender");
            assert!(
                !from_me || self_chat,
                "the owner's message to someone else was submitted"
            );
            assert!(!(self_chat && echo), "our own sent message was submitted");
            assert!(!self_chat || m.sender == SELF_SENDER);
            assert_eq!(Some(&m.content), adapter::content(&msg).as_ref());
            assert_eq!(
                m.ts_ms,
                u64::try_from(timestamp.timestamp_millis()).unwrap_or(0)
            );
            let _ = m.content.render();
            assert!(
                !(c.is_status_broadcast() || c.is_broadcast_list() || c.is_newsletter()),
                "a status, broadcast or channel post was submitted"
            );
            let ours = |j: &str| {
                j.parse::<Jid>().is_ok_and(|j| {
                    (j.is_pn() && j.user == OWN_PN) || (j.is_lid() && j.user == OWN_LID)
                })
            };
            let ctx = context_info::of(&msg);
            if m.cues.mentions_me {
                assert!(ctx.is_some_and(|c| c.mentioned_jid.iter().any(|j| ours(j))));
            }
            if let Some(q) = &m.cues.quote {
                assert!(
                    q.text.chars().count() <= QUOTE_TEXT_MAX,
                    "an unbounded quote"
                );
                assert_eq!(q.to_me, ours(&q.author));
            }
            if let Some(n) = &m.cues.sender_name {
                assert!(!n.is_empty() && n.chars().count() <= SENDER_NAME_MAX);
            }
        }
        Classified::Skip(Skip::OwnOutgoing) => assert!(from_me),
        Classified::Skip(Skip::SelfChatOff) => assert!(self_chat && !rules.self_chat),
        Classified::Skip(Skip::SelfEcho) => assert!(self_chat),
        Classified::Skip(Skip::Unsupported) => assert!(adapter::content(&msg).is_none()),
        Classified::Skip(Skip::Status) => assert!(c.is_status_broadcast()),
        Classified::Skip(Skip::BroadcastList) => assert!(c.is_broadcast_list()),
        Classified::Skip(Skip::Newsletter) => assert!(c.is_newsletter()),
    }
    let out = adapter::message_id_for(id);
    assert!(out.len() == 20 && out.starts_with("3EB0"));
});
