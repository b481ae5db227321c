//! Tests of the backend as a whole (it is a `Backend`, a batch is one durable commit, state
//! survives a reopen, app state beside pending inbound) and the shared fixture `backend()`.
//! Tests of one family live in its own file.

use super::*;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::kv::KvTable;
use bytes::Bytes;
use whatsapp_rust::wacore::appstate::processor::AppStateMutationMAC;
use whatsapp_rust::wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, DeviceStore, PendingInboundKey, PendingInboundRow,
    ProtocolStore, SignalStore,
};

pub(super) fn backend() -> (Store, KvBackend) {
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
