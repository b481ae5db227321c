//! Log setup: journald when systemd runs us (it sets `JOURNAL_STREAM`), plain stderr otherwise.
//! The level comes from the config (`gateway.log_level`), overridden by `CLAWBOX_LOG`. Nothing at
//! info or above carries a secret or a message body. The WhatsApp library logs through the `log`
//! crate; its warnings and errors (a frame that fails decryption, an undecodable node, why the
//! transport dropped) are forwarded here through the repeat suppressor ([`crate::repeat`]), its
//! chattier levels never are.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(configured: &str) {
    if log::set_logger(&LIBRARY_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let level = std::env::var("CLAWBOX_LOG")
        .ok()
        .and_then(|s| parse_level(&s))
        .or_else(|| parse_level(configured))
        .unwrap_or(LevelFilter::INFO);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(level)
                .with(journald.with_syslog_identifier("clawbox".into()))
                .try_init();
            return;
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(level)
        .with(fmt)
        .try_init();
}
