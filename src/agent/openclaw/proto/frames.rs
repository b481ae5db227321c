//! What the gateway's frames say, read into types: `hello-ok` → [`Hello`], a refused `connect`
//! → [`ProtoError`], any other `ok:false` answer → [`GatewayError`], the text of a chat message
//! and the last assistant reply of a `chat.history` page. Pure functions of the parsed JSON; the
//! state machine that decides which frame means what is [`super::Connection`].

use super::{
    ADMIN_SCOPE, DEFAULT_TICK_INTERVAL, HANDSHAKE_TIMEOUT, MAX_TICK_INTERVAL, MIN_TICK_INTERVAL,
    PROTOCOL_VERSION,
};
use crate::agent::openclaw::identity::MAX_DEVICE_TOKEN_BYTES;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

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
    pub(super) fn from_value(v: &Value) -> GatewayError {
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

pub(super) fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The text of a chat `message`: a string, or `{content: string | [{type:"text", text}]}`, or
/// `{text}`.
pub(super) fn message_text(m: Option<&Value>) -> Option<String> {
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

pub(super) fn last_assistant_text(history: &Value) -> Option<String> {
    history
        .get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| str_at(m, "role") == Some("assistant"))
        .and_then(|m| message_text(Some(m)))
}

pub(super) fn parse_hello(p: &Value) -> Result<Hello, ProtoError> {
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
        .filter(|t| !t.is_empty() && t.len() <= MAX_DEVICE_TOKEN_BYTES)
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

pub(super) fn connect_error(e: &Value, sent_device_token: bool) -> ProtoError {
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
