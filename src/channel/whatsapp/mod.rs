//! The WhatsApp channel: the owner's WhatsApp account as a linked device (WhatsApp Web
//! multi-device), through the `whatsapp-rust` client, kept entirely behind this module.
//!
//! [`adapter`] is the sans-io core (message conversion, self chat, outgoing ids, reconnect
//! policy); [`storage`] puts the client's keys and sessions in clawbox's store; [`transport`] and
//! [`http`] give it a WebSocket and HTTP on our rustls config; [`qr`] draws the pairing code;
//! [`link`] carries out the owner's requests (link, cancel, unlink) and keeps the channel ready for
//! them. This file is the thin driver of one run of the channel.
//!
//! Durability order: every decrypted message goes through the client's inbound durability hook,
//! which submits it to [`crate::intake::Intake`] (durable in the inbox on `Ok`) before the client
//! acknowledges it to the server; a failed submit suppresses the ack and the server redelivers.
//! The client buffers the decrypted copy in our store (`pin/` rows) before advancing the ratchet,
//! so a crash anywhere replays the message instead of losing it. Redeliveries are deduped by id by
//! the core.
//!
//! Reconnects are driven here, not by the client (its Fibonacci backoff reaches 900 s): each
//! `Client::run` is one connection; [`adapter::decide`] says what comes next. Never logs message
//! bodies, keys or the pairing payload.

pub mod adapter;
pub mod http;
mod inbound;
pub mod link;
pub mod qr;
pub mod storage;
pub mod transport;

use crate::backoff::Backoff;
use crate::channel::{ChannelCommand, ChannelContext, ChannelError, SendError};
use crate::config::WhatsAppConfig;
use crate::intake::IntakeError;
use crate::metrics::Metrics;
use crate::pairing::{Pairing, PairingPublisher};
use crate::status::State;
use crate::store::kv::KvTable;
use crate::vocab::{ChannelKind, ChannelSpec};
use adapter::{Decision, Ending, Own, Rules, SentIds};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use storage::KvBackend;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use whatsapp_rust::prelude::*;
use whatsapp_rust::types::events::{Event, EventHandler};
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Jid, TokioRuntime};

/// WhatsApp allows ~65k characters; 4000 keeps a reply chunk readable on a phone and leaves room
/// for the self-chat prefix. A send in doubt is simply repeated: the message id is derived from the
/// chunk key, and a recipient's devices keep one message per id.
pub const SPEC: ChannelSpec = ChannelSpec {
    kind: ChannelKind::WhatsApp,
    max_chars: 4000,
};

/// The production endpoint; any other URL is a test server.
pub const DEFAULT_SERVER_URL: &str = "wss://web.whatsapp.com/ws/chat";
/// Web client version announced to a non-default (test) server, so no version page is fetched
/// from the internet. Against the real server the client fetches the live version (cached 24 h in
/// the device state): a pinned version ages into "client outdated" on a box left for months.
pub const TEST_SERVER_VERSION: (u32, u32, u32) = (2, 3000, 1_026_131_876);
/// QR codes shown before pairing pauses: WhatsApp rate-limits repeated link attempts.
pub const MAX_QR_CODES: u32 = 3;
/// The status row beats from the connection's life, not from a timer: each connection attempt,
/// the link coming up, each keepalive answered, each reconnect wait. The longest legitimate gap
/// between two of those on a connection: the first probe goes [`PROBE_EVERY`] after the attempt
/// starts (another `PROBE_EVERY` later if not yet logged in) and is answered within
/// `PROBE_DEADLINE + PROBE_SLACK`; a link that stops answering is given up on within
/// `PROBE_EVERY + PROBE_FAILURES × (PROBE_DEADLINE + PROBE_SLACK)` = 39 s, and the reconnect
/// beats. 54 s at worst; an attempt that fails ends sooner (`transport::CONNECT_TIMEOUT`, 5 s).
const LINK_WITHIN: Duration = Duration::from_secs(60);
/// On top of a reconnect wait: the in-memory work before the next attempt and scheduling delays.
const WAIT_SLACK: Duration = Duration::from_secs(5);
/// A sent message counts as delivered to the server when its `<ack>` arrives within this; past it
/// the send is retried (same id: no duplicate).
pub const SEND_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Sends awaiting the server's ack at once (delivery sends one chunk at a time per channel).
const MAX_PENDING_ACKS: usize = 32;
/// Graceful disconnect (flushes the client's buffered state) must not hold shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Waiting for the socket before asking for a phone pairing code.
const PAIR_CODE_SOCKET_WAIT: Duration = Duration::from_secs(30);
/// How often the deaf-link probe asks the server for a pong (one tiny IQ; WhatsApp Web pings at a
/// similar pace while idle).
const PROBE_EVERY: Duration = Duration::from_secs(15);
/// How long a probe's pong may take: generous for a slow mobile uplink.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Extra time on top of the IQ's own deadline before the probe gives up on the call itself.
const PROBE_SLACK: Duration = Duration::from_secs(2);
/// Unanswered probes in a row before the link counts as deaf: one could be a slow moment.
const PROBE_FAILURES: u32 = 2;
/// Our reconnect lines in the repeat suppressor ([`crate::repeat`]).
const REPEAT_SITE: &str = "whatsapp";

