//! A generic key-value facility inside the store: named tables of `&str` → `&[u8]`, for state a
//! library owns and clawbox only keeps (today: the WhatsApp client's keys, sessions and device).
//!
//! Owns the operations and their semantics: point reads, batched reads, prefix scans (bounded),
//! batched puts and deletes in ONE write transaction, an atomic take (get + delete), a prefix
//! wipe, and held rows. Never interprets the bytes it stores and never touches the daemon's own
//! tables (inbox, outbox, sessions, cursors, auth).
//!
//! Three kinds of write, chosen by the caller (who knows what depends on the row):
//! - [`Commit::Fsync`]: durable before the call returns (a take and a prefix wipe are always so).
//! - [`Commit::Deferred`]: committed at once (every later read sees it) but not fsynced; it becomes
//!   durable with the next fsync anyone makes (an accepted message, a send's in-flight mark, a
//!   durable write, the close), and is lost with everything committed after that fsync if the
//!   box dies first: the file always comes back as it was at some fsync, never a mix. The
//!   periodic flush leaves deferred writes alone (a box that only drops messages writes nothing
//!   durable), up to [`MAX_DEFERRED_COMMITS`].
//! - held rows ([`Kv::hold`]): kept in the writer's memory, never written, unless an fsync happens
//!   while they are held: then that fsync's transaction writes them too, so a durable snapshot
//!   never lacks a row that was held when it was taken. Released rows that were never written
//!   leave nothing in the file.

use super::held::{Held, HeldRow};
use super::{Reply, Store, StoreError};
use redb::{ReadableTable, TableDefinition};

/// The WhatsApp client's state (Signal sessions and keys, app-state keys, device identity).
pub(super) const WHATSAPP: TableDefinition<&str, &[u8]> = TableDefinition::new("whatsapp");

/// Rows a single prefix scan may return at most: bounds the memory one call can take. Callers
/// ask for less; a scan that would exceed its limit fails with a clear error instead of
/// silently truncating.
pub const MAX_SCAN_ROWS: usize = 100_000;

/// Deferred commits (each a few pages of the file) allowed before the periodic flush makes them
/// durable after all: redb cannot reuse the pages a commit freed until an fsync follows it, so
/// this bounds how far the file grows on a box that only ever drops messages.
pub const MAX_DEFERRED_COMMITS: u32 = 512;
/// Bytes of held rows (keys and values) kept in memory at most; beyond it a held row is written
/// at once like a deferred one. Twice the WhatsApp client's largest inbound batch (4 MiB).
pub const MAX_HELD_BYTES: usize = 8 * 1024 * 1024;

/// How a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// fsynced before the call returns.
    Fsync,
    /// Committed now, made durable by the next fsync (see the module doc).
    Deferred,
}

/// Which key-value table an operation addresses. A closed set: tables are created at open time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvTable {
    WhatsApp,
}

impl KvTable {
    pub(super) fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            KvTable::WhatsApp => WHATSAPP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvTable::WhatsApp => "whatsapp",
        }
    }
}

/// One write of a batch: `Some(value)` puts, `None` deletes.
pub type KvWrite = (String, Option<Vec<u8>>);

/// Key-value reads, answered by the reader thread.
pub(crate) enum KvRead {
    Get(KvTable, String, Reply<Option<Vec<u8>>>),
    GetMany(KvTable, Vec<String>, Reply<Vec<Option<Vec<u8>>>>),
    Scan(KvTable, String, usize, Reply<Vec<(String, Vec<u8>)>>),
}

/// Key-value writes, carried to the writer.
pub(crate) enum KvWriteOp {
    PutBatch(KvTable, Vec<KvWrite>, Commit, Reply<()>),
    Take(KvTable, String, Reply<Option<Vec<u8>>>),
    DeletePrefix(KvTable, String, Reply<usize>),
    /// Held rows (see the module doc): keep these in memory.
    Hold(KvTable, Vec<(String, Vec<u8>)>, Reply<()>),
    /// Held rows no longer needed: forgotten, or deleted (deferred) if they were written.
    Release(KvTable, Vec<String>, Reply<()>),
    /// A held row, or the stored row of that key.
    GetHeld(KvTable, String, Reply<Option<Vec<u8>>>),
}

impl KvRead {
    pub(crate) fn fail(self, e: StoreError) {
        match self {
            KvRead::Get(_, _, r) => drop(r.send(Err(e))),
            KvRead::GetMany(_, _, r) => drop(r.send(Err(e))),
            KvRead::Scan(_, _, _, r) => drop(r.send(Err(e))),
        }
    }

