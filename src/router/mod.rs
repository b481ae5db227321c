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

/// One message offered through a test intake, with the slot for its answer.
pub struct Submission {
    pub msg: Inbound,
    pub reply: tokio::sync::oneshot::Sender<Result<Submitted, IntakeError>>,
}

#[derive(Clone)]
enum IntakeInner {
    /// Test seam: submissions go to whoever holds the receiver, who answers them.
    Test(tokio::sync::mpsc::Sender<Submission>),
}

/// The channels' way in. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    inner: IntakeInner,
}

impl Intake {
    /// An intake whose submissions arrive on the returned receiver, for testing a channel alone.
    pub fn test_channel(capacity: usize) -> (Intake, tokio::sync::mpsc::Receiver<Submission>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (
            Intake {
                inner: IntakeInner::Test(tx),
            },
            rx,
        )
    }

    /// Policy, dedupe, durable write, then hand to the turn scheduler. Returns once durable.
    pub async fn submit(&self, msg: Inbound) -> Result<Submitted, IntakeError> {
        match &self.inner {
            IntakeInner::Test(tx) => {
                let (reply, rx) = tokio::sync::oneshot::channel();
                tx.send(Submission { msg, reply })
                    .await
                    .map_err(|_| IntakeError::ShuttingDown)?;
                rx.await.map_err(|_| IntakeError::ShuttingDown)?
            }
        }
    }
}