/// How the pairing command wants the channel run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Link with a phone number (8-character code) instead of a QR.
    pub phone: Option<String>,
    /// Stop once linked (`clawbox pair whatsapp`).
    pub exit_when_linked: bool,
}

/// How a run ended (for `clawbox pair whatsapp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Linked(String),
    /// Stopped and needs the owner; the words say why.
    NeedsOwner(String),
    Shutdown,
}

/// What the client's callbacks tell the driver. Fixed size: flags and a few strings, no queue.
#[derive(Default)]
struct Seen {
    ending: Option<Ending>,
    pair_success: bool,
    up: bool,
    qr_codes: u32,
    last_disconnect: Option<String>,
    /// Outgoing ids waiting for the server's ack.
    acks: HashMap<String, oneshot::Sender<Option<String>>>,
}

struct Shared {
    cfg: Arc<WhatsAppConfig>,
    ctx: ChannelContext,
    pairing: PairingPublisher,
    seen: Mutex<Seen>,
    sent: Mutex<SentIds>,
    wake: Notify,
    inflow: inbound::Inflow,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn sent(&self) -> MutexGuard<'_, SentIds> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn end(&self, e: Ending) {
        let mut s = self.seen();
        // The first verdict of a connection wins (a logout is followed by a disconnect).
        if s.ending.is_none() {
            s.ending = Some(e);
        }
        drop(s);
        self.wake.notify_one();
    }
    #[cfg(test)]
    fn inflow_redrive_pending(&self) -> bool {
        self.inflow.redrive_pending()
    }
    fn rules(&self) -> Rules {
        Rules {
            self_chat: self.cfg.self_chat,
            self_prefix: self.cfg.self_prefix.clone(),
        }
    }
}

fn own_of(client: &Client) -> Own {
    Own {
        pn: client.pn().map(|j| j.user.to_string()),
        lid: client.lid().map(|j| j.user.to_string()),
    }
}

fn number_of(client: &Client) -> String {
    client
        .pn()
        .and_then(|j| adapter::e164(&j.user))
        .unwrap_or_else(|| "(number unknown)".into())
}

/// Inline on the client's dispatch path: only records and wakes, never blocks.
struct Events(Arc<Shared>);

impl EventHandler for Events {
    fn handle_event(&self, event: Arc<Event>) {
        let sh = &self.0;
        match &*event {
            Event::PairingQrCode(q) => {
                let n = {
                    let mut s = sh.seen();
                    s.qr_codes += 1;
                    s.qr_codes
                };
                if n > MAX_QR_CODES {
                    sh.end(Ending::PairingExhausted);
                } else {
                    sh.ctx
                        .reporter
                        .set(State::NeedsOwner, "not linked — scan the QR");
                    sh.pairing.publish(Pairing::Qr {
                        payload: q.code.clone(),
                        expires_s: q.timeout.as_secs(),
                    });
                }
            }
            Event::PairingQrCodesExhausted(_) => sh.end(Ending::PairingExhausted),
            Event::PairingCode(c) => {
                sh.ctx.reporter.set(
                    State::NeedsOwner,
                    "not linked — enter the pairing code on the phone",
                );
                sh.pairing.publish(Pairing::Code {
                    code: c.code.clone(),
                });
            }
            Event::PairSuccess(_) => {
                tracing::info!("WhatsApp paired; reconnecting with the new identity");
                sh.seen().pair_success = true;
                sh.wake.notify_one();
            }
            Event::PairError(_) => tracing::warn!("WhatsApp pairing failed on the phone's side"),
            Event::Connected(_) => {
                sh.seen().up = true;
                sh.wake.notify_one();
            }
            Event::Disconnected(d) => {
                sh.seen().last_disconnect = Some(d.reason.to_string());
            }
            Event::LoggedOut(_) => sh.end(Ending::LoggedOut),
            Event::StreamReplaced(_) => sh.end(Ending::Replaced),
            Event::TemporaryBan(b) => sh.end(Ending::TempBanned {
                expire_s: u64::try_from(b.expire.num_seconds()).unwrap_or(0),
            }),
            Event::ClientOutdated(_) => sh.end(Ending::ClientOutdated),
            Event::StreamError(e) if e.code == "429" => sh.end(Ending::RateLimited),
            Event::ServerAck(a) => {
                if let Some(tx) = sh.seen().acks.remove(&a.id) {
                    let _ = tx.send(a.error.clone());
                }
            }
            Event::Messages(batch) => {
                // Placeholder recoveries bypass the durability hook (the library acked them on
                // its own path): queued for the same submit path as every other message.
                for m in batch.messages.iter() {
                    if m.info.unavailable_request_id.is_some() {
                        inbound::queue_recovered(sh, m.clone());
                    }
                }
            }
            _ => {}
        }
    }
}

