//! Sans-io core of the OpenClaw gateway protocol v4: one connection's handshake, requests and
//! events, as JSON text frames in and out.
//!
//! Owns the handshake state machine (`connect.challenge` → signed `connect` → `hello-ok`), request
//! ids and the bounded pending-request table, the per-turn `chat` event accumulation (filtered by
//! sessionKey AND runId) and tick tracking (two silent tick intervals = dead link). Reading what a
//! frame says (hello-ok, error frames mapped to typed errors, a message's text) is `frames`'s,
//! re-exported here. Never touches a socket, a clock or tokio: frames and `now` are handed in,
//! frames to send and outputs are polled out (the quinn-proto shape).

mod frames;
#[cfg(test)]
mod tests;

pub use frames::{GatewayError, Hello, ProtoError};

use super::identity::{DeviceIdentity, SignInput, payload_v3};
use crate::agent::AgentError;
use crate::retry::GATEWAY_MISSED_TICKS;
use frames::{connect_error, last_assistant_text, message_text, parse_hello, str_at};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The one protocol version spoken; operator clients must ask for exactly this.
pub const PROTOCOL_VERSION: u64 = 4;
/// `client.id` must be one of the gateway's fixed list; this is the one meant for backends.
pub const CLIENT_ID: &str = "gateway-client";
pub const CLIENT_MODE: &str = "backend";
pub const CLIENT_PLATFORM: &str = "linux";
pub const ROLE: &str = "operator";
pub const ADMIN_SCOPE: &str = "operator.admin";
/// read: receive chat events; write: chat.send; admin: sessions.reset.
pub const SCOPES: [&str; 3] = ["operator.read", "operator.write", ADMIN_SCOPE];

/// The gateway caps frames before login at 64 KiB; a bigger one before hello is not the gateway.
pub const MAX_PRELOGIN_FRAME: usize = 64 * 1024;
/// Post-login cap on received frames. The gateway allows 25 MiB, which a Pi should not buffer for a
/// text bridge; chat replies and history pages are far below this.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Requests awaiting a response on one connection. The router runs at most a handful of turns.
pub const MAX_PENDING: usize = 64;
/// Runs followed at once on one connection (one per in-flight turn).
pub const MAX_RUNS: usize = 64;
/// Outgoing frames queued before the driver writes them; the driver drains after every input.
pub const MAX_OUTBOX: usize = 128;
/// Outputs queued before the driver routes them; drained after every input.
pub const MAX_OUTPUTS: usize = 1024;
/// The whole handshake (challenge, connect, hello) must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Used when hello-ok lacks `policy.tickIntervalMs` (the gateway's default).
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_secs(30);
/// Bounds on an advertised tick interval, so a bogus value can neither spin nor blind us.
pub const MIN_TICK_INTERVAL: Duration = Duration::from_millis(50);
pub const MAX_TICK_INTERVAL: Duration = Duration::from_secs(600);
/// The gateway's own limit on session keys.
pub const MAX_SESSION_KEY_CHARS: usize = 512;
/// How far back `chat.history` looks for the reply of an already finished run.
pub const HISTORY_LIMIT: u64 = 20;

/// A caller-chosen handle for one operation (a turn or a reset), stable across reconnects.
pub type OpId = u64;

/// What authenticates the connection.
#[derive(Clone)]
pub struct Credentials {
    /// The shared gateway token.
    pub token: String,
    /// The device token issued after pairing; used instead of `token` when present.
    pub device_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("device_token", &self.device_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What the core reports to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The handshake finished.
    Ready(Hello),
    /// The gateway accepted the turn (`started`, `in_flight`, or `ok` for a finished run).
    Accepted { op: OpId },
    /// More of the reply arrived; [`Connection::partial`] has the text so far.
    Delta { op: OpId },
    /// The turn is over.
    Finished {
        op: OpId,
        result: Result<String, AgentError>,
    },
    /// A `sessions.reset` answered.
    ResetDone {
        op: OpId,
        result: Result<(), GatewayError>,
    },
}

#[derive(Debug)]
enum Phase {
    AwaitChallenge,
    AwaitHello { id: String },
    Ready,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    ChatSend(OpId),
    History(OpId),
    Reset(OpId),
}

#[derive(Debug)]
struct Run {
    session_key: String,
    run_id: String,
    text: String,
}

/// One gateway connection's protocol state.
pub struct Connection {
    phase: Phase,
    creds: Credentials,
    identity: Option<Arc<DeviceIdentity>>,
    started: Instant,
    last_rx: Instant,
    tick_interval: Duration,
    next_id: u64,
    pending: HashMap<String, Pending>,
    runs: HashMap<OpId, Run>,
    outbox: VecDeque<String>,
    outputs: VecDeque<Output>,
    hello: Option<Hello>,
}

impl Connection {
    /// A connection whose socket just opened at `now`; it waits for `connect.challenge`.
    pub fn new(creds: Credentials, identity: Option<Arc<DeviceIdentity>>, now: Instant) -> Self {
        Connection {
            phase: Phase::AwaitChallenge,
            creds,
            identity,
            started: now,
            last_rx: now,
            tick_interval: DEFAULT_TICK_INTERVAL,
            next_id: 1,
            pending: HashMap::new(),
            runs: HashMap::new(),
            outbox: VecDeque::new(),
            outputs: VecDeque::new(),
            hello: None,
        }
    }

