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
//! Reads do not queue behind commits: the reader thread ([`serve_reads`]) answers them from read
//! transactions, which see every commit that returned, fsynced or not.

use super::records::{INBOX_ANSWERED, INBOX_PENDING};
use super::{
    Accepted, InboxRecord, Op, OutboxRecord, Recovery, SessionRecord, StoreError, TurnDone,
};
use crate::config::StoreConfig;
use crate::metrics::Metrics;
use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;

const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");
/// `<channel>\x1f<chat>\x1f<author>\x1f<message id>` → inbox sequence: the dedupe index (a
/// message id is unique only per chat and sender).
const INBOX_IDS: TableDefinition<&str, u64> = TableDefinition::new("inbox_ids");
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
const AUTH: TableDefinition<&str, &[u8]> = TableDefinition::new("auth");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bumped when the layout changes incompatibly; an unknown newer version refuses to open.
/// 2: the dedupe index is keyed by chat and author too (rebuilt from the inbox on upgrade).
const SCHEMA_VERSION: u64 = 2;
/// Operations folded into one transaction at most: bounds a transaction's size and latency.
const MAX_BATCH_OPS: usize = 256;
/// Answered inbox rows are kept this long for dedupe: longer than Telegram keeps unconfirmed
/// updates (24 h) and than WhatsApp's offline queue replays.
const INBOX_RETENTION_MS: u64 = 3 * 24 * 3600 * 1000;
/// Answered inbox rows kept at most, whatever their age: bounds the file under heavy traffic.
const MAX_INBOX_ROWS: u64 = 20_000;
/// Sessions kept at most; the least recently used beyond this are forgotten.
const MAX_SESSIONS: u64 = 5_000;
/// History entries per session (user and assistant messages).
pub const MAX_HISTORY_ENTRIES: usize = 40;
/// History bytes per session; the oldest entries go first.
pub const MAX_HISTORY_BYTES: usize = 32 * 1024;

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Creates the state directory (0700, see [`crate::state_dir::prepare`]: never owned by the wrong
/// user) and the store file (0600), fixing wrong modes.
pub(super) fn prepare_dir_and_file(dir: &Path) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let prepared = crate::state_dir::prepare(dir).map_err(StoreError::Open)?;
    let path = dir.join(super::FILE_NAME);
    // An existing file is checked before it is opened: one left by another user would only say
    // "permission denied".
    let existed = path.exists();
    if existed {
        prepared.claim(&path).map_err(StoreError::Open)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::Open(format!("cannot open {}: {e}", path.display())))?;
    if !existed {
        prepared.claim(&path).map_err(StoreError::Open)?;
    }
    let fmeta = file
        .metadata()
        .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
    if fmeta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "store file was readable by other users; setting it to 0600");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Open(format!("cannot chmod 0600 {}: {e}", path.display())))?;
    }
    Ok(path)
}

/// The store is locked by another process: the service, or a `clawbox run` in another terminal.
/// Until the CLI can talk to the running service, it must be stopped for the command to run.
fn held_message(path: &Path) -> String {
    format!(
        "the clawbox service is running and holds {} (or another clawbox command does): stop it \
         first with `sudo systemctl stop clawbox`, run this again, then `sudo systemctl start clawbox`",
        path.display()
    )
}

fn recovery_hint(path: &Path) -> String {
    format!(
        "stop clawbox, move the file aside (`mv {p} {p}.broken`) and start again; messages not yet answered \
         and the WhatsApp link are lost with it (pair again), the configuration is not",
        p = path.display()
    )
}

fn open_db(path: &Path, cfg: &StoreConfig) -> Result<Database, StoreError> {
    let cache = (cfg.cache_kib as usize).saturating_mul(1024);
    // redb may panic on some forms of damage; a damaged file must give a message, not a crash.
    let opened =
        std::panic::catch_unwind(|| Database::builder().set_cache_size(cache).create(path));
    init_db(opened, path)
}

