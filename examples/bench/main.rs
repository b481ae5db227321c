//! The bench harness behind `tests/bench.sh`: runs the real `clawbox run` against the loopback fakes
//! (WhatsApp through a link proxy, Telegram Bot API, OpenAI-compatible endpoint) and prints one
//! Markdown table of footprint and speed figures, each with its target and whether it meets it.
//!
//! Owns the scenarios and the arithmetic; the processes, the /proc readings, the link proxy and the
//! fakes are the test kit's (tests/kit: `support`, `support::procfs`, `support::faultproxy`,
//! `fakes`). Never part of the test suite; never talks to anything beyond 127.0.0.1. Usage
//! (bench.sh passes these): `bench --clawbox BIN [--size-x86 BIN] [--dist DIR] [--quick]
//! [--overhead-only] [--openclaw-rss-kib N | --openclaw-note TEXT]`.

use kit::fakes;
use kit::fakes::openai::{FakeConfig, FakeOpenAi, last_user_message};
use kit::fakes::telegram::FakeTelegram;
use kit::fakes::whatsapp::{FakeWhatsApp, WS_PATH};
use kit::support::faultproxy::FaultProxy;
use kit::support::{self, Proc, procfs};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixDatagram;
use tokio::time::{Instant, sleep};

const TOKEN: &str = "123456:BENCH-token_abc";
const FRIEND: &str = "+15550002222";
/// Not in the overhead run's `allow_from`: its messages are dropped by policy.
const STRANGER: &str = "+15550009999";
/// Stranger messages of the dropped-message figure.
const DROPPED_SAMPLES: u64 = 20;
/// After the dropped messages were counted: longer than the store's periodic flush (2 s), so a
/// write any of them asked to be made durable is counted.
const DROPPED_SETTLE: Duration = Duration::from_millis(2_600);
/// Bound on anything that should happen "soon" (a start, a reconnect on a loaded 2-core box).
const SOON: Duration = Duration::from_secs(60);
/// The load: chats × messages, as the issue asks.
const LOAD_CHATS: i64 = 1000;
const LOAD_MSGS: i64 = 10;
/// The whole load must be answered within this, or the figure is reported as a failure.
const LOAD_DEADLINE: Duration = Duration::from_secs(900);
/// Poll period of state the harness watches (fake state, logs); the timing resolution of the
/// reconnect and cold-start figures.
const POLL: Duration = Duration::from_millis(2);
const MIB: f64 = 1024.0 * 1024.0;
/// Head delay of the overhead runs' agent: long enough to read /metrics between the request's
/// arrival and the reply (whose send marks are fsynced too), short enough for 400 samples.
const SLOW_HEAD: Duration = Duration::from_millis(100);
/// After the agent request arrived: time for the inbox fsync (which runs alongside) to land before
/// the write counters are read; well under [`SLOW_HEAD`].
const INBOUND_SETTLE: Duration = Duration::from_millis(40);
/// Before the idle window: the first connection's writes (pre-keys, the app-state sync about 10 s
/// after login, the library's one device save about 30 s after login) are start-up, not idle.
/// (25 s let the 60 s window catch that save: "60 fsyncs per hour" from one write.)
const IDLE_SETTLE: Duration = Duration::from_secs(40);

/// Trials per figure: (full, --quick).
struct Plan {
    idle: Duration,
    cold_runs: usize,
    reconnects: usize,
    dead_links: usize,
    overhead_samples: usize,
}

const FULL: Plan = Plan {
    idle: Duration::from_secs(60),
    cold_runs: 5,
    reconnects: 20,
    dead_links: 3,
    overhead_samples: 200,
};
const QUICK: Plan = Plan {
    idle: Duration::from_secs(20),
    cold_runs: 3,
    reconnects: 5,
    dead_links: 1,
    overhead_samples: 50,
};

struct Args {
    clawbox: PathBuf,
    size_x86: Option<PathBuf>,
    dist: PathBuf,
    quick: bool,
    /// `--overhead-only`: pair, then only the gateway-overhead run (for working on that figure).
    overhead_only: bool,
    openclaw_rss_kib: Option<u64>,
    openclaw_note: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        clawbox: PathBuf::new(),
        size_x86: None,
        dist: PathBuf::from("dist"),
        quick: false,
        overhead_only: false,
        openclaw_rss_kib: None,
        openclaw_note: "not measured: bench.sh did not run it".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clawbox" => a.clawbox = val()?.into(),
            "--size-x86" => a.size_x86 = Some(val()?.into()),
            "--dist" => a.dist = val()?.into(),
            "--quick" => a.quick = true,
            "--overhead-only" => a.overhead_only = true,
            "--openclaw-rss-kib" => {
                let v = val()?;
                a.openclaw_rss_kib = Some(v.parse().map_err(|_| format!("bad KiB {v}"))?)
            }
            "--openclaw-note" => a.openclaw_note = val()?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.clawbox.as_os_str().is_empty() {
        return Err("--clawbox BIN is required".into());
    }
    Ok(a)
}

