//! LID addressing in the fake: every mock contact's stable LID (a second address for the same
//! person), the three forms a contact's message can arrive in (`pn`, `lid` with the phone number
//! as the alternate-address attribute, `lid-only`), the Signal addresses a contact's device uses
//! for each, finding a contact from either of its addresses, and the count of the usync lookups
//! the client makes, by kind. No sockets, no clock.
//!
//! What the real server does, as the clients read it:
//! - A 1:1 message from a LID carries `from="<lid>@lid"`, `addressing_mode="lid"` and, when the
//!   server adds it, the phone number as `sender_pn` (whatsmeow `parseMessageSource`: `SenderAlt
//!   = sender_pn` for a LID `from` — older versions: for `addressing_mode="lid"` — and
//!   `sender_lid` for a PN one; whatsapp-rust 0.7.0 `wacore::messages::parse_message_info` reads
//!   the same attributes into `MessageSource::sender_alt`).
//! - The Signal address follows the mapping: whatsapp-rust's `Client::resolve_encryption_jid`
//!   (after WA Web's `SignalAddress`) upgrades a PN to its LID whenever the mapping is known and
//!   keeps a LID as it is. A contact's device always knows our LID (the server gives it), so it
//!   keeps one session with our companion, under the companion's LID address, whichever form a
//!   message is addressed in. A copy the client sends back is decrypted with that session (the PN
//!   address is tried after it, for a session another path started under it).
//! - usync (`wacore/src/iq/usync.rs`): a PN query with the `<lid/>` protocol is answered
//!   `<user jid="<pn>@s.whatsapp.net"><lid val="<lid>@lid"/></user>`; a LID query (`<user
//!   jid="<lid>@lid"/>`, what `is_on_whatsapp` sends for LID JIDs as `IsOnWhatsAppQueryType::Lid`,
//!   and `LidQuerySpec`) is answered `<user jid="<lid>@lid" pn_jid="<pn>@s.whatsapp.net">`.

use std::collections::BTreeMap;

use whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress;
use whatsapp_rust::wacore::types::jid::JidExt;
use whatsapp_rust::wacore_binary::Jid;
use whatsapp_rust::waproto::whatsapp as wa;

use super::contacts::{self, Contact};
use super::server::{CONTACTS_CAP, World, digits};

/// Contact LIDs are 15 digits from here up: apart from the account's own LID (which the fake
/// draws from 100000000000000 + a u32) and from the test numbers (+1555…, +49…).
const CONTACT_LID_BASE: u64 = 200_000_000_000_000;
/// Contact LIDs spread over this many values above the base.
const CONTACT_LID_SPAN: u64 = 100_000_000_000_000;

/// How a contact's message is addressed to the linked device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// From the phone number (`from="<pn>@s.whatsapp.net"`).
    Pn,
    /// From the LID with the phone number as `sender_pn`.
    Lid,
    /// From the LID alone: the client must learn the number itself.
    LidOnly,
}

impl Addressing {
    /// `"pn"` | `"lid"` | `"lid-only"`; absent is `pn`.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("pn") => Ok(Self::Pn),
            Some("lid") => Ok(Self::Lid),
            Some("lid-only") => Ok(Self::LidOnly),
            Some(other) => Err(format!(
                "addressing must be \"pn\", \"lid\" or \"lid-only\", not {other:?}"
            )),
        }
    }
}

/// The stable LID (user part, 15 digits) of the contact with phone number `user` (digits):
/// FNV-1a of the number, so a test can compute it and it survives a fake restart.
pub fn contact_lid(user: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (CONTACT_LID_BASE + h % CONTACT_LID_SPAN).to_string()
}

/// The usync lookups the client made, by kind: each count is of users asked about (one IQ may
/// carry many), with the IQs themselves counted apart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsyncCounts {
    /// Phone number → LID (`<lid/>` protocol on a PN user, no device list asked).
    pub pn_to_lid: u64,
    /// LID → phone number (a LID user with the `<lid/>` protocol, no device list asked).
    pub lid_to_pn: u64,
    /// Device lists (`<devices/>` protocol), per user.
    pub devices: u64,
    /// Usync IQs of each kind: `"lid"` (a LID lookup of either direction), `"devices"`, `"other"`.
    pub iqs: BTreeMap<String, u64>,
}

impl UsyncCounts {
    /// One usync IQ: `lid`/`devices` say which protocols it asked for, `users` the user JIDs.
    pub(super) fn record(&mut self, lid: bool, devices: bool, users: &[String]) {
        let kind = if devices {
            self.devices += users.len() as u64;
            "devices"
        } else if lid {
            for u in users {
                if u.ends_with("@lid") {
                    self.lid_to_pn += 1;
                } else {
                    self.pn_to_lid += 1;
                }
            }
            "lid"
        } else {
            "other"
        };
        *self.iqs.entry(kind.to_string()).or_default() += 1;
    }
}

impl World {
    /// The contact (phone number digits) whose LID is `lid` (user part), if it exists.
    pub(super) fn contact_by_lid(&self, lid: &str) -> Option<String> {
        self.contacts
            .keys()
            .find(|pn| contact_lid(pn) == lid)
            .cloned()
    }

    /// The contact a JID names, by phone number or by LID (created on first use for a PN).
    pub(super) fn contact_mut_by_jid(&mut self, jid: &Jid) -> Option<&mut Contact> {
        if jid.is_lid() {
            let pn = self.contact_by_lid(&jid.user)?;
            self.contacts.get_mut(&pn)
        } else {
            self.contact_mut(jid.user.as_str())
        }
    }

