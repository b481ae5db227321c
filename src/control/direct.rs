//! `clawbox pair whatsapp` and `clawbox unpair whatsapp` when no service runs: the WhatsApp
//! channel alone on the service's state directory ([`pair`]: until it is linked, the pairing
//! screen on the terminal; [`unpair`]: just long enough to log out, then the state wiped). Its
//! inbox refuses every message, so the server redelivers them to the service later.
//! [`super::client`] comes here when no service answers on the socket. Never logs the pairing
//! payload or the code.

use crate::channel::whatsapp::link::{Ask, Inbox, Linker, words};
use crate::channel::whatsapp::storage::KvBackend;
use crate::channel::whatsapp::{Options, Outcome, run_with};
use crate::channel::{ChannelCommand, ChannelContext};
use crate::display::terminal::{Screen, display};
use crate::intake::IntakeError;
use crate::metrics::Metrics;
use crate::pairing::PairingPublisher;
use crate::store::kv::KvTable;
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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
