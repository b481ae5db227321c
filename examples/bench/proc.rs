//! The clawbox process under measurement: spawning `clawbox run` with its stderr lines timestamped
//! as they arrive, SIGTERM, and what the kernel says about it (/proc/<pid>/status, stat, io). Owns
//! no measurement logic; never reads a message body out of the logs (only fixed phrases).

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Log lines kept per process: a run logs a few per reconnect; the cap bounds the harness's memory
/// if clawbox logged in a loop.
const MAX_LINES: usize = 100_000;
/// How long a stopping clawbox gets before the bench kills it.
const STOP_DEADLINE: Duration = Duration::from_secs(15);

pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

pub struct Clawbox {
    pub child: Child,
    pub pid: u32,
    pub started: Instant,
    pub lines: Lines,
}

pub fn spawn(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    cwd: &Path,
) -> Result<Clawbox, String> {
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(cwd)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CLAWBOX_FAULT")
        .env("CLAWBOX_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        c.env(k, v);
    }
    let started = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id().ok_or("clawbox exited at once")?;
    let lines: Lines = Arc::default();
    if let Some(err) = child.stderr.take() {
        tokio::spawn(collect(BufReader::new(err), lines.clone()));
    }
    if let Some(out) = child.stdout.take() {
        tokio::spawn(collect(BufReader::new(out), lines.clone()));
    }
    Ok(Clawbox {
        child,
        pid,
        started,
        lines,
    })
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(r: BufReader<R>, lines: Lines) {
    let mut it = r.lines();
    while let Ok(Some(l)) = it.next_line().await {
        let mut v = lines.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_LINES {
            v.push((Instant::now(), l));
        }
    }
}

impl Clawbox {
    /// The first line after `t` containing any of `needles`, with its arrival time.
    pub fn line_after(&self, t: Instant, needles: &[&str]) -> Option<(Instant, String)> {
        let v = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .find(|(at, l)| *at > t && needles.iter().any(|n| l.contains(n)))
            .cloned()
    }

    pub fn tail(&self, n: usize) -> String {
        let v = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let from = v.len().saturating_sub(n);
        v[from..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM and wait for the exit (SIGKILL after [`STOP_DEADLINE`]); the exit code.
    pub async fn stop(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(Ok(s)) => s.code(),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        }
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A `Key:   1234 kB` field of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no {key}"))
}

/// utime + stime of /proc/<pid>/stat, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or("stat: no ')'")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state field.
    let num = |i: usize| -> Result<u64, String> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("stat: field {} unreadable", i + 3))
    };
    Ok(num(11)? + num(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when getconf is missing).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Io {
    /// Bytes passed to write(2) and friends (any fd: files, sockets, pipes).
    pub wchar: u64,
    /// Bytes the process caused to be sent to the storage layer.
    pub write_bytes: u64,
    /// write(2)-family calls.
    pub syscw: u64,
}

pub fn io(pid: u32) -> Result<Io, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .map_err(|e| format!("/proc/{pid}/io: {e}"))?;
    let get = |k: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Io {
        wchar: get("wchar"),
        write_bytes: get("write_bytes"),
        syscw: get("syscw"),
    })
}
