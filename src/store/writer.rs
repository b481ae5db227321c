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
//! Reads do not queue behind commits: the reader thread ([`super::reader`]) answers them from
//! read transactions, which see every commit that returned, fsynced or not. The tables are in
//! [`super::schema`], what is kept and for how long in [`super::retention`].

use super::reader::{read, serve_reads};
use super::records::INBOX_ANSWERED;
use super::retention::{gc, push_history};
use super::schema::{
    AUTH, CURSORS, INBOX, INBOX_IDS, OUTBOX, SESSIONS, decode, id_key, in_memory_db, io, open_db,
    recovery_hint,
};
use super::{Accepted, InboxRecord, Op, OutboxRecord, SessionRecord, StoreError, TurnDone, fail};
use crate::config::StoreConfig;
use crate::metrics::Metrics;
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

/// Operations folded into one transaction at most: bounds a transaction's size and latency.
const MAX_BATCH_OPS: usize = 256;

pub(super) fn spawn(
    path: &Path,
    cfg: &StoreConfig,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<Op>,
    read_rx: mpsc::Receiver<Op>,
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

/// A reply to send once the batch's commit outcome is known.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A reply and whether it promises durability (sent only after the batch's fsync).
struct Pending {
    reply: Reply,
    durable: bool,
}

impl Pending {
    fn visible(reply: Reply) -> Pending {
        Pending {
            reply,
            durable: false,
        }
    }
    fn durable(reply: Reply) -> Pending {
        Pending {
            reply,
            durable: true,
        }
    }
}

fn reply<T: Send + 'static>(
    tx: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    value: Result<T, StoreError>,
) -> Reply {
    Box::new(move |commit_err: Option<&StoreError>| {
        let _ = tx.send(match commit_err {
            Some(e) => Err(e.clone()),
            None => value,
        });
    })
}

