//! A fake WhatsApp Web server for tests, speaking the real protocol on loopback: WebSocket on
//! `/ws/chat`, Noise XX with a certificate chain, framed AES-GCM, binary nodes, QR and pair-code
//! linking by a mock phone, the phone (or the owner's Desktop) writing in its own "message
//! yourself" chat, Signal-encrypted messages from mock contacts with one device or several
//! (from their number or their LID: `lid`), an offline queue, a log of which connection logged
//! in when, and
//! fault injection — driven by a JSON admin API on a second listener (or the Rust methods here).
//! Built from the client's own crates (`whatsapp-rust` 0.7.0 re-exports), so the wire format is
//! the one the real client speaks. Owns the sockets (this file) and nothing of clawbox; never
//! reaches the network beyond 127.0.0.1.

mod admin;
pub mod contacts;
pub mod cues;
pub mod deliveries;
pub mod devices;
mod faults;
mod group_iq;
mod group_sends;
pub mod groups;
mod keys;
pub mod lid;
pub mod login;
mod messages;
pub mod nodes;
mod noise;
pub mod phone;
mod retry;
mod server;
mod signal_store;
mod usync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

pub use contacts::InboxEntry;
pub use cues::{Reaction, ReadReceipt};
pub use deliveries::{Delivery, Report};
pub use group_iq::MemberChange;
pub use groups::{GroupAddressing, GroupDelivery, MemberSend};
pub use lid::{Addressing, UsyncCounts};
pub use retry::RetryStats;
pub use server::Login;
use server::{CONN_QUEUE_CAP, Cmd, World, now_secs};

/// The mock phone's account number.
pub const PHONE_NUMBER: &str = "+15550001111";
/// WebSocket path the client connects to.
pub const WS_PATH: &str = "/ws/chat";
/// Origin WhatsApp Web's client sends (and the real server insists on).
pub const ORIGIN: &str = "https://web.whatsapp.com";
/// Time a client gets to finish the WebSocket upgrade and the Noise handshake (the client's own
/// limit is 20 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest WebSocket message accepted (a frame plus header; see `noise::MAX_FRAME_LEN`).
const MAX_WS_MESSAGE: usize = (1 << 20) + 64;
/// Concurrent WebSocket connections served; more are closed at once (a test has one client).
const MAX_CONNS: usize = 16;
/// Concurrent admin HTTP connections served; more are closed at once.
const MAX_ADMIN_CONNS: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// While a connection is blackholed (nothing read, nothing written), how often the fake looks at
/// the socket for the client's FIN or RST: a client that gave the link up has closed its end, and
/// the connection is then detached — it no longer counts as connected.
const PEER_CLOSE_POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub connected: bool,
    pub paired: bool,
    pub jid: Option<String>,
    /// Logged-in connections pushed out by a newer one (two clients on one identity at once).
    pub replaced: u64,
    /// The id of the connection logged in now (see [`Login`]).
    pub conn: Option<u64>,
}

