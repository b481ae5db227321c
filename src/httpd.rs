//! The tiny HTTP/1.x server both of clawbox's pages run on: the loopback `/healthz` and `/metrics`
//! ([`crate::health`]) and the pairing page ([`crate::web`]).
//!
//! Written by hand (a page of code beats a framework here): one request per connection
//! (`connection: close`), a capped request head with at most [`MAX_HEADERS`] fields, a capped
//! body read only when the server accepts bodies at all (`Content-Length` only; no chunked
//! bodies), one deadline for the whole request, a cap on concurrent connections (more get a 503
//! at once), and a lingering close so an error answer is not lost to a TCP reset. The handler is
//! plain code over an in-memory [`Request`]: it never touches the socket.

use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Header fields accepted in one request: a browser sends about fifteen.
pub const MAX_HEADERS: usize = 64;
/// A client must send its whole request (head and body) within this, or the connection is closed
/// without an answer (slowloris).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Writing the response must finish within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error response the rest of the request is read and discarded for at most this long and
/// this many bytes before closing, so the client gets the response instead of a TCP reset.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 64 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What one server accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request head (request line and header fields).
    pub max_head: usize,
    /// Largest body; 0: bodies are never read (a `Content-Length` is then ignored).
    pub max_body: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Header fields every response of this server carries (security headers).
    pub always: &'static [(&'static str, &'static str)],
    /// For the log lines.
    pub name: &'static str,
}

/// One parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The target's path (before `?`).
    pub path: String,
    /// The target's query (after `?`, without it), empty if none.
    pub query: String,
    /// Header fields: names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (lower case); None if absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// How many times header `name` appears.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// What answers the requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Response;
}

/// Serves `handler` on `listener` until `shutdown` trips.
pub async fn serve(
    listener: TcpListener,
    limits: Limits,
    handler: Arc<dyn Handler>,
    mut shutdown: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Dropped on return: any connection still being served is aborted.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(server = limits.name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Never wait here: one non-blocking write of a short answer, then close.
            let busy = encode(
                &Response::text(503, "too many connections\n"),
                &limits,
                false,
            );
            let _ = stream.try_write(&busy);
            // Swallow what already arrived so the close is a FIN, not a reset that could destroy
            // the answer in flight.
            let mut sink = [0u8; 1024];
            let mut total = 0;
            while total < limits.max_head {
                match stream.try_read(&mut sink) {
                    Ok(n) if n > 0 => total += n,
                    _ => break,
                }
            }
            continue;
        };
        let handler = handler.clone();
        conns.spawn(async move {
            handle(stream, &limits, handler.as_ref()).await;
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, limits: &Limits, handler: &dyn Handler) {
    let read = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream, limits)).await;
    let (resp, head_only) = match read {
        // Too slow, or the client went away: close without a word.
        Err(_) | Ok(Err(_)) | Ok(Ok(Read::Closed)) => return,
        Ok(Ok(Read::Refused(status, why))) => (Response::text(status, why), false),
        Ok(Ok(Read::Complete(req))) => (handler.handle(&req), req.method == "HEAD"),
    };
    let bytes = encode(&resp, limits, head_only);
    let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = stream.shutdown().await;
    // Lingering close: swallow what the client still sends so our close is not a reset.
    let _ = tokio::time::timeout(LINGER_TIMEOUT, async {
        let mut sink = [0u8; 1024];
        let mut total = 0;
        while total < LINGER_MAX {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

enum Read {
    Complete(Request),
    /// Answer with this status and words.
    Refused(u16, &'static str),
    Closed,
}

async fn read_request(stream: &mut TcpStream, limits: &Limits) -> std::io::Result<Read> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_len = loop {
        if let Some(end) = head_end(&buf) {
            if end > limits.max_head {
                return Ok(Read::Refused(431, "request head too large\n"));
            }
            break end;
        }
        if buf.len() > limits.max_head {
            return Ok(Read::Refused(431, "request head too large\n"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Read::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut req = match parse_head(&buf[..head_len]) {
        Ok(r) => r,
        Err((status, why)) => return Ok(Read::Refused(status, why)),
    };
    if limits.max_body == 0 {
        return Ok(Read::Complete(req));
    }
    if req.header("transfer-encoding").is_some() {
        return Ok(Read::Refused(
            411,
            "send the body with a content-length, not chunked\n",
        ));
    }
    let len = match (
        req.header_count("content-length"),
        req.header("content-length"),
    ) {
        (0, _) => 0,
        (1, Some(v)) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Ok(Read::Refused(400, "bad content-length\n")),
        },
        _ => return Ok(Read::Refused(400, "more than one content-length\n")),
    };
    if len > limits.max_body {
        return Ok(Read::Refused(413, "request body too large\n"));
    }
    let mut body = buf[head_len..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Read::Closed);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(Read::Complete(req))
}

/// Where the head ends (after its blank line), accepting bare `\n` line ends as well.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses `METHOD SP TARGET SP VERSION` and the header fields. Errors carry the status to answer.
pub fn parse_head(head: &[u8]) -> Result<Request, (u16, &'static str)> {
    const BAD: (u16, &str) = (400, "bad request\n");
    let text = std::str::from_utf8(head).map_err(|_| BAD)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().ok_or(BAD)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    if method.is_empty()
        || target.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Err(BAD);
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err((505, "HTTP version not supported\n")),
        _ => return Err(BAD),
    }
    let target = target.split('#').next().unwrap_or(target);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        // No obsolete line folding, no space before the colon.
        let (name, value) = l.split_once(':').ok_or(BAD)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(BAD);
        }
        if headers.len() >= MAX_HEADERS {
            return Err((431, "too many header fields\n"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: Vec::new(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The response's bytes; `head_only` for HEAD (the length, no body).
pub fn encode(resp: &Response, limits: &Limits, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in limits.always {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in &resp.headers {
        // A value never carries a line break into the head.
        let v: String = v.chars().filter(|c| !c.is_control()).collect();
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("cache-control: no-store\r\nconnection: close\r\n\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_into_method_path_query_and_headers() {
        let r =
            parse_head(b"GET /live?x=1 HTTP/1.1\r\nHost: Box:8080\r\nX-A:  b \r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/live"));
        assert_eq!(r.query, "x=1");
        assert_eq!(r.header("host"), Some("Box:8080"));
        assert_eq!(r.header("x-a"), Some("b"));
        for bad in [
            &b"hello\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\xff: x\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad).unwrap_err().0, 400, "{bad:?}");
        }
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().0, 505);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x{i}: y\r\n")).collect();
        assert_eq!(
            parse_head(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes())
                .unwrap_err()
                .0,
            431
        );
    }

    #[test]
    fn a_header_value_cannot_split_the_response() {
        let limits = Limits {
            max_head: 1024,
            max_body: 0,
            max_connections: 1,
            always: &[("x-frame-options", "DENY")],
            name: "test",
        };
        let r = Response::text(303, "").with("location", "/\r\nset-cookie: evil=1");
        let text = String::from_utf8(encode(&r, &limits, false)).unwrap();
        assert!(text.contains("location: /set-cookie: evil=1\r\n"), "{text}");
        assert!(text.contains("x-frame-options: DENY\r\n"));
    }
}
