//! One run of the WhatsApp channel ([`run_with`]): the thin shell around [`Lifecycle`]. It builds
//! the client, feeds the lifecycle what happens (the client's events through [`Events`], inline;
//! the connection's end, the reconnect timer and shutdown from its one `select!`), carries out the
//! actions the lifecycle asks for ([`Run::perform`]: connect, publish, save, disconnect, wipe,
//! wait, finish), hands the router's commands to [`super::outbound`] and the owner's requests to
//! [`link`], and ends the client for good however the run ends ([`Teardown`]: one client per
//! process at a time). Decides nothing itself.
//!
//! Every connection gets a fresh client ([`Run::connect`]): the one before is disconnected
//! (flushing its state to the store) and dropped first. A client is never run again after its
//! connection ended — whatsapp-rust 0.7.0 can leave a reused client connected but deaf
//! (upstream #1264) — and a new client is the only way to offer a newly fetched web version after
//! a 405 (the version is fixed when a client is built).

use super::lifecycle::{Action, Ending, Finish, Input, Lifecycle};
use super::outbound::{fail_pending, handle_command};
use super::probe::deaf_link_probe;
use super::storage::KvBackend;
use super::version::{self, WebVersion};
use super::{
    CONNECTION_END_WAIT, Options, Outcome, Shared, http, identity, inbound, link, number_of,
    request_code, shutdown_client, transport,
};
use crate::channel::{ChannelCommand, ChannelContext, ChannelError};
use crate::config::WhatsAppConfig;
use crate::metrics::Metrics;
use crate::pairing::{Pairing, PairingPublisher};
use crate::shutdown::Shutdown;
use crate::status::State;
use crate::store::kv::KvTable;
use crate::vocab::ChannelKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::prelude::*;
use whatsapp_rust::types::events::{Event, EventHandler};

/// Our reconnect lines in the repeat suppressor ([`crate::repeat`]).
const REPEAT_SITE: &str = "whatsapp";

/// Inline on the client's dispatch path: translates the client's events for the lifecycle (and
/// the server's acks for the sends waiting on them) and wakes the driver; never blocks.
struct Events(Arc<Shared>);

