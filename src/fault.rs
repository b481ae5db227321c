//! Fault injection for the crash and watchdog tests, armed only by the `CLAWBOX_FAULT` environment
//! variable (unset in production: every check is one load of a cached empty list).
//!
//! `CLAWBOX_FAULT` is a comma-separated list of:
//! - `crash:<point>[:<n>]` — abort the process (like a power cut or SIGKILL: no cleanup) the
//!   `n`-th time (default 1st) execution passes `<point>`. Points: `after-accept` (message durable,
//!   not yet acknowledged upstream), `after-turn` (reply recorded, not yet sent), `before-send`
//!   (chunk marked in flight, not sent), `after-send` (sent, not yet marked sent),
//!   `after-pair-success` (WhatsApp credentials durable, the 515 reconnect not yet made).
//! - `panic:<point>[:<n>]` — panic there the `n`-th time (a bug in a channel's driver). Points:
//!   `whatsapp-connected` (the WhatsApp driver, once a connection is up).
//! - `stall:<component>` — that component's loop stops making progress (for the watchdog test).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many fault entries are read (the variable is for tests; anything longer is a typo).
const MAX_ENTRIES: usize = 8;

struct Fault {
    kind: String,
    target: String,
    at: u64,
    hits: AtomicU64,
}

fn faults() -> &'static [Fault] {
    static FAULTS: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let Ok(spec) = std::env::var("CLAWBOX_FAULT") else {
            return Vec::new();
        };
        spec.split(',')
            .take(MAX_ENTRIES)
            .filter_map(|e| {
                let mut parts = e.trim().splitn(3, ':');
                let kind = parts.next()?.to_string();
                let target = parts.next()?.to_string();
                let at = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                Some(Fault {
                    kind,
                    target,
                    at,
                    hits: AtomicU64::new(0),
                })
            })
            .collect()
    })
}

/// Aborts the process here if a `crash:<name>` fault is armed and due.
pub fn crash_point(name: &str) {
    for f in faults() {
        if f.kind == "crash" && f.target == name {
            let n = f.hits.fetch_add(1, Ordering::SeqCst) + 1;
            if n == f.at {
                eprintln!("clawbox: injected crash at {name} (hit {n})");
                std::process::abort();
            }
        }
    }
}

/// Panics here if a `panic:<name>[:<n>]` fault is armed and due (the supervisor's restart path).
pub fn panic_point(name: &str) {
    for f in faults() {
        if f.kind == "panic" && f.target == name {
            let n = f.hits.fetch_add(1, Ordering::SeqCst) + 1;
            if n == f.at {
                panic!("injected panic at {name} (hit {n})");
            }
        }
    }
}

/// True if `stall:<component>` is armed.
pub fn stalled(component: &str) -> bool {
    faults()
        .iter()
        .any(|f| f.kind == "stall" && f.target == component)
}
