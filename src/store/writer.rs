//! The writer thread: the only place that opens write transactions. Operations queued together
//! (those that arrived while the previous commit ran, or within the optional commit window) share
//! one transaction; it is fsynced (`Durability::Immediate`) only when one of them needs it,
//! otherwise committed with `Durability::None` and made durable by the next fsync. Replies are sent
//! after the commit, so a caller told "durable" can rely on it.
//!
//! A batch that accepts new inbound messages commits in two steps: first without fsync, which makes
//! the rows visible to every later operation and lets the accept's outcomes go out at once (the
//! router starts the turn), then an fsync, after which the "durable" answers go out (the channel
//! acknowledges upstream). Nothing can be sent in reply before that fsync: every send is preceded
//! by a durable in-flight mark, and the writer runs operations in order.
//!
//! Two kinds of write wait for someone else's fsync instead of causing one (the WhatsApp client's
//! receive-side state, [`super::kv`]): deferred writes, committed without fsync and left alone by
//! the periodic flush (up to [`MAX_DEFERRED_COMMITS`]), and held rows, kept in memory and written
//! only into a transaction that is about to be fsynced while they are held.
//!
//! Reads do not queue behind commits: the reader thread ([`super::reader`]) answers them from
//! read transactions, which see every commit that returned, fsynced or not. The tables are in
//! [`super::schema`], what is kept and for how long in [`super::retention`].

use super::StoreError;
use super::apply::{Counters, Effects, Pending, Tables, apply};
use super::held::Held;
use super::kv::MAX_DEFERRED_COMMITS;
use super::ops::{ReadOp, ToReader, ToWriter, WriteOp};
use super::reader::{read, serve_reads};
use super::schema::{INBOX, OUTBOX, in_memory_db, io, open_db, recovery_hint};
use crate::config::StoreConfig;
use crate::metrics::Metrics;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Operations folded into one transaction at most: bounds a transaction's size and latency.
const MAX_BATCH_OPS: usize = 256;

pub(super) fn spawn(
    path: &Path,
    cfg: &StoreConfig,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<ToWriter>,
    read_rx: mpsc::Receiver<ToReader>,
) -> Result<(), StoreError> {
    let window = Duration::from_millis(cfg.commit_window_ms);
    // redb can panic on some forms of damage (an allocator assertion, on a truncated file) while
    // the file is opened or first read; that must be the damaged-store message, not a crash with a
    // backtrace. The default panic report is silenced for just this step (start-up, before any
    // channel runs).
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = open_db(path, cfg)?;
        Writer::new(Arc::new(db), metrics, window, path.to_path_buf())
    }));
    std::panic::set_hook(quiet);
    let w = match made {
        Ok(w) => w?,
        Err(_) => {
            return Err(StoreError::Corrupt(format!(
                "{}: damaged; {}",
                path.display(),
                recovery_hint(path)
            )));
        }
    };
    let db = Arc::downgrade(&w.db);
    std::thread::Builder::new()
        .name("clawbox-store".into())
        .spawn(move || w.run(rx))
        .map_err(|e| StoreError::Open(format!("cannot start the store thread: {e}")))?;
    std::thread::Builder::new()
        .name("clawbox-store-read".into())
        .spawn(move || serve_reads(db, read_rx))
        .map_err(|e| StoreError::Open(format!("cannot start the store reader thread: {e}")))?;
    Ok(())
}

pub(super) struct Writer {
    /// The only strong reference: the file closes when the writer ends (the reader holds a `Weak`).
    db: Arc<Database>,
    metrics: Arc<Metrics>,
    window: Duration,
    /// Lazily committed writes not yet fsynced, that the periodic flush must make durable.
    dirty: bool,
    /// Deferred commits (only [`super::kv::Commit::Deferred`] writes) since the last fsync: durable with the
    /// next fsync anyone makes; counted to [`MAX_DEFERRED_COMMITS`], then `dirty`.
    deferred: u32,
    /// Rows held in memory, written only by an fsync that happens while they are held.
    held: Held,
    next_inbox: u64,
    next_outbox: u64,
    path: PathBuf,
}

