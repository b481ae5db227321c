//! The network as the service meets it: WhatsApp's endpoint reached with a `HEAD` (DNS, TCP and
//! the TLS handshake, timed), Telegram's with `getMe` and the configured token (the same, plus:
//! is the token accepted). Both go through the service's own HTTP client ([`crate::http`]: its
//! resolver, its TLS roots), and every answer's `Date` header is kept as a reading of our clock
//! ([`super::clock`]). Never prints a token (the getMe URL holds it, so no URL is printed).

use super::clock::{self, Reading};
use super::{Check, NAME_TELEGRAM};
use crate::config::Secret;
use crate::http::{HttpClient, HttpError};
use std::time::{Instant, SystemTime};

/// One endpoint's whole check: name lookup, TCP, TLS and an answer. The client's own TCP connect
/// deadline is 10 s; a healthy endpoint answers in well under a second.
pub const ENDPOINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A `HEAD` answer, `getMe`'s or `/healthz`'s: a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// One endpoint reached (or not).
#[derive(Debug)]
pub struct Reach {
    /// `host[:port]` of the URL.
    pub target: String,
    pub tls: bool,
    pub ms: u64,
    /// Why no connection was made (DNS, TCP or TLS), in the client's words.
    pub failed: Option<HttpError>,
    /// The server's clock, when it answered with a `Date`.
    pub date: Option<Reading>,
}

/// The request for `url` (`ws://` and `wss://` are asked over `http://` and `https://`, as the
/// WebSocket handshake is).
fn request(
    url: &str,
    method: http::Method,
) -> Option<(
    http::Request<http_body_util::Full<bytes::Bytes>>,
    String,
    bool,
)> {
    let url = url
        .strip_prefix("ws://")
        .map(|r| format!("http://{r}"))
        .or_else(|| url.strip_prefix("wss://").map(|r| format!("https://{r}")))
        .unwrap_or_else(|| url.to_string());
    let uri = url.parse::<http::Uri>().ok()?;
    let target = uri.authority()?.to_string();
    let tls = uri.scheme_str() == Some("https");
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .ok()?;
    Some((req, target, tls))
}

/// The answer's `Date`, read against our clock now.
fn date_of<B>(resp: &http::Response<B>, source: &str) -> Option<Reading> {
    let d = resp.headers().get(http::header::DATE)?.to_str().ok()?;
    clock::reading(source, d, SystemTime::now())
}

/// The doctor's one HTTP call site: every request of the doctor goes through this one boxed
/// future, so the client's request code is in the binary once for all of them, not once per
/// check (they are not hot).
pub fn fetch<'a>(
    http: &'a HttpClient,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
    timeout: std::time::Duration,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<bytes::Bytes>, HttpError>> + 'a>,
