//! The reader thread: answers read operations from read transactions, which see every commit
//! that returned, fsynced or not, so a read never queues behind the writer's commits or fsyncs.

use super::records::INBOX_PENDING;
use super::schema::{AUTH, CURSORS, INBOX, OUTBOX, SESSIONS, decode, io};
use super::{InboxRecord, Op, OutboxRecord, Recovery, SessionRecord, StoreError, fail};
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::mpsc;

/// The reader thread: answers read operations from read transactions, so a read (a session's
/// history before an agent call, the WhatsApp library's keys) never waits for an fsync. Ends when
/// every handle is dropped; after the writer closed the file it answers [`StoreError::Closed`].
pub(super) fn serve_reads(db: std::sync::Weak<Database>, mut rx: mpsc::Receiver<Op>) {
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

/// Answers one read operation from a fresh read transaction.
pub(super) fn read(db: &Database, op: Op) {
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
