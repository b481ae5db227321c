//! Fault injection for the crash and watchdog tests, armed only by the `CLAWBOX_FAULT` environment
//! variable (unset in production: every check is one load of a cached empty list).
//!
//! `CLAWBOX_FAULT` is a comma-separated list of `<kind>:<point>[:<when>]`. `<when>` is `n` (the
//! n-th time execution passes `<point>`; default 1) or `<secs>s` (the first pass at least that
//! many seconds after start-up, [`init`]: after READY=1, whatever start-up did). Kinds:
//! - `crash` — abort the process (like a power cut or SIGKILL: no cleanup). Points: `after-accept`
//!   (message durable, not yet acknowledged upstream), `after-turn` (reply recorded, not yet
//!   sent), `before-send` (chunk marked in flight, not sent), `after-send` (sent, not yet marked
//!   sent), `after-pair-success` (WhatsApp credentials durable, the 515 reconnect not yet made).
//! - `hang` — block there for good, as a hung fsync or a wedged loop would. Points:
//!   `store-writer` (the writer thread, at the start of each write batch, the idle flush's
//!   included: the thread really parks), `router` (the router's loop, at each turn: the task awaits
//!   a future that never completes), `telegram` (the poll loop, before each getMe or getUpdates).
//!   Nothing consults the fault afterwards: the watchdog finds the stall only because the answers
//!   and loop turns that feed it stop coming ([`crate::status`]).
//! - `panic` — panic there (a bug in a channel's driver: the supervisor's restart path). Points:
//!   `whatsapp-connected` (the WhatsApp driver, once a connection is up).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most this many fault entries are read (the variable is for tests; anything longer is a typo).
const MAX_ENTRIES: usize = 8;

/// Which pass through the point trips the fault.
enum When {
    /// The n-th pass (from 1).
    Nth(u64),
    /// The first pass at least this long after [`init`].
    After(Duration),
}

struct Fault {
    kind: String,
    target: String,
    when: When,
    hits: AtomicU64,
}

fn started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Reads `CLAWBOX_FAULT` and starts the clock of `<secs>s` triggers; the daemon calls it first.
pub fn init() {
    started();
    faults();
}

fn parse_when(w: Option<&str>) -> When {
    match w {
        Some(w) if w.ends_with('s') => w
            .trim_end_matches('s')
            .parse()
            .map(|s| When::After(Duration::from_secs(s)))
            .unwrap_or(When::Nth(1)),
        Some(w) => When::Nth(w.parse().unwrap_or(1)),
        None => When::Nth(1),
    }
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
                let when = parse_when(parts.next());
                Some(Fault {
                    kind,
                    target,
                    when,
                    hits: AtomicU64::new(0),
                })
            })
            .collect()
    })
}

/// Counts a pass through `kind:<name>`; true on the armed pass.
fn due(kind: &str, name: &str) -> bool {
    let mut armed = false;
    for f in faults()
        .iter()
        .filter(|f| f.kind == kind && f.target == name)
    {
        armed |= match f.when {
            When::Nth(n) => f.hits.fetch_add(1, Ordering::SeqCst) + 1 == n,
            When::After(d) => {
                started().elapsed() >= d && f.hits.fetch_add(1, Ordering::SeqCst) == 0
            }
        };
    }
    armed
}

/// Aborts the process here if a `crash:<name>` fault is armed and due.
pub fn crash_point(name: &str) {
    if due("crash", name) {
        eprintln!("clawbox: injected crash at {name}");
        std::process::abort();
    }
}

/// Blocks the calling thread for good if a `hang:<name>` fault is armed and due.
pub fn hang_thread(name: &str) {
    if due("hang", name) {
        eprintln!("clawbox: injected hang at {name}");
        // `park` may return spuriously; a hung thread never comes back.
        loop {
            std::thread::park();
        }
    }
}

/// Panics here if a `panic:<name>` fault is armed and due.
pub fn panic_point(name: &str) {
    if due("panic", name) {
        panic!("injected panic at {name}");
    }
}

/// Never completes if a `hang:<name>` fault is armed and due: the awaiting loop is stuck for good.
pub async fn hang(name: &str) {
    if due("hang", name) {
        eprintln!("clawbox: injected hang at {name}");
        std::future::pending::<()>().await;
    }
}
