//! The WhatsApp client's store traits (`SignalStore`, `AppSyncStore`, `ProtocolStore`,
//! `MsgSecretStore`, `DeviceStore`: together a `Backend`) on clawbox's key-value table
//! `whatsapp` ([`crate::store::kv`]).
//!
//! Every write is durable (fsynced) before the trait call returns, and each `*_batch` call is one
//! write transaction, so the client's own write ordering (sessions, then identities, then sender
//! keys; a consumed prekey deleted only after its session) holds across a crash or power loss.
//! Read-modify-write methods the traits require to be atomic (LID mappings, trusted-contact
//! tokens, message secrets, prekey upload marks) run under one lock, since this adapter is the
//! table's only writer. Never logs keys or message contents; never touches any other table.
//!
//! Key layout (one namespace per family; `\x1f` separates the parts of a composite key):
//! `dev` device · `linked_at` when the account was linked · `id/` identities · `ses/` sessions ·
//! `pk/<10-digit id>` prekeys (first byte: uploaded) · `spk/` signed prekeys · `sk/` sender keys ·
//! `sync/<hex>` app-state keys · `synclatest` · `ver/` app-state versions · `mac/<name>\x1f<hex>`
//! mutation MACs · `skd/<group>\x1f<device>` sender-key status · `lid/` LID→PN · `pn/` PN→LID ·
//! `bk/` base keys · `dl/` device lists · `gm/` group metadata · `tc/` trusted-contact tokens ·
//! `sent/` sent messages (first 8 bytes: time) · `pin/` pending inbound (first 8 bytes: time) ·
//! `sec/` message secrets.

use crate::store::kv::{Kv, KvWrite};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceListRecord, DeviceStore, LidPnMappingEntry,
    MsgSecretEntry, MsgSecretStore, PendingInboundKey, PendingInboundRow, ProtocolStore,
    SignalStore, TcTokenEntry, merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

/// Separator inside composite keys: never part of a JID, a message id or a collection name.
const SEP: char = '\x1f';
/// Prekeys kept at most in one scan (the client uploads 812 per batch and keeps a few batches).
const MAX_PREKEY_ROWS: usize = 20_000;
/// Signed prekeys: the current one and a few rotated ones.
const MAX_SIGNED_PREKEY_ROWS: usize = 1_000;
/// LID↔phone mappings (one per contact the account talks to).
const MAX_LID_ROWS: usize = 50_000;
/// Sender-key device rows scanned at once (groups × devices).
const MAX_SKD_ROWS: usize = 50_000;
/// Rows of one time-pruned family (sent messages, pending inbound, secrets, tokens) scanned by
/// an expiry sweep.
const MAX_SWEEP_ROWS: usize = 50_000;
/// Sessions/identities of one user (one per device).
const MAX_DEVICE_ROWS: usize = 1_000;
/// Message secret layout: 32-byte secret, 8-byte expiry, 8-byte parent time.
const SECRET_ROW_LEN: usize = 32 + 8 + 8;

/// The `Backend` over clawbox's store. Cheap to clone.
#[derive(Clone)]
pub struct KvBackend {
    kv: Kv,
    /// Serialises read-modify-write sequences so they are atomic against each other.
    rmw: Arc<tokio::sync::Mutex<()>>,
    /// Set by [`KvBackend::wipe`]: the logged-out client's last flushes must not bring its
    /// identity back, so every later write is refused.
    wiped: Arc<std::sync::atomic::AtomicBool>,
}

impl KvBackend {
    pub fn new(kv: Kv) -> KvBackend {
        KvBackend {
            kv,
            rmw: Arc::new(tokio::sync::Mutex::new(())),
            wiped: Arc::default(),
        }
    }

    /// Removes every WhatsApp key (logged out): the next start pairs afresh.
    pub async fn wipe(&self) -> std::result::Result<usize, crate::store::StoreError> {
        let _g = self.rmw.lock().await;
        self.wiped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.kv.delete_prefix("").await
    }

    /// Whether a paired device identity is stored (the account JID is set).
    pub async fn is_paired(&self) -> bool {
        matches!(self.load().await, Ok(Some(d)) if d.pn.is_some())
    }

