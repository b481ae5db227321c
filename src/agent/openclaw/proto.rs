//! Sans-io core of the OpenClaw gateway protocol v4: one connection's handshake, requests and
//! events, as JSON text frames in and out.
//!
//! Owns the handshake state machine (`connect.challenge` → signed `connect` → `hello-ok`), request
//! ids and the bounded pending-request table, the per-turn `chat` event accumulation (filtered by
//! sessionKey AND runId), tick tracking (two silent tick intervals = dead link) and the mapping of
//! gateway error frames to typed errors. Never touches a socket, a clock or tokio: frames and `now`
//! are handed in, frames to send and outputs are polled out (the quinn-proto shape).

use super::identity::{DeviceIdentity, SignInput, payload_v3};
use crate::agent::AgentError;
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
/// Silent tick intervals after which the link counts as dead.
pub const MISSED_TICKS_DEAD: u32 = 2;
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

/// What `hello-ok` told us.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    pub server_version: String,
    pub protocol: u64,
    pub scopes: Vec<String>,
    /// `operator.admin` was granted: sessions can be reset server-side.
    pub admin: bool,
    pub tick_interval: Duration,
    /// A newly issued device token, to be stored and used from now on.
    pub device_token: Option<String>,
    pub default_agent: Option<String>,
    pub max_payload: Option<u64>,
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("server_version", &self.server_version)
            .field("protocol", &self.protocol)
            .field("scopes", &self.scopes)
            .field("tick_interval", &self.tick_interval)
            .field("device_token", &self.device_token.is_some())
            .field("default_agent", &self.default_agent)
            .finish()
    }
}

/// A connection-level failure: the connection is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The device must be approved by the owner on the gateway host.
    PairingRequired {
        request_id: Option<String>,
    },
    /// The token (or device token) was rejected. `device_token` says which one was sent.
    AuthRejected {
        message: String,
        device_token: bool,
    },
    /// The gateway does not speak protocol 4.
    ProtocolMismatch(String),
    /// Any other refusal of `connect`.
    Rejected {
        code: String,
        message: String,
    },
    /// A frame that is not the gateway protocol.
    Malformed(String),
    TooLarge {
        size: usize,
        limit: usize,
    },
    HandshakeTimeout,
    /// No frame for two tick intervals.
    DeadLink(Duration),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::PairingRequired {
                request_id: Some(id),
            } => write!(
                f,
                "pairing required: on the gateway host run `openclaw devices approve {id}`"
            ),
            ProtoError::PairingRequired { request_id: None } => f.write_str(
                "pairing required: on the gateway host run `openclaw devices list`, then `openclaw devices approve <requestId>`",
            ),
            ProtoError::AuthRejected { message, .. } => {
                write!(f, "token rejected by the gateway ({message})")
            }
            ProtoError::ProtocolMismatch(m) => write!(
                f,
                "protocol mismatch: clawbox speaks gateway protocol {PROTOCOL_VERSION} ({m})"
            ),
            ProtoError::Rejected { code, message } => {
                write!(f, "gateway refused the connection: {code}: {message}")
            }
            ProtoError::Malformed(m) => write!(f, "malformed frame from the gateway: {m}"),
            ProtoError::TooLarge { size, limit } => {
                write!(f, "frame of {size} bytes over the {limit}-byte limit")
            }
            ProtoError::HandshakeTimeout => write!(
                f,
                "handshake did not finish within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
            ProtoError::DeadLink(d) => {
                write!(f, "no frame from the gateway for {} ms", d.as_millis())
            }
        }
    }
}

impl std::error::Error for ProtoError {}

/// A `res` with `ok:false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub code: String,
    pub message: String,
    /// `error.details.code`, when present (e.g. `MISSING_SCOPE`, `PAIRING_REQUIRED`).
    pub detail_code: Option<String>,
}

