//! Wires every task together and owns the process lifecycle: open the store, build the agents,
//! start the channels under the supervisor, resume what a crash left unfinished, serve health,
//! tell systemd when we are ready, and shut down within seconds on SIGTERM/SIGINT with the store
//! flushed.

use crate::agent::Agent;
use crate::channel::{ChannelCommand, ChannelContext};
use crate::config::{AgentKind, BUILTIN_AGENT, Config, PacingConfig};
use crate::delivery::{self, Delivery, Job, Outlet};
use crate::http::HttpClient;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::router::Router;
use crate::router::runner::{AgentEntry, Shared};
use crate::shutdown::Shutdown;
use crate::status::{Board, State};
use crate::store::{Store, StoreError};
use crate::vocab::{ChannelKind, ChannelSpec, PerChannel};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

/// Commands waiting for a channel task (sends and typing).
const COMMAND_QUEUE: usize = 64;
/// How long shutdown may take before the remaining tasks are abandoned (systemd allows 10 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// Watchdog/STATUS period when systemd did not ask for a watchdog.
const STATUS_PERIOD: Duration = Duration::from_secs(5);
/// A console session waits this often for its last replies after stdin closed.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// What the daemon runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The service: every configured channel, health endpoint, systemd notify.
    Run,
    /// `clawbox chat`: the console channel only, its own store under `<state>/console`.
    Chat,
}

#[derive(Debug)]
pub enum DaemonError {
    Store(StoreError),
    Runtime(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Store(e) => write!(f, "{e}"),
            DaemonError::Runtime(e) => f.write_str(e),
        }
    }
}

impl DaemonError {
    /// sysexits: 65 (EX_DATAERR) for a damaged store, 73 (EX_CANTCREAT) when it cannot be opened,
    /// 74 (EX_IOERR) for I/O failures, 70 (EX_SOFTWARE) otherwise. The unit does not restart on 65.
    pub fn exit_code(&self) -> i32 {
        match self {
            DaemonError::Store(StoreError::Corrupt(_)) => 65,
            DaemonError::Store(StoreError::Open(_)) => 73,
            DaemonError::Store(_) => 74,
            DaemonError::Runtime(_) => 70,
        }
    }
}

struct ChannelSlot {
    spec: ChannelSpec,
    commands_tx: mpsc::Sender<ChannelCommand>,
    commands_rx: Arc<Mutex<mpsc::Receiver<ChannelCommand>>>,
    jobs_tx: mpsc::Sender<Job>,
    jobs_rx: mpsc::Receiver<Job>,
}

fn slot(spec: ChannelSpec) -> ChannelSlot {
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (jobs_tx, jobs_rx) = mpsc::channel(delivery::QUEUE_DEPTH);
    ChannelSlot {
        spec,
        commands_tx,
        commands_rx: Arc::new(Mutex::new(commands_rx)),
        jobs_tx,
        jobs_rx,
    }
}