fn init_db(
    opened: std::thread::Result<Result<Database, redb::DatabaseError>>,
    path: &Path,
) -> Result<Database, StoreError> {
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError::Open(held_message(path)));
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            return Err(StoreError::Open(format!("{}: {e}", path.display())));
        }
        Ok(Err(e)) => {
            return Err(StoreError::Corrupt(format!(
                "{}: {e}; {}",
                path.display(),
                recovery_hint(path)
            )));
        }
        Err(_) => {
            return Err(StoreError::Corrupt(format!(
                "{}: unreadable; {}",
                path.display(),
                recovery_hint(path)
            )));
        }
    };
    // Create every table and check the schema version in one durable transaction.
    let init = || -> Result<(), StoreError> {
        let tx = db.begin_write().map_err(io)?;
        {
            tx.open_table(INBOX).map_err(io)?;
            tx.open_table(INBOX_IDS).map_err(io)?;
            tx.open_table(OUTBOX).map_err(io)?;
            tx.open_table(SESSIONS).map_err(io)?;
            tx.open_table(CURSORS).map_err(io)?;
            tx.open_table(AUTH).map_err(io)?;
            super::kv::create_tables(&tx)?;
            let mut meta = tx.open_table(META).map_err(io)?;
            let version = meta.get("schema_version").map_err(io)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
                Some(1) => {
                    rebuild_ids(&tx)?;
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(v) => {
                    return Err(StoreError::Open(format!(
                        "{} was written by a newer clawbox (store schema {v}, this build reads {SCHEMA_VERSION}); \
                         install that version again",
                        path.display()
                    )));
                }
            }
        }
        tx.commit().map_err(io)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(init)) {
        Ok(r) => r.map(|()| db),
        Err(_) => Err(StoreError::Corrupt(format!(
            "{}: unreadable tables; {}",
            path.display(),
            recovery_hint(path)
        ))),
    }
}

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

/// The reader thread: answers read operations from read transactions, so a read (a session's
/// history before an agent call, the WhatsApp library's keys) never waits for an fsync. Ends when
/// every handle is dropped; after the writer closed the file it answers [`StoreError::Closed`].
fn serve_reads(db: std::sync::Weak<Database>, mut rx: mpsc::Receiver<Op>) {
    while let Some(op) = rx.blocking_recv() {
        if let Op::Ping(r) = op {
            let _ = r.send(());
            continue;
        }
        match db.upgrade() {
            Some(db) => read(&db, op),
            None => fail(op, StoreError::Closed),
        }
    }
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

fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt(format!("undecodable record: {e}")))
}

/// The dedupe key of an inbox record: a message id is unique only per chat and sender.
fn id_key(rec: &InboxRecord) -> String {
    format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}",
        rec.channel, rec.chat, rec.author, rec.msg_id
    )
}

/// Schema 1 → 2: the dedupe index gains chat and author; rebuilt from the inbox rows (bounded by
/// the inbox's own retention).
fn rebuild_ids(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let inbox = tx.open_table(INBOX).map_err(io)?;
    let mut ids = tx.open_table(INBOX_IDS).map_err(io)?;
    ids.retain(|_, _| false).map_err(io)?;
    for row in inbox.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        if let Ok(rec) = decode::<InboxRecord>(v.value()) {
            ids.insert(id_key(&rec).as_str(), k.value()).map_err(io)?;
        }
    }
    Ok(())
}