impl GatewayError {
    fn from_value(v: &Value) -> GatewayError {
        let code = str_at(v, "code").unwrap_or("UNKNOWN").to_string();
        let message = str_at(v, "message").unwrap_or("").to_string();
        let detail_code = v
            .get("details")
            .and_then(|d| str_at(d, "code"))
            .map(str::to_string);
        GatewayError {
            code,
            message,
            detail_code,
        }
    }
    /// The caller lacks a scope (sessions.reset without operator.admin).
    pub fn is_forbidden(&self) -> bool {
        self.code == "FORBIDDEN" || self.detail_code.as_deref() == Some("MISSING_SCOPE")
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
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
        if silent >= self.tick_interval * MISSED_TICKS_DEAD {
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
            self.last_rx + self.tick_interval * MISSED_TICKS_DEAD
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

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The text of a chat `message`: a string, or `{content: string | [{type:"text", text}]}`, or
/// `{text}`.
fn message_text(m: Option<&Value>) -> Option<String> {
    let m = m?;
    if let Some(s) = m.as_str() {
        return Some(s.to_string());
    }
    match m.get("content") {
        Some(Value::String(s)) => return Some(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                if str_at(p, "type") == Some("text") {
                    out.push_str(str_at(p, "text").unwrap_or(""));
                }
            }
            return Some(out);
        }
        _ => {}
    }
    str_at(m, "text").map(str::to_string)
}

fn last_assistant_text(history: &Value) -> Option<String> {
    history
        .get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| str_at(m, "role") == Some("assistant"))
        .and_then(|m| message_text(Some(m)))
}

fn parse_hello(p: &Value) -> Result<Hello, ProtoError> {
    if str_at(p, "type") != Some("hello-ok") {
        return Err(ProtoError::Malformed(
            "connect answered without hello-ok".into(),
        ));
    }
    let protocol = p.get("protocol").and_then(Value::as_u64).unwrap_or(0);
    if protocol != PROTOCOL_VERSION {
        return Err(ProtoError::ProtocolMismatch(format!(
            "the gateway chose protocol {protocol}"
        )));
    }
    let server_version = p
        .get("server")
        .and_then(|s| str_at(s, "version"))
        .unwrap_or("unknown")
        .to_string();
    let auth = p.get("auth").unwrap_or(&Value::Null);
    let scopes: Vec<String> = auth
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let admin = scopes.iter().any(|s| s == ADMIN_SCOPE);
    let device_token = str_at(auth, "deviceToken")
        .filter(|t| !t.is_empty() && t.len() <= super::identity::MAX_DEVICE_TOKEN_BYTES)
        .map(str::to_string);
    let policy = p.get("policy").unwrap_or(&Value::Null);
    let tick_interval = policy
        .get("tickIntervalMs")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TICK_INTERVAL)
        .clamp(MIN_TICK_INTERVAL, MAX_TICK_INTERVAL);
    let default_agent = p
        .get("snapshot")
        .and_then(|s| s.get("sessionDefaults"))
        .and_then(|d| str_at(d, "defaultAgentId"))
        .map(str::to_string);
    Ok(Hello {
        server_version,
        protocol,
        scopes,
        admin,
        tick_interval,
        device_token,
        default_agent,
        max_payload: policy.get("maxPayload").and_then(Value::as_u64),
    })
}

