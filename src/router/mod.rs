//! The conversation router. Placeholder API; see the real module.

pub mod session;
pub mod turns;

use crate::channel::Inbound;
use crate::metrics::DropReason;

/// What became of a submitted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Durable in the inbox: the channel may acknowledge it upstream now.
    Accepted,
    /// Seen before (same channel and id): acknowledge upstream, nothing else happens.
    Duplicate,
    /// Not allowed by policy: acknowledge upstream (so it is not redelivered), nothing else happens.
    Dropped(DropReason),
}

#[derive(Debug, Clone)]
pub enum IntakeError {
    /// The store could not make it durable: do NOT acknowledge upstream; retry later.
    Store(String),
    /// The daemon is stopping: do not acknowledge.
    ShuttingDown,
}

impl std::fmt::Display for IntakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntakeError::Store(e) => write!(f, "could not store the message: {e}"),
            IntakeError::ShuttingDown => f.write_str("shutting down"),
        }
    }
}

/// The channels' way in. Cheap to clone.
#[derive(Clone)]
pub struct Intake;

impl Intake {
    /// Policy, dedupe, durable write, then hand to the turn scheduler. Returns once durable.
    pub async fn submit(&self, _msg: Inbound) -> Result<Submitted, IntakeError> {
        Err(IntakeError::ShuttingDown)
    }
}
