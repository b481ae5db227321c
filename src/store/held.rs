//! Held rows of the key-value tables ([`super::kv`]): kept in the writer's memory, never written,
//! unless an fsync happens while they are held; then that fsync's transaction writes them too,
//! so a durable snapshot never lacks a row that was held when it was taken. Bounded by
//! [`super::kv::MAX_HELD_BYTES`]. Owned by the writer thread; no I/O beyond [`Held::spill`].

use super::StoreError;
use redb::TableDefinition;

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// One held row: its value, and whether an fsync's transaction has written it.
pub(super) struct HeldRow {
    pub value: Vec<u8>,
    pub written: bool,
}

/// The writer's held rows (see the module doc).
#[derive(Default)]
pub(super) struct Held {
    pub(super) rows: std::collections::BTreeMap<(&'static str, String), HeldRow>,
    pub(super) bytes: usize,
}

impl Held {
    /// Writes every held row not yet written into `tx` (the transaction about to be fsynced);
    /// [`Held::written`] once that commit succeeded.
    pub(super) fn spill(&self, tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
        let mut bytes = 0u64;
        for ((table, key), row) in self.rows.iter().filter(|(_, r)| !r.written) {
            let def = TableDefinition::<&str, &[u8]>::new(table);
            tx.open_table(def)
                .map_err(io)?
                .insert(key.as_str(), row.value.as_slice())
                .map_err(io)?;
            bytes += (key.len() + row.value.len()) as u64;
        }
        Ok(bytes)
    }

    /// The transaction [`Held::spill`] wrote into is committed: every held row is in the file.
    pub(super) fn written(&mut self) {
        for row in self.rows.values_mut() {
            row.written = true;
        }
    }

    /// Some held row is not in the file yet.
    pub(super) fn unwritten(&self) -> bool {
        self.rows.values().any(|r| !r.written)
    }

    pub(super) fn forget(&mut self, table: &'static str, key: &str) -> Option<HeldRow> {
        let row = self.rows.remove(&(table, key.to_string()))?;
        self.bytes -= key.len() + row.value.len();
        Some(row)
    }
}
