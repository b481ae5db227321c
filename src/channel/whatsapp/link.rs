//! The owner's requests to the WhatsApp channel — link it ([`Ask::Pair`], by QR or by a pairing
//! code for a phone number), stop a pairing ([`Ask::Cancel`]), unlink it ([`Ask::Unpair`]) — and
//! the loop that keeps the channel ready for them in the service ([`serve`]): a channel that needs
//! the owner (pairing paused, logged out, replaced) waits here for the next request instead of
//! ending, so `clawbox pair whatsapp` and the pairing page link the running service without a
//! restart.
//!
//! Requests come from the control socket ([`crate::control`]) and the page ([`crate::web`])
//! through a [`Linker`]; the channel answers through a oneshot. The CLI's own runs without a
//! service (`pair`, `unpair` on the service's state) live here too. Never logs the pairing payload
//! or the code.

use super::adapter::Ending;
use super::outbound::fail_pending;
use super::storage::KvBackend;
use super::*;
use crate::channel::{ChannelCommand, ChannelError};
use crate::display::terminal::{Screen, display};
use crate::intake::IntakeError;
use crate::metrics::Metrics;
use crate::pairing::Pairing;
use crate::status::State;
use crate::store::kv::KvTable;
use crate::store::{Store, StoreError};
use tokio::sync::mpsc;

/// Owner requests waiting for the channel at once. One owner at a terminal or on the page asks one
/// thing at a time; a few more absorb a double click. Beyond it a request is refused as busy.
pub const ASK_QUEUE: usize = 4;
/// How long a requester waits for the channel to take its request. The channel answers at once
/// unless the supervisor is between two runs of it (a restart waits at most 30 s).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Unlinking a linked channel that is not logged in right now (reconnecting) waits this long for
/// it to log in, so WhatsApp hears the logout and the phone drops the device from its list.
const UNPAIR_LOGIN_WAIT: Duration = Duration::from_secs(10);
/// The logout (one IQ, then the client's flushing disconnect) must not hold the channel longer.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the unlink looks whether the client logged in meanwhile.
const LOGIN_POLL: Duration = Duration::from_millis(100);

/// What the owner asks of the channel.
#[derive(Debug)]
pub enum Ask {
    /// Link: show QR codes, or (with `phone`) ask for an 8-character code for that number.
    /// `reply`: whether it started; None for a requester that does not wait (the page).
    Pair {
        phone: Option<String>,
        reply: Option<oneshot::Sender<PairReply>>,
    },
    /// Stop showing codes (the terminal that asked went away). Nothing happens when linked.
    Cancel,
    /// Log out (so the phone drops this device) and wipe the WhatsApp state, only it.
    Unpair {
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// The channel's answer to [`Ask::Pair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairReply {
    /// Codes are coming (QR, or the pairing code): watch the pairing state.
    Started,
    /// Already linked to this number: nothing to do.
    AlreadyLinked(String),
}

/// The requesters' end. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Linker(mpsc::Sender<Ask>);

/// The channel's end; it survives the supervisor's restarts of the channel.
#[derive(Clone, Debug)]
pub struct Asks(Arc<tokio::sync::Mutex<mpsc::Receiver<Ask>>>);

/// Words when the channel did not take a request in time.
const NO_ANSWER: &str = "the WhatsApp channel did not answer — see `journalctl -u clawbox`";
/// What the status says once the owner unlinked the account.
pub const UNLINKED: &str = "unlinked by the owner — run `clawbox pair whatsapp` to link again";
/// What the status says once a pairing was cancelled.
pub const CANCELLED: &str = "pairing cancelled — run `clawbox pair whatsapp` to link";

impl Linker {
    pub fn new() -> (Linker, Asks) {
        let (tx, rx) = mpsc::channel(ASK_QUEUE);
        (Linker(tx), Asks(Arc::new(tokio::sync::Mutex::new(rx))))
    }

    /// Asks the channel to link and waits (at most [`ASK_TIMEOUT`]) for its answer.
    pub async fn pair(&self, phone: Option<String>) -> Result<PairReply, String> {
        let (tx, rx) = oneshot::channel();
        self.submit(Ask::Pair {
            phone,
            reply: Some(tx),
        })?;
        match tokio::time::timeout(ASK_TIMEOUT, rx).await {
            Ok(Ok(r)) => Ok(r),
            _ => Err(NO_ANSWER.into()),
        }
    }

