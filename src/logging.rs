//! Log setup: journald when systemd runs us (it sets `JOURNAL_STREAM`), plain stderr otherwise.
//! The level comes from the config (`gateway.log_level`), overridden by `CLAWBOX_LOG`. Nothing at
//! info or above carries a secret or a message body.

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

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(configured: &str) {
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
