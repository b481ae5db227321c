//! The owner's requests to the WhatsApp channel — link it ([`Ask::Pair`], by QR or by a pairing
//! code for a phone number), stop a pairing ([`Ask::Cancel`]), unlink it ([`Ask::Unpair`]) — and
//! what a run does with one ([`during_run`]). The loop that keeps the channel ready for them in
//! the service is [`super::runs`]; the CLI's own runs without a service are
//! [`crate::control::direct`].
//!
//! Requests come from the control socket ([`crate::control`]) and the page ([`crate::web`])
//! through a [`Linker`]; the channel answers through a oneshot. Never logs the pairing payload or
//! the code.

use super::lifecycle::Input;
use super::outbound::fail_pending;
use super::storage::KvBackend;
use super::*;
use crate::pairing::Pairing;
use crate::status::State;
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
    /// The groups the linked account is in (`clawbox groups list`), asked of WhatsApp now.
    Groups {
        reply: oneshot::Sender<Result<super::groups::Listing, String>>,
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

    /// The groups the linked account is in, as WhatsApp lists them now.
    pub async fn groups(&self) -> Result<super::groups::Listing, String> {
        let (tx, rx) = oneshot::channel();
        self.submit(Ask::Groups { reply: tx })?;
        match tokio::time::timeout(ASK_TIMEOUT + super::groups::LIST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(NO_ANSWER.into()),
        }
    }

    /// Queues `ask` without waiting for an answer; errs when the channel is busy or gone.
    pub fn submit(&self, ask: Ask) -> Result<(), String> {
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

/// A request while the channel runs (connected, connecting or waiting to reconnect). `Some`: the
/// run ends with this outcome (its client already disconnected).
pub(super) async fn during_run(
    ask: Ask,
    sh: &Arc<Shared>,
    client: &Arc<Client>,
    link: &transport::Link,
    backend: &KvBackend,
    phone: &mut Option<String>,
) -> Option<Outcome> {
    match ask {
        Ask::Pair { phone: p, reply } => {
            let answer = if backend.is_paired().await {
                PairReply::AlreadyLinked(number_of(client))
            } else {
                // The owner is watching now: a full set of codes from here.
                sh.feed(Input::PairAsked);
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
            shutdown_client(client, link).await;
            sh.ctx
                .reporter
                .set(State::NeedsOwner, format!("not linked — {CANCELLED}"));
            sh.pairing.publish(Pairing::Stopped {
                why: CANCELLED.into(),
            });
            tracing::info!("WhatsApp pairing cancelled by the owner");
            Some(Outcome::NeedsOwner(CANCELLED.into()))
        }
        Ask::Groups { reply } => {
            super::groups::answer(client, reply);
            None
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
                    sh.feed(Input::OwnerLogout);
                    told = tokio::time::timeout(LOGOUT_TIMEOUT, client.logout())
                        .await
                        .is_ok();
                }
            }
            shutdown_client(client, link).await;
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

pub(super) async fn wipe(backend: &KvBackend) -> Result<(), String> {
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

pub(super) fn unlinked(ctx: &ChannelContext, pairing: &PairingPublisher) {
    ctx.reporter
        .set(State::NeedsOwner, format!("not linked — {UNLINKED}"));
    pairing.publish(Pairing::Stopped {
        why: UNLINKED.into(),
    });
}

/// What an unlink did, for the owner.
pub fn words(paired: bool, told: bool) -> String {
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
