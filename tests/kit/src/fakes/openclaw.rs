//! A fake OpenClaw gateway (protocol v4) on a real loopback WebSocket, speaking the frames as the
//! real openclaw 2026.9.6 gateway does (see shared/reference/openclaw-gateway.md and the package's
//! own docs/dist): `connect.challenge`, strict `connect` validation (exact protocol, allowed client
//! ids, closed objects, token, Ed25519 v3 device signature verified with ring), `hello-ok`, `tick`
//! events, `chat.send` with broadcast `chat` delta/final events and idempotency, `chat.history`,
//! `sessions.reset` (admin scope), `health`.
//!
//! Test knobs: the reply, delta count and delay, admin grant, pairing, device tokens, ticks on/off,
//! dropping connections, and a record of every frame received. Never a mock of our client.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const FAKE_VERSION: &str = "2026.9.6-fake";
/// Client ids the real gateway accepts (a subset of its fixed list).
const ALLOWED_CLIENT_IDS: [&str; 6] = [
    "gateway-client",
    "cli",
    "test",
    "webchat",
    "webchat-ui",
    "node-host",
];
/// Keys of the closed `connect` params object (the schema rejects anything else).
const CONNECT_KEYS: [&str; 13] = [
    "minProtocol",
    "maxProtocol",
    "client",
    "role",
    "scopes",
    "caps",
    "commands",
    "permissions",
    "auth",
    "locale",
    "userAgent",
    "device",
    "pathEnv",
];
const CLIENT_KEYS: [&str; 8] = [
    "id",
    "version",
    "platform",
    "mode",
    "displayName",
    "deviceFamily",
    "modelIdentifier",
    "instanceId",
];
const DEVICE_KEYS: [&str; 5] = ["id", "publicKey", "signature", "signedAt", "nonce"];
const AUTH_KEYS: [&str; 6] = [
    "token",
    "bootstrapToken",
    "deviceToken",
    "password",
    "approvalRuntimeToken",
    "agentRuntimeIdentityToken",
];
const CHAT_SEND_KEYS: [&str; 7] = [
    "sessionKey",
    "message",
    "idempotencyKey",
    "deliver",
    "queueMode",
    "attachments",
    "timeoutMs",
];
/// Frames recorded at most (a test fake, but still bounded).
const MAX_RECORDED: usize = 10_000;

/// What the fake model does with a message.
#[derive(Clone, Debug)]
pub enum FakeReply {
    Text(String),
    Error(String),
    Aborted,
}

pub type ReplyFn = Arc<dyn Fn(&str, &str) -> FakeReply + Send + Sync>;

#[derive(Clone)]
pub struct FakeConfig {
    pub token: String,
    /// The one protocol version the fake accepts (4 like the real one; 5 to test a mismatch).
    pub protocol: u64,
    pub tick_interval: Duration,
    pub grant_admin: bool,
    pub require_pairing: bool,
    /// Device token issued in hello-ok to a connection with a (paired) device identity.
    pub issue_device_token: Option<String>,
    /// (sessionKey, message) → reply.
    pub reply: ReplyFn,
    /// Delta events per run (the text is split into this many growing prefixes).
    pub deltas: usize,
    pub delta_delay: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            token: "test-token".into(),
            protocol: 4,
            tick_interval: Duration::from_secs(1),
            grant_admin: true,
            require_pairing: false,
            issue_device_token: None,
            reply: Arc::new(|_, m| FakeReply::Text(format!("echo: {m}"))),
            deltas: 2,
            delta_delay: Duration::from_millis(50),
        }
    }
}

#[derive(Default)]
struct State {
    frames: Vec<Value>,
    /// idempotencyKey → finished?
    runs: HashMap<String, bool>,
    model_calls: u64,
    /// sessionKey → transcript messages.
    transcripts: HashMap<String, Vec<Value>>,
    paired: HashSet<String>,
    pending_pairing: HashMap<String, String>,
    issued_tokens: HashSet<String>,
    connects: u64,
    hellos: u64,
    drop_after_chat_send: bool,
}

