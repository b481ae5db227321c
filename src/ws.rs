//! The one WebSocket connect, shared by the WhatsApp transport
//! ([`crate::channel::whatsapp::transport`]) and the OpenClaw gateway link
//! ([`crate::agent::openclaw`]): a ws:// or wss:// URL → TCP (no Nagle) → for wss:// rustls with
//! the binary's one client config ([`crate::http::tls_config`]: ring, webpki roots) → the upgrade
//! with the caller's headers and frame/message limits, all within
//! [`crate::retry::CONNECT_TIMEOUT`].
//!
//! Each caller keeps its own specifics (an `Origin` header, its limits, the words of its errors);
//! this knows nothing of what flows over the socket and never logs.

use crate::retry::CONNECT_TIMEOUT;
use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// An open WebSocket, plain or over TLS.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A closing handshake (on disconnect or shutdown) must not hold anything up.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where to connect and how.
#[derive(Debug, Clone)]
pub struct Dial<'a> {
    /// `ws://` or `wss://` URL.
    pub url: &'a str,
    /// Who is at the other end, for the error words ("WhatsApp server", "gateway").
    pub peer: &'static str,
    /// An `Origin` header for the upgrade, when the server wants one.
    pub origin: Option<&'static str>,
    /// The caller's buffer, frame and message limits.
    pub limits: WebSocketConfig,
}

/// Why a connect failed. Its `Display` says so in plain words, naming the URL (never a secret:
/// neither transport puts one in its URL).
#[derive(Debug)]
pub enum ConnectError {
    /// The URL is not a usable ws:// or wss:// URL: a configuration problem.
    Url {
        url: String,
        peer: &'static str,
        why: String,
    },
    /// The TCP connect failed (refused, unreachable, name not resolved).
    Tcp { url: String, error: std::io::Error },
    /// The TLS handshake failed.
    Tls { url: String, why: String },
    /// The server answered plain HTTP instead of upgrading: the wrong port or path.
    NotWebSocket { url: String, status: u16 },
    /// No connection within [`CONNECT_TIMEOUT`].
    Timeout { url: String },
    /// Anything else the upgrade can fail with.
    Other { url: String, why: String },
}

impl ConnectError {
    /// The TCP connect was refused: nothing listens there.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Tcp { error, .. }
            if error.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Url { url, peer, why } => write!(f, "bad {peer} URL {url}: {why}"),
            ConnectError::Tcp { url, error } => write!(f, "could not connect to {url}: {error}"),
            ConnectError::Tls { url, why } => write!(f, "TLS handshake with {url} failed: {why}"),
            ConnectError::NotWebSocket { url, status } => write!(
                f,
                "{url} answered HTTP {status} instead of a WebSocket upgrade"
            ),
            ConnectError::Timeout { url } => write!(
                f,
                "no connection to {url} within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
            ConnectError::Other { url, why } => {
                write!(f, "could not open the WebSocket to {url}: {why}")
            }
        }
    }
}

impl std::error::Error for ConnectError {}

/// Opens the WebSocket: TCP (no Nagle), TLS for wss://, the upgrade with `dial.origin` and
/// `dial.limits`, within [`CONNECT_TIMEOUT`].
pub async fn connect(dial: &Dial<'_>) -> Result<Ws, ConnectError> {
    let url = dial.url;
    let fut = async {
        let (host, port) = host_port(url).map_err(|why| ConnectError::Url {
            url: url.to_string(),
            peer: dial.peer,
            why,
        })?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|error| ConnectError::Tcp {
                url: url.to_string(),
                error,
            })?;
        tcp.set_nodelay(true).map_err(|error| ConnectError::Tcp {
            url: url.to_string(),
            error,
        })?;
        let mut req = url.into_client_request().map_err(|e| classify(dial, e))?;
        if let Some(origin) = dial.origin {
            req.headers_mut()
                .insert(http::header::ORIGIN, http::HeaderValue::from_static(origin));
        }
        let connector = if url.starts_with("wss://") {
            Connector::Rustls(crate::http::tls_config())
        } else {
            Connector::Plain
        };
        let (ws, _resp) = tokio_tungstenite::client_async_tls_with_config(
            req,
            tcp,
            Some(dial.limits),
            Some(connector),
        )
        .await
        .map_err(|e| classify(dial, e))?;
        Ok(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| ConnectError::Timeout {
            url: url.to_string(),
        })?
}

