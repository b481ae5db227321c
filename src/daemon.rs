//! Wires every task together and owns the process lifecycle: open the store, build the agents,
//! start the channels under the supervisor, resume what a crash left unfinished, serve health,
//! tell systemd when we are ready, and shut down within seconds on SIGTERM/SIGINT with the store
//! flushed.

use crate::agent::Agent;
use crate::channel::{ChannelCommand, ChannelContext};
use crate::config::{BUILTIN_AGENT, Config, PacingConfig};
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
use std::path::PathBuf;
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
/// Each step is one function below, in this order.
pub async fn run(cfg: Config, mode: Mode) -> Result<(), DaemonError> {
    crate::fault::init();
    let mut d = Daemon::open(&cfg, mode)?;
    let agents = d.start_agents(&cfg);
    let slots = channel_slots(&cfg, mode);
    let (mut router, intake) = d.router(&cfg, agents, &slots);
    let outbox = d.recover(&mut router).await?;
    let owner = d.owner_side(&cfg, &slots);
    let eof = d.start_channels(&cfg, slots, intake, outbox, &owner);
    let row = d
        .board
        .register_internal(crate::router::ROW, crate::router::ALLOWANCE);
    d.tasks
        .push(tokio::spawn(router.run(row, d.shutdown.clone())));
    d.tasks.push(d.store.start_maintenance(d.shutdown.clone()));
    let control_files = match mode {
        Mode::Run => d.start_service_endpoints(&cfg, &owner).await,
        Mode::Chat => None,
    };
    crate::systemd::ready();
    tracing::info!(mode = ?mode, "ready");
    d.wait_for_the_end(eof).await?;
    d.stop(control_files).await;
    Ok(())
}

/// What every step shares: the process-wide pieces and the tasks to wait for at shutdown.
struct Daemon {
    mode: Mode,
    metrics: Arc<Metrics>,
    board: Board,
    trigger: crate::shutdown::ShutdownTrigger,
    shutdown: Shutdown,
    state_dir: PathBuf,
    store: Store,
    http: HttpClient,
    tasks: Vec<JoinHandle<()>>,
}

/// The owner's side of the WhatsApp channel: the pairing state everyone shows, and the linker the
/// control socket and the page ask to pair or unpair through (None without WhatsApp).
struct OwnerSide {
    pairing: crate::pairing::PairingPublisher,
    linker: Option<crate::channel::whatsapp::link::Linker>,
    asks: crate::channel::whatsapp::link::Asks,
}

/// The control socket's files, removed at shutdown: the socket and its link in the state dir.
type ControlFiles = (PathBuf, Option<PathBuf>);

/// Which channels run, each with its command and reply queues.
fn channel_slots(cfg: &Config, mode: Mode) -> HashMap<ChannelKind, ChannelSlot> {
    let mut slots = HashMap::new();
    let c = &cfg.channels;
    let on = |kind| match (mode, kind) {
        (Mode::Chat, k) => k == ChannelKind::Console,
        (Mode::Run, ChannelKind::Console) => c.console.as_ref().is_some_and(|c| c.enabled),
        (Mode::Run, ChannelKind::Telegram) => c.telegram.as_ref().is_some_and(|t| t.enabled),
        (Mode::Run, ChannelKind::WhatsApp) => c.whatsapp.as_ref().is_some_and(|w| w.enabled),
    };
    for kind in ChannelKind::ALL.into_iter().filter(|&k| on(k)) {
        let spec = match kind {
            ChannelKind::Console => crate::channel::console::SPEC,
            ChannelKind::Telegram => crate::channel::telegram::SPEC,
            ChannelKind::WhatsApp => crate::channel::whatsapp::SPEC,
        };
        slots.insert(kind, slot(spec));
    }
    slots
}

impl Daemon {
    /// The store (chat mode: its own under `<state>/console`), the board and the shutdown switch.
    fn open(cfg: &Config, mode: Mode) -> Result<Daemon, DaemonError> {
        let metrics = Arc::new(Metrics::default());
        let (trigger, shutdown) = Shutdown::new();
        let state_dir = match mode {
            Mode::Run => cfg.state_dir(),
            Mode::Chat => {
                // The state directory first: someone else's is refused by name, not with EACCES
                // on `console/` inside it.
                crate::state_dir::prepare(&cfg.state_dir())
                    .map_err(|e| DaemonError::Store(StoreError::Open(e)))?;
                cfg.state_dir().join("console")
            }
        };
        let store =
            Store::open(&state_dir, &cfg.store, metrics.clone()).map_err(DaemonError::Store)?;
        tracing::info!(store = %store.path().display(), "store open");
        Ok(Daemon {
            mode,
            metrics,
            board: Board::default(),
            trigger,
            shutdown,
            state_dir,
            store,
            http: HttpClient::new(),
            tasks: Vec::new(),
        })
    }