/// A writer over an in-memory database that handles each operation inline, in the caller's task:
/// the same transactions, no thread, no commit window. For tests under a paused clock, where
/// waiting on another thread would let virtual time jump.
pub(super) fn in_memory(metrics: Arc<Metrics>) -> Result<Writer, StoreError> {
    let backend = redb::backends::InMemoryBackend::new();
    let opened = std::panic::catch_unwind(|| Database::builder().create_with_backend(backend));
    let db = init_db(opened, Path::new("<memory>"))?;
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

/// Answers one read operation from a fresh read transaction.
fn read(db: &Database, op: Op) {
    let tx = match db.begin_read() {
        Ok(tx) => tx,
        Err(e) => {
            fail(op, io(e));
            return;
        }
    };
    match op {
        Op::Cursor(name, r) => {
            let v = (|| {
                let t = tx.open_table(CURSORS).map_err(io)?;
                Ok(t.get(name.as_str())
                    .map_err(io)?
                    .map(|v| v.value().to_vec()))
            })();
            let _ = r.send(v);
        }
        Op::Auth(key, r) => {
            let v = (|| {
                let t = tx.open_table(AUTH).map_err(io)?;
                Ok(t.get(key.as_str()).map_err(io)?.map(|v| v.value().to_vec()))
            })();
            let _ = r.send(v);
        }
        Op::Session(s, r) => {
            let v = (|| {
                let t = tx.open_table(SESSIONS).map_err(io)?;
                match t.get(s.as_str()).map_err(io)? {
                    Some(v) => decode::<SessionRecord>(v.value()).or_else(|e| {
                        tracing::warn!(error = %e, "session record unreadable; starting it afresh");
                        Ok(SessionRecord::default())
                    }),
                    None => Ok(SessionRecord::default()),
                }
            })();
            let _ = r.send(v);
        }
        Op::Recover(r) => {
            let v = (|| {
                let mut rec = Recovery::default();
                let inbox = tx.open_table(INBOX).map_err(io)?;
                for row in inbox.iter().map_err(io)? {
                    let (k, v) = row.map_err(io)?;
                    match decode::<InboxRecord>(v.value()) {
                        Ok(m) if m.state == INBOX_PENDING => rec.pending.push((k.value(), m)),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(seq = k.value(), error = %e, "skipping an unreadable inbox row");
                            rec.skipped += 1;
                        }
                    }
                }
                let outbox = tx.open_table(OUTBOX).map_err(io)?;
                for row in outbox.iter().map_err(io)? {
                    let (k, v) = row.map_err(io)?;
                    match decode::<OutboxRecord>(v.value()) {
                        Ok(m) => rec.outbox.push((k.value(), m)),
                        Err(e) => {
                            tracing::error!(seq = k.value(), error = %e, "skipping an unreadable outbox row");
                            rec.skipped += 1;
                        }
                    }
                }
                Ok(rec)
            })();
            let _ = r.send(v);
        }
        Op::PendingFor(s, r) => {
            let v = (|| {
                let inbox = tx.open_table(INBOX).map_err(io)?;
                let mut out = Vec::new();
                for row in inbox.iter().map_err(io)? {
                    let (k, v) = row.map_err(io)?;
                    if let Ok(m) = decode::<InboxRecord>(v.value()) {
                        if m.state == INBOX_PENDING && m.session == s {
                            out.push((k.value(), m));
                        }
                    }
                }
                Ok(out)
            })();
            let _ = r.send(v);
        }
        Op::Kv(op) => super::kv::read(&tx, op),
        other => fail(other, StoreError::Io("internal: not a read".into())),
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

fn push_history(s: &mut SessionRecord, user: String, assistant: String) {
    use super::HistoryItem;
    s.history.push(HistoryItem {
        role: 0,
        text: user,
    });
    s.history.push(HistoryItem {
        role: 1,
        text: assistant,
    });
    let excess = s.history.len().saturating_sub(MAX_HISTORY_ENTRIES);
    s.history.drain(..excess);
    while s.history.iter().map(|h| h.text.len()).sum::<usize>() > MAX_HISTORY_BYTES
        && s.history.len() > 2
    {
        s.history.drain(..2);
    }
}

fn gc(
    inbox: &mut redb::Table<u64, &[u8]>,
    ids: &mut redb::Table<&str, u64>,
    sessions: &mut redb::Table<&str, &[u8]>,
    now_ms: u64,
) -> Result<u64, StoreError> {
    let total = inbox.len().map_err(io)?;
    let mut over = total.saturating_sub(MAX_INBOX_ROWS);
    let mut doomed: Vec<(u64, String)> = Vec::new();
    for row in inbox.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        match decode::<InboxRecord>(v.value()) {
            Ok(m) if m.state == INBOX_ANSWERED => {
                let old = now_ms.saturating_sub(m.accepted_ms) > INBOX_RETENTION_MS;
                if old || over > 0 {
                    over = over.saturating_sub(1);
                    doomed.push((k.value(), id_key(&m)));
                }
            }
            Ok(_) => {}
            Err(_) => doomed.push((k.value(), String::new())),
        }
    }
    for (seq, id) in &doomed {
        inbox.remove(*seq).map_err(io)?;
        if !id.is_empty() {
            ids.remove(id.as_str()).map_err(io)?;
        }
    }
    let mut sessions_removed = 0u64;
    let n = sessions.len().map_err(io)?;
    if n > MAX_SESSIONS {
        let mut all: Vec<(u64, String)> = Vec::new();
        for row in sessions.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let used = decode::<SessionRecord>(v.value())
                .map(|s| s.last_used_ms)
                .unwrap_or(0);
            all.push((used, k.value().to_string()));
        }
        all.sort();
        for (_, k) in all.iter().take((n - MAX_SESSIONS) as usize) {
            sessions.remove(k.as_str()).map_err(io)?;
            sessions_removed += 1;
        }
    }
    if !doomed.is_empty() {
        tracing::debug!(removed = doomed.len(), "inbox retention");
    }
    Ok(doomed.len() as u64 + sessions_removed)
}

