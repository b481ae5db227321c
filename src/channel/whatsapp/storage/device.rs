//! `DeviceStore` and the linked account: this box's one device identity, whether it is paired,
//! the linked number and when it was linked, and the logout wipe that forgets it all and refuses
//! every later write.

use super::KvBackend;
use super::keys::{K_DEVICE, K_LID_REFRESHED_AT, K_LINKED_AT};
use super::to_json;
use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::store::Device;
use whatsapp_rust::wacore::store::error::Result;
use whatsapp_rust::wacore::store::traits::DeviceStore;

impl KvBackend {
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
        let number = crate::channel::whatsapp::adapter::e164(&pn.user)
            .unwrap_or_else(|| format!("+{}", pn.user));
        let since = match self.get(K_LINKED_AT).await {
            Ok(Some(v)) => <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .map(u64::from_be_bytes),
            _ => None,
        };
        Some((number, since))
    }
}

impl KvBackend {
    /// When `allow_from` was last resolved to LIDs in full (ms since the epoch), if ever since
    /// the link (wiped with it).
    pub async fn lid_refreshed_at(&self) -> Option<u64> {
        match self.get(K_LID_REFRESHED_AT).await {
            Ok(Some(v)) => <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .map(u64::from_be_bytes),
            _ => None,
        }
    }

    /// Records a full resolution of `allow_from` at `at_ms`.
    pub async fn set_lid_refreshed_at(&self, at_ms: u64) -> Result<()> {
        self.put(K_LID_REFRESHED_AT.to_string(), at_ms.to_be_bytes().to_vec())
            .await
    }
}

impl KvBackend {
    /// Makes the stored device what a client holds in memory (`current`), unless it already is;
    /// true when it wrote. Called when a client's state must outlive it — at pair success and
    /// before the next client is built from the store. The library's own flush cannot promise
    /// that: its background saver clears the dirty flag before its save lands, so a flush in that
    /// window returns at once with the save still in flight (on a slow card, a client built then
    /// read the unpaired device and showed a second QR after a successful scan).
    pub async fn settle_device(&self, current: &Device) -> Result<bool> {
        let _g = self.device_row.lock().await;
        if self.wiped.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        let stored = self.get(K_DEVICE).await?;
        if stored.as_deref() == Some(to_json(current)?.as_slice()) {
            return Ok(false);
        }
        self.save_device(current).await?;
        Ok(true)
    }

    /// The device row (and, at the link, its time), fsynced; the caller holds `device_row`.
    async fn save_device(&self, device: &Device) -> Result<()> {
        let mut writes = vec![(K_DEVICE.to_string(), Some(to_json(device)?))];
        // The first save that carries the account's number is the moment of linking, kept in the
        // same transaction (and wiped with the rest at logout).
        if device.pn.is_some() && self.get(K_LINKED_AT).await?.is_none() {
            let now = crate::store::now_ms().to_be_bytes().to_vec();
            writes.push((K_LINKED_AT.to_string(), Some(now)));
        }
        self.put_all(writes).await
    }
}

#[async_trait]
impl DeviceStore for KvBackend {
    async fn save(&self, device: &Device) -> Result<()> {
        let _g = self.device_row.lock().await;
        self.save_device(device).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let _g = self.device_row.lock().await;
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
    use crate::channel::whatsapp::storage::tests::backend;

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

    /// The pairing race, at the store: a load that begins while a save is under way reads what
    /// the save wrote (the library's saver and the next client's load overlapped on a slow card).
    /// On a real store, polled together, the save starts first; without the row's lock the load's
    /// one read beats the save's read and write (it failed so).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_during_a_save_reads_the_saved_device() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
        let store = crate::store::Store::open(dir.path(), &Default::default(), metrics).unwrap();
        let b = KvBackend::new(store.kv(crate::store::kv::KvTable::WhatsApp));
        b.create().await.unwrap();
        let mut paired = b.load().await.unwrap().unwrap();
        paired.pn = Some("491701234567@s.whatsapp.net".parse().unwrap());
        let (saved, loaded) = tokio::join!(b.save(&paired), b.load());
        saved.unwrap();
        assert_eq!(
            loaded.unwrap().unwrap().pn,
            paired.pn,
            "read the saved device"
        );
    }

    /// `settle_device` stores the in-memory device when the stored one differs (the unpaired
    /// row a late save left), writes nothing when they match, and nothing after a wipe.
    #[tokio::test]
    async fn settle_device_writes_only_what_differs() {
        let (_store, b) = backend();
        b.create().await.unwrap();
        let unpaired = b.load().await.unwrap().unwrap();
        assert!(!b.settle_device(&unpaired).await.unwrap(), "already stored");
        let mut paired = unpaired.clone();
        paired.pn = Some("491701234567@s.whatsapp.net".parse().unwrap());
        assert!(b.settle_device(&paired).await.unwrap());
        assert!(b.is_paired().await);
        assert!(!b.settle_device(&paired).await.unwrap(), "nothing new");
        b.wipe().await.unwrap();
        assert!(
            !b.settle_device(&paired).await.unwrap(),
            "wiped: not brought back"
        );
        assert!(!b.exists().await.unwrap());
    }
}
