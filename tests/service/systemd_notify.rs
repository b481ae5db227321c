//! sd_notify through the real binary: with `NOTIFY_SOCKET` pointing at a real unix datagram socket
//! and `WATCHDOG_USEC` set, clawbox sends `READY=1`, `STATUS=` with each channel, `WATCHDOG=1` every
//! WatchdogSec/2 while everything it watches makes progress, and `STOPPING=1` on SIGTERM.
//!
//! The watchdog is fed by real progress only: a store writer that really blocks (as in a hung
//! fsync), a router loop that really stops turning, a Telegram poll loop that really hangs — each
//! armed to happen after start-up — stop the pings within that component's allowance, and the log
//! names it. Without a fault the pings keep flowing on a box where nothing happens: connected and
//! idle (WhatsApp keepalives, Telegram's 50 s long polls), and offline with no network.

use kit::{fakes, support};

use fakes::telegram::FakeTelegram;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::rig::{Options, Rig, TG_POLL_TIMEOUT_S};
use support::*;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

const TOKEN: &str = "123456:TEST-token_abc";
/// `WATCHDOG_USEC` given to clawbox: WatchdogSec = 2 s, so a ping every second.
const WATCHDOG_USEC: &str = "2000000";
/// The ping period that follows from it (WatchdogSec / 2).
const PERIOD: Duration = Duration::from_secs(1);
/// Slack on top of a component's allowance for the last ping: one period (the tick that finds the
/// row overdue) and scheduling on a loaded 2-core machine.
const LATE: Duration = Duration::from_secs(3);
/// The store threads' allowance: one probe period plus the time an answer may take.
const STORE_ALLOWANCE: Duration = clawbox::store::ROW_ALLOWANCE;

type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// The notify socket and what arrived on it, with arrival times.
struct Socket {
    path: std::path::PathBuf,
    log: Log,
}

impl Socket {
    fn bind(dir: &std::path::Path) -> Socket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let log: Log = Arc::default();
        let l = log.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                let now = Instant::now();
                for line in text.lines() {
                    l.lock().unwrap().push((now, line.to_string()));
                }
            }
        });
        Socket { path, log }
    }

    fn envs<'a>(&'a self, fault: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
        let mut envs = vec![
            ("NOTIFY_SOCKET", self.path.to_str().unwrap()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ];
        if let Some(f) = fault {
            envs.push(("CLAWBOX_FAULT", f));
        }
        envs
    }

    fn lines(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().clone()
    }

    fn pings_after(&self, t: Instant) -> Vec<Instant> {
        self.lines()
            .into_iter()
            .filter(|(at, l)| l == "WATCHDOG=1" && *at > t)
            .map(|(at, _)| at)
            .collect()
    }

    fn ready_at(&self) -> Option<Instant> {
        self.lines()
            .iter()
            .find(|(_, s)| s == "READY=1")
            .map(|(t, _)| *t)
    }

    fn status_lines(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(_, s)| s.starts_with("STATUS="))
            .map(|(_, s)| s)
            .collect()
    }
}

/// How the box under test reaches Telegram and WhatsApp.
enum Net<'a> {
    /// The fake Bot API (long polls of `poll_timeout_s`); WhatsApp's server refuses connections.
    FakeTelegram(&'a FakeTelegram, u64),
    /// No network: both Telegram's api_root and WhatsApp's server refuse connections.
    Offline,
}

struct Notified {
    sock: Socket,
    _dir: tempfile::TempDir,
    proc_: Proc,
}

async fn start(net: Net<'_>, fault: Option<&str>) -> Notified {
    let dir = tempfile::tempdir().unwrap();
    let sock = Socket::bind(dir.path());
    write_secret(dir.path().join("tg.token"), TOKEN);
    // Nothing listens here: every connection is refused, as on a box without network.
    let refused = format!("127.0.0.1:{}", free_port());
    let (api_root, poll) = match net {
        Net::FakeTelegram(tg, poll) => (tg.api_root(), format!("poll_timeout_s = {poll}\n")),
        Net::Offline => (format!("http://{refused}"), String::new()),
    };
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{}\"\n\
         [channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [1]\n\
         api_root = \"{api_root}\"\n{poll}\
         [channels.whatsapp]\nserver_url = \"ws://{refused}/ws/chat\"\n\
         version_url = \"http://{refused}/sw.js\"\n",
        dir.path().join("state").display(),
        free_port(),
    );
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    let proc_ = spawn(
        &["run", "--config", path.to_str().unwrap()],
        &sock.envs(fault),
        dir.path(),
    );
    Notified {
        sock,
        _dir: dir,
        proc_,
    }
}

impl Notified {
    async fn wait(&self, what: &str, pred: impl Fn(&[(Instant, String)]) -> bool) {
        wait_for(
            what,
            || pred(&self.sock.lines()),
            || format!("{:#?}\n{:#?}", self.sock.lines(), self.proc_.stderr()),
        )
        .await
    }