    /// Every declared agent plus the built-in echo; an agent with a link of its own runs it
    /// under the supervisor.
    fn start_agents(&mut self, cfg: &Config) -> HashMap<String, Arc<AgentEntry>> {
        let mut agents = HashMap::new();
        for (name, acfg) in &cfg.agents {
            let reporter = self.board.register(&format!("agent {name}"), false);
            let agent = Agent::from_config(name, acfg, &self.http, &self.store, reporter.clone());
            if !agent.has_link() {
                reporter.set(State::Up, agent.kind_name());
            }
            let entry = Arc::new(AgentEntry::new(agent, cfg.agent_settings(Some(acfg), name)));
            if entry.agent.has_link() {
                let (e, sd) = (entry.clone(), self.shutdown.clone());
                self.tasks.push(crate::supervisor::supervise(
                    format!("agent {name}"),
                    self.metrics.clone(),
                    self.shutdown.clone(),
                    Some(reporter),
                    move || {
                        let (e, sd) = (e.clone(), sd.clone());
                        async move { e.agent.run_link(sd).await }
                    },
                ));
            }
            agents.insert(name.clone(), entry);
        }
        agents.entry(BUILTIN_AGENT.into()).or_insert_with(|| {
            Arc::new(AgentEntry::new(
                Agent::Echo(crate::agent::echo::Echo),
                cfg.agent_settings(None, BUILTIN_AGENT),
            ))
        });
        agents
    }

