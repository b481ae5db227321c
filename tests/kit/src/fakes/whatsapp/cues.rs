//! The fake server's record of conversation cues: the read receipts the linked device sent
//! (`<receipt type="read" to id [participant]><list><item id/>…</list></receipt>`, as
//! whatsapp-rust 0.7.0 `receipt.rs` `build_read_receipt_node` and whatsmeow `MarkRead` build
//! them; `read-self` when the account turned read receipts off), the reactions it sent that a
//! contact decrypted (`reactionMessage` with the target's key and the emoji, empty to take it
//! off: wacore `proto_helpers::build_reaction_message`), and a contact reacting to a message,
//! editing or deleting its own (whatsmeow `BuildEdit`, `BuildRevoke` shapes), Signal-encrypted
//! like any of its messages.

use super::retry::{Held, contact_stanza};
use super::server::{World, digits};
use super::{FakeWhatsApp, lid::Addressing, nodes::attr, phone};
use std::collections::VecDeque;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::waproto::whatsapp as wa;

/// Receipts and reactions kept (a test makes a handful); the oldest go first.
const CAP: usize = 1000;

/// A read receipt the linked device sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadReceipt {
    /// `read`, or `read-self` (read receipts turned off in the account's privacy settings).
    pub kind: String,
    /// The chat it names (`to`).
    pub to: String,
    /// In a group: the author of the messages.
    pub participant: Option<String>,
    /// Every message id it covers (`id` and the `<list>` items).
    pub ids: Vec<String>,
}

/// A reaction the linked device sent to a contact, as the contact decrypted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaction {
    /// The contact's number (digits).
    pub contact: String,
    /// The id of the message it is on.
    pub target_id: String,
    /// The emoji; empty: the reaction was taken off.
    pub emoji: String,
}

#[derive(Default)]
pub struct Cues {
    receipts: VecDeque<ReadReceipt>,
    reactions: VecDeque<Reaction>,
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() >= CAP {
        q.pop_front();
    }
    q.push_back(v);
}

impl Cues {
    /// Any `<receipt>` the client sent: the read ones are kept.
    pub(super) fn note_receipt(&mut self, node: &Node) {
        let kind = attr(node, "type").unwrap_or_default();
        if kind != "read" && kind != "read-self" {
            return;
        }
        let mut ids: Vec<String> = attr(node, "id").into_iter().collect();
        for list in node
            .children()
            .into_iter()
            .flatten()
            .filter(|c| c.tag == "list")
        {
            for item in list.children().into_iter().flatten() {
                ids.extend(attr(item, "id"));
            }
        }
        push(
            &mut self.receipts,
            ReadReceipt {
                kind,
                to: attr(node, "to").unwrap_or_default(),
                participant: attr(node, "participant"),
                ids,
            },
        );
    }

    /// A message contact `user` decrypted: a reaction is kept.
    pub(super) fn note_message(&mut self, user: &str, msg: &wa::Message) {
        let Some(r) = msg.reaction_message.as_option() else {
            return;
        };
        push(
            &mut self.reactions,
            Reaction {
                contact: user.to_string(),
                target_id: r
                    .key
                    .as_option()
                    .and_then(|k| k.id.clone())
                    .unwrap_or_default(),
                emoji: r.text.clone().unwrap_or_default(),
            },
        );
    }
}

impl World {
    /// Contact `e164` reacts with `emoji` to message `target_id` (one the linked account sent it):
    /// wacore `build_reaction_message`. Returns the reaction's own message id.
    pub async fn contact_react(
        &mut self,
        e164: &str,
        target_id: &str,
        emoji: &str,
        now: u64,
    ) -> Result<String, String> {
        let msg = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(self.key_of_ours(target_id)),
                text: Some(emoji.to_string()),
                sender_timestamp_ms: Some((now * 1000) as i64),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.contact_send_message(e164, msg, now).await
    }

