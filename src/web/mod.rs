//! The pairing and status page (`[web] listen`), served by the service on [`crate::httpd`]: the
//! owner links WhatsApp from a browser — the phone whose WhatsApp is being linked included (then
//! with the pairing code) — and sees each channel's state. [`page`] draws it; this file decides
//! who gets what.
//!
//! - **Token**: with `token_file` (required off loopback), nothing but a "needs its token" page is
//!   served without it. `GET /?token=…` swaps the token for a session cookie (`HttpOnly`,
//!   `SameSite=Strict`, random per service start) and redirects to `/` (the token leaves the
//!   address bar); `Authorization: Bearer …` works for scripts.
//! - **Host**: only IP addresses, `localhost` and `[web] hostnames`, on the listening port: a
//!   DNS-rebinding page cannot talk to the service by a name of its own (421).
//! - **No state changes on GET**; the one POST (`/pair`) needs the page's CSRF token (random per
//!   service start, in a hidden field), a form body, and a same-origin `Origin`/`Sec-Fetch-Site`
//!   when the browser sends them; at most one pairing request per [`PAIR_INTERVAL`].
//! - **Bounded**: [`LIMITS`] (head, body, connections, one request per connection, a deadline).
//! - **Headers**: a CSP allowing only this origin's script and style, `X-Frame-Options: DENY`,
//!   `Referrer-Policy: no-referrer`, `X-Content-Type-Options: nosniff`.
//!
//! Never logs the token, the QR payload, the code or the phone number.

pub mod page;

use crate::channel::whatsapp::link::Linker;
use crate::config::{Secret, WebConfig};
use crate::httpd::{Handler, Limits, Request, Response};
use crate::pairing::PairingPublisher;
use crate::shutdown::Shutdown;
use crate::status::Board;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Largest request head: a phone browser sends well under 2 KiB; cookies and all fit in 8.
const MAX_HEAD: usize = 8 * 1024;
/// Largest form body: a CSRF token, a phone number and a button.
const MAX_BODY: usize = 1024;
/// Connections at once; more get a 503. One owner with a page polling every 2 s, another tab.
const MAX_CONNECTIONS: usize = 16;
/// Pairing requests accepted from the page at most this often (WhatsApp rate-limits link
/// attempts; a double click is one).
pub const PAIR_INTERVAL: Duration = Duration::from_secs(5);
/// The session cookie's name.
const COOKIE: &str = "clawbox_session";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub const LIMITS: Limits = Limits {
    max_head: MAX_HEAD,
    max_body: MAX_BODY,
    max_connections: MAX_CONNECTIONS,
    always: &[
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ],
    name: "web",
};

/// The page's server state.
pub struct Web {
    board: Board,
    pairing: PairingPublisher,
    linker: Option<Linker>,
    token: Option<Secret>,
    /// The session cookie's value and the form's CSRF token: random per service start.
    session: String,
    csrf: String,
    /// Names accepted in `Host` besides IP addresses and `localhost`, lower case.
    hostnames: Vec<String>,
    port: u16,
    last_pair: Mutex<Option<Instant>>,
}

/// 32 random bytes as hex.
fn random_hex() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness for the page's tokens".to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `%XX` and `+` decoded (a form field or query value); None if malformed.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of `key` in a `a=b&c=d` string.
fn field(s: &str, key: &str) -> Option<String> {
    s.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| form_decode(v))
}

impl Web {
    pub fn new(
        cfg: &WebConfig,
        port: u16,
        board: Board,
        pairing: PairingPublisher,
        linker: Option<Linker>,
    ) -> Result<Web, String> {
        Ok(Web {
            board,
            pairing,
            linker,
            token: cfg.token.clone(),
            session: random_hex()?,
            csrf: random_hex()?,
            hostnames: cfg
                .hostnames
                .iter()
                .map(|h| h.get_ref().to_ascii_lowercase())
                .collect(),
            port,
            last_pair: Mutex::new(None),
        })
    }

