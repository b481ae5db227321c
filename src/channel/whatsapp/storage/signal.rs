//! `SignalStore`: the Signal protocol's own state: identities, sessions, one-time pre-keys (with
//! their uploaded mark), signed pre-keys and sender keys. Owns the pre-key row layout. Never
//! logs a key.

use super::keys::{k_id, k_pk, k_ses, k_sk, k_spk};
use super::{KvBackend, db};
use bytes::Bytes;
use std::sync::Arc;
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::libsignal::protocol::{SenderKeyRecord, SessionRecord};
use whatsapp_rust::wacore::store::error::{Result, StoreError};
use whatsapp_rust::wacore::store::traits::SignalStore;

/// Prekeys kept at most in one scan (the client uploads 812 per batch and keeps a few batches).
const MAX_PREKEY_ROWS: usize = 20_000;
/// Signed prekeys: the current one and a few rotated ones.
const MAX_SIGNED_PREKEY_ROWS: usize = 1_000;
/// Sessions/identities of one user (one per device).
const MAX_DEVICE_ROWS: usize = 1_000;

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

/// A session/identity address belongs to `user` when it is `user@…` or `user:dev@…`.
fn address_of_user(addr: &str, user: &str) -> bool {
    addr.strip_prefix(user)
        .is_some_and(|rest| rest.starts_with('@') || rest.starts_with(':'))
}

/// A record's counter-lease ceiling (`None`: it does not decode).
type Ceiling = fn(&[u8]) -> Option<u32>;

fn session_ceiling(v: &[u8]) -> Option<u32> {
    SessionRecord::deserialize(v)
        .ok()
        .map(|r| r.reserved_sender_chain_index())
}

fn sender_key_ceiling(v: &[u8]) -> Option<u32> {
    SenderKeyRecord::deserialize(v)
        .ok()
        .map(|r| r.reserved_iteration())
}

/// Whether writing `new` over `old` raises the record's counter lease: the client lets the
/// ciphertext that raised it leave only after this write, so it must be fsynced. A record that
/// does not decode counts as raising (the safe side).
fn raises_lease(old: Option<&[u8]>, new: &[u8], ceiling: Ceiling) -> bool {
    match (old.map(ceiling), ceiling(new)) {
        (_, None) => true,
        (_, Some(0)) => false,
        (Some(Some(was)), Some(now)) => now > was,
        _ => true,
    }
}

impl KvBackend {
    /// Puts lease-bearing records (sessions, sender keys): fsynced if any raises its lease (a
    /// send waits for it), else deferred (a received message's ratchet advance).
    async fn put_leased(&self, rows: Vec<(String, Vec<u8>)>, ceiling: Ceiling) -> Result<()> {
        let olds = self
            .kv
            .get_many(rows.iter().map(|(k, _)| k.clone()).collect())
            .await
            .map_err(db)?;
        let raised = rows
            .iter()
            .zip(&olds)
            .any(|((_, new), old)| raises_lease(old.as_deref(), new, ceiling));
        let writes = rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
        if raised {
            self.put_all(writes).await
        } else {
            self.put_deferred(writes).await
        }
    }

    async fn put_sessions(&self, rows: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.put_leased(rows, session_ceiling).await
    }

    async fn put_sender_keys(&self, rows: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.put_leased(rows, sender_key_ceiling).await
    }
}

#[async_trait]
impl SignalStore for KvBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_deferred(vec![(k_id(address), Some(key.to_vec()))])
            .await
    }

    /// Deferred: learned from a received message; lost with that message's session advance.
    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_deferred(
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
        self.put_sessions(vec![(k_ses(address), session.to_vec())])
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_sessions(
            sessions
                .iter()
                .map(|(a, s)| (k_ses(a), s.to_vec()))
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

    /// Deferred: the client deletes a consumed one-time pre-key only after its session was
    /// written, and a later fsync covers both (or a crash loses both: the pre-key message can
    /// still be decrypted when it comes again).
    async fn remove_prekey(&self, id: u32) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.put_deferred(vec![(k_pk(id), None)]).await
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
        self.put_sender_keys(vec![(k_sk(address), record.to_vec())])
            .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_sender_keys(
            sender_keys
                .iter()
                .map(|(a, r)| (k_sk(a), r.to_vec()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::whatsapp::storage::tests::backend;

    /// The first byte stands for the lease ceiling; an empty record does not decode.
    fn fake_ceiling(v: &[u8]) -> Option<u32> {
        v.first().map(|b| u32::from(*b))
    }

    /// Only a raised (or unknowable) counter lease makes a session or sender-key write durable
    /// before it returns: a received message's ratchet advance keeps the ceiling and is deferred.
    #[test]
    fn only_a_raised_lease_is_fsynced() {
        let r = |old: Option<&[u8]>, new: &[u8]| raises_lease(old, new, fake_ceiling);
        assert!(!r(Some(&[25]), &[25]), "same lease: a receive advance");
        assert!(!r(None, &[0]), "no lease: a new session that has not sent");
        assert!(
            !r(Some(&[50]), &[25]),
            "a lease rebased down after a chain reset"
        );
        assert!(r(Some(&[25]), &[50]), "raised: a send waits for it");
        assert!(r(None, &[25]), "a new record that already leased");
        assert!(r(Some(&[]), &[25]), "the stored record does not decode");
        assert!(r(Some(&[25]), &[]), "the new record does not decode");
    }

    /// Real records: a fresh session record has no lease, so writing it is deferred.
    #[test]
    fn a_fresh_session_record_has_no_lease() {
        let bytes = SessionRecord::new_fresh().serialize().unwrap();
        assert_eq!(session_ceiling(&bytes), Some(0));
        assert_eq!(session_ceiling(b"not a record \xff\xff"), None);
    }

    #[test]
    fn an_empty_prekey_row_is_no_record_not_a_panic() {
        assert_eq!(prekey_record(Vec::new()), None);
        assert_eq!(prekey_record(vec![1]), Some(Bytes::new()));
        assert_eq!(
            prekey_record(prekey_row(b"rec", true)),
            Some(Bytes::from_static(b"rec"))
        );
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
}
