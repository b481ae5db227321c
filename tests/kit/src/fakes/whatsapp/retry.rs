//! Retries, refusals and key events, as the real server and peers stage them: a contact's resend
//! of any message it sent when the linked device asks with a retry receipt (in the message's
//! addressing form, under the Signal address its session is kept under), a contact's message
//! that the linked device cannot decrypt, a contact asking the device to resend (a retry receipt
//! from the contact), the server refusing the device's next message with an error ack (a nack),
//! the server saying the device's one-time prekeys run low, and a contact reinstalling WhatsApp
//! (a new identity).
//!
//! Stanzas as the open clients send and parse them:
//! - retry receipt: whatsmeow `retry.go` (`sendRetryReceipt`, `handleRetryReceipt`),
//!   whatsapp-rust 0.7.0 `src/retry.rs` (`send_retry_receipt`, `handle_retry_receipt`,
//!   `resolve_retry_chat_info`) and wacore `protocol/retry.rs` (`build_retry_keys_node`):
//!   `<receipt type="retry" id><retry count id t v="1"/><registration>u32 BE</registration>
//!   [<keys><type/><identity/><key><id/><value/></key><skey><id/><value/><signature/></skey>
//!   <device-identity/></keys>]</receipt>`; the resend carries the same id and `<enc count=N>`.
//! - nack: the server's `<ack class="message" id from t error="N"/>` to a sent message — Baileys 7
//!   `messages-recv.ts` (`handleBadAck` reads `attrs.error`), whatsapp-rust 0.7.0
//!   `client/node_io.rs` (`take_ack_waiter` → `Event::ServerAck { error }`).
//! - prekeys low: `<notification from="s.whatsapp.net" type="encrypt"><count value=N/>` —
//!   whatsmeow `notification.go` (`handleEncryptNotification`), whatsapp-rust 0.7.0
//!   `handlers/notification/device.rs` (`handle_encrypt_notification` → `handle_prekey_low`).
//! - identity change: `<notification from="<user>@s.whatsapp.net" type="encrypt"><identity/>` —
//!   the same two handlers (`handle_identity_change`).
//!
//! Owns the pending faults, the messages held for a resend, and the counters tests read. No
//! sockets, no clock.

use std::collections::VecDeque;

use serde::Serialize;
use whatsapp_rust::wacore::libsignal::protocol::{
    DeviceId, IdentityKey, PreKeyBundle, PreKeySignalMessage, PublicKey, SignalMessage,
    SignedPreKeyId, UsePQRatchet, process_prekey_bundle,
};
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node};
use whatsapp_rust::waproto::whatsapp as wa;

use super::contacts::{self, Contact, PADDING_VERSION};
use super::lid::{self, Addressing};
use super::nodes::{self, SERVER, attr, child, child_bytes};
use super::phone;
use super::server::*;

/// Contact messages held for a resend (every message a contact sent, as a real peer keeps what it
/// sent to answer a retry receipt), and ids the fake asked the linked device to resend; the oldest
/// is forgotten beyond this. whatsmeow's `recentMessagesSize` ring (and whatsapp-rust's
/// `RECENT_MESSAGES_SIZE`) keeps 256 sent messages for the same purpose; a soak run stays well
/// inside it between a message and its retry receipt.
pub const HELD_CAP: usize = 256;
/// The resend counts the client may ask for per message (whatsapp-rust and WA Web stop at 5).
const MAX_RESENDS: u8 = 5;

/// What the retry faults count, served by `GET /retries`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RetryStats {
    /// Retry receipts the linked device sent for a contact's message.
    pub retry_receipts: u64,
    /// Contact messages resent after such a receipt.
    pub contact_resends: u64,
    /// Retry receipts a contact sent to the linked device (the `retry-receipt` fault).
    pub asked_resends: u64,
    /// Messages the linked device re-encrypted and resent after a contact's retry receipt.
    pub client_resends: u64,
    /// Error acks the server sent (the `nack` fault).
    pub nacks: u64,
    /// Prekey uploads the linked device made (`iq xmlns=encrypt` with `<list>`), login ones too.
    pub prekey_uploads: u64,
    /// `encrypt` notifications sent: prekeys low, identity changes.
    pub encrypt_notifications: u64,
    /// Key bundle requests refused (the `no-bundle` fault).
    pub refused_bundles: u64,
    /// Messages to a contact that carried no copy for any of the contact's devices (only the
    /// account's own devices'): whatsapp-rust #1298, a send that reaches nobody.
    pub unreached_sends: u64,
}