/// One run of the channel with `opts`: until shutdown, until it is linked (with
/// `exit_when_linked`), or until it needs the owner (logged out, replaced, banned, pairing paused
/// or cancelled, unlinked), when it returns and the other channels carry on. The owner's requests
/// arrive in `inbox` ([`link`]).
pub async fn run_with(
    cfg: Arc<WhatsAppConfig>,
    ctx: ChannelContext,
    pairing: PairingPublisher,
    opts: Options,
    inbox: &mut link::Inbox,
) -> Result<Outcome, ChannelError> {
    let mut phone = opts.phone.clone();
    let backend = KvBackend::new(ctx.store.kv(KvTable::WhatsApp));
    let paired = backend.is_paired().await;
    ctx.reporter.set(
        State::Starting,
        if paired {
            "connecting"
        } else {
            "not linked — connecting to show the QR"
        },
    );
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        ctx: ctx.clone(),
        pairing: pairing.clone(),
        seen: Mutex::new(Seen::default()),
        sent: Mutex::new(SentIds::default()),
        wake: Notify::new(),
        inflow: inbound::Inflow::new(),
    });
    let url = cfg.server_url.get_ref().clone();
    let factory = transport::WsFactory::new(&url);
    let connect_error = factory.last_error();
    let mut builder = Bot::builder()
        .with_backend(backend.clone())
        .with_transport_factory(factory)
        .with_http_client(http::WaHttp::new(ctx.http.clone()))
        .with_runtime(TokioRuntime)
        .with_event_handler(Events(shared.clone()))
        .with_inbound_durability_hook(inbound::Hook(shared.clone()))
        // An assistant needs no chat history: skips downloading and storing it.
        .skip_history_sync();
    if url != DEFAULT_SERVER_URL {
        builder = builder.with_version(TEST_SERVER_VERSION);
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| ChannelError(format!("cannot start the WhatsApp client: {e}")))?;
    let client = bot.client();
    // Wait for a previous driver's client (a restart after a panic) to be gone.
    let slot = ONE_CLIENT.clone().lock_owned().await;
    let mut teardown = Teardown {
        client: client.clone(),
        conn: None,
        slot: Some(slot),
    };
    // We drive reconnects ourselves (adapter::decide).
    client.enable_auto_reconnect.store(false, Ordering::Relaxed);
    let _recovered = AbortOnDrop(tokio::spawn(inbound::drain_recovered(
        shared.clone(),
        client.clone(),
    )));
    let mut bot = Some(bot);

    let mut commands = ctx.commands.clone().lock_owned().await;
    let mut shutdown = ctx.shutdown.clone();
    let seed = crate::store::now_ms() ^ 0x5741;
    let mut backoff = Backoff::new(adapter::RECONNECT_BASE, adapter::RECONNECT_CAP, seed);
    let mut first = true;

    loop {
        ctx.reporter.beat_within(LINK_WITHIN);
        {
            let mut s = shared.seen();
            s.ending = None;
            s.pair_success = false;
            s.up = false;
        }
        if !first {
            Metrics::inc(&ctx.metrics.reconnects[ChannelKind::WhatsApp]);
        }
        first = false;
        // One connection: the client's run loop returns when it ends (auto-reconnect is off).
        let conn = {
            let client = client.clone();
            let bot = bot.take();
            tokio::spawn(async move {
                match bot {
                    Some(b) => b.run().await,
                    None => client.run().await,
                }
            })
        };
        if let Some(phone) = &phone {
            if !backend.is_paired().await {
                request_code(&client, phone);
            }
        }
        let mut conn = conn;
        teardown.conn = Some(conn.abort_handle());
        // Aborted when this connection's loop is left, whichever way.
        let _probe = AbortOnDrop(tokio::spawn(deaf_link_probe(
            client.clone(),
            ctx.reporter.clone(),
        )));
        let mut announced_up = false;
        let ended = loop {
            tokio::select! {
                _ = &mut conn => break false,
                _ = shutdown.wait() => break true,
                _ = shared.wake.notified() => {
                    let (up, ending, paired_now) = {
                        let s = shared.seen();
                        (s.up, s.ending.clone(), s.pair_success)
                    };
                    if paired_now {
                        // The credentials from pair-success are durable before the 515 reconnect
                        // uses them (every store write is fsynced; this flushes the device row).
                        if let Err(e) = client.persistence_manager().flush().await {
                            tracing::error!(error = %e, "could not save the new WhatsApp identity");
                        }
                    }
                    if up && !announced_up {
                        announced_up = true;
                        ctx.reporter.beat_within(LINK_WITHIN);
                        backoff.reset();
                        let number = number_of(&client);
                        ctx.reporter.set(State::Up, format!("linked {number}"));
                        pairing.publish(Pairing::Linked { number: number.clone() });
                        tracing::info!("WhatsApp connected");
                        crate::fault::panic_point("whatsapp-connected");
                        // The outage is over: the next failure (ours or the library's) is news.
                        crate::repeat::settled(REPEAT_SITE);
                        crate::repeat::settled(crate::repeat::LIBRARY);
                        if opts.exit_when_linked {
                            shutdown_client(&client).await;
                            let _ = conn.await;
                            return Ok(Outcome::Linked(number));
                        }
                    }
                    if matches!(ending, Some(Ending::PairingExhausted)) {
                        // Stop showing codes: disconnect this attempt.
                        shutdown_client(&client).await;
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => handle_command(&shared, &client, cmd),
                    None => break true,
                },
                ask = inbox.next() => {
                    if let Some(out) = link::during_run(ask, &shared, &client, &backend, &mut phone).await {
                        let _ = conn.await;
                        return Ok(out);
                    }
                }
            }
        };
        if ended {
            shutdown_client(&client).await;
            let _ = conn.await;
            ctx.reporter.set(State::Off, "stopped");
            return Ok(Outcome::Shutdown);
        }
        // The connection ended: decide.
        let (ending, was_up, pair_success, last) = {
            let s = shared.seen();
            (
                s.ending.clone(),
                s.up,
                s.pair_success,
                s.last_disconnect.clone(),
            )
        };
        let ending = match ending {
            Some(e) => e,
            None if pair_success => Ending::RestartRequired,
            None => Ending::Lost,
        };
        if pair_success {
            let _ = client.persistence_manager().flush().await;
            // The new identity is durable; a power cut here must not force a re-pairing.
            crate::fault::crash_point("after-pair-success");
        }
        match adapter::decide(&ending, was_up, &mut backoff) {
            Decision::Exit => return Ok(Outcome::Shutdown),
            Decision::ReconnectNow => {}
            Decision::ReconnectAfter(d) => {
                let connect_failure = connect_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let why = if was_up {
                    last
                } else {
                    connect_failure.or(last)
                }
                .unwrap_or_else(|| "connection failed".into());
                ctx.reporter
                    .set(State::Degraded, format!("reconnecting ({why})"));
                // Once per outage and reason, then a reminder every 10 minutes (a box without
                // network retries every few seconds for as long as it takes). A link that was up
                // and dropped is news.
                if was_up {
                    crate::repeat::settled(REPEAT_SITE);
                }
                match crate::repeat::admit(REPEAT_SITE, &why) {
                    Some(note) => {
                        tracing::info!(delay_ms = d.as_millis() as u64, reason = %why, "WhatsApp reconnecting{note}")
                    }
                    None => {
                        tracing::debug!(delay_ms = d.as_millis() as u64, reason = %why, "WhatsApp reconnecting")
                    }
                }
                let until = Instant::now() + d;
                ctx.reporter.beat_within(d + WAIT_SLACK);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = shutdown.wait() => {
                            shutdown_client(&client).await;
                            ctx.reporter.set(State::Off, "stopped");
                            return Ok(Outcome::Shutdown);
                        }
                        cmd = commands.recv() => match cmd {
                            Some(cmd) => handle_command(&shared, &client, cmd),
                            None => return Ok(Outcome::Shutdown),
                        },
                        ask = inbox.next() => {
                            if let Some(out) = link::during_run(ask, &shared, &client, &backend, &mut phone).await {
                                return Ok(out);
                            }
                        }
                    }
                }
            }
            Decision::Stop {
                wipe,
                detail,
                pair_again,
                paused,
            } => {
                shutdown_client(&client).await;
                if wipe {
                    match backend.wipe().await {
                        Ok(n) => {
                            tracing::warn!(rows = n, "WhatsApp logged out; its state was wiped")
                        }
                        Err(e) => tracing::error!(error = %e, "could not wipe the WhatsApp state"),
                    }
                }
                if pair_again {
                    pairing.publish(Pairing::PairAgain);
                } else if paused {
                    pairing.publish(Pairing::Paused);
                }
                tracing::warn!(status = %detail, "WhatsApp stopped; it needs the owner");
                ctx.reporter.set(State::NeedsOwner, detail.clone());
                fail_pending(&shared);
                return Ok(Outcome::NeedsOwner(detail));
            }
        }
    }
}

