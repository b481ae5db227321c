//! Multi-device accounts in the fake: the companion devices of a contact (`POST
//! /contacts/<e164>/devices`) and the account's own other linked devices (a WhatsApp Desktop
//! writing in "message yourself"), each a Signal peer of its own with an ADV identity signed by
//! its account's key, as a real phone signs a device it links. Owns what the server says about
//! them: the usync `<devices>` answer with its signed `key-index-list`, their key bundles, the
//! `<notification type="devices">` that tells the linked client a list changed. Who read which
//! copy, and the owner writing from these devices, is `deliveries.rs`.
//!
//! Wire shapes read from the client's own parsers: `wacore/src/iq/usync/query.rs`
//! (`parse_devices`: `device-list` of `device id key-index`, `key-index-list ts` with the
//! `ADVSignedKeyIndexList` bytes), `wacore/src/adv.rs` (device 0 always kept; a companion kept
//! when its key index is valid or newer than `currentIndex`), `wacore/src/stanza/devices.rs` and
//! `whatsapp-rust/src/handlers/notification/device.rs` (`<add>`/`<remove>` with one `<device
//! jid key-index>` and a required `<key-index-list ts>`, signed bytes for `add`), whatsmeow's
//! `handleDeviceNotification` (the `device_hash` attribute of `add`/`remove`: the participant list
//! hash of the new list; the optional `lid` attribute of the notification).

use std::collections::HashMap;

use whatsapp_rust::buffa::Message as _;
use whatsapp_rust::wacore::libsignal::protocol::{
    IdentityKey, IdentityKeyPair, IdentityKeyStore, KeyPair, PreKeyBundle,
};
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node};
use whatsapp_rust::waproto::whatsapp as wa;

use super::deliveries::Reports;
use super::nodes::SERVER;
use super::phone;
use super::server::*;
use super::signal_store::PeerStore;

/// Devices one account may have, the phone included: WhatsApp allows a phone and four linked
/// devices. A test asks for three or four.
pub const MAX_DEVICES: usize = 5;
/// ADV signature prefixes (WA Web's `WAWebAdvSignatureConstants`, as `wacore/src/adv.rs` names
/// them): the account signs a device identity with [6,0], the device countersigns with [6,1], the
/// account signs its key-index list with [6,2] (the client defers checking that one: the list
/// arrives over the Noise channel).
const ADV_ACCOUNT_SIG_PREFIX: [u8; 2] = [6, 0];
const ADV_DEVICE_SIG_PREFIX: [u8; 2] = [6, 1];
const ADV_KEY_INDEX_LIST_PREFIX: [u8; 2] = [6, 2];

/// One linked (non-primary) device of an account.
pub struct LinkedDevice {
    pub id: u16,
    pub key_index: u32,
    pub peer: PeerStore,
    /// Its `ADVSignedDeviceIdentity`, as the server hands it out with the device's key bundle.
    pub signed_identity: Vec<u8>,
}

/// An account's linked devices, as its phone signed them.
pub struct Companions {
    /// The account key that signs them (a contact's device-0 identity, the owner's account key).
    pub account: IdentityKeyPair,
    /// The account's ADV `rawId` (stable: a change means the account was reinstalled).
    pub raw_id: u32,
    /// The last key index the phone gave out.
    pub current_index: u32,
    pub list: Vec<LinkedDevice>,
}

impl Companions {
    fn new(account: IdentityKeyPair, raw_id: u32) -> Self {
        Self {
            account,
            raw_id,
            current_index: 0,
            list: Vec::new(),
        }
    }
}

/// The multi-device state of the fake.
pub struct DeviceBook {
    /// Companions per account user part: contact digits, or the own account's PN.
    pub accounts: HashMap<String, Companions>,
    /// The own account's ADV `rawId` (it always has a linked device: the client under test).
    own_raw_id: u32,
    /// Which device decrypted what (`deliveries.rs`).
    pub reports: Reports,
    /// Ids of device notifications sent that the client has not acknowledged yet. whatsapp-rust
    /// acks a notification after its handler ran (`handlers/notification`), so an empty set
    /// means the client has taken in every device change; a test waits for it before the next
    /// message, as a person does not write the instant they unlinked a device. At most
    /// `UNACKED_CAP` (the oldest forgotten: a client that never acks is a bug the test sees).
    pub unacked: std::collections::VecDeque<String>,
}