/// A writer over an in-memory database that handles each operation inline, in the caller's task:
/// the same transactions, no thread, no commit window. For tests under a paused clock, where
/// waiting on another thread would let virtual time jump.
pub(super) fn in_memory(metrics: Arc<Metrics>) -> Result<Writer, StoreError> {
    let db = in_memory_db()?;
    Writer::new(
        Arc::new(db),
        metrics,
        Duration::ZERO,
        PathBuf::from("<memory>"),
    )
}

impl Writer {
    fn new(
        db: Arc<Database>,
        metrics: Arc<Metrics>,
        window: Duration,
        path: PathBuf,
    ) -> Result<Writer, StoreError> {
        let mut w = Writer {
            db,
            metrics,
            window,
            dirty: false,
            deferred: 0,
            held: Held::default(),
            next_inbox: 0,
            next_outbox: 0,
            path,
        };
        w.init_sequences()?;
        Ok(w)
    }

    /// Runs one write at once, as a batch of its own (the in-memory mode).
    pub(super) fn write(&mut self, op: WriteOp) {
        self.write_batch(vec![op]);
    }

    /// Answers one read at once from a read transaction (the in-memory mode).
    pub(super) fn read(&self, op: ReadOp) {
        read(&self.db, op);
    }

    /// Makes lazy writes durable (the in-memory mode's close: the database stays usable).
    pub(super) fn close(&mut self) {
        self.flush_for_close();
    }

    fn init_sequences(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let inbox = tx.open_table(INBOX).map_err(io)?;
        self.next_inbox = inbox
            .last()
            .map_err(io)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        let outbox = tx.open_table(OUTBOX).map_err(io)?;
        self.next_outbox = outbox
            .last()
            .map_err(io)?
            .map(|(k, _)| k.value() + 1)
            .unwrap_or(1);
        Ok(())
    }

