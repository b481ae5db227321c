//! The WhatsApp client's byte pipe: a WebSocket over tokio-tungstenite and the binary's one
//! rustls config (ring, webpki roots) to `server_url`, with `Origin: https://web.whatsapp.com`.
//!
//! Implements the library's `TransportFactory`/`Transport`: `Connected` first, then one
//! `DataReceived` per binary WebSocket message, then one `Disconnected`. The event queue is
//! bounded and never drops: a slow client backpressures the socket read. Adds a WebSocket-level
//! liveness check ([`LinkWatch`], sans-io) so a silent link is noticed within
//! [`crate::retry::SILENT_LINK_NOTICED`] even between the client's own keepalives. Knows nothing
//! of Noise or stanzas; never logs payloads.

use crate::retry::CONNECT_TIMEOUT;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use whatsapp_rust::wacore::net::{
    DisconnectReason, Transport, TransportEvent, TransportFactory, WHATSAPP_WEB_ORIGIN,
};
use whatsapp_rust::{anyhow, async_channel, async_trait};

/// The dead-link numbers this transport runs on (their reasons and worst case live in
/// [`crate::retry`]; named here too for the tests that pace against them).
pub use crate::retry::{DEAD_AFTER, PING_EVERY};

/// tungstenite's read buffer: stanzas are small; its 128 KiB default is sized for throughput.
const READ_BUFFER: usize = 32 * 1024;
/// Bytes written per flush: one outgoing stanza at a time, a few KiB each.
const WRITE_BUFFER: usize = 32 * 1024;
/// Unflushed outgoing bytes allowed before a send fails (the library retries).
const MAX_WRITE_BUFFER: usize = 2 * 1024 * 1024;
/// Largest WebSocket message: one or more Noise frames. Offline-queue batches and app-state
/// patches stay well under this; media travels over HTTPS, not here. (Default: 64 MiB.)
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest single WebSocket frame (same bound: the server does not fragment).
const MAX_FRAME: usize = MAX_MESSAGE;
/// Events waiting for the client; beyond this the socket read waits (never drops).
const EVENT_QUEUE: usize = 64;
/// Closing handshake on disconnect must not hold anything up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The WebSocket limits, named.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_FRAME))
}

/// Liveness of one link, sans-io: the reader feeds it frames and ticks, it says what to do.
#[derive(Debug)]
pub struct LinkWatch {
    last_rx: Instant,
}

/// What the reader should do on a tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    Ping,
    Dead,
}

impl LinkWatch {
    pub fn new(now: Instant) -> LinkWatch {
        LinkWatch { last_rx: now }
    }
    /// Any frame arrived.
    pub fn received(&mut self, now: Instant) {
        self.last_rx = now;
    }
    pub fn tick(&self, now: Instant) -> Tick {
        if now.saturating_duration_since(self.last_rx) >= DEAD_AFTER {
            Tick::Dead
        } else {
            Tick::Ping
        }
    }
}

/// Opens links to one URL.
pub struct WsFactory {
    url: String,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl WsFactory {
    pub fn new(url: &str) -> WsFactory {
        WsFactory {
            url: url.to_string(),
            last_error: Arc::default(),
        }
    }

    /// Where the latest connect failure is kept (plain words), for the status line.
    pub fn last_error(&self) -> Arc<std::sync::Mutex<Option<String>>> {
        self.last_error.clone()
    }
}

/// Plain words for a failed connect (no payloads, no secrets in a URL here).
fn describe(url: &str, e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(io) => format!("could not connect to {url}: {io}"),
        E::Tls(t) => format!("TLS handshake with {url} failed: {t}"),
        E::Url(u) => format!("bad WhatsApp server URL {url}: {u}"),
        E::Http(resp) => format!(
            "{url} answered HTTP {} instead of a WebSocket upgrade",
            resp.status()
        ),
        other => format!("could not open the WebSocket to {url}: {other}"),
    }
}

/// host:port of a ws:// or wss:// URL.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("wss://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (r, 80)
    } else {
        return Err(format!("{url}: not a ws:// or wss:// URL"));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: bad IPv6 host"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port"))?,
            None => default_port,
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            p.parse().map_err(|_| format!("{url}: bad port"))?,
        )),
        None => Ok((authority.to_string(), default_port)),
    }
}

