//! The durable store: one redb file, `<state_dir>/clawbox.redb` (directory 0700, file 0600).
//!
//! Holds the inbox (every accepted inbound message), the outbox (every reply and how far its sending
//! got), per-session state with bounded history, channel cursors, and channel auth state. All
//! writes go through one writer thread ([`writer`]) that groups the operations queued while the
//! previous commit ran into one transaction, and fsyncs that transaction only if one of its
//! operations needs durability (an accepted message, a send about to happen, auth state). Everything
//! else rides along and becomes durable with the next fsync. This is the only code that commits.
//! Reads are answered by a reader thread ([`reader`]) and never wait for a commit; the two kinds of
//! operation are two types ([`ops`]), so each can only reach its own thread. What each write does
//! is in [`apply`]. The file, its tables and schema version are in [`schema`]; what is kept and for
//! how long in [`retention`]; the periodic flush and retention pass are the store's own task
//! ([`maintenance`], [`Store::start_maintenance`]).
//!
//! Each thread proves it is alive by answering: [`Store::prove_alive`] sends it a no-op every
//! [`PROBE_EVERY`] and beats the thread's row on the board when the answer comes back. A writer
//! stuck in an fsync that never returns never answers, and its row stops beating. The no-op opens
//! no transaction: an idle store still writes nothing.
//!
//! The rules the rest of the daemon relies on:
//! - [`Store::accept`] returns only once the message is durable: channels acknowledge upstream after.
//!   [`Store::accept_visible`] answers earlier, once the rows are committed, so the turn can start
//!   while the fsync runs; its [`Durable`] resolves after the fsync.
//! - [`Store::mark_in_flight`] is durable before a chunk's request may leave the box; after a crash
//!   a chunk marked in flight is settled with its channel (was it sent?) before anything else is
//!   sent, so no reply is lost and none is sent twice ([`crate::delivery`]).
//! - A turn's completion (inbox rows answered, history, outbox row) is one atomic transaction.

mod apply;
mod held;
pub mod kv;
mod maintenance;
mod ops;
mod reader;
pub mod records;
mod retention;
mod schema;
mod writer;

use crate::config::StoreConfig;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::status::Reporter;
pub use maintenance::{FLUSH_INTERVAL, GC_INTERVAL};
pub(crate) use ops::Reply;
use ops::{ReadOp, ToReader, ToWriter, WriteOp};
pub use records::{
    HistoryItem, InboxRecord, OutboxRecord, SessionRecord, StoredMessage, StoredReply,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The store's file name inside the state directory.
pub const FILE_NAME: &str = "clawbox.redb";
/// Operations waiting for the writer thread; senders wait (backpressure) beyond this.
const WRITE_QUEUE: usize = 1024;
/// Reads waiting for the reader thread; senders wait (backpressure) beyond this. As deep as the
/// writer's queue, so neither kind of caller is throttled before the other.
const READ_QUEUE: usize = 1024;
/// How often each store thread is asked to answer a no-op ([`Store::prove_alive`]).
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long a thread may take to answer that no-op before it counts as stuck. The answer waits
/// behind whatever was queued before it: the slowest legitimate batch (256 operations, a GC pass
/// over 20 000 rows, two fsyncs on a worn SD card) takes a few seconds, not twenty.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// The allowance of each store thread's row: from one answer to the next.
pub const ROW_ALLOWANCE: Duration =
    Duration::from_secs(PROBE_EVERY.as_secs() + ANSWER_WITHIN.as_secs());

/// One of the store's two threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// The writer: every commit and fsync.
    Writer,
    /// The reader: every read.
    Reader,
}

