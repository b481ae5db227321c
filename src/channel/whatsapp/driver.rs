//! One run of the WhatsApp channel ([`run_with`]): builds the client, drives its connections and
//! reconnects ([`adapter::decide`]), answers the client's events ([`Events`]: pairing codes,
//! connected, logged out, server acks), hands the router's commands to [`super::outbound`] and the
//! owner's requests to [`link`], and ends the client for good however the run ends
//! ([`Teardown`]: one client per process).

use super::adapter::{self, Decision, Ending, SentIds};
use super::outbound::{fail_pending, handle_command};
use super::probe::deaf_link_probe;
use super::storage::KvBackend;
use super::{
    DEFAULT_SERVER_URL, LINK_WITHIN, MAX_QR_CODES, Options, Outcome, Seen, Shared,
    TEST_SERVER_VERSION, http, inbound, link, number_of, request_code, shutdown_client, transport,
};
use crate::channel::{ChannelContext, ChannelError};
use crate::config::WhatsAppConfig;
use crate::metrics::Metrics;
use crate::pairing::{Pairing, PairingPublisher};
use crate::retry::{self, Backoff};
use crate::status::State;
use crate::store::kv::KvTable;
use crate::vocab::ChannelKind;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::prelude::*;
use whatsapp_rust::types::events::{Event, EventHandler};

/// On top of a reconnect wait: the in-memory work before the next attempt and scheduling delays.
const WAIT_SLACK: Duration = Duration::from_secs(5);
/// Our reconnect lines in the repeat suppressor ([`crate::repeat`]).
const REPEAT_SITE: &str = "whatsapp";

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
    let mut backoff = Backoff::new(retry::LINK, seed);
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

#[cfg(test)]
mod tests {
    use super::super::test_support::shared;
    use super::*;

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
}
