//! sd_notify through the real binary: with `NOTIFY_SOCKET` pointing at a real unix datagram socket
//! and `WATCHDOG_USEC` set, clawbox sends `READY=1`, `STATUS=` with each channel, `WATCHDOG=1` every
//! WatchdogSec/2 while its channels make progress, and `STOPPING=1` on SIGTERM; a stalled channel
//! stops the pings, so systemd would restart the service.

mod fakes;
mod support;

use fakes::telegram::FakeTelegram;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

const TOKEN: &str = "123456:TEST-token_abc";

type Log = Arc<Mutex<Vec<(Instant, String)>>>;

struct Notified {
    log: Log,
    _dir: tempfile::TempDir,
    proc_: Proc,
}

async fn start(tg: &FakeTelegram, fault: Option<&str>) -> Notified {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
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
    write_secret(dir.path().join("tg.token"), TOKEN);
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{}\"\n[channels.telegram]\ntoken_file = \"tg.token\"\n\
         allow_from = [1]\napi_root = \"{}\"\npoll_timeout_s = 5\n",
        dir.path().join("state").display(),
        free_port(),
        tg.api_root()
    );
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    let sock_str = sock_path.to_str().unwrap().to_string();
    let mut envs = vec![
        ("NOTIFY_SOCKET", sock_str.as_str()),
        ("WATCHDOG_USEC", "2000000"),
    ];
    if let Some(f) = fault {
        envs.push(("CLAWBOX_FAULT", f));
    }
    let proc_ = spawn(
        &["run", "--config", path.to_str().unwrap()],
        &envs,
        dir.path(),
    );
    Notified {
        log,
        _dir: dir,
        proc_,
    }
}

impl Notified {
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
    async fn wait(&self, what: &str, pred: impl Fn(&[(Instant, String)]) -> bool) {
        wait_for(
            what,
            || pred(&self.lines()),
            || format!("{:#?}\n{:#?}", self.lines(), self.proc_.stderr()),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_status_watchdog_and_stopping() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut n = start(&tg, None).await;
    n.wait("READY=1", |l| l.iter().any(|(_, s)| s == "READY=1"))
        .await;
    n.wait("STATUS= with the telegram channel up", |l| {
        l.iter()
            .any(|(_, s)| s.starts_with("STATUS=") && s.contains("telegram: up"))
    })
    .await;
    let ready_at = n
        .lines()
        .iter()
        .find(|(_, s)| s == "READY=1")
        .map(|(t, _)| *t)
        .unwrap();
    // WatchdogSec = 2 s, so a ping every second.
    n.wait("four watchdog pings", |_| {
        n.pings_after(ready_at).len() >= 4
    })
    .await;
    let pings = n.pings_after(ready_at);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_channel_stops_the_watchdog_pings() {
    let tg = FakeTelegram::start(TOKEN).await;
    let mut n = start(&tg, Some("stall:telegram")).await;
    n.wait("READY=1", |l| l.iter().any(|(_, s)| s == "READY=1"))
        .await;
    n.proc_
        .wait_stderr("the stall warning", |e| {
            e.iter()
                .any(|l| l.contains("telegram") && l.contains("stall"))
        })
        .await;
    // From the warning on, no more pings: watch three periods.
    let since = Instant::now();
    let before = n.pings_after(since).len();
    let deadline = since + Duration::from_secs(3);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            n.pings_after(since).len(),
            before,
            "a ping was sent while the channel was stalled"
        );
    }
    n.proc_.sigterm();
    assert_eq!(n.proc_.exit_code().await, Some(0));
}
