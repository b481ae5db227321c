//! What each write operation does inside the writer's open transaction: the rows it changes, the
//! answer it gives and whether that answer waits for the fsync. One function per [`WriteOp`]; no
//! commit, no fsync and no thread here (those are [`super::writer`]'s), no reads from outside the
//! transaction.

use super::ops::{Reply, WriteOp};
use super::records::INBOX_ANSWERED;
use super::retention::{gc, push_history};
use super::schema::{AUTH, CURSORS, INBOX, INBOX_IDS, OUTBOX, SESSIONS, decode, id_key, io};
use super::{Accepted, InboxRecord, OutboxRecord, SessionRecord, StoreError, TurnDone};
use prost::Message;
use redb::{ReadableTable, Table, WriteTransaction};

/// An answer to send once the batch's commit outcome is known.
pub(super) type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// An answer and whether it promises durability (sent only after the batch's fsync).
pub(super) struct Pending {
    pub answer: Answer,
    pub durable: bool,
}

/// What a batch's operations did, gathered as they run inside its transaction.
#[derive(Default)]
pub(super) struct Effects {
    /// Every answer, in the operations' order.
    pub replies: Vec<Pending>,
    /// Some operation needs the batch fsynced before its caller hears back.
    pub durable: bool,
    /// New inbound messages: the batch commits in two steps (see [`super::writer`]).
    pub early: bool,
    /// Bytes written (0 and nothing durable: nothing changed, nothing is committed).
    pub bytes: u64,
    /// Of those, bytes whose durability may wait for someone else's fsync
    /// ([`super::kv::Commit::Deferred`]): the periodic flush is not needed for them.
    pub deferred_bytes: u64,
}

impl Effects {
    /// An answer sent as soon as the batch is committed (visible to every later operation).
    fn after_commit<T: Send + 'static>(&mut self, r: Reply<T>, value: Result<T, StoreError>) {
        self.replies.push(Pending {
            answer: answer(r, value),
            durable: false,
        });
    }

    /// An answer that promises durability: sent only once the batch is fsynced (at once if the
    /// batch had nothing to make durable, as a flush of an idle store).
    fn after_fsync<T: Send + 'static>(&mut self, r: Reply<T>, value: Result<T, StoreError>) {
        self.replies.push(Pending {
            answer: answer(r, value),
            durable: true,
        });
    }
}

/// `value`, unless the commit failed: then the commit's error.
fn answer<T: Send + 'static>(r: Reply<T>, value: Result<T, StoreError>) -> Answer {
    Box::new(move |commit_err: Option<&StoreError>| {
        let _ = r.send(match commit_err {
            Some(e) => Err(e.clone()),
            None => value,
        });
    })
}

/// The daemon's tables, opened once per batch.
pub(super) struct Tables<'t> {
    inbox: Table<'t, u64, &'static [u8]>,
    ids: Table<'t, &'static str, u64>,
    outbox: Table<'t, u64, &'static [u8]>,
    sessions: Table<'t, &'static str, &'static [u8]>,
    cursors: Table<'t, &'static str, &'static [u8]>,
    auth: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(tx: &'t WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            inbox: tx.open_table(INBOX).map_err(io)?,
            ids: tx.open_table(INBOX_IDS).map_err(io)?,
            outbox: tx.open_table(OUTBOX).map_err(io)?,
            sessions: tx.open_table(SESSIONS).map_err(io)?,
            cursors: tx.open_table(CURSORS).map_err(io)?,
            auth: tx.open_table(AUTH).map_err(io)?,
        })
    }
}

/// The writer's sequence counters and fsync state, as the operations see them.
pub(super) struct Counters<'w> {
    pub next_inbox: &'w mut u64,
    pub next_outbox: &'w mut u64,
    /// Lazily committed writes are waiting for an fsync.
    pub dirty: bool,
    /// Rows held in memory until released or an fsync ([`super::kv`]).
    pub held: &'w mut super::held::Held,
}

