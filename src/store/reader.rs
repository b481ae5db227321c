//! The reader thread: answers read operations from read transactions, which see every commit
//! that returned, fsynced or not, so a read never queues behind the writer's commits or fsyncs.

use super::ops::{ReadOp, ToReader};
use super::records::INBOX_PENDING;
use super::schema::{AUTH, CURSORS, INBOX, OUTBOX, SESSIONS, decode, io};
use super::{
    InboxRecord, OutboxRecord, Recovery, SessionRecord, StoreError, StoredMessage, StoredReply,
};
use crate::vocab::ChannelKind;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::mpsc;

/// The reader thread: answers read operations from read transactions, so a read (a session's
/// history before an agent call, the WhatsApp library's keys) never waits for an fsync. Ends when
/// every handle is dropped; after the writer closed the file it answers [`StoreError::Closed`].
pub(super) fn serve_reads(db: std::sync::Weak<Database>, mut rx: mpsc::Receiver<ToReader>) {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            ToReader::Ping(r) => drop(r.send(())),
            ToReader::Read(op) => match db.upgrade() {
                Some(db) => read(&db, op),
                None => op.fail(StoreError::Closed),
            },
        }
    }
}

/// Answers one read operation from a fresh read transaction.
pub(super) fn read(db: &Database, op: ReadOp) {
    let tx = match db.begin_read() {
        Ok(tx) => tx,
        Err(e) => {
            op.fail(io(e));
            return;
        }
    };
    match op {
        ReadOp::Cursor(name, r) => drop(r.send(bytes(&tx, CURSORS, &name))),
        ReadOp::Auth(key, r) => drop(r.send(bytes(&tx, AUTH, &key))),
        ReadOp::Session(s, r) => drop(r.send(session(&tx, &s))),
        ReadOp::Recover(r) => drop(r.send(recover(&tx))),
        ReadOp::PendingFor(s, r) => drop(r.send(pending_for(&tx, &s))),
        ReadOp::Kv(op) => super::kv::read(&tx, op),
    }
}

type Tx = redb::ReadTransaction;

/// The value under `key` in a `&str` → bytes table (a cursor, an auth value).
fn bytes(
    tx: &Tx,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let t = tx.open_table(table).map_err(io)?;
    Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
}

/// A session's state; a fresh one if never seen or unreadable.
fn session(tx: &Tx, s: &str) -> Result<SessionRecord, StoreError> {
    let t = tx.open_table(SESSIONS).map_err(io)?;
    match t.get(s).map_err(io)? {
        Some(v) => decode::<SessionRecord>(v.value()).or_else(|e| {
            tracing::warn!(error = %e, "session record unreadable; starting it afresh");
            Ok(SessionRecord::default())
        }),
        None => Ok(SessionRecord::default()),
    }
}

/// Every unanswered inbox row and every outbox row, each with its channel parsed; unreadable
/// rows and rows of unknown channels are logged and counted in `skipped`.
fn recover(tx: &Tx) -> Result<Recovery, StoreError> {
    let mut rec = Recovery::default();
    let inbox = tx.open_table(INBOX).map_err(io)?;
    for row in inbox.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let seq = k.value();
        match decode::<InboxRecord>(v.value()) {
            Ok(m) if m.state == INBOX_PENDING => match channel_of("inbox", seq, &m.channel) {
                Some(channel) => rec.pending.push(StoredMessage {
                    seq,
                    channel,
                    rec: m,
                }),
                None => rec.skipped += 1,
            },
            Ok(_) => {}
            Err(e) => {
                tracing::error!(seq, error = %e, "skipping an unreadable inbox row");
                rec.skipped += 1;
            }
        }
    }
    let outbox = tx.open_table(OUTBOX).map_err(io)?;
    for row in outbox.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        let seq = k.value();
        match decode::<OutboxRecord>(v.value()) {
            Ok(m) => match channel_of("outbox", seq, &m.channel) {
                Some(channel) => rec.outbox.push(StoredReply {
                    seq,
                    channel,
                    rec: m,
                }),
                None => rec.skipped += 1,
            },
            Err(e) => {
                tracing::error!(seq, error = %e, "skipping an unreadable outbox row");
                rec.skipped += 1;
            }
        }
    }
    Ok(rec)
}

