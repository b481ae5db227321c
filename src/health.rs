//! Loopback `/healthz` and `/metrics`, and the `clawbox status` client that reads `/healthz`.
//!
//! Served by the tiny hand-written server in [`crate::httpd`]: GET and HEAD only, one request per
//! connection, a capped request head, a deadline for it, and a cap on concurrent connections. It
//! never reads a request body and never serves anything but the two read-only views of the
//! [`Board`] and the [`Metrics`].

use crate::httpd::{Handler, Limits, Request, Response};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::status::Board;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Largest request head accepted: a `curl` or Prometheus scrape sends a few hundred bytes; 8 KiB is
/// the common server default and keeps a hostile client's cost per connection small.
const MAX_HEAD: usize = 8 * 1024;
/// Concurrent connections served; more get a 503 at once. A health endpoint has one or two readers.
const MAX_CONNECTIONS: usize = 16;
const LIMITS: Limits = Limits {
    max_head: MAX_HEAD,
    // Never reads a body.
    max_body: 0,
    max_connections: MAX_CONNECTIONS,
    always: &[],
    name: "health",
};
/// `clawbox status` gives the daemon this long to answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `/healthz` body `clawbox status` reads: a handful of components is well under 1 KiB.
const MAX_STATUS_BODY: usize = 64 * 1024;

struct Health {
    board: Board,
    metrics: Arc<Metrics>,
}

