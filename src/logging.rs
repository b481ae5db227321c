//! Log setup: journald when systemd runs us (it sets `JOURNAL_STREAM`), plain stderr otherwise.
//! Logging starts before anything else runs (the config is read after it, so what loading the
//! config says is not lost); the level is then set per command: `CLAWBOX_LOG` if given, else the
//! config's `gateway.log_level` for `run`. Nothing at info or above carries a secret or a message
//! body. The WhatsApp library logs through the `log` crate; its warnings and errors (a frame that
//! fails decryption, an undecodable node, why the transport dropped) are forwarded here through
//! the repeat suppressor ([`crate::repeat`]), its chattier levels never are.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// The level while the config is read: its warnings always show.
pub const STARTUP_LEVEL: &str = "warn";

fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        "off" => Some(LevelFilter::OFF),
        _ => None,
    }
}

/// Forwards `log` records (the WhatsApp library's) at warn and error into tracing. Lower levels are
/// filtered out before formatting: they may carry stanza dumps. A line repeated within
/// [`crate::repeat::REMINDER_EVERY`] goes out at debug level only.
struct LibraryLog;

impl log::Log for LibraryLog {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        let text = record.args().to_string();
        let line = format!("{target}: {text}");
        match crate::repeat::admit(crate::repeat::LIBRARY, &line) {
            None => tracing::debug!("library {line}"),
            Some(note) => match record.level() {
                log::Level::Error => tracing::error!("library {line}{note}"),
                _ => tracing::warn!("library {line}{note}"),
            },
        }
    }
    fn flush(&self) {}
}

static LIBRARY_LOG: LibraryLog = LibraryLog;

/// Sets the level after start-up.
pub struct LogLevel(Option<reload::Handle<LevelFilter, tracing_subscriber::Registry>>);

impl LogLevel {
    /// `CLAWBOX_LOG` if it names a level, else `level`, else info.
    pub fn set(&self, level: &str) {
        if let Some(h) = &self.0 {
            let _ = h.reload(chosen(level));
        }
    }
    /// No logs at all, whatever `CLAWBOX_LOG` says: for commands whose output is their answer.
    pub fn off(&self) {
        if let Some(h) = &self.0 {
            let _ = h.reload(LevelFilter::OFF);
        }
    }
}

fn chosen(configured: &str) -> LevelFilter {
    std::env::var("CLAWBOX_LOG")
        .ok()
        .and_then(|s| parse_level(&s))
        .or_else(|| parse_level(configured))
        .unwrap_or(LevelFilter::INFO)
}

/// Installs the global subscriber at `level` (see [`LogLevel::set`] for the order); change it later
/// with the handle. Safe to call once; a later call gets a handle that does nothing.
pub fn init(level: &str) -> LogLevel {
    if log::set_logger(&LIBRARY_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let (filter, handle) = reload::Layer::new(chosen(level));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let ok = tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("clawbox".into()))
                .try_init()
                .is_ok();
            return LogLevel(ok.then_some(handle));
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let ok = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok();
    LogLevel(ok.then_some(handle))
}
