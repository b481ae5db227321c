//! OpenAI-compatible `/v1/chat/completions` client, streamed (SSE). Placeholder until implemented.

use super::{AgentError, ProbeReport, Progress, TurnRequest};
use crate::config::AgentConfig;
use crate::http::HttpClient;

pub struct OpenAi {
    #[allow(dead_code)]
    http: HttpClient,
}

impl OpenAi {
    pub fn new(_name: &str, _cfg: &AgentConfig, http: HttpClient) -> Self {
        OpenAi { http }
    }
    pub async fn probe(&self, name: &str) -> ProbeReport {
        ProbeReport {
            agent: name.into(),
            kind: "openai",
            ok: false,
            facts: vec![],
            error: Some("not built yet".into()),
            latency_ms: 0,
        }
    }
    pub async fn turn(&self, _req: TurnRequest, _progress: Progress) -> Result<String, AgentError> {
        Err(AgentError::Failed(
            "the openai agent is not built yet".into(),
        ))
    }
}