    fn table(&self) -> KvTable {
        match self {
            KvRead::Get(t, ..) | KvRead::GetMany(t, ..) | KvRead::Scan(t, ..) => *t,
        }
    }
}

impl KvWriteOp {
    fn table(&self) -> KvTable {
        match self {
            KvWriteOp::PutBatch(t, ..)
            | KvWriteOp::Take(t, ..)
            | KvWriteOp::DeletePrefix(t, ..)
            | KvWriteOp::Hold(t, ..)
            | KvWriteOp::Release(t, ..)
            | KvWriteOp::GetHeld(t, ..) => *t,
        }
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Answers a read from one opened table.
fn read_from<T>(t: &T, op: KvRead)
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    match op {
        KvRead::Get(_, key, r) => {
            let v = t
                .get(key.as_str())
                .map(|o| o.map(|v| v.value().to_vec()))
                .map_err(io);
            let _ = r.send(v);
        }
        KvRead::GetMany(_, keys, r) => {
            let v = keys
                .iter()
                .map(|k| {
                    t.get(k.as_str())
                        .map(|o| o.map(|v| v.value().to_vec()))
                        .map_err(io)
                })
                .collect::<Result<Vec<_>, _>>();
            let _ = r.send(v);
        }
        KvRead::Scan(table, prefix, limit, r) => {
            let _ = r.send(scan(t, table, &prefix, limit));
        }
    }
}

fn scan<T>(
    t: &T,
    table: KvTable,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let limit = limit.min(MAX_SCAN_ROWS);
    let mut out = Vec::new();
    for row in t.range::<&str>(prefix..).map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        if out.len() == limit {
            return Err(StoreError::Io(format!(
                "table {}: more than {limit} rows under prefix {prefix:?}",
                table.name()
            )));
        }
        out.push((k.to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// Answers a read from a read transaction.
pub(super) fn read(tx: &redb::ReadTransaction, op: KvRead) {
    match tx.open_table(op.table().def()) {
        Ok(t) => read_from(&t, op),
        Err(e) => op.fail(io(e)),
    }
}

/// Sends an operation's answer once its batch's commit outcome is known.
pub(super) type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// What one key-value operation did inside a write batch.
pub(super) struct Applied {
    /// Bytes written (0: nothing changed).
    pub bytes: u64,
    /// The batch must be fsynced before this operation's caller hears back.
    pub durable: bool,
    /// What it wrote may wait for someone else's fsync ([`Commit::Deferred`]).
    pub deferred: bool,
    /// Sends the answer once the commit outcome is known.
    pub reply: Answer,
}

fn reply<T: Send + 'static>(r: Reply<T>, value: Result<T, StoreError>) -> Applied {
    Applied {
        bytes: 0,
        durable: false,
        deferred: false,
        reply: Box::new(move |commit_err: Option<&StoreError>| {
            let _ = r.send(match commit_err {
                Some(e) => Err(e.clone()),
                None => value,
            });
        }),
    }
}

/// Applies one operation inside the writer's open write transaction. An `Err` aborts the whole
/// batch (every caller in it hears the error).
pub(super) fn apply(
    tx: &redb::WriteTransaction,
    held: &mut Held,
    op: KvWriteOp,
) -> Result<Applied, StoreError> {
    let name = op.table().name();
    let mut t = tx.open_table(op.table().def()).map_err(io)?;
    Ok(match op {
        KvWriteOp::Hold(_, rows, r) => {
            let mut a = reply(r, Ok(()));
            for (k, v) in rows {
                // A row held again replaces the old one (the client's stores are replace-into).
                let was_written = held.forget(name, &k).is_some_and(|old| old.written);
                if was_written || held.bytes + k.len() + v.len() > MAX_HELD_BYTES {
                    // Written already (an fsync took it), or no room: write it, deferred.
                    t.insert(k.as_str(), v.as_slice()).map_err(io)?;
                    a.bytes += (k.len() + v.len()) as u64;
                    a.deferred = true;
                    held.bytes += k.len() + v.len();
                    held.rows.insert(
                        (name, k),
                        HeldRow {
                            value: v,
                            written: true,
                        },
                    );
                    continue;
                }
                held.bytes += k.len() + v.len();
                held.rows.insert(
                    (name, k),
                    HeldRow {
                        value: v,
                        written: false,
                    },
                );
            }
            a
        }
        KvWriteOp::Release(_, keys, r) => {
            let mut a = reply(r, Ok(()));
            for k in keys {
                let written = held.forget(name, &k).is_none_or(|row| row.written);
                if written && t.remove(k.as_str()).map_err(io)?.is_some() {
                    a.bytes += k.len() as u64;
                    a.deferred = true;
                }
            }
            a
        }
        KvWriteOp::GetHeld(_, key, r) => {
            let v = match held.rows.get(&(name, key.clone())) {
                Some(row) => Some(row.value.clone()),
                None => t.get(key.as_str()).map_err(io)?.map(|v| v.value().to_vec()),
            };
            reply(r, Ok(v))
        }
        KvWriteOp::PutBatch(_, writes, commit, r) => {
            let mut bytes = 0u64;
            for (k, v) in &writes {
                match v {
                    Some(v) => {
                        t.insert(k.as_str(), v.as_slice()).map_err(io)?;
                        bytes += (k.len() + v.len()) as u64;
                    }
                    None => {
                        t.remove(k.as_str()).map_err(io)?;
                        bytes += k.len() as u64;
                    }
                }
            }
            let mut a = reply(r, Ok(()));
            a.bytes = bytes.max(1);
            a.durable = commit == Commit::Fsync;
            a.deferred = commit == Commit::Deferred;
            a
        }
        KvWriteOp::Take(_, key, r) => {
            let v = t
                .remove(key.as_str())
                .map_err(io)?
                .map(|v| v.value().to_vec());
            let removed = v.is_some();
            let mut a = reply(r, Ok(v));
            if removed {
                a.bytes = key.len() as u64;
                a.durable = true;
            }
            a
        }
        KvWriteOp::DeletePrefix(_, prefix, r) => {
            // Held rows under the prefix go too: a later fsync must not write them back.
            let doomed: Vec<String> = held
                .rows
                .keys()
                .filter(|(t, k)| *t == name && k.starts_with(prefix.as_str()))
                .map(|(_, k)| k.clone())
                .collect();
            for k in doomed {
                held.forget(name, &k);
            }
            let mut n = 0usize;
            t.retain(|k, _| {
                let hit = k.starts_with(prefix.as_str());
                n += usize::from(hit);
                !hit
            })
            .map_err(io)?;
            let mut a = reply(r, Ok(n));
            a.bytes = n as u64;
            a.durable = true;
            a
        }
    })
}

/// Creates every key-value table (at open time, so reads never meet a missing table).
pub(super) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(WHATSAPP).map_err(io)?;
    Ok(())
}

/// Handle to one key-value table. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    store: Store,
    table: KvTable,
}

impl Store {
    /// The key-value table `table` of this store.
    pub fn kv(&self, table: KvTable) -> Kv {
        Kv {
            store: self.clone(),
            table,
        }
    }
}

impl Kv {
    pub fn table(&self) -> KvTable {
        self.table
    }

