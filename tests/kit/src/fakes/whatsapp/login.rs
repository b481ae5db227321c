//! Login refusals, as the real server answers a `ClientPayload` it will not log in: the
//! `<failure reason=N …>` stanza, then the socket closes. Two sources:
//! - `POST /faults {"kind": "login-failure", "code": N, "expire": secs?, "count": n?}`: the next
//!   `n` logins (default 1) are refused with N (401, 402, 403, 405, 409, 411, 503 or any code);
//! - the version check (`POST /version {"min": …, "serve": …}`): a login offering an older
//!   `ClientPayload.user_agent.app_version` than `min` is refused with 405 until the client offers
//!   it. The version document the client reads its version from (WhatsApp Web's service worker)
//!   is served at `GET /sw.js` on the admin listener, naming `serve` (default: `min`).
//!
//! The stanza's attributes are the ones the clients read: wacore 0.7.0
//! `stanza/connect_failure.rs` (`ConnectFailureStanza::parse`, after WA Web's `failureParser`:
//! `reason`, `location`, `code`, `expire`, `message`, `url`, `logout_message_*`) and
//! whatsapp-rust 0.7.0 `client/node_io.rs` `handle_connect_failure` (a 402 is a
//! `TemporaryBan` only with both `code` and `expire`, `expire` in seconds); whatsmeow
//! `connectionevents.go` `handleConnectFailure` reads the same `reason`/`code`/`expire`/`message`.
//! The version document's format is the one whatsapp-rust `src/version.rs` parses (`parse_sw_js`:
//! the `client_revision` in `self.__swData`'s escaped JSON, as web.whatsapp.com/sw.js has it).

use std::collections::VecDeque;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::waproto::whatsapp as wa;

use super::FakeWhatsApp;
use super::server::World;

/// A WhatsApp Web version: (primary, secondary, tertiary).
pub type WebVersion = (u32, u32, u32);

/// What the version document names until a test says otherwise (a real 2025 build).
pub const DEFAULT_SERVED: WebVersion = (2, 3000, 1_026_131_876);
/// The ban sub-reason a 402 carries when the test gives none (whatsmeow's `TempBanReason` 101,
/// "sent to too many people who don't have you in their address book").
const DEFAULT_BAN_CODE: u32 = 101;
/// The ban length a 402 carries when the test gives none.
const DEFAULT_BAN_EXPIRE_S: u64 = 3600;
/// Login attempts remembered (their offered versions), oldest dropped beyond.
pub const OFFERED_CAP: usize = 1024;
/// Logins a single fault refuses at most (a test asking for more asks for "always").
const MAX_FAULT_COUNT: u32 = 100_000;

/// The refusals waiting for the next logins, and the version check.
#[derive(Debug)]
pub struct LoginGate {
    /// Refuse the next `remaining` logins with this failure.
    fault: Option<PendingFailure>,
    /// A login offering an older version than this is refused with 405.
    pub min_version: Option<WebVersion>,
    /// The version the document at `GET /sw.js` names.
    pub served: WebVersion,
    /// The version each login offered, oldest first (up to [`OFFERED_CAP`]).
    pub offered: VecDeque<WebVersion>,
    /// `<failure>` stanzas sent so far.
    pub failures: u64,
}