/// Device notifications remembered while unacknowledged (a test changes devices a few times).
pub const UNACKED_CAP: usize = 64;

impl Default for DeviceBook {
    fn default() -> Self {
        Self {
            accounts: HashMap::new(),
            own_raw_id: fastrand::u32(1..u32::MAX),
            reports: Reports::default(),
            unacked: Default::default(),
        }
    }
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// A new device linked to the account whose key pair is `account`: its own Signal identity and
/// the `ADVSignedDeviceIdentity` the phone signs for it (`account_key` in the blob for the own
/// account; the server leaves it out for a contact's device, whose account key the client
/// already holds as device 0's identity — `wacore/src/adv.rs` `validate_adv_with_identity_key`).
fn link_device(
    account: &IdentityKeyPair,
    raw_id: u32,
    id: u16,
    key_index: u32,
    with_account_key: bool,
    now: u64,
) -> Result<LinkedDevice, String> {
    let pair = KeyPair::generate(&mut rand::rng());
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(now),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let device_pub = pair.public_key.public_key_bytes().to_vec();
    let account_pub = account.public_key().public_key_bytes().to_vec();
    let mut rng = rand::rng();
    let account_signature = account
        .private_key()
        .calculate_signature(
            &concat(&[&ADV_ACCOUNT_SIG_PREFIX, &details, &device_pub]),
            &mut rng,
        )
        .map_err(|e| format!("devices: account signature: {e}"))?;
    let device_signature = pair
        .private_key
        .calculate_signature(
            &concat(&[&ADV_DEVICE_SIG_PREFIX, &details, &device_pub, &account_pub]),
            &mut rng,
        )
        .map_err(|e| format!("devices: device signature: {e}"))?;
    let signed_identity = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: with_account_key.then_some(account_pub),
        account_signature: Some(account_signature.to_vec()),
        device_signature: Some(device_signature.to_vec()),
    }
    .encode_to_vec();
    Ok(LinkedDevice {
        id,
        key_index,
        peer: PeerStore::new(&pair),
        signed_identity,
    })
}

/// The account's signed key-index list (`ADVSignedKeyIndexList`): which key indexes are valid
/// now. `valid` holds every linked device's index (for the own account, the linked client's too).
fn signed_key_index_list(
    account: &IdentityKeyPair,
    raw_id: u32,
    current_index: u32,
    valid: &[u32],
    now: u64,
) -> Result<Vec<u8>, String> {
    let current = valid.iter().copied().max().unwrap_or(0).max(current_index);
    let details = wa::ADVKeyIndexList {
        raw_id: Some(raw_id),
        timestamp: Some(now),
        current_index: Some(current),
        valid_indexes: valid.to_vec(),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let signature = account
        .private_key()
        .calculate_signature(
            &concat(&[&ADV_KEY_INDEX_LIST_PREFIX, &details]),
            &mut rand::rng(),
        )
        .map_err(|e| format!("devices: key-index-list signature: {e}"))?;
    Ok(wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(signature.to_vec()),
        account_signature_key: None,
    }
    .encode_to_vec())
}

impl World {
    pub(super) fn own_user(&self, user: &str) -> bool {
        user == self.account.pn || user == self.account.lid
    }

    /// The canonical key for `user`'s companions: contact digits, or the own PN for either of the
    /// own account's forms.
    fn book_key(&self, user: &str) -> String {
        if self.own_user(user) {
            self.account.pn.clone()
        } else {
            // One account, two address forms: a contact's device list is the same whether the
            // client asks by number or by LID (a LID group's fan-out asks by LID).
            self.contact_by_lid(user)
                .unwrap_or_else(|| user.to_string())
        }
    }