/// TCP (no Nagle) + TLS for wss + the upgrade with `Origin`, within [`CONNECT_TIMEOUT`].
pub async fn open(url: &str) -> Result<Ws, String> {
    let fut = async {
        let (host, port) = host_port(url)?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("could not connect to {url}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("could not set TCP_NODELAY: {e}"))?;
        let mut req = url.into_client_request().map_err(|e| describe(url, &e))?;
        req.headers_mut().insert(
            http::header::ORIGIN,
            http::HeaderValue::from_static(WHATSAPP_WEB_ORIGIN),
        );
        let connector = if url.starts_with("wss://") {
            Connector::Rustls(crate::http::tls_config())
        } else {
            Connector::Plain
        };
        let (ws, _resp) = tokio_tungstenite::client_async_tls_with_config(
            req,
            tcp,
            Some(ws_config()),
            Some(connector),
        )
        .await
        .map_err(|e| describe(url, &e))?;
        Ok(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| {
            format!(
                "no connection to {url} within {} s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
}

struct WsTransport {
    sink: Mutex<SplitSink<Ws, Message>>,
    stop: watch::Sender<bool>,
}

#[async_trait]
impl Transport for WsTransport {
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        let mut sink = self.sink.lock().await;
        sink.send(Message::Binary(data))
            .await
            .map_err(|e| anyhow::anyhow!("WebSocket send failed: {e}"))
    }

    async fn disconnect(&self) {
        let _ = self.stop.send(true);
        let mut sink = self.sink.lock().await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    }
}

#[async_trait]
impl TransportFactory for WsFactory {
    async fn create_transport(
        &self,
    ) -> Result<(Arc<dyn Transport>, async_channel::Receiver<TransportEvent>), anyhow::Error> {
        let ws = match open(&self.url).await {
            Ok(ws) => ws,
            Err(e) => {
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                return Err(anyhow::Error::msg(e));
            }
        };
        let (sink, stream) = ws.split();
        let (tx, rx) = async_channel::bounded(EVENT_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let transport = Arc::new(WsTransport {
            sink: Mutex::new(sink),
            stop,
        });
        // Queued before the reader starts, so it precedes any data.
        let _ = tx.try_send(TransportEvent::Connected);
        tokio::spawn(read_pump(stream, transport.clone(), tx, stop_rx));
        Ok((transport, rx))
    }
}

async fn read_pump(
    mut stream: SplitStream<Ws>,
    transport: Arc<WsTransport>,
    tx: async_channel::Sender<TransportEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = LinkWatch::new(Instant::now());
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let reason = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break DisconnectReason::Unknown,
            _ = ping.tick() => match watch.tick(Instant::now()) {
                Tick::Dead => {
                    tracing::info!(after_s = DEAD_AFTER.as_secs(), "WhatsApp link silent; closing it");
                    break DisconnectReason::ReadError(format!("no data for {} s", DEAD_AFTER.as_secs()));
                }
                Tick::Ping => {
                    let mut sink = transport.sink.lock().await;
                    let _ = sink.send(Message::Ping(Bytes::new())).await;
                }
            },
            next = stream.next() => match next {
                Some(Ok(Message::Binary(data))) => {
                    watch.received(Instant::now());
                    tokio::select! {
                        biased;
                        _ = stop.changed() => break DisconnectReason::Unknown,
                        r = tx.send(TransportEvent::DataReceived(data)) => {
                            if r.is_err() {
                                break DisconnectReason::Unknown;
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) => DisconnectReason::ServerClose { code: Some(u16::from(f.code)), reason: f.reason.to_string() },
                        None => DisconnectReason::ServerClose { code: None, reason: String::new() },
                    };
                }
                Some(Ok(Message::Pong(_))) => watch.received(Instant::now()),
                // Pings are answered by tungstenite; text frames are not part of the protocol.
                Some(Ok(_)) => watch.received(Instant::now()),
                Some(Err(e)) => break DisconnectReason::ReadError(e.to_string()),
                None => break DisconnectReason::StreamEnded,
            },
        }
    };
    tracing::debug!(%reason, "WhatsApp transport closed");
    {
        let mut sink = transport.sink.lock().await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    }
    let _ = tx.send(TransportEvent::Disconnected(reason)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(host_port("ws://[::1]:7/x").unwrap(), ("::1".into(), 7));
        assert!(host_port("http://x").is_err());
        assert!(host_port("ws://h:notaport/").is_err());
    }

    #[test]
    fn silence_is_death_within_the_silent_link_budget() {
        let t0 = Instant::now();
        let mut w = LinkWatch::new(t0);
        assert_eq!(w.tick(t0 + Duration::from_secs(19)), Tick::Ping);
        assert_eq!(
            w.tick(t0 + DEAD_AFTER),
            Tick::Dead,
            "silent from the start: dead too"
        );
        w.received(t0 + Duration::from_secs(30));
        assert_eq!(w.tick(t0 + Duration::from_secs(31)), Tick::Ping);
        assert_eq!(
            w.tick(t0 + Duration::from_secs(30) + DEAD_AFTER),
            Tick::Dead
        );
        // Checked once per ping period: the worst case is DEAD_AFTER + PING_EVERY.
        assert_eq!(DEAD_AFTER + PING_EVERY, crate::retry::SILENT_LINK_NOTICED);
    }

    #[test]
    fn limits_are_small() {
        let c = ws_config();
        assert_eq!(c.max_message_size, Some(MAX_MESSAGE));
        assert_eq!(c.read_buffer_size, READ_BUFFER);
    }

    #[tokio::test]
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    async fn upgrade_carries_the_origin_header_and_data_flows() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (origin_tx, origin_rx) = tokio::sync::oneshot::channel();
            let cb = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                           resp| {
                let o = req
                    .headers()
                    .get("origin")
                    .map(|v| v.to_str().unwrap_or_default().to_string());
                let _ = origin_tx.send(o);
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tcp, cb).await.unwrap();
            ws.send(Message::Binary(Bytes::from_static(b"\x01\x02")))
                .await
                .unwrap();
            let got = ws.next().await.unwrap().unwrap();
            ws.close(None).await.unwrap();
            (origin_rx.await.unwrap(), got)
        });
        let f = WsFactory::new(&format!("ws://{addr}/ws/chat"));
        let (t, rx) = f.create_transport().await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            TransportEvent::Connected
        ));
        match rx.recv().await.unwrap() {
            TransportEvent::DataReceived(d) => assert_eq!(&d[..], b"\x01\x02"),
            _ => panic!("expected data"),
        }
        t.send(Bytes::from_static(b"hello")).await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            TransportEvent::Disconnected(DisconnectReason::ServerClose { .. })
        ));
        let (origin, got) = server.await.unwrap();
        assert_eq!(origin.as_deref(), Some("https://web.whatsapp.com"));
        assert_eq!(got, Message::Binary(Bytes::from_static(b"hello")));
    }

    /// README: "a silent link noticed within 25 s". On a paused clock, over a real socket: the
    /// server sends one frame just after the transport's first check, then nothing (it never
    /// reads, so our pings go unanswered); the link is closed no later than
    /// [`crate::retry::SILENT_LINK_NOTICED`] after that last frame, and not before
    /// [`DEAD_AFTER`] of silence.
    #[tokio::test(start_paused = true)]
    async fn a_silent_link_is_closed_within_the_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            tokio::time::sleep(PING_EVERY + Duration::from_millis(1)).await;
            ws.send(Message::Binary(Bytes::from_static(b"last")))
                .await
                .unwrap();
            // Silent from here on, and deaf: nothing reads our pings.
            tokio::time::sleep(crate::retry::SILENT_LINK_NOTICED * 4).await;
            drop(ws);
        });
        let f = WsFactory::new(&format!("ws://{addr}/ws/chat"));
        let (_t, rx) = f.create_transport().await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            TransportEvent::Connected
        ));
        assert!(matches!(
            rx.recv().await.unwrap(),
            TransportEvent::DataReceived(_)
        ));
        let last_frame = Instant::now();
        match rx.recv().await.unwrap() {
            TransportEvent::Disconnected(DisconnectReason::ReadError(why)) => {
                assert!(why.contains("no data"), "{why}")
            }
            _ => panic!("expected the silent link to be closed"),
        }
        let silent = last_frame.elapsed();
        assert!(silent >= DEAD_AFTER, "closed after only {silent:?}");
        assert!(
            silent <= crate::retry::SILENT_LINK_NOTICED,
            "noticed after {silent:?}"
        );
        server.abort();
    }
}