pub(super) struct Writer {
    /// The only strong reference: the file closes when the writer ends (the reader holds a `Weak`).
    db: Arc<Database>,
    metrics: Arc<Metrics>,
    window: Duration,
    /// Lazily committed writes not yet fsynced.
    dirty: bool,
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
            next_inbox: 0,
            next_outbox: 0,
            path,
        };
        w.init_sequences()?;
        Ok(w)
    }

    /// Handles one operation at once (the in-memory mode).
    pub(super) fn handle(&mut self, op: Op) {
        match op {
            Op::Close(done) => self.close(done),
            Op::Ping(r) => {
                let _ = r.send(());
            }
            op if op.is_read() => read(&self.db, op),
            op => self.write_batch(vec![op]),
        }
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

    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(first) = rx.blocking_recv() {
            if let Op::Close(done) = first {
                self.close_file(done);
                return;
            }
            if let Op::Ping(r) = first {
                let _ = r.send(());
                continue;
            }
            // Store routes reads to the reader thread; one that reaches the writer anyway is
            // answered from a read transaction, never folded into a write batch.
            if first.is_read() {
                read(&self.db, first);
                continue;
            }
            let mut batch = vec![first];
            if !self.window.is_zero() {
                std::thread::sleep(self.window);
            }
            let mut close = None;
            // No-ops queued behind the batch's operations are answered after its commit.
            let mut pings = Vec::new();
            while batch.len() < MAX_BATCH_OPS {
                match rx.try_recv() {
                    Ok(Op::Close(done)) => {
                        close = Some(done);
                        break;
                    }
                    Ok(Op::Ping(r)) => pings.push(r),
                    Ok(op) if op.is_read() => read(&self.db, op),
                    Ok(op) => batch.push(op),
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
        if self.dirty {
            let _ = self.commit_empty_durable();
        }
    }

    /// Flushes, closes the file (the reader holds only a `Weak`), then answers: once the caller
    /// hears back, the file can be opened again.
    fn close_file(mut self, done: tokio::sync::oneshot::Sender<()>) {
        self.flush_for_close();
        drop(self);
        let _ = done.send(());
    }

    fn flush_for_close(&mut self) {
        if self.dirty {
            if let Err(e) = self.commit_empty_durable() {
                tracing::error!(error = %e, "final store flush failed");
            }
        }
    }

    fn close(&mut self, done: tokio::sync::oneshot::Sender<()>) {
        self.flush_for_close();
        let _ = done.send(());
    }

    fn commit_empty_durable(&mut self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(io)?;
        tx.commit().map_err(io)?;
        self.dirty = false;
        Metrics::inc(&self.metrics.store_commits);
        Metrics::inc(&self.metrics.store_fsyncs);
        Ok(())
    }
}

impl Writer {
    fn write_batch(&mut self, batch: Vec<Op>) {
        let mut replies: Vec<Pending> = Vec::with_capacity(batch.len() + 1);
        let mut durable = false;
        // New inbound messages in the batch: commit in two steps (see the module doc).
        let mut early = false;
        let mut bytes = 0u64;
        let result = (|| -> Result<bool, StoreError> {
            let mut tx = self.db.begin_write().map_err(io)?;
            {
                let mut inbox = tx.open_table(INBOX).map_err(io)?;
                let mut ids = tx.open_table(INBOX_IDS).map_err(io)?;
                let mut outbox = tx.open_table(OUTBOX).map_err(io)?;
                let mut sessions = tx.open_table(SESSIONS).map_err(io)?;
                let mut cursors = tx.open_table(CURSORS).map_err(io)?;
                let mut auth = tx.open_table(AUTH).map_err(io)?;
                for op in batch {
                    match op {
                        Op::Accept(recs, r, done) => {
                            let mut outcomes = Vec::with_capacity(recs.len());
                            for rec in recs {
                                let key = id_key(&rec);
                                if ids.get(key.as_str()).map_err(io)?.is_some() {
                                    outcomes.push(Accepted::Duplicate);
                                    continue;
                                }
                                let seq = self.next_inbox;
                                self.next_inbox += 1;
                                let buf = rec.encode_to_vec();
                                bytes += buf.len() as u64 + key.len() as u64 + 16;
                                inbox.insert(seq, buf.as_slice()).map_err(io)?;
                                ids.insert(key.as_str(), seq).map_err(io)?;
                                durable = true;
                                early = true;
                                outcomes.push(Accepted::New(seq));
                            }
                            replies.push(Pending::visible(reply(r, Ok(outcomes))));
                            replies.push(Pending::durable(reply(done, Ok(()))));
                        }
                        Op::TurnDone(done, r) => {
                            let TurnDone {
                                inbox: seqs,
                                session,
                                history,
                                reset,
                                new_generation,
                                reply: out,
                            } = done;
                            for seq in seqs {
                                let rec = inbox
                                    .get(seq)
                                    .map_err(io)?
                                    .map(|v| decode::<InboxRecord>(v.value()));
                                if let Some(Ok(mut rec)) = rec {
                                    rec.state = INBOX_ANSWERED;
                                    let buf = rec.encode_to_vec();
                                    bytes += buf.len() as u64;
                                    inbox.insert(seq, buf.as_slice()).map_err(io)?;
                                }
                            }
                            let mut s = match sessions.get(session.as_str()).map_err(io)? {
                                Some(v) => decode::<SessionRecord>(v.value()).unwrap_or_default(),
                                None => SessionRecord::default(),
                            };
                            if reset {
                                s.history.clear();
                            }
                            if new_generation {
                                s.generation = s.generation.wrapping_add(1);
                            }
                            if let Some((user, assistant)) = history {
                                push_history(&mut s, user, assistant);
                            }
                            s.last_used_ms = super::now_ms();
                            let buf = s.encode_to_vec();
                            bytes += buf.len() as u64;
                            sessions
                                .insert(session.as_str(), buf.as_slice())
                                .map_err(io)?;
                            let seq = match out {
                                Some(out) if !out.chunks.is_empty() => {
                                    let seq = self.next_outbox;
                                    self.next_outbox += 1;
                                    let buf = out.encode_to_vec();
                                    bytes += buf.len() as u64;
                                    outbox.insert(seq, buf.as_slice()).map_err(io)?;
                                    Some(seq)
                                }
                                _ => None,
                            };
                            replies.push(Pending::visible(reply(r, Ok(seq))));
                        }
                        Op::InFlight(seq, hint, r) => {
                            let row = outbox
                                .get(seq)
                                .map_err(io)?
                                .map(|v| decode::<OutboxRecord>(v.value()));
                            match row {
                                Some(Ok(mut o)) => {
                                    o.in_flight = true;
                                    o.doubt_hint = hint;
                                    o.in_flight_ms = super::now_ms();
                                    let buf = o.encode_to_vec();
                                    bytes += buf.len() as u64;
                                    outbox.insert(seq, buf.as_slice()).map_err(io)?;
                                    durable = true;
                                    replies.push(Pending::durable(reply(r, Ok(()))));
                                }
                                Some(Err(e)) => replies.push(Pending::visible(reply(r, Err(e)))),
                                None => replies.push(Pending::visible(reply(
                                    r,
                                    Err(StoreError::Io(format!("no outbox row {seq}"))),
                                ))),
                            }
                        }
                        Op::ClearInFlight(seq, r) => {
                            let row = outbox
                                .get(seq)
                                .map_err(io)?
                                .map(|v| decode::<OutboxRecord>(v.value()));
                            if let Some(Ok(mut o)) = row
                                && o.in_flight
                            {
                                o.in_flight = false;
                                let buf = o.encode_to_vec();
                                bytes += buf.len() as u64;
                                outbox.insert(seq, buf.as_slice()).map_err(io)?;
                            }
                            replies.push(Pending::visible(reply(r, Ok(()))));
                        }
                        Op::Sent(seq, r) => {
                            let row = outbox
                                .get(seq)
                                .map_err(io)?
                                .map(|v| decode::<OutboxRecord>(v.value()));
                            match row {
                                Some(Ok(mut o)) => {
                                    o.next = o.next.saturating_add(1);
                                    o.in_flight = false;
                                    if o.next as usize >= o.chunks.len() {
                                        bytes += 1;
                                        outbox.remove(seq).map_err(io)?;
                                        replies.push(Pending::visible(reply(r, Ok(true))));
                                    } else {
                                        let buf = o.encode_to_vec();
                                        bytes += buf.len() as u64;
                                        outbox.insert(seq, buf.as_slice()).map_err(io)?;
                                        replies.push(Pending::visible(reply(r, Ok(false))));
                                    }
                                }
                                Some(Err(e)) => {
                                    outbox.remove(seq).map_err(io)?;
                                    replies.push(Pending::visible(reply(r, Err(e))));
                                }
                                None => replies.push(Pending::visible(reply(r, Ok(true)))),
                            }
                        }
                        Op::Abandon(seq, r) => {
                            bytes += 1;
                            outbox.remove(seq).map_err(io)?;
                            replies.push(Pending::visible(reply(r, Ok(()))));
                        }
                        Op::SetCursor(name, value, r) => {
                            bytes += (name.len() + value.len()) as u64;
                            cursors
                                .insert(name.as_str(), value.as_slice())
                                .map_err(io)?;
                            replies.push(Pending::visible(reply(r, Ok(()))));
                        }
                        Op::SetAuth(key, value, r) => {
                            bytes += (key.len() + value.len()) as u64;
                            auth.insert(key.as_str(), value.as_slice()).map_err(io)?;
                            durable = true;
                            replies.push(Pending::durable(reply(r, Ok(()))));
                        }
                        Op::DeleteAuthPrefix(prefix, r) => {
                            let mut n = 0usize;
                            auth.retain(|k, _| {
                                let hit = k.starts_with(prefix.as_str());
                                n += usize::from(hit);
                                !hit
                            })
                            .map_err(io)?;
                            durable = true;
                            bytes += n as u64;
                            replies.push(Pending::durable(reply(r, Ok(n))));
                        }
                        Op::Kv(op) => {
                            let a = super::kv::apply(&tx, op)?;
                            bytes += a.bytes;
                            durable |= a.durable;
                            replies.push(Pending {
                                reply: a.reply,
                                durable: a.durable,
                            });
                        }
                        Op::Flush(r) => {
                            // Only if something is waiting to be made durable: an idle box writes nothing.
                            durable |= self.dirty;
                            replies.push(Pending::durable(reply(r, Ok(()))));
                        }
                        Op::Gc(now_ms) => {
                            bytes += gc(&mut inbox, &mut ids, &mut sessions, now_ms)?;
                        }
                        // Never batched (see `run`): answered by the thread itself.
                        Op::Ping(r) => {
                            replies.push(Pending::visible(Box::new(move |_| {
                                let _ = r.send(());
                            })));
                        }
                        // Never batched (see `run`): reads go to a read transaction.
                        op @ (Op::Cursor(..)
                        | Op::Auth(..)
                        | Op::Session(..)
                        | Op::Recover(_)
                        | Op::PendingFor(..)
                        | Op::Close(_)) => {
                            replies.push(Pending::visible(Box::new(move |_| {
                                fail(op, StoreError::Io("internal: misrouted read".into()))
                            })));
                        }
                    }
                }
            }
            if bytes == 0 && !durable {
                // Nothing changed (duplicates, reads, an idle GC): write nothing at all.
                tx.abort().map_err(io)?;
                return Ok(false);
            }
            // Two steps for new inbound messages: this commit without fsync, the fsync below.
            let durability = if durable && !early {
                Durability::Immediate
            } else {
                Durability::None
            };
            tx.set_durability(durability).map_err(io)?;
            tx.commit().map_err(io)?;
            Ok(true)
        })();
        match &result {
            Ok(false) => {}
            Ok(true) => {
                Metrics::inc(&self.metrics.store_commits);
                self.metrics.store_bytes_written.fetch_add(bytes, Relaxed);
                if durable && !early {
                    Metrics::inc(&self.metrics.store_fsyncs);
                    self.dirty = false;
                } else {
                    self.dirty = true;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, file = %self.path.display(), "store commit failed");
                // Sequence numbers handed out in the failed transaction are simply skipped.
            }
        }
        let err = result.err();
        let (later, now): (Vec<Pending>, Vec<Pending>) = replies
            .into_iter()
            .partition(|p| p.durable && early && err.is_none());
        for p in now {
            (p.reply)(err.as_ref());
        }
        if later.is_empty() {
            return;
        }
        // The accepts' outcomes are out (the router may start the turns); now make it durable.
        let synced = self.commit_empty_durable();
        if let Err(e) = &synced {
            tracing::error!(error = %e, file = %self.path.display(), "store fsync failed");
        }
        for p in later {
            (p.reply)(synced.as_ref().err());
        }
    }
}

/// The durability contract the rest of the daemon relies on, counted by the store's own commit and
/// fsync counters (the same ones tests/idle.rs reads from the running binary).
#[cfg(test)]
mod tests {
    use super::super::{Recovery, Store};
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
        assert!(outbox[0].1.in_flight, "the mark survived the reopen");
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
}