    /// The companions of `user`, created empty (with the account key that will sign them) on
    /// first use.
    async fn book(&mut self, user: &str) -> Result<&mut Companions, String> {
        let key = self.book_key(user);
        if !self.devices.accounts.contains_key(&key) {
            let (account, raw_id) = if self.own_user(user) {
                (self.own_identity(), self.devices.own_raw_id)
            } else {
                let contact = self.contact_mut(user).ok_or("devices: too many contacts")?;
                let pair = contact
                    .peer
                    .identity
                    .get_identity_key_pair()
                    .await
                    .map_err(|e| format!("devices: contact identity: {e}"))?;
                (pair, fastrand::u32(1..u32::MAX))
            };
            self.devices
                .accounts
                .insert(key.clone(), Companions::new(account, raw_id));
        }
        self.devices
            .accounts
            .get_mut(&key)
            .ok_or_else(|| "devices: account vanished".to_string())
    }

    /// Contact `e164` now has `count` devices (the phone and `count - 1` linked ones, ids 1…),
    /// each with its own keys; the linked client is told of each device added or removed, as
    /// the server tells every client that talks to the account — unless `notify` is false (the
    /// notification lost: the client learns of the change only from the `phash` of its next
    /// send's ack). Returns the device ids.
    pub async fn set_contact_devices(
        &mut self,
        e164: &str,
        count: usize,
        notify: bool,
        now: u64,
    ) -> Result<Vec<u16>, String> {
        let user = digits(e164).ok_or("devices: not an E.164 number")?;
        if self.own_user(&user) {
            return Err("devices: that is the linked account itself".into());
        }
        if !(1..=MAX_DEVICES).contains(&count) {
            return Err(format!("devices: count must be 1 to {MAX_DEVICES}"));
        }
        let book = self.book(&user).await?;
        let mut added = Vec::new();
        let mut removed = Vec::new();
        while book.list.len() + 1 > count {
            if let Some(d) = book.list.pop() {
                removed.push(d.id);
            }
        }
        while book.list.len() + 1 < count {
            let Some(id) = (1..=MAX_DEVICES as u16).find(|i| !book.list.iter().any(|d| d.id == *i))
            else {
                break;
            };
            book.current_index += 1;
            let device = link_device(
                &book.account,
                book.raw_id,
                id,
                book.current_index,
                false,
                now,
            )?;
            added.push((id, device.key_index));
            book.list.push(device);
        }
        if notify {
            for (id, key_index) in added {
                self.notify_devices(&user, "add", id, Some(key_index), now)?;
            }
            for id in removed {
                self.notify_devices(&user, "remove", id, None, now)?;
            }
        }
        Ok(self.device_ids(&user))
    }

    /// The owner's own linked device `id` (not the phone, not the linked client), created on
    /// first use as the phone links a Desktop; the linked client is told.
    pub(super) async fn own_device(&mut self, id: u16, now: u64) -> Result<(), String> {
        let pn = self.account.pn.clone();
        if id == 0 || self.companion.as_ref().is_some_and(|c| c.device == id) {
            return Err(format!(
                "devices: device {id} is the phone or the linked client"
            ));
        }
        if self.device_ids(&pn).contains(&id) {
            return Ok(());
        }
        if self.device_ids(&pn).len() >= MAX_DEVICES {
            return Err("devices: the account has no room for another linked device".into());
        }
        // Own key indexes follow the linked client's (the index of its pairing).
        let paired = self.key_index;
        let book = self.book(&pn).await?;
        let key_index = book.current_index.max(paired) + 1;
        book.current_index = key_index;
        let device = link_device(&book.account, book.raw_id, id, key_index, true, now)?;
        book.list.push(device);
        self.notify_devices(&pn, "add", id, Some(key_index), now)
    }

