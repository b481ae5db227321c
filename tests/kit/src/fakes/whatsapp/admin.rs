//! The fake's admin API: JSON over HTTP/1.1 on its own loopback listener (hyper 1), driving the
//! mock phone (linking, its own "message yourself" chat), the mock contacts and fault injection,
//! and reporting state and the login log. Owns request routing and JSON shapes only;
//! every action is a call into `server::World`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::lid::{Addressing, lid_jid_of};
use super::server::{World, now_secs};

/// Largest admin request body: the biggest is a message text, a few KiB in tests.
pub const ADMIN_BODY_MAX: usize = 64 * 1024;

#[derive(Deserialize)]
struct Scan {
    qr: String,
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

#[derive(Deserialize)]
struct Send {
    text: String,
    media: Option<String>,
    caption: Option<String>,
    /// The first copy fails to decrypt on the linked device (`retry.rs`).
    #[serde(default)]
    undecryptable: bool,
    /// With `undecryptable`: every resend fails too.
    #[serde(default)]
    stays_undecryptable: bool,
    /// `"pn"` (the default) | `"lid"` | `"lid-only"`: see `lid::Addressing`.
    addressing: Option<String>,
}

/// `POST /phone/self`: the owner writes in "message yourself" from the primary phone.
#[derive(Deserialize)]
struct SelfSend {
    text: String,
    /// How the phone addresses its own chat: `"pn"` (the default) or `"lid"` (the own LID).
    addressing: Option<String>,
    /// The account's device that writes: 0 (the phone, the default) or another of the owner's
    /// linked devices (a Desktop; created on first use, `devices.rs`).
    device: Option<u16>,
}

/// `POST /contacts/<e164>/devices`: the contact has `count` devices, its phone included.
#[derive(Deserialize)]
struct DeviceCount {
    count: usize,
    /// False: the client is not told (a lost notification). Default true.
    notify: Option<bool>,
}

#[derive(Deserialize)]
struct Fault {
    kind: String,
    code: Option<u16>,
    /// `login-failure` 402: the ban's length in seconds.
    expire: Option<u64>,
    /// `login-failure`: how many logins in a row are refused (default 1); `prekeys-low`: the
    /// one-time prekeys the server has left; `nack`: how many sends in a row are refused.
    count: Option<u32>,
    /// `identity-change`: the contact who reinstalled.
    contact: Option<String>,
}

/// `POST /groups`: a group with these members (the first created it) and the linked account.
#[derive(Deserialize)]
struct NewGroup {
    subject: String,
    members: Vec<String>,
    /// `"pn"` (the default) or `"lid"`: how the group names its participants.
    addressing: Option<String>,
}

/// `POST /version`: `{"min": "2.3000.N" | N, "serve": …}` (`login.rs`).
#[derive(Deserialize)]
struct VersionCheck {
    min: Option<serde_json::Value>,
    serve: Option<serde_json::Value>,
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn bad(e: impl std::fmt::Display) -> Response<Full<Bytes>> {
    reply(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }))
}

/// `{"connected","paired","jid","conn","usync"}` as served by `GET /state` (`conn`: the id
/// of the connection logged in now, or null; `usync`: the lookups the client made, by kind).
pub async fn state_json(world: &Mutex<World>) -> serde_json::Value {
    let w = world.lock().await;
    json!({
        "connected": w.logged_in_conn().is_some(),
        "paired": w.companion.is_some(),
        "jid": w.own_jid(),
        "replaced": w.replaced,
        "conn": w.logged_in_conn(),
        "usync": w.usync_counts,
    })
}

/// `[{"conn","at_unix_ms"}]`, oldest first, as served by `GET /logins`.
pub async fn logins_json(world: &Mutex<World>) -> serde_json::Value {
    let w = world.lock().await;
    w.logins
        .iter()
        .map(|l| json!({ "conn": l.conn, "at_unix_ms": l.at_unix_ms }))
        .collect()
}

