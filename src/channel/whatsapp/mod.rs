//! The WhatsApp channel: the owner's WhatsApp account as a linked device (WhatsApp Web
//! multi-device), through the `whatsapp-rust` client, kept entirely behind this module.
//!
//! [`adapter`] is the sans-io core of messages (conversion, self chat, outgoing ids);
//! [`lid`] the sans-io core of identities (a person's number and LID: what to resolve, when,
//! the lookup budget), [`identity`] its shell; [`lifecycle`] the sans-io core of connections (explicit phases, the reconnect policy, the
//! status words); [`storage`] puts the client's keys and sessions in clawbox's store;
//! [`transport`] and [`http`] give it a WebSocket and HTTP on our rustls config; [`link`] carries
//! out the owner's requests (link, cancel, unlink); [`runs`] keeps the channel ready for them in
//! the service. `driver` is one run of the channel (the thin shell that feeds the lifecycle the
//! client's events and carries out its actions), `outbound` carries out the router's commands
//! (sends and typing), `probe` finds a deaf link, `inbound` takes decrypted messages to the inbox.
//! This file holds what they share: the run's options and outcome, the lifecycle and the pending
//! acks the client's callbacks reach, and the client helpers.
//!
//! Durability order: every decrypted message goes through the client's inbound durability hook,
//! which submits it to [`crate::intake::Intake`] (durable in the inbox on `Ok`) before the client
//! acknowledges it to the server; a failed submit suppresses the ack and the server redelivers.
//! The client buffers the decrypted copy in our store (`pin/` rows) before advancing the ratchet,
//! so a crash anywhere replays the message instead of losing it. Redeliveries are deduped by id by
//! the core.
//!
//! Reconnects are driven by `driver`, not by the client (its Fibonacci backoff reaches 900 s):
//! each `Client::run` is one connection; [`lifecycle::decide`] says what comes next. Never logs
//! message bodies, keys or the pairing payload.

pub mod adapter;
pub mod context_info;
mod driver;
pub mod groups;
pub mod http;
mod identity;
mod inbound;
pub mod lid;
pub mod lifecycle;
pub mod link;
pub mod nack;
mod outbound;
mod probe;
pub mod runs;
pub mod storage;
pub mod transport;
pub mod version;