pub struct FakeWhatsApp {
    world: Arc<Mutex<World>>,
    ws_addr: SocketAddr,
    admin_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl FakeWhatsApp {
    /// Starts both listeners on ephemeral loopback ports.
    pub async fn start() -> Self {
        match Self::start_on("127.0.0.1:0", "127.0.0.1:0").await {
            Ok(fake) => fake,
            Err(e) => panic!("fake-whatsapp: cannot bind loopback: {e}"),
        }
    }

    pub async fn start_on(listen: &str, admin: &str) -> std::io::Result<Self> {
        let ws = TcpListener::bind(listen).await?;
        let adm = TcpListener::bind(admin).await?;
        let world = Arc::new(Mutex::new(World::new(PHONE_NUMBER.trim_start_matches('+'))));
        let mut tasks = JoinSet::new();
        let fake = Self {
            world: world.clone(),
            ws_addr: ws.local_addr()?,
            admin_addr: adm.local_addr()?,
            tasks: JoinSet::new(),
        };
        tasks.spawn(accept_ws(ws, world.clone()));
        tasks.spawn(accept_admin(adm, world));
        Ok(Self { tasks, ..fake })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{WS_PATH}", self.ws_addr)
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The mock phone's account number (`+E.164`).
    pub fn phone_number(&self) -> &'static str {
        PHONE_NUMBER
    }

    /// The phone scans the QR string the client displayed.
    pub async fn scan(&self, qr: &str) -> Result<(), String> {
        self.world.lock().await.scan(qr)
    }

    /// The phone's user types the pair code the client displayed (`ABCD-EFGH` or `ABCDEFGH`).
    pub async fn enter_code(&self, code: &str) -> Result<(), String> {
        self.world.lock().await.enter_code(code)
    }

    /// Contact `e164` sends a text (or a media message with `caption`); returns the message id.
    pub async fn contact_send(
        &self,
        e164: &str,
        text: &str,
        media: Option<&str>,
        caption: Option<&str>,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_send(e164, text, media, caption, now_secs())
            .await
    }

    /// Contact `e164` sends a text addressed as `addressing` (from its number, from its LID
    /// with the number as `sender_pn`, or from its LID alone); returns the message id.
    pub async fn contact_send_as(
        &self,
        e164: &str,
        text: &str,
        addressing: Addressing,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_send_with(e164, text, None, None, addressing, now_secs())
            .await
    }

    /// Contact `e164`'s stable LID as a JID (`<15 digits>@lid`); also served by the admin API
    /// as `GET /contacts/<e164>/lid`. Deterministic: the same number always has the same LID.
    /// The contact exists from then on, so the server can map the LID back to its number (a
    /// LID the fake never handed out has no number).
    pub async fn contact_lid(&self, e164: &str) -> Option<String> {
        let mut w = self.world.lock().await;
        w.contact_mut(e164)?;
        lid::lid_jid_of(e164)
    }

    /// The usync lookups the client made so far, by kind (also in `GET /state` as `usync`).
    pub async fn usync_counts(&self) -> UsyncCounts {
        self.world.lock().await.usync_counts.clone()
    }

    /// A group of `members` (numbers; the first created it) and the linked account, naming
    /// participants as `addressing` says; returns its JID (`POST /groups`).
    pub async fn group_create(
        &self,
        subject: &str,
        members: &[&str],
        addressing: GroupAddressing,
    ) -> Result<String, String> {
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        self.world
            .lock()
            .await
            .group_create(subject, &members, addressing, now_secs())
    }

    /// A member writes to group `jid` (`POST /groups/<jid>/messages`); returns the message id.
    pub async fn group_send(&self, jid: &str, msg: &MemberSend) -> Result<String, String> {
        self.world
            .lock()
            .await
            .group_member_send(jid, msg, now_secs())
            .await
    }

    /// What the linked account sent to group `jid`, as each member device decrypted it.
    pub async fn group_messages(&self, jid: &str) -> Result<Vec<GroupDelivery>, String> {
        self.world.lock().await.group_deliveries(jid)
    }

    /// Members join or leave group `jid`; the client gets the `w:gp2` notification.
    pub async fn group_change_members(
        &self,
        jid: &str,
        change: &MemberChange,
    ) -> Result<(), String> {
        self.world
            .lock()
            .await
            .group_members(jid, change, now_secs())
    }

    /// What the linked account sent to contact `e164`, decrypted.
    pub async fn contact_inbox(&self, e164: &str) -> Vec<InboxEntry> {
        self.world.lock().await.inbox(e164)
    }

    /// The owner writes `text` in "message yourself" on the primary phone; returns the message id.
    pub async fn phone_self_send(&self, text: &str) -> Result<String, String> {
        self.world
            .lock()
            .await
            .phone_self_send(text, now_secs())
            .await
    }

    /// What the linked device sent into the self chat, decrypted by the phone.
    pub async fn phone_self_messages(&self) -> Vec<InboxEntry> {
        self.world.lock().await.self_messages()
    }

    /// The owner writes `text` in "message yourself" from the account's device `device` (0 the
    /// phone, another id a linked Desktop created on first use), addressing the chat by phone
    /// number or by LID; returns the message id.
    pub async fn self_send_from(
        &self,
        text: &str,
        addressing: Addressing,
        device: u16,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .self_send_from(text, addressing, device, now_secs())
            .await
    }

    /// Contact `e164` has `count` devices from now on (its phone included); returns their ids.
    /// The linked client is told of each change as the real server tells it.
    pub async fn set_contact_devices(&self, e164: &str, count: usize) -> Result<Vec<u16>, String> {
        self.world
            .lock()
            .await
            .set_contact_devices(e164, count, true, now_secs())
            .await
    }

    /// Device notifications the linked client has not acknowledged yet (it acks each after
    /// handling it).
    pub async fn device_notifications_unacked(&self) -> usize {
        self.world.lock().await.devices.unacked.len()
    }

    /// As [`Self::set_contact_devices`], but the linked client's notification is lost: it learns
    /// of the change only from the `phash` in the ack of its next message to the contact.
    pub async fn set_contact_devices_unannounced(
        &self,
        e164: &str,
        count: usize,
    ) -> Result<Vec<u16>, String> {
        self.world
            .lock()
            .await
            .set_contact_devices(e164, count, false, now_secs())
            .await
    }

    /// What the linked account sent to contact `e164`, with the devices that decrypted each.
    pub async fn contact_deliveries(&self, e164: &str) -> Vec<Delivery> {
        self.world.lock().await.deliveries(e164)
    }

    /// Which devices (the addressee's and the account's own) decrypted message `id`.
    pub async fn message_report(&self, id: &str) -> Option<Report> {
        self.world.lock().await.message_report(id)
    }

    pub async fn state(&self) -> State {
        let w = self.world.lock().await;
        State {
            connected: w.logged_in_conn().is_some(),
            paired: w.companion.is_some(),
            jid: w.own_jid(),
            replaced: w.replaced,
            conn: w.logged_in_conn(),
        }
    }

    /// Every login so far, oldest first: which connection, when.
    pub async fn logins(&self) -> Vec<Login> {
        self.world.lock().await.logins.iter().copied().collect()
    }

    /// The first login after `t`: the connection that came back after a fault healed at `t`
    /// ("connected" alone may still be the connection from before the fault).
    pub async fn login_after(&self, t: tokio::time::Instant) -> Option<Login> {
        self.world
            .lock()
            .await
            .logins
            .iter()
            .find(|l| l.at > t)
            .copied()
    }

    /// `drop` | `stream-error` (with `code`) | `conflict` | `blackhole` | `heal`, or a malformed
    /// frame on the live link (see below). `blackhole`: the live connection neither reads nor
    /// writes and new ones are held before the WebSocket upgrade, until `heal`; a connection whose
    /// client closes its end meanwhile (it gave the link up) is detached. For a malformed
    /// frame on the live link: `bad-decrypt` (a frame whose AES-GCM tag fails), `garbage-node` (a
    /// valid Noise frame holding bytes that are no binary node), `truncated` (half a frame, then
    /// the TCP link is cut), `oversized` (one WebSocket message over the client's 4 MiB limit).
    pub async fn fault(&self, kind: &str, code: Option<u16>) -> Result<(), String> {
        self.world.lock().await.fault(kind, code)
    }

    /// Contact `e164` sends a text whose first copy the linked device cannot decrypt; the
    /// contact resends it (same id) when asked with a retry receipt. Returns the message id.
    pub async fn contact_send_undecryptable(
        &self,
        e164: &str,
        text: &str,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_send_undecryptable(e164, text, (None, None), false, now_secs())
            .await
    }

    /// Contact `e164` sends a text that never decrypts: every resend is damaged too (the client
    /// stops asking after its retry bound). Returns the message id.
    pub async fn contact_send_never_decryptable(
        &self,
        e164: &str,
        text: &str,
    ) -> Result<String, String> {
        self.world
            .lock()
            .await
            .contact_send_undecryptable(e164, text, (None, None), true, now_secs())
            .await
    }

    /// `POST /faults` with every argument: besides [`Self::fault`]'s kinds, `retry-receipt` (the
    /// contact the device writes next asks for a resend), `nack` with `code` (the server refuses
    /// the device's next `count` messages to contacts, 1 if not given), `prekeys-low` with `count` (the server's
    /// `encrypt` notification), `identity-change` of `contact` (a reinstall), `no-bundle` for
    /// `contact` (its key bundle refused `count` times, 1 if not given), `lid-unknown` for
    /// `contact` (usync answers its number without its LID from now on).
    pub async fn fault_with(
        &self,
        kind: &str,
        code: Option<u16>,
        count: Option<u32>,
        contact: Option<&str>,
    ) -> Result<(), String> {
        self.world
            .lock()
            .await
            .fault_with(kind, code, count, contact)
    }

    /// Retry receipts, resends, nacks and prekey uploads counted so far (`GET /retries`).
    pub async fn retry_stats(&self) -> RetryStats {
        self.world.lock().await.retry_stats()
    }

    /// TCP connections accepted on the WebSocket listener so far (a reconnecting client adds one).
    pub async fn connection_attempts(&self) -> u64 {
        self.world.lock().await.attempts
    }

    /// Serves until the listeners fail (the standalone example's main loop).
    pub async fn serve_forever(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn accept_admin(listener: TcpListener, world: Arc<Mutex<World>>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_ADMIN_CONNS {
            drop(stream);
            continue;
        }
        let world = world.clone();
        conns.spawn(async move {
            let service = service_fn(move |req| admin::handle(world.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn accept_ws(listener: TcpListener, world: Arc<Mutex<World>>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        if conns.len() >= MAX_CONNS {
            drop(stream);
            continue;
        }
        let world = world.clone();
        conns.spawn(async move {
            if let Err(e) = serve_conn(world, stream).await {
                tracing::debug!("fake-whatsapp: connection ended: {e}");
            }
        });
    }
}

#[allow(clippy::result_large_err)]
fn check_upgrade(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    let origin_ok = req
        .headers()
        .get("origin")
        .is_some_and(|o| o.as_bytes() == ORIGIN.as_bytes());
    if req.uri().path() != WS_PATH || !origin_ok {
        let mut err = ErrorResponse::new(Some("wrong path or origin".into()));
        *err.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::FORBIDDEN;
        return Err(err);
    }
    Ok(resp)
}

async fn next_binary<S>(ws: &mut S) -> Result<Vec<u8>, String>
where
    S: StreamExt<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(WsMessage::Close(_))) | None => return Err("closed during handshake".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("websocket: {e}")),
        }
    }
}

async fn serve_conn(world: Arc<Mutex<World>>, stream: TcpStream) -> Result<(), String> {
    let mut blackhole = {
        let mut w = world.lock().await;
        w.attempts += 1;
        w.blackhole.subscribe()
    };
    // Blackholed: the TCP connection is accepted and then nothing happens until `heal` (or until
    // the client gives up on it).
    while *blackhole.borrow_and_update() {
        tokio::select! {
            changed = blackhole.changed() => if changed.is_err() {
                return Ok(());
            },
            _ = tokio::time::sleep(PEER_CLOSE_POLL) => if peer_closed(&stream) {
                return Ok(());
            },
        }
    }
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE));
    let handshake = async {
        let mut ws =
            tokio_tungstenite::accept_hdr_async_with_config(stream, check_upgrade, Some(config))
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
        let first = next_binary(&mut ws).await?;
        let (hello, pending) = {
            let w = world.lock().await;
            noise::respond_to_hello(&first, &w.server).map_err(|e| e.to_string())?
        };
        ws.send(WsMessage::Binary(hello.into()))
            .await
            .map_err(|e| format!("send hello: {e}"))?;
        let second = next_binary(&mut ws).await?;
        let (cipher, payload, client_static) =
            pending.finish(&second).map_err(|e| e.to_string())?;
        Ok::<_, String>((ws, cipher, payload, client_static))
    };
    let (mut ws, mut cipher, payload, client_static) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| "handshake timed out".to_string())??;