impl Default for LoginGate {
    fn default() -> Self {
        LoginGate {
            fault: None,
            min_version: None,
            served: DEFAULT_SERVED,
            offered: VecDeque::new(),
            failures: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct PendingFailure {
    code: u16,
    expire: Option<u64>,
    remaining: u32,
}

fn offered_version(payload: &wa::ClientPayload) -> Option<WebVersion> {
    let v = payload.user_agent.as_option()?.app_version.as_option()?;
    Some((
        v.primary.unwrap_or(0),
        v.secondary.unwrap_or(0),
        v.tertiary.unwrap_or(0),
    ))
}

/// `<failure reason=N location=…/>`, with what the real server adds for a ban.
pub fn failure(code: u16, expire: Option<u64>) -> Node {
    let b = NodeBuilder::new("failure")
        .attr("reason", code.to_string())
        .attr("location", "fake");
    if code == 402 {
        b.attr("code", DEFAULT_BAN_CODE.to_string())
            .attr("expire", expire.unwrap_or(DEFAULT_BAN_EXPIRE_S).to_string())
            .build()
    } else {
        b.build()
    }
}

/// `2.3000.1026131876` or `1026131876` (meaning 2.3000.N, as `parse_sw_js` reads it).
pub fn parse_version(v: &serde_json::Value) -> Result<WebVersion, String> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n)
            .map(|n| (2, 3000, n))
            .map_err(|_| format!("version {n} out of range"));
    }
    let s = v.as_str().ok_or("version: a number or \"a.b.c\"")?;
    let parts: Vec<u32> = s
        .split('.')
        .map(|p| p.parse::<u32>().map_err(|_| format!("bad version {s}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [a, b, c] => Ok((a, b, c)),
        [c] => Ok((2, 3000, c)),
        _ => Err(format!("bad version {s}")),
    }
}

pub fn show(v: WebVersion) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

impl World {
    /// Before a `ClientPayload` (login or registration) is accepted: the `<failure>` to answer it
    /// with, if a fault or the version check refuses it.
    pub(super) fn login_refusal(&mut self, payload: &wa::ClientPayload) -> Option<Node> {
        let offered = offered_version(payload);
        if let Some(v) = offered {
            if self.login.offered.len() >= OFFERED_CAP {
                self.login.offered.pop_front();
            }
            self.login.offered.push_back(v);
        }
        let node = if let Some(f) = self.login.fault.as_mut() {
            f.remaining -= 1;
            let node = failure(f.code, f.expire);
            if f.remaining == 0 {
                self.login.fault = None;
            }
            node
        } else if let Some(min) = self.login.min_version
            && offered.is_none_or(|v| v < min)
        {
            failure(405, None)
        } else {
            return None;
        };
        self.login.failures += 1;
        tracing::info!(
            "fake-whatsapp: login refused: {}",
            super::nodes::summary(&node)
        );
        Some(node)
    }

    /// `POST /faults {"kind": "login-failure", …}`.
    pub fn login_failure(
        &mut self,
        code: Option<u16>,
        expire: Option<u64>,
        count: Option<u32>,
    ) -> Result<(), String> {
        let code = code.ok_or("login-failure: needs a \"code\"")?;
        let remaining = count.unwrap_or(1).clamp(1, MAX_FAULT_COUNT);
        self.login.fault = Some(PendingFailure {
            code,
            expire,
            remaining,
        });
        Ok(())
    }

    /// `POST /version`: logins older than `min` get 405; the document names `serve` (or `min`).
    pub fn require_version(&mut self, min: Option<WebVersion>, serve: Option<WebVersion>) {
        self.login.min_version = min;
        if let Some(v) = serve.or(min) {
            self.login.served = v;
        }
    }

    /// `GET /version`.
    pub fn version_json(&self) -> serde_json::Value {
        serde_json::json!({
            "min": self.login.min_version.map(show),
            "serve": show(self.login.served),
            "offered": self.login.offered.iter().copied().map(show).collect::<Vec<_>>(),
            "failures": self.login.failures,
        })
    }

    /// The version document, shaped like web.whatsapp.com/sw.js: the service worker's data as
    /// escaped JSON inside `JSON.parse(…)`, `client_revision` among the site data.
    pub fn sw_js(&self) -> String {
        let (_, _, rev) = self.login.served;
        format!(
            "__DEV__=0;/*FB_PKG_DELIM*/\nself.__swData=JSON.parse(/*BTDS*/\"{{\\\"dynamic_data\\\":{{\\\"SiteData\\\":{{\\\"server_revision\\\":{rev},\\\"client_revision\\\":{rev},\\\"push_phase\\\":\\\"C3\\\",\\\"pkg_cohort\\\":\\\"BP:DEFAULT\\\"}}}}}}\");\nimportScripts(\"https:\\/\\/static.whatsapp.net\\/rsrc.php\\/v4\\/yq\\/r\\/fake.js\");\n"
        )
    }
}

/// `GET /sw.js` as the real server sends it (JavaScript, not JSON).
pub fn sw_js_response(body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    resp
}

impl FakeWhatsApp {
    /// The version document's URL (point the box's `version_url` at it).
    pub fn version_url(&self) -> String {
        format!("http://{}/sw.js", self.admin_addr)
    }

    /// The next `count` logins are answered `<failure reason=code …>` (a 402 with `expire`).
    pub async fn login_failure(
        &self,
        code: u16,
        expire: Option<u64>,
        count: u32,
    ) -> Result<(), String> {
        self.world
            .lock()
            .await
            .login_failure(Some(code), expire, Some(count))
    }

    /// Logins older than `min` are refused with 405; the version document names `serve`.
    pub async fn require_version(&self, min: Option<WebVersion>, serve: Option<WebVersion>) {
        self.world.lock().await.require_version(min, serve);
    }

    /// The version each login offered so far, oldest first.
    pub async fn offered_versions(&self) -> Vec<WebVersion> {
        self.world
            .lock()
            .await
            .login
            .offered
            .iter()
            .copied()
            .collect()
    }

    /// `<failure>` stanzas sent so far.
    pub async fn login_failures(&self) -> u64 {
        self.world.lock().await.login.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::wacore::stanza::connect_failure::ConnectFailureStanza;
    use whatsapp_rust::wacore::types::events::ConnectFailureReason;

    #[test]
    fn the_document_reads_as_the_client_reads_sw_js() {
        let mut w = World::new("15550001111");
        assert_eq!(
            whatsapp_rust::version::parse_sw_js(&w.sw_js()),
            Some(DEFAULT_SERVED)
        );
        w.require_version(Some((2, 3000, 7)), None);
        assert_eq!(
            whatsapp_rust::version::parse_sw_js(&w.sw_js()),
            Some((2, 3000, 7))
        );
    }

    #[test]
    fn a_402_carries_what_the_client_needs_for_a_temporary_ban() {
        let node = failure(402, Some(600));
        let r = node.as_node_ref();
        let f = ConnectFailureStanza::parse(&r);
        assert_eq!(f.reason, Some(ConnectFailureReason::TempBanned));
        assert_eq!(f.expire, Some(600));
        assert_eq!(f.code, Some(101));
        let node = failure(411, None);
        let r = node.as_node_ref();
        let f = ConnectFailureStanza::parse(&r);
        assert_eq!(f.reason, Some(ConnectFailureReason::Unknown(411)));
        assert_eq!(f.expire, None);
    }

    #[test]
    fn versions_parse_in_both_forms() {
        assert_eq!(parse_version(&serde_json::json!(5)), Ok((2, 3000, 5)));
        assert_eq!(
            parse_version(&serde_json::json!("2.3001.9")),
            Ok((2, 3001, 9))
        );
        assert!(parse_version(&serde_json::json!("2.x.9")).is_err());
    }
}