    async fn ready(&self) -> Instant {
        self.wait("READY=1", |l| l.iter().any(|(_, s)| s == "READY=1"))
            .await;
        self.sock.ready_at().unwrap()
    }

    /// Waits (up to `bound`) for the watchdog's warning naming `component`; returns when seen.
    async fn stall_warning(&self, component: &str, bound: Duration) -> Instant {
        let deadline = Instant::now() + bound;
        loop {
            let named = self.proc_.stderr().iter().any(|l| {
                l.contains("stopped making progress") && l.contains(&format!("\"{component}\""))
            });
            if named {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "no stall warning naming {component} within {bound:?}; pings after READY: {}\n\
                 {:#?}",
                self.sock.pings_after(self.sock.ready_at().unwrap()).len(),
                self.proc_.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// When the fault's injection line appeared on stderr (waits up to `bound`).
    async fn injected(&self, point: &str, bound: Duration) -> Instant {
        let deadline = Instant::now() + bound;
        let line = format!("injected hang at {point}");
        while !self.proc_.stderr().iter().any(|l| l.contains(&line)) {
            assert!(
                Instant::now() < deadline,
                "the {point} hang never happened\n{:#?}",
                self.proc_.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Instant::now()
    }

    /// Asserts no ping arrives for three periods from now.
    async fn no_more_pings(&self) {
        let since = Instant::now();
        let deadline = since + 3 * PERIOD;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                self.sock.pings_after(since).is_empty(),
                "a ping was sent while a component was stalled\n{:#?}",
                self.proc_.stderr()
            );
        }
    }

    /// Asserts pings arrive every period, without a gap, for all of `window`.
    async fn pings_keep_flowing(&self, window: Duration) {
        pings_keep_flowing(&self.sock, &self.proc_, window).await
    }

    /// The watchdog's first warning line.
    fn first_stall_line(&self) -> String {
        self.proc_
            .stderr()
            .into_iter()
            .find(|l| l.contains("stopped making progress"))
            .unwrap_or_default()
    }
}

async fn pings_keep_flowing(sock: &Socket, proc_: &Proc, window: Duration) {
    let since = Instant::now();
    let end = since + window;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pings = sock.pings_after(since);
        let last = pings.last().copied().unwrap_or(since);
        assert!(
            last.elapsed() <= 2 * PERIOD,
            "no ping for {:?} after {:?} of the window\n{:#?}",
            last.elapsed(),
            since.elapsed(),
            proc_.stderr()
        );
    }
    assert!(
        !proc_
            .stderr()
            .iter()
            .any(|l| l.contains("stopped making progress")),
        "a stall was reported: {:#?}",
        proc_.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut n = start(Net::FakeTelegram(&tg, 5), None).await;
    let ready_at = n.ready().await;
    n.wait("STATUS= with the telegram channel up", |l| {
        l.iter()
            .any(|(_, s)| s.starts_with("STATUS=") && s.contains("telegram: up"))
    })
    .await;
    n.wait("four watchdog pings", |_| {
        n.sock.pings_after(ready_at).len() >= 4
    })
    .await;
    let pings = n.sock.pings_after(ready_at);
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(700) && gap <= Duration::from_millis(1600),
            "ping gap {gap:?}"
        );
    }
    n.proc_.sigterm();
    assert_eq!(n.proc_.exit_code().await, Some(0));
    n.wait("STOPPING=1", |l| l.iter().any(|(_, s)| s == "STOPPING=1"))
        .await;
}

/// The writer thread blocks at its first write batch 5 s after start-up (the idle flush comes
/// every 2 s), as in an fsync that never returns. Its row stops beating because the
/// no-op it is sent each period is never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_writer_stops_the_pings() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut n = start(Net::FakeTelegram(&tg, 5), Some("hang:store-writer:5s")).await;
    let ready_at = n.ready().await;
    let hung_at = n.injected("store-writer", SOON).await;
    assert!(hung_at > ready_at, "the hang comes after start-up");
    let bound = STORE_ALLOWANCE + LATE;
    let warned = n.stall_warning("store-writer", bound + LATE).await;
    n.no_more_pings().await;
    let pings = n.sock.pings_after(ready_at);
    assert!(
        pings.len() >= 2,
        "pings flowed after READY=1 until the stall: {pings:?}"
    );
    let last = *pings.last().unwrap();
    assert!(
        last <= hung_at + bound,
        "last ping {:?} after the hang; allowed {bound:?}",
        last - hung_at
    );
    assert!(warned <= hung_at + bound + LATE);
    // A hung writer holds shutdown too; systemd's watchdog would SIGABRT it, here SIGKILL.
    n.proc_.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_box_without_network_keeps_feeding_the_watchdog() {
    let mut n = start(Net::Offline, None).await;
    n.ready().await;
    n.wait("STATUS= with both channels retrying", |l| {
        l.iter().any(|(_, s)| {
            s.starts_with("STATUS=")
                && s.contains("telegram: degraded")
                && s.contains("whatsapp: degraded")
        })
    })
    .await;
    // Longer than the store threads' and the router's allowances (25 s and 10 s: they beat only
    // on their own schedule); the channels fail to connect and retry every few seconds, each
    // retry a beat.
    n.pings_keep_flowing(STORE_ALLOWANCE + Duration::from_secs(10))
        .await;
    assert!(
        n.sock
            .status_lines()
            .last()
            .is_some_and(|s| s.contains("telegram: degraded") && s.contains("whatsapp: degraded")),
        "still offline at the end: {:?}",
        n.sock.status_lines()
    );
    n.proc_.sigterm();
    assert_eq!(n.proc_.exit_code().await, Some(0));
}

/// The router's loop blocks at its first turn 5 s after start-up (it turns every
/// `router::TICK` even with nothing to do), awaiting a future that never completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_router_loop_stops_the_pings() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut n = start(Net::FakeTelegram(&tg, 5), Some("hang:router:5s")).await;
    let ready_at = n.ready().await;
    let hung_at = n.injected("router", SOON).await;
    assert!(hung_at > ready_at, "the hang comes after start-up");
    // The loop beat just before it blocked: its row is due one allowance later.
    let bound = clawbox::router::ALLOWANCE + LATE;
    n.stall_warning("router", bound + LATE).await;
    n.no_more_pings().await;
    let last = *n.sock.pings_after(ready_at).last().unwrap();
    assert!(
        last <= hung_at + bound,
        "last ping {:?} after the hang; allowed {bound:?}",
        last - hung_at
    );
    assert!(
        n.first_stall_line().contains(r#"stalled=["router"]"#),
        "only the router is stalled: {}",
        n.first_stall_line()
    );
    n.proc_.kill9().await;
}

/// Telegram's poll loop blocks at its first iteration 5 s after start-up, right after a 5 s
/// long poll came back empty. The last beat announced that poll (5 s + the 10 s grace + the
/// step slack), so the pings stop once that runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_telegram_poll_loop_stops_the_pings() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut n = start(Net::FakeTelegram(&tg, 5), Some("hang:telegram:5s")).await;
    let ready_at = n.ready().await;
    let hung_at = n.injected("telegram", SOON).await;
    assert!(hung_at > ready_at, "the hang comes after start-up");
    assert!(
        tg.calls("getUpdates") >= 1,
        "it was polling before the hang"
    );
    // Announced at the start of the poll (before the hang): 5 s + POLL_GRACE + STEP_SLACK.
    let bound = Duration::from_secs(5)
        + clawbox::channel::telegram::proto::POLL_GRACE
        + Duration::from_secs(5)
        + LATE;
    n.stall_warning("telegram", bound + LATE).await;
    n.no_more_pings().await;
    let last = *n.sock.pings_after(ready_at).last().unwrap();
    assert!(
        last <= hung_at + bound,
        "last ping {:?} after the hang; allowed {bound:?}",
        last - hung_at
    );
    assert!(
        n.first_stall_line().contains(r#"stalled=["telegram"]"#),
        "only Telegram is stalled: {}",
        n.first_stall_line()
    );
    n.proc_.sigterm();
    assert_eq!(n.proc_.exit_code().await, Some(0));
}

/// WhatsApp linked and connected (the fake server), Telegram long-polling with the production
/// `poll_timeout_s` (50 s), no traffic: nothing progresses but keepalives, answered no-ops and
/// loop ticks, and the pings never stop. The window covers a whole long poll and is longer than
/// every allowance (WhatsApp's 60 s between signs of life on a connection is the longest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_idle_box_keeps_feeding_the_watchdog() {
    const WINDOW: Duration = Duration::from_secs(75);
    let mut rig = Rig::new(Options::default()).await;
    let cfg = std::fs::read_to_string(&rig.cfg).unwrap();
    let short_poll = format!("poll_timeout_s = {TG_POLL_TIMEOUT_S}\n");
    assert!(cfg.contains(&short_poll));
    std::fs::write(&rig.cfg, cfg.replace(&short_poll, "")).unwrap();
    rig.pair().await;
    let sock = Socket::bind(rig.dir.path());
    rig.run_with_env(&sock.envs(None)).await;
    let deadline = Instant::now() + SOON;
    while !sock
        .status_lines()
        .iter()
        .any(|s| s.contains("whatsapp: up (linked") && s.contains("telegram: up"))
    {
        assert!(
            Instant::now() < deadline,
            "both channels up: {:?}\n{:#?}",
            sock.status_lines(),
            rig.proc().stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tg = rig.tg.as_ref().unwrap();
    let polls_before = tg.calls("getUpdates");
    pings_keep_flowing(&sock, rig.proc(), WINDOW).await;
    let polls = tg.calls_of("getUpdates");
    assert!(
        polls.len() > polls_before && polls.len() - polls_before <= 3,
        "long polls of 50 s went on: {} in {WINDOW:?}",
        polls.len() - polls_before
    );
    assert!(rig.health().await.contains("linked"), "WhatsApp still up");
    rig.stop().await;
}