/// The 1-minute load average from /proc/loadavg ("?" if unreadable).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// One table row.
struct Row {
    figure: String,
    value: String,
    target: String,
    /// None: no target.
    meets: Option<bool>,
    how: String,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn add(&mut self, figure: &str, value: String, target: &str, meets: Option<bool>, how: &str) {
        eprintln!("bench: {figure}: {value}");
        self.0.push(Row {
            figure: figure.into(),
            value,
            target: target.into(),
            meets,
            how: how.into(),
        });
    }
    fn print(&self) {
        println!("| Figure | Value | Target | Verdict | Binary and method |");
        println!("|---|---|---|---|---|");
        for r in &self.0 {
            let verdict = match r.meets {
                Some(true) => "meets",
                Some(false) => "**misses**",
                None => "—",
            };
            println!(
                "| {} | {} | {} | {} | {} |",
                r.figure, r.value, r.target, verdict, r.how
            );
        }
    }
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 * 1024.0 / MIB)
}

/// A scalar `clawbox_<name> N` (no labels) from /metrics, or the sum of a labelled series.
fn metric(text: &str, name: &str) -> u64 {
    let full = format!("clawbox_{name}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(&full)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn http_get(url: &str) -> Result<String, String> {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = clawbox::http::HttpClient::new()
        .request(req, Duration::from_secs(10), 1 << 20)
        .await
        .map_err(|e| format!("GET {url}: {e:?}"))?;
    Ok(String::from_utf8_lossy(resp.body()).to_string())
}

/// The box: a state dir, two configs (echo agent; OpenAI agent) sharing it, a health port.
struct Bx {
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl Bx {
    fn new(
        wa_url: &str,
        version_url: &str,
        tg: &FakeTelegram,
        ai: &FakeOpenAi,
        slow: &FakeOpenAi,
    ) -> Result<Bx, String> {
        // Under /var/tmp, not /tmp: a disk, so /proc/<pid>/io write_bytes means something.
        let dir = tempfile::Builder::new()
            .prefix("clawbox-bench.")
            .tempdir_in("/var/tmp")
            .map_err(|e| format!("scratch dir: {e}"))?;
        // Private, as clawbox requires of a secret file.
        std::fs::write(dir.path().join("tg.token"), TOKEN).map_err(|e| e.to_string())?;
        std::fs::set_permissions(
            dir.path().join("tg.token"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let agents = format!(
            "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"fake-model\"\n\
             [agents.slow]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"fake-model\"\n",
            ai.base_url(),
            slow.base_url()
        );
        for (name, agent, agent_line) in [
            ("echo.toml", String::new(), String::new()),
            (
                "openai.toml",
                agents.clone(),
                "agent = \"ai\"\n".to_string(),
            ),
            (
                "overhead.toml",
                agents.clone(),
                "agent = \"slow\"\n".to_string(),
            ),
        ] {
            let cfg = format!(
                "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n\
                 [pacing]\nenabled = false\n{agent}\
                 [channels.whatsapp]\nserver_url = \"{wa_url}\"\nversion_url = \"{version_url}\"\nallow_from = [\"{FRIEND}\"]\n{agent_line}\
                 [channels.telegram]\ntoken_file = \"tg.token\"\ndm_policy = \"open\"\napi_root = \"{}\"\n{agent_line}",
                dir.path().join("state").display(),
                tg.api_root()
            );
            std::fs::write(dir.path().join(name), cfg).map_err(|e| e.to_string())?;
        }
        Ok(Bx { dir, port })
    }
    fn cfg(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    async fn metrics(&self) -> Result<String, String> {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.port)).await
    }
}

async fn until<F, Fut>(what: &str, within: Duration, mut cond: F) -> Result<Instant, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        sleep(POLL).await;
    }
}

async fn connected(wa: &FakeWhatsApp) -> bool {
    wa.state().await.connected
}

/// When a connection logged in after `t`, waiting up to `within`: a start or a reconnect is a
/// new connection's login (the fake's login log), never an older connection still counted as
/// connected.
async fn login_after(
    wa: &FakeWhatsApp,
    t: Instant,
    within: Duration,
    what: &str,
) -> Result<Instant, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(login) = wa.login_after(t).await {
            return Ok(login.at);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        sleep(POLL).await;
    }
}

