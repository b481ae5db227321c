//! The built-in echo agent: answers with the text it got, so a fresh box works with no
//! configuration and every path (channel, policy, router, pacing) can be tried without an AI.

use super::{AgentError, Progress, TurnRequest};

pub struct Echo;

impl Echo {
    pub async fn turn(&self, req: TurnRequest, progress: Progress) -> Result<String, AgentError> {
        progress.accepted();
        Ok(req.text)
    }
}