impl EventHandler for Events {
    fn handle_event(&self, event: Arc<Event>) {
        let sh = &self.0;
        let input = match &*event {
            Event::PairingQrCode(q) => Input::Qr {
                payload: q.code.clone(),
                expires_s: q.timeout.as_secs(),
            },
            Event::PairingQrCodesExhausted(_) => Input::QrExhausted,
            Event::PairingCode(c) => Input::Code {
                code: c.code.clone(),
            },
            Event::PairSuccess(_) => Input::PairSuccess,
            Event::Connected(_) => Input::Connected,
            Event::Disconnected(d) => Input::Disconnected {
                reason: d.reason.to_string(),
            },
            Event::LoggedOut(_) => Input::Verdict(Ending::LoggedOut),
            Event::StreamReplaced(_) => Input::Verdict(Ending::Replaced),
            Event::TemporaryBan(b) => Input::Verdict(Ending::TempBanned {
                expire_s: u64::try_from(b.expire.num_seconds()).unwrap_or(0),
                at_unix_s: crate::store::now_ms() / 1000,
            }),
            // Every other `<failure reason=…>` at login (409, 411, 500, 503, a 402 without its
            // expiry, unknown codes): the library only reports it.
            Event::ConnectFailure(f) => Input::Verdict(Ending::Refused {
                code: f.reason.code(),
            }),
            Event::ClientOutdated(_) => Input::Verdict(Ending::ClientOutdated),
            Event::StreamError(e) if e.code == "429" => Input::Verdict(Ending::RateLimited),
            Event::PairError(_) => {
                tracing::warn!("WhatsApp pairing failed on the phone's side");
                return;
            }
            // The library already dropped the old session and identity and accepts the new one
            // (whatsapp-rust 0.7.0 `handle_identity_change`, `implicit` when noticed while
            // decrypting): said once, with no keys and no number.
            Event::IdentityChange(c) => {
                tracing::info!(
                    implicit = c.implicit,
                    "a WhatsApp contact reinstalled WhatsApp (their security code changed); their new identity is accepted"
                );
                return;
            }
            // The library asks the sender to resend (retry receipts, at most 5 per message,
            // then a request to the owner's phone) and dispatches this once per message; the
            // resend, when it decrypts, arrives as an ordinary message and is answered once.
            Event::UndecryptableMessage(_) => {
                tracing::info!(
                    "a WhatsApp message could not be decrypted; the sender is asked to send it again"
                );
                return;
            }
            Event::ServerAck(a) => {
                if let Some(tx) = sh.acks().remove(&a.id) {
                    let _ = tx.send(a.error.clone());
                }
                return;
            }
            Event::Messages(batch) => {
                // Placeholder recoveries bypass the durability hook (the library acked them on
                // its own path): queued for the same submit path as every other message.
                for m in batch.messages.iter() {
                    if m.info.unavailable_request_id.is_some() {
                        inbound::queue_recovered(sh, m.clone());
                    }
                }
                return;
            }
            _ => return,
        };
        sh.feed(input);
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
    let backend = KvBackend::new(ctx.store.kv(KvTable::WhatsApp));
    let paired = backend.is_paired().await;
    let seed = crate::store::now_ms() ^ 0x5741;
    let life = Lifecycle::new(opts.exit_when_linked, seed);
    let shared = Arc::new(Shared::new(cfg.clone(), ctx.clone(), pairing, life));
    let web_version = version::starting(&ctx.http, cfg.version_url.get_ref()).await;
    // Wait for a previous driver's client (a restart after a panic) to be gone.
    let slot = ONE_CLIENT.clone().lock_owned().await;
    let (bot, link) = build(&cfg, &ctx, &backend, &shared, web_version).await?;
    let client = bot.client();
    let (current, clients) = tokio::sync::watch::channel(client.clone());
    let _recovered = AbortOnDrop(tokio::spawn(inbound::drain_recovered(
        shared.clone(),
        clients,
    )));
    let mut run = Run {
        teardown: Teardown {
            client: client.clone(),
            link: link.clone(),
            conn: None,
            slot: Some(slot),
        },
        sh: shared,
        client,
        bot: Some(bot),
        current,
        web_version,
        backend,
        phone: opts.phone,
        link,
        conn: None,
        probe: None,
        wait: None,
    };
    run.sh.feed(Input::Start { paired });
    let mut commands = ctx.commands.clone().lock_owned().await;
    Ok(run.drive(&mut commands, ctx.shutdown.clone(), inbox).await)
}

/// A client for one connection offering `web_version`, its events and inbound messages going to
/// `shared`; and the hold on its transport's link (the latest connect failure, the socket's close).
/// Reconnects are ours (the lifecycle): the client's own are off.
async fn build(
    cfg: &WhatsAppConfig,
    ctx: &ChannelContext,
    backend: &KvBackend,
    shared: &Arc<Shared>,
    web_version: WebVersion,
) -> Result<(whatsapp_rust::bot::Bot, transport::Link), ChannelError> {
    let url = cfg.server_url.get_ref().clone();
    let factory = transport::WsFactory::new(&url);
    let link = factory.link();
    let builder = Bot::builder()
        .with_backend(backend.clone())
        .with_transport_factory(factory)
        .with_http_client(http::WaHttp::new(ctx.http.clone()))
        .with_runtime(TokioRuntime)
        .with_event_handler(Events(shared.clone()))
        .with_inbound_durability_hook(inbound::Hook(shared.clone()))
        // An assistant needs no chat history: skips downloading and storing it.
        .skip_history_sync()
        .with_version(web_version);
    let bot = builder
        .build()
        .await
        .map_err(|e| ChannelError(format!("cannot start the WhatsApp client: {e}")))?;
    bot.client()
        .enable_auto_reconnect
        .store(false, Ordering::Relaxed);
    Ok((bot, link))
}

/// The driver's side of one run: the client, its connection task, and the lifecycle's actions
/// carried out ([`Run::perform`]).
struct Run {
    sh: Arc<Shared>,
    client: Arc<Client>,
    /// The client before its connection (`Bot::run` starts it); `None` once it ran.
    bot: Option<whatsapp_rust::bot::Bot>,
    /// Tells the recovered-message drain which client is current.
    current: tokio::sync::watch::Sender<Arc<Client>>,
    /// The web version the next client offers (the version document's, [`version`]).
    web_version: WebVersion,
    backend: KvBackend,
    /// Link with a pairing code for this number instead of a QR.
    phone: Option<String>,
    /// The client's link: why its latest connect failed, and its socket's close.
    link: transport::Link,
    /// The connection running now: the client's run loop returns when it ends.
    conn: Option<JoinHandle<()>>,
    /// The deaf-link probe of the connection running now (aborted when dropped).
    probe: Option<AbortOnDrop>,
    /// When the lifecycle wants [`Input::TimerFired`].
    wait: Option<Instant>,
    teardown: Teardown,
}

impl Run {
    /// Feeds the lifecycle and carries out its actions until the run is over.
    async fn drive(
        &mut self,
        commands: &mut mpsc::Receiver<ChannelCommand>,
        mut shutdown: Shutdown,
        inbox: &mut link::Inbox,
    ) -> Outcome {
        loop {
            // Everything the lifecycle asks for, in order (the lock is not held across an await).
            loop {
                let next = self.sh.life().poll_action();
                let Some(action) = next else { break };
                if let Some(outcome) = self.perform(action).await {
                    return outcome;
                }
            }
            let input = tokio::select! {
                () = connection_end(&mut self.conn) => {
                    self.probe = None;
                    Input::ConnectionEnded { connect_error: self.link.take_error() }
                }
                _ = shutdown.wait() => Input::Shutdown,
                // The client's callbacks fed the lifecycle.
                _ = self.sh.wake.notified() => continue,
                () = sleep_until(self.wait) => {
                    self.wait = None;
                    Input::TimerFired
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        handle_command(&self.sh, &self.client, cmd);
                        continue;
                    }
                    None => Input::Shutdown,
                },
                ask = inbox.next() => {
                    if let Some(out) = link::during_run(ask, &self.sh, &self.client, &self.link, &self.backend, &mut self.phone).await {
                        if let Some(c) = self.conn.take() {
                            connection_gone(c).await;
                        }
                        return out;
                    }
                    continue;
                }
            };
            self.sh.life().handle(input, Instant::now());
        }
    }