    /// The linked device as a Signal address under the account's LID.
    pub(super) fn companion_lid_address(&self) -> Option<ProtocolAddress> {
        let c = self.companion.as_ref()?;
        Some(Jid::lid_device(self.account.lid.clone(), c.device).to_protocol_address())
    }

    /// The `from` of a message from contact `user` in `addressing`, and its alternate-address
    /// attribute (`sender_pn`) when the form carries one.
    pub(super) fn contact_from(user: &str, addressing: Addressing) -> (String, Option<String>) {
        match addressing {
            Addressing::Pn => (format!("{user}@s.whatsapp.net"), None),
            Addressing::Lid => (
                format!("{}@lid", contact_lid(user)),
                Some(format!("{user}@s.whatsapp.net")),
            ),
            Addressing::LidOnly => (format!("{}@lid", contact_lid(user)), None),
        }
    }

    /// The `lid-unknown` fault: from now on usync answers a lookup of contact `e164`'s number
    /// without its LID (no `<lid>` child, as whatsapp-rust's `project_lid_mapping` and whatsmeow's
    /// `GetUserInfo` read a user with no LID), so the linked device does not learn it from the
    /// allow_from resolution nor from a device list; a lookup by the LID still finds the number.
    /// This holds the device in the state before it learned the LID.
    pub(super) fn withhold_lid(&mut self, e164: &str) -> Result<(), String> {
        let user = digits(e164).ok_or("lid-unknown: not an E.164 number")?;
        if !self.lid_withheld.contains(&user) && self.lid_withheld.len() >= CONTACTS_CAP {
            return Err("lid-unknown: too many contacts".into());
        }
        self.lid_withheld.insert(user);
        Ok(())
    }

    /// The answer of usync's `<lid/>` protocol about `jid` (a user of the query), if any: a PN
    /// user's LID as a `<lid val>` child, or a LID user's number as the `pn_jid` attribute.
    pub(super) fn usync_lid_of(&self, jid: &str) -> LidAnswer {
        let Ok(j) = jid.parse::<Jid>() else {
            return LidAnswer::None;
        };
        if j.user == self.account.pn || j.user == self.account.lid {
            return if j.is_lid() {
                LidAnswer::PnJid(format!("{}@s.whatsapp.net", self.account.pn))
            } else {
                LidAnswer::Lid(format!("{}@lid", self.account.lid))
            };
        }
        if j.is_lid() {
            // A LID the server knows (a contact that exists) maps back to its number; any other
            // is answered without one.
            match self.contact_by_lid(&j.user) {
                Some(pn) => LidAnswer::PnJid(format!("{pn}@s.whatsapp.net")),
                None => LidAnswer::None,
            }
        } else if self.lid_withheld.contains(j.user.as_str()) {
            // The `lid-unknown` fault: the number is answered without its LID.
            LidAnswer::None
        } else if digits(&j.user).is_some() {
            // Every number is on the fake WhatsApp, with its stable LID.
            LidAnswer::Lid(format!("{}@lid", contact_lid(&j.user)))
        } else {
            LidAnswer::None
        }
    }

    /// Contact `user` (digits) encrypts `msg` to the linked device the way its device would: in
    /// its one session with our companion, under the companion's LID address (whatever the
    /// message's addressing). Returns (`pkmsg`|`msg`, ciphertext).
    pub(super) async fn contact_encrypt(
        &mut self,
        user: &str,
        msg: &wa::Message,
    ) -> Result<(&'static str, Vec<u8>), String> {
        let remote = self
            .companion_lid_address()
            .ok_or("contact: no linked device")?;
        let device = self.companion.as_ref().map(|c| c.device).unwrap_or(0);
        if !self.contacts.contains_key(user) && self.contacts.len() >= CONTACTS_CAP {
            return Err("contact: too many contacts".into());
        }
        let contact = self
            .contacts
            .entry(user.to_string())
            .or_insert_with(Contact::new);
        let keys = &mut self.client_keys;
        contacts::encrypt(&mut contact.peer, &remote, || keys.take_bundle(device), msg).await
    }

    /// A copy the client sent to `dest` (a contact's device, PN or LID form), decrypted by that
    /// contact: with its session under our LID address, then under our PN address. Returns the
    /// contact's number (digits) and the message.
    pub(super) async fn contact_decrypt(
        &mut self,
        dest: &Jid,
        kind: &str,
        ct: &[u8],
        v: u8,
    ) -> Option<Result<(String, wa::Message), String>> {
        let user = if dest.is_lid() {
            self.contact_by_lid(&dest.user)?
        } else {
            self.contacts
                .contains_key(dest.user.as_str())
                .then(|| dest.user.to_string())?
        };
        let pn = self.companion_address()?;
        let lid = self.companion_lid_address()?;
        let order = [lid, pn];
        let contact = self.contacts.get_mut(&user)?;
        let mut last = String::new();
        for (i, remote) in order.iter().enumerate() {
            // A `pkmsg` starts a session under whichever address reads it first.
            if i > 0 && kind == "pkmsg" {
                break;
            }
            match contacts::decrypt(&mut contact.peer, remote, kind, ct, v).await {
                Ok(msg) => return Some(Ok((user, msg))),
                Err(e) => last = e,
            }
        }
        Some(Err(last))
    }
}

/// What usync's `<lid/>` protocol says about one user.
pub(super) enum LidAnswer {
    None,
    /// `<lid val="…@lid"/>` (the user was asked by phone number).
    Lid(String),
    /// `pn_jid="…@s.whatsapp.net"` on the user (asked by LID).
    PnJid(String),
}

/// The contact's number (digits) for `e164`, and its LID as a JID (`<lid>@lid`).
pub fn lid_jid_of(e164: &str) -> Option<String> {
    digits(e164).map(|d| format!("{}@lid", contact_lid(&d)))
}