fn connect_error(e: &Value, sent_device_token: bool) -> ProtoError {
    let g = GatewayError::from_value(e);
    let details = e.get("details").unwrap_or(&Value::Null);
    let detail = g.detail_code.as_deref().unwrap_or("");
    if detail == "PAIRING_REQUIRED" || g.code == "NOT_PAIRED" || g.code == "PAIRING_REQUIRED" {
        let request_id = str_at(details, "requestId")
            .or_else(|| str_at(e, "requestId"))
            .filter(|id| {
                // The gateway's own pattern; anything else is not pasted into a shell command.
                id.len() <= 128
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
            })
            .map(str::to_string);
        return ProtoError::PairingRequired { request_id };
    }
    if detail == "PROTOCOL_MISMATCH" || g.message.contains("protocol mismatch") {
        return ProtoError::ProtocolMismatch(g.message);
    }
    if (detail.starts_with("AUTH_") && detail != "AUTH_RATE_LIMITED")
        || g.message.starts_with("unauthorized")
    {
        return ProtoError::AuthRejected {
            message: g.message,
            device_token: sent_device_token,
        };
    }
    ProtoError::Rejected {
        code: g.code,
        message: g.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_conn(now: Instant) -> Connection {
        let mut c = Connection::new(
            Credentials {
                token: "t".into(),
                device_token: None,
            },
            None,
            now,
        );
        c.handle_frame(
            r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":5}}"#,
            now,
        )
        .unwrap();
        let connect: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(connect["params"]["auth"]["token"], "t");
        assert_eq!(connect["params"]["minProtocol"], 4);
        assert!(connect["params"].get("device").is_none());
        let id = connect["id"].as_str().unwrap();
        let hello = json!({"type":"res","id":id,"ok":true,"payload":{
            "type":"hello-ok","protocol":4,"server":{"version":"2026.9.6"},
            "auth":{"scopes":["operator.read","operator.write"]},
            "policy":{"tickIntervalMs":1000},
            "snapshot":{"sessionDefaults":{"defaultAgentId":"main"}}}});
        c.handle_frame(&hello.to_string(), now).unwrap();
        match c.poll_output() {
            Some(Output::Ready(h)) => {
                assert!(!h.admin);
                assert_eq!(h.default_agent.as_deref(), Some("main"));
                assert_eq!(h.tick_interval, Duration::from_secs(1));
            }
            o => panic!("{o:?}"),
        }
        c
    }

    #[test]
    fn chat_events_of_other_runs_and_sessions_are_ignored() {
        let now = Instant::now();
        let mut c = ready_conn(now);
        c.send_chat(7, "agent:main:a", "hi", "k1").unwrap();
        let send: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            send["params"],
            json!({"sessionKey":"agent:main:a","message":"hi","idempotencyKey":"k1"})
        );
        let ev = |sk: &str, run: &str, state: &str, text: &str| {
            json!({"type":"event","event":"chat","payload":{"runId":run,"sessionKey":sk,"seq":1,
                "state":state,"message":{"role":"assistant","content":[{"type":"text","text":text}]}}})
            .to_string()
        };
        c.handle_frame(&ev("agent:main:b", "k1", "delta", "x"), now)
            .unwrap();
        c.handle_frame(&ev("agent:main:a", "k2", "delta", "y"), now)
            .unwrap();
        assert_eq!(c.poll_output(), None);
        c.handle_frame(&ev("agent:main:a", "k1", "delta", "Hel"), now)
            .unwrap();
        c.handle_frame(&ev("agent:main:a", "k1", "delta", "Hello"), now)
            .unwrap();
        assert_eq!(c.partial(7), Some("Hello"));
        c.handle_frame(&ev("agent:main:a", "k1", "final", "Hello!"), now)
            .unwrap();
        let outs: Vec<Output> = std::iter::from_fn(|| c.poll_output()).collect();
        assert_eq!(
            outs,
            vec![
                Output::Delta { op: 7 },
                Output::Delta { op: 7 },
                Output::Finished {
                    op: 7,
                    result: Ok("Hello!".into())
                }
            ]
        );
    }

    /// Found by the `openclaw_frame` fuzz target: a turn that finished with its `final` event,
    /// then had its chat.send refused (an answer that came late), was reported twice.
    #[test]
    fn a_refusal_after_the_final_event_reports_the_turn_once() {
        let now = Instant::now();
        let mut c = ready_conn(now);
        c.send_chat(2, "agent:main:main", "hi", "run-2").unwrap();
        let send: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
        let final_ev = json!({"type":"event","event":"chat","payload":{"runId":"run-2",
            "sessionKey":"agent:main:main","seq":4,"state":"final","message":"Hi there"}});
        c.handle_frame(&final_ev.to_string(), now).unwrap();
        let refused = json!({"type":"res","id":send["id"],"ok":false,
            "error":{"code":"UNAVAILABLE","message":"agent busy"}});
        c.handle_frame(&refused.to_string(), now).unwrap();
        let outs: Vec<Output> = std::iter::from_fn(|| c.poll_output()).collect();
        assert_eq!(
            outs,
            vec![Output::Finished {
                op: 2,
                result: Ok("Hi there".into())
            }]
        );
    }

    #[test]
    fn two_silent_tick_intervals_are_a_dead_link() {
        let now = Instant::now();
        let mut c = ready_conn(now);
        assert_eq!(c.poll_timeout(), now + Duration::from_secs(2));
        c.handle_timeout(now + Duration::from_millis(1999)).unwrap();
        assert!(matches!(
            c.handle_timeout(now + Duration::from_secs(2)),
            Err(ProtoError::DeadLink(_))
        ));
    }

    #[test]
    fn pairing_error_carries_the_request_id() {
        let now = Instant::now();
        let mut c = Connection::new(
            Credentials {
                token: "t".into(),
                device_token: None,
            },
            None,
            now,
        );
        c.handle_frame(
            r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":5}}"#,
            now,
        )
        .unwrap();
        let connect: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
        let res = json!({"type":"res","id":connect["id"],"ok":false,"error":{"code":"NOT_PAIRED",
            "message":"pairing required","details":{"code":"PAIRING_REQUIRED","requestId":"req-1"}}});
        assert_eq!(
            c.handle_frame(&res.to_string(), now),
            Err(ProtoError::PairingRequired {
                request_id: Some("req-1".into())
            })
        );
    }

    #[test]
    fn oversized_prelogin_frame_is_refused() {
        let now = Instant::now();
        let mut c = Connection::new(
            Credentials {
                token: "t".into(),
                device_token: None,
            },
            None,
            now,
        );
        let big = "x".repeat(MAX_PRELOGIN_FRAME + 1);
        assert!(matches!(
            c.handle_frame(&big, now),
            Err(ProtoError::TooLarge { .. })
        ));
    }
}
