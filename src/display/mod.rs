//! The board's own displays: a framebuffer ([`framebuffer`]: HDMI or an SPI TFT), a 128×64 I²C
//! OLED ([`oled`]) and a serial console ([`serial`]), each showing the WhatsApp pairing state
//! ([`crate::pairing`]) and the board's one-line status ([`crate::status::Board::status_line`]).
//! All off unless `[display]` names a device. [`terminal`] shows the same pairing state on the
//! terminal that runs clawbox (and `clawbox pair whatsapp`); [`qr`] draws the QR in characters for
//! the terminal and the serial console.
//!
//! [`run`] redraws on every pairing change and checks the status every [`STATUS_POLL`]. Device
//! writes run on the blocking pool, at most one in flight per device, so a slow or stuck device
//! never blocks the runtime or the other displays. A missing or failing device is logged once
//! (and again only when the error changes), retried every [`DISPLAY_RETRY`], and never stops the
//! daemon. Never logs what is shown (the QR payload and the pairing code are secrets while they
//! live).

pub mod framebuffer;
pub mod oled;
pub mod qr;
pub mod render;
pub mod serial;
pub mod terminal;

use crate::config::DisplayConfig;
use crate::pairing::Pairing;
use crate::retry::DISPLAY_RETRY;
use crate::shutdown::Shutdown;
use crate::status::Board;
pub use render::View;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How often the status line is looked at (a redraw happens only when it changed).
pub const STATUS_POLL: Duration = Duration::from_secs(5);

/// Screens that something else may draw over (the kernel console on an HDMI framebuffer) are
/// redrawn this often even without a change.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// While a write is in flight, how often the task looks for its end.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(250);

/// Why a display could not show a frame. Every variant is retried after [`DISPLAY_RETRY`].
#[derive(Debug)]
pub enum DisplayError {
    /// The device node could not be opened (missing, permissions, driver not loaded).
    Open {
        device: PathBuf,
        source: std::io::Error,
    },
    /// The device's geometry is unreadable or unsupported.
    Geometry { device: PathBuf, message: String },
    /// A write failed part-way.
    Write {
        device: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for DisplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisplayError::Open { device, source } => {
                write!(f, "{}: cannot open: {source}", device.display())
            }
            DisplayError::Geometry { device, message } => {
                write!(f, "{}: {message}", device.display())
            }
            DisplayError::Write { device, source } => {
                write!(f, "{}: write failed: {source}", device.display())
            }
        }
    }
}

impl std::error::Error for DisplayError {}

/// One configured display.
pub enum Device {
    Framebuffer(framebuffer::Framebuffer),
    Oled(Box<oled::Oled>),
    Serial(serial::Serial),
}

impl Device {
    /// The devices `cfg` names, in a fixed order: framebuffer, OLED, serial.
    pub fn from_config(cfg: &DisplayConfig) -> Vec<Device> {
        let mut out = Vec::new();
        if let Some(p) = &cfg.framebuffer {
            out.push(Device::Framebuffer(framebuffer::Framebuffer::new(p)));
        }
        if let Some(p) = &cfg.oled {
            out.push(Device::Oled(Box::new(oled::Oled::new(
                p,
                cfg.oled_address.unwrap_or(oled::DEFAULT_ADDRESS),
                cfg.oled_controller,
            ))));
        }
        if let Some(p) = &cfg.serial {
            out.push(Device::Serial(serial::Serial::new(p)));
        }
        out
    }

    pub fn name(&self) -> String {
        let (kind, path) = match self {
            Device::Framebuffer(d) => ("framebuffer", d.device()),
            Device::Oled(d) => ("oled", d.device()),
            Device::Serial(d) => ("serial", d.device()),
        };
        format!("{kind} {}", path.display())
    }

    /// Draws `view`. Blocking.
    pub fn show(&mut self, view: &View) -> Result<(), DisplayError> {
        match self {
            Device::Framebuffer(d) => d.show(view),
            Device::Oled(d) => d.show(view),
            Device::Serial(d) => d.show(view),
        }
    }