/// A contact message kept to be encrypted again on request.
pub(super) struct Held {
    pub id: String,
    /// The contact's number (digits).
    pub user: String,
    pub msg: wa::Message,
    pub t: u64,
    pub media: Option<String>,
    /// The form it was addressed in; a resend keeps it (same `from`, same `sender_pn` and
    /// `addressing_mode`).
    pub addressing: Addressing,
    /// The contact's session with the companion is under the companion's LID address (what
    /// `lid::contact_encrypt` uses), not its PN one (what the undecryptable copies use).
    pub lid_session: bool,
    pub resends: u8,
    /// Every resend is damaged too: the message never decrypts.
    pub always: bool,
}

/// The retry faults' state inside [`World`].
#[derive(Default)]
pub struct Retries {
    /// The server refuses the linked device's next messages to contacts with this code, this
    /// many more times.
    nack: Option<(u16, u32)>,
    /// The contact the linked device writes next answers with a retry receipt.
    ask_resend: bool,
    /// The server refuses this contact's key bundle this many more times.
    refuse_bundles: Option<(String, u32)>,
    /// Every contact message sent to the client, kept for a resend (oldest first).
    held: VecDeque<Held>,
    /// Ids the fake asked the client to resend (the `retry-receipt` fault), bounded like `held`.
    asked: VecDeque<String>,
    pub stats: RetryStats,
}

impl Retries {
    /// Keeps a contact's message for a resend, forgetting the oldest beyond [`HELD_CAP`].
    pub(super) fn hold(&mut self, held: Held) {
        if self.held.len() >= HELD_CAP {
            self.held.pop_front();
        }
        self.held.push_back(held);
    }

    /// One more prekey upload seen (called by the key service).
    pub fn prekeys_uploaded(&mut self) {
        self.stats.prekey_uploads += 1;
    }
}

/// `ct` with its Signal MAC broken: the client's decryption fails (bad MAC) and its session is
/// left as it was, as when a copy is damaged or encrypted under a session the device lost.
fn corrupt(kind: &str, ct: &[u8]) -> Result<Vec<u8>, String> {
    let flip = |b: &[u8]| {
        let mut v = b.to_vec();
        if let Some(last) = v.last_mut() {
            *last ^= 0xff;
        }
        v
    };
    match kind {
        "msg" => Ok(flip(ct)),
        "pkmsg" => {
            let m = PreKeySignalMessage::try_from(ct).map_err(|e| format!("pkmsg: {e}"))?;
            let inner = SignalMessage::try_from(flip(m.message().serialized()).as_slice())
                .map_err(|e| format!("pkmsg inner: {e}"))?;
            let broken = PreKeySignalMessage::new(
                m.message_version(),
                m.registration_id(),
                m.pre_key_id(),
                m.signed_pre_key_id(),
                *m.base_key(),
                *m.identity_key(),
                inner,
            )
            .map_err(|e| format!("pkmsg rebuild: {e}"))?;
            Ok(broken.serialized().to_vec())
        }
        other => Err(format!("unsupported enc type {other}")),
    }
}

/// The bundle a retry receipt's `<keys>` carries for device `device` of the requester.
fn bundle_from_keys(receipt: &Node, device: u16) -> Result<PreKeyBundle, String> {
    let keys = child(receipt, "keys").ok_or("no keys")?;
    let registration = child_bytes(receipt, "registration")
        .map(nodes::be_uint)
        .ok_or("retry receipt without registration")?;
    let key = |b: Option<&[u8]>, what: &str| {
        PublicKey::from_djb_public_key_bytes(b.ok_or(format!("keys without {what}"))?)
            .map_err(|e| format!("{what}: {e}"))
    };
    let identity = key(child_bytes(keys, "identity"), "identity")?;
    let one_time = match child(keys, "key") {
        Some(k) => Some((
            child_bytes(k, "id").map(nodes::be_uint).unwrap_or(0).into(),
            key(child_bytes(k, "value"), "key value")?,
        )),
        None => None,
    };
    let skey = child(keys, "skey").ok_or("keys without skey")?;
    PreKeyBundle::new(
        registration,
        DeviceId::from(u32::from(device)),
        one_time,
        SignedPreKeyId::from(child_bytes(skey, "id").map(nodes::be_uint).unwrap_or(0)),
        key(child_bytes(skey, "value"), "skey value")?,
        child_bytes(skey, "signature").unwrap_or_default().to_vec(),
        IdentityKey::new(identity),
    )
    .map_err(|e| format!("retry bundle: {e}"))
}