    /// Asks the channel to link without waiting for it (the page answers at once and shows the
    /// pairing state as it comes).
    pub fn pair_later(&self, phone: Option<String>) -> Result<(), String> {
        self.submit(Ask::Pair { phone, reply: None })
    }

    /// Stops a pairing in progress; a linked channel is left alone.
    pub fn cancel(&self) {
        let _ = self.0.try_send(Ask::Cancel);
    }

    /// Logs out and wipes the WhatsApp state; the words say what was done.
    pub async fn unpair(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.submit(Ask::Unpair { reply: tx })?;
        // The logout itself may take its own time on top of the wait for the channel.
        match tokio::time::timeout(ASK_TIMEOUT + UNPAIR_LOGIN_WAIT + LOGOUT_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(NO_ANSWER.into()),
        }
    }

    fn submit(&self, ask: Ask) -> Result<(), String> {
        self.0.try_send(ask).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                "the WhatsApp channel is busy with other requests; try again in a moment".into()
            }
            mpsc::error::TrySendError::Closed(_) => "the WhatsApp channel has stopped".into(),
        })
    }
}

/// A run's view of the requests: the locked receiver, or none (a run nobody can ask anything).
pub struct Inbox(Option<tokio::sync::OwnedMutexGuard<mpsc::Receiver<Ask>>>);

impl Inbox {
    /// An inbox that never delivers.
    pub fn none() -> Inbox {
        Inbox(None)
    }

    /// Takes the channel's end for this run (a restarted run waits for the previous one's).
    pub async fn open(asks: &Asks) -> Inbox {
        Inbox(Some(asks.0.clone().lock_owned().await))
    }

    /// The next request; pending forever when there is none to come.
    pub async fn next(&mut self) -> Ask {
        if let Some(rx) = self.0.as_mut() {
            if let Some(ask) = rx.recv().await {
                return ask;
            }
        }
        std::future::pending().await
    }
}

/// The channel task in the service: runs the channel, and whenever it needs the owner, waits for
/// the owner's request (link again, unlink) instead of ending. Returns at shutdown.
pub async fn serve(
    cfg: Arc<WhatsAppConfig>,
    ctx: ChannelContext,
    pairing: PairingPublisher,
    asks: Asks,
) -> Result<(), ChannelError> {
    let mut inbox = Inbox::open(&asks).await;
    let mut opts = Options::default();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let outcome = run_with(
            cfg.clone(),
            ctx.clone(),
            pairing.clone(),
            opts.clone(),
            &mut inbox,
        )
        .await?;
        let why = match outcome {
            Outcome::NeedsOwner(why) => why,
            Outcome::Shutdown | Outcome::Linked(_) => return Ok(()),
        };
        opts.phone = None;
        // Every surface shows that nothing is on offer any more, and why.
        if !matches!(
            pairing.current(),
            Pairing::Paused | Pairing::PairAgain | Pairing::Stopped { .. }
        ) {
            pairing.publish(Pairing::Stopped { why });
        }
        loop {
            let ask = tokio::select! {
                a = inbox.next() => a,
                _ = shutdown.wait() => return Ok(()),
            };
            match ask {
                Ask::Pair { phone, reply } => {
                    if let Some(r) = reply {
                        let _ = r.send(PairReply::Started);
                    }
                    opts.phone = phone;
                    break;
                }
                Ask::Cancel => {}
                Ask::Unpair { reply } => {
                    let backend = KvBackend::new(ctx.store.kv(KvTable::WhatsApp));
                    let paired = backend.is_paired().await;
                    let r = wipe(&backend).await.map(|()| words(paired, false));
                    if r.is_ok() {
                        unlinked(&ctx, &pairing);
                    }
                    let _ = reply.send(r);
                }
            }
        }
    }
}