    /// Whether `Host` names this server: an IP address, `localhost` or a configured name, on our
    /// port (or without one for port 80).
    fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let (name, port) = if let Some(rest) = host.strip_prefix('[') {
            // [v6]:port
            let Some((ip, after)) = rest.split_once(']') else {
                return false;
            };
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            (ip.to_string(), after.strip_prefix(':'))
        } else {
            match host.rsplit_once(':') {
                Some((n, p)) => (n.to_string(), Some(p)),
                None => (host.clone(), None),
            }
        };
        let port_ok = match port {
            Some(p) => p.parse::<u16>().ok() == Some(self.port),
            None => self.port == 80,
        };
        let name_ok = host.starts_with('[')
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || self.hostnames.contains(&name);
        port_ok && name_ok
    }

    /// Whether the request carries the token (or the session it was swapped for).
    fn authorized(&self, req: &Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if let Some(b) = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return same(b.trim(), token.expose());
        }
        req.headers
            .iter()
            .filter(|(k, _)| k == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && same(v, &self.session))
    }

    fn view_rows(&self) -> Vec<crate::status::Row> {
        self.board
            .snapshot()
            .into_iter()
            .filter(|r| !r.internal)
            .collect()
    }

    fn html(&self, status: u16, notice: Option<&str>) -> Response {
        let rows = self.view_rows();
        let pairing = self.pairing.current();
        let v = page::View {
            pairing: &pairing,
            rows: &rows,
            whatsapp: self.linker.is_some(),
        };
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: page::page(&v, &self.csrf, notice).into_bytes(),
        }
    }

    fn live(&self) -> Response {
        let rows = self.view_rows();
        let pairing = self.pairing.current();
        let v = page::View {
            pairing: &pairing,
            rows: &rows,
            whatsapp: self.linker.is_some(),
        };
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: page::live(&v).into_bytes(),
        }
    }

    /// POST /pair: the checks, then the request to the channel.
    fn pair(&self, req: &Request, host: &str) -> Response {
        // Cross-site forms and scripts: the browser says where the request comes from.
        if let Some(origin) = req.header("origin") {
            if origin != format!("http://{host}") {
                return Response::text(403, "cross-origin request refused\n");
            }
        }
        if let Some(site) = req.header("sec-fetch-site") {
            if site != "same-origin" && site != "none" {
                return Response::text(403, "cross-site request refused\n");
            }
        }
        let form_type = req
            .header("content-type")
            .and_then(|v| v.split(';').next())
            .map(str::trim);
        if form_type != Some("application/x-www-form-urlencoded") {
            return Response::text(415, "send the page's form\n");
        }
        let Ok(body) = std::str::from_utf8(&req.body) else {
            return Response::text(400, "bad form\n");
        };
        if !field(body, "csrf").is_some_and(|t| same(&t, &self.csrf)) {
            return Response::text(403, "the form's token is missing or old: reload the page\n");
        }
        let Some(linker) = &self.linker else {
            return self.html(
                409,
                Some("WhatsApp is not enabled in this service's config."),
            );
        };
        let phone = match field(body, "how").as_deref() {
            Some("qr") => None,
            _ => {
                let raw = field(body, "phone").unwrap_or_default();
                let p: String = raw
                    .chars()
                    .filter(|c| !c.is_whitespace() && !"-()/.".contains(*c))
                    .collect();
                if !crate::config::check::is_e164(&p) {
                    return self.html(
                        400,
                        Some("Write the number with + and the country code, e.g. +491701234567."),
                    );
                }
                Some(p)
            }
        };
        {
            let mut last = self.last_pair.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|t| now.saturating_duration_since(t) < PAIR_INTERVAL) {
                return self.html(429, Some("Just asked: wait a few seconds."));
            }
            *last = Some(now);
        }
        if let Err(e) = linker.pair_later(phone) {
            return self.html(503, Some(&e));
        }
        tracing::info!("pairing requested from the page");
        Response::text(303, "").with("location", "/")
    }
}

impl Handler for Web {
    fn handle(&self, req: &Request) -> Response {
        let host = match (req.header_count("host"), req.header("host")) {
            (1, Some(h)) => h.to_string(),
            _ => return Response::text(400, "one Host header, please\n"),
        };
        if !self.host_ok(&host) {
            return Response::text(
                421,
                "unknown host name: add it to [web] hostnames, or use the address\n",
            );
        }
        let get = req.method == "GET" || req.method == "HEAD";
        // The token swapped for the session: only for the page itself, then the token leaves the
        // address bar.
        if get && req.path == "/" {
            if let (Some(token), Some(given)) = (&self.token, field(&req.query, "token")) {
                if same(&given, token.expose()) {
                    return Response::text(303, "").with("location", "/").with(
                        "set-cookie",
                        format!(
                            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                            self.session
                        ),
                    );
                }
            }
        }
        if !self.authorized(req) {
            return Response {
                status: 401,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: page::locked().into_bytes(),
            };
        }
        match (req.method.as_str(), req.path.as_str()) {
            (_, "/") if get => self.html(200, None),
            (_, "/live") if get => self.live(),
            (_, "/app.js") if get => Response {
                status: 200,
                content_type: "text/javascript; charset=utf-8",
                headers: Vec::new(),
                body: page::SCRIPT.as_bytes().to_vec(),
            },
            (_, "/app.css") if get => Response {
                status: 200,
                content_type: "text/css; charset=utf-8",
                headers: Vec::new(),
                body: page::STYLE.as_bytes().to_vec(),
            },
            ("POST", "/pair") => self.pair(req, &host),
            (_, "/" | "/live" | "/app.js" | "/app.css") => {
                Response::text(405, "only GET and HEAD\n").with("allow", "GET, HEAD")
            }
            (_, "/pair") => Response::text(405, "only POST\n").with("allow", "POST"),
            _ => Response::text(404, "not found\n"),
        }
    }
}