/// A contact's `<message>` to the linked device, addressed as `addressing` (see [`super::lid`]);
/// `count` marks a resend (whatsmeow sets `enc count` on retries).
pub(super) fn contact_stanza(
    user: &str,
    addressing: Addressing,
    id: &str,
    t: u64,
    media: Option<&str>,
    (kind, ct): (&str, Vec<u8>),
    count: Option<u8>,
) -> Node {
    let mut enc = NodeBuilder::new("enc")
        .attr("v", PADDING_VERSION.to_string())
        .attr("type", kind);
    if let Some(m) = media {
        enc = enc.attr("mediatype", m);
    }
    if let Some(c) = count {
        enc = enc.attr("count", c.to_string());
    }
    let (from, sender_pn) = World::contact_from(user, addressing);
    let mut stanza = NodeBuilder::new("message")
        .attr("from", from)
        .attr("id", id.to_string())
        .attr("t", t.to_string())
        .attr("type", if media.is_some() { "media" } else { "text" })
        .attr(
            "notify",
            format!("Contact {}", &user[user.len().saturating_sub(4)..]),
        );
    if let Some(pn) = sender_pn {
        stanza = stanza.attr("sender_pn", pn);
    }
    if addressing != Addressing::Pn {
        // whatsmeow's `parseMessageSource` has read `sender_pn` when this says "lid".
        stanza = stanza.attr("addressing_mode", "lid");
    }
    stanza.children([enc.bytes(ct).build()]).build()
}

impl World {
    /// Contact `e164` sends a message whose first copy the linked device cannot decrypt; the
    /// contact resends it (same id) when the device asks with a retry receipt — damaged again
    /// each time when `always`. Returns the id.
    pub async fn contact_send_undecryptable(
        &mut self,
        e164: &str,
        text: &str,
        (media, caption): (Option<&str>, Option<&str>),
        always: bool,
        now: u64,
    ) -> Result<String, String> {
        let user = digits(e164).ok_or("contact: not an E.164 number")?;
        let remote = self
            .companion_address()
            .ok_or("contact: no linked device")?;
        let device = self.companion.as_ref().map(|c| c.device).unwrap_or(0);
        if !self.client_keys.is_known() {
            return Err("contact: the linked device has not published keys".into());
        }
        let msg = contacts::build_message(text, media, caption);
        if !self.contacts.contains_key(&user) && self.contacts.len() >= CONTACTS_CAP {
            return Err("contact: too many contacts".into());
        }
        let contact = self
            .contacts
            .entry(user.clone())
            .or_insert_with(Contact::new);
        let keys = &mut self.client_keys;
        let (kind, ct) = contacts::encrypt(
            &mut contact.peer,
            &remote,
            || keys.take_bundle(device),
            &msg,
        )
        .await?;
        let broken = corrupt(kind, &ct)?;
        let id = phone::random_hex(10);
        self.retry.hold(Held {
            id: id.clone(),
            user: user.clone(),
            msg,
            t: now,
            media: media.map(str::to_string),
            addressing: Addressing::Pn,
            lid_session: false,
            resends: 0,
            always,
        });
        let stanza = contact_stanza(&user, Addressing::Pn, &id, now, media, (kind, broken), None);
        self.queue_or_send(stanza);
        Ok(id)
    }