    /// Carries out one action; `Some` when the run is over.
    async fn perform(&mut self, action: Action) -> Option<Outcome> {
        let ctx = &self.sh.ctx;
        match action {
            Action::Connect { reconnect } => self.connect(reconnect).await,
            Action::BeatWithin(d) => ctx.reporter.beat_within(d),
            Action::Report(state, words) => ctx.reporter.set(state, words),
            Action::Publish(p) => self.sh.pairing.publish(p),
            Action::Linked => {
                let number = number_of(&self.client);
                ctx.reporter.set(State::Up, format!("linked {number}"));
                self.sh.pairing.publish(Pairing::Linked { number });
                tracing::info!("WhatsApp connected");
                crate::fault::panic_point("whatsapp-connected");
                // allow_from in both address forms (a number's LID, a LID's number), if due.
                identity::spawn_resolve(&self.sh, &self.client, &self.backend);
                // The outage is over: the next failure (ours or the library's) is news.
                crate::repeat::settled(REPEAT_SITE);
                crate::repeat::settled(crate::repeat::LIBRARY);
            }
            Action::SaveIdentity { restarting } => {
                if !restarting {
                    tracing::info!("WhatsApp paired; reconnecting with the new identity");
                }
                // The credentials from pair-success are durable before the 515 reconnect uses
                // them (the library updated its device before it said so).
                self.settle_device().await;
                if restarting {
                    crate::fault::crash_point("after-pair-success");
                }
            }
            Action::Disconnect => shutdown_client(&self.client, &self.link).await,
            Action::LogReconnect { delay, why, news } => log_reconnect(delay, &why, news),
            Action::WaitUntil(t) => self.wait = Some(t),
            Action::FetchVersion => {
                let url = self.sh.cfg.version_url.get_ref().clone();
                let newer = match version::fetch(&ctx.http, &url).await {
                    Ok(v) => {
                        let newer = v != self.web_version;
                        tracing::warn!(
                            refused = %version::show(self.web_version),
                            current = %version::show(v),
                            "WhatsApp refused this client version; fetched the current one"
                        );
                        self.web_version = v;
                        newer
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "WhatsApp refused this client version and the current one could not be read");
                        false
                    }
                };
                self.sh
                    .life()
                    .handle(Input::VersionFetched { newer }, Instant::now());
            }
            Action::Wipe => match self.backend.wipe().await {
                Ok(n) => tracing::warn!(rows = n, "WhatsApp logged out; its state was wiped"),
                Err(e) => tracing::error!(error = %e, "could not wipe the WhatsApp state"),
            },
            Action::Finish(f) => {
                if let Some(c) = self.conn.take() {
                    connection_gone(c).await;
                }
                return Some(match f {
                    Finish::Linked => Outcome::Linked(number_of(&self.client)),
                    Finish::NeedsOwner(why) => {
                        tracing::warn!(status = %why, "WhatsApp stopped; it needs the owner");
                        fail_pending(&self.sh);
                        Outcome::NeedsOwner(why)
                    }
                    Finish::Shutdown => Outcome::Shutdown,
                });
            }
        }
        None
    }

    /// Starts one connection, on a fresh client, and its deaf-link probe.
    async fn connect(&mut self, reconnect: bool) {
        if reconnect {
            Metrics::inc(&self.sh.ctx.metrics.reconnects[ChannelKind::WhatsApp]);
        }
        if self.bot.is_none() && !self.renew_client().await {
            // No client could be built (the store failed): this attempt ends at once and the
            // lifecycle waits before the next one.
            self.conn = Some(tokio::spawn(async {}));
            return;
        }
        let Some(bot) = self.bot.take() else { return };
        let conn = tokio::spawn(bot.run());
        self.teardown.conn = Some(conn.abort_handle());
        self.conn = Some(conn);
        if let Some(phone) = &self.phone {
            if !self.backend.is_paired().await {
                request_code(&self.client, phone);
            }
        }
        self.probe = Some(AbortOnDrop(tokio::spawn(deaf_link_probe(
            self.client.clone(),
            self.sh.ctx.reporter.clone(),
        ))));
    }

    /// Stores the client's device as it holds it in memory ([`KvBackend::settle_device`]).
    async fn settle_device(&self) {
        let device = self.client.persistence_manager().get_device_snapshot();
        match self.backend.settle_device(&device.to_serializable()).await {
            Ok(wrote) => tracing::debug!(wrote, "WhatsApp device settled"),
            Err(e) => tracing::error!(error = %e, "could not save the WhatsApp identity"),
        }
    }

    /// Ends the client whose connection is over (its disconnect flushes its state to the store,
    /// bounded in time) and builds the next one from the store, offering the current web
    /// version. False when it could not be built.
    async fn renew_client(&mut self) -> bool {
        self.teardown.conn = None;
        shutdown_client(&self.client, &self.link).await;
        // The next client starts from what this one knew, whatever its own saver still has in
        // flight.
        self.settle_device().await;
        let built = build(
            &self.sh.cfg,
            &self.sh.ctx,
            &self.backend,
            &self.sh,
            self.web_version,
        )
        .await;
        match built {
            Ok((bot, link)) => {
                self.client = bot.client();
                self.teardown.client = self.client.clone();
                self.teardown.link = link.clone();
                self.current.send_replace(self.client.clone());
                self.link = link;
                self.bot = Some(bot);
                true
            }
            Err(e) => {
                tracing::error!(error = %e.0, "could not build a new WhatsApp client");
                false
            }
        }
    }
}