/// Applies one operation. An `Err` aborts the whole batch (every caller in it hears the error;
/// sequence numbers handed out in it are skipped).
pub(super) fn apply(
    tx: &WriteTransaction,
    t: &mut Tables,
    c: &mut Counters,
    op: WriteOp,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    match op {
        WriteOp::Accept(recs, r, done) => accept(t, c.next_inbox, recs, r, done, fx),
        WriteOp::TurnDone(done, r) => turn_done(t, c.next_outbox, *done, r, fx),
        WriteOp::InFlight(seq, hint, r) => in_flight(t, seq, hint, r, fx),
        WriteOp::ClearInFlight(seq, r) => clear_in_flight(t, seq, r, fx),
        WriteOp::Sent(seq, r) => sent(t, seq, r, fx),
        WriteOp::Abandon(seq, r) => {
            fx.bytes += 1;
            t.outbox.remove(seq).map_err(io)?;
            fx.after_commit(r, Ok(()));
            Ok(())
        }
        // Lazy: committed, made durable by the next fsync (inbound is deduplicated anyway).
        WriteOp::SetCursor(name, value, r) => {
            fx.bytes += (name.len() + value.len()) as u64;
            t.cursors
                .insert(name.as_str(), value.as_slice())
                .map_err(io)?;
            fx.after_commit(r, Ok(()));
            Ok(())
        }
        WriteOp::SetAuth(key, value, r) => {
            fx.bytes += (key.len() + value.len()) as u64;
            t.auth.insert(key.as_str(), value.as_slice()).map_err(io)?;
            fx.durable = true;
            fx.after_fsync(r, Ok(()));
            Ok(())
        }
        WriteOp::DeleteAuthPrefix(prefix, r) => delete_auth_prefix(t, &prefix, r, fx),
        WriteOp::Kv(op) => {
            let a = super::kv::apply(tx, c.held, op)?;
            fx.bytes += a.bytes;
            if a.deferred {
                fx.deferred_bytes += a.bytes;
            }
            fx.durable |= a.durable;
            fx.replies.push(Pending {
                answer: a.reply,
                durable: a.durable,
            });
            Ok(())
        }
        WriteOp::Flush(r) => {
            // Only if something is waiting to be made durable: an idle box writes nothing.
            fx.durable |= c.dirty;
            fx.after_fsync(r, Ok(()));
            Ok(())
        }
        WriteOp::Gc(now_ms) => {
            fx.bytes += gc(&mut t.inbox, &mut t.ids, &mut t.sessions, now_ms)?;
            Ok(())
        }
    }
}

/// New messages get the next inbox sequence numbers and a dedupe entry; redeliveries write
/// nothing. The outcomes are answered once committed, `done` once fsynced.
fn accept(
    t: &mut Tables,
    next_inbox: &mut u64,
    recs: Vec<InboxRecord>,
    r: Reply<Vec<Accepted>>,
    done: Reply<()>,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let mut outcomes = Vec::with_capacity(recs.len());
    for rec in recs {
        let key = id_key(&rec);
        if t.ids.get(key.as_str()).map_err(io)?.is_some() {
            outcomes.push(Accepted::Duplicate);
            continue;
        }
        let seq = *next_inbox;
        *next_inbox += 1;
        let buf = rec.encode_to_vec();
        fx.bytes += buf.len() as u64 + key.len() as u64 + 16;
        t.inbox.insert(seq, buf.as_slice()).map_err(io)?;
        t.ids.insert(key.as_str(), seq).map_err(io)?;
        fx.durable = true;
        fx.early = true;
        outcomes.push(Accepted::New(seq));
    }
    fx.after_commit(r, Ok(outcomes));
    fx.after_fsync(done, Ok(()));
    Ok(())
}

