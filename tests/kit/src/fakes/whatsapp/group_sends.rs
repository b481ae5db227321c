//! The linked account writing to a group, as the members' devices read it. The client's stanza
//! (whatsapp-rust `wacore::send::group::prepare_group_stanza`, whatsmeow `sendGroup`):
//! `<message to="<id>@g.us" type addressing_mode phash?>` with `<participants>` holding one
//! `<to jid="<member device>"><enc type="pkmsg|msg">` per device that has not had the account's
//! sender key yet (its SenderKeyDistributionMessage), then the content once as `<enc
//! type="skmsg">`. Each member device decrypts its pairwise copy, files the distribution
//! message, then decrypts the skmsg with the group cipher; the server acks the message and each
//! member's phone sends a delivery receipt (`<receipt from="<group>" participant=…>`).

use whatsapp_rust::wacore::libsignal::protocol::{
    SenderKeyDistributionMessage, group_decrypt, process_sender_key_distribution_message,
};
use whatsapp_rust::wacore::messages::decode_plaintext;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node};
use whatsapp_rust::waproto::whatsapp as wa;

use super::contacts::{self, PADDING_VERSION};
use super::groups::{GroupDelivery, Logged};
use super::nodes::{self, attr, child};
use super::server::*;

/// Sends by the linked account remembered per group (the oldest dropped beyond).
pub const GROUP_SENT_CAP: usize = 256;