    /// The linked account: its number (+E.164) and when it was linked (ms since the epoch; None
    /// for a link made before clawbox kept the time), or None when nothing is linked.
    pub async fn linked(&self) -> Option<(String, Option<u64>)> {
        let device = self.load().await.ok()??;
        let pn = device.pn?;
        let number = super::adapter::e164(&pn.user).unwrap_or_else(|| format!("+{}", pn.user));
        let since = match self.get(K_LINKED_AT).await {
            Ok(Some(v)) => <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .map(u64::from_be_bytes),
            _ => None,
        };
        Some((number, since))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv.get(key).await.map_err(db)
    }
    async fn put_all(&self, writes: Vec<KvWrite>) -> Result<()> {
        if self.wiped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Validation(
                "the WhatsApp state was wiped (logged out); nothing more is saved".into(),
            ));
        }
        self.kv.put_batch(writes).await.map_err(db)
    }
    async fn put(&self, key: String, value: Vec<u8>) -> Result<()> {
        self.put_all(vec![(key, Some(value))]).await
    }
    async fn del(&self, key: String) -> Result<()> {
        self.put_all(vec![(key, None)]).await
    }
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        self.kv.scan_prefix(prefix, limit).await.map_err(db)
    }
    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key).await? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }
    /// Deletes the rows of `prefix` whose value `expired` says so; one transaction.
    async fn sweep(&self, prefix: &str, expired: impl Fn(&[u8]) -> bool) -> Result<u32> {
        let _g = self.rmw.lock().await;
        let rows = self.scan(prefix, MAX_SWEEP_ROWS).await?;
        let doomed: Vec<KvWrite> = rows
            .into_iter()
            .filter(|(_, v)| expired(v))
            .map(|(k, _)| (k, None))
            .collect();
        let n = doomed.len() as u32;
        self.put_all(doomed).await?;
        Ok(n)
    }
}

fn db(e: crate::store::StoreError) -> StoreError {
    StoreError::Database(Box::new(e))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn from_json<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| StoreError::Serialization(Box::new(e)))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn now_secs() -> i64 {
    (crate::store::now_ms() / 1000) as i64
}

/// `[8-byte big-endian time][payload]`.
fn stamped(ts: i64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn stamp_of(v: &[u8]) -> i64 {
    v.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0)
}

fn unstamped(v: Vec<u8>) -> Vec<u8> {
    v.get(8..).map(<[u8]>::to_vec).unwrap_or_default()
}

fn k_id(a: &str) -> String {
    format!("id/{a}")
}
fn k_ses(a: &str) -> String {
    format!("ses/{a}")
}
/// Zero-padded so the keys sort by id.
fn k_pk(id: u32) -> String {
    format!("pk/{id:010}")
}
fn k_spk(id: u32) -> String {
    format!("spk/{id:010}")
}
fn k_sk(a: &str) -> String {
    format!("sk/{a}")
}
fn k_sync(id: &[u8]) -> String {
    format!("sync/{}", hex(id))
}
const K_SYNC_LATEST: &str = "synclatest";
fn k_ver(name: &str) -> String {
    format!("ver/{name}")
}
fn k_mac_prefix(name: &str) -> String {
    format!("mac/{name}{SEP}")
}
fn k_mac(name: &str, index_mac: &[u8]) -> String {
    format!("mac/{name}{SEP}{}", hex(index_mac))
}
fn k_skd_prefix(group: &str) -> String {
    format!("skd/{group}{SEP}")
}
fn k_lid(lid: &str) -> String {
    format!("lid/{lid}")
}
fn k_pn(pn: &str) -> String {
    format!("pn/{pn}")
}
fn k_bk(address: &str, msg: &str) -> String {
    format!("bk/{address}{SEP}{msg}")
}
fn k_dl(user: &str) -> String {
    format!("dl/{user}")
}
fn k_gm(group: &str) -> String {
    format!("gm/{group}")
}
fn k_tc(jid: &str) -> String {
    format!("tc/{jid}")
}
fn k_sent(chat: &str, id: &str) -> String {
    format!("sent/{chat}{SEP}{id}")
}
fn k_pin(chat: &str, sender: &str, id: &str) -> String {
    format!("pin/{chat}{SEP}{sender}{SEP}{id}")
}
fn k_sec(chat: &str, sender: &str, id: &str) -> String {
    format!("sec/{chat}{SEP}{sender}{SEP}{id}")
}
const K_DEVICE: &str = "dev";
/// When the account was linked: 8 bytes, big-endian milliseconds since the epoch.
const K_LINKED_AT: &str = "linked_at";