/// Asks WhatsApp for an 8-character pairing code for `phone` (`+` and digits) once the socket is
/// up; the code arrives as an event and is published like a QR.
fn request_code(client: &Arc<Client>, phone: &str) {
    let c = client.clone();
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    tokio::spawn(async move {
        if c.wait_for_socket(PAIR_CODE_SOCKET_WAIT).await.is_ok() && !c.is_logged_in() {
            let o = whatsapp_rust::pair_code::PairCodeOptions {
                phone_number: digits,
                ..Default::default()
            };
            if let Err(e) = c.pair_with_code(o).await {
                tracing::warn!(error = %e, "could not get a pairing code");
            }
        }
    });
}

/// One WhatsApp client per process at a time: a driver holds this until its client is gone.
static ONE_CLIENT: std::sync::LazyLock<Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Arc::default);

/// Ends the client when the driver ends, however it ends (a panic included): aborts its
/// connection task, disconnects it (bounded), and only then frees the one-client slot. Two
/// clients on one identity would both process messages on the same Signal state, and the server
/// would replace one with the other.
struct Teardown {
    client: Arc<Client>,
    conn: Option<tokio::task::AbortHandle>,
    slot: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.abort();
        }
        let client = self.client.clone();
        let slot = self.slot.take();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                shutdown_client(&client).await;
                drop(slot);
            });
        }
    }
}

