//! The control socket: how `clawbox pair whatsapp`, `clawbox unpair whatsapp`, `clawbox status`
//! (and any other local tool, e.g. `clawbox doctor`) talk to the running service. [`server`] is
//! the service's side, [`client`] the commands' side, and [`direct`] what `pair` and `unpair` do
//! on the state themselves when no service runs; this file is the protocol and where the socket
//! lives.
//!
//! # Where
//!
//! The service binds `$RUNTIME_DIRECTORY/control.sock` (systemd's `RuntimeDirectory=clawbox`:
//! `/run/clawbox/control.sock`) and links `<state>/control.sock` to it; without
//! `$RUNTIME_DIRECTORY` it binds `<state>/control.sock` itself. Commands connect to
//! `<state>/control.sock`, the state directory being resolved as for every command
//! ([`crate::state_dir`]), so a shell in another directory and another environment (ssh,
//! `kubectl exec`) finds the service by its config alone. The socket is 0600 in a 0700 directory,
//! and the service checks every caller's credentials (`SO_PEERCRED`): root and the service's own
//! user only; anyone else gets an [`Event::Refused`].
//!
//! # Protocol
//!
//! Line-delimited JSON, one request per connection, at most [`MAX_LINE`] bytes a line. The client
//! sends one [`Request`] line; the service answers with [`Event`] lines and closes:
//!
//! - `{"request":"status"}` → one `{"event":"status", …}` ([`Report`]: version, uptime, state
//!   directory, health, each component's state and detail, the WhatsApp pairing state and linked
//!   number).
//! - `{"request":"pair","channel":"whatsapp"}` (optionally `"phone":"+491701234567"`) → a stream:
//!   `state` (the channel's state while it connects), `qr` (each code as it rotates), `code` (the
//!   pairing code for the phone), then one final event: `linked` (`"already":true` when it was),
//!   `paused` (codes ran out unscanned), `failed` (why, with what to do). Closing the connection,
//!   or sending anything, cancels the pairing in the service.
//! - `{"request":"cancel","channel":"whatsapp"}` → `cancelled`.
//! - `{"request":"unpair","channel":"whatsapp"}` → `unpaired` (what was done) after logging out
//!   and wiping the WhatsApp state (only it).
//!
//! - `{"request":"groups","channel":"whatsapp"}` → `groups` (`"groups":[{"jid","subject"}]`,
//!   `"more"`: how many were left out) — the groups the linked account is in, asked of WhatsApp.
//!
//! Any request may instead get `error` (bad request, channel not enabled) or `refused` (caller not
//! allowed), or `busy` when [`MAX_CONNECTIONS`] are open.

pub mod client;
pub mod direct;
pub mod server;

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket's file name, in the runtime directory and (as a link) in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// Longest line either side sends. A request is ~100 bytes; the largest answer, the status
/// report, is one row per component (a dozen at most) with a short detail each.
pub const MAX_LINE: usize = 16 * 1024;
/// Connections served at once; more get `busy`. An owner at a terminal, a doctor run, a
/// monitoring check: a handful.
pub const MAX_CONNECTIONS: usize = 8;
/// A client must send its request line within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Writing one answer line must finish within this: a client that stops reading is cut off.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A pairing stream ends after this even without an outcome (a service that cannot reach
/// WhatsApp keeps retrying; the owner is told and may ask again).
pub const PAIR_STREAM_LIMIT: Duration = Duration::from_secs(15 * 60);
/// sysexits' EX_NOPERM: the caller may not talk to the service.
pub const EXIT_NOPERM: i32 = 77;