/// `clawbox pair whatsapp`: the mock phone scans the printed QR data.
async fn pair(bin: &Path, bx: &Bx, wa: &FakeWhatsApp) -> Result<(), String> {
    let cfg = bx.cfg("echo.toml");
    let mut p = spawn(
        bin,
        &["pair", "whatsapp", "--config", &cfg],
        &[],
        bx.dir.path(),
    )?;
    let from = p.started;
    until("the QR data", SOON, || async {
        p.line_after(from, &["QR data"]).is_some()
    })
    .await?;
    let payload = {
        let v = p.lines.lock().unwrap_or_else(|e| e.into_inner());
        let at = v
            .iter()
            .position(|(_, l)| l.starts_with("QR data"))
            .ok_or("no QR line")?;
        // stdout and stderr share the log: the payload is the next line shaped like one.
        v.iter()
            .skip(at + 1)
            .map(|(_, l)| l.trim())
            .find(|l| l.split(',').count() >= 4 && !l.contains(' '))
            .map(str::to_string)
    };
    let payload = payload.ok_or("no QR payload after the QR line")?;
    wa.scan(&payload).await?;
    match tokio::time::timeout(SOON, p.child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        other => Err(format!("pairing did not finish: {other:?}\n{}", p.tail(20))),
    }
}

/// Starts `clawbox run` with a real NOTIFY_SOCKET; returns it with its READY=1 and WhatsApp
/// connected instants, after Telegram's first long poll too.
async fn start_run(
    bin: &Path,
    bx: &Bx,
    cfg: &str,
    wa: &FakeWhatsApp,
    tg: &FakeTelegram,
    n: usize,
) -> Result<(Proc, Duration, Duration), String> {
    until("the fake to see the old link go", SOON, || async {
        !connected(wa).await
    })
    .await?;
    let sock_path = bx.dir.path().join(format!("notify-{n}.sock"));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).map_err(|e| format!("notify socket: {e}"))?;
    let ready: Arc<Mutex<Option<Instant>>> = Arc::default();
    let r = ready.clone();
    let listener = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(len) = sock.recv(&mut buf).await {
            let at = Instant::now();
            if String::from_utf8_lossy(&buf[..len])
                .lines()
                .any(|l| l == "READY=1")
            {
                *r.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
                return;
            }
        }
    });
    let polls = tg.calls("getUpdates");
    let cfg = bx.cfg(cfg);
    let sp = sock_path.display().to_string();
    let p = spawn(
        bin,
        &["run", "--config", &cfg],
        &[("NOTIFY_SOCKET", &sp)],
        bx.dir.path(),
    )?;
    let conn_at = login_after(wa, p.started, SOON, "WhatsApp logged in").await;
    let conn_at = match conn_at {
        Ok(t) => t,
        Err(e) => return Err(format!("{e}\n{}", p.tail(30))),
    };
    until("READY=1", SOON, || async {
        ready.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    })
    .await?;
    listener.abort();
    let ready_at = ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or("READY=1 lost")?;
    until("Telegram's long poll", SOON, || async {
        tg.calls("getUpdates") > polls
    })
    .await?;
    let (ready, conn) = (ready_at - p.started, conn_at - p.started);
    Ok((p, ready, conn))
}

/// `bin` as the bench runs it: the test environment ([`support::command_for`]) with no console
/// (stdin is null).
fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Result<Proc, String> {
    let mut c = support::command_for(bin, args, envs);
    c.stdin(std::process::Stdio::null());
    support::try_spawn(c, cwd)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let mut table = Table::default();
    let load_before = loadavg();
    let started = Instant::now();
    sizes(&args, &mut table);
    let result = run(&args, &mut table).await;
    openclaw(&args, &mut table);
    println!();
    table.print();
    println!(
        "\n{} mode, {:.0} s. Machine: {} CPUs, load average (1 min) {} at the start and {} at the end: \
         timings on a shared machine are noisy; compare ratios within one run.",
        if args.quick { "Quick" } else { "Full" },
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        loadavg()
    );
    if let Err(e) = result {
        println!("\nThe run stopped early: {e}");
        std::process::exit(1);
    }
}

fn sizes(args: &Args, t: &mut Table) {
    const EIGHT_MIB: u64 = 8 * 1024 * 1024;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    match args.size_x86.as_deref().and_then(|p| size(p).map(|s| (p, s))) {
        Some((p, s)) => t.add(
            "Binary size, x86-64 (glibc, stripped)",
            format!("{:.2} MiB ({s} B)", s as f64 / MIB),
            "—",
            None,
            &format!(
                "`{}`: `cargo build --release --bin clawbox --target x86_64-unknown-linux-gnu` (no dev features)",
                p.display()
            ),
        ),
        None => t.add(
            "Binary size, x86-64",
            "not measured".into(),
            "—",
            None,
            "no --size-x86 binary",
        ),
    }
    for (arch, target, limit) in [
        ("aarch64", "≤ 8 MiB", Some(EIGHT_MIB)),
        ("armv7", "—", None),
    ] {
        let p = args.dist.join(format!("clawbox-{arch}"));
        match size(&p) {
            Some(s) => t.add(
                &format!("Binary size, static {arch} musl (stripped)"),
                format!("{:.2} MiB ({s} B)", s as f64 / MIB),
                target,
                limit.map(|l| s <= l),
                &format!("`{}` from image/build-binaries.sh", p.display()),
            ),
            None => t.add(
                &format!("Binary size, static {arch} musl"),
                "not measured".into(),
                target,
                None,
                &format!(
                    "`{}` absent: run `tests/bench.sh --arm` (≈20 min per target here)",
                    p.display()
                ),
            ),
        }
    }
}