/// Aborts a task when dropped: ties a helper task's life to a scope.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A link that still carries bytes but answers nothing — e.g. the Noise read counter out of step
/// after a frame that failed to decrypt: every later frame fails too, yet the bytes keep the
/// library's and the transport's dead-link timers satisfied — is found by asking: a keepalive IQ
/// every [`PROBE_EVERY`] while logged in; [`PROBE_FAILURES`] unanswered in a row force a
/// reconnect (the server redelivers whatever was not acknowledged). Worst case to notice:
/// `PROBE_EVERY + PROBE_FAILURES × (PROBE_DEADLINE + PROBE_SLACK)` = 39 s. Only an error that
/// came back at once (not connected) paces the next probe; a probe that timed out already waited.
async fn deaf_link_probe(client: Arc<Client>, row: crate::status::Reporter) {
    use whatsapp_rust::wacore::iq::keepalive::KeepaliveSpec;
    use whatsapp_rust::wacore::iq::spec::IqSpec;
    let mut failures = 0u32;
    loop {
        // After an unanswered probe the next one goes at once: a deaf link is found sooner.
        if failures == 0 {
            tokio::time::sleep(PROBE_EVERY).await;
        }
        if !client.is_logged_in() {
            failures = 0;
            continue;
        }
        let iq = KeepaliveSpec::with_timeout(PROBE_DEADLINE).build_iq();
        let asked = tokio::time::Instant::now();
        match tokio::time::timeout(PROBE_DEADLINE + PROBE_SLACK, client.send_iq(iq)).await {
            Ok(Ok(_)) => {
                failures = 0;
                row.beat_within(LINK_WITHIN);
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::debug!(error = %e, failures, "WhatsApp probe unanswered");
                // An error that came back at once (not a timeout): pace the next probe so that
                // it, too, has had the deadline to be answered.
                tokio::time::sleep(PROBE_DEADLINE.saturating_sub(asked.elapsed())).await;
            }
            Err(_) => {
                failures += 1;
                tracing::debug!(failures, "WhatsApp probe unanswered");
            }
        }
        if failures >= PROBE_FAILURES {
            tracing::warn!(
                "WhatsApp link answers nothing ({PROBE_FAILURES} probes unanswered although \
                 connected): reconnecting"
            );
            client.reconnect_immediately().await;
            return;
        }
    }
}

/// Ends the client for good (flushes its buffered state), bounded in time.
async fn shutdown_client(client: &Arc<Client>) {
    if tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect())
        .await
        .is_err()
    {
        tracing::warn!("WhatsApp client did not disconnect in time");
    }
}

fn fail_pending(sh: &Shared) {
    for (_, tx) in sh.seen().acks.drain() {
        let _ = tx.send(Some("channel stopped".into()));
    }
}

/// Carries out one command on its own task, so a send never holds up the connection loop.
fn handle_command(sh: &Arc<Shared>, client: &Arc<Client>, cmd: ChannelCommand) {
    match cmd {
        ChannelCommand::Typing { chat, on } => {
            let c = client.clone();
            tokio::spawn(async move {
                let Ok(jid) = chat.parse::<Jid>() else { return };
                let r = if on {
                    c.chatstate().send_composing(&jid).await
                } else {
                    c.chatstate().send_paused(&jid).await
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "typing indicator not sent");
                }
            });
        }
        // A resend carries the same message id: a recipient's devices keep one message per id.
        ChannelCommand::Reconcile { done, .. } => {
            let _ = done.send(crate::channel::Doubt::NotSent);
        }
        ChannelCommand::Send {
            chat,
            text,
            key,
            arm,
            done,
            ..
        } => {
            let sh = sh.clone();
            let c = client.clone();
            tokio::spawn(async move {
                let r = send(&sh, &c, &chat, text, &key, arm).await;
                if let Err(e) = &r {
                    tracing::info!(error = %e, "WhatsApp send failed");
                }
                let _ = done.send(r);
            });
        }
    }
}