/// Runs until SIGTERM/SIGINT (or, in chat mode, until stdin is closed and everything is answered).
pub async fn run(cfg: Config, mode: Mode) -> Result<(), DaemonError> {
    crate::fault::init();
    let metrics = Arc::new(Metrics::default());
    let board = Board::default();
    let (trigger, shutdown) = Shutdown::new();
    let state_dir = match mode {
        Mode::Run => cfg.state_dir(),
        Mode::Chat => {
            // The state directory first: someone else's is refused by name, not with EACCES on
            // `console/` inside it.
            crate::state_dir::prepare(&cfg.state_dir())
                .map_err(|e| DaemonError::Store(StoreError::Open(e)))?;
            cfg.state_dir().join("console")
        }
    };
    let store = Store::open(&state_dir, &cfg.store, metrics.clone()).map_err(DaemonError::Store)?;
    tracing::info!(store = %store.path().display(), "store open");
    let http = HttpClient::new();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();

    // Agents: every declared one, plus the built-in echo.
    let mut agents: HashMap<String, Arc<AgentEntry>> = HashMap::new();
    for (name, acfg) in &cfg.agents {
        let reporter = board.register(&format!("agent {name}"), false);
        let agent = Agent::from_config(name, acfg, &http, &store, reporter.clone());
        let agent_id = match acfg.kind.get_ref() {
            AgentKind::Openclaw => acfg
                .agent_id
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_else(|| "main".into()),
            _ => name.clone(),
        };
        let prefix = acfg
            .session_prefix
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| cfg.router.session_prefix.clone());
        let ack = acfg
            .ack_timeout_s
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(cfg.router.ack_timeout_s);
        let acc = acfg
            .accumulation_timeout_s
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(cfg.router.accumulation_timeout_s);
        if !matches!(agent, Agent::OpenClaw(_)) {
            reporter.set(State::Up, agent.kind_name());
        }
        let entry = Arc::new(AgentEntry {
            agent,
            agent_id,
            prefix,
            ack_timeout: Duration::from_secs(ack),
            accumulation_timeout: Duration::from_secs(acc),
        });
        if matches!(entry.agent, Agent::OpenClaw(_)) {
            let e = entry.clone();
            let sd = shutdown.clone();
            tasks.push(crate::supervisor::supervise(
                format!("agent {name}"),
                metrics.clone(),
                shutdown.clone(),
                Some(reporter.clone()),
                move || {
                    let e = e.clone();
                    let sd = sd.clone();
                    async move {
                        match &e.agent {
                            Agent::OpenClaw(a) => a.run(sd).await,
                            _ => Ok(()),
                        }
                    }
                },
            ));
        }
        agents.insert(name.clone(), entry);
    }
    if !agents.contains_key(BUILTIN_AGENT) {
        agents.insert(
            BUILTIN_AGENT.into(),
            Arc::new(AgentEntry {
                agent: Agent::Echo(crate::agent::echo::Echo),
                agent_id: BUILTIN_AGENT.into(),
                prefix: cfg.router.session_prefix.clone(),
                ack_timeout: Duration::from_secs(cfg.router.ack_timeout_s),
                accumulation_timeout: Duration::from_secs(cfg.router.accumulation_timeout_s),
            }),
        );
    }

    // Channels.
    let mut slots: HashMap<ChannelKind, ChannelSlot> = HashMap::new();
    match mode {
        Mode::Chat => {
            slots.insert(ChannelKind::Console, slot(crate::channel::console::SPEC));
        }
        Mode::Run => {
            if cfg.channels.console.as_ref().is_some_and(|c| c.enabled) {
                slots.insert(ChannelKind::Console, slot(crate::channel::console::SPEC));
            }
            if cfg.channels.telegram.as_ref().is_some_and(|t| t.enabled) {
                slots.insert(ChannelKind::Telegram, slot(crate::channel::telegram::SPEC));
            }
            if cfg.channels.whatsapp.as_ref().is_some_and(|w| w.enabled) {
                slots.insert(ChannelKind::WhatsApp, slot(crate::channel::whatsapp::SPEC));
            }
        }
    }
    let agent_for = PerChannel::from_fn(|kind| {
        cfg.agent_for(match kind {
            ChannelKind::Console => cfg.channels.console.as_ref().and_then(|c| c.agent.as_ref()),
            ChannelKind::Telegram => cfg
                .channels
                .telegram
                .as_ref()
                .and_then(|c| c.agent.as_ref()),
            ChannelKind::WhatsApp => cfg
                .channels
                .whatsapp
                .as_ref()
                .and_then(|c| c.agent.as_ref()),
        })
    });

    let outlets = PerChannel::from_fn(|kind| {
        slots
            .get(&kind)
            .map(|s| Outlet::new(s.spec, s.jobs_tx.clone(), s.commands_tx.clone()))
    });
    let shared = Arc::new(Shared {
        store: store.clone(),
        metrics: metrics.clone(),
        cfg: cfg.router.clone(),
        agents,
        default_agent: agent_for[ChannelKind::Console].clone(),
        outlets,
    });
    let policies = match mode {
        Mode::Run => Policies::from_config(&cfg),
        Mode::Chat => {
            let mut p = Policies::default();
            p.set(ChannelKind::Console, crate::policy::Policy::open());
            p
        }
    };
    let (mut router, intake) = Router::new(
        shared.clone(),
        policies,
        cfg.router.session_scope,
        agent_for,
    );

    // What a crash left unfinished.
    let recovery = store.recover().await.map_err(DaemonError::Store)?;
    if !recovery.pending.is_empty() || !recovery.outbox.is_empty() {
        tracing::info!(
            pending = recovery.pending.len(),
            replies = recovery.outbox.len(),
            "resuming unfinished work"
        );
    }
    metrics.inbox_pending.store(
        recovery.pending.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    router.resume(recovery.pending);

    // The WhatsApp pairing state; shown on the terminal when one is watching.
    let (pairing, pairing_rx) = crate::pairing::PairingPublisher::new();
    // The owner's requests to the WhatsApp channel (control socket, page).
    let (linker, asks) = crate::channel::whatsapp::link::Linker::new();
    let linker = slots.contains_key(&ChannelKind::WhatsApp).then_some(linker);
    if mode == Mode::Run
        && slots.contains_key(&ChannelKind::WhatsApp)
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        tasks.push(tokio::spawn(crate::display::terminal::display(
            pairing_rx,
            shutdown.clone(),
            crate::display::terminal::Screen::Stderr,
        )));
    }
    // The board's displays (`[display]`: framebuffer, OLED, serial console); all off by default.
    if mode == Mode::Run && cfg.display != crate::config::DisplayConfig::default() {
        tasks.push(tokio::spawn(crate::display::run(
            cfg.display.clone(),
            pairing.subscribe(),
            board.clone(),
            shutdown.clone(),
        )));
    }
    let (eof_tx, mut eof_rx) = watch::channel(false);
    let pacing: PacingConfig = match mode {
        Mode::Run => cfg.pacing.clone(),
        // A terminal needs no human-like pacing.
        Mode::Chat => PacingConfig {
            enabled: false,
            ..cfg.pacing.clone()
        },
    };
    let mut recovered_jobs: HashMap<ChannelKind, Vec<Job>> = HashMap::new();
    for (seq, rec) in recovery.outbox {
        match ChannelKind::parse(&rec.channel) {
            Some(k) if slots.contains_key(&k) => {
                recovered_jobs.entry(k).or_default().push(Job { seq, rec })
            }
            _ => {
                tracing::warn!(channel = %rec.channel, "a stored reply's channel is not running; it waits in the store")
            }
        }
    }
    for (kind, s) in slots {
        let reporter = board.register(kind.as_str(), true);
        let ctx = ChannelContext {
            intake: intake.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            reporter,
            http: http.clone(),
            commands: s.commands_rx.clone(),
            shutdown: shutdown.clone(),
        };
        let seed =
            crate::store::now_ms() ^ (kind.index() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let d = Delivery::new(
            s.spec,
            &pacing,
            seed,
            store.clone(),
            metrics.clone(),
            s.commands_tx.clone(),
        );
        tasks.push(tokio::spawn(d.run(s.jobs_rx, shutdown.clone())));
        if let Some(jobs) = recovered_jobs.remove(&kind) {
            let tx = s.jobs_tx.clone();
            let m = metrics.clone();
            tasks.push(tokio::spawn(async move {
                for job in jobs {
                    Metrics::inc(&m.outbox_pending);
                    if tx.send(job).await.is_err() {
                        return;
                    }
                }
            }));
        }
        let name = kind.as_str().to_string();
        match kind {
            ChannelKind::Console => {
                let eof = eof_tx.clone();
                tasks.push(crate::supervisor::supervise(
                    name,
                    metrics.clone(),
                    shutdown.clone(),
                    Some(ctx.reporter.clone()),
                    move || crate::channel::console::run(ctx.clone(), eof.clone()),
                ));
            }
            ChannelKind::Telegram => {
                let Some(tcfg) = cfg.channels.telegram.clone() else {
                    continue;
                };
                let tcfg = Arc::new(tcfg);
                tasks.push(crate::supervisor::supervise(
                    name,
                    metrics.clone(),
                    shutdown.clone(),
                    Some(ctx.reporter.clone()),
                    move || crate::channel::telegram::run(tcfg.clone(), ctx.clone()),
                ));
            }
            ChannelKind::WhatsApp => {
                let Some(wcfg) = cfg.channels.whatsapp.clone() else {
                    continue;
                };
                let wcfg = Arc::new(wcfg);
                let pairing = pairing.clone();
                let asks = asks.clone();
                tasks.push(crate::supervisor::supervise(
                    name,
                    metrics.clone(),
                    shutdown.clone(),
                    Some(ctx.reporter.clone()),
                    move || {
                        crate::channel::whatsapp::runs::serve(
                            wcfg.clone(),
                            ctx.clone(),
                            pairing.clone(),
                            asks.clone(),
                        )
                    },
                ));
            }
        }
    }
    drop(intake);
    let router_row = board.register_internal(crate::router::ROW, crate::router::ALLOWANCE);
    tasks.push(tokio::spawn(router.run(router_row, shutdown.clone())));

    // Housekeeping: make lazy writes durable, trim old rows.
    {
        let store = store.clone();
        let mut sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut flush = tokio::time::interval(crate::store::FLUSH_INTERVAL);
            let mut gc = tokio::time::interval(crate::store::GC_INTERVAL);
            loop {
                tokio::select! {
                    _ = flush.tick() => { let _ = store.flush().await; }
                    _ = gc.tick() => store.gc(crate::store::now_ms()).await,
                    _ = sd.wait() => return,
                }
            }
        }));
    }

    let mut control_files: Option<(std::path::PathBuf, Option<std::path::PathBuf>)> = None;
    if mode == Mode::Run {
        let addr = cfg.gateway.health_listen.get_ref().clone();
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "health endpoint listening");
                tasks.push(tokio::spawn(crate::health::serve(
                    listener,
                    board.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve /healthz and /metrics; carrying on without them")
            }
        }
        // The control socket: `clawbox pair|unpair|status` ask the running service.
        let runtime_dir = crate::control::runtime_dir_from_env();
        match crate::control::server::bind(runtime_dir.as_deref(), &state_dir) {
            Ok(b) => {
                tracing::info!(socket = %b.path.display(), "control socket listening");
                let ctl = Arc::new(crate::control::server::Control {
                    board: board.clone(),
                    pairing: pairing.clone(),
                    linker: linker.clone(),
                    state_dir: state_dir.clone(),
                    started: tokio::time::Instant::now(),
                    uid: nix::unistd::geteuid().as_raw(),
                });
                let crate::control::server::Bound {
                    listener,
                    path,
                    link,
                } = b;
                control_files = Some((path, link));
                tasks.push(tokio::spawn(crate::control::server::serve(
                    listener,
                    ctl,
                    shutdown.clone(),
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "no control socket: `clawbox pair` and `unpair` cannot reach this service; carrying on without it")
            }
        }
        // The pairing and status page, when `[web] listen` asks for it.
        match crate::web::bind(&cfg.web).await {
            Ok(Some((listener, addr))) => {
                match crate::web::Web::new(
                    &cfg.web,
                    addr.port(),
                    board.clone(),
                    pairing.clone(),
                    linker.clone(),
                ) {
                    Ok(web) => {
                        tracing::info!(%addr, "pairing page listening");
                        tasks.push(tokio::spawn(crate::web::serve(
                            listener,
                            web,
                            shutdown.clone(),
                        )));
                    }
                    Err(e) => tracing::error!(error = %e, "no pairing page"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "no pairing page; carrying on without it"),
        }
        // The store's threads prove they are alive by answering a no-op each period.
        for thread in [crate::store::Thread::Writer, crate::store::Thread::Reader] {
            let row = board.register_internal(thread.row_name(), crate::store::ROW_ALLOWANCE);
            tasks.push(tokio::spawn(store.clone().prove_alive(
                thread,
                row,
                shutdown.clone(),
            )));
        }
        // Pings every WatchdogSec/2 while no row on the board is past its due beat: a stalled
        // component stops the pings and systemd restarts the service within WatchdogSec.
        let period = crate::systemd::watchdog_interval();
        tasks.push(tokio::spawn(crate::systemd::watchdog_loop(
            board.clone(),
            period.unwrap_or(STATUS_PERIOD),
            shutdown.clone(),
        )));
    }
    crate::systemd::ready();
    tracing::info!(mode = ?mode, "ready");

    // Wait for the end.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Runtime(format!("cannot handle SIGTERM: {e}")))?;
    let drained = async {
        let _ = eof_rx.wait_for(|v| *v).await;
        loop {
            match store.recover().await {
                Ok(r) if r.pending.is_empty() && r.outbox.is_empty() => return,
                Ok(_) => {}
                Err(_) => return,
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    };
    let drained_enabled = mode == Mode::Chat;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = drained, if drained_enabled => tracing::debug!("stdin closed and everything answered"),
    }
    crate::systemd::stopping();
    trigger.trip();
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_DEADLINE, all).await.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    // A socket left behind would read as a service that stopped answering.
    if let Some((path, link)) = control_files {
        let _ = std::fs::remove_file(path);
        if let Some(l) = link {
            let _ = std::fs::remove_file(l);
        }
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