/// Once per outage and reason, then a reminder every 10 minutes (a box without network retries
/// every few seconds for as long as it takes). A link that was up and dropped (`news`) is news.
fn log_reconnect(delay: Duration, why: &str, news: bool) {
    if news {
        crate::repeat::settled(REPEAT_SITE);
    }
    let delay_ms = delay.as_millis() as u64;
    match crate::repeat::admit(REPEAT_SITE, why) {
        Some(note) => tracing::info!(delay_ms, reason = %why, "WhatsApp reconnecting{note}"),
        None => tracing::debug!(delay_ms, reason = %why, "WhatsApp reconnecting"),
    }
}

/// Until the running connection (if any) ends; pending forever when none runs.
async fn connection_end(conn: &mut Option<JoinHandle<()>>) {
    match conn {
        Some(c) => {
            let _ = c.await;
            *conn = None;
        }
        None => std::future::pending().await,
    }
}

/// Until the connection's task `c` has ended, after a disconnect; aborted after
/// [`CONNECTION_END_WAIT`] so that a run always ends.
async fn connection_gone(mut c: JoinHandle<()>) {
    if tokio::time::timeout(CONNECTION_END_WAIT, &mut c)
        .await
        .is_err()
    {
        tracing::warn!("the WhatsApp connection did not end after its disconnect; aborted");
        c.abort();
    }
}

/// Until `at`; pending forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
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
    link: transport::Link,
    conn: Option<tokio::task::AbortHandle>,
    slot: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.abort();
        }
        let client = self.client.clone();
        let link = self.link.clone();
        let slot = self.slot.take();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                shutdown_client(&client, &link).await;
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

#[cfg(test)]
mod tests;