> {
    Box::pin(http.request(req, timeout, MAX_BODY))
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reaches `url` with a `HEAD`. Any answer, or a connection the server closes without one (a
/// WebSocket endpoint may), proves DNS, TCP and TLS; a failure to connect says which failed.
pub async fn reach(http: &HttpClient, url: &str) -> Reach {
    let Some((req, target, tls)) = request(url, http::Method::HEAD) else {
        return Reach {
            target: url.to_string(),
            tls: false,
            ms: 0,
            failed: Some(HttpError::Request(format!("`{url}` is not a usable URL"))),
            date: None,
        };
    };
    let t = Instant::now();
    let answer = fetch(http, req, ENDPOINT_TIMEOUT).await;
    let took = ms(t);
    let (failed, date) = match answer {
        Ok(resp) => (None, date_of(&resp, &target)),
        // Connected, then closed or cut: the handshakes were done.
        Err(HttpError::Transport(_) | HttpError::TooLarge(_)) => (None, None),
        Err(e) => (Some(e), None),
    };
    Reach {
        target,
        tls,
        ms: took,
        failed,
        date,
    }
}

/// A failure to connect in the words of the step that failed, and its fix.
fn connect_words(target: &str, e: &HttpError) -> (String, String) {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    if matches!(e, HttpError::Timeout) {
        return (
            format!(
                "no answer from {target} within {} s",
                ENDPOINT_TIMEOUT.as_secs()
            ),
            "the network or a firewall drops the connection: check the route (ip route) and \
             every firewall on the way"
                .into(),
        );
    }
    if lower.contains("dns error") || lower.contains("lookup") {
        return (
            format!("cannot resolve {host} ({text})"),
            "DNS does not work on this box: is the network up (ip addr)? check the resolver \
             (resolvectl status, or /etc/resolv.conf)"
                .into(),
        );
    }
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        let fix = if clock::is_certificate_time_error(&text) {
            "the certificate's dates do not fit this box's clock: set the time (see the clock line)"
        } else {
            "something between this box and the server answers TLS in its place (a proxy, a \
             captive portal, a filtering firewall?): try another network"
        };
        return (
            format!("the TLS handshake with {host} failed ({text})"),
            fix.into(),
        );
    }
    (
        format!("no TCP connection to {target} ({text})"),
        "check the route (ip route) and that every firewall on the way lets the connection out"
            .into(),
    )
}

/// The line for an endpoint: `name` is the check's name, `what` the service ("WhatsApp").
pub fn reach_check(name: &str, what: &str, r: &Reach) -> Check {
    match &r.failed {
        None => {
            let how = if r.tls {
                "DNS, TCP, TLS"
            } else {
                "DNS, TCP (no TLS: plain ws/http)"
            };
            Check::ok(name, format!("{what} at {}: reached ({how})", r.target)).took(r.ms)
        }
        Some(e) => {
            let (said, fix) = connect_words(&r.target, e);
            Check::fail(name, format!("{what}: {said}"), fix).took(r.ms)
        }
    }
}

/// What `getMe` said: the endpoint's line, the token's line, the server's clock.
#[derive(Debug)]
pub struct Me {
    pub reach: Reach,
    pub check: Check,
}

/// Telegram's `getMe` with the configured token: is the Bot API reachable, is the token accepted,
/// and whose bot is it. `token_file` is named in the fix when the token is refused.
pub async fn telegram_me(
    http: &HttpClient,
    api_root: &str,
    token: &Secret,
    token_file: Option<&str>,
) -> Me {
    let url = format!(
        "{}/bot{}/getMe",
        api_root.trim_end_matches('/'),
        token.expose()
    );
    let Some((req, target, tls)) = request(&url, http::Method::GET) else {
        let mut reach = reach(http, api_root).await;
        reach.date = None;
        return Me {
            reach,
            check: Check::fail(
                NAME_TELEGRAM,
                "the token cannot be part of a URL (spaces or control characters?)",
                "copy the token again from @BotFather, alone on the first line of its file",
            ),
        };
    };
    let t = Instant::now();
    let answer = fetch(http, req, ENDPOINT_TIMEOUT).await;
    let mut reach = Reach {
        target,
        tls,
        ms: ms(t),
        failed: None,
        date: None,
    };
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            // Never the URL: it holds the token.
            let scrub = |s: String| s.replace(token.expose(), "<token>");
            let (failed, words) = match e {
                HttpError::Connect(t) => (Some(HttpError::Connect(scrub(t))), None),
                HttpError::Timeout => (Some(HttpError::Timeout), None),
                other => (
                    None,
                    Some(format!("getMe failed: {}", scrub(other.to_string()))),
                ),
            };
            reach.failed = failed;
            let check = match words {
                Some(w) => Check::fail(NAME_TELEGRAM, w, "try again; if it stays, check api_root"),
                None => Check::warn(
                    NAME_TELEGRAM,
                    "not checked: the Bot API cannot be reached (see telegram-net)",
                    "fix the network first",
                ),
            };
            return Me { reach, check };
        }
    };
    reach.date = date_of(&resp, &reach.target);
    let status = resp.status().as_u16();
    let body: Option<serde_json::Value> = serde_json::from_slice(resp.body()).ok();
    let description = body
        .as_ref()
        .and_then(|b| b.get("description"))
        .and_then(|d| d.as_str())
        .unwrap_or("");
    let where_ = token_file
        .map(|f| format!("into {f} (alone on the first line, mode 0600)"))
        .unwrap_or_else(|| "where token_env points".into());
    let check = match status {
        200 => match body
            .as_ref()
            .and_then(|b| b.pointer("/result/username"))
            .and_then(|u| u.as_str())
        {
            Some(u) => Check::ok(
                NAME_TELEGRAM,
                format!("the token is accepted: this is @{u}"),
            ),
            None => Check::warn(
                NAME_TELEGRAM,
                format!("{} answered getMe without a bot's username", reach.target),
                "is api_root really a Telegram Bot API server?",
            ),
        },
        401 | 404 => Check::fail(
            NAME_TELEGRAM,
            format!("Telegram refused the bot token ({status} {description})"),
            format!(
                "the token is wrong or was revoked: copy it again from @BotFather (/mybots → your \
                 bot → API Token) {where_}, then restart the service"
            ),
        ),
        _ => Check::fail(
            NAME_TELEGRAM,
            format!("getMe answered {status} {description}"),
            "try again later; if it stays, check api_root",
        ),
    }
    .took(reach.ms);
    Me { reach, check }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_answer_or_a_close_after_connecting_is_reached_and_a_refusal_is_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            // First an HTTP answer with a Date from 1994, then a close without any answer.
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                  content-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await
            .unwrap();
            drop(s);
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.read(&mut buf).await;
        });
        let http = HttpClient::new();
        let r = reach(&http, &format!("ws://{addr}/ws/chat")).await;
        assert!(r.failed.is_none(), "{r:?}");
        // 1994: this box is decades ahead of that server.
        assert!(r.date.as_ref().unwrap().offset_s < -30 * 365 * 86_400);
        let c = reach_check("whatsapp-net", "WhatsApp", &r);
        assert_eq!(c.level, Level::Ok);
        assert!(c.summary.contains("no TLS"), "{}", c.summary);
        let r = reach(&http, &format!("ws://{addr}/ws/chat")).await;
        assert!(r.failed.is_none(), "closed after connecting: {r:?}");
        assert!(r.date.is_none());

        // Nothing listens there: no TCP connection, with the fix.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = reach(&http, &format!("https://{closed}/")).await;
        let c = reach_check("telegram-net", "Telegram", &r);
        assert_eq!(c.level, Level::Fail, "{c:?}");
        assert!(c.summary.contains("no TCP connection"), "{c:?}");
        assert!(c.fix.unwrap().contains("firewall"));
        let r = reach(&http, "wss://no-such-host.invalid/ws/chat").await;
        let c = reach_check("whatsapp-net", "WhatsApp", &r);
        assert!(
            c.summary.contains("cannot resolve no-such-host.invalid"),
            "{c:?}"
        );
        let r = reach(&http, "not a url").await;
        assert_eq!(reach_check("x", "X", &r).level, Level::Fail);
    }
}