pub async fn handle(
    world: Arc<Mutex<World>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), ADMIN_BODY_MAX)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(bad(format!("body: {e}"))),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match (method, segments.as_slice()) {
        (Method::GET, ["state"]) => reply(StatusCode::OK, state_json(&world).await),
        (Method::GET, ["logins"]) => reply(StatusCode::OK, logins_json(&world).await),
        (Method::GET, ["retries"]) => {
            reply(StatusCode::OK, json!(world.lock().await.retry_stats()))
        }
        (Method::POST, ["phone", "self"]) => match serde_json::from_slice::<SelfSend>(&body) {
            Ok(m) => match Addressing::parse(m.addressing.as_deref()) {
                Ok(addressing) => match world
                    .lock()
                    .await
                    .self_send_from(&m.text, addressing, m.device.unwrap_or(0), now_secs())
                    .await
                {
                    Ok(id) => reply(StatusCode::OK, json!({ "id": id })),
                    Err(e) => bad(e),
                },
                Err(e) => bad(e),
            },
            Err(e) => bad(e),
        },
        (Method::GET, ["phone", "self", "messages"]) => {
            let inbox = world.lock().await.self_messages();
            reply(StatusCode::OK, json!(inbox))
        }
        (Method::POST, ["phone", "scan"]) => match serde_json::from_slice::<Scan>(&body) {
            Ok(s) => match world.lock().await.scan(&s.qr) {
                Ok(()) => reply(StatusCode::OK, json!({})),
                Err(e) => bad(e),
            },
            Err(e) => bad(e),
        },
        (Method::POST, ["phone", "link-code"]) => match serde_json::from_slice::<Code>(&body) {
            Ok(c) => match world.lock().await.enter_code(&c.code) {
                Ok(()) => reply(StatusCode::OK, json!({})),
                Err(e) => bad(e),
            },
            Err(e) => bad(e),
        },
        (Method::POST, ["contacts", who, "messages"]) => {
            let parsed = serde_json::from_slice::<Send>(&body)
                .map_err(|e| e.to_string())
                .and_then(|s| Addressing::parse(s.addressing.as_deref()).map(|a| (s, a)));
            match parsed {
                Ok((s, addressing)) => {
                    let mut w = world.lock().await;
                    let (media, caption) = (s.media.as_deref(), s.caption.as_deref());
                    let sent = if s.undecryptable && addressing != Addressing::Pn {
                        Err(
                            "contact: \"undecryptable\" is modelled for \"pn\" addressing only"
                                .into(),
                        )
                    } else if s.undecryptable {
                        let always = s.stays_undecryptable;
                        w.contact_send_undecryptable(
                            who,
                            &s.text,
                            (media, caption),
                            always,
                            now_secs(),
                        )
                        .await
                    } else {
                        w.contact_send_with(who, &s.text, media, caption, addressing, now_secs())
                            .await
                    };
                    match sent {
                        Ok(id) => reply(StatusCode::OK, json!({ "id": id })),
                        Err(e) => bad(e),
                    }
                }
                Err(e) => bad(e),
            }
        }
        (Method::GET, ["contacts", who, "lid"]) => {
            // The contact exists from then on: the server maps its LID back to its number.
            let known = world.lock().await.contact_mut(who).is_some();
            match lid_jid_of(who) {
                Some(lid) if known => reply(StatusCode::OK, json!({ "lid": lid })),
                _ => bad("contact: not an E.164 number (or too many contacts)"),
            }
        }
        (Method::GET, ["contacts", who, "messages"]) => {
            // Each entry as before, plus `devices` / `own_devices` (`devices.rs`).
            let inbox = world.lock().await.deliveries(who);
            reply(StatusCode::OK, json!(inbox))
        }
        (Method::POST, ["groups"]) => match serde_json::from_slice::<NewGroup>(&body) {
            Ok(g) => match super::groups::GroupAddressing::parse(g.addressing.as_deref()) {
                Ok(addressing) => {
                    match world.lock().await.group_create(
                        &g.subject,
                        &g.members,
                        addressing,
                        now_secs(),
                    ) {
                        Ok(jid) => reply(StatusCode::OK, json!({ "jid": jid })),
                        Err(e) => bad(e),
                    }
                }
                Err(e) => bad(e),
            },
            Err(e) => bad(e),
        },
        (Method::GET, ["groups"]) => reply(StatusCode::OK, world.lock().await.groups_json()),
        (Method::POST, ["groups", jid, "messages"]) => {
            match serde_json::from_slice::<super::groups::MemberSend>(&body) {
                Ok(m) => match world
                    .lock()
                    .await
                    .group_member_send(jid, &m, now_secs())
                    .await
                {
                    Ok(id) => reply(StatusCode::OK, json!({ "id": id })),
                    Err(e) => bad(e),
                },
                Err(e) => bad(e),
            }
        }
        (Method::GET, ["groups", jid, "messages"]) => {
            match world.lock().await.group_deliveries(jid) {
                Ok(d) => reply(StatusCode::OK, json!(d)),
                Err(e) => bad(e),
            }
        }
        (Method::POST, ["groups", jid, "members"]) => {
            match serde_json::from_slice::<super::group_iq::MemberChange>(&body) {
                Ok(c) => match world.lock().await.group_members(jid, &c, now_secs()) {
                    Ok(()) => reply(StatusCode::OK, json!({})),
                    Err(e) => bad(e),
                },
                Err(e) => bad(e),
            }
        }
        (Method::GET, ["sw.js"]) => super::login::sw_js_response(world.lock().await.sw_js()),
        (Method::GET, ["version"]) => reply(StatusCode::OK, world.lock().await.version_json()),
        (Method::POST, ["version"]) => match serde_json::from_slice::<VersionCheck>(&body) {
            Ok(v) => {
                let parse = |x: &Option<serde_json::Value>| {
                    x.as_ref().map(super::login::parse_version).transpose()
                };
                match (parse(&v.min), parse(&v.serve)) {
                    (Ok(min), Ok(serve)) => {
                        world.lock().await.require_version(min, serve);
                        reply(StatusCode::OK, json!({}))
                    }
                    (Err(e), _) | (_, Err(e)) => bad(e),
                }
            }
            Err(e) => bad(e),
        },
        (Method::POST, ["contacts", who, "devices"]) => {
            match serde_json::from_slice::<DeviceCount>(&body) {
                Ok(d) => match world
                    .lock()
                    .await
                    .set_contact_devices(who, d.count, d.notify.unwrap_or(true), now_secs())
                    .await
                {
                    Ok(ids) => reply(StatusCode::OK, json!({ "devices": ids })),
                    Err(e) => bad(e),
                },
                Err(e) => bad(e),
            }
        }
        (Method::POST, ["faults"]) => match serde_json::from_slice::<Fault>(&body) {
            Ok(f) if f.kind == "login-failure" => {
                match world.lock().await.login_failure(f.code, f.expire, f.count) {
                    Ok(()) => reply(StatusCode::OK, json!({})),
                    Err(e) => bad(e),
                }
            }
            Ok(f) => {
                match world
                    .lock()
                    .await
                    .fault_with(&f.kind, f.code, f.count, f.contact.as_deref())
                {
                    Ok(()) => reply(StatusCode::OK, json!({})),
                    Err(e) => bad(e),
                }
            }
            Err(e) => bad(e),
        },
        _ => reply(StatusCode::NOT_FOUND, json!({ "error": "no such route" })),
    };
    Ok(resp)
}
