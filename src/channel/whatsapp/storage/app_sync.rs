//! `AppSyncStore`: app-state sync (contacts, chat settings across the account's devices): the
//! sync keys and which one is latest, each collection's version and its mutation MACs. Never
//! logs a key.

use super::keys::{K_SYNC_LATEST, k_mac, k_mac_prefix, k_sync, k_ver};
use super::{KvBackend, db, to_json};
use std::collections::HashMap;
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::appstate::hash::HashState;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::{AppStateSyncKey, AppSyncStore};

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
