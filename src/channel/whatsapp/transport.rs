//! The WhatsApp client's byte pipe: a WebSocket to `server_url` opened by the binary's one
//! WebSocket connect ([`crate::ws`]), with `Origin: https://web.whatsapp.com` and our limits.
//!
//! Implements the library's `TransportFactory`/`Transport`: `Connected` first, then one
//! `DataReceived` per binary WebSocket message, then one `Disconnected`. The event queue is
//! bounded and never drops: a slow client backpressures the socket read. Adds a WebSocket-level
//! liveness check ([`LinkWatch`], sans-io) so a silent link is noticed within
//! [`crate::retry::SILENT_LINK_NOTICED`] even between the client's own keepalives. Knows nothing
//! of Noise or stanzas; never logs payloads.

use crate::ws::{CLOSE_TIMEOUT, Dial, Ws};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use whatsapp_rust::wacore::net::{
    DisconnectReason, Transport, TransportEvent, TransportFactory, WHATSAPP_WEB_ORIGIN,
};
use whatsapp_rust::{anyhow, async_channel, async_trait};

/// The dead-link numbers this transport runs on (their reasons and worst case live in
/// [`crate::retry`]; named here too for the tests that pace against them).
use crate::retry::{DEAD_AFTER, PING_EVERY};

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
/// A write (a frame or a ping) that cannot finish within this is a stalled link: the peer stopped
/// draining the socket. It bounds every hold of the sink's lock, so one stalled write cannot hang
/// a disconnect, the next write or the read pump (whatsapp-rust fixed the same hang in its own
/// transport after 0.7.0, upstream #1221: a close sent without a deadline while a lock was held).
/// Generous: a frame is at most a few hundred KiB, well under this on a slow mobile uplink.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

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
    link: Link,
}

/// The driver's hold on a factory's latest link: why its latest connect failed, and a way to
/// close its socket from outside the client. The client's own disconnect flushes first and closes
/// last; when that is cut short (it is bounded), the socket would stay open and the client's read
/// loop with it: [`Link::close`] ends both.
#[derive(Clone, Default)]
pub struct Link {
    last_error: Arc<std::sync::Mutex<Option<String>>>,
    stop: Arc<std::sync::Mutex<Option<watch::Sender<bool>>>>,
}

impl Link {
    /// Why the latest connect failed (plain words), for the status line; taken once.
    pub fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Closes the latest link's socket (its read pump ends, the client sees `Disconnected`); a
    /// link already closed, or none opened, is left as it is.
    pub fn close(&self) {
        if let Some(stop) = &*self.stop.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = stop.send(true);
        }
    }
}

impl WsFactory {
    pub fn new(url: &str) -> WsFactory {
        WsFactory {
            url: url.to_string(),
            link: Link::default(),
        }
    }

    /// The hold on this factory's links, for the driver.
    pub fn link(&self) -> Link {
        self.link.clone()
    }
}

/// The WebSocket to `url`: Origin `https://web.whatsapp.com`, our limits ([`ws_config`]).
pub async fn open(url: &str) -> Result<Ws, String> {
    crate::ws::connect(&Dial {
        url,
        peer: "WhatsApp server",
        origin: Some(WHATSAPP_WEB_ORIGIN),
        limits: ws_config(),
    })
    .await
    .map_err(|e| e.to_string())
}

struct WsTransport {
    sink: Mutex<SplitSink<Ws, Message>>,
    stop: watch::Sender<bool>,
}

#[async_trait]
impl Transport for WsTransport {
    async fn send(&self, data: Bytes) -> Result<(), anyhow::Error> {
        let write = async {
            let mut sink = self.sink.lock().await;
            sink.send(Message::Binary(data)).await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("WebSocket send failed: {e}")),
            Err(_) => {
                // The link is stalled: the read pump ends it.
                let _ = self.stop.send(true);
                Err(anyhow::anyhow!("WebSocket send stalled"))
            }
        }
    }

    async fn disconnect(&self) {
        let _ = self.stop.send(true);
        close_within(&self.sink).await;
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
                *self
                    .link
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                return Err(anyhow::Error::msg(e));
            }
        };
        let (sink, stream) = ws.split();
        let (tx, rx) = async_channel::bounded(EVENT_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        *self.link.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
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
                // A write in progress holds the sink: this ping is skipped, the next one goes.
                Tick::Ping => if let Ok(mut sink) = transport.sink.try_lock() {
                    let ping = sink.send(Message::Ping(Bytes::new()));
                    if tokio::time::timeout(WRITE_TIMEOUT, ping).await.is_err() {
                        break DisconnectReason::ReadError("the link stopped taking data".into());
                    }
                },
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
    close_within(&transport.sink).await;
    let _ = tx.send(TransportEvent::Disconnected(reason)).await;
}

/// The close handshake, waiting for the sink's lock included, bounded by [`CLOSE_TIMEOUT`]: a
/// write stalled on a dead socket cannot hold it up.
async fn close_within(sink: &Mutex<SplitSink<Ws, Message>>) {
    let close = async {
        let mut sink = sink.lock().await;
        let _ = sink.close().await;
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// A disconnect cut short leaves the socket open, and the server keeps the link alive (it
    /// reads our pings, it sends now and then): only [`Link::close`] ends it, and the client sees
    /// `Disconnected` then, on a paused clock within [`CLOSE_TIMEOUT`]. Without the close, a
    /// minute passes with data and no end (the hang `clawbox pair whatsapp` and a stop had).
    #[tokio::test(start_paused = true)]
    async fn link_close_ends_a_link_the_server_keeps_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                        Some(Ok(_)) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        if ws.send(Message::Binary(Bytes::from_static(b"tick"))).await.is_err() {
                            return false;
                        }
                    }
                }
            }
        });
        Link::default().close(); // no link yet: nothing to close, no panic
        let f = WsFactory::new(&format!("ws://{addr}/ws/chat"));
        let link = f.link();
        let (_t, rx) = f.create_transport().await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            TransportEvent::Connected
        ));
        let alive_until = Instant::now() + Duration::from_secs(60);
        let mut data = 0;
        while let Ok(e) = tokio::time::timeout_at(alive_until, rx.recv()).await {
            match e.unwrap() {
                TransportEvent::DataReceived(_) => data += 1,
                _ => panic!("the live link ended by itself"),
            }
        }
        assert!(data >= 10, "the server kept it alive: {data} frames");
        link.close();
        let ended = async {
            loop {
                match rx.recv().await.unwrap() {
                    TransportEvent::DataReceived(_) => continue,
                    TransportEvent::Disconnected(_) => break,
                    TransportEvent::Connected => panic!("a second Connected"),
                }
            }
        };
        assert!(
            tokio::time::timeout(CLOSE_TIMEOUT, ended).await.is_ok(),
            "the link ended within {CLOSE_TIMEOUT:?} of the close"
        );
        assert!(server.await.unwrap(), "the server saw the close");
        link.close(); // closed already: nothing happens
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