/// A request while the channel runs (connected, connecting or waiting to reconnect). `Some`: the
/// run ends with this outcome (its client already disconnected).
pub(super) async fn during_run(
    ask: Ask,
    sh: &Arc<Shared>,
    client: &Arc<Client>,
    backend: &KvBackend,
    phone: &mut Option<String>,
) -> Option<Outcome> {
    match ask {
        Ask::Pair { phone: p, reply } => {
            let answer = if backend.is_paired().await {
                PairReply::AlreadyLinked(number_of(client))
            } else {
                // The owner is watching now: a full set of codes from here.
                sh.seen().qr_codes = 0;
                if let Some(p) = p {
                    request_code(client, &p);
                    *phone = Some(p);
                }
                PairReply::Started
            };
            if let Some(r) = reply {
                let _ = r.send(answer);
            }
            None
        }
        Ask::Cancel => {
            if backend.is_paired().await {
                return None;
            }
            shutdown_client(client).await;
            sh.ctx
                .reporter
                .set(State::NeedsOwner, format!("not linked — {CANCELLED}"));
            sh.pairing.publish(Pairing::Stopped {
                why: CANCELLED.into(),
            });
            tracing::info!("WhatsApp pairing cancelled by the owner");
            Some(Outcome::NeedsOwner(CANCELLED.into()))
        }
        Ask::Unpair { reply } => {
            let paired = backend.is_paired().await;
            let mut told = false;
            if paired {
                let mut sd = sh.ctx.shutdown.clone();
                let logged_in = async {
                    while !client.is_logged_in() {
                        tokio::time::sleep(LOGIN_POLL).await;
                    }
                };
                let _ = tokio::select! {
                    r = tokio::time::timeout(UNPAIR_LOGIN_WAIT, logged_in) => r.is_ok(),
                    _ = sd.wait() => false,
                };
                if client.is_logged_in() {
                    // The logout's own LoggedOut event must not read as "removed by the phone".
                    sh.end(Ending::Shutdown);
                    told = tokio::time::timeout(LOGOUT_TIMEOUT, client.logout())
                        .await
                        .is_ok();
                }
            }
            shutdown_client(client).await;
            let r = wipe(backend).await.map(|()| words(paired, told));
            fail_pending(sh);
            if r.is_ok() {
                unlinked(&sh.ctx, &sh.pairing);
            }
            let _ = reply.send(r);
            Some(Outcome::NeedsOwner(UNLINKED.into()))
        }
    }
}

async fn wipe(backend: &KvBackend) -> Result<(), String> {
    match backend.wipe().await {
        Ok(n) => {
            tracing::warn!(
                rows = n,
                "WhatsApp unlinked by the owner; its state was wiped"
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "could not wipe the WhatsApp state");
            Err(format!("could not wipe the WhatsApp state: {e}"))
        }
    }
}

fn unlinked(ctx: &ChannelContext, pairing: &PairingPublisher) {
    ctx.reporter
        .set(State::NeedsOwner, format!("not linked — {UNLINKED}"));
    pairing.publish(Pairing::Stopped {
        why: UNLINKED.into(),
    });
}

/// What an unlink did, for the owner.
fn words(paired: bool, told: bool) -> String {
    match (paired, told) {
        (false, _) => "WhatsApp was not linked; its state is clear.".into(),
        (true, true) => {
            "WhatsApp unlinked: logged out (the phone drops this device) and its state wiped."
                .into()
        }
        (true, false) => "WhatsApp unlinked: its state is wiped, but WhatsApp could not be told \
                          (not connected) — remove the device on the phone: WhatsApp → Settings → \
                          Linked devices."
            .into(),
    }
}

/// The WhatsApp channel alone on the service's state, for the CLI when no service runs.
struct Standalone {
    store: Store,
    /// Its inbox refuses every message: the server redelivers them to the service later.
    ctx: ChannelContext,
    trigger: crate::shutdown::ShutdownTrigger,
    /// Held so the channel's command queue stays open (closed means shut down).
    _commands: mpsc::Sender<ChannelCommand>,
}