    fn run(mut self, mut rx: mpsc::Receiver<ToWriter>) {
        while let Some(first) = rx.blocking_recv() {
            let first = match first {
                ToWriter::Write(op) => op,
                ToWriter::Ping(r) => {
                    let _ = r.send(());
                    continue;
                }
                ToWriter::Close(done) => {
                    self.close_file(done);
                    return;
                }
            };
            let mut batch = vec![first];
            if !self.window.is_zero() {
                std::thread::sleep(self.window);
            }
            let mut close = None;
            // No-ops queued behind the batch's operations are answered after its commit.
            let mut pings = Vec::new();
            while batch.len() < MAX_BATCH_OPS {
                match rx.try_recv() {
                    Ok(ToWriter::Write(op)) => batch.push(op),
                    Ok(ToWriter::Ping(r)) => pings.push(r),
                    Ok(ToWriter::Close(done)) => {
                        close = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // `CLAWBOX_FAULT=hang:store-writer`: the thread blocks here, as in a hung fsync.
            crate::fault::hang_thread(super::Thread::Writer.row_name());
            self.write_batch(batch);
            for r in pings {
                let _ = r.send(());
            }
            if let Some(done) = close {
                self.close_file(done);
                return;
            }
        }
        // Every handle dropped: make lazy writes durable before the thread ends.
        if self.unsynced() {
            let _ = self.commit_empty_durable();
        }
    }

    /// Flushes, closes the file (the reader holds only a `Weak`), then answers: once the caller
    /// hears back, the file can be opened again.
    fn close_file(mut self, done: oneshot::Sender<()>) {
        self.flush_for_close();
        drop(self);
        let _ = done.send(());
    }

    /// Something committed (or held) is not durable yet.
    fn unsynced(&self) -> bool {
        self.dirty || self.deferred > 0 || self.held.unwritten()
    }

    fn flush_for_close(&mut self) {
        if self.unsynced() {
            if let Err(e) = self.commit_empty_durable() {
                tracing::error!(error = %e, "final store flush failed");
            }
        }
    }

    /// An fsync of everything committed so far (and of the held rows: see [`super::kv`]).
    fn commit_empty_durable(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        let spilled = self.held.spill(&tx)?;
        tx.commit().map_err(io)?;
        self.held.written();
        self.metrics.store_bytes_written.fetch_add(spilled, Relaxed);
        self.dirty = false;
        self.deferred = 0;
        Metrics::inc(&self.metrics.store_commits);
        Metrics::inc(&self.metrics.store_fsyncs);
        Ok(())
    }

    /// One transaction for the whole batch, fsynced only if an operation needs it, then every
    /// answer: after the commit, or after the fsync for those that promise durability.
    fn write_batch(&mut self, batch: Vec<WriteOp>) {
        let mut fx = Effects::default();
        fx.replies.reserve(batch.len() + 1);
        let result = self.commit(batch, &mut fx);
        match &result {
            Ok(false) => {}
            Ok(true) => {
                Metrics::inc(&self.metrics.store_commits);
                self.metrics
                    .store_bytes_written
                    .fetch_add(fx.bytes, Relaxed);
                if fx.durable && !fx.early {
                    Metrics::inc(&self.metrics.store_fsyncs);
                    self.dirty = false;
                    self.deferred = 0;
                } else if fx.bytes > fx.deferred_bytes || self.deferred >= MAX_DEFERRED_COMMITS {
                    self.dirty = true;
                } else {
                    self.deferred += 1;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, file = %self.path.display(), "store commit failed");
                // Sequence numbers handed out in the failed transaction are simply skipped.
            }
        }
        self.answer(result.err(), fx);
    }

    /// Applies the batch in one write transaction and commits it; `Ok(false)` when nothing
    /// changed (duplicates, an idle GC or flush): then nothing at all is written.
    fn commit(&mut self, batch: Vec<WriteOp>, fx: &mut Effects) -> Result<bool, StoreError> {
        let mut tx = self.db.begin_write().map_err(io)?;
        {
            let mut tables = Tables::open(&tx)?;
            let mut counters = Counters {
                next_inbox: &mut self.next_inbox,
                next_outbox: &mut self.next_outbox,
                dirty: self.dirty,
                held: &mut self.held,
            };
            for op in batch {
                apply(&tx, &mut tables, &mut counters, op, fx)?;
            }
        }
        if fx.bytes == 0 && !fx.durable {
            tx.abort().map_err(io)?;
            return Ok(false);
        }
        // Two steps for new inbound messages: this commit without fsync, the fsync in `answer`.
        let fsync = fx.durable && !fx.early;
        if fsync {
            // This fsync must not leave out a row held now (see [`super::kv`]).
            fx.bytes += self.held.spill(&tx)?;
        }
        let durability = if fsync {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).map_err(io)?;
        tx.commit().map_err(io)?;
        if fsync {
            self.held.written();
        }
        Ok(true)
    }

    /// Sends the batch's answers. When it accepted new messages, those that promise durability
    /// wait for an fsync made after the others went out (the router may start the turns).
    fn answer(&mut self, err: Option<StoreError>, fx: Effects) {
        let (later, now): (Vec<Pending>, Vec<Pending>) = fx
            .replies
            .into_iter()
            .partition(|p| p.durable && fx.early && err.is_none());
        for p in now {
            (p.answer)(err.as_ref());
        }
        if later.is_empty() {
            return;
        }
        let synced = self.commit_empty_durable();
        if let Err(e) = &synced {
            tracing::error!(error = %e, file = %self.path.display(), "store fsync failed");
        }
        for p in later {
            (p.answer)(synced.as_ref().err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Accepted, InboxRecord, OutboxRecord, Recovery, Store, TurnDone};
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn counts(m: &Metrics) -> (u64, u64) {
        (m.store_commits.load(Relaxed), m.store_fsyncs.load(Relaxed))
    }

    fn message(id: &str) -> InboxRecord {
        InboxRecord {
            channel: "telegram".into(),
            msg_id: id.into(),
            chat: "42".into(),
            author: "42".into(),
            session: "telegram-42".into(),
            ..InboxRecord::default()
        }
    }

    fn open(dir: &Path, metrics: &Arc<Metrics>) -> Store {
        Store::open(dir, &StoreConfig::default(), metrics.clone()).unwrap()
    }

    /// A reply's row, answered inbox row and history are one commit; the in-flight mark before a
    /// send is fsynced on its own and survives a reopen (the crash after it).
    #[tokio::test]
    async fn the_in_flight_mark_is_fsynced_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = open(dir.path(), &metrics);
        let Accepted::New(seq) = store.accept(message("1")).await.unwrap() else {
            panic!("new")
        };
        let out = store
            .turn_done(TurnDone {
                inbox: vec![seq],
                session: "telegram-42".into(),
                history: Some(("hi".into(), "hello".into())),
                reset: false,
                new_generation: false,
                reply: Some(OutboxRecord {
                    channel: "telegram".into(),
                    chat: "42".into(),
                    chunks: vec!["hello".into()],
                    key: "k".into(),
                    ..OutboxRecord::default()
                }),
            })
            .await
            .unwrap()
            .expect("an outbox row");
        let before = counts(&metrics);
        store.mark_in_flight(out, 7).await.unwrap();
        let after = counts(&metrics);
        assert_eq!(after.1, before.1 + 1, "one fsync for the mark");
        store.close().await;
        let store = open(dir.path(), &metrics);
        let Recovery {
            pending, outbox, ..
        } = store.recover().await.unwrap();
        assert!(pending.is_empty(), "the message was answered");
        assert_eq!(outbox.len(), 1);
        assert!(outbox[0].rec.in_flight, "the mark survived the reopen");
        store.close().await;
    }

    /// A cursor is written lazily: committed (readable at once) but not fsynced; the next durable
    /// operation or flush carries it to the disk.
    #[tokio::test]
    async fn a_cursor_is_visible_at_once_and_durable_with_the_next_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = open(dir.path(), &metrics);
        let before = counts(&metrics);
        store
            .set_cursor("telegram.offset", b"41".to_vec())
            .await
            .unwrap();
        let after = counts(&metrics);
        assert_eq!(after.0, before.0 + 1, "one commit");
        assert_eq!(after.1, before.1, "no fsync for a cursor");
        assert_eq!(
            store.cursor("telegram.offset").await.unwrap().as_deref(),
            Some(&b"41"[..])
        );
        store.flush().await.unwrap();
        assert_eq!(counts(&metrics).1, before.1 + 1, "the flush fsyncs it");
        store.close().await;
        let store = open(dir.path(), &metrics);
        assert_eq!(
            store.cursor("telegram.offset").await.unwrap().as_deref(),
            Some(&b"41"[..])
        );
        store.close().await;
    }

    /// Nothing waiting to be made durable: a flush (the daemon's periodic one included) writes
    /// nothing, so an idle box spares the SD card.
    #[tokio::test]
    async fn a_flush_with_nothing_dirty_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = open(dir.path(), &metrics);
        store.accept(message("1")).await.unwrap();
        let before = counts(&metrics);
        for _ in 0..5 {
            store.flush().await.unwrap();
        }
        assert_eq!(counts(&metrics), before, "no commit, no fsync");
        store.close().await;
    }

    /// Reads have a thread of their own: while the writer thread is held in a batch (here by a
    /// commit window, which stalls that thread just as a slow fsync does), a read is answered at
    /// once, with what was committed before the batch.
    #[tokio::test]
    async fn a_read_does_not_wait_for_the_writers_batch() {
        const WINDOW: Duration = Duration::from_millis(1500);
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let cfg = StoreConfig {
            commit_window_ms: WINDOW.as_millis() as u64,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), &cfg, metrics).unwrap();
        store.set_cursor("c", b"1".to_vec()).await.unwrap();
        let started = std::time::Instant::now();
        let writing = tokio::spawn({
            let store = store.clone();
            async move { store.set_cursor("c", b"2".to_vec()).await }
        });
        // The writer thread takes the write and sleeps out its window.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = std::time::Instant::now();
        let seen = store.cursor("c").await.unwrap();
        store.ping(crate::store::Thread::Reader).await.unwrap();
        assert!(
            asked.elapsed() < WINDOW / 2,
            "the read waited {:?} behind the writer",
            asked.elapsed()
        );
        assert!(!writing.is_finished(), "the write is still in its batch");
        assert_eq!(seen.as_deref(), Some(&b"1"[..]), "what was committed");
        writing.await.unwrap().unwrap();
        assert!(started.elapsed() >= WINDOW, "the writer really was held");
        assert_eq!(store.cursor("c").await.unwrap().as_deref(), Some(&b"2"[..]));
        store.close().await;
    }
}
