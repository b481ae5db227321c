//! The thin async shell around [`super::proto::Connection`]: the WebSocket, the timers, the
//! reconnect loop, and the table of operations (turns, resets) that outlives any one connection.
//!
//! Owns sockets, sleeping, the status row and the store writes of the device token. Never parses a
//! frame itself (the core does) and never logs tokens or message text.

use super::identity::{self, DeviceIdentity};
use super::proto::{self, Connection, Credentials, GatewayError, Hello, OpId, Output, ProtoError};
use crate::agent::AgentError;
use crate::config::Secret;
use crate::retry::{self, Backoff};
use crate::shutdown::Shutdown;
use crate::status::{Reporter, State};
use crate::store::Store;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use crate::ws::Ws;
use crate::ws::{CLOSE_TIMEOUT, ConnectError, Dial};

/// Turns and resets waiting or running at once. The router's `max_concurrent_turns` (8) plus
/// resets stays far below; beyond it the caller gets an error rather than memory growth.
pub const MAX_OPS: usize = 64;
/// A reset waits at most this long for the link and the gateway's answer.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(15);
/// tungstenite's read buffer: frames are small JSON; its 128 KiB default is sized for throughput.
const READ_BUFFER: usize = 16 * 1024;
/// Bytes written per flush; our frames are a few KiB at most.
const WRITE_BUFFER: usize = 16 * 1024;
/// Unflushed outgoing bytes allowed before writes fail: the outbox is bounded anyway.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// The WebSocket limits: messages and frames capped at the post-login frame limit.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(proto::MAX_FRAME))
        .max_frame_size(Some(proto::MAX_FRAME))
}

/// Opens the WebSocket to the gateway at `url` ([`crate::ws::connect`] with our limits).
pub async fn open(url: &str) -> Result<Ws, String> {
    crate::ws::connect(&Dial {
        url,
        peer: "gateway",
        origin: None,
        limits: ws_config(),
    })
    .await
    .map_err(|e| describe_ws_error(&e))
}

/// Plain words for a failed connect, with a hint where the usual cause is known.
fn describe_ws_error(e: &ConnectError) -> String {
    match e {
        ConnectError::Tcp { url, .. } if e.is_refused() => format!(
            "connection refused at {url}: is the gateway running and listening on that port?"
        ),
        ConnectError::NotWebSocket { .. } => format!("{e}: is this the gateway port?"),
        _ => e.to_string(),
    }
}

/// Why one connection ended.
pub enum Ended {
    Shutdown,
    /// Reconnect soon.
    Lost(String),
    /// Reconnect, but the owner must act first (pairing, token).
    NeedsOwner(String),
}

/// The link as turns and resets see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Down,
    Up { admin: bool },
    NeedsOwner(String),
}

#[derive(Clone, Debug)]
pub enum OpKind {
    Chat {
        session_key: String,
        text: String,
        idempotency_key: String,
    },
    Reset {
        session_key: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpDone {
    Reply(String),
    ResetCleared,
    ResetForbidden,
    Error(AgentError),
}

/// An operation's progress, watched by its caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpStatus {
    pub accepted: bool,
    pub deltas: u64,
    pub done: Option<OpDone>,
}

struct OpEntry {
    kind: OpKind,
    status: watch::Sender<OpStatus>,
    /// The connection generation this op was last sent on (0: never).
    sent_gen: u64,
}

/// State shared by `run` and the callers of turn/reset.
pub struct Shared {
    pub name: String,
    pub url: String,
    pub token: Secret,
    pub store: Store,
    pub reporter: Reporter,
    ops: Mutex<HashMap<OpId, OpEntry>>,
    wake: Notify,
    pub link: watch::Sender<Link>,
    running: AtomicBool,
    next_op: AtomicU64,
    identity: Mutex<Option<Arc<DeviceIdentity>>>,
    /// `None`: not read from the store yet; `Some(None)`: none stored.
    device_token: Mutex<Option<Option<String>>>,
}

/// Removes its op from the table when the caller's future ends or is dropped (router timeout).
pub struct OpGuard<'a> {
    shared: &'a Shared,
    op: OpId,
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock_ops().remove(&self.op);
        self.shared.wake.notify_one();
    }
}