/// Opens the service's store for [`Standalone`]; errs with the exit code after saying why.
async fn standalone(cfg: &crate::config::Config) -> Result<Standalone, i32> {
    let metrics = Arc::new(Metrics::default());
    let store = match Store::open(&cfg.state_dir(), &cfg.store, metrics.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clawbox: {e}");
            return Err(match e {
                StoreError::Corrupt(_) => 65,
                StoreError::Open(_) => 73,
                _ => 74,
            });
        }
    };
    let (intake, mut submissions) = crate::intake::Intake::test_channel(1);
    tokio::spawn(async move {
        while let Some(s) = submissions.recv().await {
            let _ = s.reply.send(Err(IntakeError::ShuttingDown));
        }
    });
    let (trigger, shutdown) = crate::shutdown::Shutdown::new();
    let (commands_tx, commands_rx) = tokio::sync::mpsc::channel(1);
    let board = crate::status::Board::default();
    let ctx = ChannelContext {
        intake,
        store: store.clone(),
        metrics,
        reporter: board.register("whatsapp", true),
        http: crate::http::HttpClient::new(),
        commands: Arc::new(tokio::sync::Mutex::new(commands_rx)),
        shutdown,
    };
    Ok(Standalone {
        store,
        ctx,
        trigger,
        _commands: commands_tx,
    })
}

/// `clawbox pair whatsapp [--phone +E164]` when no service runs: the WhatsApp channel alone on the
/// service's state directory until it is linked. Returns the exit code: 0 linked, 1 not linked
/// (the message says why), 73/65/74 when the store cannot be used.
pub async fn pair(cfg: &crate::config::Config, phone: Option<String>) -> i32 {
    let Standalone {
        store,
        ctx,
        trigger,
        _commands,
    } = match standalone(cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let wcfg = Arc::new(cfg.channels.whatsapp.clone().unwrap_or_default());
    let (publisher, rx) = PairingPublisher::new();
    let shown = tokio::spawn(display(rx, ctx.shutdown.clone(), Screen::Stdout));
    let opts = Options {
        phone,
        exit_when_linked: true,
    };
    let mut inbox = Inbox::none();
    let run = run_with(wcfg, ctx, publisher, opts, &mut inbox);
    let outcome = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Shutdown),
    };
    trigger.trip();
    let _ = shown.await;
    store.close().await;
    match outcome {
        Ok(Outcome::Linked(number)) => {
            println!("WhatsApp linked {number}. Start the service: `systemctl start clawbox`.");
            0
        }
        Ok(Outcome::NeedsOwner(why)) => {
            eprintln!("clawbox: WhatsApp not linked: {why}");
            1
        }
        Ok(Outcome::Shutdown) => {
            eprintln!("clawbox: pairing interrupted; WhatsApp is not linked");
            1
        }
        Err(e) => {
            eprintln!("clawbox: {e}");
            1
        }
    }
}

/// `clawbox unpair whatsapp` when no service runs: connects with the stored identity just long
/// enough to log out (so the phone drops the device), then wipes the WhatsApp state. Returns the
/// exit code: 0 done, 1 failed, 73/65/74 when the store cannot be used.
pub async fn unpair(cfg: &crate::config::Config) -> i32 {
    let Standalone {
        store,
        ctx,
        trigger,
        _commands,
    } = match standalone(cfg).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let backend = KvBackend::new(ctx.store.kv(KvTable::WhatsApp));
    let result = if backend.is_paired().await {
        let wcfg = Arc::new(cfg.channels.whatsapp.clone().unwrap_or_default());
        let (publisher, _rx) = PairingPublisher::new();
        let (linker, asks) = Linker::new();
        let (tx, rx) = oneshot::channel();
        linker.submit(Ask::Unpair { reply: tx }).ok();
        let mut inbox = Inbox::open(&asks).await;
        // The run takes the request at once and ends once it is carried out.
        let ran = run_with(wcfg, ctx, publisher, Options::default(), &mut inbox).await;
        // A request the run never took is dropped with the queue: `rx` then says so.
        drop(inbox);
        drop(asks);
        match (rx.await, ran) {
            (Ok(r), _) => r,
            (Err(_), Err(e)) => Err(e.to_string()),
            (Err(_), Ok(_)) => Err("WhatsApp stopped before the unlink was done".into()),
        }
    } else {
        Ok(words(false, false))
    };
    trigger.trip();
    store.close().await;
    match result {
        Ok(w) => {
            println!("{w}");
            0
        }
        Err(e) => {
            eprintln!("clawbox: {e}");
            1
        }
    }
}
