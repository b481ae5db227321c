//! The fake server's protocol core: the account, connections and logins, pairing (QR and code),
//! the offline queue, and the dispatch of each stanza the client sends to the module that answers
//! it (`keys`, `usync`, `messages`; `faults` for the admin API's injected faults). Nodes in, nodes
//! out: every outgoing stanza goes into the live connection's bounded command queue, which the
//! socket driver in `mod.rs` drains. No sockets, no clock (`now_secs` is passed in); async only
//! because libsignal's stores are.

use std::collections::{HashMap, VecDeque};

use base64::Engine as _;
use tokio::sync::mpsc;
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore::types::jid::JidExt;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node};
use whatsapp_rust::waproto::whatsapp as wa;

use super::contacts::{ClientKeys, Contact, InboxEntry};
use super::nodes::{self, SERVER, attr, child, child_bytes, iq_error, iq_result};
use super::noise::ServerIdentity;
use super::phone::{self, Account, LinkExchange, PendingPair};
use super::signal_store::PeerStore;

/// Stanzas queued for a client that is offline; beyond this the oldest is dropped (a test sends
/// a handful while the client is away).
pub const OFFLINE_QUEUE_CAP: usize = 512;
/// Commands queued towards one live connection before new ones are dropped (the driver drains it
/// continuously; only a blackholed or dying connection fills it).
pub const CONN_QUEUE_CAP: usize = 1024;
/// QR refs offered per `pair-device` (the client shows each in turn, 60 s then 20 s apiece).
const QR_REFS: usize = 6;
/// Mock contacts kept at once (each holds Signal state and an inbox).
pub const CONTACTS_CAP: usize = 256;
/// Companion device id the fake assigns to a linked client.
const COMPANION_DEVICE: u16 = 7;
/// Logins kept in the login log (the oldest dropped beyond): a 10-minute soak logs in about a
/// hundred times, the crash loop a few hundred.
pub const LOGINS_CAP: usize = 4096;

/// One connection that logged in (`<success>` sent): its id — connections are numbered from 1 in
/// the order they finished the Noise handshake, so a reconnect always has a larger id — and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Login {
    pub conn: u64,
    pub at: tokio::time::Instant,
    /// The same instant as Unix milliseconds, for the admin API.
    pub at_unix_ms: u64,
}

pub enum Cmd {
    Send(Node),
    /// Send this node, then close the socket.
    SendClose(Node),
    Close,
    Blackhole,
    Heal,
    /// Encrypt these bytes as one transport frame (valid Noise, whatever the plaintext is).
    SealRaw(Vec<u8>),
    /// Send these bytes as one WebSocket binary message, bypassing the cipher.
    RawWs(Vec<u8>),
    /// Send these raw bytes, then drop the socket without a close frame (a cut mid-frame).
    RawWsCut(Vec<u8>),
}

/// Bytes after the 3-byte length of a frame that fails decryption (random, so AES-GCM's tag
/// cannot match).
pub(super) const BAD_CIPHERTEXT_LEN: usize = 48;
/// Plaintext that does not decode as a binary node: flags byte 0 (uncompressed), a LIST_8 of 3
/// items whose first is a BINARY_8 claiming 255 bytes that are not there.
pub const GARBAGE_NODE: [u8; 5] = [0x00, 0xf8, 0x03, 0xfc, 0xff];
/// An oversized frame: one WebSocket message above the client's 4 MiB message limit.
pub const OVERSIZED_LEN: usize = 4 * 1024 * 1024 + 4096;

pub struct Conn {
    pub id: u64,
    pub tx: mpsc::Sender<Cmd>,
    pub noise_pub: Vec<u8>,
    pub logged_in: bool,
    /// Live delivery allowed (logged in, `<ib><offline>` sent, not blackholed).
    pub active: bool,
    pub blackholed: bool,
    pub qr_refs: Vec<String>,
}

/// The linked companion device.
pub struct Companion {
    pub device: u16,
    pub signed_identity: Vec<u8>,
}

pub(super) struct LinkCode {
    conn_id: u64,
    wrapped: Vec<u8>,
    pairing_ref: Vec<u8>,
    exchange: Option<LinkExchange>,
}

