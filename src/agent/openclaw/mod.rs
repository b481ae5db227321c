//! OpenClaw gateway agent (WebSocket protocol v4): one persistent operator connection per agent,
//! turns as `chat.send` runs followed through `chat` events, resets as `sessions.reset`.
//!
//! - [`proto`]: the sans-io core (handshake, requests, events, ticks, errors).
//! - [`identity`]: the Ed25519 device identity and its v3 challenge signature.
//! - [`driver`]: the WebSocket shell, reconnects, the operation table shared with callers.
//!
//! A turn registers an operation and waits on it; the connection task sends it once the link is up
//! and re-sends it with the same idempotency key after a reconnect, so a run is never started
//! twice. When a re-sent key finds the run already finished (`status:"ok"`), the reply is read back
//! with `chat.history` (the latest assistant message of the session: one turn is in flight per
//! session, so that is this turn's reply). Never logs tokens or message text.

pub mod driver;
pub mod identity;
pub mod proto;

use super::{AgentError, ProbeReport, Progress, ResetOutcome, TurnRequest};
use crate::config::AgentConfig;
use crate::shutdown::Shutdown;
use crate::status::Reporter;
use crate::store::Store;
use driver::{Link, OpDone, OpKind, Shared};
use proto::{Connection, Output, ProtoError};
use std::sync::Arc;
use tokio::time::Instant;

/// The agent id used in session keys when none is configured.
pub const DEFAULT_AGENT_ID: &str = "main";

pub struct OpenClaw {
    shared: Arc<Shared>,
    agent_id: String,
}

impl OpenClaw {
    pub fn new(name: &str, cfg: &AgentConfig, store: Store, reporter: Reporter) -> Self {
        let url = cfg
            .url
            .as_ref()
            .map(|u| u.get_ref().clone())
            .unwrap_or_default();
        let token = cfg.secret.clone().unwrap_or_default();
        let agent_id = cfg
            .agent_id
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_else(|| DEFAULT_AGENT_ID.to_string());
        OpenClaw {
            shared: Arc::new(Shared::new(name, url, token, store, reporter)),
            agent_id,
        }
    }

