//! The durable store: one redb file in the state directory. Placeholder API; see the real module.

use crate::config::StoreConfig;
use crate::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum StoreError {
    Io(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store: {e}"),
        }
    }
}
impl std::error::Error for StoreError {}

#[derive(Clone)]
pub struct Store;

impl Store {
    /// Opens (or creates) `<dir>/clawbox.redb`; the directory is created 0700, the file 0600.
    pub fn open(
        _dir: &Path,
        _cfg: &StoreConfig,
        _metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        Ok(Store)
    }
    /// A channel's cursor (e.g. Telegram's next offset), if one was saved.
    pub async fn cursor(&self, _name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// Saves a cursor. Not fsynced on its own: it becomes durable with the next durable commit,
    /// which is safe because inbound messages are deduplicated by id anyway.
    pub async fn set_cursor(&self, _name: &str, _value: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }
    /// A channel's auth/identity value (OpenClaw device key, WhatsApp creds), if present.
    pub async fn auth(&self, _key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// Saves an auth value durably (fsynced before this returns).
    pub async fn set_auth(&self, _key: &str, _value: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }
}