pub struct World {
    pub server: ServerIdentity,
    pub account: Account,
    pub phone: PeerStore,
    pub companion: Option<Companion>,
    pub client_keys: ClientKeys,
    pub contacts: HashMap<String, Contact>,
    pub conn: Option<Conn>,
    pub(super) offline: VecDeque<Node>,
    /// Messages written to the live connection whose delivery receipt has not come back. Like the
    /// real server, they are delivered again (offline) after the connection ends: a client that
    /// died before making a message durable gets it once more.
    pub(super) unreceipted: VecDeque<Node>,
    pub(super) pending_pair: Option<PendingPair>,
    pub(super) link: Option<LinkCode>,
    pub(super) key_index: u32,
    pub(super) next_conn: u64,
    /// Set while the `blackhole` fault is on: new connections are held before the WebSocket
    /// upgrade, the live one neither reads nor writes.
    pub blackhole: tokio::sync::watch::Sender<bool>,
    /// TCP connections accepted on the WebSocket listener so far.
    pub attempts: u64,
    /// Logged-in connections pushed out by a newer one of the same device (the real server sends
    /// the old one `<conflict type="replaced"/>`): two clients on one identity at once.
    pub replaced: u64,
    /// Messages the phone got in its own chat so far (the next self-inbox `seq`).
    pub(super) self_delivered: u64,
    /// Every message stanza delivered so far (up to `OFFLINE_QUEUE_CAP`), for the `replay` fault.
    pub(super) delivered: VecDeque<Node>,
    /// Every login, oldest first (up to `LOGINS_CAP`): "reconnected" means a new id in here.
    pub logins: VecDeque<Login>,
    /// What the linked device sent into the account's own "message yourself" chat, as the phone
    /// (device 0) decrypted it (up to `contacts::INBOX_CAP`).
    pub self_inbox: VecDeque<InboxEntry>,
    /// Login refusals waiting and the version check (`login.rs`).
    pub login: super::login::LoginGate,
    /// Retry receipts, nacks, prekeys low, identity changes (`retry.rs`).
    pub(super) retry: super::retry::Retries,
    /// Read receipts and reactions the linked device sent (`cues.rs`).
    pub(super) cues: super::cues::Cues,
    /// Linked devices of contacts and of the account itself, and who decrypted what.
    pub devices: super::devices::DeviceBook,
    /// The usync lookups the client made so far, by kind (see `lid`).
    pub usync_counts: super::lid::UsyncCounts,
    /// Numbers whose LID usync leaves out (the `lid-unknown` fault, `lid.rs`).
    pub(super) lid_withheld: std::collections::BTreeSet<String>,
    /// Groups the account is in (`groups.rs`).
    pub groups: super::groups::Groups,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `+15551234567`, `15551234567` or `15551234567@s.whatsapp.net` → `15551234567`.
pub fn digits(e164: &str) -> Option<String> {
    let user = e164.split('@').next().unwrap_or("");
    let d: String = user.trim_start_matches('+').to_string();
    (!d.is_empty() && d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

impl World {
    pub fn new(phone_pn: &str) -> Self {
        let identity = KeyPair::generate(&mut rand::rng());
        let phone = PeerStore::new(&identity);
        Self {
            server: ServerIdentity::generate(),
            account: Account {
                pn: phone_pn.to_string(),
                lid: format!("{}", 100_000_000_000_000u64 + u64::from(fastrand::u32(..))),
                identity,
            },
            phone,
            companion: None,
            client_keys: ClientKeys::default(),
            contacts: HashMap::new(),
            conn: None,
            offline: VecDeque::new(),
            unreceipted: VecDeque::new(),
            pending_pair: None,
            link: None,
            key_index: 0,
            next_conn: 1,
            blackhole: tokio::sync::watch::Sender::new(false),
            attempts: 0,
            replaced: 0,
            self_delivered: 0,
            delivered: VecDeque::new(),
            logins: VecDeque::new(),
            self_inbox: VecDeque::new(),
            login: Default::default(),
            retry: Default::default(),
            cues: Default::default(),
            devices: Default::default(),
            usync_counts: Default::default(),
            lid_withheld: Default::default(),
            groups: Default::default(),
        }
    }

    /// The connection logged in right now, if any.
    pub fn logged_in_conn(&self) -> Option<u64> {
        self.conn.as_ref().filter(|c| c.logged_in).map(|c| c.id)
    }

    /// Connection `conn_id` logged in at `at` (the socket driver's clock).
    pub fn record_login(&mut self, conn_id: u64, at: tokio::time::Instant, at_unix_ms: u64) {
        if self.logins.len() >= LOGINS_CAP {
            self.logins.pop_front();
        }
        self.logins.push_back(Login {
            conn: conn_id,
            at,
            at_unix_ms,
        });
    }

    pub fn own_jid(&self) -> Option<String> {
        self.companion
            .as_ref()
            .map(|c| format!("{}:{}@s.whatsapp.net", self.account.pn, c.device))
    }

    pub(super) fn companion_address(
        &self,
    ) -> Option<whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress> {
        let c = self.companion.as_ref()?;
        Some(Jid::pn_device(self.account.pn.clone(), c.device).to_protocol_address())
    }

    pub(super) fn send(&self, node: Node) {
        if let Some(conn) = &self.conn
            && conn.tx.try_send(Cmd::Send(node)).is_err()
        {
            tracing::warn!("fake-whatsapp: connection queue full, stanza dropped");
        }
    }

    pub(super) fn send_close(&self, node: Node) {
        if let Some(conn) = &self.conn {
            let _ = conn.tx.try_send(Cmd::SendClose(node));
        }
    }

    // ---- connection lifecycle -------------------------------------------------------------

    /// A connection finished its handshake; returns its id.
    pub fn attach(&mut self, tx: mpsc::Sender<Cmd>, noise_pub: Vec<u8>) -> u64 {
        let id = self.next_conn;
        self.next_conn += 1;
        if let Some(old) = self.conn.take() {
            if old.logged_in {
                self.replaced += 1;
            }
            let _ = old.tx.try_send(Cmd::Close);
        }
        self.requeue_unreceipted();
        self.conn = Some(Conn {
            id,
            tx,
            noise_pub,
            logged_in: false,
            active: false,
            blackholed: false,
            qr_refs: Vec::new(),
        });
        id
    }

    pub fn detach(&mut self, id: u64) {
        if self.conn.as_ref().is_some_and(|c| c.id == id) {
            self.conn = None;
            self.requeue_unreceipted();
        }
    }

    /// The connection ended: messages it never receipted go back to the front of the offline queue.
    pub(super) fn requeue_unreceipted(&mut self) {
        while let Some(node) = self.unreceipted.pop_back() {
            if self.offline.len() >= OFFLINE_QUEUE_CAP {
                break;
            }
            self.offline.push_front(node);
        }
        self.unreceipted.clear();
    }

    /// Sends a message stanza and remembers it until the client's delivery receipt.
    pub(super) fn send_message(&mut self, node: Node) {
        if self.unreceipted.len() >= OFFLINE_QUEUE_CAP {
            self.unreceipted.pop_front();
        }
        self.unreceipted.push_back(node.clone());
        if !self
            .delivered
            .iter()
            .any(|d| attr(d, "id") == attr(&node, "id"))
        {
            if self.delivered.len() >= OFFLINE_QUEUE_CAP {
                self.delivered.pop_front();
            }
            self.delivered.push_back(node.clone());
        }
        self.send(node);
    }

    /// The client receipted these message ids (`id`, plus any `<list><item id/>`).
    pub(super) fn on_receipt(&mut self, node: &Node) {
        let mut ids: Vec<String> = node
            .attrs
            .get("id")
            .map(|v| v.to_string())
            .into_iter()
            .collect();
        for list in node
            .children()
            .into_iter()
            .flatten()
            .filter(|c| c.tag == "list")
        {
            for item in list.children().into_iter().flatten() {
                if let Some(id) = item.attrs.get("id") {
                    ids.push(id.to_string());
                }
            }
        }
        self.unreceipted.retain(|m| {
            !m.attrs
                .get("id")
                .is_some_and(|id| ids.contains(&id.to_string()))
        });
    }

    pub(super) fn is_current(&self, id: u64) -> bool {
        self.conn.as_ref().is_some_and(|c| c.id == id)
    }

    /// The client's ClientPayload: registration (unpaired) or login (paired). True when this
    /// connection logged in (the caller records it in the login log with its clock).
    pub fn on_payload(&mut self, conn_id: u64, payload: &wa::ClientPayload, now: u64) -> bool {
        if !self.is_current(conn_id) {
            return false;
        }
        if let Some(failure) = self.login_refusal(payload) {
            self.send_close(failure);
            return false;
        }
        if let Some(reg) = payload.device_pairing_data.as_option() {
            // Registration: remember the client's keys and offer QR refs.
            self.client_keys = ClientKeys {
                registration_id: reg.e_regid.as_deref().map(nodes::be_uint).unwrap_or(0),
                identity: reg.e_ident.clone().unwrap_or_default(),
                skey_id: reg.e_skey_id.as_deref().map(nodes::be_uint).unwrap_or(0),
                skey_pub: reg.e_skey_val.clone().unwrap_or_default(),
                skey_sig: reg.e_skey_sig.clone().unwrap_or_default(),
                prekeys: VecDeque::new(),
            };
            let refs: Vec<String> = (0..QR_REFS)
                .map(|_| format!("2@{}", phone::random_hex(24)))
                .collect();
            if let Some(conn) = self.conn.as_mut() {
                conn.qr_refs = refs.clone();
            }
            let node = NodeBuilder::new("iq")
                .attr("from", SERVER)
                .attr("type", "set")
                .attr("id", phone::random_hex(8))
                .attr("xmlns", "md")
                .children([NodeBuilder::new("pair-device")
                    .children(
                        refs.into_iter()
                            .map(|r| NodeBuilder::new("ref").bytes(r.into_bytes()).build()),
                    )
                    .build()])
                .build();
            self.send(node);
            return false;
        }
        let user_ok = payload.username.map(|u| u.to_string()) == Some(self.account.pn.clone());
        let device_ok = self
            .companion
            .as_ref()
            .is_some_and(|c| payload.device == Some(u32::from(c.device)));
        if !(user_ok && device_ok) {
            tracing::info!("fake-whatsapp: login for an unknown device; failure 401");
            self.send_close(
                NodeBuilder::new("failure")
                    .attr("reason", "401")
                    .attr("location", "fake")
                    .build(),
            );
            return false;
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.logged_in = true;
        }
        self.send(
            NodeBuilder::new("success")
                .attr("t", now.to_string())
                .attr("props", "1")
                .attr("abprops", "1")
                .attr("location", "fake")
                .attr("lid", format!("{}@lid", self.account.lid))
                .attr("creation", now.to_string())
                .build(),
        );
        true
    }

    /// Delivers the offline queue then the end marker (the client waits for it after `passive`).
    pub(super) fn flush_offline(&mut self) {
        let queued: Vec<Node> = self.offline.drain(..).collect();
        let count = queued.len();
        for mut node in queued {
            node.attrs.insert("offline", "1");
            if node.tag == "message" {
                self.send_message(node);
            } else {
                self.send(node);
            }
        }
        self.send(
            NodeBuilder::new("ib")
                .attr("from", SERVER)
                .children([NodeBuilder::new("offline")
                    .attr("count", count.to_string())
                    .build()])
                .build(),
        );
        if let Some(conn) = self.conn.as_mut() {
            conn.active = true;
        }
    }

    pub(super) fn can_deliver(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.active && !c.blackholed)
    }

    pub(super) fn queue_or_send(&mut self, node: Node) {
        if self.can_deliver() {
            if node.tag == "message" {
                self.send_message(node);
            } else {
                self.send(node);
            }
        } else {
            if self.offline.len() >= OFFLINE_QUEUE_CAP {
                self.offline.pop_front();
            }
            self.offline.push_back(node);
        }
    }

    // ---- stanzas from the client ----------------------------------------------------------

    pub async fn on_node(&mut self, conn_id: u64, node: Node, now: u64) {
        if !self.is_current(conn_id) {
            return;
        }
        tracing::debug!("fake-whatsapp <- {}", nodes::summary(&node));
        match node.tag.as_ref() {
            "iq" => self.on_iq(&node, now).await,
            "message" => self.on_message(&node, now).await,
            "receipt" | "notification" | "call" => {
                if node.tag == "receipt" && attr(&node, "type").as_deref() == Some("retry") {
                    self.on_retry_receipt(&node).await;
                } else if node.tag == "receipt" {
                    self.cues.note_receipt(&node);
                    self.on_receipt(&node);
                }
                if let Some(ack) = nodes::ack_for(&node, now) {
                    self.send(ack);
                }
            }
            // The client's ack of a device notification: it has taken the change in.
            "ack" if attr(&node, "class").as_deref() == Some("notification") => {
                if let Some(id) = attr(&node, "id") {
                    self.devices.unacked.retain(|u| *u != id);
                }
            }
            // Acks for our other stanzas, presence, chatstate, `ib` (unified_session…): nothing
            // to answer.
            _ => {}
        }
    }

    pub(super) async fn on_iq(&mut self, iq: &Node, now: u64) {
        let id = attr(iq, "id").unwrap_or_default();
        let kind = attr(iq, "type").unwrap_or_default();
        if kind == "result" || kind == "error" {
            self.on_iq_answer(iq, &id, &kind);
            return;
        }
        let xmlns = attr(iq, "xmlns").unwrap_or_default();
        let answer = match xmlns.as_str() {
            "w:p" | "passive" | "presence" | "w:profile:picture" => iq_result(&id, vec![]),
            "encrypt" => self.on_encrypt_iq(iq, &id),
            "usync" => self.on_usync(iq, &id),
            "w:g2" => self.on_groups_iq(iq, &id),
            "md" => match self.on_md_iq(iq, &id) {
                // companion_finish queued its own answer ahead of pair-success.
                Ok(None) => return,
                Ok(Some(node)) => node,
                Err(e) => {
                    tracing::info!("fake-whatsapp: md iq rejected: {e}");
                    iq_error(&id, 400, "bad-request")
                }
            },
            "w:sync:app:state" => {
                let collections: Vec<Node> = child(iq, "sync")
                    .map(|s| {
                        nodes::children(s, "collection")
                            .filter_map(|c| attr(c, "name"))
                            .map(|name| NodeBuilder::new("collection").attr("name", name).build())
                            .collect()
                    })
                    .unwrap_or_default();
                iq_result(
                    &id,
                    vec![NodeBuilder::new("sync").children(collections).build()],
                )
            }
            _ => iq_error(&id, 501, "feature-not-implemented"),
        };
        self.send(answer);
        if xmlns == "passive" {
            self.flush_offline();
        }
        let _ = now;
    }

    pub(super) fn on_iq_answer(&mut self, iq: &Node, id: &str, kind: &str) {
        let Some(pending) = self.pending_pair.take_if(|p| p.iq_id == id) else {
            return;
        };
        if kind != "result" {
            tracing::info!("fake-whatsapp: client refused pair-success");
            return;
        }
        match phone::verify_device_sign(iq, &pending, &self.account) {
            Ok(signed_identity) => {
                self.companion = Some(Companion {
                    device: pending.device,
                    signed_identity,
                });
                self.offline.clear();
                // A new device: every member's next group message carries its sender key again.
                self.groups.new_companion();
                tracing::info!("fake-whatsapp: device linked; restarting the stream (515)");
                self.send_close(nodes::stream_error(515));
            }
            Err(e) => {
                tracing::warn!("fake-whatsapp: pair-device-sign rejected: {e}");
                self.send_close(nodes::stream_error(401));
            }
        }
    }

    pub(super) fn on_md_iq(&mut self, iq: &Node, id: &str) -> Result<Option<Node>, String> {
        // The companion logs itself out: the phone drops it from its linked devices.
        if child(iq, "remove-companion-device").is_some() {
            tracing::info!("fake-whatsapp: the companion logged out; device unlinked");
            self.companion = None;
            return Ok(Some(iq_result(id, vec![])));
        }
        let reg = child(iq, "link_code_companion_reg").ok_or("md iq without a known child")?;
        let conn_id = self.conn.as_ref().map(|c| c.id).unwrap_or(0);
        match attr(reg, "stage").as_deref() {
            Some("companion_hello") => {
                let jid = attr(reg, "jid").unwrap_or_default();
                if digits(&jid).as_deref() != Some(self.account.pn.as_str()) {
                    return Err(format!("pair code for unknown number {jid}"));
                }
                let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
                    .ok_or("companion_hello without wrapped ephemeral")?
                    .to_vec();
                let pairing_ref = phone::random_hex(16).into_bytes();
                self.link = Some(LinkCode {
                    conn_id,
                    wrapped,
                    pairing_ref: pairing_ref.clone(),
                    exchange: None,
                });
                Ok(Some(iq_result(
                    id,
                    vec![
                        NodeBuilder::new("link_code_companion_reg")
                            .children([NodeBuilder::new("link_code_pairing_ref")
                                .bytes(pairing_ref)
                                .build()])
                            .build(),
                    ],
                )))
            }
            Some("companion_finish") => {
                let link = self
                    .link
                    .take()
                    .ok_or("companion_finish without companion_hello")?;
                let exchange = link
                    .exchange
                    .ok_or("companion_finish before the phone typed")?;
                if child_bytes(reg, "link_code_pairing_ref") != Some(link.pairing_ref.as_slice()) {
                    return Err("companion_finish for another ref".into());
                }
                let bundle = child_bytes(reg, "link_code_pairing_wrapped_key_bundle")
                    .ok_or("companion_finish without key bundle")?;
                let (companion_identity, adv_secret) =
                    phone::finish_link(&exchange, bundle, &self.account)?;
                let answer = iq_result(id, vec![]);
                self.send(answer);
                self.send_pair_success(&adv_secret, &companion_identity)?;
                Ok(None)
            }
            other => Err(format!("unknown link code stage {other:?}")),
        }
    }

    pub(super) fn send_pair_success(
        &mut self,
        adv_secret: &[u8; 32],
        identity: &[u8; 32],
    ) -> Result<(), String> {
        self.key_index += 1;
        let (node, pending) = phone::pair_success(
            &self.account,
            adv_secret,
            identity,
            COMPANION_DEVICE,
            self.key_index,
            now_secs(),
        )?;
        self.pending_pair = Some(pending);
        self.send(node);
        Ok(())
    }

    // ---- the mock phone and contacts (admin API) ---------------------------------------------

    /// The phone scanned `qr` (`ref,noise,identity,adv[,type]`).
    pub fn scan(&mut self, qr: &str) -> Result<(), String> {
        let parts: Vec<&str> = qr.split(',').collect();
        if parts.len() < 4 {
            return Err("qr: expected ref,noise,identity,adv".into());
        }
        let conn = self.conn.as_ref().ok_or("qr: no client connected")?;
        if !conn.qr_refs.iter().any(|r| r == parts[0]) {
            return Err("qr: ref was not issued to the connected client".into());
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let noise = b64
            .decode(parts[1])
            .map_err(|e| format!("qr: noise key: {e}"))?;
        if noise != conn.noise_pub {
            return Err("qr: noise key does not match the connected client".into());
        }
        let identity: [u8; 32] = b64
            .decode(parts[2])
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("qr: identity key is not 32 bytes of base64")?;
        let adv: [u8; 32] = b64
            .decode(parts[3])
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or("qr: adv secret is not 32 bytes of base64")?;
        self.send_pair_success(&adv, &identity)
    }

    /// The phone's user typed the pair code shown by the client.
    pub fn enter_code(&mut self, code: &str) -> Result<(), String> {
        let code: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let conn_id = self
            .conn
            .as_ref()
            .map(|c| c.id)
            .ok_or("code: no client connected")?;
        let link = self
            .link
            .as_mut()
            .ok_or("code: the client has not asked for a pair code")?;
        if link.conn_id != conn_id {
            return Err("code: the pair code belongs to an earlier connection".into());
        }
        let (node, exchange) =
            phone::primary_hello(&code, &link.wrapped, &link.pairing_ref, &self.account)?;
        link.exchange = Some(exchange);
        self.send(node);
        Ok(())
    }
}