/// `[uploaded][record]`.
fn prekey_row(record: &[u8], uploaded: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + record.len());
    v.push(u8::from(uploaded));
    v.extend_from_slice(record);
    v
}

/// The record of a `[uploaded][record]` row; an empty (damaged) row is no record, logged: the
/// client then treats the pre-key as used, which costs one session setup, never a crash.
fn prekey_record(row: Vec<u8>) -> Option<Bytes> {
    if row.is_empty() {
        tracing::warn!("WhatsApp: an empty pre-key row in the store was skipped");
        return None;
    }
    Some(Bytes::from(row).slice(1..))
}

fn secret_row(secret: &[u8; 32], expires_at: i64, message_ts: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(SECRET_ROW_LEN);
    v.extend_from_slice(secret);
    v.extend_from_slice(&expires_at.to_be_bytes());
    v.extend_from_slice(&message_ts.to_be_bytes());
    v
}

/// (secret, expires_at, message_ts), or None for a damaged row.
fn parse_secret_row(v: &[u8]) -> Option<([u8; 32], i64, i64)> {
    if v.len() != SECRET_ROW_LEN {
        return None;
    }
    let secret = <[u8; 32]>::try_from(&v[..32]).ok()?;
    let exp = i64::from_be_bytes(<[u8; 8]>::try_from(&v[32..40]).ok()?);
    let ts = i64::from_be_bytes(<[u8; 8]>::try_from(&v[40..48]).ok()?);
    Some((secret, exp, ts))
}

/// A session/identity address belongs to `user` when it is `user@…` or `user:dev@…`.
fn address_of_user(addr: &str, user: &str) -> bool {
    addr.strip_prefix(user)
        .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
}

#[async_trait]
impl SignalStore for KvBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put(k_id(address), key.to_vec()).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_all(
            identities
                .iter()
                .map(|(a, k)| (k_id(a), Some(k.to_vec())))
                .collect(),
        )
        .await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.get(&k_id(address)).await? {
            Some(v) => <[u8; 32]>::try_from(v.as_slice()).map(Some).map_err(|_| {
                StoreError::Validation(format!("identity of {len} bytes", len = v.len()))
            }),
            None => Ok(None),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.del(k_id(address)).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.get(&k_ses(address)).await?.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put(k_ses(address), session.to_vec()).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_all(
            sessions
                .iter()
                .map(|(a, s)| (k_ses(a), Some(s.to_vec())))
                .collect(),
        )
        .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.del(k_ses(address)).await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        for prefix in [k_ses(user), k_id(user)] {
            let rows = self.scan(&prefix, MAX_DEVICE_ROWS).await?;
            let plen = prefix.len() - user.len();
            if rows.iter().any(|(k, _)| address_of_user(&k[plen..], user)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.put(k_pk(id), prekey_row(record, uploaded)).await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.put_all(
            keys.iter()
                .map(|(id, r)| (k_pk(*id), Some(prekey_row(r, uploaded))))
                .collect(),
        )
        .await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self.get(&k_pk(id)).await?.and_then(prekey_record))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let keys = ids.iter().map(|id| k_pk(*id)).collect();
        let vals = self.kv.get_many(keys).await.map_err(db)?;
        Ok(ids
            .iter()
            .zip(vals)
            .filter_map(|(id, v)| v.and_then(prekey_record).map(|r| (*id, r)))
            .collect())
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        // UPDATE semantics: a key consumed meanwhile stays deleted.
        let _g = self.rmw.lock().await;
        let keys: Vec<String> = ids.iter().map(|id| k_pk(*id)).collect();
        let vals = self.kv.get_many(keys.clone()).await.map_err(db)?;
        let writes = keys
            .into_iter()
            .zip(vals)
            .filter_map(|(k, v)| {
                let mut v = v?;
                (v.first() == Some(&0)).then(|| {
                    v[0] = 1;
                    (k, Some(v))
                })
            })
            .collect();
        self.put_all(writes).await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.del(k_pk(id)).await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let rows = self.scan("pk/", MAX_PREKEY_ROWS).await?;
        Ok(rows
            .last()
            .and_then(|(k, _)| k.strip_prefix("pk/")?.parse().ok())
            .unwrap_or(0))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.put(k_spk(id), record.to_vec()).await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.get(&k_spk(id)).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let rows = self.scan("spk/", MAX_SIGNED_PREKEY_ROWS).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("spk/")?.parse().ok()?, v)))
            .collect())
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.del(k_spk(id)).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put(k_sk(address), record.to_vec()).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_all(
            sender_keys
                .iter()
                .map(|(a, r)| (k_sk(a), Some(r.to_vec())))
                .collect(),
        )
        .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get(&k_sk(address)).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.del(k_sk(address)).await
    }
}