/// One request, the first and only line a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Pair {
        channel: String,
        phone: Option<String>,
    },
    Cancel {
        channel: String,
    },
    Unpair {
        channel: String,
    },
    /// The groups the channel's account is in.
    Groups {
        channel: String,
    },
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Status(Report),
    /// The channel's state while a pairing waits for its first code (connecting, reconnecting).
    State {
        state: String,
        detail: String,
    },
    /// A QR code to show now (replaces the previous one); it lives about `expires_s`.
    Qr {
        payload: String,
        expires_s: u64,
    },
    /// The 8-character code to type on the phone.
    Code {
        code: String,
    },
    /// Final: linked to `number`; `already` when nothing had to be done.
    Linked {
        number: String,
        already: bool,
    },
    /// Final: the codes ran out unscanned.
    Paused {
        detail: String,
    },
    /// Final: pairing stopped; `detail` says why and what to do.
    Failed {
        detail: String,
    },
    Cancelled,
    Unpaired {
        detail: String,
    },
    /// The groups the account is in: (JID, subject) each; `more` left out.
    Groups {
        groups: Vec<(String, String)>,
        more: u64,
    },
    /// The request could not be carried out (malformed, unknown channel, channel not enabled).
    Error {
        error: String,
    },
    /// The caller is neither root nor the service's user.
    Refused {
        error: String,
    },
    /// Too many connections; try again.
    Busy,
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub version: String,
    pub uptime_s: u64,
    pub state_dir: String,
    /// Every row up or off (what `/healthz` answers 200 for).
    pub healthy: bool,
    pub components: Vec<Component>,
    /// None when the WhatsApp channel is not enabled.
    pub whatsapp: Option<WhatsAppReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    /// `starting`, `up`, `degraded`, `needs-owner`, `off`.
    pub state: String,
    pub detail: String,
    pub last_beat_ms_ago: u64,
    /// Machinery the owner never configured (store threads, router loop).
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppReport {
    /// `idle`, `qr`, `code`, `linked`, `paused`, `pair-again`, `stopped`. Never the QR or the code.
    pub pairing: String,
    /// The linked account's number, once linked.
    pub number: Option<String>,
}

/// The runtime directory systemd gave the service (`RuntimeDirectory=`), if any: the first entry.
pub fn runtime_dir_from_env() -> Option<PathBuf> {
    std::env::var_os("RUNTIME_DIRECTORY")
        .as_deref()
        .and_then(|d| std::env::split_paths(d).next())
        .filter(|p| !p.as_os_str().is_empty())
}

/// Where the service binds its socket: in the runtime directory if it has one, else in the state
/// directory.
pub fn bind_path(runtime_dir: Option<&Path>, state_dir: &Path) -> PathBuf {
    runtime_dir.unwrap_or(state_dir).join(SOCKET_NAME)
}

/// Where commands connect: the state directory's entry (the socket, or a link to it).
pub fn connect_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// The rule: root, or the user the service runs as.
pub fn allowed(peer_uid: u32, service_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == service_uid
}

/// The one-line form of `ev` (no newline).
pub fn encode(ev: &Event) -> String {
    ev.to_value().to_string()
}

// The wire form is written out by hand over `serde_json::Value` (already in the binary for the
// agents and channels): derived serde code for these few types cost several times the size.

fn str_of(v: &Value, k: &str) -> Result<String, String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("`{k}` is missing or not a string"))
}

fn u64_of(v: &Value, k: &str) -> Result<u64, String> {
    v.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("`{k}` is missing or not a number"))
}

fn tagged(tag: &str, name: &str, fields: Value) -> Value {
    let mut m = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert(tag.into(), Value::String(name.into()));
    Value::Object(m)
}

impl Request {
    /// The one-line form (no newline).
    pub fn to_line(&self) -> String {
        let (name, fields) = match self {
            Request::Status => ("status", json!({})),
            Request::Pair { channel, phone } => {
                let mut f = json!({ "channel": channel });
                if let (Some(p), Some(m)) = (phone, f.as_object_mut()) {
                    m.insert("phone".into(), Value::String(p.clone()));
                }
                ("pair", f)
            }
            Request::Cancel { channel } => ("cancel", json!({ "channel": channel })),
            Request::Unpair { channel } => ("unpair", json!({ "channel": channel })),
            Request::Groups { channel } => ("groups", json!({ "channel": channel })),
        };
        tagged("request", name, fields).to_string()
    }

    /// Reads a request line; the error says what is wrong.
    pub fn parse(line: &str) -> Result<Request, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        Ok(match str_of(&v, "request")?.as_str() {
            "status" => Request::Status,
            "pair" => Request::Pair {
                channel: str_of(&v, "channel")?,
                phone: match v.get("phone") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(str_of(&v, "phone")?),
                },
            },
            "cancel" => Request::Cancel {
                channel: str_of(&v, "channel")?,
            },
            "unpair" => Request::Unpair {
                channel: str_of(&v, "channel")?,
            },
            "groups" => Request::Groups {
                channel: str_of(&v, "channel")?,
            },
            other => return Err(format!("unknown request `{other}`")),
        })
    }
}