/// tungstenite's error as a [`ConnectError`].
fn classify(dial: &Dial<'_>, e: tungstenite::Error) -> ConnectError {
    use tungstenite::Error as E;
    let url = dial.url.to_string();
    match e {
        E::Io(error) => ConnectError::Tcp { url, error },
        E::Tls(t) => ConnectError::Tls {
            url,
            why: t.to_string(),
        },
        E::Url(u) => ConnectError::Url {
            url,
            peer: dial.peer,
            why: u.to_string(),
        },
        E::Http(resp) => ConnectError::NotWebSocket {
            url,
            status: resp.status().as_u16(),
        },
        other => ConnectError::Other {
            url,
            why: other.to_string(),
        },
    }
}

/// host:port of a ws:// or wss:// URL (the port defaults to 80 or 443; an IPv6 host in brackets).
fn host_port(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("wss://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (r, 80)
    } else {
        return Err("not a ws:// or wss:// URL".into());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err("no host".into());
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or("bad IPv6 host")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None => default_port,
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), p.parse().map_err(|_| "bad port")?)),
        None => Ok((authority.to_string(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn dial(url: &str) -> Dial<'_> {
        Dial {
            url,
            peer: "test server",
            origin: None,
            limits: WebSocketConfig::default(),
        }
    }

    #[test]
    fn host_and_port_from_urls() {
        assert_eq!(
            host_port("wss://web.whatsapp.com/ws/chat").unwrap(),
            ("web.whatsapp.com".into(), 443)
        );
        assert_eq!(
            host_port("ws://127.0.0.1:5555/ws/chat").unwrap(),
            ("127.0.0.1".into(), 5555)
        );
        assert_eq!(host_port("ws://h").unwrap(), ("h".into(), 80));
        assert_eq!(host_port("ws://[::1]:7/x").unwrap(), ("::1".into(), 7));
        assert!(host_port("http://x").is_err());
        assert!(host_port("ws:///x").is_err());
        assert!(host_port("ws://h:notaport/").is_err());
        assert!(host_port("ws://[::1/").is_err());
    }

    #[tokio::test]
    async fn a_bad_url_is_a_configuration_error_naming_the_peer() {
        let e = connect(&dial("http://example.invalid/")).await.unwrap_err();
        assert!(matches!(e, ConnectError::Url { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "bad test server URL http://example.invalid/: not a ws:// or wss:// URL"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("ws://{addr}/x");
        let e = connect(&dial(&url)).await.unwrap_err();
        assert!(e.is_refused(), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("could not connect to {url}: "))
        );
    }

    #[tokio::test]
    async fn a_plain_http_answer_is_not_a_websocket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await.unwrap();
            tcp.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let url = format!("ws://{addr}/x");
        let e = connect(&dial(&url)).await.unwrap_err();
        assert!(
            matches!(e, ConnectError::NotWebSocket { status: 404, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{url} answered HTTP 404 instead of a WebSocket upgrade")
        );
        server.await.unwrap();
    }

    /// A server that accepts and then says nothing (a hung attempt) gives way at the connect
    /// timeout, so the next attempt can start.
    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::time::sleep(CONNECT_TIMEOUT * 2).await;
            drop(tcp);
        });
        let url = format!("ws://{addr}/x");
        let started = tokio::time::Instant::now();
        let e = connect(&dial(&url)).await.unwrap_err();
        assert!(matches!(e, ConnectError::Timeout { .. }), "{e:?}");
        assert_eq!(started.elapsed(), CONNECT_TIMEOUT);
        assert_eq!(e.to_string(), format!("no connection to {url} within 5 s"));
        server.abort();
    }

    /// The caller's Origin and limits reach the upgrade: an Origin header arrives, and a message
    /// over the caller's limit is refused.
    #[tokio::test]
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    async fn origin_and_limits_are_the_callers() {
        use futures_util::{SinkExt, StreamExt};
        use tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (origin_tx, origin_rx) = tokio::sync::oneshot::channel();
            let cb = move |req: &tungstenite::handshake::server::Request, resp| {
                let o = req
                    .headers()
                    .get("origin")
                    .map(|v| v.to_str().unwrap_or_default().to_string());
                let _ = origin_tx.send(o);
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
            let _ = ws.send(Message::binary(vec![0u8; 2048])).await;
            origin_rx.await.unwrap()
        });
        let url = format!("ws://{addr}/x");
        let mut d = dial(&url);
        d.origin = Some("https://example.test");
        d.limits = WebSocketConfig::default()
            .max_message_size(Some(1024))
            .max_frame_size(Some(1024));
        let mut ws = connect(&d).await.unwrap();
        assert!(
            ws.next().await.unwrap().is_err(),
            "2 KiB over a 1 KiB limit"
        );
        assert_eq!(
            server.await.unwrap().as_deref(),
            Some("https://example.test")
        );
    }
}