impl Shared {
    pub fn new(name: &str, url: String, token: Secret, store: Store, reporter: Reporter) -> Self {
        Shared {
            name: name.to_string(),
            url,
            token,
            store,
            reporter,
            ops: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            link: watch::Sender::new(Link::Down),
            running: AtomicBool::new(false),
            next_op: AtomicU64::new(1),
            identity: Mutex::new(None),
            device_token: Mutex::new(None),
        }
    }

    // Poisoning only means a panic mid-update of plain data; the table is still usable.
    fn lock_ops(&self) -> MutexGuard<'_, HashMap<OpId, OpEntry>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an operation for the connection task to carry out.
    pub fn register(
        &self,
        kind: OpKind,
    ) -> Result<(OpGuard<'_>, watch::Receiver<OpStatus>), AgentError> {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(OpStatus::default());
        {
            let mut ops = self.lock_ops();
            if ops.len() >= MAX_OPS {
                return Err(AgentError::Unreachable(format!(
                    "{MAX_OPS} gateway operations already waiting"
                )));
            }
            ops.insert(
                op,
                OpEntry {
                    kind,
                    status: tx,
                    sent_gen: 0,
                },
            );
        }
        self.wake.notify_one();
        Ok((OpGuard { shared: self, op }, rx))
    }

    fn update(&self, op: OpId, f: impl FnOnce(&mut OpStatus)) {
        if let Some(e) = self.lock_ops().get(&op) {
            e.status.send_modify(f);
        }
    }

    /// Fails every waiting operation (the owner must act; waiting would only delay the error).
    fn fail_all(&self, err: &AgentError) {
        for e in self.lock_ops().values() {
            e.status.send_modify(|s| {
                if s.done.is_none() {
                    s.done = Some(OpDone::Error(err.clone()));
                }
            });
        }
    }

