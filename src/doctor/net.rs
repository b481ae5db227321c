//! The network as the service meets it: DNS, a TCP connection and the TLS handshake to WhatsApp's
//! and Telegram's endpoints (each step timed, each with its own deadline), and Telegram's `getMe`
//! with the configured token. Every answer's `Date` header is kept as a reading of our clock
//! ([`super::clock`]). Sends nothing but a `HEAD` and `getMe`; never logs a token (the getMe URL
//! holds it, so no URL is ever printed).

use super::Check;
use super::clock::{self, Reading};
use crate::config::Secret;
use crate::http::{HttpClient, HttpError};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A resolver that has not answered within this is broken for the service (glibc gives one try
/// 5 s too).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP connect, over every address the name resolved to.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// The TLS handshake: two round trips and a certificate check.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// The answer to the `HEAD` that reads the server's clock; optional, so short.
pub const DATE_TIMEOUT: Duration = Duration::from_secs(3);
/// The answer head read for its `Date`: servers send well under 8 KiB of headers.
const MAX_HEAD: usize = 8 * 1024;
/// The whole `getMe` request (it is answered at once by a healthy Bot API).
pub const TELEGRAM_TIMEOUT: Duration = Duration::from_secs(10);
/// `getMe`'s answer is a few hundred bytes.
const MAX_ME_BODY: usize = 64 * 1024;

/// Where a connection attempt stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Url,
    Dns,
    Tcp,
    Tls,
}

/// One endpoint reached (or not), step by step.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// `host:port`.
    pub target: String,
    pub host: String,
    pub tls: bool,
    pub dns_ms: Option<u64>,
    pub tcp_ms: Option<u64>,
    pub tls_ms: Option<u64>,
    pub failed: Option<(Step, String)>,
    /// The server's clock, from a `HEAD` after the handshake (when asked for and answered).
    pub date: Option<Reading>,
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Resolves, connects and (for `https://` and `wss://`) shakes hands with `url`'s host; with
/// `ask_date`, then sends `HEAD <path>` and reads the answer's `Date`. Each step has its deadline.
pub async fn reach(url: &str, ask_date: bool) -> Reach {
    let mut r = Reach::default();
    let parsed = url.parse::<http::Uri>().ok();
    let parts = parsed.as_ref().and_then(|u| {
        let tls = match u.scheme_str()? {
            "https" | "wss" => true,
            "http" | "ws" => false,
            _ => return None,
        };
        let host = u.host()?.trim_start_matches('[').trim_end_matches(']');
        let port = u.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Some((host.to_string(), port, tls, u.path().to_string()))
    });
    let Some((host, port, tls, path)) = parts else {
        r.failed = Some((Step::Url, format!("`{url}` is not a usable URL")));
        return r;
    };
    r.target = format!("{host}:{port}");
    r.host = host.clone();
    r.tls = tls;

    let t = Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                r.failed = Some((Step::Dns, e.to_string()));
                return r;
            }
            Err(_) => {
                r.failed = Some((
                    Step::Dns,
                    format!("no answer within {} s", DNS_TIMEOUT.as_secs()),
                ));
                return r;
            }
        };
    r.dns_ms = Some(ms(t));

    let t = Instant::now();
    let connect = async {
        let mut last = String::from("the name resolved to no address");
        for a in &addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        Err(last)
    };
    let tcp = match tokio::time::timeout(TCP_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.failed = Some((Step::Tcp, e));
            return r;
        }
        Err(_) => {
            r.failed = Some((
                Step::Tcp,
                format!("no connection within {} s", TCP_TIMEOUT.as_secs()),
            ));
            return r;
        }
    };
    r.tcp_ms = Some(ms(t));

    if !tls {
        if ask_date {
            r.date = head_date(tcp, &host, &path).await;
        }
        return r;
    }
    let t = Instant::now();
    let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => {
            r.failed = Some((Step::Tls, format!("`{host}` is not a server name: {e}")));
            return r;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(crate::http::tls_config());
    match tokio::time::timeout(TLS_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => {
            r.tls_ms = Some(ms(t));
            if ask_date {
                r.date = head_date(stream, &host, &path).await;
            }
        }
        Ok(Err(e)) => r.failed = Some((Step::Tls, e.to_string())),
        Err(_) => {
            r.failed = Some((
                Step::Tls,
                format!("no handshake within {} s", TLS_TIMEOUT.as_secs()),
            ))
        }
    }
    r
}

/// `HEAD path` on an open connection; the `Date` of the answer as a clock reading.
async fn head_date<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
) -> Option<Reading> {
    let path = if path.is_empty() { "/" } else { path };
    let ask = async {
        let req = format!("HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some((head, SystemTime::now()))
    };
    let (head, at) = tokio::time::timeout(DATE_TIMEOUT, ask).await.ok()??;
    let text = String::from_utf8_lossy(&head);
    let date = text.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("date").then_some(v)
    })?;
    clock::reading(host, date, at)
}