    async fn read<T>(&self, make: impl FnOnce(Reply<T>) -> KvRead) -> Result<T, StoreError> {
        self.store.kv_read(make).await
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> KvWriteOp) -> Result<T, StoreError> {
        self.store.kv_write(make).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.read(|r| KvRead::Get(self.table, key, r)).await
    }

    /// Values of `keys`, in the same order (None where absent).
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.read(|r| KvRead::GetMany(self.table, keys, r)).await
    }

    /// Every row whose key starts with `prefix`, in key order; fails if there are more than
    /// `limit` (capped at [`MAX_SCAN_ROWS`]).
    pub async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_string();
        self.read(|r| KvRead::Scan(self.table, prefix, limit, r))
            .await
    }

    /// Puts (`Some`) and deletes (`None`) in one write transaction, fsynced before this returns:
    /// all of them or none.
    pub async fn put_batch(&self, writes: Vec<KvWrite>) -> Result<(), StoreError> {
        self.put_batch_with(writes, Commit::Fsync).await
    }

    /// [`Kv::put_batch`], committed as `commit` says (all of them or none, either way).
    pub async fn put_batch_with(
        &self,
        writes: Vec<KvWrite>,
        commit: Commit,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.write(|r| KvWriteOp::PutBatch(self.table, writes, commit, r))
            .await
    }

    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.put_batch(vec![(key.to_string(), Some(value))]).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.put_batch(vec![(key.to_string(), None)]).await
    }

    /// Holds rows in memory (see the module doc): written only if an fsync happens before
    /// they are released.
    pub async fn hold(&self, rows: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write(|r| KvWriteOp::Hold(self.table, rows, r)).await
    }

    /// Releases held rows: those never written leave no trace; written ones are deleted,
    /// deferred. Rows of these keys written another way are deleted too.
    pub async fn release(&self, keys: Vec<String>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write(|r| KvWriteOp::Release(self.table, keys, r))
            .await
    }

    /// A held row, else the stored row of `key` (a row written before a restart).
    pub async fn get_held(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.write(|r| KvWriteOp::GetHeld(self.table, key, r)).await
    }

    /// Atomically reads and deletes `key`; durable before this returns.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.write(|r| KvWriteOp::Take(self.table, key, r)).await
    }

    /// Deletes every row whose key starts with `prefix` (`""`: the whole table); durable before
    /// this returns. Returns how many rows went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let prefix = prefix.to_string();
        self.write(|r| KvWriteOp::DeletePrefix(self.table, prefix, r))
            .await
    }
}