fn fail(op: Op, e: StoreError) {
    match op {
        Op::Accept(_, r, done) => {
            drop(r.send(Err(e.clone())));
            drop(done.send(Err(e)));
        }
        Op::TurnDone(_, r) => drop(r.send(Err(e))),
        Op::InFlight(_, _, r)
        | Op::ClearInFlight(_, r)
        | Op::Abandon(_, r)
        | Op::SetCursor(_, _, r)
        | Op::SetAuth(_, _, r)
        | Op::Flush(r) => drop(r.send(Err(e))),
        Op::Sent(_, r) => drop(r.send(Err(e))),
        Op::DeleteAuthPrefix(_, r) => drop(r.send(Err(e))),
        Op::Cursor(_, r) | Op::Auth(_, r) => drop(r.send(Err(e))),
        Op::Session(_, r) => drop(r.send(Err(e))),
        Op::Recover(r) => drop(r.send(Err(e))),
        Op::PendingFor(_, r) => drop(r.send(Err(e))),
        Op::Kv(op) => op.fail(e),
        Op::Gc(_) => {}
        // A failed no-op is no answer: the thread did not vouch for itself.
        Op::Ping(_) => {}
        Op::Close(r) => drop(r.send(())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(chat: &str, author: &str, id: &str) -> InboxRecord {
        InboxRecord {
            channel: "whatsapp".into(),
            msg_id: id.into(),
            chat: chat.into(),
            author: author.into(),
            ..InboxRecord::default()
        }
    }

    /// A store written by schema 1 (dedupe keys `<channel>\x1f<id>`) opens as schema 2 with its
    /// dedupe index rebuilt from the inbox: a redelivery of a message it holds is still
    /// recognised, and the same id from another chat is a new message.
    #[test]
    fn schema_1_upgrades_its_dedupe_index_from_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut inbox = tx.open_table(INBOX).unwrap();
                let mut ids = tx.open_table(INBOX_IDS).unwrap();
                let mut meta = tx.open_table(META).unwrap();
                let r = rec("a@s.whatsapp.net", "a@s.whatsapp.net", "ID1");
                inbox.insert(7, r.encode_to_vec().as_slice()).unwrap();
                ids.insert("whatsapp\u{1f}ID1", 7).unwrap();
                meta.insert("schema_version", 1).unwrap();
            }
            tx.commit().unwrap();
        }
        let db = open_db(&path, &StoreConfig::default()).unwrap();
        let tx = db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(meta.get("schema_version").unwrap().unwrap().value(), 2);
        let ids = tx.open_table(INBOX_IDS).unwrap();
        let key = id_key(&rec("a@s.whatsapp.net", "a@s.whatsapp.net", "ID1"));
        assert_eq!(ids.get(key.as_str()).unwrap().unwrap().value(), 7);
        assert!(ids.get("whatsapp\u{1f}ID1").unwrap().is_none());
        assert_eq!(ids.len().unwrap(), 1);
    }
}