    /// The admin API's `POST /faults` with this module's kinds (`retry-receipt`, `nack`,
    /// `prekeys-low`, `identity-change`, `no-bundle`) and `lid-unknown` (`lid.rs`); any other kind goes to [`World::fault`]. `nack` refuses
    /// the next `count` messages (1 if not given) to contacts with `code`.
    pub fn fault_with(
        &mut self,
        kind: &str,
        code: Option<u16>,
        count: Option<u32>,
        contact: Option<&str>,
    ) -> Result<(), String> {
        match kind {
            "retry-receipt" => {
                self.retry.ask_resend = true;
                Ok(())
            }
            "nack" => {
                let code = code.ok_or("nack: a code is required")?;
                self.retry.nack = Some((code, count.unwrap_or(1))).filter(|(_, n)| *n > 0);
                Ok(())
            }
            "prekeys-low" => {
                let left = count.unwrap_or(0) as usize;
                // The server's pool really is that low: it hands out what is left.
                while self.client_keys.prekeys.len() > left {
                    self.client_keys.prekeys.pop_front();
                }
                self.retry.stats.encrypt_notifications += 1;
                let node = NodeBuilder::new("notification")
                    .attr("from", SERVER)
                    .attr("type", "encrypt")
                    .attr("id", phone::random_hex(8))
                    .attr("t", now_secs().to_string())
                    .children([NodeBuilder::new("count")
                        .attr("value", left.to_string())
                        .build()])
                    .build();
                self.queue_or_send(node);
                Ok(())
            }
            // The server has no key bundle for the contact's devices (a stale device list, a
            // device gone): `<user jid><error code="406" text="not-acceptable"/></user>` in the
            // `encrypt` key fetch, the per-user error whatsapp-rust's prekey parser reads.
            "no-bundle" => {
                let who = contact.ok_or("no-bundle: a contact is required")?;
                let user = digits(who).ok_or("no-bundle: not an E.164 number")?;
                self.retry.refuse_bundles =
                    Some((user, count.unwrap_or(1))).filter(|(_, n)| *n > 0);
                Ok(())
            }
            "lid-unknown" => {
                self.withhold_lid(contact.ok_or("lid-unknown: a contact is required")?)
            }
            "identity-change" => {
                let who = contact.ok_or("identity-change: a contact is required")?;
                let user = digits(who).ok_or("identity-change: not an E.164 number")?;
                let c = self
                    .contacts
                    .get_mut(&user)
                    .ok_or("identity-change: unknown contact")?;
                // A reinstall: new identity, new prekeys, no sessions; the chat history stays.
                c.peer = Contact::new().peer;
                self.retry.stats.encrypt_notifications += 1;
                let node = NodeBuilder::new("notification")
                    .attr("from", format!("{user}@{SERVER}"))
                    .attr("type", "encrypt")
                    .attr("id", phone::random_hex(8))
                    .attr("t", now_secs().to_string())
                    .children([NodeBuilder::new("identity").build()])
                    .build();
                self.queue_or_send(node);
                Ok(())
            }
            _ => self.fault(kind, code),
        }
    }

    /// True when the key bundle of `jid` is to be refused (the `no-bundle` fault), counted.
    pub(super) fn refuse_bundle(&mut self, jid: &Jid) -> bool {
        let Some((user, left)) = self.retry.refuse_bundles.take() else {
            return false;
        };
        // The contact's bundle, fetched by number or by LID (the client fetches by LID once it
        // knows the mapping: whatsapp-rust's `resolve_encryption_jid`).
        let same = if jid.is_lid() {
            jid.user == lid::contact_lid(&user)
        } else {
            jid.user == user
        };
        if !same {
            self.retry.refuse_bundles = Some((user, left));
            return false;
        }
        self.retry.refuse_bundles = Some((user, left - 1)).filter(|(_, n)| *n > 0);
        self.retry.stats.refused_bundles += 1;
        true
    }

    pub fn retry_stats(&self) -> RetryStats {
        self.retry.stats
    }

    /// A message the client sent, before it is delivered: the server may refuse it (a pending
    /// nack) or its contact may ask for it again (a pending retry receipt). True when handled
    /// here (the message is not delivered).
    pub(super) fn intercept_send(&mut self, node: &Node, now: u64) -> bool {
        let id = attr(node, "id").unwrap_or_default();
        let to = attr(node, "to").unwrap_or_default();
        let Some(user) = to.parse::<Jid>().ok().and_then(|j| {
            let own = j.user == self.account.pn || j.user == self.account.lid;
            (!own && j.is_pn()).then(|| j.user.to_string())
        }) else {
            return false;
        };
        let resend = enc_count(node).is_some();
        let for_contact = child(node, "enc").is_some()
            || child(node, "participants").is_some_and(|p| {
                nodes::children(p, "to")
                    .filter_map(|t| attr(t, "jid"))
                    .any(|j| j.parse::<Jid>().is_ok_and(|j| j.user == user))
            });
        if !for_contact {
            self.retry.stats.unreached_sends += 1;
        }
        if resend && self.retry.asked.contains(&id) {
            self.retry.stats.client_resends += 1;
        }
        if let Some((code, left)) = self.retry.nack.take() {
            self.retry.nack = Some((code, left - 1)).filter(|(_, n)| *n > 0);
            self.retry.stats.nacks += 1;
            self.send(
                NodeBuilder::new("ack")
                    .attr("class", "message")
                    .attr("id", id)
                    .attr("from", to)
                    .attr("t", now.to_string())
                    .attr("error", code.to_string())
                    .build(),
            );
            return true;
        }
        if self.retry.ask_resend && !resend {
            let Some(regid) = self.contacts.get(&user).map(|c| c.peer.registration_id()) else {
                return false;
            };
            self.retry.ask_resend = false;
            self.retry.stats.asked_resends += 1;
            if self.retry.asked.len() >= HELD_CAP {
                self.retry.asked.pop_front();
            }
            self.retry.asked.push_back(id.clone());
            if let Some(ack) = nodes::ack_for(node, now) {
                self.send(ack);
            }
            let t = attr(node, "t").unwrap_or_else(|| now.to_string());
            self.send(
                NodeBuilder::new("receipt")
                    .attr("from", format!("{user}@{SERVER}"))
                    .attr("id", id.clone())
                    .attr("type", "retry")
                    .attr("t", now.to_string())
                    .children([
                        NodeBuilder::new("retry")
                            .attr("count", "1")
                            .attr("id", id)
                            .attr("t", t)
                            .attr("v", "1")
                            .build(),
                        NodeBuilder::new("registration")
                            .bytes(regid.to_be_bytes().to_vec())
                            .build(),
                    ])
                    .build(),
            );
            return true;
        }
        false
    }

