//! The WhatsApp client's store traits (`SignalStore`, `AppSyncStore`, `ProtocolStore`,
//! `MsgSecretStore`, `DeviceStore`: together a `Backend`) on clawbox's key-value table
//! `whatsapp` ([`crate::store::kv`]). This file owns the shared [`KvBackend`] and the row access
//! every part uses (get, durable batch put, scan, JSON rows, expiry sweep); it never builds a key.
//!
//! Each `*_batch` call is one write transaction, and the store always comes back after a crash as
//! it was at some fsync (never a mix), so the client's own write ordering (sessions, then
//! identities, then sender keys; a consumed prekey deleted only after its session) holds across a
//! crash or power loss. Writes are durable before the trait call returns except those the client
//! itself treats as write-behind, which are deferred ([`Commit::Deferred`]: durable with the next
//! fsync anyone makes) so that a message the box drops costs no fsync:
//!
//! Where a WhatsApp message's writes come from (whatsapp-rust 0.7.0, live path: decrypt into the
//! client's Signal cache → `store_pending_inbound_batch` → the durability hook (clawbox's inbox
//! accept, the one fsync of an accepted message; nothing for a dropped one) →
//! `delete_pending_inbound_batch` → ack/delivery receipt → 25 ms later the coalesced Signal-cache
//! flush (`put_sessions_batch`, `put_identities_batch`, `remove_prekey`, `put_sender_keys_batch`),
//! plus message secrets, base keys, LID mappings, device lists and privacy tokens on the way).
//! Before this change each of those was an fsync: 3–4 per message, strangers' included, and the
//! pending row left the plaintext in freed pages. Now:
//! - pending inbound rows are held in memory ([`Kv::hold`]): written only if an fsync happens
//!   while one is held (so a durable Signal advance never outlives its message's replay copy);
//! - receive-side Signal state and the bookkeeping above are deferred: the client acks after the
//!   hook and flushes the receive ratchet after the ack in any case, because a lost receive advance
//!   re-derives forward and a consumed one-time prekey is deleted only after its session (both
//!   deferred, so both lost or both kept);
//! - what must be durable before something leaves the box stays fsynced: a session or sender-key
//!   record whose counter lease was raised (the client's pre-wire gate: after a crash the chain
//!   fast-forwards past the durable lease, so no counter, key and IV are reused; detected here by
//!   comparing the stored and the new `reserved_*` ceiling), pre-keys (uploaded after their
//!   write), signed pre-keys, the device identity, app-state keys, deletions of sessions and
//!   identities, takes and wipes.
//!
//! Read-modify-write methods the traits require to be atomic (LID mappings, trusted-contact
//! tokens, message secrets, prekey upload marks) run under one lock, since this adapter is the
//! table's only writer. Never logs keys or message contents; never touches any other table.
//!
//! One file per family of the client's state:
//! - `keys`: the on-disk key layout; every key the backend reads or writes is built there.
//! - `signal`: `SignalStore`: identities, sessions, pre-keys, signed pre-keys, sender keys.
//! - `app_sync`: `AppSyncStore`: app-state sync keys, collection versions, mutation MACs.
//! - `protocol`: `ProtocolStore`: sender-key status, LID↔phone mappings, base keys, device
//!   lists, group metadata, trusted-contact tokens, sent messages, pending inbound messages.
//! - `secrets`: `MsgSecretStore`: message secrets.
//! - `device`: `DeviceStore` and the linked account: paired or not, when linked, the logout wipe.

mod app_sync;
mod device;
mod keys;
mod protocol;
mod secrets;
mod signal;
#[cfg(test)]
mod tests;

use crate::store::kv::{Commit, Kv, KvWrite};
use std::sync::Arc;
use whatsapp_rust::wacore::store::error::{Result, StoreError};

/// Rows of one time-pruned family (sent messages, pending inbound, secrets, tokens) scanned by
/// an expiry sweep.
const MAX_SWEEP_ROWS: usize = 50_000;

/// The `Backend` over clawbox's store. Cheap to clone.
#[derive(Clone)]
pub struct KvBackend {
    kv: Kv,
    /// Serialises read-modify-write sequences so they are atomic against each other.
    rmw: Arc<tokio::sync::Mutex<()>>,
    /// The device row's saves and loads, one at a time and in order: a load after a save that
    /// has begun reads what it wrote ([`KvBackend::settle_device`]).
    device_row: Arc<tokio::sync::Mutex<()>>,
    /// Set by [`KvBackend::wipe`]: the logged-out client's last flushes must not bring its
    /// identity back, so every later write is refused.
    wiped: Arc<std::sync::atomic::AtomicBool>,
}

impl KvBackend {
    pub fn new(kv: Kv) -> KvBackend {
        KvBackend {
            kv,
            rmw: Arc::new(tokio::sync::Mutex::new(())),
            device_row: Arc::new(tokio::sync::Mutex::new(())),
            wiped: Arc::default(),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv.get(key).await.map_err(db)
    }
    fn refuse_if_wiped(&self) -> Result<()> {
        if self.wiped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Validation(
                "the WhatsApp state was wiped (logged out); nothing more is saved".into(),
            ));
        }
        Ok(())
    }
    /// One transaction, fsynced before this returns.
    async fn put_all(&self, writes: Vec<KvWrite>) -> Result<()> {
        self.put_all_with(writes, Commit::Fsync).await
    }
    /// One transaction, durable with the next fsync anyone makes (see the module doc).
    async fn put_deferred(&self, writes: Vec<KvWrite>) -> Result<()> {
        self.put_all_with(writes, Commit::Deferred).await
    }
    async fn put_all_with(&self, writes: Vec<KvWrite>, commit: Commit) -> Result<()> {
        self.refuse_if_wiped()?;
        self.kv.put_batch_with(writes, commit).await.map_err(db)
    }
    /// One row, durable with the next fsync anyone makes.
    async fn put_later(&self, key: String, value: Vec<u8>) -> Result<()> {
        self.put_deferred(vec![(key, Some(value))]).await
    }
    async fn del_later(&self, key: String) -> Result<()> {
        self.put_deferred(vec![(key, None)]).await
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
        // An expired row swept again after a crash costs nothing.
        self.put_deferred(doomed).await?;
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