pub struct FakeGateway {
    pub url: String,
    pub port: u16,
    cfg: FakeConfig,
    state: Arc<Mutex<State>>,
    ticks: Arc<AtomicBool>,
    drop_gen: watch::Sender<u64>,
    events: broadcast::Sender<Message>,
    seq: Arc<AtomicU64>,
}

impl FakeGateway {
    pub async fn start(cfg: FakeConfig) -> Arc<FakeGateway> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (events, _) = broadcast::channel(1024);
        let gw = Arc::new(FakeGateway {
            url: format!("ws://127.0.0.1:{port}"),
            port,
            cfg,
            state: Arc::default(),
            ticks: Arc::new(AtomicBool::new(true)),
            drop_gen: watch::Sender::new(0),
            events,
            seq: Arc::new(AtomicU64::new(0)),
        });
        let g = gw.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let g = g.clone();
                // Like the real gateway (node `ws` sets TCP_NODELAY). Without it, Nagle holds small
                // frames for a delayed ACK in real time, which a paused test clock cannot wait for.
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        g.serve(ws).await;
                    }
                });
            }
        });
        gw
    }

    // ---- knobs and observations ----

    /// Every frame received, in order, across connections.
    pub fn frames(&self) -> Vec<Value> {
        self.state.lock().unwrap().frames.clone()
    }
    pub fn frames_of(&self, method: &str) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| f["method"] == method)
            .collect()
    }
    /// Runs that reached the model.
    pub fn model_calls(&self) -> u64 {
        self.state.lock().unwrap().model_calls
    }
    /// `connect` requests received.
    pub fn connects(&self) -> u64 {
        self.state.lock().unwrap().connects
    }
    /// Handshakes that ended in hello-ok.
    pub fn hellos(&self) -> u64 {
        self.state.lock().unwrap().hellos
    }
    /// Pending pairing request ids.
    pub fn pairing_requests(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .pending_pairing
            .keys()
            .cloned()
            .collect()
    }
    /// `openclaw devices approve <requestId>`.
    pub fn approve(&self, request_id: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(dev) = st.pending_pairing.remove(request_id) {
            st.paired.insert(dev);
        }
    }
    pub fn set_ticks(&self, on: bool) {
        self.ticks.store(on, Ordering::SeqCst);
    }
    /// Drops every open connection abruptly (no close frame).
    pub fn drop_connections(&self) {
        self.drop_gen.send_modify(|g| *g += 1);
    }
    /// The next `chat.send` is answered, then the connection drops at once.
    pub fn drop_after_next_chat_send(&self) {
        self.state.lock().unwrap().drop_after_chat_send = true;
    }
    /// Broadcasts a raw event payload to every connection (e.g. another client's run).
    pub fn broadcast_event(&self, event: &str, payload: Value) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.events.send(Message::text(
            json!({"type":"event","event":event,"payload":payload,"seq":seq}).to_string(),
        ));
    }
    /// Sends this text frame, as is, to every logged-in connection (malformed JSON included).
    pub fn send_raw_text(&self, text: &str) {
        let _ = self.events.send(Message::text(text.to_string()));
    }
    /// Sends a binary WebSocket frame to every logged-in connection (the gateway never does).
    pub fn send_raw_binary(&self, data: &[u8]) {
        let _ = self.events.send(Message::binary(data.to_vec()));
    }

    // ---- one connection ----

    async fn serve(self: Arc<Self>, ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
        let (mut tx, mut rx) = ws.split();
        let nonce = format!("nonce-{}", fastrand::u64(..));
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let challenge =
            json!({"type":"event","event":"connect.challenge","payload":{"nonce":nonce,"ts":ts}});
        if tx.send(Message::text(challenge.to_string())).await.is_err() {
            return;
        }
        let mut drop_rx = self.drop_gen.subscribe();
        drop_rx.borrow_and_update();
        let mut events = self.events.subscribe();
        let mut tick = tokio::time::interval(self.cfg.tick_interval);
        tick.tick().await;
        let mut admin = false;
        let mut ready = false;
        loop {
            tokio::select! {
                _ = drop_rx.changed() => return, // abrupt: no close frame
                _ = tick.tick(), if ready => {
                    if self.ticks.load(Ordering::SeqCst) {
                        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        let f = json!({"type":"event","event":"tick","payload":{"ts":ts},"seq":seq});
                        if tx.send(Message::text(f.to_string())).await.is_err() { return; }
                    }
                }
                ev = events.recv(), if ready => {
                    if let Ok(f) = ev {
                        if tx.send(f).await.is_err() { return; }
                    }
                }
                msg = rx.next() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t.to_string(),
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    };
                    let frame: Value = match serde_json::from_str(&text) {
                        Ok(v) => v,
                        Err(_) => return,
                    };
                    {
                        let mut st = self.state.lock().unwrap();
                        if st.frames.len() < MAX_RECORDED {
                            st.frames.push(frame.clone());
                        }
                    }
                    let id = frame["id"].clone();
                    if !ready {
                        match self.check_connect(&frame, &nonce, ts) {
                            Ok((hello, granted_admin)) => {
                                admin = granted_admin;
                                ready = true;
                                self.state.lock().unwrap().hellos += 1;
                                let res = json!({"type":"res","id":id,"ok":true,"payload":hello});
                                if tx.send(Message::text(res.to_string())).await.is_err() { return; }
                            }
                            Err((error, close_code)) => {
                                let res = json!({"type":"res","id":id,"ok":false,"error":error});
                                let _ = tx.send(Message::text(res.to_string())).await;
                                let reason = error["message"].as_str().unwrap_or("").to_string();
                                let _ = tx.send(Message::Close(Some(CloseFrame {
                                    code: CloseCode::from(close_code),
                                    reason: reason.into(),
                                }))).await;
                                return;
                            }
                        }
                        continue;
                    }
                    let (res, drop_now) = self.handle_request(&frame, admin);
                    if tx.send(Message::text(res.to_string())).await.is_err() { return; }
                    if drop_now { return; }
                }
            }
        }
    }

    /// Validates `connect` as the real gateway does; Ok(hello-ok payload, admin granted) or
    /// Err(error object, close code).
    fn check_connect(
        &self,
        f: &Value,
        nonce: &str,
        ts: u64,
    ) -> Result<(Value, bool), (Value, u16)> {
        let invalid = |msg: String| (json!({"code":"INVALID_REQUEST","message":msg}), 1008u16);
        if f["type"] != "req" || f["method"] != "connect" || !f["id"].is_string() {
            return Err(invalid(
                "invalid handshake: first request must be connect".into(),
            ));
        }
        self.state.lock().unwrap().connects += 1;
        let p = &f["params"];
        closed(p, &CONNECT_KEYS, "root").map_err(invalid)?;
        closed(&p["client"], &CLIENT_KEYS, "/client").map_err(invalid)?;
        if !p["device"].is_null() {
            closed(&p["device"], &DEVICE_KEYS, "/device").map_err(invalid)?;
        }
        if !p["auth"].is_null() {
            closed(&p["auth"], &AUTH_KEYS, "/auth").map_err(invalid)?;
        }
        let (min, max) = (p["minProtocol"].as_u64(), p["maxProtocol"].as_u64());
        let (Some(min), Some(max)) = (min, max) else {
            return Err(invalid(
                "invalid connect params: minProtocol/maxProtocol required".into(),
            ));
        };
        if !(min <= self.cfg.protocol && self.cfg.protocol <= max) {
            // The real gateway closes a protocol mismatch with 1002.
            return Err((
                json!({"code":"INVALID_REQUEST","message":"protocol mismatch","details":{
                    "code":"PROTOCOL_MISMATCH","clientMinProtocol":min,"clientMaxProtocol":max,
                    "expectedProtocol":self.cfg.protocol}}),
                1002,
            ));
        }
        let client = &p["client"];
        let client_id = client["id"].as_str().unwrap_or("");
        if !ALLOWED_CLIENT_IDS.contains(&client_id) {
            return Err(invalid(
                "invalid connect params: at /client/id: must be equal to one of the allowed values"
                    .into(),
            ));
        }
        for k in ["version", "platform", "mode"] {
            if !client[k].is_string() {
                return Err(invalid(format!(
                    "invalid connect params: at /client: must have required property '{k}'"
                )));
            }
        }
        let role = p["role"].as_str().unwrap_or("operator");
        let scopes: Vec<String> = p["scopes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        // Auth: the shared token, or a device token the fake issued.
        let token = p["auth"]["token"].as_str();
        let device_token = p["auth"]["deviceToken"].as_str();
        let sig_token = token.or(device_token).unwrap_or("");
        let authed = match (token, device_token) {
            (Some(t), _) => t == self.cfg.token,
            (None, Some(dt)) => self.state.lock().unwrap().issued_tokens.contains(dt),
            (None, None) => false,
        };
        if !authed {
            let (msg, code) = if token.is_some() {
                (
                    "unauthorized: gateway token mismatch (set gateway.remote.token to match gateway.auth.token)",
                    "AUTH_TOKEN_MISMATCH",
                )
            } else if device_token.is_some() {
                (
                    "unauthorized: device token mismatch (rotated/revoked)",
                    "AUTH_DEVICE_TOKEN_MISMATCH",
                )
            } else {
                ("unauthorized: gateway token missing", "AUTH_TOKEN_MISSING")
            };
            return Err((
                json!({"code":"INVALID_REQUEST","message":msg,"details":{"code":code,
                    "authReason":"token_mismatch","canRetryWithDeviceToken":false,
                    "recommendedNextStep":"update_auth_credentials"}}),
                1008,
            ));
        }
        // Device identity: id = sha256(raw key), nonce/ts from the challenge, v3 signature.
        let mut device_id = None;
        if p["device"].is_object() {
            let d = &p["device"];
            let dev_err = |msg: &str, code: &str| {
                (
                    json!({"code":"INVALID_REQUEST","message":msg,"details":{"code":code}}),
                    1008u16,
                )
            };
            let id = d["id"].as_str().unwrap_or("");
            let raw = URL_SAFE_NO_PAD
                .decode(d["publicKey"].as_str().unwrap_or(""))
                .map_err(|_| {
                    dev_err(
                        "device public key invalid",
                        "DEVICE_AUTH_PUBLIC_KEY_INVALID",
                    )
                })?;
            if raw.len() != 32 {
                return Err(dev_err(
                    "device public key invalid",
                    "DEVICE_AUTH_PUBLIC_KEY_INVALID",
                ));
            }
            let digest = ring::digest::digest(&ring::digest::SHA256, &raw);
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            if hex != id {
                return Err(dev_err(
                    "device identity mismatch",
                    "DEVICE_AUTH_DEVICE_ID_MISMATCH",
                ));
            }
            if d["nonce"].as_str() != Some(nonce) {
                return Err(dev_err(
                    "device nonce mismatch",
                    "DEVICE_AUTH_NONCE_MISMATCH",
                ));
            }
            if d["signedAt"].as_u64() != Some(ts) {
                return Err(dev_err(
                    "device signature expired",
                    "DEVICE_AUTH_SIGNATURE_EXPIRED",
                ));
            }
            let lower = |v: &Value| v.as_str().unwrap_or("").trim().to_ascii_lowercase();
            let payload = format!(
                "v3|{id}|{client_id}|{}|{role}|{}|{ts}|{sig_token}|{nonce}|{}|{}",
                client["mode"].as_str().unwrap_or(""),
                scopes.join(","),
                lower(&client["platform"]),
                lower(&client["deviceFamily"]),
            );
            let sig = URL_SAFE_NO_PAD
                .decode(d["signature"].as_str().unwrap_or(""))
                .map_err(|_| {
                    dev_err("device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID")
                })?;
            UnparsedPublicKey::new(&ED25519, &raw)
                .verify(payload.as_bytes(), &sig)
                .map_err(|_| {
                    dev_err("device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID")
                })?;
            device_id = Some(id.to_string());
        }
        let mut st = self.state.lock().unwrap();
        let paired = device_id.as_ref().is_some_and(|d| st.paired.contains(d));
        if self.cfg.require_pairing && !paired {
            let dev = device_id.clone().unwrap_or_default();
            let request_id = match st.pending_pairing.iter().find(|(_, d)| **d == dev) {
                Some((r, _)) => r.clone(),
                None => {
                    let r = format!("req-{}", st.pending_pairing.len() + 1);
                    st.pending_pairing.insert(r.clone(), dev.clone());
                    r
                }
            };
            return Err((
                json!({"code":"NOT_PAIRED","message":"pairing required: device is not approved yet",
                    "details":{"code":"PAIRING_REQUIRED","reason":"not-paired","requestId":request_id,
                    "remediationHint":"Approve this device from the pending pairing requests.",
                    "deviceId":dev,"requestedRole":role,"requestedScopes":scopes}}),
                1008,
            ));
        }
        let granted: Vec<String> = scopes
            .iter()
            .filter(|s| self.cfg.grant_admin || *s != "operator.admin")
            .cloned()
            .collect();
        let admin = granted.iter().any(|s| s == "operator.admin");
        let mut auth = json!({"role": role, "scopes": granted, "method": "token"});
        if let (Some(t), Some(_)) = (&self.cfg.issue_device_token, &device_id) {
            st.issued_tokens.insert(t.clone());
            auth["deviceToken"] = json!(t);
        }
        let hello = json!({
            "type": "hello-ok",
            "protocol": self.cfg.protocol,
            "server": {"version": FAKE_VERSION, "connId": format!("conn-{}", st.connects)},
            "features": {"methods": ["chat.send","chat.history","sessions.reset","health"],
                         "events": ["chat","tick","agent"]},
            "snapshot": {"sessionDefaults": {"defaultAgentId": "main", "mainSessionKey": "agent:main:main"}},
            "auth": auth,
            "policy": {"maxPayload": 26214400, "maxBufferedBytes": 52428800,
                       "tickIntervalMs": self.cfg.tick_interval.as_millis() as u64,
                       "attachments": {"maxBytes": 20971520, "maxImageBytes": 6291456}},
        });
        Ok((hello, admin))
    }

    /// One post-login request → (res frame, drop the connection after sending it).
    fn handle_request(self: &Arc<Self>, f: &Value, admin: bool) -> (Value, bool) {
        let id = f["id"].clone();
        let ok = |payload: Value| json!({"type":"res","id":id,"ok":true,"payload":payload});
        let err = |code: &str, msg: &str, details: Value| {
            let mut e = json!({"code":code,"message":msg});
            if !details.is_null() {
                e["details"] = details;
            }
            json!({"type":"res","id":id,"ok":false,"error":e})
        };
        if f["type"] != "req" {
            return (err("INVALID_REQUEST", "invalid frame", Value::Null), false);
        }
        let p = &f["params"];
        match f["method"].as_str().unwrap_or("") {
            "health" => (ok(json!({"ok":true,"status":"live"})), false),
            "chat.send" => {
                if let Err(m) = closed(p, &CHAT_SEND_KEYS, "root") {
                    return (
                        err(
                            "INVALID_REQUEST",
                            &format!("invalid chat.send params: {m}"),
                            Value::Null,
                        ),
                        false,
                    );
                }
                let (Some(sk), Some(msg), Some(key)) = (
                    p["sessionKey"].as_str(),
                    p["message"].as_str(),
                    p["idempotencyKey"].as_str(),
                ) else {
                    return (
                        err(
                            "INVALID_REQUEST",
                            "invalid chat.send params: missing required property",
                            Value::Null,
                        ),
                        false,
                    );
                };
                let mut st = self.state.lock().unwrap();
                let drop_now = std::mem::take(&mut st.drop_after_chat_send);
                match st.runs.get(key) {
                    Some(true) => return (ok(json!({"runId":key,"status":"ok"})), drop_now),
                    Some(false) => {
                        return (ok(json!({"runId":key,"status":"in_flight"})), drop_now);
                    }
                    None => {}
                }
                st.runs.insert(key.to_string(), false);
                st.model_calls += 1;
                st.transcripts
                    .entry(sk.to_string())
                    .or_default()
                    .push(json!({"role":"user","content":[{"type":"text","text":msg}]}));
                drop(st);
                let reply = (self.cfg.reply)(sk, msg);
                let g = self.clone();
                let (sk, key) = (sk.to_string(), key.to_string());
                tokio::spawn(async move { g.run(sk, key, reply).await });
                (
                    ok(json!({"runId":f["params"]["idempotencyKey"],"status":"started"})),
                    drop_now,
                )
            }
            "chat.history" => {
                let sk = p["sessionKey"].as_str().unwrap_or("");
                let st = self.state.lock().unwrap();
                let messages = st.transcripts.get(sk).cloned().unwrap_or_default();
                (
                    ok(json!({"sessionKey":sk,"sessionId":"sess-1","messages":messages})),
                    false,
                )
            }
            "sessions.reset" => {
                if !admin {
                    return (
                        err(
                            "FORBIDDEN",
                            "missing scope: operator.admin",
                            json!({"code":"MISSING_SCOPE","missingScope":"operator.admin"}),
                        ),
                        false,
                    );
                }
                if let Err(m) = closed(p, &["key", "reason", "expectedSessionId"], "root") {
                    return (
                        err(
                            "INVALID_REQUEST",
                            &format!("invalid sessions.reset params: {m}"),
                            Value::Null,
                        ),
                        false,
                    );
                }
                let Some(key) = p["key"].as_str() else {
                    return (
                        err(
                            "INVALID_REQUEST",
                            "invalid sessions.reset params: must have required property 'key'",
                            Value::Null,
                        ),
                        false,
                    );
                };
                self.state.lock().unwrap().transcripts.remove(key);
                (ok(json!({"ok":true,"key":key})), false)
            }
            other => (
                err(
                    "INVALID_REQUEST",
                    &format!("unknown method: {other}"),
                    Value::Null,
                ),
                false,
            ),
        }
    }

    /// One model run: deltas with the full text so far, then final (or error/aborted).
    async fn run(self: Arc<Self>, session_key: String, run_id: String, reply: FakeReply) {
        let text = match &reply {
            FakeReply::Text(t) => t.clone(),
            _ => String::new(),
        };
        let chars: Vec<char> = text.chars().collect();
        let n = self.cfg.deltas.max(1);
        let msg = |t: &str| json!({"role":"assistant","content":[{"type":"text","text":t}]});
        let mut seq = 0;
        for i in 1..=self.cfg.deltas {
            tokio::time::sleep(self.cfg.delta_delay).await;
            let upto = chars.len() * i / n;
            let so_far: String = chars[..upto].iter().collect();
            seq += 1;
            self.broadcast_event(
                "chat",
                json!({"runId":run_id,"sessionKey":session_key,"seq":seq,
                "state":"delta","deltaText":so_far,"replace":true,"message":msg(&so_far)}),
            );
        }
        tokio::time::sleep(self.cfg.delta_delay).await;
        seq += 1;
        let payload = match &reply {
            FakeReply::Text(t) => {
                self.state
                    .lock()
                    .unwrap()
                    .transcripts
                    .entry(session_key.clone())
                    .or_default()
                    .push(msg(t));
                json!({"runId":run_id,"sessionKey":session_key,"seq":seq,"state":"final",
                    "message":msg(t),"stopReason":"stop"})
            }
            FakeReply::Error(m) => json!({"runId":run_id,"sessionKey":session_key,"seq":seq,
                "state":"error","errorMessage":m,"errorKind":"unknown"}),
            FakeReply::Aborted => json!({"runId":run_id,"sessionKey":session_key,"seq":seq,
                "state":"aborted"}),
        };
        self.state.lock().unwrap().runs.insert(run_id.clone(), true);
        self.broadcast_event("chat", payload);
    }
}

/// The schema's closed objects: any key outside `allowed` is "unexpected property".
fn closed(v: &Value, allowed: &[&str], at: &str) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err(format!("at {at}: must be object"));
    };
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!("at {at}: unexpected property '{k}'"));
        }
    }
    Ok(())
}