    /// The device identity, loaded or created once.
    pub async fn identity(&self) -> Result<Arc<DeviceIdentity>, AgentError> {
        if let Some(id) = self
            .identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(id);
        }
        let id = Arc::new(identity::load_or_create(&self.store, &self.name).await?);
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        Ok(id)
    }

    /// The credentials for the next connect: the stored device token if any, else the token.
    pub async fn credentials(&self) -> Credentials {
        let cached = self
            .device_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let device_token = match cached {
            Some(t) => t,
            None => {
                let stored = match self
                    .store
                    .auth(&identity::device_token_name(&self.name))
                    .await
                {
                    Ok(v) => v
                        .filter(|b| b.len() <= identity::MAX_DEVICE_TOKEN_BYTES)
                        .and_then(|b| String::from_utf8(b).ok())
                        .filter(|s| !s.is_empty()),
                    Err(e) => {
                        tracing::warn!(agent = %self.name, error = %e, "reading the device token");
                        None
                    }
                };
                *self.device_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored.clone());
                stored
            }
        };
        Credentials {
            token: self.token.expose().to_string(),
            device_token,
        }
    }

    /// Keeps a newly issued device token (memory first, then the store).
    pub async fn remember_device_token(&self, token: &str) {
        {
            let mut cur = self.device_token.lock().unwrap_or_else(|p| p.into_inner());
            if cur.as_ref().and_then(|t| t.as_deref()) == Some(token) {
                return;
            }
            *cur = Some(Some(token.to_string()));
        }
        if let Err(e) = self
            .store
            .set_auth(
                &identity::device_token_name(&self.name),
                token.as_bytes().to_vec(),
            )
            .await
        {
            tracing::warn!(agent = %self.name, error = %e, "saving the device token");
        }
        tracing::info!(agent = %self.name, "gateway issued a device token; using it from now on");
    }

    /// The device token was rejected: go back to the shared token.
    fn forget_device_token(&self) {
        *self.device_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(None);
    }

    /// This agent's lines in the repeat suppressor.
    fn repeat_site(&self) -> String {
        format!("agent {}", self.name)
    }

    /// The persistent connection loop (see [`super::OpenClaw::run`]).
    pub async fn run(&self, mut shutdown: Shutdown) -> Result<(), AgentError> {
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(AgentError::Failed(format!(
                "the gateway connection of agent {} is already running",
                self.name
            )));
        }
        let mut backoff = Backoff::new(retry::LINK, fastrand::u64(..));
        let mut generation = 0u64;
        loop {
            if shutdown.is_tripped() {
                break;
            }
            generation += 1;
            let ended = self
                .connect_once(generation, &mut shutdown, &mut backoff)
                .await;
            self.link.send_replace(Link::Down);
            match ended {
                Ended::Shutdown => break,
                Ended::Lost(reason) => {
                    // Once per reason, then a reminder every 10 minutes: a gateway that is down
                    // is retried every few seconds.
                    match crate::repeat::admit(&self.repeat_site(), &reason) {
                        Some(note) => {
                            tracing::info!(agent = %self.name, %reason, "gateway link lost{note}")
                        }
                        None => tracing::debug!(agent = %self.name, %reason, "gateway link lost"),
                    }
                    self.reporter
                        .set(State::Degraded, format!("reconnecting: {reason}"));
                }
                Ended::NeedsOwner(msg) => {
                    tracing::warn!(agent = %self.name, detail = %msg, "gateway needs the owner");
                    self.reporter.set(State::NeedsOwner, msg.clone());
                    self.link.send_replace(Link::NeedsOwner(msg.clone()));
                    self.fail_all(&AgentError::Unreachable(msg));
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.link.send_replace(Link::Down);
        self.reporter.set(State::Off, "stopped");
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn connect_once(
        &self,
        generation: u64,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Ended {
        let identity = match self.identity().await {
            Ok(i) => i,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        let creds = self.credentials().await;
        let mut ws = tokio::select! {
            _ = shutdown.wait() => return Ended::Shutdown,
            r = open(&self.url) => match r {
                Ok(ws) => ws,
                Err(e) => return Ended::Lost(e),
            },
        };
        let mut conn = Connection::new(creds, Some(identity), Instant::now().into_std());
        let ended = self
            .drive(generation, &mut ws, &mut conn, shutdown, backoff)
            .await;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        ended
    }

    async fn drive(
        &self,
        generation: u64,
        ws: &mut Ws,
        conn: &mut Connection,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Ended {
        loop {
            // Outputs first (routing may add requests), then writes.
            while let Some(out) = conn.poll_output() {
                if let Some(ended) = self.route(generation, conn, out, backoff).await {
                    return ended;
                }
            }
            while let Some(frame) = conn.poll_transmit() {
                if let Err(e) = ws.send(Message::text(frame)).await {
                    return Ended::Lost(format!("write failed: {e}"));
                }
            }
            let deadline = Instant::from_std(conn.poll_timeout());
            // Biased: a frame that is already there counts before the silence timer is judged.
            tokio::select! {
                biased;
                _ = shutdown.wait() => return Ended::Shutdown,
                msg = ws.next() => {
                    self.reporter.beat();
                    let text = match msg {
                        None => return Ended::Lost("the gateway closed the connection".into()),
                        Some(Err(e)) => return Ended::Lost(format!("read failed: {e}")),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(c))) => {
                            let why = c.map(|c| format!("{} {}", u16::from(c.code), c.reason))
                                .unwrap_or_default();
                            return Ended::Lost(format!("the gateway closed the connection {why}"));
                        }
                        Some(Ok(_)) => continue, // ping/pong/binary: liveness only
                    };
                    if let Err(e) = conn.handle_frame(text.as_str(), Instant::now().into_std()) {
                        return self.proto_ended(e);
                    }
                }
                _ = self.wake.notified(), if conn.is_ready() => {
                    self.sync_ops(generation, conn);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if let Err(e) = conn.handle_timeout(Instant::now().into_std()) {
                        return self.proto_ended(e);
                    }
                }
            }
        }
    }

    fn proto_ended(&self, e: ProtoError) -> Ended {
        match e {
            ProtoError::PairingRequired { .. } => Ended::NeedsOwner(e.to_string()),
            ProtoError::AuthRejected {
                device_token: true, ..
            } => {
                // A revoked or rotated device token: retry with the shared token.
                self.forget_device_token();
                Ended::Lost(e.to_string())
            }
            ProtoError::AuthRejected { .. } => {
                Ended::NeedsOwner(format!("{e} — check token_file / token_env"))
            }
            ProtoError::ProtocolMismatch(_) => Ended::NeedsOwner(e.to_string()),
            other => Ended::Lost(other.to_string()),
        }
    }

    async fn route(
        &self,
        generation: u64,
        conn: &mut Connection,
        out: Output,
        backoff: &mut Backoff,
    ) -> Option<Ended> {
        match out {
            Output::Ready(hello) => {
                self.on_ready(&hello).await;
                backoff.reset();
                self.sync_ops(generation, conn);
            }
            Output::Accepted { op } => self.update(op, |s| s.accepted = true),
            Output::Delta { op } => self.update(op, |s| {
                s.accepted = true;
                s.deltas = s.deltas.saturating_add(1);
            }),
            Output::Finished { op, result } => self.update(op, |s| {
                s.accepted = true;
                s.done = Some(match result {
                    Ok(t) => OpDone::Reply(t),
                    Err(e) => OpDone::Error(e),
                });
            }),
            Output::ResetDone { op, result } => self.update(op, |s| {
                s.done = Some(match result {
                    Ok(()) => OpDone::ResetCleared,
                    Err(e) if e.is_forbidden() => OpDone::ResetForbidden,
                    Err(e) => OpDone::Error(reset_error(&e)),
                });
            }),
        }
        None
    }

    async fn on_ready(&self, hello: &Hello) {
        if let Some(t) = &hello.device_token {
            self.remember_device_token(t).await;
        }
        tracing::info!(
            agent = %self.name,
            version = %hello.server_version,
            admin = hello.admin,
            "gateway connected"
        );
        // The next loss is news.
        crate::repeat::settled(&self.repeat_site());
        self.reporter.set(
            State::Up,
            format!(
                "gateway {}, protocol {}",
                hello.server_version, hello.protocol
            ),
        );
        self.link.send_replace(Link::Up { admin: hello.admin });
    }

    /// Sends every op not yet sent on this connection; forgets ops whose callers went away.
    fn sync_ops(&self, generation: u64, conn: &mut Connection) {
        let mut ops = self.lock_ops();
        for op in conn.ops() {
            if !ops.contains_key(&op) {
                conn.cancel(op);
            }
        }
        for (&op, e) in ops.iter_mut() {
            if e.sent_gen == generation || e.status.borrow().done.is_some() {
                continue;
            }
            let sent = match &e.kind {
                OpKind::Chat {
                    session_key,
                    text,
                    idempotency_key,
                } => conn.send_chat(op, session_key, text, idempotency_key),
                OpKind::Reset { session_key } => conn.send_reset(op, session_key),
            };
            match sent {
                Ok(()) => e.sent_gen = generation,
                Err(err) => e.status.send_modify(|s| s.done = Some(OpDone::Error(err))),
            }
        }
    }
}

fn reset_error(e: &GatewayError) -> AgentError {
    AgentError::Failed(format!("sessions.reset refused: {e}"))
}