#[async_trait]
impl AppSyncStore for KvBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.get_json(&k_sync(key_id)).await
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.put_all(vec![
            (k_sync(key_id), Some(to_json(&key)?)),
            (K_SYNC_LATEST.into(), Some(key_id.to_vec())),
        ])
        .await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        Ok(self.get_json(&k_ver(name)).await?.unwrap_or_default())
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.put(k_ver(name), to_json(&state)?).await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        _version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        self.put_all(
            mutations
                .iter()
                .map(|m| (k_mac(name, &m.index_mac), Some(m.value_mac.clone())))
                .collect(),
        )
        .await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get(&k_mac(name, index_mac)).await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let keys = index_macs.iter().map(|m| k_mac(name, m)).collect();
        let vals = self.kv.get_many(keys).await.map_err(db)?;
        Ok(index_macs
            .iter()
            .zip(vals)
            .filter_map(|(m, v)| v.map(|v| (*m, v)))
            .collect())
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        self.put_all(index_macs.iter().map(|m| (k_mac(name, m), None)).collect())
            .await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.kv
            .delete_prefix(&k_mac_prefix(name))
            .await
            .map(drop)
            .map_err(db)
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.get(K_SYNC_LATEST).await
    }
}

#[async_trait]
impl ProtocolStore for KvBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        let prefix = k_skd_prefix(group_jid);
        let rows = self.scan(&prefix, MAX_SKD_ROWS).await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v.first() == Some(&1)))
            .collect())
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        let prefix = k_skd_prefix(group_jid);
        self.put_all(
            entries
                .iter()
                .map(|(d, has)| (format!("{prefix}{d}"), Some(vec![u8::from(*has)])))
                .collect(),
        )
        .await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.kv
            .delete_prefix(&k_skd_prefix(group_jid))
            .await
            .map(drop)
            .map_err(db)
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let _g = self.rmw.lock().await;
        let rows = self.scan("skd/", MAX_SKD_ROWS).await?;
        let doomed = rows
            .into_iter()
            .filter(|(k, _)| {
                k.rsplit_once(SEP)
                    .is_some_and(|(_, d)| device_jids.contains(&d))
            })
            .map(|(k, _)| (k, None))
            .collect();
        self.put_all(doomed).await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.kv.delete_prefix("skd/").await.map(drop).map_err(db)
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.get_json(&k_lid(lid)).await
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        match self.get(&k_pn(phone)).await? {
            Some(lid) => match String::from_utf8(lid) {
                Ok(lid) => self.get_lid_mapping(&lid).await,
                Err(_) => Ok(None),
            },
            None => Ok(None),
        }
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        let _g = self.rmw.lock().await;
        let mut writes: Vec<KvWrite> = Vec::with_capacity(entries.len() * 3);
        let olds = self
            .kv
            .get_many(entries.iter().map(|e| k_lid(&e.lid)).collect())
            .await
            .map_err(db)?;
        for (e, old) in entries.iter().zip(olds) {
            if let Some(old) = old.and_then(|v| from_json::<LidPnMappingEntry>(&v).ok()) {
                if old.phone_number != e.phone_number {
                    writes.push((k_pn(&old.phone_number), None));
                }
            }
            writes.push((k_pn(&e.phone_number), Some(e.lid.as_bytes().to_vec())));
            writes.push((k_lid(&e.lid), Some(to_json(e)?)));
        }
        self.put_all(writes).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        let rows = self.scan("lid/", MAX_LID_ROWS).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| from_json(&v).ok())
            .collect())
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put(k_bk(address, message_id), base_key.to_vec()).await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        Ok(self
            .get(&k_bk(address, message_id))
            .await?
            .is_some_and(|v| v == current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.del(k_bk(address, message_id)).await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.put(k_dl(&record.user), to_json(&record)?).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let mut writes = Vec::with_capacity(records.len());
        for r in &records {
            writes.push((k_dl(&r.user), Some(to_json(r)?)));
        }
        self.put_all(writes).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.get_json(&k_dl(user)).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.del(k_dl(user)).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get(&k_gm(group_jid)).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put(k_gm(group_jid), blob.to_vec()).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.del(k_gm(group_jid)).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.get_json(&k_tc(jid)).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.put(k_tc(jid), to_json(entry)?).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.del(k_tc(jid)).await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        let rows = self.scan("tc/", MAX_SWEEP_ROWS).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix("tc/").map(str::to_string))
            .collect())
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        self.sweep("tc/", |v| match from_json::<TcTokenEntry>(v) {
            Ok(e) => {
                let token_live = !e.token.is_empty() && e.token_timestamp >= token_cutoff;
                let sender_live = e.sender_timestamp.is_some_and(|ts| ts >= sender_cutoff);
                !(token_live || sender_live)
            }
            Err(_) => true,
        })
        .await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        let _g = self.rmw.lock().await;
        let entry = match self.get_json::<TcTokenEntry>(&k_tc(jid)).await? {
            Some(e) => TcTokenEntry {
                sender_timestamp: Some(
                    e.sender_timestamp
                        .map_or(sender_timestamp, |s| s.max(sender_timestamp)),
                ),
                ..e
            },
            None => TcTokenEntry {
                token: Vec::new(),
                token_timestamp: sender_timestamp,
                sender_timestamp: Some(sender_timestamp),
            },
        };
        self.put(k_tc(jid), to_json(&entry)?).await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        let _g = self.rmw.lock().await;
        let existing = self.get_json::<TcTokenEntry>(&k_tc(jid)).await?;
        if let Some(e) = &existing {
            if !e.token.is_empty() && token_timestamp < e.token_timestamp {
                return Ok(());
            }
        }
        let entry = TcTokenEntry {
            token: token.to_vec(),
            token_timestamp,
            sender_timestamp: existing.and_then(|e| e.sender_timestamp),
        };
        self.put(k_tc(jid), to_json(&entry)?).await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.put(k_sent(chat_jid, message_id), stamped(now_secs(), payload))
            .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .kv
            .take(&k_sent(chat_jid, message_id))
            .await
            .map_err(db)?
            .map(unstamped))
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sweep("sent/", |v| stamp_of(v) < cutoff_timestamp)
            .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.put(k_pin(chat, sender, id), stamped(now_secs(), message))
            .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.get(&k_pin(chat, sender, id)).await?.map(unstamped))
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.del(k_pin(chat, sender, id)).await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sweep("pin/", |v| stamp_of(v) < cutoff_timestamp).await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        let now = now_secs();
        self.put_all(
            rows.iter()
                .map(|r| (k_pin(r.chat, r.sender, r.id), Some(stamped(now, r.message))))
                .collect(),
        )
        .await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        self.put_all(
            keys.iter()
                .map(|k| (k_pin(k.chat, k.sender, k.id), None))
                .collect(),
        )
        .await
    }
}

