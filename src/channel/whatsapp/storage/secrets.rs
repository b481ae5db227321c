//! `MsgSecretStore`: message secrets (the per-message keys of reactions, polls and edits),
//! merged per message so a later, poorer entry never clobbers what is known, and swept when
//! expired. Owns the secret row layout. Never logs a secret.

use super::keys::k_sec;
use super::{KvBackend, db};
use std::collections::HashMap;
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{
    MsgSecretEntry, MsgSecretStore, merge_msg_secret_expiry, merge_msg_secret_message_ts,
};

/// Message secret layout: 32-byte secret, 8-byte expiry, 8-byte parent time.
const SECRET_ROW_LEN: usize = 32 + 8 + 8;

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
        self.put_deferred(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::whatsapp::storage::tests::backend;

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
}