    /// The key indexes valid now for `user`: each linked device's, the linked client's for the
    /// own account (the index of its pairing, the latest).
    fn valid_key_indexes(&self, user: &str) -> Vec<u32> {
        let mut valid = Vec::new();
        if self.own_user(user) && self.companion.is_some() {
            // The linked client's: the index of its pairing.
            valid.push(self.key_index);
        }
        if let Some(b) = self.devices.accounts.get(&self.book_key(user)) {
            valid.extend(b.list.iter().map(|d| d.key_index));
        }
        valid
    }

    /// `<notification type="devices">` for one device added to or removed from `user`'s list
    /// (`user` in PN form, as the account's phone number).
    fn notify_devices(
        &mut self,
        user: &str,
        op: &'static str,
        device: u16,
        key_index: Option<u32>,
        now: u64,
    ) -> Result<(), String> {
        if self.companion.is_none() {
            return Ok(());
        }
        let list: Vec<Jid> = self
            .device_ids(user)
            .into_iter()
            .map(|d| Jid::pn_device(user.to_string(), d))
            .collect();
        let hash = MessageUtils::participant_list_hash(list.iter())
            .map_err(|e| format!("devices: device hash: {e}"))?;
        let mut dev = NodeBuilder::new("device").attr("jid", format!("{user}:{device}@{SERVER}"));
        if let Some(k) = key_index {
            dev = dev.attr("key-index", k.to_string());
        }
        // `add` carries the newly signed list; `remove` only its timestamp.
        let mut kil = NodeBuilder::new("key-index-list").attr("ts", now.to_string());
        if op == "add" {
            if let Some(list) = self.key_index_list(user, now) {
                kil = kil.bytes(list?);
            }
        }
        let id = phone::random_hex(8);
        if self.devices.unacked.len() >= UNACKED_CAP {
            self.devices.unacked.pop_front();
        }
        self.devices.unacked.push_back(id.clone());
        let node = NodeBuilder::new("notification")
            .attr("from", format!("{user}@{SERVER}"))
            .attr("type", "devices")
            .attr("id", id)
            .attr("t", now.to_string())
            .children([NodeBuilder::new(op)
                .attr("device_hash", hash)
                .children([dev.build(), kil.build()])
                .build()])
            .build();
        self.queue_or_send(node);
        Ok(())
    }

    fn own_identity(&self) -> IdentityKeyPair {
        let k = &self.account.identity;
        IdentityKeyPair::new(IdentityKey::new(k.public_key), k.private_key.clone())
    }

    /// `user`'s signed key-index list as its phone signed it last: always for the own account
    /// (its linked client is a companion), for a contact once it has linked devices. Required:
    /// the client drops a usync user listing companions without one (`wacore/src/iq/usync.rs`,
    /// "has companion devices but no signedKeyIndexBytes, skipping").
    fn key_index_list(&self, user: &str, now: u64) -> Option<Result<Vec<u8>, String>> {
        let valid = self.valid_key_indexes(user);
        let book = self.devices.accounts.get(&self.book_key(user));
        if self.own_user(user) {
            let current = book.map_or(self.key_index, |b| b.current_index);
            return Some(signed_key_index_list(
                &self.own_identity(),
                self.devices.own_raw_id,
                current,
                &valid,
                now,
            ));
        }
        let book = book?;
        Some(signed_key_index_list(
            &book.account,
            book.raw_id,
            book.current_index,
            &valid,
            now,
        ))
    }

    /// Every device id of `user` (either own form, or contact digits): the phone first.
    pub(super) fn device_ids(&self, user: &str) -> Vec<u16> {
        let mut ids = vec![0];
        if self.own_user(user)
            && let Some(c) = &self.companion
        {
            ids.push(c.device);
        }
        if let Some(b) = self.devices.accounts.get(&self.book_key(user)) {
            ids.extend(b.list.iter().map(|d| d.id));
        }
        ids
    }