#[async_trait]
impl MsgSecretStore for KvBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let n = entries.len();
        let _g = self.rmw.lock().await;
        let keys: Vec<String> = entries
            .iter()
            .map(|e| k_sec(&e.chat, &e.sender, &e.msg_id))
            .collect();
        let olds = self.kv.get_many(keys.clone()).await.map_err(db)?;
        // Later entries for the same key merge with earlier ones of this batch.
        let mut merged: HashMap<String, ([u8; 32], i64, i64)> = HashMap::new();
        for ((k, e), old) in keys.into_iter().zip(entries).zip(olds) {
            let prev = merged
                .get(&k)
                .copied()
                .or_else(|| old.as_deref().and_then(parse_secret_row));
            let row = match prev {
                Some((_, exp, ts)) => (
                    e.secret,
                    merge_msg_secret_expiry(exp, e.expires_at),
                    merge_msg_secret_message_ts(ts, e.message_ts),
                ),
                None => (e.secret, e.expires_at, e.message_ts),
            };
            merged.insert(k, row);
        }
        self.put_all(
            merged
                .into_iter()
                .map(|(k, (s, exp, ts))| (k, Some(secret_row(&s, exp, ts))))
                .collect(),
        )
        .await?;
        Ok(n)
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(s, _)| s))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        Ok(self
            .get(&k_sec(chat, sender, msg_id))
            .await?
            .as_deref()
            .and_then(parse_secret_row)
            .map(|(s, _, ts)| (s.to_vec(), ts)))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sweep("sec/", |v| match parse_secret_row(v) {
            Some((_, exp, _)) => exp != 0 && exp <= cutoff_timestamp,
            None => true,
        })
        .await
    }
}

