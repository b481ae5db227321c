//! The agent boundary: a turn's text in, the reply out, progress reported on the way so the router
//! can apply its ack and accumulation timeouts.
//!
//! Agents never know about channels, pacing or the store. The set of kinds is closed, so dispatch
//! is an enum, not a trait object.

pub mod echo;
pub mod openai;
pub mod openclaw;
pub mod sse;

use crate::config::{AgentConfig, AgentKind};
use crate::http::HttpClient;
use crate::status::Reporter;
use crate::store::Store;
use std::fmt;
use tokio::sync::watch;

/// One past message of a session, for agents that do not keep history themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub role: Role,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// What the router asks of an agent for one turn.
#[derive(Clone, Debug)]
pub struct TurnRequest {
    /// `agent:<agent_id>:<prefix>-<id>`; see [`crate::session`].
    pub session_key: String,
    /// The turn's user text: one message, or several joined in arrival order.
    pub text: String,
    /// Earlier messages of this session, oldest first (empty unless [`Agent::wants_history`]).
    pub history: Vec<HistoryEntry>,
    /// Stable for this turn across retries and restarts (derived from the inbound message ids).
    pub idempotency_key: String,
    /// Replaces the agent's configured system prompt for this turn (a group's override, see
    /// `config::groups`). Agents without a system prompt of their own (echo, openclaw) ignore it.
    pub system_prompt: Option<String>,
}

/// How a turn is getting on, as the router sees it: 0 = not yet accepted by the agent; each later
/// change = progress (accepted, then each delta). Backed by a watch channel: cheap, never blocks.
#[derive(Clone, Debug)]
pub struct Progress(watch::Sender<u64>);

impl Progress {
    pub fn new() -> (Progress, watch::Receiver<u64>) {
        let (tx, rx) = watch::channel(0);
        (Progress(tx), rx)
    }
    /// The agent is reachable and accepted the request (HTTP head received, `chat.send` acked).
    pub fn accepted(&self) {
        self.0.send_modify(|v| *v = (*v).max(1));
    }
    /// More of the reply arrived.
    pub fn delta(&self) {
        self.0.send_modify(|v| *v = v.saturating_add(1).max(2));
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// Could not reach the agent (connect, TLS, DNS, not connected yet).
    Unreachable(String),
    /// The agent answered with an error (HTTP 4xx/5xx, `ok:false`, run error/aborted).
    Failed(String),
    /// The agent's answer did not parse or broke a limit.
    Protocol(String),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Unreachable(e) => write!(f, "agent unreachable: {e}"),
            AgentError::Failed(e) => write!(f, "agent failed: {e}"),
            AgentError::Protocol(e) => write!(f, "agent protocol error: {e}"),
        }
    }
}

impl std::error::Error for AgentError {}

/// What a 🗑️ reset did on the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    /// Nothing server-side to clear (echo, openai: history lives in our store and is cleared there).
    Local,
    /// The server cleared the session.
    Cleared,
    /// The server could not clear it (no admin scope); a new session generation was started and the
    /// old conversation stays on the server.
    NewGeneration,
}

/// The outcome of `clawbox providers test` for one agent.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub agent: String,
    pub kind: &'static str,
    pub ok: bool,
    /// What was learned, in order: ("server version", "2026.9.6"), ("protocol", "4"), …
    pub facts: Vec<(&'static str, String)>,
    /// Plain words for the owner when `ok` is false: what failed and what to do.
    pub error: Option<String>,
    /// Time of the handshake or request that was measured.
    pub latency_ms: u64,
}

pub enum Agent {
    Echo(echo::Echo),
    OpenAi(openai::OpenAi),
    OpenClaw(openclaw::OpenClaw),
}

impl Agent {
    /// Builds the agent `name` from its config (already checked, secrets loaded).
    /// `reporter` is the agent's row on the status board.
    pub fn from_config(
        name: &str,
        cfg: &AgentConfig,
        http: &HttpClient,
        store: &Store,
        reporter: Reporter,
    ) -> Agent {
        match cfg.kind.get_ref() {
            AgentKind::Echo => Agent::Echo(echo::Echo),
            AgentKind::Openai => Agent::OpenAi(openai::OpenAi::new(name, cfg, http.clone())),
            AgentKind::Openclaw => {
                Agent::OpenClaw(openclaw::OpenClaw::new(name, cfg, store.clone(), reporter))
            }
        }
    }

    /// `clawbox providers test`: really exercises the agent (handshake, auth, a tiny request).
    pub async fn probe(&self, name: &str) -> ProbeReport {
        match self {
            Agent::Echo(_) => ProbeReport {
                agent: name.to_string(),
                kind: "echo",
                ok: true,
                facts: vec![("note", "built-in; answers with the text it got".into())],
                error: None,
                latency_ms: 0,
            },
            Agent::OpenAi(a) => a.probe(name).await,
            Agent::OpenClaw(a) => a.probe(name).await,
        }
    }

    /// The agent id in session keys: configured for openclaw, else the agent's name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Agent::Echo(_) => "echo",
            Agent::OpenAi(_) => "openai",
            Agent::OpenClaw(_) => "openclaw",
        }
    }

    /// Agents that keep a link of their own (the OpenClaw gateway's WebSocket) run it as a
    /// supervised task ([`Agent::run_link`]) and report their own state on the board; the others
    /// are up as soon as they are built.
    pub fn has_link(&self) -> bool {
        matches!(self, Agent::OpenClaw(_))
    }

    /// The agent's own link, until shutdown (an agent without one returns at once).
    pub async fn run_link(&self, shutdown: crate::shutdown::Shutdown) -> Result<(), AgentError> {
        match self {
            Agent::OpenClaw(a) => a.run(shutdown).await,
            Agent::Echo(_) | Agent::OpenAi(_) => Ok(()),
        }
    }

    /// After a 🗑️ reset that started a new session key, the old conversation still exists on the
    /// agent's side (an OpenClaw gateway keeps it): the reset's reply says so.
    pub fn keeps_reset_conversations(&self) -> bool {
        matches!(self, Agent::OpenClaw(_))
    }

    /// Stateless endpoints get the session's recent history with each turn.
    pub fn wants_history(&self) -> bool {
        matches!(self, Agent::OpenAi(_))
    }

    /// Runs one turn. Reports progress through `progress`; the router owns the timeouts and drops
    /// this future when one fires, so implementations must be cancel-safe.
    pub async fn turn(&self, req: TurnRequest, progress: Progress) -> Result<String, AgentError> {
        match self {
            Agent::Echo(a) => a.turn(req, progress).await,
            Agent::OpenAi(a) => a.turn(req, progress).await,
            Agent::OpenClaw(a) => a.turn(req, progress).await,
        }
    }

    /// Tells the agent a session was reset by the user.
    pub async fn reset(&self, session_key: &str) -> Result<ResetOutcome, AgentError> {
        match self {
            Agent::Echo(_) | Agent::OpenAi(_) => Ok(ResetOutcome::Local),
            Agent::OpenClaw(a) => a.reset(session_key).await,
        }
    }
}