    /// Contact `e164` edits its own message `target_id` to `text`, as whatsmeow `BuildEdit`
    /// builds it: `editedMessage { message { protocolMessage { type: MESSAGE_EDIT, key,
    /// editedMessage } } }`. Returns the edit's own message id.
    pub async fn contact_edit(
        &mut self,
        e164: &str,
        target_id: &str,
        text: &str,
        now: u64,
    ) -> Result<String, String> {
        let protocol = wa::message::ProtocolMessage {
            key: MessageField::some(self.key_of_theirs(target_id)),
            r#type: Some(wa::message::protocol_message::Type::MessageEdit),
            edited_message: MessageField::some(wa::Message {
                conversation: Some(text.to_string()),
                ..Default::default()
            }),
            timestamp_ms: Some((now * 1000) as i64),
            ..Default::default()
        };
        let msg = wa::Message {
            edited_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(wa::Message {
                    protocol_message: MessageField::some(protocol),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        self.contact_send_message(e164, msg, now).await
    }

    /// Contact `e164` deletes its own message `target_id` for everyone, as whatsmeow
    /// `BuildRevoke` builds it: `protocolMessage { type: REVOKE, key }`. Returns its id.
    pub async fn contact_revoke(
        &mut self,
        e164: &str,
        target_id: &str,
        now: u64,
    ) -> Result<String, String> {
        let msg = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: MessageField::some(self.key_of_theirs(target_id)),
                r#type: Some(wa::message::protocol_message::Type::Revoke),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.contact_send_message(e164, msg, now).await
    }

    /// The key of a message the linked account sent, as a contact names it.
    fn key_of_ours(&self, id: &str) -> wa::MessageKey {
        wa::MessageKey {
            remote_jid: Some(format!("{}@s.whatsapp.net", self.account.pn)),
            from_me: Some(false),
            id: Some(id.to_string()),
            participant: None,
        }
    }

    /// The key of the contact's own message, as the contact names it.
    fn key_of_theirs(&self, id: &str) -> wa::MessageKey {
        wa::MessageKey {
            remote_jid: Some(format!("{}@s.whatsapp.net", self.account.pn)),
            from_me: Some(true),
            id: Some(id.to_string()),
            participant: None,
        }
    }

    /// Contact `e164` sends `msg` from its number, Signal-encrypted like any of its messages
    /// (and kept for a retry receipt, like `contact_send_with`).
    async fn contact_send_message(
        &mut self,
        e164: &str,
        msg: wa::Message,
        now: u64,
    ) -> Result<String, String> {
        let user = digits(e164).ok_or("contact: not an E.164 number")?;
        if !self.client_keys.is_known() {
            return Err("contact: the linked device has not published keys".into());
        }
        let (kind, ct) = self.contact_encrypt(&user, &msg).await?;
        let id = phone::random_hex(10);
        self.retry.hold(Held {
            id: id.clone(),
            user: user.clone(),
            msg,
            t: now,
            media: None,
            addressing: Addressing::Pn,
            lid_session: true,
            resends: 0,
            always: false,
        });
        let stanza = contact_stanza(&user, Addressing::Pn, &id, now, None, (kind, ct), None);
        self.queue_or_send(stanza);
        Ok(id)
    }
}

impl FakeWhatsApp {
    /// Every read receipt the linked device sent, oldest first.
    pub async fn read_receipts(&self) -> Vec<ReadReceipt> {
        self.world
            .lock()
            .await
            .cues
            .receipts
            .iter()
            .cloned()
            .collect()
    }

    /// Every reaction the linked device sent to a contact, oldest first.
    pub async fn reactions(&self) -> Vec<Reaction> {
        self.world
            .lock()
            .await
            .cues
            .reactions
            .iter()
            .cloned()
            .collect()
    }

    /// Contact `e164` reacts with `emoji` to message `target_id`; returns the reaction's id.
    pub async fn contact_react(
        &self,
        e164: &str,
        target_id: &str,
        emoji: &str,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_react(e164, target_id, emoji, super::now_secs())
            .await
    }

    /// Contact `e164` edits its message `target_id` to `text`; returns the edit's id.
    pub async fn contact_edit(
        &self,
        e164: &str,
        target_id: &str,
        text: &str,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_edit(e164, target_id, text, super::now_secs())
            .await
    }

    /// Contact `e164` deletes its message `target_id` for everyone; returns the revoke's id.
    pub async fn contact_revoke(&self, e164: &str, target_id: &str) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_revoke(e164, target_id, super::now_secs())
            .await
    }
}