/// The line for an endpoint: `name` is the check's name, `what` the service ("WhatsApp").
pub fn reach_check(name: &str, what: &str, r: &Reach) -> Check {
    let Some((step, e)) = &r.failed else {
        let steps = [("DNS", r.dns_ms), ("TCP", r.tcp_ms), ("TLS", r.tls_ms)];
        let said: Vec<String> = steps
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {v} ms")))
            .collect();
        let plain = if r.tls {
            ""
        } else {
            " (no TLS: plain ws/http)"
        };
        let total = r.dns_ms.unwrap_or(0) + r.tcp_ms.unwrap_or(0) + r.tls_ms.unwrap_or(0);
        return Check::ok(
            name,
            format!("{what} at {}: {}{plain}", r.target, said.join(", ")),
        )
        .took(total);
    };
    let (summary, fix) = match step {
        Step::Url => (e.clone(), "correct the URL in the config".to_string()),
        Step::Dns => (
            format!("cannot resolve {} ({e})", r.host),
            "DNS does not work on this box: is the network up (ip addr)? check the resolver \
             (resolvectl status, or /etc/resolv.conf)"
                .to_string(),
        ),
        Step::Tcp => (
            format!("no TCP connection to {} ({e})", r.target),
            format!(
                "check the route (ip route) and that outbound connections to port {} are \
                 allowed by every firewall on the way",
                r.target.rsplit(':').next().unwrap_or("443")
            ),
        ),
        Step::Tls => {
            let fix = if clock::is_certificate_time_error(e) {
                "the certificate's dates do not fit this box's clock: set the time (see the clock \
                 line)"
                    .to_string()
            } else {
                "something between this box and the server answers TLS in its place (a proxy, a \
                 captive portal, a filtering firewall?): try another network"
                    .to_string()
            };
            (
                format!("the TLS handshake with {} failed ({e})", r.host),
                fix,
            )
        }
    };
    Check::fail(name, format!("{what}: {summary}"), fix)
}

/// What `getMe` said.
#[derive(Debug, Clone)]
pub struct Me {
    pub check: Check,
    pub date: Option<Reading>,
    /// A TLS failure that blamed a certificate's dates.
    pub certificate_time: Option<String>,
}

/// Telegram's `getMe` with the configured token: is the token accepted, and whose bot is it.
/// `token_file` is named in the fix when the token is refused.
pub async fn telegram_me(
    http: &HttpClient,
    api_root: &str,
    token: &Secret,
    token_file: Option<&str>,
) -> Me {
    let name = super::NAME_TELEGRAM;
    let host = api_root
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| api_root.to_string());
    let url = format!(
        "{}/bot{}/getMe",
        api_root.trim_end_matches('/'),
        token.expose()
    );
    let failed = |check: Check| Me {
        check,
        date: None,
        certificate_time: None,
    };
    let Ok(req) = http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new()))
    else {
        return failed(Check::fail(
            name,
            "the token cannot be part of a URL (spaces or control characters?)",
            "copy the token again from @BotFather, alone on the first line of its file",
        ));
    };
    let t = Instant::now();
    let resp = http.request(req, TELEGRAM_TIMEOUT, MAX_ME_BODY).await;
    let took = ms(t);
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let words = match &e {
                HttpError::Timeout => format!("no answer within {} s", TELEGRAM_TIMEOUT.as_secs()),
                // Never the URL: it holds the token.
                other => other.to_string().replace(token.expose(), "<token>"),
            };
            let mut me = failed(
                Check::fail(
                    name,
                    format!("getMe did not reach {host}: {words}"),
                    "see the telegram-net line: the Bot API must be reachable",
                )
                .took(took),
            );
            if clock::is_certificate_time_error(&words) {
                me.certificate_time = Some(words);
            }
            return me;
        }
    };
    let date = resp
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|d| clock::reading(&host, d, SystemTime::now()));
    let status = resp.status().as_u16();
    let body: Option<serde_json::Value> = serde_json::from_slice(resp.body()).ok();
    let description = body
        .as_ref()
        .and_then(|b| b.get("description"))
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .to_string();
    let where_ = token_file
        .map(|f| format!("into {f} (alone on the first line, mode 0600)"))
        .unwrap_or_else(|| "where token_env points".into());
    let check = match status {
        200 => {
            let user = body
                .as_ref()
                .and_then(|b| b.pointer("/result/username"))
                .and_then(|u| u.as_str());
            match user {
                Some(u) => Check::ok(name, format!("the token is accepted: this is @{u}")),
                None => Check::warn(
                    name,
                    format!("{host} answered getMe without a bot's username"),
                    "is api_root really a Telegram Bot API server?",
                ),
            }
        }
        401 | 404 => Check::fail(
            name,
            format!("Telegram refused the bot token ({status} {description})"),
            format!(
                "the token is wrong or was revoked: copy it again from @BotFather (/mybots → your \
                 bot → API Token) {where_}, then restart the service"
            ),
        ),
        _ => Check::fail(
            name,
            format!("getMe answered {status} {description}"),
            "try again later; if it persists, see https://t.me/BotNews or check api_root",
        ),
    }
    .took(took);
    Me {
        check,
        date,
        certificate_time: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    #[tokio::test]
    async fn each_step_is_timed_and_a_failure_says_where_it_stopped() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // A plain server that answers any request with a Date.
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n")
                .await
                .unwrap();
        });
        let r = reach(&format!("ws://{addr}/ws/chat"), true).await;
        assert!(r.failed.is_none(), "{r:?}");
        assert!(r.dns_ms.is_some() && r.tcp_ms.is_some() && r.tls_ms.is_none());
        // 1994: this box is decades ahead of that server.
        assert!(r.date.as_ref().unwrap().offset_s < -30 * 365 * 86_400);
        let c = reach_check("whatsapp-net", "WhatsApp", &r);
        assert_eq!(c.level, Level::Ok);
        assert!(c.summary.contains("no TLS"), "{}", c.summary);

        // Nothing listens there: TCP fails, with the fix.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = reach(&format!("https://{closed}/"), false).await;
        assert_eq!(r.failed.as_ref().unwrap().0, Step::Tcp, "{r:?}");
        let c = reach_check("telegram-net", "Telegram", &r);
        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("port"));

        let r = reach("ftp://example.invalid/", false).await;
        assert_eq!(r.failed.unwrap().0, Step::Url);
    }
}
