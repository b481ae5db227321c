//! Retention: how much the store keeps, so the file does not grow with uptime. Answered inbox
//! rows (kept for dedupe) by age and count, sessions by count (least recently used go), and each
//! session's history by entries and bytes. Runs inside the writer's transactions.

use super::records::INBOX_ANSWERED;
use super::schema::{decode, id_key, io};
use super::{InboxRecord, SessionRecord, StoreError};
use redb::{ReadableTable, ReadableTableMetadata};

/// Answered inbox rows are kept this long for dedupe: longer than Telegram keeps unconfirmed
/// updates (24 h) and than WhatsApp's offline queue replays.
pub(super) const INBOX_RETENTION_MS: u64 = 3 * 24 * 3600 * 1000;
/// Answered inbox rows kept at most, whatever their age: bounds the file under heavy traffic.
pub(super) const MAX_INBOX_ROWS: u64 = 20_000;
/// Sessions kept at most; the least recently used beyond this are forgotten.
pub(super) const MAX_SESSIONS: u64 = 5_000;
/// History entries per session (user and assistant messages).
pub const MAX_HISTORY_ENTRIES: usize = 40;
/// History bytes per session; the oldest entries go first.
pub const MAX_HISTORY_BYTES: usize = 32 * 1024;

pub(super) fn push_history(s: &mut SessionRecord, user: String, assistant: String) {
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

pub(super) fn gc(
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
