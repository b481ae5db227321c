//! Helpers for tests that run the real `clawbox` binary: find it, spawn it, read its stdout/stderr
//! line by line, wait for a line with a deadline (a deadline is a failure bound, never a sleep),
//! kill it; a box (config and state in a temp dir) to run it on.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

/// The `clawbox` binary under test: the one cargo built beside the running test executable
/// (`<target>/<profile>/deps/<test>-<hash>` → `<target>/<profile>/clawbox`; cargo builds a
/// package's binaries before its integration tests). `CLAWBOX_BIN` names another one. The kit is a
/// library of its own, so `env!("CARGO_BIN_EXE_clawbox")` (set for the main crate's tests only)
/// cannot be used here.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("CLAWBOX_BIN") {
            return b.to_string_lossy().into_owned();
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("the test executable lives in <target>/<profile>/deps");
        let bin = dir.join("clawbox");
        assert!(
            bin.is_file(),
            "no clawbox binary at {}: run the tests with `cargo test` (which builds it), or set \
             CLAWBOX_BIN",
            bin.display()
        );
        bin.to_string_lossy().into_owned()
    })
}

/// Generous bound for anything that should happen "soon" on a loaded 2-core CI machine.
pub const SOON: Duration = Duration::from_secs(20);

/// Lines kept per process in the timestamped log ([`Proc::lines`]): a run logs a few per reconnect;
/// the cap bounds a harness's memory if a process logged in a loop.
pub const MAX_LINES: usize = 100_000;
/// How long [`Proc::stop`] gives a process after SIGTERM before it kills it.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// stdout and stderr lines in arrival order, each with the instant it was read.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running process with its output read line by line as it arrives.
pub struct Proc {
    pub child: Child,
    /// Its process id (kept after it exited, for /proc readings while it runs: [`procfs`]).
    pub pid: u32,
    /// When it was spawned.
    pub started: Instant,
    pub stdin: Option<ChildStdin>,
    pub out: Arc<Mutex<Vec<String>>>,
    pub err: Arc<Mutex<Vec<String>>>,
    /// Both streams together, timestamped ([`Proc::line_after`]), at most [`MAX_LINES`].
    pub lines: Lines,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// `bin` with `args` and `envs`, stdout and stderr piped, the environment a test expects
/// (no systemd variables, no fault, logs at info), killed when dropped.
pub fn command_for(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CLAWBOX_FAULT")
        .env("CLAWBOX_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// [`command_for`] the binary under test ([`bin`]).
pub fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    command_for(Path::new(bin()), args, envs)
}

/// `clawbox` (the binary under test) with a piped stdin; panics if it cannot start.
pub fn spawn(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Proc {
    try_spawn(command(args, envs), cwd).unwrap_or_else(|e| panic!("{e}"))
}

/// Spawns `c` (from [`command_for`]; set its stdin to null for a process with no console) in
/// `cwd` and starts reading its output.
pub fn try_spawn(mut c: Command, cwd: &Path) -> Result<Proc, String> {
    c.current_dir(cwd);
    let started = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", c.as_std().get_program()))?;
    let pid = child.id().ok_or("the process exited at once")?;
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let lines: Lines = Arc::default();
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let stderr = child.stderr.take().ok_or("stderr is not piped")?;
    let r1 = tokio::spawn(collect(stdout, out.clone(), lines.clone()));
    let r2 = tokio::spawn(collect(stderr, err.clone(), lines.clone()));
    let stdin = child.stdin.take();
    Ok(Proc {
        child,
        pid,
        started,
        stdin,
        out,
        err,
        lines,
        readers: vec![r1, r2],
    })
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(
    r: R,
    stream: Arc<Mutex<Vec<String>>>,
    all: Lines,
) {
    let mut it = BufReader::new(r).lines();
    while let Ok(Some(l)) = it.next_line().await {
        let at = Instant::now();
        {
            let mut v = all.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < MAX_LINES {
                v.push((at, l.clone()));
            }
        }
        stream.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    }
}

impl Proc {
    /// The first line (either stream) read after `t` containing any of `needles`, with when.
    pub fn line_after(&self, t: Instant, needles: &[&str]) -> Option<(Instant, String)> {
        let v = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .find(|(at, l)| *at > t && needles.iter().any(|n| l.contains(n)))
            .cloned()
    }

    /// The last `n` lines of both streams, for an error message.
    pub fn tail(&self, n: usize) -> String {
        let v = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let from = v.len().saturating_sub(n);
        v[from..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM, then the exit code once it exited (SIGKILL and `None` after [`STOP_DEADLINE`]).
    pub async fn stop(&mut self) -> Option<i32> {
        self.sigterm();
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(Ok(s)) => s.code(),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }
    pub fn stderr(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    pub async fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until `pred` holds for the captured stdout (or stderr), failing after `SOON`.
    pub async fn wait_stdout(&self, what: &str, pred: impl Fn(&[String]) -> bool) {
        wait_for(
            what,
            || pred(&self.stdout()),
            || format!("stdout: {:#?}\nstderr: {:#?}", self.stdout(), self.stderr()),
        )
        .await
    }
    pub async fn wait_stderr(&self, what: &str, pred: impl Fn(&[String]) -> bool) {
        wait_for(
            what,
            || pred(&self.stderr()),
            || format!("stderr: {:#?}", self.stderr()),
        )
        .await
    }

    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(SOON, r).await;
        }
    }

    pub fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }

    /// Waits for the process to exit and for its output to be read to the end.
    pub async fn exit_code(&mut self) -> Option<i32> {
        let code = tokio::time::timeout(SOON, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|s| s.code());
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(SOON, r).await;
        }
        code
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `context()` after `SOON`.
pub async fn wait_for(what: &str, cond: impl Fn() -> bool, context: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The box's /metrics (on `port`) once it holds every line in `want`; panics with the last
/// reading after `SOON`. A fake records a request when it arrives and the box counts it only once
/// it has read the answer, so a counter read the instant a fake saw the request can be one behind.
pub async fn metrics_showing(port: u16, want: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let m = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
        if want.iter().all(|w| m.lines().any(|l| l == *w)) {
            return m;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("/metrics never showed all of {want:?}:\n{m}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scratch directory with a config file written into it.
pub fn scratch(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// Writes a secret file the way its owner must: mode 0600 (clawbox refuses one that other users
/// can read, as ssh does a private key).
pub fn write_secret(path: impl AsRef<Path>, text: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A free loopback port (bound and released; fine for tests that bind it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `url` (plain HTTP on loopback: /healthz, /metrics); the body as text. hyper's client
/// directly, so the kit need not depend on clawbox; bounded by `SOON` and a 1 MiB body.
pub async fn http_get(url: &str) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = url.parse().expect("a valid URL");
    let resp = tokio::time::timeout(SOON, client.get(uri))
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer within {SOON:?}"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20);
    let bytes = tokio::time::timeout(SOON, body.collect())
        .await
        .unwrap_or_else(|_| panic!("GET {url}: body not read within {SOON:?}"))
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
        .to_bytes();
    String::from_utf8_lossy(&bytes).to_string()
}

pub mod alone;
pub mod faultproxy;
pub mod procfs;
#[cfg(all(feature = "whatsapp", feature = "telegram", feature = "openai"))]
pub mod rig;

/// The value of a `/metrics` line that starts with `name` (a full series such as
/// `clawbox_dropped_total{channel="telegram",reason="not_allowed"}`, or a bare counter name);
/// 0 when absent.
pub fn metric(m: &str, name: &str) -> u64 {
    m.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A box for tests of the real binary: a temp dir holding `clawbox.toml` — `[gateway]` with the
/// state dir inside it and /healthz on a free port, pacing off, then `rest` — and `files` next to
/// it (token files and the like, mode 0600).
pub struct TestBox {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub port: u16,
}

impl TestBox {
    pub fn new(rest: &str, files: &[(&str, &str)]) -> TestBox {
        let dir = tempfile::tempdir().unwrap();
        // Token files and the like: private, as an owner must keep them.
        for (name, text) in files {
            write_secret(dir.path().join(name), text);
        }
        let port = free_port();
        let cfg = format!(
            "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n{rest}",
            dir.path().join("state").display()
        );
        let path = dir.path().join("clawbox.toml");
        std::fs::write(&path, cfg).unwrap();
        TestBox {
            dir,
            cfg: path,
            port,
        }
    }

    /// `clawbox run` on this box, once it logged "ready".
    pub async fn run_with(&self, envs: &[(&str, &str)]) -> Proc {
        let p = spawn(
            &["run", "--config", self.cfg.to_str().unwrap()],
            envs,
            self.dir.path(),
        );
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        p
    }
    pub async fn run(&self) -> Proc {
        self.run_with(&[]).await
    }
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.port)).await
    }
    pub async fn health(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/healthz", self.port)).await
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Waits for the QR data of a running `clawbox pair whatsapp`; returns the payload.
/// The label and the data are two lines, flushed apart: wait for the line after the label.
pub async fn wait_qr(p: &Proc) -> String {
    p.wait_stdout("the QR data", |o| {
        o.iter()
            .position(|l| l.starts_with("QR data"))
            .is_some_and(|at| at + 1 < o.len())
    })
    .await;
    let out = p.stdout();
    let at = out.iter().position(|l| l.starts_with("QR data")).unwrap();
    out[at + 1].trim().to_string()
}

#[cfg(feature = "whatsapp")]
/// Pairs `bx` with the fake by QR through `clawbox pair whatsapp`; returns once it exited 0.
pub async fn pair_whatsapp(fake: &crate::fakes::whatsapp::FakeWhatsApp, bx: &TestBox) {
    let mut p = spawn(
        &["pair", "whatsapp", "--config", bx.cfg.to_str().unwrap()],
        &[],
        bx.dir.path(),
    );
    let qr = wait_qr(&p).await;
    fake.scan(&qr).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
}

/// Whether this test runs as a root that can act as `nobody` (65534): chown files to it and run a
/// process as it. Root in a user namespace that maps only its own id (CI runs in one) cannot: chown
/// answers EINVAL. Probed on a scratch file, never assumed from the euid alone.
pub fn root_can_be_nobody() -> bool {
    if nix::unistd::geteuid().as_raw() != 0 {
        return false;
    }
    let Ok(probe) = tempfile::NamedTempFile::new() else {
        return false;
    };
    std::os::unix::fs::chown(probe.path(), Some(65534), Some(65534)).is_ok()
}