/// One session's unanswered inbox rows, in order (unreadable ones and unknown channels left out).
fn pending_for(tx: &Tx, s: &str) -> Result<Vec<StoredMessage>, StoreError> {
    let inbox = tx.open_table(INBOX).map_err(io)?;
    let mut out = Vec::new();
    for row in inbox.iter().map_err(io)? {
        let (k, v) = row.map_err(io)?;
        if let Ok(m) = decode::<InboxRecord>(v.value())
            && m.state == INBOX_PENDING
            && m.session == s
            && let Some(channel) = channel_of("inbox", k.value(), &m.channel)
        {
            out.push(StoredMessage {
                seq: k.value(),
                channel,
                rec: m,
            });
        }
    }
    Ok(out)
}

/// A stored row's channel, parsed here once. One this build does not know (a newer build wrote
/// it) is logged and the row skipped: it stays in the store as it is, never answered or sent by
/// this build, never deleted.
fn channel_of(table: &'static str, seq: u64, channel: &str) -> Option<ChannelKind> {
    let kind = ChannelKind::parse(channel);
    if kind.is_none() {
        tracing::warn!(
            table,
            seq,
            channel,
            "skipping a stored row that names a channel this version does not know; it stays in the store"
        );
    }
    kind
}

#[cfg(test)]
mod tests {
    use crate::metrics::Metrics;
    use crate::store::{Accepted, InboxRecord, OutboxRecord, Store, TurnDone};
    use crate::vocab::ChannelKind;
    use std::sync::Arc;

    fn message(channel: &str, id: &str) -> InboxRecord {
        InboxRecord {
            channel: channel.into(),
            msg_id: id.into(),
            chat: "42".into(),
            author: "42".into(),
            session: format!("{channel}-42"),
            ..InboxRecord::default()
        }
    }

    /// The channel is parsed where rows are read: known ones come out typed; a row naming a
    /// channel this build does not know (written by a newer one) is skipped and counted, and stays
    /// in the store untouched.
    #[tokio::test]
    async fn rows_come_out_with_their_channel_and_unknown_channels_stay_behind() {
        let store = Store::open_in_memory(Arc::new(Metrics::default())).unwrap();
        let got = store
            .accept_many(vec![message("telegram", "1"), message("signal", "2")])
            .await
            .unwrap();
        assert!(matches!(got[..], [Accepted::New(_), Accepted::New(_)]));
        for channel in ["whatsapp", "signal"] {
            store
                .turn_done(TurnDone {
                    inbox: vec![],
                    session: format!("{channel}-42"),
                    history: None,
                    reset: false,
                    new_generation: false,
                    reply: Some(OutboxRecord {
                        channel: channel.into(),
                        chat: "42".into(),
                        chunks: vec!["hi".into()],
                        ..OutboxRecord::default()
                    }),
                })
                .await
                .unwrap();
        }
        for _ in 0..2 {
            let r = store.recover().await.unwrap();
            assert_eq!(
                r.skipped, 2,
                "one inbox row and one reply skipped, every time"
            );
            assert_eq!(r.pending.len(), 1);
            assert_eq!(r.pending[0].channel, ChannelKind::Telegram);
            assert_eq!(r.pending[0].rec.msg_id, "1");
            assert_eq!(r.outbox.len(), 1);
            assert_eq!(r.outbox[0].channel, ChannelKind::WhatsApp);
        }
        let mine = store.pending_for("telegram-42").await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].channel, ChannelKind::Telegram);
        assert!(store.pending_for("signal-42").await.unwrap().is_empty());
        // Still in the inbox: its redelivery is a duplicate.
        assert_eq!(
            store.accept(message("signal", "2")).await.unwrap(),
            Accepted::Duplicate
        );
    }
}