#[async_trait]
impl DeviceStore for KvBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        let mut writes = vec![(K_DEVICE.to_string(), Some(to_json(device)?))];
        // The first save that carries the account's number is the moment of linking, kept in the
        // same transaction (and wiped with the rest at logout).
        if device.pn.is_some() && self.get(K_LINKED_AT).await?.is_none() {
            let now = crate::store::now_ms().to_be_bytes().to_vec();
            writes.push((K_LINKED_AT.to_string(), Some(now)));
        }
        self.put_all(writes).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        self.get_json(K_DEVICE).await
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.get(K_DEVICE).await?.is_some())
    }

    async fn create(&self) -> Result<i32> {
        // One device per box. A fresh identity is written at once, durably, so a crash before the
        // first save cannot leave a half-made device.
        if self.get(K_DEVICE).await?.is_none() {
            self.save(&Device::new()).await?;
        }
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_prekey_row_is_no_record_not_a_panic() {
        assert_eq!(prekey_record(Vec::new()), None);
        assert_eq!(prekey_record(vec![1]), Some(Bytes::new()));
        assert_eq!(
            prekey_record(prekey_row(b"rec", true)),
            Some(Bytes::from_static(b"rec"))
        );
    }
    use crate::metrics::Metrics;
    use crate::store::Store;
    use crate::store::kv::KvTable;

    fn backend() -> (Store, KvBackend) {
        let store = Store::open_in_memory(Arc::new(Metrics::default())).unwrap();
        let b = KvBackend::new(store.kv(KvTable::WhatsApp));
        (store, b)
    }

    fn is_backend<T: whatsapp_rust::wacore::store::traits::Backend>() {}

    #[test]
    fn it_is_a_backend() {
        is_backend::<KvBackend>();
    }

    #[tokio::test]
    async fn signal_state_round_trips() {
        let (_s, b) = backend();
        b.put_identity("49170:1@s.whatsapp.net", [7; 32])
            .await
            .unwrap();
        assert_eq!(
            b.load_identity("49170:1@s.whatsapp.net").await.unwrap(),
            Some([7; 32])
        );
        b.put_sessions_batch(&[
            ("49170:1@s.whatsapp.net".into(), Bytes::from_static(b"s1")),
            ("49170:2@s.whatsapp.net".into(), Bytes::from_static(b"s2")),
        ])
        .await
        .unwrap();
        assert_eq!(
            b.get_session("49170:2@s.whatsapp.net")
                .await
                .unwrap()
                .unwrap(),
            Bytes::from_static(b"s2")
        );
        assert!(b.has_session("49170:1@s.whatsapp.net").await.unwrap());
        assert!(b.has_signal_state_for_user("49170").await.unwrap());
        assert!(
            !b.has_signal_state_for_user("4917").await.unwrap(),
            "prefix of another user"
        );
        b.delete_session("49170:1@s.whatsapp.net").await.unwrap();
        assert!(!b.has_session("49170:1@s.whatsapp.net").await.unwrap());

        b.store_prekeys_batch(
            &[
                (5, Bytes::from_static(b"p5")),
                (12, Bytes::from_static(b"p12")),
            ],
            false,
        )
        .await
        .unwrap();
        assert_eq!(
            b.get_max_prekey_id().await.unwrap(),
            12,
            "numeric, not lexical, order"
        );
        b.remove_prekey(5).await.unwrap();
        b.mark_prekeys_uploaded(&[5, 12]).await.unwrap();
        assert_eq!(
            b.load_prekey(5).await.unwrap(),
            None,
            "marking does not resurrect"
        );
        assert_eq!(
            b.load_prekeys_batch(&[5, 12]).await.unwrap(),
            vec![(12, Bytes::from_static(b"p12"))]
        );
        b.store_signed_prekey(1, b"spk").await.unwrap();
        assert_eq!(
            b.load_all_signed_prekeys().await.unwrap(),
            vec![(1, b"spk".to_vec())]
        );
        b.put_sender_keys_batch(&[("g:1".into(), Bytes::from_static(b"sk"))])
            .await
            .unwrap();
        assert_eq!(b.get_sender_key("g:1").await.unwrap(), Some(b"sk".to_vec()));
    }

    #[tokio::test]
    async fn a_batch_is_one_durable_commit() {
        let metrics = Arc::new(Metrics::default());
        let store = Store::open_in_memory(metrics.clone()).unwrap();
        let b = KvBackend::new(store.kv(KvTable::WhatsApp));
        let fsyncs = || {
            metrics
                .store_fsyncs
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let before = fsyncs();
        let many: Vec<(Arc<str>, Bytes)> = (0..50)
            .map(|i| {
                (
                    Arc::from(format!("u{i}@s.whatsapp.net")),
                    Bytes::from_static(b"x"),
                )
            })
            .collect();
        b.put_sessions_batch(&many).await.unwrap();
        assert_eq!(fsyncs(), before + 1);
    }

    #[tokio::test]
    async fn sent_message_take_is_atomic_and_consumes() {
        let (_s, b) = backend();
        b.store_sent_message("c@s.whatsapp.net", "3EB0AA", b"payload")
            .await
            .unwrap();
        let (x, y) = tokio::join!(
            b.take_sent_message("c@s.whatsapp.net", "3EB0AA"),
            b.take_sent_message("c@s.whatsapp.net", "3EB0AA")
        );
        let got: Vec<_> = [x.unwrap(), y.unwrap()].into_iter().flatten().collect();
        assert_eq!(got, vec![b"payload".to_vec()], "exactly one taker gets it");
        b.store_sent_message("c@s.whatsapp.net", "old", b"p")
            .await
            .unwrap();
        assert_eq!(
            b.delete_expired_sent_messages(now_secs() + 10)
                .await
                .unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn lid_mappings_keep_the_reverse_index() {
        let (_s, b) = backend();
        let entry = |pn: &str| LidPnMappingEntry {
            lid: "1000001".into(),
            phone_number: pn.into(),
            created_at: 1,
            updated_at: 2,
            learning_source: "usync".into(),
        };
        b.put_lid_mapping(&entry("4917011")).await.unwrap();
        b.put_lid_mapping(&entry("4917022")).await.unwrap();
        assert!(
            b.get_pn_mapping("4917011").await.unwrap().is_none(),
            "old number unlinked"
        );
        assert_eq!(
            b.get_pn_mapping("4917022").await.unwrap().unwrap().lid,
            "1000001"
        );
        assert_eq!(b.get_all_lid_mappings().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn msg_secrets_merge_and_expire() {
        let (_s, b) = backend();
        let e = |exp: i64, ts: i64| MsgSecretEntry {
            chat: "c".into(),
            sender: "s".into(),
            msg_id: "m".into(),
            secret: [1; 32],
            expires_at: exp,
            message_ts: ts,
        };
        b.put_msg_secrets(vec![e(100, 5)]).await.unwrap();
        b.put_msg_secrets(vec![e(50, 0)]).await.unwrap();
        assert_eq!(
            b.get_msg_secret_with_ts("c", "s", "m").await.unwrap(),
            Some((vec![1; 32], 5)),
            "a 0 parent time never clobbers a known one"
        );
        assert_eq!(
            b.delete_expired_msg_secrets(99).await.unwrap(),
            0,
            "window did not shrink"
        );
        assert_eq!(b.delete_expired_msg_secrets(100).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn tc_tokens_never_regress() {
        let (_s, b) = backend();
        b.store_received_tc_token("j", b"new", 20).await.unwrap();
        b.store_received_tc_token("j", b"stale", 10).await.unwrap();
        b.touch_tc_token_sender_timestamp("j", 30).await.unwrap();
        b.touch_tc_token_sender_timestamp("j", 25).await.unwrap();
        let t = b.get_tc_token("j").await.unwrap().unwrap();
        assert_eq!(
            (t.token.as_slice(), t.token_timestamp, t.sender_timestamp),
            (&b"new"[..], 20, Some(30))
        );
        assert_eq!(b.delete_expired_tc_tokens(21, 31).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn app_state_and_pending_inbound() {
        let (_s, b) = backend();
        b.set_sync_key(
            b"\x01\x02",
            AppStateSyncKey {
                key_data: vec![9],
                fingerprint: vec![],
                timestamp: 3,
            },
        )
        .await
        .unwrap();
        assert_eq!(b.get_latest_sync_key_id().await.unwrap(), Some(vec![1, 2]));
        assert_eq!(
            b.get_sync_key(b"\x01\x02").await.unwrap().unwrap().key_data,
            vec![9]
        );
        let mac = |i: u8| AppStateMutationMAC {
            index_mac: vec![i; 32],
            value_mac: vec![i],
        };
        b.put_mutation_macs("regular", 1, &[mac(1), mac(2)])
            .await
            .unwrap();
        b.put_mutation_macs("other", 1, &[mac(3)]).await.unwrap();
        let got = b
            .get_mutation_macs("regular", &[[1; 32], [3; 32]])
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        b.clear_mutation_macs("regular").await.unwrap();
        assert_eq!(b.get_mutation_mac("regular", &[2; 32]).await.unwrap(), None);
        assert_eq!(
            b.get_mutation_mac("other", &[3; 32]).await.unwrap(),
            Some(vec![3])
        );

        b.store_pending_inbound_batch(&[PendingInboundRow {
            chat: "c",
            sender: "s",
            id: "1",
            message: b"m",
        }])
        .await
        .unwrap();
        assert_eq!(
            b.get_pending_inbound("c", "s", "1").await.unwrap(),
            Some(b"m".to_vec())
        );
        b.delete_pending_inbound_batch(&[PendingInboundKey {
            chat: "c",
            sender: "s",
            id: "1",
        }])
        .await
        .unwrap();
        assert_eq!(b.get_pending_inbound("c", "s", "1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn device_round_trips_and_wipe_takes_only_whatsapp_keys() {
        let (store, b) = backend();
        assert!(!b.exists().await.unwrap());
        b.create().await.unwrap();
        // A fresh identity is not a link.
        assert_eq!(b.linked().await, None);
        assert_eq!(b.get(K_LINKED_AT).await.unwrap(), None);
        let d = b.load().await.unwrap().unwrap();
        let mut d2 = d.clone();
        d2.push_name = "owner".into();
        d2.pn = Some("491701234567@s.whatsapp.net".parse().unwrap());
        b.save(&d2).await.unwrap();
        let back = b.load().await.unwrap().unwrap();
        assert_eq!(back.push_name, "owner");
        assert_eq!(
            back.identity_key.public_key, d.identity_key.public_key,
            "keys survive"
        );
        assert_eq!(back.registration_id, d.registration_id);
        assert!(b.is_paired().await);
        // Linked once: the time of the first save with the number, kept by later saves.
        let (number, since) = b.linked().await.unwrap();
        assert_eq!(number, "+491701234567");
        let since = since.unwrap();
        assert!(since.abs_diff(crate::store::now_ms()) < 60_000, "{since}");
        b.save(&d2).await.unwrap();
        assert_eq!(b.linked().await.unwrap().1, Some(since));
        store
            .set_auth("openclaw/device", b"k".to_vec())
            .await
            .unwrap();
        assert!(b.wipe().await.unwrap() >= 1);
        assert!(!b.exists().await.unwrap());
        assert_eq!(b.linked().await, None);
        assert_eq!(
            b.get(K_LINKED_AT).await.unwrap(),
            None,
            "wiped with the link"
        );
        // The dying client's last flush cannot resurrect the identity.
        assert!(b.save(&d2).await.is_err());
        assert!(!b.exists().await.unwrap());
        assert_eq!(
            store.auth("openclaw/device").await.unwrap(),
            Some(b"k".to_vec())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_is_durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig::default();
        let reg;
        {
            let store = Store::open(dir.path(), &cfg, Arc::new(Metrics::default())).unwrap();
            let b = KvBackend::new(store.kv(KvTable::WhatsApp));
            b.create().await.unwrap();
            reg = b.load().await.unwrap().unwrap().registration_id;
            b.put_session("a@s.whatsapp.net", b"ratchet").await.unwrap();
            store.close().await;
        }
        let store = crate::store::kv::reopen_for_test(dir.path());
        let b = KvBackend::new(store.kv(KvTable::WhatsApp));
        assert_eq!(b.load().await.unwrap().unwrap().registration_id, reg);
        assert_eq!(
            b.get_session("a@s.whatsapp.net").await.unwrap().unwrap(),
            Bytes::from_static(b"ratchet")
        );
        store.close().await;
    }
}