fn openclaw(args: &Args, t: &mut Table) {
    match (
        args.openclaw_rss_kib,
        IDLE_RSS_KIB.lock().ok().and_then(|v| *v),
    ) {
        (Some(oc), Some(ours)) => t.add(
            "OpenClaw gateway idle RSS; clawbox / OpenClaw",
            format!(
                "{} ; ratio {:.4} (1 : {:.0})",
                mib(oc),
                ours as f64 / oc as f64,
                oc as f64 / ours.max(1) as f64
            ),
            "—",
            None,
            &format!(
                "node + openclaw from the interop cache, whole process tree, {}",
                args.openclaw_note
            ),
        ),
        (Some(oc), None) => t.add(
            "OpenClaw gateway idle RSS",
            mib(oc),
            "—",
            None,
            &args.openclaw_note,
        ),
        (None, _) => t.add(
            "OpenClaw gateway idle RSS",
            "not measured".into(),
            "—",
            None,
            &args.openclaw_note,
        ),
    }
}

/// clawbox's idle RSS, for the OpenClaw ratio.
static IDLE_RSS_KIB: Mutex<Option<u64>> = Mutex::new(None);

async fn run(args: &Args, t: &mut Table) -> Result<(), String> {
    let plan = if args.quick { &QUICK } else { &FULL };
    let bin = args.clawbox.as_path();
    let runtime_bin = format!(
        "`{}` (release, built with the bench: dev features on, so the fake's certificate chain is accepted)",
        bin.display()
    );

    // The fakes. The agent's reply echoes the turn's text; the fake records when each request had
    // arrived (before its head delay).
    let reply: fakes::openai::ReplyFn =
        Arc::new(move |req: &Value| format!("echo: {}", last_user_message(req)));
    let fast = FakeConfig {
        reply,
        chunk_delay: Duration::ZERO,
        chars_per_chunk: 4096,
        ..FakeConfig::default()
    };
    let ai = FakeOpenAi::start(fast.clone()).await;
    // For the overhead runs: the reply head waits, so the store counters read right after the
    // request arrived hold only what the inbound path wrote.
    let slow = FakeOpenAi::start(FakeConfig {
        head_delay: SLOW_HEAD,
        ..fast
    })
    .await;
    let wa = FakeWhatsApp::start().await;
    let proxy = FaultProxy::start(wa.ws_addr()).await;
    let tg = FakeTelegram::start(TOKEN).await;
    let bx = Bx::new(
        &format!("ws://{}{WS_PATH}", proxy.addr()),
        &wa.version_url(),
        &tg,
        &ai,
        &slow,
    )?;
    pair(bin, &bx, &wa).await?;
    eprintln!("bench: paired");
    if args.overhead_only {
        return overhead_run(bin, &bx, &wa, &tg, &slow, plan, t).await;
    }

    // Cold starts (echo agent); the last one stays up for the idle figures.
    let mut readies = Vec::new();
    let mut conns = Vec::new();
    let mut p: Option<Proc> = None;
    for n in 0..plan.cold_runs {
        if let Some(mut old) = p.take() {
            old.stop().await;
        }
        let (np, r, c) = start_run(bin, &bx, "echo.toml", &wa, &tg, n).await?;
        readies.push(r);
        conns.push(c);
        p = Some(np);
    }
    let mut p = p.ok_or("no run")?;
    readies.sort();
    conns.sort();
    let ready = pct(&readies, 50.0);
    t.add(
        "Cold start to READY=1",
        format!("{} (median of {}; max {})", ms(ready), readies.len(), ms(pct(&readies, 100.0))),
        "≤ 300 ms",
        Some(ready <= Duration::from_millis(300)),
        &format!("{runtime_bin}; spawn → `READY=1` datagram on a real NOTIFY_SOCKET; state dir already paired"),
    );
    t.add(
        "Cold start to WhatsApp connected",
        format!("{} (median of {}; max {})", ms(pct(&conns, 50.0)), conns.len(), ms(pct(&conns, 100.0))),
        "—",
        None,
        "spawn → the fake server sees the logged-in session (Noise handshake and login through the proxy)",
    );

    // Idle, after the first connection's writes (pre-keys, the app-state sync ~10 s after login).
    sleep(IDLE_SETTLE).await;
    let m0 = bx.metrics().await?;
    let io0 = procfs::io(p.pid)?;
    let cpu0 = procfs::cpu_ticks(p.pid)?;
    let t0 = Instant::now();
    sleep(plan.idle).await;
    let idle_for = t0.elapsed();
    let rss = procfs::status_kib(p.pid, "VmRSS")?;
    let io1 = procfs::io(p.pid)?;
    let cpu1 = procfs::cpu_ticks(p.pid)?;
    let m1 = bx.metrics().await?;
    *IDLE_RSS_KIB.lock().unwrap_or_else(|e| e.into_inner()) = Some(rss);
    t.add(
        "Idle RSS (WhatsApp + Telegram + echo agent)",
        format!("{} (VmHWM {})", mib(rss), mib(procfs::status_kib(p.pid, "VmHWM")?)),
        "≤ 10 MiB",
        Some(rss <= 10 * 1024),
        &format!(
            "VmRSS after {:.0} s idle, WhatsApp paired + connected to the fake, Telegram long-polling the fake",
            idle_for.as_secs_f64()
        ),
    );
    let hours = idle_for.as_secs_f64() / 3600.0;
    let tck = procfs::clk_tck() as f64;
    t.add(
        "Idle writes per hour (extrapolated)",
        format!(
            "{:.0} store commits, {:.0} fsyncs, {:.1} KiB to disk (write_bytes), {:.1} KiB written in all (wchar, sockets too); CPU {:.2} s/h",
            metric(&m1, "store_commits_total").saturating_sub(metric(&m0, "store_commits_total")) as f64 / hours,
            metric(&m1, "store_fsyncs_total").saturating_sub(metric(&m0, "store_fsyncs_total")) as f64 / hours,
            io1.write_bytes.saturating_sub(io0.write_bytes) as f64 / 1024.0 / hours,
            io1.wchar.saturating_sub(io0.wchar) as f64 / 1024.0 / hours,
            cpu1.saturating_sub(cpu0) as f64 / tck / hours,
        ),
        "—",
        None,
        &format!("measured over the {:.0} s idle window × {:.0}", idle_for.as_secs_f64(), 1.0 / hours),
    );

    // Reconnect after the link comes back: cut it (the proxy resets every connection and new ones)
    // for a random outage, restore it, time restore → logged in again.
    let mut rec = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut outages = Vec::new();
    for _ in 0..plan.reconnects {
        let outage = Duration::from_millis(rng.u64(500..=20_000));
        outages.push(outage);
        proxy.reset();
        until("the fake to see the link cut", SOON, || async {
            !connected(&wa).await
        })
        .await?;
        sleep(outage).await;
        proxy.pass();
        let up = Instant::now();
        let back = login_after(&wa, up, SOON, "WhatsApp back after the link was restored").await?;
        rec.push(back - up);
    }
    rec.sort();
    let p99 = pct(&rec, 99.0);
    t.add(
        "WhatsApp reconnect after the link is restored",
        format!(
            "p50 {} / p99 {} / max {} ({} trials)",
            secs(pct(&rec, 50.0)),
            secs(p99),
            secs(pct(&rec, 100.0)),
            rec.len()
        ),
        "p99 ≤ 5 s",
        Some(p99 <= Duration::from_secs(5)),
        "link cut by the proxy (connections reset, new ones reset at accept) for a random 0.5–20 s outage, then restored; restore → a new connection logged in (the fake's login log). Includes the backoff wait left at restore",
    );

    // Dead link: the fake stops answering anything (pings included) but keeps the socket open;
    // once clawbox gave it up, heal, and wait for a new connection to log in.
    let mut dead = Vec::new();
    let mut healed_back = Vec::new();
    for _ in 0..plan.dead_links {
        until("connected", SOON, || connected(&wa)).await?;
        let from = Instant::now();
        wa.fault("blackhole", None).await?;
        let noticed = until("clawbox to give up the silent link", SOON, || async {
            p.line_after(from, &["link silent", "WhatsApp reconnecting"])
                .is_some()
                || proxy.client_closed_after(from).is_some()
        })
        .await?;
        let at = [
            p.line_after(from, &["link silent", "WhatsApp reconnecting"])
                .map(|(t, _)| t),
            proxy.client_closed_after(from),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(noticed);
        dead.push(at - from);
        let healed = Instant::now();
        wa.fault("heal", None).await?;
        let back = login_after(&wa, healed, SOON, "a new connection after the heal").await?;
        healed_back.push(back - healed);
    }
    dead.sort();
    healed_back.sort();
    let dmax = pct(&dead, 100.0);
    t.add(
        "Dead-link detection",
        format!("median {} / max {} ({} trials)", secs(pct(&dead, 50.0)), secs(dmax), dead.len()),
        "≤ 30 s",
        Some(dmax <= Duration::from_secs(30)),
        "the fake server blackholes the open link (reads nothing, answers no ping); blackhole → clawbox logs the link silent (or closes its socket, whichever first)",
    );
    let hmax = pct(&healed_back, 100.0);
    t.add(
        "WhatsApp reconnect after a dead link heals",
        format!(
            "median {} / max {} ({} trials)",
            secs(pct(&healed_back, 50.0)),
            secs(hmax),
            healed_back.len()
        ),
        "≤ 5 s",
        Some(hmax <= Duration::from_secs(5)),
        "after each dead-link trial the fake heals; heal → a new connection logged in (the fake's login log; the given-up connection no longer counts). Includes the backoff wait left at heal",
    );
    if p.stop().await != Some(0) {
        return Err("the idle run did not exit 0 on SIGTERM".into());
    }

    // The OpenAI agent: overhead and writes per message, then the load.
    overhead_run(bin, &bx, &wa, &tg, &slow, plan, t).await?;
    let (mut p, _, _) = start_run(bin, &bx, "openai.toml", &wa, &tg, 99).await?;
    load(&p, &bx, &tg, &ai, t).await?;
    if p.stop().await != Some(0) {
        return Err("the load run did not exit 0 on SIGTERM".into());
    }
    Ok(())
}

/// A run with the slow-headed OpenAI agent for the overhead and inbound-write figures.
async fn overhead_run(
    bin: &Path,
    bx: &Bx,
    wa: &FakeWhatsApp,
    tg: &FakeTelegram,
    slow: &FakeOpenAi,
    plan: &Plan,
    t: &mut Table,
) -> Result<(), String> {
    let (mut p, _, _) = start_run(bin, bx, "overhead.toml", wa, tg, 98).await?;
    overhead(&p, bx, wa, tg, slow, plan, t).await?;
    if p.stop().await != Some(0) {
        return Err("the overhead run did not exit 0 on SIGTERM".into());
    }
    Ok(())
}

async fn wait_arrival(agent: &FakeOpenAi, marker: &str) -> Result<Instant, String> {
    until(&format!("the agent request for {marker}"), SOON, || async {
        agent
            .arrival_of(|r| last_user_message(&r.body) == marker)
            .is_some()
    })
    .await?;
    agent
        .arrival_of(|r| last_user_message(&r.body) == marker)
        .ok_or_else(|| format!("{marker}: no arrival"))
}

/// Sequential single messages on each channel: fake sends at t0, the fake OpenAI endpoint has the
/// request at t1; the reply is awaited before the next message so each message is its own batch.
async fn overhead(
    p: &Proc,
    bx: &Bx,
    wa: &FakeWhatsApp,
    tg: &FakeTelegram,
    agent: &FakeOpenAi,
    plan: &Plan,
    t: &mut Table,
) -> Result<(), String> {
    let m0 = bx.metrics().await?;
    let io0 = procfs::io(p.pid)?;
    let mut per = Vec::new();
    let mut sent_in = 0u64;
    for ch in ["WhatsApp", "Telegram"] {
        let mut d = Vec::new();
        let mut fsyncs = Vec::new();
        for i in 0..plan.overhead_samples {
            let marker = format!("ovh{}{i}", &ch[..2]);
            let before = bx.metrics().await?;
            let t0;
            if ch == "WhatsApp" {
                wa.contact_send(FRIEND, &marker, None, None).await?;
                // Taken once the frame is handed to the fake's connection task: the bytes are on
                // their way, so this slightly overstates the overhead, never understates it.
                t0 = Instant::now();
            } else {
                t0 = Instant::now();
                tg.push_text(42, 42, &marker);
            }
            let t1 = wait_arrival(agent, &marker).await?;
            d.push(t1.saturating_duration_since(t0));
            // The inbox fsync runs alongside the agent call: give it time to land, well before the
            // agent's reply (held SLOW_HEAD) brings the reply's own writes.
            sleep(INBOUND_SETTLE).await;
            let after = bx.metrics().await?;
            fsyncs.push(
                metric(&after, "store_fsyncs_total")
                    .saturating_sub(metric(&before, "store_fsyncs_total")),
            );
            sent_in += 1;
            let want = format!("echo: {marker}");
            until(&format!("the reply to {marker}"), SOON, || async {
                if ch == "WhatsApp" {
                    wa.contact_inbox(FRIEND)
                        .await
                        .iter()
                        .any(|m| m.text == want)
                } else {
                    tg.sent().iter().any(|m| m.chat_id == 42 && m.text == want)
                }
            })
            .await?;
        }
        d.sort();
        fsyncs.sort();
        per.push((ch, d, fsyncs));
    }
    // Let the last replies' delivery records land before reading the write counters.
    sleep(Duration::from_millis(500)).await;
    let m1 = bx.metrics().await?;
    let io1 = procfs::io(p.pid)?;
    for (ch, d, _) in &per {
        let p99 = pct(d, 99.0);
        t.add(
            &format!("Gateway overhead per message, {ch}"),
            format!("p50 {} / p99 {} ({} messages)", ms(pct(d, 50.0)), ms(p99), d.len()),
            "p99 ≤ 2 ms",
            Some(p99 <= Duration::from_millis(2)),
            &format!(
                "fake {} sends (t0) → the fake OpenAI endpoint has the whole request (t1); one message at a time. Includes loopback both ways, {}policy, the inbox commit (its fsync runs alongside; the server is acked after it), turn scheduling, request build. Subtracts nothing",
                if *ch == "WhatsApp" { "WhatsApp server" } else { "Bot API answers the held getUpdates" },
                if *ch == "WhatsApp" { "WebSocket + Noise decrypt + Signal decrypt + receipts, " } else { "HTTP + JSON parse, " }
            ),
        );
    }
    let n = sent_in as f64;
    let d = |name: &str| metric(&m1, name).saturating_sub(metric(&m0, name)) as f64 / n;
    t.add(
        "Store writes per inbound message (one message per batch)",
        format!(
            "{:.2} fsyncs, {:.2} commits, {:.0} B records, {:.0} B to disk (write_bytes), {:.0} B written in all (wchar)",
            d("store_fsyncs_total"),
            d("store_commits_total"),
            d("store_bytes_written_total"),
            io1.write_bytes.saturating_sub(io0.write_bytes) as f64 / n,
            io1.wchar.saturating_sub(io0.wchar) as f64 / n,
        ),
        "—",
        None,
        &format!("{} sequential messages (both channels), each answered before the next: the whole round trip (inbox, reply marked in flight, turn completion) per message; /metrics store counters and /proc/<pid>/io", sent_in),
    );
    for (ch, _, fsyncs) in &per {
        let med = fsyncs.get(fsyncs.len() / 2).copied().unwrap_or(0);
        let max = fsyncs.last().copied().unwrap_or(0);
        let mean = fsyncs.iter().sum::<u64>() as f64 / fsyncs.len().max(1) as f64;
        let wa = *ch == "WhatsApp";
        t.add(
            &format!("fsyncs on the inbound path per accepted message, {ch}"),
            format!("median {med}, mean {mean:.2}, max {max}"),
            if wa { "median 1, max 2" } else { "≤ 1 per inbound batch" },
            Some(if wa { med <= 1 && max <= 2 } else { med <= 1 }),
            &format!(
                "store_fsyncs_total read before the fake sends and {} ms after the agent request arrived (the agent holds its reply {} ms, so no reply write is counted); {}the mean includes the 2 s background flush of lazily committed rows when it falls in the window",
                INBOUND_SETTLE.as_millis(),
                SLOW_HEAD.as_millis(),
                if wa { "the WhatsApp library's Signal-session write is deferred (durable with the next fsync: the inbox's, or the reply's in-flight mark); " } else { "" }
            ),
        );
    }
    dropped(bx, wa, t).await
}

/// Messages dropped by policy (a stranger's DMs): fsyncs they cause, from before the first until
/// well after the store's periodic flush would have run.
async fn dropped(bx: &Bx, wa: &FakeWhatsApp, t: &mut Table) -> Result<(), String> {
    const DROPPED: &str = "messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"}";
    // The overhead run's last lazily committed rows reach the disk first (periodic flush).
    sleep(DROPPED_SETTLE).await;
    let m0 = bx.metrics().await?;
    let base = metric(&m0, DROPPED);
    for i in 0..DROPPED_SAMPLES {
        wa.contact_send(STRANGER, &format!("drop{i}"), None, None)
            .await?;
    }
    until("the stranger's messages dropped", SOON, || async {
        bx.metrics()
            .await
            .is_ok_and(|m| metric(&m, DROPPED) >= base + DROPPED_SAMPLES)
    })
    .await?;
    sleep(DROPPED_SETTLE).await;
    let m1 = bx.metrics().await?;
    let fsyncs =
        metric(&m1, "store_fsyncs_total").saturating_sub(metric(&m0, "store_fsyncs_total"));
    t.add(
        "fsyncs per message dropped by policy, WhatsApp",
        format!(
            "{:.2} ({fsyncs} for {DROPPED_SAMPLES} messages)",
            fsyncs as f64 / DROPPED_SAMPLES as f64
        ),
        "0",
        Some(fsyncs == 0),
        &format!(
            "{DROPPED_SAMPLES} DMs from a contact not in allow_from, decrypted, dropped and acknowledged; store_fsyncs_total from before the first until {} ms after the last was counted (past the 2 s periodic flush)",
            DROPPED_SETTLE.as_millis()
        ),
    );
    Ok(())
}