    /// The client's retry receipt for a contact's message: the contact encrypts it again (from
    /// the keys in the receipt when it carries them, as whatsmeow's `handleRetryReceipt` does)
    /// under the Signal address its session with the companion is kept under, and resends it
    /// with the same id in the same addressing form, at most [`MAX_RESENDS`] times. The receipt
    /// goes `to` the sender as the client saw it (whatsapp-rust `send_retry_receipt`:
    /// `info.source.sender`, the LID for a LID-addressed message), so it must name the contact
    /// that sent the message, by number or by LID.
    pub(super) async fn on_retry_receipt(&mut self, node: &Node) {
        let id = attr(node, "id").unwrap_or_default();
        self.retry.stats.retry_receipts += 1;
        let count: u8 = child(node, "retry")
            .and_then(|r| attr(r, "count"))
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let Some(pos) = self.retry.held.iter().position(|h| h.id == id) else {
            tracing::debug!("fake-whatsapp: retry receipt for a message the fake does not hold");
            return;
        };
        let user = self.retry.held[pos].user.clone();
        let to = attr(node, "to").and_then(|t| t.parse::<Jid>().ok());
        let names_sender = to.is_some_and(|j| {
            if j.is_lid() {
                j.user == lid::contact_lid(&user)
            } else {
                j.user == user
            }
        });
        if !names_sender {
            tracing::debug!("fake-whatsapp: retry receipt not addressed to the message's sender");
            return;
        }
        if self.retry.held[pos].resends >= MAX_RESENDS {
            tracing::debug!("fake-whatsapp: retry receipt beyond the contact's resends");
            return;
        }
        let remote = if self.retry.held[pos].lid_session {
            self.companion_lid_address()
        } else {
            self.companion_address()
        };
        let Some(remote) = remote else {
            return;
        };
        let device = self.companion.as_ref().map(|c| c.device).unwrap_or(0);
        let bundle = child(node, "keys").map(|_| bundle_from_keys(node, device));
        let Some(contact) = self.contacts.get_mut(&user) else {
            return;
        };
        if let Some(bundle) = bundle {
            let mut rng: rand::rngs::StdRng = rand::make_rng();
            let built = match bundle {
                Ok(b) => process_prekey_bundle(
                    &remote,
                    &mut contact.peer.sessions,
                    &mut contact.peer.identity,
                    &b,
                    &mut rng,
                    UsePQRatchet::No,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = built {
                tracing::warn!("fake-whatsapp: retry receipt keys unusable: {e}");
                return;
            }
        }
        let held = &mut self.retry.held[pos];
        held.resends += 1;
        let keys = &mut self.client_keys;
        let sealed = contacts::encrypt(
            &mut contact.peer,
            &remote,
            || keys.take_bundle(device),
            &held.msg,
        )
        .await;
        let always = held.always;
        let sealed =
            sealed.and_then(|(kind, ct)| Ok((kind, if always { corrupt(kind, &ct)? } else { ct })));
        match sealed {
            Ok(enc) => {
                let stanza = contact_stanza(
                    &user,
                    held.addressing,
                    &id,
                    held.t,
                    held.media.as_deref(),
                    enc,
                    Some(count),
                );
                self.retry.stats.contact_resends += 1;
                self.queue_or_send(stanza);
            }
            Err(e) => tracing::warn!("fake-whatsapp: contact could not re-encrypt: {e}"),
        }
    }
}

/// The `count` on a message's `<enc>` (set on a resend), directly or in `<participants>`.
fn enc_count(node: &Node) -> Option<String> {
    child(node, "enc")
        .and_then(|e| attr(e, "count"))
        .or_else(|| {
            child(node, "participants").and_then(|p| {
                nodes::children(p, "to")
                    .filter_map(|t| child(t, "enc"))
                    .find_map(|e| attr(e, "count"))
            })
        })
}
