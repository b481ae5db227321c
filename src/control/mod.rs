//! The control socket: how `clawbox pair whatsapp`, `clawbox unpair whatsapp`, `clawbox status`
//! (and any other local tool, e.g. `clawbox doctor`) talk to the running service. [`server`] is
//! the service's side, [`client`] the commands' side; this file is the protocol and where the
//! socket lives.
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
//! Any request may instead get `error` (bad request, channel not enabled) or `refused` (caller not
//! allowed), or `busy` when [`MAX_CONNECTIONS`] are open.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Pair {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
    },
    Cancel {
        channel: String,
    },
    Unpair {
        channel: String,
    },
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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
        #[serde(default)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    /// `starting`, `up`, `degraded`, `needs-owner`, `off`.
    pub state: String,
    pub detail: String,
    pub last_beat_ms_ago: u64,
    /// Machinery the owner never configured (store threads, router loop).
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    // Serializing these plain structs cannot fail; an empty object would read as malformed.
    serde_json::to_string(ev).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_events_have_the_documented_shape() {
        let r: Request = serde_json::from_str(r#"{"request":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        let r: Request =
            serde_json::from_str(r#"{"request":"pair","channel":"whatsapp","phone":"+4917"}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::Pair {
                channel: "whatsapp".into(),
                phone: Some("+4917".into())
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Pair {
                channel: "whatsapp".into(),
                phone: None
            })
            .unwrap(),
            r#"{"request":"pair","channel":"whatsapp"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"request":"reboot"}"#).is_err());
        assert_eq!(
            encode(&Event::Qr {
                payload: "2@x".into(),
                expires_s: 20
            }),
            r#"{"event":"qr","payload":"2@x","expires_s":20}"#
        );
        assert_eq!(encode(&Event::Cancelled), r#"{"event":"cancelled"}"#);
        let linked: Event = serde_json::from_str(r#"{"event":"linked","number":"+1"}"#).unwrap();
        assert_eq!(
            linked,
            Event::Linked {
                number: "+1".into(),
                already: false
            }
        );
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
