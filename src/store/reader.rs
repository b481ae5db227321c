//! The reader thread: answers read operations from read transactions, which see every commit
//! that returned, fsynced or not, so a read never queues behind the writer's commits or fsyncs.

use super::ops::{ReadOp, ToReader};
use super::records::INBOX_PENDING;
use super::schema::{AUTH, CURSORS, INBOX, OUTBOX, SESSIONS, decode, io};
use super::{InboxRecord, OutboxRecord, Recovery, SessionRecord, StoreError};
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
        ReadOp::Cursor(name, r) => {
            let v = (|| {
                let t = tx.open_table(CURSORS).map_err(io)?;
                Ok(t.get(name.as_str())
                    .map_err(io)?
                    .map(|v| v.value().to_vec()))
            })();
            let _ = r.send(v);
        }
        ReadOp::Auth(key, r) => {
            let v = (|| {
                let t = tx.open_table(AUTH).map_err(io)?;
                Ok(t.get(key.as_str()).map_err(io)?.map(|v| v.value().to_vec()))
            })();
            let _ = r.send(v);
        }
        ReadOp::Session(s, r) => {
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
        ReadOp::Recover(r) => {
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
        ReadOp::PendingFor(s, r) => {
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
        ReadOp::Kv(op) => super::kv::read(&tx, op),
    }
}