/// Sends one chunk with the id derived from `key`; Ok once the server acked it.
async fn send(
    sh: &Arc<Shared>,
    client: &Arc<Client>,
    chat: &str,
    text: String,
    key: &str,
    arm: crate::channel::Arm,
) -> Result<(), SendError> {
    if !client.is_logged_in() {
        return Err(SendError::Retry("WhatsApp is not connected".into()));
    }
    let jid: Jid = chat
        .parse()
        .map_err(|_| SendError::Permanent(format!("{chat:?} is not a WhatsApp chat address")))?;
    let own = own_of(client);
    let is_self = (jid.is_pn() && own.pn.as_deref() == Some(jid.user.as_str()))
        || (jid.is_lid() && own.lid.as_deref() == Some(jid.user.as_str()));
    let text = if is_self && !text.starts_with(&sh.cfg.self_prefix) {
        format!("{}{text}", sh.cfg.self_prefix)
    } else {
        text
    };
    let id = adapter::message_id_for(key);
    sh.sent().remember(&id, Instant::now());
    let (tx, rx) = oneshot::channel();
    {
        let mut s = sh.seen();
        if s.acks.len() >= MAX_PENDING_ACKS && !s.acks.contains_key(&id) {
            return Err(SendError::Retry(
                "too many sends awaiting the server".into(),
            ));
        }
        s.acks.insert(id.clone(), tx);
    }
    let msg = wa::Message {
        conversation: Some(text),
        ..Default::default()
    };
    if let Err(e) = arm.arm(0).await {
        sh.seen().acks.remove(&id);
        return Err(e);
    }
    let sent = client
        .send_message_with_options(jid, msg, SendOptions::default().with_message_id(id.clone()))
        .await;
    if let Err(e) = sent {
        sh.seen().acks.remove(&id);
        return Err(classify_send_error(&e));
    }
    match tokio::time::timeout(SEND_ACK_TIMEOUT, rx).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(code))) => Err(classify_nack(&code)),
        Ok(Err(_)) => Err(SendError::Retry("channel restarted".into())),
        Err(_) => {
            sh.seen().acks.remove(&id);
            Err(SendError::Retry("no acknowledgement from WhatsApp".into()))
        }
    }
}

/// How long to wait before offering again a message WhatsApp refused for an account restriction
/// that lifts with time (463: no trusted-contact token yet; 475: too many new chats).
pub const RESTRICTED_RETRY: Duration = Duration::from_secs(300);

/// What a server nack (the `error` attribute of the `<ack>` to our message; codes as WA Web's
/// `NackFromStanza` and whatsapp-rust's `NackReason` name them) means for the reply: the same id
/// is sent again later, or the reply is given up.
pub fn classify_nack(code: &str) -> SendError {
    let why = |what: &str| format!("WhatsApp refused the message (error {code}: {what})");
    match code {
        // Transient on the server's side: try again.
        "408" | "429" | "500" | "503" | "552" => SendError::Retry(why("temporary")),
        // Stale group addressing / an old Signal counter: the client refreshes and re-encrypts.
        "421" | "496" => SendError::Retry(why("stale state, re-encrypting")),
        // Account restrictions that lift with time.
        "463" | "475" => SendError::RetryAfter(RESTRICTED_RETRY),
        // Malformed, unknown recipient, unsupported: it will never go.
        _ => SendError::Permanent(why("rejected")),
    }
}

fn classify_send_error(e: &whatsapp_rust::SendError) -> SendError {
    use whatsapp_rust::SendError as E;
    match e {
        E::InvalidRequest(why) => SendError::Permanent(why.clone()),
        E::NotLoggedIn => SendError::Retry("WhatsApp is not connected".into()),
        other => SendError::Retry(other.to_string()),
    }
}

/// Where [`display`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Stdout,
    Stderr,
}

/// The words a terminal shows for a pairing state (None: nothing to show).
pub fn pairing_text(p: &Pairing, term: Option<(usize, usize)>) -> Option<String> {
    match p {
        Pairing::Idle => None,
        Pairing::Qr { payload, expires_s } => Some(format!(
            "\nWhatsApp: not linked. Scan this QR code (it changes in about {expires_s} s):\n{}",
            qr::for_terminal(payload, term)
        )),
        Pairing::Code { code } => Some(format!(
            "\nWhatsApp pairing code: {code}\nOn the phone: WhatsApp → Settings → Linked devices → \
             Link a device → Link with phone number instead, then type the code.\n"
        )),
        Pairing::Linked { number } => Some(format!("WhatsApp: linked {number}\n")),
        Pairing::Paused => Some(
            "WhatsApp: pairing paused after several unscanned codes — run `clawbox pair whatsapp` to try again\n"
                .into(),
        ),
        Pairing::PairAgain => Some(
            "WhatsApp: logged out by the phone — run `clawbox pair whatsapp` to pair again\n".into(),
        ),
        Pairing::Stopped { why } => Some(format!("WhatsApp: stopped: {why}\n")),
    }
}