/// A finished turn, atomically: its inbox rows answered, the session's history and generation,
/// the reply's outbox row. Lazy (a crash before the next fsync re-runs the turn).
fn turn_done(
    t: &mut Tables,
    next_outbox: &mut u64,
    done: TurnDone,
    r: Reply<Option<u64>>,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let TurnDone {
        inbox: seqs,
        session,
        history,
        reset,
        new_generation,
        reply: out,
    } = done;
    for seq in seqs {
        let rec = t
            .inbox
            .get(seq)
            .map_err(io)?
            .map(|v| decode::<InboxRecord>(v.value()));
        if let Some(Ok(mut rec)) = rec {
            rec.state = INBOX_ANSWERED;
            let buf = rec.encode_to_vec();
            fx.bytes += buf.len() as u64;
            t.inbox.insert(seq, buf.as_slice()).map_err(io)?;
        }
    }
    let mut s = match t.sessions.get(session.as_str()).map_err(io)? {
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
    fx.bytes += buf.len() as u64;
    t.sessions
        .insert(session.as_str(), buf.as_slice())
        .map_err(io)?;
    let seq = match out {
        Some(out) if !out.chunks.is_empty() => {
            let seq = *next_outbox;
            *next_outbox += 1;
            let buf = out.encode_to_vec();
            fx.bytes += buf.len() as u64;
            t.outbox.insert(seq, buf.as_slice()).map_err(io)?;
            Some(seq)
        }
        _ => None,
    };
    fx.after_commit(r, Ok(seq));
    Ok(())
}

/// The outbox row `seq`, if present (an undecodable one as its error).
fn outbox_row(
    t: &Tables,
    seq: u64,
) -> Result<Option<Result<OutboxRecord, StoreError>>, StoreError> {
    Ok(t.outbox
        .get(seq)
        .map_err(io)?
        .map(|v| decode::<OutboxRecord>(v.value())))
}

/// The next chunk may leave: marked in flight with the channel's hint, fsynced before the answer.
fn in_flight(
    t: &mut Tables,
    seq: u64,
    hint: u64,
    r: Reply<()>,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    match outbox_row(t, seq)? {
        Some(Ok(mut o)) => {
            o.in_flight = true;
            o.doubt_hint = hint;
            o.in_flight_ms = super::now_ms();
            let buf = o.encode_to_vec();
            fx.bytes += buf.len() as u64;
            t.outbox.insert(seq, buf.as_slice()).map_err(io)?;
            fx.durable = true;
            fx.after_fsync(r, Ok(()));
        }
        Some(Err(e)) => fx.after_commit(r, Err(e)),
        None => fx.after_commit(r, Err(StoreError::Io(format!("no outbox row {seq}")))),
    }
    Ok(())
}

/// The in-flight chunk did not leave after all. Lazy: a crash before the next fsync leaves the
/// mark, and the chunk is settled with its channel again.
fn clear_in_flight(
    t: &mut Tables,
    seq: u64,
    r: Reply<()>,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    if let Some(Ok(mut o)) = outbox_row(t, seq)?
        && o.in_flight
    {
        o.in_flight = false;
        let buf = o.encode_to_vec();
        fx.bytes += buf.len() as u64;
        t.outbox.insert(seq, buf.as_slice()).map_err(io)?;
    }
    fx.after_commit(r, Ok(()));
    Ok(())
}

/// The in-flight chunk was sent: on to the next one, or the row goes when the reply is complete
/// (answer `true`). An undecodable row goes too, with its error.
fn sent(t: &mut Tables, seq: u64, r: Reply<bool>, fx: &mut Effects) -> Result<(), StoreError> {
    match outbox_row(t, seq)? {
        Some(Ok(mut o)) => {
            o.next = o.next.saturating_add(1);
            o.in_flight = false;
            if o.next as usize >= o.chunks.len() {
                fx.bytes += 1;
                t.outbox.remove(seq).map_err(io)?;
                fx.after_commit(r, Ok(true));
            } else {
                let buf = o.encode_to_vec();
                fx.bytes += buf.len() as u64;
                t.outbox.insert(seq, buf.as_slice()).map_err(io)?;
                fx.after_commit(r, Ok(false));
            }
        }
        Some(Err(e)) => {
            t.outbox.remove(seq).map_err(io)?;
            fx.after_commit(r, Err(e));
        }
        None => fx.after_commit(r, Ok(true)),
    }
    Ok(())
}

/// A logged-out channel's credentials go, durably; answers how many keys went.
fn delete_auth_prefix(
    t: &mut Tables,
    prefix: &str,
    r: Reply<usize>,
    fx: &mut Effects,
) -> Result<(), StoreError> {
    let mut n = 0usize;
    t.auth
        .retain(|k, _| {
            let hit = k.starts_with(prefix);
            n += usize::from(hit);
            !hit
        })
        .map_err(io)?;
    fx.durable = true;
    fx.bytes += n as u64;
    fx.after_fsync(r, Ok(n));
    Ok(())
}