    /// The router and the intake that feeds it; the router reaches each channel through its
    /// delivery outlet.
    fn router(
        &self,
        cfg: &Config,
        agents: HashMap<String, Arc<AgentEntry>>,
        slots: &HashMap<ChannelKind, ChannelSlot>,
    ) -> (Router, crate::intake::Intake) {
        let agent_for = PerChannel::from_fn(|kind| cfg.agent_of(kind));
        let outlets = PerChannel::from_fn(|kind| {
            slots
                .get(&kind)
                .map(|s| Outlet::new(s.spec, s.jobs_tx.clone(), s.commands_tx.clone()))
        });
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            cfg: cfg.router.clone(),
            agents,
            default_agent: agent_for[ChannelKind::Console].clone(),
            outlets,
        });
        let policies = match self.mode {
            Mode::Run => Policies::from_config(cfg),
            Mode::Chat => {
                let mut p = Policies::default();
                p.set(ChannelKind::Console, crate::policy::Policy::open());
                p
            }
        };
        Router::new(shared, policies, cfg.router.session_scope, agent_for)
    }

    /// What a crash left unfinished: unanswered messages go back to the router; unsent replies
    /// are returned by channel, to be queued once each channel's delivery runs.
    async fn recover(
        &self,
        router: &mut Router,
    ) -> Result<HashMap<ChannelKind, Vec<Job>>, DaemonError> {
        let recovery = self.store.recover().await.map_err(DaemonError::Store)?;
        if !recovery.pending.is_empty() || !recovery.outbox.is_empty() {
            tracing::info!(
                pending = recovery.pending.len(),
                replies = recovery.outbox.len(),
                "resuming unfinished work"
            );
        }
        self.metrics.inbox_pending.store(
            recovery.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if recovery.skipped > 0 {
            tracing::warn!(
                rows = recovery.skipped,
                "some stored rows were skipped (each is logged above)"
            );
        }
        router.resume(recovery.pending);
        let mut jobs: HashMap<ChannelKind, Vec<Job>> = HashMap::new();
        for r in recovery.outbox {
            let job = Job {
                seq: r.seq,
                rec: r.rec,
            };
            jobs.entry(r.channel).or_default().push(job);
        }
        Ok(jobs)
    }

    /// The pairing state and the linker, and the screens that show the state: the terminal the
    /// service runs on, and the board's displays (`[display]`, all off by default).
    fn owner_side(&mut self, cfg: &Config, slots: &HashMap<ChannelKind, ChannelSlot>) -> OwnerSide {
        let (pairing, pairing_rx) = crate::pairing::PairingPublisher::new();
        let (linker, asks) = crate::channel::whatsapp::link::Linker::new();
        let whatsapp = slots.contains_key(&ChannelKind::WhatsApp);
        if self.mode == Mode::Run
            && whatsapp
            && std::io::IsTerminal::is_terminal(&std::io::stdout())
        {
            self.tasks
                .push(tokio::spawn(crate::display::terminal::display(
                    pairing_rx,
                    self.shutdown.clone(),
                    crate::display::terminal::Screen::Stderr,
                )));
        }
        if self.mode == Mode::Run && cfg.display != crate::config::DisplayConfig::default() {
            self.tasks.push(tokio::spawn(crate::display::run(
                cfg.display.clone(),
                pairing.subscribe(),
                self.board.clone(),
                self.shutdown.clone(),
            )));
        }
        OwnerSide {
            pairing,
            linker: whatsapp.then_some(linker),
            asks,
        }
    }

    /// Each channel's delivery loop (with the replies a crash left unsent) and its connector
    /// under the supervisor. Returns what turns true once the console's stdin has closed.
    fn start_channels(
        &mut self,
        cfg: &Config,
        slots: HashMap<ChannelKind, ChannelSlot>,
        intake: crate::intake::Intake,
        mut outbox: HashMap<ChannelKind, Vec<Job>>,
        owner: &OwnerSide,
    ) -> watch::Receiver<bool> {
        let (eof_tx, eof_rx) = watch::channel(false);
        let pacing: PacingConfig = match self.mode {
            Mode::Run => cfg.pacing.clone(),
            // A terminal needs no human-like pacing.
            Mode::Chat => PacingConfig {
                enabled: false,
                ..cfg.pacing.clone()
            },
        };
        for (kind, unsent) in &outbox {
            if !slots.contains_key(kind) {
                tracing::warn!(channel = %kind, replies = unsent.len(), "stored replies for a channel that is not running; they wait in the store");
            }
        }
        for (kind, s) in slots {
            let ctx = ChannelContext {
                intake: intake.clone(),
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                reporter: self.board.register(kind.as_str(), true),
                http: self.http.clone(),
                commands: s.commands_rx.clone(),
                shutdown: self.shutdown.clone(),
            };
            let unsent = outbox.remove(&kind).unwrap_or_default();
            self.start_delivery(kind, s, &pacing, unsent);
            self.start_connector(kind, cfg, ctx, owner, &eof_tx);
        }
        eof_rx
    }

    /// A channel's send loop, fed first with the replies a crash left unsent.
    fn start_delivery(
        &mut self,
        kind: ChannelKind,
        s: ChannelSlot,
        pacing: &PacingConfig,
        unsent: Vec<Job>,
    ) {
        let seed =
            crate::store::now_ms() ^ (kind.index() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let d = Delivery::new(
            s.spec,
            pacing,
            seed,
            self.store.clone(),
            self.metrics.clone(),
            s.commands_tx,
        );
        self.tasks
            .push(tokio::spawn(d.run(s.jobs_rx, self.shutdown.clone())));
        if !unsent.is_empty() {
            let (tx, m) = (s.jobs_tx, self.metrics.clone());
            self.tasks.push(tokio::spawn(async move {
                for job in unsent {
                    Metrics::inc(&m.outbox_pending);
                    if tx.send(job).await.is_err() {
                        return;
                    }
                }
            }));
        }
    }

    /// A channel's connector as a supervised task (restarted after an error or a panic).
    fn start_connector(
        &mut self,
        kind: ChannelKind,
        cfg: &Config,
        ctx: ChannelContext,
        owner: &OwnerSide,
        eof: &watch::Sender<bool>,
    ) {
        let row = Some(ctx.reporter.clone());
        let (name, metrics, sd) = (
            kind.as_str().to_string(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        let task = match kind {
            ChannelKind::Console => {
                let eof = eof.clone();
                crate::supervisor::supervise(name, metrics, sd, row, move || {
                    crate::channel::console::run(ctx.clone(), eof.clone())
                })
            }
            ChannelKind::Telegram => {
                let Some(tcfg) = cfg.channels.telegram.clone().map(Arc::new) else {
                    return;
                };
                crate::supervisor::supervise(name, metrics, sd, row, move || {
                    crate::channel::telegram::run(tcfg.clone(), ctx.clone())
                })
            }
            ChannelKind::WhatsApp => {
                let Some(wcfg) = cfg.channels.whatsapp.clone().map(Arc::new) else {
                    return;
                };
                let (pairing, asks) = (owner.pairing.clone(), owner.asks.clone());
                crate::supervisor::supervise(name, metrics, sd, row, move || {
                    crate::channel::whatsapp::runs::serve(
                        wcfg.clone(),
                        ctx.clone(),
                        pairing.clone(),
                        asks.clone(),
                    )
                })
            }
        };
        self.tasks.push(task);
    }

    /// The service's endpoints and watchers: /healthz and /metrics, the control socket, the page
    /// (when configured), the store threads' liveness and the systemd watchdog. Each one that
    /// cannot start is logged and the service carries on without it.
    async fn start_service_endpoints(
        &mut self,
        cfg: &Config,
        owner: &OwnerSide,
    ) -> Option<ControlFiles> {
        let addr = cfg.gateway.health_listen.get_ref().clone();
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "health endpoint listening");
                self.tasks.push(tokio::spawn(crate::health::serve(
                    listener,
                    self.board.clone(),
                    self.metrics.clone(),
                    self.shutdown.clone(),
                )));
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve /healthz and /metrics; carrying on without them")
            }
        }
        let control_files = self.start_control_socket(owner);
        self.start_page(cfg, owner).await;
        // The store's threads prove they are alive by answering a no-op each period.
        for thread in [crate::store::Thread::Writer, crate::store::Thread::Reader] {
            let row = self
                .board
                .register_internal(thread.row_name(), crate::store::ROW_ALLOWANCE);
            self.tasks.push(tokio::spawn(self.store.clone().prove_alive(
                thread,
                row,
                self.shutdown.clone(),
            )));
        }
        // Pings every WatchdogSec/2 while no row on the board is past its due beat: a stalled
        // component stops the pings and systemd restarts the service within WatchdogSec.
        let period = crate::systemd::watchdog_interval();
        self.tasks.push(tokio::spawn(crate::systemd::watchdog_loop(
            self.board.clone(),
            period.unwrap_or(STATUS_PERIOD),
            self.shutdown.clone(),
        )));
        control_files
    }

    /// The control socket: `clawbox pair|unpair|status` ask the running service.
    fn start_control_socket(&mut self, owner: &OwnerSide) -> Option<ControlFiles> {
        let runtime_dir = crate::control::runtime_dir_from_env();
        match crate::control::server::bind(runtime_dir.as_deref(), &self.state_dir) {
            Ok(b) => {
                tracing::info!(socket = %b.path.display(), "control socket listening");
                let ctl = Arc::new(crate::control::server::Control {
                    board: self.board.clone(),
                    pairing: owner.pairing.clone(),
                    linker: owner.linker.clone(),
                    state_dir: self.state_dir.clone(),
                    started: tokio::time::Instant::now(),
                    uid: nix::unistd::geteuid().as_raw(),
                });
                let crate::control::server::Bound {
                    listener,
                    path,
                    link,
                } = b;
                self.tasks.push(tokio::spawn(crate::control::server::serve(
                    listener,
                    ctl,
                    self.shutdown.clone(),
                )));
                Some((path, link))
            }
            Err(e) => {
                tracing::error!(error = %e, "no control socket: `clawbox pair` and `unpair` cannot reach this service; carrying on without it");
                None
            }
        }
    }

    /// The pairing and status page, when `[web] listen` asks for it.
    async fn start_page(&mut self, cfg: &Config, owner: &OwnerSide) {
        match crate::web::bind(&cfg.web).await {
            Ok(Some((listener, addr))) => {
                match crate::web::Web::new(
                    &cfg.web,
                    addr.port(),
                    self.board.clone(),
                    owner.pairing.clone(),
                    owner.linker.clone(),
                ) {
                    Ok(web) => {
                        tracing::info!(%addr, "pairing page listening");
                        self.tasks.push(tokio::spawn(crate::web::serve(
                            listener,
                            web,
                            self.shutdown.clone(),
                        )));
                    }
                    Err(e) => tracing::error!(error = %e, "no pairing page"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "no pairing page; carrying on without it"),
        }
    }

    /// SIGTERM or SIGINT; in chat mode also stdin closed with everything answered.
    async fn wait_for_the_end(&self, mut eof: watch::Receiver<bool>) -> Result<(), DaemonError> {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| DaemonError::Runtime(format!("cannot handle SIGTERM: {e}")))?;
        let store = &self.store;
        let drained = async {
            let _ = eof.wait_for(|v| *v).await;
            loop {
                match store.recover().await {
                    Ok(r) if r.pending.is_empty() && r.outbox.is_empty() => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        let drained_enabled = self.mode == Mode::Chat;
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = drained, if drained_enabled => tracing::debug!("stdin closed and everything answered"),
        }
        Ok(())
    }

    /// Tells systemd, stops every task (at most [`SHUTDOWN_DEADLINE`]), removes the control
    /// socket's files and closes the store (flushed).
    async fn stop(self, control_files: Option<ControlFiles>) {
        crate::systemd::stopping();
        self.trigger.trip();
        let all = async {
            for t in self.tasks {
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
        self.store.close().await;
        tracing::info!("stopped");
    }
}