/// Binds `[web] listen`; errors in plain words.
pub async fn bind(cfg: &WebConfig) -> Result<Option<(TcpListener, SocketAddr)>, String> {
    let Some(listen) = &cfg.listen else {
        return Ok(None);
    };
    let l = TcpListener::bind(listen.get_ref())
        .await
        .map_err(|e| format!("cannot serve the page on {}: {e}", listen.get_ref()))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    Ok(Some((l, addr)))
}

/// Serves the page until `shutdown` trips.
pub async fn serve(listener: TcpListener, web: Web, shutdown: Shutdown) {
    crate::httpd::serve(listener, LIMITS, Arc::new(web), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(token: Option<&str>) -> (Web, crate::channel::whatsapp::link::Asks) {
        let (pairing, _) = PairingPublisher::new();
        let cfg = WebConfig {
            hostnames: vec![toml::Spanned::new(0..0, "clawbox.local".into())],
            token: token.map(|t| Secret::new(t.into())),
            ..WebConfig::default()
        };
        let (linker, asks) = Linker::new();
        let w = Web::new(&cfg, 8080, Board::default(), pairing, Some(linker)).unwrap();
        (w, asks)
    }

    fn req(raw: &str) -> Request {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut r = crate::httpd::parse_head(format!("{head}\r\n\r\n").as_bytes()).unwrap();
        r.body = body.as_bytes().to_vec();
        r
    }

    #[test]
    fn host_names_are_addresses_localhost_or_configured_on_our_port() {
        let (w, _asks) = web(None);
        for ok in [
            "192.168.1.20:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "clawbox.local:8080",
            "CLAWBOX.LOCAL:8080",
        ] {
            assert!(w.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "clawbox.local",
            "127.0.0.1:80",
            "[::1]",
            "[zz]:8080",
            "",
            "1.2.3.4.evil.example:8080",
        ] {
            assert!(!w.host_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_is_swapped_for_a_session_cookie_and_a_wrong_one_gets_nothing() {
        let (w, _asks) = web(Some("0123456789abcdef0123"));
        let r = w.handle(&req(
            "GET /?token=wrong HTTP/1.1\r\nHost: 10.0.0.2:8080\r\n\r\n",
        ));
        assert_eq!(r.status, 401);
        let r = w.handle(&req(
            "GET /?token=0123456789abcdef0123 HTTP/1.1\r\nHost: 10.0.0.2:8080\r\n\r\n",
        ));
        assert_eq!(r.status, 303);
        let cookie = r
            .headers
            .iter()
            .find(|(k, _)| *k == "set-cookie")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("0123456789abcdef0123"), "not the token");
        let session = cookie.split(';').next().unwrap();
        let r = w.handle(&req(&format!(
            "GET /live HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nCookie: a=b; {session}\r\n\r\n"
        )));
        assert_eq!(r.status, 200);
        let r = w.handle(&req(
            "GET /live HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nAuthorization: Bearer 0123456789abcdef0123\r\n\r\n",
        ));
        assert_eq!(r.status, 200);
    }

    #[test]
    fn a_post_needs_the_form_token_and_the_same_origin() {
        let (w, _asks) = web(None);
        let form = |extra: &str, body: &str| {
            req(&format!(
                "POST /pair HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: \
                 application/x-www-form-urlencoded\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        let good = format!("csrf={}&how=qr&phone=", w.csrf);
        assert_eq!(w.handle(&form("", "how=qr")).status, 403);
        assert_eq!(w.handle(&form("", "csrf=nope&how=qr")).status, 403);
        assert_eq!(
            w.handle(&form("Origin: http://evil.example\r\n", &good))
                .status,
            403
        );
        assert_eq!(
            w.handle(&form("Sec-Fetch-Site: cross-site\r\n", &good))
                .status,
            403
        );
        let ok = w.handle(&form(
            "Origin: http://127.0.0.1:8080\r\nSec-Fetch-Site: same-origin\r\n",
            &good,
        ));
        assert_eq!(ok.status, 303);
        // Within the interval: not asked again.
        assert_eq!(w.handle(&form("", &good)).status, 429);
        let bad_phone = format!("csrf={}&how=code&phone=0170", w.csrf);
        assert_eq!(w.handle(&form("", &bad_phone)).status, 400);
        // GET never pairs.
        assert_eq!(
            w.handle(&req("GET /pair HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"))
                .status,
            405
        );
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(field("a=1&phone=%2B49+170", "phone").unwrap(), "+49 170");
        assert_eq!(field("phone=%zz", "phone"), None);
        assert_eq!(field("x=1", "phone"), None);
    }
}