impl Handler for Health {
    fn handle(&self, req: &Request) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "only GET and HEAD\n").with("allow", "GET, HEAD");
        }
        match req.path.as_str() {
            "/healthz" => healthz(&self.board),
            "/metrics" => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                headers: Vec::new(),
                body: self.metrics.render().into_bytes(),
            },
            _ => Response::text(404, "not found: try /healthz or /metrics\n"),
        }
    }
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown` trips.
pub async fn serve(listener: TcpListener, board: Board, metrics: Arc<Metrics>, shutdown: Shutdown) {
    crate::httpd::serve(
        listener,
        LIMITS,
        Arc::new(Health { board, metrics }),
        shutdown,
    )
    .await
}

fn healthz(board: &Board) -> Response {
    let now = Instant::now();
    let healthy = board.all_healthy();
    let components: Vec<serde_json::Value> = board
        .snapshot()
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "state": r.state.as_str(),
                "detail": r.detail,
                "last_beat_ms_ago": now.saturating_duration_since(r.last_beat).as_millis() as u64,
            })
        })
        .collect();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "components": components,
    });
    Response {
        status: if healthy { 200 } else { 503 },
        content_type: "application/json",
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    }
}

/// `clawbox status`: asks the running daemon's `/healthz` at `addr` and prints one line per
/// component. Returns the exit code: 0 all healthy, 1 degraded, 2 not reachable (or not answering
/// like clawbox).
pub async fn status_command(addr: SocketAddr) -> i32 {
    let unreachable = || {
        eprintln!(
            "clawbox is not running, or not listening on {addr} — check `systemctl status clawbox`"
        );
        2
    };
    let req = http::Request::get(format!("http://{addr}/healthz"))
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Full::new(bytes::Bytes::new()));
    let Ok(req) = req else {
        return unreachable();
    };
    let client = crate::http::HttpClient::new();
    let resp = match client.request(req, STATUS_TIMEOUT, MAX_STATUS_BODY).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, "status request failed");
            return unreachable();
        }
    };
    match render_report(resp.body()) {
        Some((healthy, lines)) => {
            print!("{lines}");
            if healthy { 0 } else { 1 }
        }
        None => {
            eprintln!(
                "{addr} answered HTTP {} but not with clawbox's health report — is another program on that port?",
                resp.status().as_u16()
            );
            2
        }
    }
}

/// Turns a `/healthz` body into (healthy, one line per component), or `None` if it is not one.
fn render_report(body: &[u8]) -> Option<(bool, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let healthy = match v.get("status")?.as_str()? {
        "ok" => true,
        "degraded" => false,
        _ => return None,
    };
    let mut out = String::new();
    for c in v.get("components")?.as_array()? {
        let field = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("");
        let line = format!(
            "{:<12} {:<11} {}",
            field("name"),
            field("state"),
            field("detail")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no components\n");
    }
    Some((healthy, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::httpd::REQUEST_TIMEOUT as HEAD_TIMEOUT;
    use crate::shutdown::ShutdownTrigger;
    use crate::status::State;
    use crate::vocab::ChannelKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(board: Board) -> (SocketAddr, Arc<Metrics>, ShutdownTrigger) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(serve(listener, board, metrics.clone(), shutdown));
        (addr, metrics, trigger)
    }

    /// Sends `raw` and reads the whole answer: (status, head, body).
    async fn ask(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    fn board_with(state: State) -> Board {
        let board = Board::default();
        board.register("telegram", true).set(State::Up, "@mybot");
        board.register("agent", false).set(state, "echo");
        board
    }

    #[tokio::test]
    async fn healthz_is_200_with_the_components_when_all_are_healthy() {
        let (addr, _, _t) = start(board_with(State::Up)).await;
        let (status, head, body) = ask(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok");
        let c = v["components"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["name"], "telegram");
        assert_eq!(c[0]["state"], "up");
        assert_eq!(c[0]["detail"], "@mybot");
        assert!(c[0]["last_beat_ms_ago"].as_u64().unwrap() < 60_000);
        assert_eq!(c[1]["name"], "agent");
    }

    #[tokio::test]
    async fn healthz_is_503_when_degraded_and_http_1_0_works() {
        let (addr, _, _t) = start(board_with(State::Degraded)).await;
        let (status, head, body) = ask(addr, b"GET /healthz?verbose HTTP/1.0\r\n\r\n").await;
        assert_eq!(status, 503);
        assert!(head.contains("content-type: application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["components"][1]["state"], "degraded");
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let (addr, metrics, _t) = start(Board::default()).await;
        Metrics::inc(&metrics.messages_in[ChannelKind::Telegram]);
        let (status, head, body) = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/plain; version=0.0.4"));
        assert!(body.contains("clawbox_messages_in_total{channel=\"telegram\"} 1"));
    }

    #[tokio::test]
    async fn head_has_the_length_but_no_body() {
        let (addr, _, _t) = start(board_with(State::Up)).await;
        let (status, head, body) = ask(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(body.is_empty());
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(len > 20);
    }

    #[tokio::test]
    async fn unknown_paths_methods_and_garbage_are_refused() {
        let (addr, _, _t) = start(Board::default()).await;
        let (status, _, _) = ask(addr, b"GET /admin HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, 404);
        let (status, head, _) = ask(
            addr,
            b"POST /healthz HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
        )
        .await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"));
        let (status, _, _) = ask(addr, b"hello\r\n\r\n").await;
        assert_eq!(status, 400);
        let (status, _, _) = ask(addr, b"GET /healthz HTTP/2.0\r\n\r\n").await;
        assert_eq!(status, 505);
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431() {
        let (addr, _, _t) = start(Board::default()).await;
        let mut raw = b"GET /healthz HTTP/1.1\r\nx-junk: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD + 100));
        raw.extend_from_slice(b"\r\n\r\n");
        let (status, _, _) = ask(addr, &raw).await;
        assert_eq!(status, 431);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_its_head_is_cut_off() {
        let (addr, _, _t) = start(Board::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let n = s.read_to_end(&mut out).await.unwrap();
        assert_eq!(n, 0, "closed without an answer");
        assert!(Instant::now() - t0 >= HEAD_TIMEOUT);
    }

    #[tokio::test]
    async fn connections_over_the_cap_get_503() {
        let (addr, _, _t) = start(board_with(State::Up)).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Each idle connection holds a permit once accepted; accept is in order, so by the time
        // this one is accepted all sixteen are taken. It is answered before it says anything.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        extra.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("connection: close\r\n"));
        // Freeing them lets the next request through.
        drop(idle);
        let mut ok = false;
        for _ in 0..50 {
            if ask(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await.0 == 200 {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "permits came back after the idle clients left");
    }

    #[tokio::test]
    async fn serve_returns_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(serve(
            listener,
            Board::default(),
            Arc::new(Metrics::default()),
            shutdown,
        ));
        trigger.trip();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn status_command_exit_codes() {
        let (addr, _, _t) = start(board_with(State::Up)).await;
        assert_eq!(status_command(addr).await, 0);
        let (addr, _, _t2) = start(board_with(State::NeedsOwner)).await;
        assert_eq!(status_command(addr).await, 1);
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(status_command(closed).await, 2);
    }

    #[test]
    fn the_report_has_one_aligned_line_per_component() {
        let body = br#"{"status":"degraded","components":[
            {"name":"telegram","state":"up","detail":"@mybot","last_beat_ms_ago":3},
            {"name":"whatsapp","state":"needs-owner","detail":"scan the QR","last_beat_ms_ago":9},
            {"name":"agent","state":"off","detail":"","last_beat_ms_ago":0}]}"#;
        let (healthy, text) = render_report(body).unwrap();
        assert!(!healthy);
        assert_eq!(
            text,
            "telegram     up          @mybot\nwhatsapp     needs-owner scan the QR\nagent        off\n"
        );
        assert!(render_report(b"<html>").is_none());
        assert!(render_report(br#"{"status":"fine"}"#).is_none());
    }
}
