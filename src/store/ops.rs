//! The operations a [`super::Store`] handle sends to its two threads, typed by where they run: a
//! [`ReadOp`] only ever reaches the reader thread ([`super::reader`]), a [`WriteOp`] only the writer
//! ([`super::writer`]), so no thread has to check what it was handed. Each carries the oneshot its
//! caller waits on; [`ReadOp::fail`] answers a read that cannot run (a write that cannot run
//! drops its oneshots, and its caller hears [`StoreError::Closed`]).

use super::kv::{KvRead, KvWriteOp};
use super::{Accepted, InboxRecord, Recovery, SessionRecord, StoreError, StoredMessage, TurnDone};
use tokio::sync::oneshot;

/// Where an operation's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A read, answered from a read transaction by the reader thread: it sees every commit that
/// returned (fsynced or not) and never waits for one.
pub(crate) enum ReadOp {
    Cursor(String, Reply<Option<Vec<u8>>>),
    Auth(String, Reply<Option<Vec<u8>>>),
    Session(String, Reply<SessionRecord>),
    Recover(Reply<Recovery>),
    PendingFor(String, Reply<Vec<StoredMessage>>),
    /// A read of a generic key-value table ([`super::kv`]).
    Kv(KvRead),
}

/// A write, folded by the writer thread into its next batch (one transaction).
pub(crate) enum WriteOp {
    /// One or more inbound messages, accepted in order in one transaction (one fsync): the
    /// outcomes once committed (visible), then a second answer once fsynced (durable).
    Accept(Vec<InboxRecord>, Reply<Vec<Accepted>>, Reply<()>),
    /// Boxed: a turn's record is far larger than every other operation.
    TurnDone(Box<TurnDone>, Reply<Option<u64>>),
    /// Outbox row, the channel's doubt hint.
    InFlight(u64, u64, Reply<()>),
    /// The in-flight chunk certainly did not leave (the channel refused it before sending).
    ClearInFlight(u64, Reply<()>),
    Sent(u64, Reply<bool>),
    Abandon(u64, Reply<()>),
    SetCursor(String, Vec<u8>, Reply<()>),
    SetAuth(String, Vec<u8>, Reply<()>),
    DeleteAuthPrefix(String, Reply<usize>),
    /// A write to a generic key-value table ([`super::kv`]).
    Kv(KvWriteOp),
    /// Makes lazily committed writes durable (nothing to do: writes nothing).
    Flush(Reply<()>),
    /// Retention at this wall-clock time (ms since the epoch); nobody waits for it.
    Gc(u64),
}

/// What the writer thread's queue carries.
pub(crate) enum ToWriter {
    Write(WriteOp),
    /// A no-op answered as soon as the thread gets to it (liveness): no transaction.
    Ping(oneshot::Sender<()>),
    /// Flush, close the file, then answer.
    Close(oneshot::Sender<()>),
}

/// What the reader thread's queue carries.
pub(crate) enum ToReader {
    Read(ReadOp),
    /// A no-op answered as soon as the thread gets to it (liveness).
    Ping(oneshot::Sender<()>),
}

impl ReadOp {
    /// Answers a read that could not run with `e`.
    pub(crate) fn fail(self, e: StoreError) {
        match self {
            ReadOp::Cursor(_, r) | ReadOp::Auth(_, r) => drop(r.send(Err(e))),
            ReadOp::Session(_, r) => drop(r.send(Err(e))),
            ReadOp::Recover(r) => drop(r.send(Err(e))),
            ReadOp::PendingFor(_, r) => drop(r.send(Err(e))),
            ReadOp::Kv(op) => op.fail(e),
        }
    }
}