    /// The agent id in session keys (`agent:<id>:…`).
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The persistent gateway connection; the daemon runs it under the supervisor. Returns Ok on
    /// shutdown, Err on a failure worth a restart.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), AgentError> {
        self.shared.run(shutdown).await
    }

    /// One turn: `chat.send`, then the run's `chat` events. Waits for the link if it is not up yet
    /// (the router's ack timeout bounds that); fails at once when the owner must act (pairing,
    /// token). Cancel-safe: dropping the future forgets the operation.
    pub async fn turn(&self, req: TurnRequest, progress: Progress) -> Result<String, AgentError> {
        if let Link::NeedsOwner(msg) = &*self.shared.link.borrow() {
            return Err(AgentError::Unreachable(msg.clone()));
        }
        if req.session_key.chars().count() > proto::MAX_SESSION_KEY_CHARS {
            return Err(AgentError::Protocol(format!(
                "session key longer than {} characters",
                proto::MAX_SESSION_KEY_CHARS
            )));
        }
        let (_guard, mut rx) = self.shared.register(OpKind::Chat {
            session_key: req.session_key,
            text: req.text,
            idempotency_key: req.idempotency_key,
        })?;
        let (mut accepted, mut deltas) = (false, 0u64);
        loop {
            let st = rx.borrow_and_update().clone();
            if st.accepted && !accepted {
                accepted = true;
                progress.accepted();
            }
            while deltas < st.deltas {
                deltas += 1;
                progress.delta();
            }
            match st.done {
                Some(OpDone::Reply(text)) => return Ok(text),
                Some(OpDone::Error(e)) => return Err(e),
                Some(other) => {
                    return Err(AgentError::Protocol(format!("a turn ended as {other:?}")));
                }
                None => {}
            }
            if rx.changed().await.is_err() {
                return Err(AgentError::Unreachable(
                    "the gateway connection stopped".into(),
                ));
            }
        }
    }

    /// `sessions.reset` when the gateway granted `operator.admin`; otherwise (or when refused for
    /// lack of scope) the router starts a new session generation.
    pub async fn reset(&self, session_key: &str) -> Result<ResetOutcome, AgentError> {
        let fut = async {
            let mut link = self.shared.link.subscribe();
            let admin = loop {
                match &*link.borrow_and_update() {
                    Link::Up { admin } => break *admin,
                    Link::NeedsOwner(m) => return Err(AgentError::Unreachable(m.clone())),
                    Link::Down => {}
                }
                if link.changed().await.is_err() {
                    return Err(AgentError::Unreachable(
                        "the gateway connection stopped".into(),
                    ));
                }
            };
            if !admin {
                return Ok(ResetOutcome::NewGeneration);
            }
            let (_guard, mut rx) = self.shared.register(OpKind::Reset {
                session_key: session_key.to_string(),
            })?;
            loop {
                let done = rx.borrow_and_update().done.clone();
                match done {
                    Some(OpDone::ResetCleared) => return Ok(ResetOutcome::Cleared),
                    Some(OpDone::ResetForbidden) => return Ok(ResetOutcome::NewGeneration),
                    Some(OpDone::Error(e)) => return Err(e),
                    Some(OpDone::Reply(_)) => {
                        return Err(AgentError::Protocol("a reset ended as a reply".into()));
                    }
                    None => {}
                }
                if rx.changed().await.is_err() {
                    return Err(AgentError::Unreachable(
                        "the gateway connection stopped".into(),
                    ));
                }
            }
        };
        tokio::time::timeout(driver::RESET_TIMEOUT, fut)
            .await
            .map_err(|_| {
                AgentError::Unreachable(format!(
                    "no answer to the reset within {} s",
                    driver::RESET_TIMEOUT.as_secs()
                ))
            })?
    }

    /// `clawbox providers test`: a fresh connection with the full handshake, independent of `run`.
    pub async fn probe(&self, name: &str) -> ProbeReport {
        let started = Instant::now();
        let mut report = ProbeReport {
            agent: name.into(),
            kind: "openclaw",
            ok: false,
            facts: vec![("url", self.shared.url.clone())],
            error: None,
            latency_ms: 0,
        };
        match self.probe_handshake().await {
            Ok(hello) => {
                let ms = started.elapsed().as_millis() as u64;
                report.ok = true;
                report.latency_ms = ms;
                report
                    .facts
                    .push(("server version", hello.server_version.clone()));
                report.facts.push(("protocol", hello.protocol.to_string()));
                report.facts.push(("scopes", hello.scopes.join(", ")));
                report.facts.push((
                    "default agent",
                    hello.default_agent.clone().unwrap_or_else(|| "-".into()),
                ));
                report.facts.push(("handshake latency", format!("{ms} ms")));
                if !hello.admin {
                    report.facts.push((
                        "note",
                        "no operator.admin: 🗑️ resets start a new session instead of clearing one"
                            .into(),
                    ));
                }
            }
            Err(e) => {
                report.latency_ms = started.elapsed().as_millis() as u64;
                report.error = Some(e);
            }
        }
        report
    }

    async fn probe_handshake(&self) -> Result<proto::Hello, String> {
        let shared = &self.shared;
        if !(shared.url.starts_with("ws://") || shared.url.starts_with("wss://")) {
            return Err(format!(
                "the gateway url {:?} must start with ws:// or wss://",
                shared.url
            ));
        }
        let identity = shared.identity().await.map_err(|e| e.to_string())?;
        let creds = shared.credentials().await;
        let mut ws = driver::open(&shared.url).await?;
        let mut conn = Connection::new(creds, Some(identity), Instant::now().into_std());
        let result = probe_loop(&mut ws, &mut conn).await;
        let _ = ws.close(None).await;
        match result {
            Ok(hello) => {
                if let Some(t) = &hello.device_token {
                    shared.remember_device_token(t).await;
                }
                Ok(hello)
            }
            Err(ProbeError::Transport(e)) => Err(e),
            Err(ProbeError::Proto(ProtoError::AuthRejected { message, .. })) => Err(format!(
                "the gateway rejected the token ({message}): check token_file / token_env against gateway.auth.token on the gateway"
            )),
            Err(ProbeError::Proto(e @ ProtoError::PairingRequired { .. })) => {
                Err(format!("{e}, then run this test again"))
            }
            Err(ProbeError::Proto(e)) => Err(e.to_string()),
        }
    }
}

/// Why a probe handshake failed: the gateway said no, or the transport broke.
enum ProbeError {
    Proto(ProtoError),
    Transport(String),
}

impl From<ProtoError> for ProbeError {
    fn from(e: ProtoError) -> Self {
        ProbeError::Proto(e)
    }
}

async fn probe_loop(
    ws: &mut driver::Ws,
    conn: &mut Connection,
) -> Result<proto::Hello, ProbeError> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    loop {
        while let Some(frame) = conn.poll_transmit() {
            ws.send(Message::text(frame))
                .await
                .map_err(|e| ProbeError::Transport(format!("write failed: {e}")))?;
        }
        if let Some(Output::Ready(h)) = conn.poll_output() {
            return Ok(h);
        }
        let deadline = Instant::from_std(conn.poll_timeout());
        tokio::select! {
            biased;
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => conn.handle_frame(t.as_str(), Instant::now().into_std())?,
                Some(Ok(Message::Close(c))) => {
                    let why = c.map(|c| format!("{} {}", u16::from(c.code), c.reason)).unwrap_or_default();
                    return Err(ProbeError::Transport(format!(
                        "the gateway closed the connection during the handshake {why}"
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ProbeError::Transport(format!("read failed: {e}"))),
                None => return Err(ProbeError::Transport(
                    "the gateway closed the connection during the handshake".into(),
                )),
            },
            _ = tokio::time::sleep_until(deadline) => conn.handle_timeout(Instant::now().into_std())?,
        }
    }
}