    /// The `phash` the server puts in its ack of a 1:1 message to `to`: the participant list hash
    /// (`MessageUtils::participant_list_hash`, whatsmeow's `participantListHashV2`) of every
    /// device the message should have reached — the addressee's and the account's own, less the
    /// sending device — in `to`'s address form. The client compares it with the hash of what it
    /// sent and refreshes both device lists on a mismatch (whatsapp-rust
    /// `check_phash_against_ack` → `handle_phash_mismatch`). None for an addressee the fake
    /// knows no device list of (a LID it cannot map: no claim rather than a wrong one).
    pub(super) fn dm_phash(&self, to: &str) -> Option<String> {
        let to: Jid = to.parse().ok()?;
        let own = self.own_user(&to.user);
        let own_user = if to.is_lid() {
            self.account.lid.clone()
        } else if to.is_pn() {
            self.account.pn.clone()
        } else {
            return None;
        };
        if !own && (to.is_lid() || digits(&to.user).is_none()) {
            return None;
        }
        let sender = self.companion.as_ref()?.device;
        let form = |user: &str, d: u16| {
            if to.is_lid() {
                Jid::lid_device(user.to_string(), d)
            } else {
                Jid::pn_device(user.to_string(), d)
            }
        };
        let mut set: Vec<Jid> = Vec::new();
        if !own {
            set.extend(
                self.device_ids(&to.user)
                    .into_iter()
                    .map(|d| form(&to.user, d)),
            );
        }
        set.extend(
            self.device_ids(&own_user)
                .into_iter()
                .filter(|d| *d != sender)
                .map(|d| form(&own_user, d)),
        );
        MessageUtils::participant_list_hash(set.iter()).ok()
    }

    /// The usync `<devices>` answer for `user`: every device with its key index (the phone has
    /// none), and the account's signed key-index list once it has linked devices of its own.
    pub(super) fn devices_node(&self, user: &str, now: u64) -> Node {
        let own = self.own_user(user);
        let book = self.devices.accounts.get(&self.book_key(user));
        let mut devices = vec![NodeBuilder::new("device").attr("id", "0").build()];
        if own && let Some(c) = &self.companion {
            devices.push(
                NodeBuilder::new("device")
                    .attr("id", c.device.to_string())
                    .attr("key-index", self.key_index.to_string())
                    .build(),
            );
        }
        for d in book.map(|b| b.list.as_slice()).unwrap_or_default() {
            devices.push(
                NodeBuilder::new("device")
                    .attr("id", d.id.to_string())
                    .attr("key-index", d.key_index.to_string())
                    .build(),
            );
        }
        let mut kids = vec![NodeBuilder::new("device-list").children(devices).build()];
        if let Some(list) = self.key_index_list(user, now) {
            match list {
                Ok(list) => kids.push(
                    NodeBuilder::new("key-index-list")
                        .attr("ts", now.to_string())
                        .bytes(list)
                        .build(),
                ),
                Err(e) => tracing::warn!("fake-whatsapp: {e}"),
            }
        }
        NodeBuilder::new("devices").children(kids).build()
    }

    /// The key bundle of a linked device (a contact's, or the owner's own other device) and its
    /// signed ADV identity; None when `jid` names no such device.
    pub(super) fn linked_device_bundle(
        &self,
        jid: &Jid,
    ) -> Option<Result<(PreKeyBundle, Vec<u8>), String>> {
        let d = self.linked_device(jid)?;
        Some(
            d.peer
                .bundle()
                .map(|b| (b, d.signed_identity.clone()))
                .map_err(|e| e.to_string()),
        )
    }

    fn linked_device(&self, jid: &Jid) -> Option<&LinkedDevice> {
        if jid.device == 0 {
            return None;
        }
        self.devices
            .accounts
            .get(&self.book_key(&jid.user))?
            .list
            .iter()
            .find(|d| d.id == jid.device)
    }

    pub(super) fn linked_device_mut(&mut self, jid: &Jid) -> Option<&mut LinkedDevice> {
        if jid.device == 0 {
            return None;
        }
        let key = self.book_key(&jid.user);
        self.devices
            .accounts
            .get_mut(&key)?
            .list
            .iter_mut()
            .find(|d| d.id == jid.device)
    }
}