impl Event {
    pub fn to_value(&self) -> Value {
        let (name, fields) = match self {
            Event::Status(r) => ("status", r.to_value()),
            Event::State { state, detail } => {
                ("state", json!({ "state": state, "detail": detail }))
            }
            Event::Qr { payload, expires_s } => {
                ("qr", json!({ "payload": payload, "expires_s": expires_s }))
            }
            Event::Code { code } => ("code", json!({ "code": code })),
            Event::Linked { number, already } => {
                ("linked", json!({ "number": number, "already": already }))
            }
            Event::Paused { detail } => ("paused", json!({ "detail": detail })),
            Event::Failed { detail } => ("failed", json!({ "detail": detail })),
            Event::Cancelled => ("cancelled", json!({})),
            Event::Unpaired { detail } => ("unpaired", json!({ "detail": detail })),
            Event::Groups { groups, more } => {
                let list: Vec<Value> = groups
                    .iter()
                    .map(|(jid, subject)| json!({ "jid": jid, "subject": subject }))
                    .collect();
                ("groups", json!({ "groups": list, "more": more }))
            }
            Event::Error { error } => ("error", json!({ "error": error })),
            Event::Refused { error } => ("refused", json!({ "error": error })),
            Event::Busy => ("busy", json!({})),
        };
        tagged("event", name, fields)
    }

    /// Reads an event line; the error says what is wrong.
    pub fn parse(line: &[u8]) -> Result<Event, String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let detail = || str_of(&v, "detail");
        Ok(match str_of(&v, "event")?.as_str() {
            "status" => Event::Status(Report::from_value(&v)?),
            "state" => Event::State {
                state: str_of(&v, "state")?,
                detail: detail()?,
            },
            "qr" => Event::Qr {
                payload: str_of(&v, "payload")?,
                expires_s: u64_of(&v, "expires_s")?,
            },
            "code" => Event::Code {
                code: str_of(&v, "code")?,
            },
            "linked" => Event::Linked {
                number: str_of(&v, "number")?,
                already: v.get("already").and_then(Value::as_bool).unwrap_or(false),
            },
            "paused" => Event::Paused { detail: detail()? },
            "failed" => Event::Failed { detail: detail()? },
            "cancelled" => Event::Cancelled,
            "unpaired" => Event::Unpaired { detail: detail()? },
            "groups" => Event::Groups {
                groups: v
                    .get("groups")
                    .and_then(Value::as_array)
                    .ok_or("`groups` is missing or not a list")?
                    .iter()
                    .map(|g| Ok((str_of(g, "jid")?, str_of(g, "subject")?)))
                    .collect::<Result<_, String>>()?,
                more: u64_of(&v, "more")?,
            },
            "error" => Event::Error {
                error: str_of(&v, "error")?,
            },
            "refused" => Event::Refused {
                error: str_of(&v, "error")?,
            },
            "busy" => Event::Busy,
            other => return Err(format!("unknown event `{other}`")),
        })
    }
}

