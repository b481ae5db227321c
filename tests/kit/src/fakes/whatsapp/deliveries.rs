//! Who read what, and the owner writing from the account's own devices: which device (a
//! contact's, or the account's own) decrypted each copy of a message the linked client sent —
//! `GET /contacts/<e164>/messages` reports it per message — and the owner writing in "message
//! yourself" from the phone or another of the account's linked devices, in phone-number or LID
//! form (`POST /phone/self`). The devices themselves are `devices.rs`.

use std::collections::{BTreeMap, VecDeque};

use whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress;
use whatsapp_rust::wacore_binary::Jid;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use super::contacts::{self, InboxEntry, PADDING_VERSION};
use super::lid::Addressing;
use super::nodes::SERVER;
use super::phone;
use super::server::*;

/// Messages whose per-device delivery is remembered (the oldest forgotten beyond): as many as the
/// contact inboxes keep.
pub const REPORTS_CAP: usize = 4 * contacts::INBOX_CAP;
/// Which devices decrypted one message the linked client sent: the addressee's (device id → the
/// text it read) and the account's own (the phone, other linked devices).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub devices: BTreeMap<u16, String>,
    pub own_devices: BTreeMap<u16, String>,
    /// Copies addressed to a device the addressee does not have (unlinked, or never was).
    pub stale_devices: Vec<u16>,
}

/// Per-message reports, oldest dropped beyond `REPORTS_CAP`.
#[derive(Default)]
pub struct Reports(VecDeque<(String, Report)>);

impl Reports {
    fn report_mut(&mut self, id: &str) -> &mut Report {
        if let Some(i) = self.0.iter().position(|(m, _)| m == id) {
            return &mut self.0[i].1;
        }
        if self.0.len() >= REPORTS_CAP {
            self.0.pop_front();
        }
        self.0.push_back((id.to_string(), Report::default()));
        let last = self.0.len() - 1;
        &mut self.0[last].1
    }

    /// Device `device` of the addressee read `text` in message `id`.
    pub fn note(&mut self, id: &str, device: u16, text: String) {
        self.report_mut(id).devices.insert(device, text);
    }

    /// The account's own device `device` read its copy of message `id`.
    pub fn note_own(&mut self, id: &str, device: u16, text: String) {
        self.report_mut(id).own_devices.insert(device, text);
    }

    /// The client encrypted a copy of message `id` for `device`, which the addressee lacks.
    pub fn note_stale(&mut self, id: &str, device: u16) {
        self.report_mut(id).stale_devices.push(device);
    }

    pub fn report(&self, id: &str) -> Option<Report> {
        self.0
            .iter()
            .rev()
            .find(|(m, _)| m == id)
            .map(|(_, r)| r.clone())
    }
}

impl World {
    /// One copy of message `id` the linked client encrypted for a linked device (`dest`, device
    /// ≠ 0): that device decrypts it and the report records what it read. False when `dest` is
    /// no device the fake knows.
    pub(super) async fn linked_device_copy(
        &mut self,
        dest: &Jid,
        sender: &ProtocolAddress,
        id: &str,
        (kind, ct, v): (&str, &[u8], u8),
    ) -> bool {
        let own = self.own_user(&dest.user);
        let Some(device) = self.linked_device_mut(dest) else {
            return false;
        };
        let dev_id = device.id;
        match contacts::decrypt(&mut device.peer, sender, kind, ct, v).await {
            Ok(msg) => {
                let text = contacts::message_text(&msg).unwrap_or_default();
                if own {
                    self.devices.reports.note_own(id, dev_id, text);
                } else {
                    self.devices.reports.note(id, dev_id, text);
                }
            }
            Err(e) => tracing::warn!("fake-whatsapp: device {dev_id} could not decrypt: {e}"),
        }
        true
    }

    /// The owner writes `text` in "message yourself", from the phone (`device` 0) or from
    /// another of the account's own linked devices (created on first use), addressing the chat
    /// by phone number or by LID. Like `phone_self_send`: `from` the sending device of the
    /// account (`<own>:<device>` for a linked one), `recipient` the own chat in the same form,
    /// the text in a `deviceSentMessage` naming that chat, Signal-encrypted by the sending
    /// device to the linked client (whatsapp-rust's `parse_message_info`: a `from` matching
    /// the own PN or LID is the user's own message, its chat the `recipient`).
    pub async fn self_send_from(
        &mut self,
        text: &str,
        addressing: Addressing,
        device: u16,
        now: u64,
    ) -> Result<String, String> {
        if device == 0 && addressing == Addressing::Pn {
            return self.phone_self_send(text, now).await;
        }
        let remote = self.companion_address().ok_or("phone: no linked device")?;
        let companion = self.companion.as_ref().map(|c| c.device).unwrap_or(0);
        if !self.client_keys.is_known() {
            return Err("phone: the linked device has not published keys".into());
        }
        if device != 0 {
            self.own_device(device, now).await?;
        }
        let (user, server) = match addressing {
            Addressing::Pn => (self.account.pn.clone(), SERVER),
            // The owner's own chat has no "LID alone" form distinct from its LID form.
            Addressing::Lid | Addressing::LidOnly => (self.account.lid.clone(), "lid"),
        };
        let own_chat = format!("{user}@{server}");
        let from = if device == 0 {
            own_chat.clone()
        } else {
            format!("{user}:{device}@{server}")
        };
        let msg = phone::device_sent(&own_chat, text);
        let keys = &mut self.client_keys;
        let peer = if device == 0 {
            &mut self.phone
        } else {
            let pn = self.account.pn.clone();
            let book = self
                .devices
                .accounts
                .get_mut(&pn)
                .ok_or("devices: no own device")?;
            &mut book
                .list
                .iter_mut()
                .find(|d| d.id == device)
                .ok_or("devices: no such own device")?
                .peer
        };
        let (kind, ct) =
            contacts::encrypt(peer, &remote, || keys.take_bundle(companion), &msg).await?;
        let id = phone::random_hex(16);
        let stanza = NodeBuilder::new("message")
            .attr("from", from)
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

    /// Which devices decrypted message `id` (the addressee's and the account's own).
    pub fn message_report(&self, id: &str) -> Option<Report> {
        self.devices.reports.report(id)
    }

    /// What the linked account sent to contact `e164`, each message with the devices that read
    /// it (the contact's whose text matched what its phone read, and the account's own).
    pub fn deliveries(&self, e164: &str) -> Vec<Delivery> {
        self.inbox(e164)
            .into_iter()
            .map(|entry| {
                let report = self.devices.reports.report(&entry.id).unwrap_or_default();
                let devices = report
                    .devices
                    .iter()
                    .filter(|(_, t)| **t == entry.text)
                    .map(|(d, _)| *d)
                    .collect();
                let own_devices = report
                    .own_devices
                    .iter()
                    .filter(|(_, t)| **t == entry.text)
                    .map(|(d, _)| *d)
                    .collect();
                Delivery {
                    entry,
                    devices,
                    own_devices,
                    stale_devices: report.stale_devices.clone(),
                }
            })
            .collect()
    }
}

/// One message the contact received, with the devices that decrypted it: `GET
/// /contacts/<e164>/messages` serves the entry's fields plus `devices`, `own_devices` and
/// `stale_devices`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Delivery {
    #[serde(flatten)]
    pub entry: InboxEntry,
    /// The contact's devices that read this text (0 is its phone).
    pub devices: Vec<u16>,
    /// The account's own devices that got their copy (0 is the owner's phone).
    pub own_devices: Vec<u16>,
    /// Devices the copies went to that the contact does not have (a device list not followed).
    pub stale_devices: Vec<u16>,
}