impl Thread {
    /// The thread's row on the board (also its `hang:` fault point, for the writer).
    pub fn row_name(self) -> &'static str {
        match self {
            Thread::Writer => "store-writer",
            Thread::Reader => "store-reader",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The directory or file could not be created, opened or locked.
    Open(String),
    /// The file is damaged; the message says how to recover.
    Corrupt(String),
    /// A read or write failed (disk full, I/O error).
    Io(String),
    /// The writer thread is gone (after shutdown, or it failed).
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(e) => write!(f, "cannot open the store: {e}"),
            StoreError::Corrupt(e) => write!(f, "the store is damaged: {e}"),
            StoreError::Io(e) => write!(f, "store I/O failed: {e}"),
            StoreError::Closed => f.write_str("the store is closed"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Result of [`Store::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// New and durable, with its inbox sequence number.
    New(u64),
    /// Already in the inbox (a redelivery).
    Duplicate,
}

/// The second answer of [`Store::accept_visible`]: resolves once the accepted rows are fsynced.
#[must_use = "acknowledge upstream only after the write is durable"]
pub struct Durable(oneshot::Receiver<Result<(), StoreError>>);

impl Durable {
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

/// What a restarted daemon must finish.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Inbox rows not yet answered, in arrival order.
    pub pending: Vec<StoredMessage>,
    /// Replies not completely sent, in creation order.
    pub outbox: Vec<StoredReply>,
    /// Rows skipped, each logged: undecodable ones, and those naming a channel this build does
    /// not know (those stay in the store as they are, for a build that knows the channel).
    pub skipped: usize,
}

/// What a finished turn writes, atomically.
#[derive(Debug, Clone)]
pub struct TurnDone {
    /// Inbox rows answered by this turn.
    pub inbox: Vec<u64>,
    /// Session to update, the user text and reply to append to its history (None: no history kept).
    pub session: String,
    pub history: Option<(String, String)>,
    /// Clear the session's history (a 🗑️ reset).
    pub reset: bool,
    /// Also bump the session's generation, so agents see a new session key.
    pub new_generation: bool,
    /// The reply to send (None: nothing to send).
    pub reply: Option<OutboxRecord>,
}

#[derive(Clone)]
enum Backend {
    /// The writer thread and the reader thread over the file.
    Thread {
        writes: mpsc::Sender<ToWriter>,
        reads: mpsc::Sender<ToReader>,
    },
    /// In memory, each operation handled inline (tests under a paused clock).
    Inline(Arc<std::sync::Mutex<writer::Writer>>),
}

/// Handle to the store. Cheap to clone; all clones talk to the same writer.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    path: Arc<PathBuf>,
}

impl Store {
    /// Opens (or creates) `<dir>/clawbox.redb`; the directory is created 0700, the file 0600, and
    /// wrong modes are fixed (with a warning).
    pub fn open(dir: &Path, cfg: &StoreConfig, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let path = schema::prepare_dir_and_file(dir)?;
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let (reads, read_rx) = mpsc::channel(READ_QUEUE);
        writer::spawn(&path, cfg, metrics, rx, read_rx)?;
        Ok(Store {
            backend: Backend::Thread { writes, reads },
            path: Arc::new(path),
        })
    }

    /// A store in memory whose operations run inline in the caller's task: the same tables and
    /// transactions as the file, gone when dropped. For tests under tokio's paused clock, where
    /// waiting on the writer thread would let virtual time jump ahead.
    pub fn open_in_memory(metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let w = writer::in_memory(metrics)?;
        Ok(Store {
            backend: Backend::Inline(Arc::new(std::sync::Mutex::new(w))),
            path: Arc::new(PathBuf::from("<memory>")),
        })
    }

    /// Sends a no-op to `thread` and waits (without a deadline) for its answer.
    pub async fn ping(&self, thread: Thread) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let sent = match (&self.backend, thread) {
            (Backend::Thread { writes, .. }, Thread::Writer) => {
                writes.send(ToWriter::Ping(tx)).await.is_ok()
            }
            (Backend::Thread { reads, .. }, Thread::Reader) => {
                reads.send(ToReader::Ping(tx)).await.is_ok()
            }
            (Backend::Inline(_), _) => return Ok(()),
        };
        if !sent {
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Beats `row` each time `thread` answers a no-op, one every [`PROBE_EVERY`], until shutdown.
    /// A thread that does not answer (stuck in an fsync, wedged) holds this task in the wait, so
    /// the row stops beating and the watchdog notices; a thread that is gone ends it for good.
    pub async fn prove_alive(self, thread: Thread, row: Reporter, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            let answered = tokio::select! {
                _ = shutdown.wait() => return,
                r = self.ping(thread) => r,
            };
            match answered {
                Ok(()) => row.beat(),
                Err(e) => {
                    let thread = thread.row_name();
                    tracing::error!(thread, error = %e, "the store thread is gone");
                    return;
                }
            }
        }
    }

    /// Queues a write for the writer thread (or runs it inline).
    async fn send_write(&self, op: WriteOp) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Thread { writes, .. } => writes
                .send(ToWriter::Write(op))
                .await
                .map_err(|_| StoreError::Closed),
            Backend::Inline(w) => {
                // A poisoned lock means a panic mid-operation; redb itself stays consistent.
                w.lock().unwrap_or_else(|p| p.into_inner()).write(op);
                Ok(())
            }
        }
    }

    /// Queues a read for the reader thread (or runs it inline).
    async fn send_read(&self, op: ReadOp) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Thread { reads, .. } => reads
                .send(ToReader::Read(op))
                .await
                .map_err(|_| StoreError::Closed),
            Backend::Inline(w) => {
                w.lock().unwrap_or_else(|p| p.into_inner()).read(op);
                Ok(())
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a write and waits for its answer.
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send_write(make(tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read and waits for its answer.
    async fn read<T>(&self, make: impl FnOnce(Reply<T>) -> ReadOp) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send_read(make(tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a key-value read ([`kv`]) on the reader thread and waits for its answer.
    async fn kv_read<T>(&self, make: impl FnOnce(Reply<T>) -> kv::KvRead) -> Result<T, StoreError> {
        self.read(|r| ReadOp::Kv(make(r))).await
    }

    /// Runs a key-value write ([`kv`]) on the writer thread and waits for its answer.
    async fn kv_write<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> kv::KvWriteOp,
    ) -> Result<T, StoreError> {
        self.write(|r| WriteOp::Kv(make(r))).await
    }

    /// Adds an inbound message to the inbox unless its (channel, id) was seen; durable on return.
    pub async fn accept(&self, rec: InboxRecord) -> Result<Accepted, StoreError> {
        let mut one = self.accept_many(vec![rec]).await?;
        one.pop()
            .ok_or_else(|| StoreError::Io("internal: accept answered nothing".into()))
    }

    /// [`Store::accept`] for a batch (a Telegram getUpdates answer): one transaction, one fsync,
    /// the outcomes in the records' order.
    pub async fn accept_many(&self, recs: Vec<InboxRecord>) -> Result<Vec<Accepted>, StoreError> {
        let (outcomes, durable) = self.accept_visible(recs).await?;
        durable.wait().await?;
        Ok(outcomes)
    }

    /// [`Store::accept_many`] in two answers: the outcomes as soon as the rows are committed
    /// (every later operation sees them; a crash before the fsync loses them, and the server, not
    /// yet acknowledged, redelivers), then [`Durable`] once they are fsynced. Acknowledge upstream
    /// only after [`Durable::wait`].
    pub async fn accept_visible(
        &self,
        recs: Vec<InboxRecord>,
    ) -> Result<(Vec<Accepted>, Durable), StoreError> {
        let (done, durable) = oneshot::channel();
        let outcomes = self.write(|tx| WriteOp::Accept(recs, tx, done)).await?;
        Ok((outcomes, Durable(durable)))
    }

    /// Records a finished turn: inbox rows answered, history, the reply queued; returns the outbox
    /// sequence number. Not fsynced on its own (a crash before the next fsync re-runs the turn).
    pub async fn turn_done(&self, done: TurnDone) -> Result<Option<u64>, StoreError> {
        self.write(|tx| WriteOp::TurnDone(Box::new(done), tx)).await
    }

    /// Marks the outbox row's next chunk as possibly sent, with the channel's `hint` for settling
    /// it after a crash; durable on return. Call just before the request may leave the box.
    pub async fn mark_in_flight(&self, outbox: u64, hint: u64) -> Result<(), StoreError> {
        self.write(|tx| WriteOp::InFlight(outbox, hint, tx)).await
    }

    /// The in-flight chunk did not leave after all (the channel refused it before sending, or
    /// its send was found not to have arrived). Not fsynced on its own: a crash before the next
    /// fsync leaves the mark, and the chunk is then settled with the channel again.
    pub async fn clear_in_flight(&self, outbox: u64) -> Result<(), StoreError> {
        self.write(|tx| WriteOp::ClearInFlight(outbox, tx)).await
    }

    /// The in-flight chunk was confirmed sent; returns true when the reply is complete (row removed).
    pub async fn mark_sent(&self, outbox: u64) -> Result<bool, StoreError> {
        self.write(|tx| WriteOp::Sent(outbox, tx)).await
    }

    /// Gives up on a reply (permanent send failure): removes the row.
    pub async fn abandon(&self, outbox: u64) -> Result<(), StoreError> {
        self.write(|tx| WriteOp::Abandon(outbox, tx)).await
    }

    /// A channel's cursor (e.g. Telegram's next offset), if one was saved.
    pub async fn cursor(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.read(|tx| ReadOp::Cursor(name, tx)).await
    }

    /// Saves a cursor. Not fsynced on its own: it becomes durable with the next durable commit,
    /// which is safe because inbound messages are deduplicated by id anyway.
    pub async fn set_cursor(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(|tx| WriteOp::SetCursor(name, value, tx)).await
    }

    /// A channel's auth/identity value (OpenClaw device key, WhatsApp creds), if present.
    pub async fn auth(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.read(|tx| ReadOp::Auth(key, tx)).await
    }

    /// Saves an auth value durably (fsynced before this returns).
    pub async fn set_auth(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(|tx| WriteOp::SetAuth(key, value, tx)).await
    }

    /// Deletes every auth value whose key starts with `prefix` (a logged-out channel), durably.
    pub async fn delete_auth_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let prefix = prefix.to_string();
        self.write(|tx| WriteOp::DeleteAuthPrefix(prefix, tx)).await
    }

    /// The session's state (a fresh one if never seen).
    pub async fn session(&self, session: &str) -> Result<SessionRecord, StoreError> {
        let session = session.to_string();
        self.read(|tx| ReadOp::Session(session, tx)).await
    }

    /// Everything a restarted daemon must finish.
    pub async fn recover(&self) -> Result<Recovery, StoreError> {
        self.read(ReadOp::Recover).await
    }

    /// Pending inbox rows of one session, in order (used when its in-memory queue overflowed).
    pub async fn pending_for(&self, session: &str) -> Result<Vec<StoredMessage>, StoreError> {
        let session = session.to_string();
        self.read(|tx| ReadOp::PendingFor(session, tx)).await
    }

    /// Makes every lazily committed write durable now.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(WriteOp::Flush).await
    }

    /// Removes answered inbox rows older than the retention and sessions idle past theirs.
    pub async fn gc(&self, now_ms: u64) {
        let _ = self.send_write(WriteOp::Gc(now_ms)).await;
    }

    /// Flushes and closes the file; later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        match &self.backend {
            Backend::Thread { writes, .. } => {
                if writes.send(ToWriter::Close(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            }
            Backend::Inline(w) => w.lock().unwrap_or_else(|p| p.into_inner()).close(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn rec(id: &str) -> InboxRecord {
        InboxRecord {
            channel: "telegram".into(),
            msg_id: id.into(),
            chat: "42".into(),
            sender: "42".into(),
            text: "hi".into(),
            session: "telegram:42".into(),
            ..InboxRecord::default()
        }
    }

    #[tokio::test]
    async fn both_threads_answer_a_no_op_without_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(dir.path(), &StoreConfig::default(), metrics.clone()).unwrap();
        store.accept(rec("1")).await.unwrap();
        let commits = metrics.store_commits.load(Relaxed);
        let fsyncs = metrics.store_fsyncs.load(Relaxed);
        for _ in 0..10 {
            store.ping(Thread::Writer).await.unwrap();
            store.ping(Thread::Reader).await.unwrap();
        }
        assert_eq!(metrics.store_commits.load(Relaxed), commits, "no commit");
        assert_eq!(metrics.store_fsyncs.load(Relaxed), fsyncs, "no fsync");
        // Each answer beats the thread's row.
        let board = crate::status::Board::default();
        let row = board.register_internal(Thread::Writer.row_name(), ROW_ALLOWANCE);
        let before = board.snapshot()[0].last_beat;
        let (trigger, shutdown) = crate::shutdown::Shutdown::new();
        let task = tokio::spawn(store.clone().prove_alive(Thread::Writer, row, shutdown));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while board.snapshot()[0].last_beat == before {
            assert!(tokio::time::Instant::now() < deadline, "no beat");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.trip();
        task.await.unwrap();
        store.close().await;
        assert_eq!(store.ping(Thread::Writer).await, Err(StoreError::Closed));
    }

    #[tokio::test]
    async fn a_batch_is_accepted_in_order_with_one_fsync() {
        let metrics = Arc::new(Metrics::default());
        let store = Store::open_in_memory(metrics.clone()).unwrap();
        store.accept(rec("1")).await.unwrap();
        let before = metrics.store_fsyncs.load(Relaxed);
        let got = store
            .accept_many(vec![rec("2"), rec("1"), rec("3"), rec("2")])
            .await
            .unwrap();
        assert!(
            matches!(
                got.as_slice(),
                [
                    Accepted::New(a),
                    Accepted::Duplicate,
                    Accepted::New(b),
                    Accepted::Duplicate
                ] if b > a
            ),
            "{got:?}"
        );
        assert_eq!(metrics.store_fsyncs.load(Relaxed), before + 1);
    }

    /// A message id is unique only per chat and sender: the same id from another chat or another
    /// sender is a new message; the same id from the same chat and sender is a redelivery.
    #[tokio::test]
    async fn the_dedupe_key_is_chat_sender_and_id() {
        let store = Store::open_in_memory(Arc::new(Metrics::default())).unwrap();
        let m = |chat: &str, author: &str| InboxRecord {
            chat: chat.into(),
            author: author.into(),
            ..rec("same-id")
        };
        let got = store
            .accept_many(vec![
                m("1", "1"),
                m("2", "2"),
                m("g", "1"),
                m("g", "2"),
                m("g", "2"),
                m("1", "1"),
            ])
            .await
            .unwrap();
        assert!(
            matches!(
                got.as_slice(),
                [
                    Accepted::New(_),
                    Accepted::New(_),
                    Accepted::New(_),
                    Accepted::New(_),
                    Accepted::Duplicate,
                    Accepted::Duplicate
                ]
            ),
            "{got:?}"
        );
    }

    /// On the file store: the accept's rows are readable (from the reader thread) as soon as its
    /// outcomes are out, before anyone waited for the fsync; waiting costs exactly one fsync; and
    /// what was waited for is there after a reopen.
    #[tokio::test]
    async fn accepted_rows_are_readable_before_the_fsync_and_durable_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let store = Store::open(dir.path(), &StoreConfig::default(), metrics.clone()).unwrap();
        let fsyncs = metrics.store_fsyncs.load(Relaxed);
        let (got, durable) = store
            .accept_visible(vec![rec("1"), rec("2")])
            .await
            .unwrap();
        assert!(
            matches!(got.as_slice(), [Accepted::New(_), Accepted::New(_)]),
            "{got:?}"
        );
        let seen = store.pending_for("telegram:42").await.unwrap();
        assert_eq!(seen.len(), 2, "committed rows are visible to reads");
        durable.wait().await.unwrap();
        assert_eq!(metrics.store_fsyncs.load(Relaxed), fsyncs + 1);
        // A redelivery of what is in the inbox is a duplicate and writes nothing.
        let commits = metrics.store_commits.load(Relaxed);
        let again = store.accept_many(vec![rec("2")]).await.unwrap();
        assert_eq!(again, vec![Accepted::Duplicate]);
        assert_eq!(metrics.store_commits.load(Relaxed), commits);
        store.close().await;
        drop(store);
        let store = Store::open(dir.path(), &StoreConfig::default(), metrics).unwrap();
        assert_eq!(store.recover().await.unwrap().pending.len(), 2);
    }
}