    // ---- getters ----

    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready)
    }
    /// Whether the device token (not the shared token) authenticates this connection.
    pub fn uses_device_token(&self) -> bool {
        self.creds.device_token.is_some()
    }
    /// The reply text so far of turn `op`.
    pub fn partial(&self, op: OpId) -> Option<&str> {
        self.runs.get(&op).map(|r| r.text.as_str())
    }
    /// Operations this connection is following.
    pub fn ops(&self) -> Vec<OpId> {
        let mut v: Vec<OpId> = self.runs.keys().copied().collect();
        for p in self.pending.values() {
            let op = match p {
                Pending::ChatSend(o) | Pending::History(o) | Pending::Reset(o) => *o,
            };
            if !v.contains(&op) {
                v.push(op);
            }
        }
        v
    }
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    // ---- inputs ----

    /// One received text frame.
    pub fn handle_frame(&mut self, text: &str, now: Instant) -> Result<(), ProtoError> {
        let limit = if self.is_ready() {
            MAX_FRAME
        } else {
            MAX_PRELOGIN_FRAME
        };
        if text.len() > limit {
            return Err(ProtoError::TooLarge {
                size: text.len(),
                limit,
            });
        }
        self.last_rx = now;
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ProtoError::Malformed(format!("not JSON: {e}")))?;
        match str_at(&v, "type") {
            Some("event") => self.on_event(&v),
            Some("res") => self.on_res(&v),
            Some("req") => Ok(()), // server→client requests are not for operator clients
            other => Err(ProtoError::Malformed(format!(
                "unknown frame type {:?}",
                other.unwrap_or("<missing>")
            ))),
        }
    }

    /// The timer from [`Connection::poll_timeout`] fired (or any time has passed).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtoError> {
        if !self.is_ready() {
            if now.saturating_duration_since(self.started) >= HANDSHAKE_TIMEOUT {
                return Err(ProtoError::HandshakeTimeout);
            }
            return Ok(());
        }
        let silent = now.saturating_duration_since(self.last_rx);
        if silent >= self.tick_interval * GATEWAY_MISSED_TICKS {
            return Err(ProtoError::DeadLink(silent));
        }
        Ok(())
    }

    // ---- commands ----

    /// Sends `chat.send` for turn `op`. The runId is expected to equal `idempotency_key`.
    pub fn send_chat(
        &mut self,
        op: OpId,
        session_key: &str,
        message: &str,
        idempotency_key: &str,
    ) -> Result<(), AgentError> {
        self.check_can_send()?;
        if self.runs.len() >= MAX_RUNS {
            return Err(AgentError::Unreachable(format!(
                "{MAX_RUNS} turns already in flight on the gateway connection"
            )));
        }
        if session_key.chars().count() > MAX_SESSION_KEY_CHARS {
            return Err(AgentError::Protocol(format!(
                "session key longer than {MAX_SESSION_KEY_CHARS} characters"
            )));
        }
        let id = self.request(
            "chat.send",
            json!({
                "sessionKey": session_key,
                "message": message,
                "idempotencyKey": idempotency_key,
            }),
        );
        self.pending.insert(id, Pending::ChatSend(op));
        self.runs.insert(
            op,
            Run {
                session_key: session_key.to_string(),
                run_id: idempotency_key.to_string(),
                text: String::new(),
            },
        );
        Ok(())
    }

    /// Sends `sessions.reset {key, reason:"reset"}` for operation `op`.
    pub fn send_reset(&mut self, op: OpId, session_key: &str) -> Result<(), AgentError> {
        self.check_can_send()?;
        let id = self.request(
            "sessions.reset",
            json!({"key": session_key, "reason": "reset"}),
        );
        self.pending.insert(id, Pending::Reset(op));
        Ok(())
    }

    /// Forgets operation `op` (its caller went away): later frames about it are ignored.
    pub fn cancel(&mut self, op: OpId) {
        self.runs.remove(&op);
        self.pending.retain(|_, p| match p {
            Pending::ChatSend(o) | Pending::History(o) | Pending::Reset(o) => *o != op,
        });
    }

    // ---- outputs ----

    /// The next frame to write.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.outbox.pop_front()
    }
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        if self.is_ready() {
            self.last_rx + self.tick_interval * GATEWAY_MISSED_TICKS
        } else {
            self.started + HANDSHAKE_TIMEOUT
        }
    }

    // ---- internals ----

    fn check_can_send(&self) -> Result<(), AgentError> {
        if !self.is_ready() {
            return Err(AgentError::Unreachable(
                "not connected to the gateway".into(),
            ));
        }
        if self.pending.len() >= MAX_PENDING || self.outbox.len() >= MAX_OUTBOX {
            return Err(AgentError::Unreachable(format!(
                "{MAX_PENDING} gateway requests already waiting"
            )));
        }
        Ok(())
    }

    fn request(&mut self, method: &str, params: Value) -> String {
        let id = format!("c{}", self.next_id);
        self.next_id += 1;
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        self.outbox.push_back(frame.to_string());
        id
    }

    fn emit(&mut self, out: Output) {
        // The driver drains after every input, so this bound is never reached in practice; if it
        // were, dropping the oldest output would lose a turn's result, so drop the newest delta
        // notifications first instead (they carry no data).
        if self.outputs.len() >= MAX_OUTPUTS && matches!(out, Output::Delta { .. }) {
            return;
        }
        self.outputs.push_back(out);
    }

    fn on_event(&mut self, v: &Value) -> Result<(), ProtoError> {
        let event = str_at(v, "event").unwrap_or("");
        let payload = v.get("payload").unwrap_or(&Value::Null);
        match (&self.phase, event) {
            (Phase::AwaitChallenge, "connect.challenge") => self.on_challenge(payload),
            (Phase::Ready, "chat") => {
                self.on_chat(payload);
                Ok(())
            }
            // tick and everything else: liveness only (already noted in last_rx).
            _ => Ok(()),
        }
    }

    fn on_challenge(&mut self, payload: &Value) -> Result<(), ProtoError> {
        let nonce = str_at(payload, "nonce")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ProtoError::Malformed("connect.challenge without a nonce".into()))?
            .to_string();
        let ts = payload
            .get("ts")
            .and_then(Value::as_u64)
            .ok_or_else(|| ProtoError::Malformed("connect.challenge without a valid ts".into()))?;
        let (auth, sig_token) = match &self.creds.device_token {
            Some(dt) => (json!({"deviceToken": dt}), dt.as_str()),
            None => (
                json!({"token": self.creds.token}),
                self.creds.token.as_str(),
            ),
        };
        let mut params = Map::new();
        params.insert("minProtocol".into(), json!(PROTOCOL_VERSION));
        params.insert("maxProtocol".into(), json!(PROTOCOL_VERSION));
        params.insert(
            "client".into(),
            json!({
                "id": CLIENT_ID,
                "version": env!("CARGO_PKG_VERSION"),
                "platform": CLIENT_PLATFORM,
                "mode": CLIENT_MODE,
            }),
        );
        params.insert("role".into(), json!(ROLE));
        params.insert("scopes".into(), json!(SCOPES));
        params.insert("caps".into(), json!([]));
        if let Some(identity) = &self.identity {
            let payload = payload_v3(&SignInput {
                device_id: identity.id(),
                client_id: CLIENT_ID,
                client_mode: CLIENT_MODE,
                role: ROLE,
                scopes: &SCOPES,
                signed_at_ms: ts,
                token: sig_token,
                nonce: &nonce,
                platform: CLIENT_PLATFORM,
                device_family: "",
            });
            params.insert(
                "device".into(),
                json!({
                    "id": identity.id(),
                    "publicKey": identity.public_key(),
                    "signature": identity.sign(&payload),
                    "signedAt": ts,
                    "nonce": nonce,
                }),
            );
        }
        params.insert("auth".into(), auth);
        let id = self.request("connect", Value::Object(params));
        self.phase = Phase::AwaitHello { id };
        Ok(())
    }

    fn on_res(&mut self, v: &Value) -> Result<(), ProtoError> {
        let id = str_at(v, "id")
            .ok_or_else(|| ProtoError::Malformed("res without an id".into()))?
            .to_string();
        let ok = v.get("ok").and_then(Value::as_bool).unwrap_or(false);
        let payload = v.get("payload").unwrap_or(&Value::Null);
        if let Phase::AwaitHello { id: hello_id } = &self.phase {
            if *hello_id != id {
                return Ok(());
            }
            if !ok {
                return Err(connect_error(
                    v.get("error").unwrap_or(&Value::Null),
                    self.creds.device_token.is_some(),
                ));
            }
            let hello = parse_hello(payload)?;
            self.tick_interval = hello.tick_interval;
            self.hello = Some(hello.clone());
            self.phase = Phase::Ready;
            self.emit(Output::Ready(hello));
            return Ok(());
        }
        let Some(pending) = self.pending.remove(&id) else {
            return Ok(()); // a cancelled op's answer, or not ours
        };
        let err = (!ok).then(|| GatewayError::from_value(v.get("error").unwrap_or(&Value::Null)));
        match pending {
            Pending::ChatSend(op) => self.on_chat_send_res(op, payload, err),
            Pending::History(op) => self.on_history_res(op, payload, err),
            Pending::Reset(op) => self.emit(Output::ResetDone {
                op,
                result: err.map_or(Ok(()), Err),
            }),
        }
        Ok(())
    }

    fn on_chat_send_res(&mut self, op: OpId, payload: &Value, err: Option<GatewayError>) {
        if let Some(e) = err {
            // A `final` event (or a cancel) may have ended this turn before the refusal came:
            // report each turn once (found by the fuzzer).
            if self.runs.remove(&op).is_some() {
                self.emit(Output::Finished {
                    op,
                    result: Err(AgentError::Failed(format!("chat.send refused: {e}"))),
                });
            }
            return;
        }
        let Some(run) = self.runs.get_mut(&op) else {
            return;
        };
        if let Some(run_id) = str_at(payload, "runId") {
            run.run_id = run_id.to_string();
        }
        let status = str_at(payload, "status").unwrap_or("");
        match status {
            "ok" => {
                // The run already finished (a retry of a turn whose reply we missed): the model is
                // not called again, so read the reply from the session's history.
                let session_key = run.session_key.clone();
                self.emit(Output::Accepted { op });
                let id = self.request(
                    "chat.history",
                    json!({"sessionKey": session_key, "limit": HISTORY_LIMIT}),
                );
                self.pending.insert(id, Pending::History(op));
            }
            "error" | "failed" | "aborted" => {
                self.runs.remove(&op);
                self.emit(Output::Finished {
                    op,
                    result: Err(AgentError::Failed(format!("chat.send answered {status}"))),
                });
            }
            // started, in_flight, accepted, or anything newer: the run is on its way.
            _ => self.emit(Output::Accepted { op }),
        }
    }

    fn on_history_res(&mut self, op: OpId, payload: &Value, err: Option<GatewayError>) {
        // A `final` event may have finished this turn while the history request was out: report
        // each turn once.
        if self.runs.remove(&op).is_none() {
            return;
        }
        let result = match err {
            Some(e) => Err(AgentError::Failed(format!(
                "reading the finished run's reply: {e}"
            ))),
            None => last_assistant_text(payload).ok_or_else(|| {
                AgentError::Protocol("the finished run left no assistant reply in history".into())
            }),
        };
        self.emit(Output::Finished { op, result });
    }

    fn on_chat(&mut self, p: &Value) {
        let (Some(run_id), Some(session_key)) = (str_at(p, "runId"), str_at(p, "sessionKey"))
        else {
            return;
        };
        let Some((&op, run)) = self
            .runs
            .iter_mut()
            .find(|(_, r)| r.run_id == run_id && r.session_key == session_key)
        else {
            return; // another client's run, or a run we never started
        };
        match str_at(p, "state").unwrap_or("") {
            "delta" => {
                if let Some(t) = message_text(p.get("message")).or_else(|| {
                    // Older gateways: deltaText is the full text when replace:true.
                    let replace = p.get("replace").and_then(Value::as_bool).unwrap_or(false);
                    replace.then(|| str_at(p, "deltaText").map(str::to_string))?
                }) {
                    run.text = t;
                }
                self.emit(Output::Delta { op });
            }
            "final" => {
                let text =
                    message_text(p.get("message")).unwrap_or_else(|| std::mem::take(&mut run.text));
                self.runs.remove(&op);
                self.emit(Output::Finished {
                    op,
                    result: Ok(text),
                });
            }
            "error" => {
                let msg = str_at(p, "errorMessage").unwrap_or("run failed");
                let kind = str_at(p, "errorKind").unwrap_or("unknown");
                let e = AgentError::Failed(format!("run error ({kind}): {msg}"));
                self.runs.remove(&op);
                self.emit(Output::Finished { op, result: Err(e) });
            }
            "aborted" => {
                self.runs.remove(&op);
                self.emit(Output::Finished {
                    op,
                    result: Err(AgentError::Failed("the run was aborted".into())),
                });
            }
            _ => {} // status/phase updates
        }
    }
}