    /// Whether an unchanged view is still redrawn every [`REFRESH_EVERY`].
    fn refreshes(&self) -> bool {
        matches!(self, Device::Framebuffer(_))
    }
}

type Done = (Device, View, Result<(), DisplayError>);

/// One device's bookkeeping in [`run`].
struct Slot {
    name: String,
    /// `None` while a write is in flight (the device is on the blocking pool).
    device: Option<Device>,
    in_flight: Option<JoinHandle<Done>>,
    /// What the device shows and since when.
    shown: Option<(View, Instant)>,
    /// The last error logged, so a repeating one is logged once.
    failing: Option<String>,
    retry_at: Option<Instant>,
}

impl Slot {
    fn new(device: Device) -> Slot {
        Slot {
            name: device.name(),
            device: Some(device),
            in_flight: None,
            shown: None,
            failing: None,
            retry_at: None,
        }
    }

    /// Takes the result of a finished write, if any.
    async fn collect(&mut self, cfg: &DisplayConfig, index: usize, now: Instant) {
        let finished = self.in_flight.as_ref().is_some_and(JoinHandle::is_finished);
        if !finished {
            return;
        }
        let Some(handle) = self.in_flight.take() else {
            return;
        };
        match handle.await {
            Ok((device, view, Ok(()))) => {
                self.device = Some(device);
                if self.failing.take().is_some() {
                    tracing::info!(display = %self.name, "display working again");
                }
                self.shown = Some((view, now));
                self.retry_at = None;
            }
            Ok((device, _, Err(e))) => {
                self.device = Some(device);
                self.failed(e.to_string(), now);
            }
            Err(e) => {
                // A panic in a renderer: start over with a fresh device of the same config.
                self.device = Device::from_config(cfg).into_iter().nth(index);
                self.failed(format!("the display writer failed: {e}"), now);
            }
        }
    }

    fn failed(&mut self, error: String, now: Instant) {
        if self.failing.as_deref() != Some(error.as_str()) {
            tracing::warn!(display = %self.name, error = %error, retry_s = DISPLAY_RETRY.as_secs(), "display unavailable");
        }
        self.failing = Some(error);
        self.shown = None;
        self.retry_at = Some(now + DISPLAY_RETRY);
    }

    /// Starts a write of `view` when it is due and the device is free.
    fn start(&mut self, view: &View, now: Instant) {
        if self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let Some(device) = self.device.as_ref() else {
            return;
        };
        let due = match &self.shown {
            None => true,
            Some((v, at)) => {
                v != view || (device.refreshes() && now.duration_since(*at) >= REFRESH_EVERY)
            }
        };
        if !due {
            return;
        }
        let Some(mut device) = self.device.take() else {
            return;
        };
        let view = view.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let r = device.show(&view);
            (device, view, r)
        }));
    }
}

/// Shows the pairing state and the status on every display `cfg` names until shutdown. Returns at
/// once when none is configured.
pub async fn run(
    cfg: DisplayConfig,
    mut pairing: watch::Receiver<Pairing>,
    board: Board,
    mut shutdown: Shutdown,
) {
    let mut slots: Vec<Slot> = Device::from_config(&cfg)
        .into_iter()
        .map(Slot::new)
        .collect();
    if slots.is_empty() {
        return;
    }
    for s in &slots {
        tracing::info!(display = %s.name, "display on");
    }
    let mut tick = tokio::time::interval(STATUS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pairing_open = true;
    loop {
        let now = Instant::now();
        let view = View {
            pairing: pairing.borrow_and_update().clone(),
            status: board.status_line(),
        };
        for (i, s) in slots.iter_mut().enumerate() {
            s.collect(&cfg, i, now).await;
            s.start(&view, now);
        }
        let busy = slots.iter().any(|s| s.in_flight.is_some());
        tokio::select! {
            _ = shutdown.wait() => return,
            r = pairing.changed(), if pairing_open => {
                // The publisher is gone (the WhatsApp channel stopped for good): keep showing the
                // status.
                if r.is_err() {
                    pairing_open = false;
                }
            }
            _ = tick.tick() => {}
            _ = tokio::time::sleep(IN_FLIGHT_POLL), if busy => {}
        }
    }
}