impl World {
    /// A `<message to="…@g.us">` from the linked client.
    pub(super) async fn on_group_message(&mut self, node: &Node, now: u64) {
        let id = attr(node, "id").unwrap_or_default();
        let to = attr(node, "to").unwrap_or_default();
        if self.group_mut(&to).is_err() {
            tracing::warn!("fake-whatsapp: a message to an unknown group");
            if let Some(ack) = nodes::ack_for(node, now) {
                self.send(ack);
            }
            return;
        }
        let Some(sender) = self.companion_address() else {
            return;
        };
        // Pairwise copies: the sender key distribution for devices that lack it.
        let mut skdms: Vec<(String, u16, Vec<u8>)> = Vec::new();
        if let Some(parts) = child(node, "participants") {
            for t in nodes::children(parts, "to") {
                let Some(dest) = attr(t, "jid").and_then(|j| j.parse::<Jid>().ok()) else {
                    continue;
                };
                let Some(enc) = child(t, "enc") else { continue };
                let kind = attr(enc, "type").unwrap_or_default();
                let v = attr(enc, "v")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(PADDING_VERSION);
                let Some(ct) = nodes::bytes(enc).map(<[u8]>::to_vec) else {
                    continue;
                };
                match self.group_copy_decrypt(&dest, &sender, &kind, &ct, v).await {
                    Some(Ok((user, msg))) => {
                        if let Some(bytes) = msg
                            .sender_key_distribution_message
                            .as_option()
                            .and_then(|s| s.axolotl_sender_key_distribution_message.clone())
                        {
                            skdms.push((user, dest.device, bytes));
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("fake-whatsapp: a member device could not decrypt: {e}")
                    }
                    None => {}
                }
            }
        }
        let own_forms = (
            self.own_member_jid(super::groups::GroupAddressing::Pn),
            self.own_member_jid(super::groups::GroupAddressing::Lid),
        );
        let Ok(group) = self.group_mut(&to) else {
            return;
        };
        let name = group.box_key_name();
        for (user, device, bytes) in skdms {
            match SenderKeyDistributionMessage::try_from(bytes.as_slice()) {
                Ok(skdm) => {
                    let store = group.box_keys.entry((user, device)).or_default();
                    if let Err(e) =
                        process_sender_key_distribution_message(&name, &skdm, store).await
                    {
                        tracing::warn!("fake-whatsapp: sender key distribution refused: {e}");
                    }
                }
                Err(e) => tracing::warn!("fake-whatsapp: bad sender key distribution: {e}"),
            }
        }
        // The content, once, under the account's sender key: every member device that holds
        // the key decrypts it (a removed member keeps only the chain from before the client's
        // rotation).
        let mut delivery = GroupDelivery {
            id: id.clone(),
            ts: now,
            ..Default::default()
        };
        if let Some(enc) =
            nodes::children(node, "enc").find(|e| attr(e, "type").as_deref() == Some("skmsg"))
            && let Some(ct) = nodes::bytes(enc)
        {
            let v = attr(enc, "v")
                .and_then(|v| v.parse().ok())
                .unwrap_or(PADDING_VERSION);
            for ((user, device), store) in group.box_keys.iter_mut() {
                let read = match group_decrypt(ct, store, &name).await {
                    Ok(pt) => decode_plaintext(&pt, v).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match read {
                    Ok(msg) => {
                        let text = contacts::message_text(&msg).unwrap_or_default();
                        if delivery.read_by.is_empty() {
                            delivery.text = text.clone();
                            fill_context(&mut delivery, &msg);
                        }
                        delivery
                            .read_by
                            .entry(format!("+{user}"))
                            .or_default()
                            .insert(*device, text);
                    }
                    Err(e) => tracing::debug!(
                        "fake-whatsapp: member {user} device {device} cannot read the skmsg: {e}"
                    ),
                }
            }
        }
        let own = match group.addressing {
            super::groups::GroupAddressing::Pn => own_forms.0,
            super::groups::GroupAddressing::Lid => own_forms.1,
        };
        let members: Vec<String> = group.members.clone();
        let addressing = group.addressing;
        if !delivery.read_by.is_empty() {
            group.remember(Logged {
                id: id.clone(),
                participant: own,
                text: delivery.text.clone(),
            });
        }
        if group.sent.len() >= GROUP_SENT_CAP {
            group.sent.pop_front();
        }
        delivery.seq = group.sent_count;
        group.sent_count += 1;
        let readers: Vec<String> = delivery
            .read_by
            .keys()
            .map(|k| k.trim_start_matches('+').to_string())
            .collect();
        group.sent.push_back(delivery);
        if let Some(ack) = nodes::ack_for(node, now) {
            self.send(ack);
        }
        for user in members.iter().filter(|m| readers.contains(m)) {
            self.send(
                NodeBuilder::new("receipt")
                    .attr("from", to.clone())
                    .attr("participant", Self::member_jid(user, addressing))
                    .attr("id", id.clone())
                    .attr("t", now.to_string())
                    .build(),
            );
        }
    }

    /// One pairwise copy of a group send, decrypted by the device it names: a member's phone
    /// (its contact session), a member's linked device, or one of the account's own devices
    /// (read and dropped). Returns the member (digits) and the message; None for an own device
    /// or a device the fake does not know.
    async fn group_copy_decrypt(
        &mut self,
        dest: &Jid,
        sender: &whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress,
        kind: &str,
        ct: &[u8],
        v: u8,
    ) -> Option<Result<(String, wa::Message), String>> {
        if self.own_user(&dest.user) {
            if dest.device == 0 {
                let _ = contacts::decrypt(&mut self.phone, sender, kind, ct, v).await;
            } else if let Some(d) = self.linked_device_mut(dest) {
                let _ = contacts::decrypt(&mut d.peer, sender, kind, ct, v).await;
            }
            return None;
        }
        if dest.device == 0 {
            return self.contact_decrypt(dest, kind, ct, v).await;
        }
        let user = if dest.is_lid() {
            self.contact_by_lid(&dest.user)?
        } else {
            dest.user.to_string()
        };
        let pn_dest = Jid::pn_device(user.clone(), dest.device);
        let device = self.linked_device_mut(&pn_dest)?;
        Some(
            contacts::decrypt(&mut device.peer, sender, kind, ct, v)
                .await
                .map(|m| (user, m)),
        )
    }
}

/// The quote and mentions of a message the linked account sent (`extendedTextMessage
/// .contextInfo`).
fn fill_context(delivery: &mut GroupDelivery, msg: &wa::Message) {
    let ctx = msg
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option());
    if let Some(ctx) = ctx {
        delivery.quoted_id = ctx.stanza_id.clone();
        delivery.quoted_participant = ctx.participant.clone();
        delivery.quoted_text = ctx
            .quoted_message
            .as_option()
            .and_then(|q| q.conversation.clone());
        delivery.mentions = ctx.mentioned_jid.clone();
    }
}