use crate::channel::ChannelContext;
use crate::config::WhatsAppConfig;
use crate::pairing::PairingPublisher;
use crate::vocab::{ChannelKind, ChannelSpec};
use adapter::{Own, Rules, SentIds};
use lifecycle::{Input, Lifecycle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use whatsapp_rust::prelude::*;

pub use driver::run_with;
pub use outbound::SEND_ACK_TIMEOUT;
pub use version::DEFAULT_VERSION_URL;

/// WhatsApp allows ~65k characters; 4000 keeps a reply chunk readable on a phone and leaves room
/// for the self-chat prefix. A send in doubt is simply repeated: the message id is derived from the
/// chunk key, and a recipient's devices keep one message per id.
pub const SPEC: ChannelSpec = ChannelSpec {
    kind: ChannelKind::WhatsApp,
    max_chars: 4000,
};

/// The production endpoint; any other URL is a test server.
pub const DEFAULT_SERVER_URL: &str = "wss://web.whatsapp.com/ws/chat";
/// Web client version of the unit tests' clients (which never connect). A run offers the version
/// its version document names ([`version`]).
#[cfg(test)]
pub const TEST_SERVER_VERSION: (u32, u32, u32) = (2, 3000, 1_026_131_876);
/// QR codes shown before pairing pauses: WhatsApp rate-limits repeated link attempts.
pub const MAX_QR_CODES: u32 = 3;
/// The status row beats from the connection's life, not from a timer: each connection attempt,
/// the link coming up, each keepalive answered, each reconnect wait. The longest legitimate gap
/// between two of those on a connection: the first probe goes `PROBE_EVERY` after the attempt
/// starts (another `PROBE_EVERY` later if not yet logged in) and is answered within
/// `PROBE_DEADLINE + PROBE_SLACK`; a link that stops answering is given up on within
/// `PROBE_EVERY + PROBE_FAILURES × (PROBE_DEADLINE + PROBE_SLACK)` = 39 s, and the reconnect
/// beats (the numbers: [`crate::retry`]). 54 s at worst; an attempt that fails ends sooner
/// ([`crate::retry::CONNECT_TIMEOUT`], 5 s).
const LINK_WITHIN: Duration = Duration::from_secs(60);
/// Graceful disconnect (flushes the client's buffered state) must not hold shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a disconnect, the connection's task ends once the client's read loop has cleaned up
/// (its socket is closed by then, [`shutdown_client`]); beyond this it is aborted, so a run
/// always ends: systemd's stop and the pairing command wait on it.
const CONNECTION_END_WAIT: Duration = Duration::from_secs(5);
/// Waiting for the socket before asking for a phone pairing code.
const PAIR_CODE_SOCKET_WAIT: Duration = Duration::from_secs(30);

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

/// Outgoing ids waiting for the server's ack (at most `outbound::MAX_PENDING_ACKS`).
type Acks = HashMap<String, oneshot::Sender<Option<String>>>;

struct Shared {
    cfg: Arc<WhatsAppConfig>,
    ctx: ChannelContext,
    pairing: PairingPublisher,
    /// Fed by the client's callbacks (inline, never blocking) and by the driver, which carries
    /// out its actions when woken.
    life: Mutex<Lifecycle>,
    acks: Mutex<Acks>,
    /// The server's refusals of our messages, counted per id ([`nack`]).
    refusals: Mutex<nack::Refusals>,
    sent: Mutex<SentIds>,
    wake: Notify,
    inflow: inbound::Inflow,
    /// When `allow_from` is resolved to LIDs ([`lid`]).
    resolver: Mutex<lid::Resolver>,
    /// The budget of lookups for LIDs nobody knows ([`lid`]).
    lookups: Mutex<lid::Lookups>,
}

impl Shared {
    fn new(
        cfg: Arc<WhatsAppConfig>,
        ctx: ChannelContext,
        pairing: PairingPublisher,
        life: Lifecycle,
    ) -> Shared {
        Shared {
            cfg,
            ctx,
            pairing,
            life: Mutex::new(life),
            acks: Mutex::new(Acks::new()),
            refusals: Mutex::new(nack::Refusals::default()),
            sent: Mutex::new(SentIds::default()),
            wake: Notify::new(),
            inflow: inbound::Inflow::new(),
            resolver: Mutex::new(lid::Resolver::default()),
            lookups: Mutex::new(lid::Lookups::new(tokio::time::Instant::now())),
        }
    }
    fn resolver(&self) -> MutexGuard<'_, lid::Resolver> {
        self.resolver.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn lookups(&self) -> MutexGuard<'_, lid::Lookups> {
        self.lookups.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn life(&self) -> MutexGuard<'_, Lifecycle> {
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn acks(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn refusals(&self) -> MutexGuard<'_, nack::Refusals> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn sent(&self) -> MutexGuard<'_, SentIds> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Feeds the lifecycle from outside the driver (the client's callbacks, the owner's requests)
    /// and wakes the driver to carry out what it asks.
    fn feed(&self, input: Input) {
        self.life().handle(input, tokio::time::Instant::now());
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

/// Ends the client for good (flushes its buffered state), bounded in time. The library closes
/// the socket last, after flushes bounded at 5 s each: a disconnect cut short at
/// [`DISCONNECT_TIMEOUT`] would leave the socket open and the client's connection running, still
/// answering the server, so the run (and `clawbox pair whatsapp`, and a stop) would wait on it for
/// ever. `link` closes it then. What the cut-short flushes leave unacked, the server redelivers and
/// the inbox recognises.
async fn shutdown_client(client: &Arc<Client>, link: &transport::Link) {
    if tokio::time::timeout(DISCONNECT_TIMEOUT, client.disconnect())
        .await
        .is_err()
    {
        tracing::warn!("WhatsApp client did not disconnect in time; closing its socket");
        link.close();
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
}

/// What the children's unit tests share: a channel's [`Shared`] state on an in-memory store, and
/// a client that never connects.
#[cfg(test)]
mod test_support {
    use super::*;
    use crate::intake::Intake;
    use crate::metrics::Metrics;
    use crate::pairing::Pairing;
    use crate::store::Store;
    use crate::store::kv::KvTable;
    use storage::KvBackend;
    use whatsapp_rust::TokioRuntime;

    pub(super) fn shared(
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
        let sh = Arc::new(Shared::new(
            Arc::new(cfg),
            ctx,
            pairing,
            Lifecycle::new(false, 1),
        ));
        (sh, subs, prx, board)
    }

    pub(super) async fn test_client(sh: &Arc<Shared>) -> Arc<Client> {
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
}
