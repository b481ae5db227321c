//! OpenClaw gateway agent (protocol v4). Placeholder until implemented.

use super::{AgentError, Progress, ResetOutcome, TurnRequest};
use crate::config::AgentConfig;

pub struct OpenClaw;

impl OpenClaw {
    pub fn new(_name: &str, _cfg: &AgentConfig) -> Self {
        OpenClaw
    }
    pub async fn turn(&self, _req: TurnRequest, _progress: Progress) -> Result<String, AgentError> {
        Err(AgentError::Failed(
            "the openclaw agent is not built yet".into(),
        ))
    }
    pub async fn reset(&self, _session_key: &str) -> Result<ResetOutcome, AgentError> {
        Ok(ResetOutcome::NewGeneration)
    }
}
