//! Messages between the mock people and the linked device: a contact or the owner's phone writing
//! to it (Signal-encrypted as the real peer would), and what the linked device sends back,
//! decrypted by each addressee, acknowledged and receipted.

use super::contacts::{self, Contact, InboxEntry, PADDING_VERSION};
use super::lid::Addressing;
use super::nodes::{self, SERVER, attr, child};
use super::phone;
use super::retry::{Held, contact_stanza};
use super::server::*;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node};

impl World {
    /// Contact `e164` sends a message to the linked account; returns its id.
    pub async fn contact_send(
        &mut self,
        e164: &str,
        text: &str,
        media: Option<&str>,
        caption: Option<&str>,
        now: u64,
    ) -> Result<String, String> {
        self.contact_send_with(e164, text, media, caption, Addressing::Pn, now)
            .await
    }

    /// Contact `e164` sends a message addressed as `addressing` (see [`super::lid`]); returns
    /// its id.
    pub async fn contact_send_with(
        &mut self,
        e164: &str,
        text: &str,
        media: Option<&str>,
        caption: Option<&str>,
        addressing: Addressing,
        now: u64,
    ) -> Result<String, String> {
        let user = digits(e164).ok_or("contact: not an E.164 number")?;
        if !matches!(
            media,
            None | Some("image" | "video" | "audio" | "document" | "sticker")
        ) {
            return Err("contact: media must be image, video, audio, document or sticker".into());
        }
        if !self.client_keys.is_known() {
            return Err("contact: the linked device has not published keys".into());
        }
        let msg = contacts::build_message(text, media, caption);
        let (kind, ct) = self.contact_encrypt(&user, &msg).await?;
        let id = phone::random_hex(10);
        // Kept to answer the client's retry receipt with a resend (`retry.rs`).
        self.retry.hold(Held {
            id: id.clone(),
            user: user.clone(),
            msg,
            t: now,
            media: media.map(str::to_string),
            addressing,
            lid_session: true,
            resends: 0,
            always: false,
        });
        let stanza = contact_stanza(&user, addressing, &id, now, media, (kind, ct), None);
        self.queue_or_send(stanza);
        Ok(id)
    }

    /// The owner writes `text` in "message yourself" on the primary phone (device 0). The linked
    /// device gets the phone's copy the way WhatsApp hands a companion any message sent from
    /// another of the account's devices: `from` the account's own JID (device 0), `recipient` the
    /// chat it was sent to (the account itself, PN form), the content wrapped in a
    /// `deviceSentMessage` naming that destination, Signal-encrypted by the phone to the companion
    /// (`pkmsg` until the phone has a session with it). Returns the message id.
    pub async fn phone_self_send(&mut self, text: &str, now: u64) -> Result<String, String> {
        let remote = self.companion_address().ok_or("phone: no linked device")?;
        let device = self.companion.as_ref().map(|c| c.device).unwrap_or(0);
        if !self.client_keys.is_known() {
            return Err("phone: the linked device has not published keys".into());
        }
        let own_chat = format!("{}@{SERVER}", self.account.pn);
        let msg = phone::device_sent(&own_chat, text);
        let keys = &mut self.client_keys;
        let (kind, ct) =
            contacts::encrypt(&mut self.phone, &remote, || keys.take_bundle(device), &msg).await?;
        let id = phone::random_hex(16);
        let stanza = NodeBuilder::new("message")
            .attr("from", own_chat.clone())
            .attr("recipient", own_chat)
            .attr("id", id.clone())
            .attr("t", now.to_string())
            .attr("type", "text")
            .children([NodeBuilder::new("enc")
                .attr("v", PADDING_VERSION.to_string())
                .attr("type", kind)
                .bytes(ct)
                .build()])
            .build();
        self.queue_or_send(stanza);
        Ok(id)
    }

    /// What the linked device sent into the self chat, as the phone read it.
    pub fn self_messages(&self) -> Vec<InboxEntry> {
        self.self_inbox.iter().cloned().collect()
    }

    /// The contact for `user` (digits), created on first use within `CONTACTS_CAP`.
    pub fn contact_mut(&mut self, user: &str) -> Option<&mut Contact> {
        let user = digits(user)?;
        if !self.contacts.contains_key(&user) && self.contacts.len() >= CONTACTS_CAP {
            return None;
        }
        Some(self.contacts.entry(user).or_insert_with(Contact::new))
    }