    let (tx, mut rx) = mpsc::channel(CONN_QUEUE_CAP);
    let id = {
        let mut w = world.lock().await;
        let id = w.attach(tx, client_static);
        if w.on_payload(id, &payload, now_secs()) {
            w.record_login(id, tokio::time::Instant::now(), now_unix_ms());
        }
        id
    };
    let mut blackholed = false;
    let result: Result<(), String> = loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None | Some(Cmd::Close) => break Ok(()),
                Some(Cmd::Blackhole) => blackholed = true,
                Some(Cmd::Heal) => blackholed = false,
                Some(Cmd::Send(node)) => {
                    if blackholed {
                        continue;
                    }
                    if let Err(e) = write_node(&mut ws, &mut cipher, &node).await {
                        break Err(e);
                    }
                }
                Some(Cmd::SealRaw(plain)) => {
                    let sent = match cipher.seal(&plain) {
                        Ok(framed) => ws.send(WsMessage::Binary(framed.into())).await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = sent {
                        break Err(e);
                    }
                }
                Some(Cmd::RawWs(bytes)) => {
                    if let Err(e) = ws.send(WsMessage::Binary(bytes.into())).await {
                        break Err(format!("websocket send: {e}"));
                    }
                }
                Some(Cmd::RawWsCut(bytes)) => {
                    let _ = ws.send(WsMessage::Binary(bytes.into())).await;
                    break Ok(());
                }
                Some(Cmd::SendClose(node)) => {
                    let _ = write_node(&mut ws, &mut cipher, &node).await;
                    let _ = ws.close(None).await;
                    break Ok(());
                }
            },
            msg = ws.next(), if !blackholed => match msg {
                Some(Ok(WsMessage::Binary(data))) => {
                    let frames = match cipher.open(&data) {
                        Ok(f) => f,
                        Err(e) => break Err(e.to_string()),
                    };
                    for frame in frames {
                        match nodes::decode(&frame) {
                            Ok(node) => world.lock().await.on_node(id, node, now_secs()).await,
                            Err(e) => tracing::warn!("fake-whatsapp: undecodable node: {e}"),
                        }
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(format!("websocket: {e}")),
            },
            // Blackholed: the bytes the client sends stay unread, but a client that gave the link
            // up (closed its socket) ends the connection here, so it stops counting as connected.
            _ = tokio::time::sleep(PEER_CLOSE_POLL), if blackholed => {
                if peer_closed(ws.get_ref()) {
                    tracing::debug!("fake-whatsapp: the client closed a blackholed connection");
                    break Ok(());
                }
            }
        }
    };
    world.lock().await.detach(id);
    result
}

/// True once the client's end of `stream` is closed (FIN or RST seen), looked at without reading:
/// bytes the client sent before closing stay where they are.
fn peer_closed(stream: &TcpStream) -> bool {
    use futures_util::FutureExt;
    match stream.ready(tokio::io::Interest::READABLE).now_or_never() {
        Some(Ok(ready)) => ready.is_read_closed(),
        Some(Err(_)) => true,
        None => false,
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn write_node<S>(
    ws: &mut S,
    cipher: &mut noise::FrameCipher,
    node: &whatsapp_rust::wacore_binary::Node,
) -> Result<(), String>
where
    S: SinkExt<WsMessage, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    tracing::debug!("fake-whatsapp -> {}", nodes::summary(node));
    let plain = nodes::encode(node)?;
    let framed = cipher.seal(&plain).map_err(|e| e.to_string())?;
    ws.send(WsMessage::Binary(framed.into()))
        .await
        .map_err(|e| format!("websocket send: {e}"))
}
