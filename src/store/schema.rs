//! The store's file and layout: where it lives and who owns it, the tables and what each holds,
//! the schema version and its upgrades, and opening a file that may be damaged or held by another
//! process (each with the message that says what to do).

use super::records::InboxRecord;
use super::{FILE_NAME, StoreError};
use crate::config::StoreConfig;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

/// Accepted inbound messages by sequence ([`InboxRecord`]).
pub(super) const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");
/// `<channel>\x1f<chat>\x1f<author>\x1f<message id>` → inbox sequence: the dedupe index (a
/// message id is unique only per chat and sender).
pub(super) const INBOX_IDS: TableDefinition<&str, u64> = TableDefinition::new("inbox_ids");
/// Replies not yet fully sent, by sequence ([`super::OutboxRecord`]).
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Session identity → [`super::SessionRecord`] (generation, history, last use).
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// A channel's resume points (Telegram's update offset, the highest message id it knows, …).
pub(super) const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("cursors");
/// Channel credentials by key (the WhatsApp device identity and Signal sessions).
pub(super) const AUTH: TableDefinition<&str, &[u8]> = TableDefinition::new("auth");
/// The store's own facts: `schema_version`.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bumped when the layout changes incompatibly; an unknown newer version refuses to open.
/// 2: the dedupe index is keyed by chat and author too (rebuilt from the inbox on upgrade).
pub(super) const SCHEMA_VERSION: u64 = 2;

pub(super) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(super) fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt(format!("undecodable record: {e}")))
}

/// The dedupe key of an inbox record: a message id is unique only per chat and sender.
pub(super) fn id_key(rec: &InboxRecord) -> String {
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

/// Creates the state directory (0700, see [`crate::state_dir::prepare`]: never owned by the wrong
/// user) and the store file (0600), fixing wrong modes.
pub(super) fn prepare_dir_and_file(dir: &Path) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let prepared = crate::state_dir::prepare(dir).map_err(StoreError::Open)?;
    let path = dir.join(FILE_NAME);
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

pub(super) fn recovery_hint(path: &Path) -> String {
    format!(
        "stop clawbox, move the file aside (`mv {p} {p}.broken`) and start again; messages not yet answered \
         and the WhatsApp link are lost with it (pair again), the configuration is not",
        p = path.display()
    )
}

pub(super) fn open_db(path: &Path, cfg: &StoreConfig) -> Result<Database, StoreError> {
    let cache = (cfg.cache_kib as usize).saturating_mul(1024);
    // redb may panic on some forms of damage; a damaged file must give a message, not a crash.
    let opened =
        std::panic::catch_unwind(|| Database::builder().set_cache_size(cache).create(path));
    init_db(opened, path)
}

/// A fresh in-memory database with every table (for the store's inline test mode).
pub(super) fn in_memory_db() -> Result<Database, StoreError> {
    let backend = redb::backends::InMemoryBackend::new();
    let opened = std::panic::catch_unwind(|| Database::builder().create_with_backend(backend));
    init_db(opened, Path::new("<memory>"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata};

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
