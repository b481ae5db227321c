//! OpenClaw gateway agent (protocol v4). Placeholder until implemented.

use super::{AgentError, ProbeReport, Progress, ResetOutcome, TurnRequest};
use crate::config::AgentConfig;
use crate::shutdown::Shutdown;
use crate::status::Reporter;
use crate::store::Store;

pub struct OpenClaw;

impl OpenClaw {
    pub fn new(_name: &str, _cfg: &AgentConfig, _store: Store, _reporter: Reporter) -> Self {
        OpenClaw
    }
    /// The persistent gateway connection; the daemon runs it under the supervisor. Returns Ok on
    /// shutdown, Err on a failure worth a restart.
    pub async fn run(&self, mut shutdown: Shutdown) -> Result<(), AgentError> {
        shutdown.wait().await;
        Ok(())
    }
    pub async fn turn(&self, _req: TurnRequest, _progress: Progress) -> Result<String, AgentError> {
        Err(AgentError::Failed(
            "the openclaw agent is not built yet".into(),
        ))
    }
    pub async fn reset(&self, _session_key: &str) -> Result<ResetOutcome, AgentError> {
        Ok(ResetOutcome::NewGeneration)
    }
    pub async fn probe(&self, name: &str) -> ProbeReport {
        ProbeReport {
            agent: name.into(),
            kind: "openclaw",
            ok: false,
            facts: vec![],
            error: Some("not built yet".into()),
            latency_ms: 0,
        }
    }
}