/// A load token: `c<chat>m<message>`.
fn token(chat: i64, msg: i64) -> String {
    format!("c{chat}m{msg}")
}

fn tokens_in(text: &str) -> impl Iterator<Item = (i64, i64)> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| {
            let (c, m) = w.strip_prefix('c')?.split_once('m')?;
            Some((c.parse().ok()?, m.parse().ok()?))
        })
}

/// 1,000 Telegram chats × 10 messages, all pushed at once; pacing is off in the config.
async fn load(
    p: &Proc,
    bx: &Bx,
    tg: &FakeTelegram,
    ai: &FakeOpenAi,
    t: &mut Table,
) -> Result<(), String> {
    let rss0 = procfs::status_kib(p.pid, "VmRSS")?;
    let cpu0 = procfs::cpu_ticks(p.pid)?;
    let m0 = bx.metrics().await?;
    let io0 = procfs::io(p.pid)?;
    let reqs0 = ai.requests().len();
    let sent0 = tg.sent().len();
    let base = 1_000_000i64;
    let start = Instant::now();
    for m in 0..LOAD_MSGS {
        for c in 0..LOAD_CHATS {
            tg.push_text(base + c, base + c, &format!("load {}", token(c, m)));
        }
    }
    // Done when every chat has seen all its tokens echoed back.
    let mut seen: HashMap<i64, BTreeSet<i64>> = HashMap::new();
    let mut crossed = 0usize;
    let mut checked = sent0;
    let mut peak = rss0;
    let deadline = start + LOAD_DEADLINE;
    loop {
        let sent = tg.sent();
        for s in sent.iter().skip(checked) {
            for (c, m) in tokens_in(&s.text) {
                if base + c != s.chat_id {
                    crossed += 1;
                }
                seen.entry(s.chat_id - base).or_default().insert(m);
            }
        }
        checked = sent.len();
        peak = peak.max(procfs::status_kib(p.pid, "VmRSS").unwrap_or(0));
        let complete =
            seen.len() as i64 == LOAD_CHATS && seen.values().all(|s| s.len() as i64 == LOAD_MSGS);
        if complete {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "load not answered within {LOAD_DEADLINE:?}: {} chats complete\n{}",
                seen.values()
                    .filter(|s| s.len() as i64 == LOAD_MSGS)
                    .count(),
                p.tail(20)
            ));
        }
        sleep(Duration::from_millis(200)).await;
    }
    let took = start.elapsed();
    let cpu1 = procfs::cpu_ticks(p.pid)?;
    let rss1 = procfs::status_kib(p.pid, "VmRSS")?;
    let hwm = procfs::status_kib(p.pid, "VmHWM")?;
    let io1 = procfs::io(p.pid)?;
    sleep(Duration::from_millis(500)).await;
    let m1 = bx.metrics().await?;
    // Agent side: every request's messages (history included) belong to one chat.
    let mut mixed = 0usize;
    let reqs = ai.requests();
    for r in reqs.iter().skip(reqs0) {
        let chats: BTreeSet<i64> = r["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["content"].as_str())
            .flat_map(|c| tokens_in(c).map(|(c, _)| c).collect::<Vec<_>>())
            .collect();
        if chats.len() > 1 {
            mixed += 1;
        }
    }
    let turns = reqs.len() - reqs0;
    let msgs = (LOAD_CHATS * LOAD_MSGS) as f64;
    let idle = IDLE_RSS_KIB
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(rss0);
    let growth = peak.max(hwm).saturating_sub(idle);
    let tck = procfs::clk_tck() as f64;
    t.add(
        "RSS under load: 1,000 chats × 10 messages",
        format!(
            "peak {} (VmHWM {}; {} at the end; {} before the load); growth vs idle +{}",
            mib(peak),
            mib(hwm),
            mib(rss1),
            mib(rss0),
            mib(growth)
        ),
        "growth ≤ +20 MiB",
        Some(growth <= 20 * 1024),
        "Telegram fake, 10,000 updates pushed at once (the intake's 2,000 backlog cap makes the rest wait on the server), OpenAI agent (fake, streamed), pacing off; growth = max(VmHWM, sampled peak) − idle VmRSS above",
    );
    t.add(
        "CPU time and wall time for the load",
        format!(
            "{:.2} s CPU (utime+stime) in {:.1} s wall; {:.0} µs CPU per message; {} agent turns (messages queued behind a turn are batched)",
            cpu1.saturating_sub(cpu0) as f64 / tck,
            took.as_secs_f64(),
            cpu1.saturating_sub(cpu0) as f64 / tck / msgs * 1e6,
            turns
        ),
        "—",
        None,
        "/proc/<pid>/stat before the first push and after the last reply reached the fake",
    );
    t.add(
        "Cross-talk under load",
        format!("{} replies and {} agent requests mixed chats", crossed, mixed),
        "0",
        Some(crossed == 0 && mixed == 0),
        "each message carries its chat's token; every reply and every agent request (history included) checked; every chat got all 10 answered",
    );
    let d = |name: &str| metric(&m1, name).saturating_sub(metric(&m0, name)) as f64;
    t.add(
        "Store writes per inbound message under load",
        format!(
            "{:.3} fsyncs/message ({:.0} fsyncs, {:.0} commits for 10,000 messages), {:.0} B to disk/message",
            d("store_fsyncs_total") / msgs,
            d("store_fsyncs_total"),
            d("store_commits_total"),
            io1.write_bytes.saturating_sub(io0.write_bytes) as f64 / msgs,
        ),
        "≤ 1 fsync per inbound batch",
        Some(d("store_fsyncs_total") <= msgs),
        "the load above; commits group writes that arrive within the commit window",
    );
    Ok(())
}
