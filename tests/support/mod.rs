//! Helpers for tests that run the real `clawbox` binary: spawn it, read its stdout/stderr line by
//! line, wait for a line with a deadline (a deadline is a failure bound, never a sleep), kill it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_clawbox");

/// Generous bound for anything that should happen "soon" on a loaded 2-core CI machine.
pub const SOON: Duration = Duration::from_secs(20);

pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: Arc<Mutex<Vec<String>>>,
    pub err: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

pub fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
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

pub fn spawn(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Proc {
    let mut c = command(args, envs);
    c.current_dir(cwd);
    let mut child = c.spawn().expect("spawn clawbox");
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let o = out.clone();
    let r1 = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            o.lock().unwrap().push(l);
        }
    });
    let e = err.clone();
    let r2 = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            e.lock().unwrap().push(l);
        }
    });
    let stdin = child.stdin.take();
    Proc {
        child,
        stdin,
        out,
        err,
        readers: vec![r1, r2],
    }
}

impl Proc {
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

/// GET `url` with the project's own HTTP client; the body as text.
pub async fn http_get(url: &str) -> String {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = clawbox::http::HttpClient::new()
        .request(req, SOON, 1 << 20)
        .await
        .unwrap();
    String::from_utf8_lossy(resp.body()).to_string()
}

pub mod faultproxy;
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