impl Report {
    pub fn to_value(&self) -> Value {
        let components: Vec<Value> = self
            .components
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "state": c.state,
                    "detail": c.detail,
                    "last_beat_ms_ago": c.last_beat_ms_ago,
                    "internal": c.internal,
                })
            })
            .collect();
        json!({
            "version": self.version,
            "uptime_s": self.uptime_s,
            "state_dir": self.state_dir,
            "healthy": self.healthy,
            "components": components,
            "whatsapp": self.whatsapp.as_ref().map(|w| json!({
                "pairing": w.pairing,
                "number": w.number,
            })),
        })
    }

    pub fn from_value(v: &Value) -> Result<Report, String> {
        let components = v
            .get("components")
            .and_then(Value::as_array)
            .ok_or("`components` is missing")?
            .iter()
            .map(|c| {
                Ok(Component {
                    name: str_of(c, "name")?,
                    state: str_of(c, "state")?,
                    detail: str_of(c, "detail")?,
                    last_beat_ms_ago: u64_of(c, "last_beat_ms_ago")?,
                    internal: c.get("internal").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let whatsapp = match v.get("whatsapp") {
            None | Some(Value::Null) => None,
            Some(w) => Some(WhatsAppReport {
                pairing: str_of(w, "pairing")?,
                number: w.get("number").and_then(Value::as_str).map(str::to_string),
            }),
        };
        Ok(Report {
            version: str_of(v, "version")?,
            uptime_s: u64_of(v, "uptime_s")?,
            state_dir: str_of(v, "state_dir")?,
            healthy: v
                .get("healthy")
                .and_then(Value::as_bool)
                .ok_or("`healthy` is missing")?,
            components,
            whatsapp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_events_have_the_documented_shape() {
        let r = Request::parse(r#"{"request":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        let r =
            Request::parse(r#"{"request":"pair","channel":"whatsapp","phone":"+4917"}"#).unwrap();
        assert_eq!(
            r,
            Request::Pair {
                channel: "whatsapp".into(),
                phone: Some("+4917".into())
            }
        );
        let line = Request::Pair {
            channel: "whatsapp".into(),
            phone: None,
        }
        .to_line();
        assert_eq!(
            Request::parse(&line).unwrap(),
            Request::Pair {
                channel: "whatsapp".into(),
                phone: None
            }
        );
        assert!(!line.contains("phone"), "{line}");
        assert_eq!(
            Request::parse(r#"{"request":"groups","channel":"whatsapp"}"#).unwrap(),
            Request::Groups {
                channel: "whatsapp".into()
            }
        );
        assert!(Request::parse(r#"{"request":"reboot"}"#).is_err());
        assert!(Request::parse(r#"{"request":"pair"}"#).is_err());
        assert!(Request::parse("not json").is_err());
        let qr: Value = serde_json::from_str(&encode(&Event::Qr {
            payload: "2@x".into(),
            expires_s: 20,
        }))
        .unwrap();
        assert_eq!(
            qr,
            json!({"event": "qr", "payload": "2@x", "expires_s": 20})
        );
        assert_eq!(encode(&Event::Cancelled), r#"{"event":"cancelled"}"#);
        let linked = Event::parse(br#"{"event":"linked","number":"+1"}"#).unwrap();
        assert_eq!(
            linked,
            Event::Linked {
                number: "+1".into(),
                already: false
            }
        );
    }

    #[test]
    fn every_event_reads_back_as_itself() {
        let report = Report {
            version: "0.1.0".into(),
            uptime_s: 7,
            state_dir: "/var/lib/clawbox".into(),
            healthy: true,
            components: vec![Component {
                name: "whatsapp".into(),
                state: "up".into(),
                detail: "linked +1".into(),
                last_beat_ms_ago: 3,
                internal: false,
            }],
            whatsapp: Some(WhatsAppReport {
                pairing: "linked".into(),
                number: Some("+1".into()),
            }),
        };
        let d = || "why".to_string();
        for ev in [
            Event::Status(report.clone()),
            Event::Status(Report {
                whatsapp: None,
                ..report
            }),
            Event::State {
                state: "starting".into(),
                detail: d(),
            },
            Event::Qr {
                payload: "2@x,y".into(),
                expires_s: 60,
            },
            Event::Code {
                code: "ABCD-EFGH".into(),
            },
            Event::Linked {
                number: "+1".into(),
                already: true,
            },
            Event::Paused { detail: d() },
            Event::Failed { detail: d() },
            Event::Cancelled,
            Event::Unpaired { detail: d() },
            Event::Groups {
                groups: vec![("120363000000000001@g.us".into(), "Family \"ü\"".into())],
                more: 2,
            },
            Event::Groups {
                groups: vec![],
                more: 0,
            },
            Event::Error { error: d() },
            Event::Refused { error: d() },
            Event::Busy,
        ] {
            let line = encode(&ev);
            assert!(!line.contains('\n'));
            assert_eq!(Event::parse(line.as_bytes()).unwrap(), ev, "{line}");
        }
        assert!(Event::parse(br#"{"event":"qr","payload":"x"}"#).is_err());
    }

    #[test]
    fn the_socket_lives_in_the_runtime_directory_and_is_found_through_the_state_directory() {
        let state = Path::new("/var/lib/clawbox");
        assert_eq!(
            bind_path(Some(Path::new("/run/clawbox")), state),
            PathBuf::from("/run/clawbox/control.sock")
        );
        assert_eq!(
            bind_path(None, state),
            PathBuf::from("/var/lib/clawbox/control.sock")
        );
        assert_eq!(
            connect_path(state),
            PathBuf::from("/var/lib/clawbox/control.sock")
        );
    }

    #[test]
    fn only_root_and_the_service_user_may_ask() {
        assert!(allowed(0, 998));
        assert!(allowed(998, 998));
        assert!(!allowed(1000, 998));
        assert!(!allowed(65534, 998));
        assert!(allowed(0, 0));
        assert!(!allowed(1000, 0));
    }
}