/// Shows every pairing state change on a terminal (the QR redrawn on each new code) until
/// shutdown.
pub async fn display(
    mut rx: tokio::sync::watch::Receiver<Pairing>,
    mut shutdown: crate::shutdown::Shutdown,
    screen: Screen,
) {
    use std::io::Write;
    loop {
        let text = pairing_text(
            &rx.borrow_and_update().clone(),
            qr::terminal_size_from_env(),
        );
        if let Some(text) = text {
            let _ = match screen {
                Screen::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
                Screen::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            };
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_room_for_the_prefix() {
        assert_eq!(SPEC.kind, ChannelKind::WhatsApp);
        const { assert!(SPEC.max_chars + 8 < 65_000) };
    }

    use crate::intake::{Intake, Submitted};
    use crate::store::Store;
    use inbound::Hook;
    use whatsapp_rust::InboundDurabilityHook;

    fn shared(
        read_receipts: bool,
    ) -> (
        Arc<Shared>,
        tokio::sync::mpsc::Receiver<crate::intake::Submission>,
        tokio::sync::watch::Receiver<Pairing>,
        crate::status::Board,
    ) {
        let metrics = Arc::new(Metrics::default());
        let store = Store::open_in_memory(metrics.clone()).unwrap();
        let (intake, subs) = Intake::test_channel(4);
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let (_trigger, shutdown) = crate::shutdown::Shutdown::new();
        let board = crate::status::Board::default();
        let ctx = ChannelContext {
            intake,
            store,
            metrics,
            reporter: board.register("whatsapp", true),
            http: crate::http::HttpClient::new(),
            commands: Arc::new(tokio::sync::Mutex::new(rx)),
            shutdown,
        };
        let (pairing, prx) = PairingPublisher::new();
        let cfg = WhatsAppConfig {
            read_receipts,
            ..WhatsAppConfig::default()
        };
        let sh = Arc::new(Shared {
            cfg: Arc::new(cfg),
            ctx,
            pairing,
            seen: Mutex::new(Seen::default()),
            sent: Mutex::new(SentIds::default()),
            wake: Notify::new(),
            inflow: inbound::Inflow::new(),
        });
        (sh, subs, prx, board)
    }

    fn qr(code: &str) -> Arc<Event> {
        Arc::new(Event::PairingQrCode(
            whatsapp_rust::types::events::PairingQrCode::builder()
                .code(code.to_string())
                .timeout(Duration::from_secs(20))
                .build(),
        ))
    }

    #[tokio::test]
    async fn qr_codes_are_published_and_pairing_pauses_after_three() {
        let (sh, _subs, prx, board) = shared(false);
        let h = Events(sh.clone());
        for i in 1..=MAX_QR_CODES {
            h.handle_event(qr(&format!("2@ref{i},k,k,k")));
            assert_eq!(
                *prx.borrow(),
                Pairing::Qr {
                    payload: format!("2@ref{i},k,k,k"),
                    expires_s: 20
                }
            );
            assert!(sh.seen().ending.is_none());
        }
        assert_eq!(board.snapshot()[0].detail, "not linked — scan the QR");
        // The next code means three expired unscanned: stop.
        h.handle_event(qr("2@ref4,k,k,k"));
        assert_eq!(sh.seen().ending, Some(Ending::PairingExhausted));
        assert!(
            matches!(&*prx.borrow(), Pairing::Qr { payload, .. } if payload.ends_with("ref3,k,k,k"))
        );
    }

    async fn test_client(sh: &Arc<Shared>) -> Arc<Client> {
        let backend = KvBackend::new(sh.ctx.store.kv(KvTable::WhatsApp));
        Bot::builder()
            .with_backend(backend)
            .with_transport_factory(transport::WsFactory::new("ws://127.0.0.1:1/ws/chat"))
            .with_http_client(http::WaHttp::new(sh.ctx.http.clone()))
            .with_runtime(TokioRuntime)
            .with_version(TEST_SERVER_VERSION)
            .build()
            .await
            .unwrap()
            .client()
    }

    fn inbound(id: &str, text: &str) -> InboundMessage {
        let info = whatsapp_rust::wacore::types::message::MessageInfo {
            source: whatsapp_rust::wacore::types::message::MessageSource {
                chat: "491701111111@s.whatsapp.net".parse().unwrap(),
                sender: "491701111111:2@s.whatsapp.net".parse().unwrap(),
                ..Default::default()
            },
            id: id.into(),
            ..Default::default()
        };
        InboundMessage::builder()
            .message(Arc::new(wa::Message {
                conversation: Some(text.into()),
                ..Default::default()
            }))
            .info(Arc::new(info))
            .build()
    }

    #[tokio::test]
    async fn the_hook_returns_only_after_the_inbox_took_the_message() {
        let (sh, mut subs, _prx, _board) = shared(false);
        let client = test_client(&sh).await;
        let hook = Hook(sh.clone());
        let batch = [inbound("A1", "hello"), inbound("A2", "again")];
        let call = hook.on_messages(client.clone(), &batch);
        tokio::pin!(call);
        // The hook (and so the client's ack) waits for the durable submit of each message.
        let first = tokio::select! {
            _ = &mut call => panic!("hook returned before the inbox answered"),
            s = subs.recv() => s.unwrap(),
        };
        assert_eq!(first.msg.id, "A1");
        assert_eq!(first.msg.sender, "+491701111111");
        first.reply.send(Ok(Submitted::Accepted)).unwrap();
        let second = tokio::select! {
            _ = &mut call => panic!("hook returned before the second message was stored"),
            s = subs.recv() => s.unwrap(),
        };
        second.reply.send(Ok(Submitted::Duplicate)).unwrap();
        call.await.unwrap();

        // A refused message is offered again (a busy inbox drains in seconds): taken the
        // second time, the hook succeeds and nothing is redelivered.
        let batch = [inbound("B1", "x")];
        let call = hook.on_messages(client.clone(), &batch);
        tokio::pin!(call);
        let s = tokio::select! {
            _ = &mut call => panic!("returned early"),
            s = subs.recv() => s.unwrap(),
        };
        s.reply
            .send(Err(IntakeError::Store("disk full".into())))
            .unwrap();
        let again = tokio::select! {
            _ = &mut call => panic!("gave up after one refusal"),
            s = subs.recv() => s.unwrap(),
        };
        assert_eq!(again.msg.id, "B1");
        again.reply.send(Ok(Submitted::Accepted)).unwrap();
        call.await.unwrap();
        assert!(!sh.inflow_redrive_pending());
    }

    /// An inbox that keeps refusing: after its patience the hook fails (the client does not ack)
    /// and a reconnect is on its way, so the server delivers the message again within seconds
    /// instead of at the next reconnect, days later on a stable link.
    #[tokio::test(start_paused = true)]
    async fn a_message_the_inbox_keeps_refusing_is_redriven_within_seconds() {
        let (sh, mut subs, _prx, _board) = shared(false);
        let client = test_client(&sh).await;
        let hook = Hook(sh.clone());
        let batch = [inbound("C1", "x")];
        let t0 = tokio::time::Instant::now();
        let call = hook.on_messages(client, &batch);
        tokio::pin!(call);
        let mut offers = 0;
        let r = loop {
            tokio::select! {
                r = &mut call => break r,
                s = subs.recv() => {
                    offers += 1;
                    s.unwrap().reply.send(Err(IntakeError::Busy)).unwrap();
                }
            }
        };
        assert!(r.is_err(), "not acknowledged");
        assert!(offers > 2, "offered again before giving up ({offers})");
        assert!(t0.elapsed() <= inbound::HOOK_PATIENCE);
        assert!(sh.inflow_redrive_pending(), "a reconnect is on its way");
    }

    /// A message recovered from the phone is submitted through the same path, and a store error
    /// does not lose it: it is offered until the inbox takes it.
    #[tokio::test(start_paused = true)]
    async fn a_recovered_message_is_retried_until_the_inbox_takes_it() {
        let (sh, mut subs, _prx, _board) = shared(false);
        let client = test_client(&sh).await;
        let drain = tokio::spawn(inbound::drain_recovered(sh.clone(), client));
        inbound::queue_recovered(&sh, inbound("R1", "while you were away"));
        let s = subs.recv().await.unwrap();
        assert_eq!(s.msg.id, "R1");
        s.reply
            .send(Err(IntakeError::Store("disk full".into())))
            .unwrap();
        let s = subs.recv().await.unwrap();
        assert_eq!(s.msg.id, "R1", "offered again");
        s.reply.send(Ok(Submitted::Accepted)).unwrap();
        drain.abort();
    }

    #[test]
    fn pairing_states_read_like_a_doctor() {
        assert_eq!(pairing_text(&Pairing::Idle, None), None);
        let code = pairing_text(
            &Pairing::Code {
                code: "ABCD-EFGH".into(),
            },
            None,
        )
        .unwrap();
        assert!(code.contains("ABCD-EFGH") && code.contains("Link with phone number"));
        assert!(
            pairing_text(&Pairing::Paused, None)
                .unwrap()
                .contains("clawbox pair whatsapp")
        );
        assert!(
            pairing_text(&Pairing::PairAgain, None)
                .unwrap()
                .contains("pair again")
        );
        assert_eq!(
            pairing_text(
                &Pairing::Linked {
                    number: "+4917".into()
                },
                None
            )
            .unwrap(),
            "WhatsApp: linked +4917\n"
        );
    }

    #[test]
    fn server_nacks_are_retried_or_given_up_by_code() {
        for code in ["408", "429", "500", "503", "552", "421", "496"] {
            assert!(
                matches!(classify_nack(code), SendError::Retry(_)),
                "{code} is retried"
            );
        }
        for code in ["463", "475"] {
            assert_eq!(
                classify_nack(code),
                SendError::RetryAfter(RESTRICTED_RETRY),
                "{code} waits"
            );
        }
        for code in ["400", "404", "479", "487", "491", "499", "551"] {
            assert!(
                matches!(classify_nack(code), SendError::Permanent(_)),
                "{code} is given up"
            );
        }
    }

    #[test]
    fn send_errors_are_classified() {
        assert!(matches!(
            classify_send_error(&whatsapp_rust::SendError::NotLoggedIn),
            SendError::Retry(_)
        ));
        assert!(matches!(
            classify_send_error(&whatsapp_rust::SendError::InvalidRequest("bad".into())),
            SendError::Permanent(_)
        ));
    }
}