    pub fn inbox(&self, e164: &str) -> Vec<InboxEntry> {
        digits(e164)
            .and_then(|u| self.contacts.get(&u))
            .map(|c| c.inbox.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A message the client sent: decrypt each copy addressed to a mock peer, ack, deliver.
    pub(super) async fn on_message(&mut self, node: &Node, now: u64) {
        if self.intercept_send(node, now) {
            return;
        }
        if attr(node, "to").is_some_and(|to| to.ends_with("@g.us")) {
            self.on_group_message(node, now).await;
            return;
        }
        let id = attr(node, "id").unwrap_or_default();
        let to = attr(node, "to").unwrap_or_default();
        let mut copies: Vec<(String, String, Vec<u8>, u8)> = Vec::new();
        let enc_of = |n: &Node| {
            let kind = attr(n, "type").unwrap_or_default();
            let v = attr(n, "v")
                .and_then(|v| v.parse().ok())
                .unwrap_or(PADDING_VERSION);
            nodes::bytes(n).map(|b| (kind, b.to_vec(), v))
        };
        if let Some(parts) = child(node, "participants") {
            for t in nodes::children(parts, "to") {
                if let (Some(jid), Some((kind, ct, v))) =
                    (attr(t, "jid"), child(t, "enc").and_then(enc_of))
                {
                    copies.push((jid, kind, ct, v));
                }
            }
        } else if let Some((kind, ct, v)) = child(node, "enc").and_then(enc_of) {
            copies.push((to.clone(), kind, ct, v));
        }
        let Some(sender) = self.companion_address() else {
            return;
        };
        // Sent into the account's own chat ("message yourself"), PN or LID addressed.
        let to_self = to
            .parse::<Jid>()
            .is_ok_and(|j| j.user == self.account.pn || j.user == self.account.lid);
        let mut delivered_to = None;
        for (jid, kind, ct, v) in copies {
            let Ok(dest) = jid.parse::<Jid>() else {
                continue;
            };
            let own = dest.user == self.account.pn || dest.user == self.account.lid;
            if dest.device != 0
                && self
                    .linked_device_copy(&dest, &sender, &id, (&kind, &ct, v))
                    .await
            {
                // A contact's linked device, or the owner's other one (`devices.rs`).
                continue;
            }
            if dest.device != 0 && !own {
                tracing::warn!("fake-whatsapp: a copy for a device the contact does not have");
                self.devices.reports.note_stale(&id, dest.device);
                continue;
            }
            if own && dest.device == 0 {
                match contacts::decrypt(&mut self.phone, &sender, &kind, &ct, v).await {
                    Ok(msg) if to_self => {
                        if let Some(text) = contacts::message_text(&msg) {
                            self.devices.reports.note_own(&id, 0, text.clone());
                            if self.self_inbox.len() >= contacts::INBOX_CAP {
                                self.self_inbox.pop_front();
                            }
                            self.self_delivered += 1;
                            self.self_inbox.push_back(InboxEntry {
                                seq: self.self_delivered - 1,
                                id: id.clone(),
                                text,
                                ts: now,
                                to: to.clone(),
                            });
                        }
                    }
                    Ok(msg) => {
                        // The phone's copy of a message to someone else (`deviceSentMessage`).
                        let text = contacts::message_text(&msg).unwrap_or_default();
                        self.devices.reports.note_own(&id, 0, text);
                    }
                    Err(e) => tracing::debug!("fake-whatsapp: phone could not read its copy: {e}"),
                }
                continue;
            }
            // A contact's device, addressed by its number or its LID (see `lid`).
            match self.contact_decrypt(&dest, &kind, &ct, v).await {
                Some(Ok((user, msg))) => {
                    self.cues.note_message(&user, &msg);
                    if let (Some(text), Some(contact)) =
                        (contacts::message_text(&msg), self.contacts.get_mut(&user))
                    {
                        self.devices.reports.note(&id, 0, text.clone());
                        contact.record(InboxEntry {
                            seq: 0,
                            id: id.clone(),
                            text,
                            ts: now,
                            to: to.clone(),
                        });
                    }
                    delivered_to = Some(to.clone());
                }
                Some(Err(e)) => tracing::warn!("fake-whatsapp: contact could not decrypt: {e}"),
                None => {}
            }
        }
        if let Some(mut ack) = nodes::ack_for(node, now) {
            // The true device set's hash: a stale list on the client's side shows (devices.rs).
            if let Some(phash) = self.dm_phash(&to) {
                ack.attrs.insert("phash", phash);
            }
            self.send(ack);
        }
        // The delivery receipt comes from the chat the message was sent to (PN or LID form).
        if let Some(chat) = delivered_to {
            self.send(
                NodeBuilder::new("receipt")
                    .attr("from", chat)
                    .attr("id", id)
                    .attr("t", now.to_string())
                    .build(),
            );
        }
    }
}
