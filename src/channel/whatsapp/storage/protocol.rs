//! `ProtocolStore`: the client's bookkeeping around the Signal state: which group devices hold
//! our sender key, LID↔phone mappings (both directions), base keys, device lists, group
//! metadata, trusted-contact tokens, sent messages kept for retries and pending inbound
//! messages. Owns the time-stamped row layout of the families pruned by age. Never logs a
//! message body.
//!
//! Every write here is deferred (durable with the next fsync anyone makes): each row is either
//! learned again (mappings, device lists, tokens, base keys, group metadata), resent (sender-key
//! status: a device marked as lacking our key gets it again), or a convenience (sent messages
//! kept for retries); pending inbound rows are held, not written (see [`super`]).

use super::keys::{SEP, k_bk, k_dl, k_gm, k_lid, k_pin, k_pn, k_sent, k_skd_prefix, k_tc};
use super::{KvBackend, MAX_SWEEP_ROWS, db, from_json, to_json};
use crate::store::kv::KvWrite;
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{
    DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore,
    TcTokenEntry,
};

/// LID↔phone mappings (one per contact the account talks to).
const MAX_LID_ROWS: usize = 50_000;
/// Sender-key device rows scanned at once (groups × devices).
const MAX_SKD_ROWS: usize = 50_000;

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
        self.put_deferred(
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
        self.put_deferred(doomed).await
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
        self.put_deferred(writes).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        let rows = self.scan("lid/", MAX_LID_ROWS).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, v)| from_json(&v).ok())
            .collect())
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.put_later(k_bk(address, message_id), base_key.to_vec())
            .await
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
        self.del_later(k_bk(address, message_id)).await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.put_later(k_dl(&record.user), to_json(&record)?).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        let mut writes = Vec::with_capacity(records.len());
        for r in &records {
            writes.push((k_dl(&r.user), Some(to_json(r)?)));
        }
        self.put_deferred(writes).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.get_json(&k_dl(user)).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.del_later(k_dl(user)).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.get(&k_gm(group_jid)).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.put_later(k_gm(group_jid), blob.to_vec()).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.del_later(k_gm(group_jid)).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.get_json(&k_tc(jid)).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.put_later(k_tc(jid), to_json(entry)?).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let _g = self.rmw.lock().await;
        self.del_later(k_tc(jid)).await
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
        self.put_later(k_tc(jid), to_json(&entry)?).await
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
        self.put_later(k_tc(jid), to_json(&entry)?).await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.put_later(k_sent(chat_jid, message_id), stamped(now_secs(), payload))
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

    /// Held, not written (see the module doc of [`super`]): a message the hook drops leaves
    /// no trace in the file.
    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.refuse_if_wiped()?;
        self.kv
            .hold(vec![(
                k_pin(chat, sender, id),
                stamped(now_secs(), message),
            )])
            .await
            .map_err(db)
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .kv
            .get_held(&k_pin(chat, sender, id))
            .await
            .map_err(db)?
            .map(unstamped))
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.kv
            .release(vec![k_pin(chat, sender, id)])
            .await
            .map_err(db)
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.sweep("pin/", |v| stamp_of(v) < cutoff_timestamp).await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        self.refuse_if_wiped()?;
        let now = now_secs();
        self.kv
            .hold(
                rows.iter()
                    .map(|r| (k_pin(r.chat, r.sender, r.id), stamped(now, r.message)))
                    .collect(),
            )
            .await
            .map_err(db)
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        self.kv
            .release(keys.iter().map(|k| k_pin(k.chat, k.sender, k.id)).collect())
            .await
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::whatsapp::storage::tests::backend;

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
}