/// Opens the file store again once the closed writer thread has let go of the file (it drops the
/// database just after answering `close`).
#[cfg(test)]
pub(crate) fn reopen_for_test(dir: &std::path::Path) -> Store {
    let cfg = crate::config::StoreConfig::default();
    for _ in 0..200 {
        match Store::open(
            dir,
            &cfg,
            std::sync::Arc::new(crate::metrics::Metrics::default()),
        ) {
            Ok(s) => return s,
            Err(StoreError::Open(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("reopen: {e}"),
        }
    }
    panic!("the store file stayed locked after close")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    fn mem() -> Store {
        Store::open_in_memory(Arc::new(Metrics::default())).unwrap()
    }

    #[tokio::test]
    async fn put_get_take_and_prefix_ops() {
        let store = mem();
        let kv = store.kv(KvTable::WhatsApp);
        assert_eq!(kv.get("a").await.unwrap(), None);
        kv.put_batch(vec![
            ("ses/1".into(), Some(b"one".to_vec())),
            ("ses/2".into(), Some(b"two".to_vec())),
            ("sk/1".into(), Some(b"k".to_vec())),
        ])
        .await
        .unwrap();
        assert_eq!(kv.get("ses/1").await.unwrap(), Some(b"one".to_vec()));
        assert_eq!(
            kv.get_many(vec!["ses/2".into(), "nope".into(), "sk/1".into()])
                .await
                .unwrap(),
            vec![Some(b"two".to_vec()), None, Some(b"k".to_vec())]
        );
        let rows = kv.scan_prefix("ses/", 10).await.unwrap();
        assert_eq!(
            rows.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["ses/1", "ses/2"]
        );
        assert!(kv.scan_prefix("ses/", 1).await.is_err(), "over the limit");
        // Puts and deletes in one batch.
        kv.put_batch(vec![
            ("ses/1".into(), None),
            ("ses/3".into(), Some(b"three".to_vec())),
        ])
        .await
        .unwrap();
        assert_eq!(kv.get("ses/1").await.unwrap(), None);
        assert_eq!(kv.take("ses/3").await.unwrap(), Some(b"three".to_vec()));
        assert_eq!(kv.take("ses/3").await.unwrap(), None, "a take is consumed");
        assert_eq!(kv.delete_prefix("ses/").await.unwrap(), 1);
        assert_eq!(kv.get("sk/1").await.unwrap(), Some(b"k".to_vec()));
    }

    #[tokio::test]
    async fn wiping_the_table_leaves_the_daemons_own_state() {
        let store = mem();
        store
            .set_auth("openclaw/device", b"key".to_vec())
            .await
            .unwrap();
        store.set_cursor("telegram", b"7".to_vec()).await.unwrap();
        let kv = store.kv(KvTable::WhatsApp);
        kv.put("dev", b"creds".to_vec()).await.unwrap();
        kv.put("id/x", b"i".to_vec()).await.unwrap();
        assert_eq!(kv.delete_prefix("").await.unwrap(), 2);
        assert!(kv.scan_prefix("", 10).await.unwrap().is_empty());
        assert_eq!(
            store.auth("openclaw/device").await.unwrap(),
            Some(b"key".to_vec())
        );
        assert_eq!(store.cursor("telegram").await.unwrap(), Some(b"7".to_vec()));
    }

    #[tokio::test]
    async fn writes_are_fsynced_before_returning() {
        let metrics = Arc::new(Metrics::default());
        let store = Store::open_in_memory(metrics.clone()).unwrap();
        let kv = store.kv(KvTable::WhatsApp);
        let before = metrics
            .store_fsyncs
            .load(std::sync::atomic::Ordering::Relaxed);
        kv.put("dev", b"creds".to_vec()).await.unwrap();
        let after = metrics
            .store_fsyncs
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(after, before + 1, "a put is one durable commit");
        // A take of a missing key writes nothing.
        kv.take("missing").await.unwrap();
        assert_eq!(
            metrics
                .store_fsyncs
                .load(std::sync::atomic::Ordering::Relaxed),
            after
        );
    }

    fn fsyncs(m: &Metrics) -> u64 {
        m.store_fsyncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A deferred write is visible at once, costs no fsync (not even the periodic flush's), and
    /// becomes durable with the next fsync someone else needs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferred_write_rides_on_the_next_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig::default();
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(dir.path(), &cfg, metrics.clone()).unwrap();
        let kv = store.kv(KvTable::WhatsApp);
        let f0 = fsyncs(&metrics);
        kv.put_batch_with(
            vec![("ses/a".into(), Some(b"v1".to_vec()))],
            Commit::Deferred,
        )
        .await
        .unwrap();
        assert_eq!(kv.get("ses/a").await.unwrap(), Some(b"v1".to_vec()));
        store.flush().await.unwrap();
        assert_eq!(
            fsyncs(&metrics),
            f0,
            "neither the write nor the flush fsyncs"
        );
        kv.put("dev", b"creds".to_vec()).await.unwrap();
        assert_eq!(fsyncs(&metrics), f0 + 1, "one fsync, for the durable write");
        store.close().await;
        let store = reopen_for_test(dir.path());
        let kv = store.kv(KvTable::WhatsApp);
        assert_eq!(kv.get("ses/a").await.unwrap(), Some(b"v1".to_vec()));
        store.close().await;
    }

    /// A held row released before any fsync leaves no byte of itself in the file; one held while
    /// an fsync happens is written by that fsync (a durable snapshot never lacks it), and its
    /// release deletes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_row_reaches_the_file_only_with_an_fsync_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig::default();
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(dir.path(), &cfg, metrics.clone()).unwrap();
        let kv = store.kv(KvTable::WhatsApp);
        let f0 = fsyncs(&metrics);
        let secret = b"held-plaintext-4f1c9a".to_vec();
        kv.hold(vec![("pin/a".into(), secret.clone())])
            .await
            .unwrap();
        assert_eq!(kv.get_held("pin/a").await.unwrap(), Some(secret.clone()));
        assert_eq!(kv.get("pin/a").await.unwrap(), None, "not in the table");
        kv.release(vec!["pin/a".into()]).await.unwrap();
        assert_eq!(kv.get_held("pin/a").await.unwrap(), None);
        store.flush().await.unwrap();
        assert_eq!(fsyncs(&metrics), f0, "hold and release cost no fsync");

        kv.hold(vec![("pin/b".into(), b"kept".to_vec())])
            .await
            .unwrap();
        kv.put("dev", b"creds".to_vec()).await.unwrap();
        assert_eq!(fsyncs(&metrics), f0 + 1);
        assert_eq!(
            kv.get("pin/b").await.unwrap(),
            Some(b"kept".to_vec()),
            "the fsync wrote the held row"
        );
        kv.release(vec!["pin/b".into()]).await.unwrap();
        assert_eq!(kv.get("pin/b").await.unwrap(), None, "released: deleted");
        assert_eq!(fsyncs(&metrics), f0 + 1, "the delete is deferred");
        // A wipe takes held rows with it: no later fsync writes them back.
        kv.hold(vec![("pin/c".into(), b"wiped".to_vec())])
            .await
            .unwrap();
        kv.delete_prefix("").await.unwrap();
        assert_eq!(kv.get_held("pin/c").await.unwrap(), None);
        kv.put("dev", b"creds".to_vec()).await.unwrap();
        assert_eq!(kv.get("pin/c").await.unwrap(), None);
        store.close().await;
        let file = std::fs::read(dir.path().join(crate::store::FILE_NAME)).unwrap();
        assert!(
            !file.windows(secret.len()).any(|w| w == secret.as_slice()),
            "the released row's bytes are not in the file"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survives_close_and_reopen_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StoreConfig::default();
        {
            let store = Store::open(dir.path(), &cfg, Arc::new(Metrics::default())).unwrap();
            let kv = store.kv(KvTable::WhatsApp);
            kv.put_batch(vec![
                ("dev".into(), Some(b"creds".to_vec())),
                ("pk/0000000001".into(), Some(b"pre".to_vec())),
            ])
            .await
            .unwrap();
            assert_eq!(
                kv.take("pk/0000000001").await.unwrap(),
                Some(b"pre".to_vec())
            );
            store.close().await;
        }
        let store = reopen_for_test(dir.path());
        let kv = store.kv(KvTable::WhatsApp);
        assert_eq!(kv.get("dev").await.unwrap(), Some(b"creds".to_vec()));
        assert_eq!(
            kv.get("pk/0000000001").await.unwrap(),
            None,
            "the take was durable"
        );
        store.close().await;
    }
}
