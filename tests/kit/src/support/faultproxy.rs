//! A loopback TCP fault proxy for system tests: clawbox connects to the proxy, the proxy to a fake
//! server (WhatsApp WS, Telegram Bot API, OpenAI HTTP, OpenClaw WS — it is byte-level, so one type
//! serves all). On command it passes bytes, resets every connection (RST: SO_LINGER 0, then drop),
//! blackholes (accepts and holds, forwards nothing either way, existing connections included),
//! delays each chunk, or cuts the next server→client chunk in half and closes. It counts
//! connections and bytes and remembers when a byte last reached the client, so a test can tell
//! "reconnected", and when the client closed a connection, so the bench can tell "gave it up". Owns only its sockets and counters; never parses a protocol, never dials anything
//! but the one loopback upstream it was given.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One read's worth of bytes forwarded at a time: the only buffer per direction, so a proxied
/// connection holds at most 2 × this in flight.
pub const CHUNK: usize = 16 * 1024;
/// Connections held open at once; further ones are reset at accept (a box makes a handful).
pub const MAX_CONNS: usize = 64;
/// Bound on dialing the upstream fake (loopback: anything slower means the fake is gone).
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Client-close instants kept ([`FaultProxy::client_closed_after`]); a run makes a few dozen
/// connections, a long soak a few hundred.
pub const MAX_CLOSES: usize = 4096;

/// What the proxy does with bytes right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// RST every open connection and every new one.
    Reset,
    /// Accept and hold; forward nothing either way (existing connections too) until the next mode.
    Blackhole,
    /// Delay each chunk by this much.
    Latency(Duration),
    /// Forward part of the next server→client chunk, then close that connection; back to `Pass`.
    CutMidFrame,
}

#[derive(Default)]
struct Stats {
    accepted: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    cuts: AtomicU64,
    resets: AtomicU64,
    open: AtomicU64,
    last_down: Mutex<Option<Instant>>,
    client_closes: Mutex<Vec<Instant>>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Connections still open end with their tasks: tell them to reset.
        self.mode.send_replace(Mode::Reset);
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1:<free port> and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, upstream, mode.clone(), stats.clone()));
        FaultProxy {
            addr,
            upstream,
            mode,
            stats,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
    pub fn set(&self, m: Mode) {
        self.mode.send_replace(m);
    }
    pub fn pass(&self) {
        self.set(Mode::Pass)
    }
    pub fn reset(&self) {
        self.set(Mode::Reset)
    }
    pub fn blackhole(&self) {
        self.set(Mode::Blackhole)
    }
    pub fn latency(&self, d: Duration) {
        self.set(Mode::Latency(d))
    }
    pub fn cut_mid_frame(&self) {
        self.set(Mode::CutMidFrame)
    }

    /// Client connections accepted so far (a reconnecting client adds one).
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }
    /// Connections currently proxied.
    pub fn open(&self) -> u64 {
        self.stats.open.load(Ordering::Relaxed)
    }
    /// Bytes forwarded client→server.
    pub fn bytes_up(&self) -> u64 {
        self.stats.bytes_up.load(Ordering::Relaxed)
    }
    /// Bytes forwarded server→client.
    pub fn bytes_down(&self) -> u64 {
        self.stats.bytes_down.load(Ordering::Relaxed)
    }
    /// Connections cut mid-frame so far.
    pub fn cuts(&self) -> u64 {
        self.stats.cuts.load(Ordering::Relaxed)
    }
    /// Connections reset so far.
    pub fn resets(&self) -> u64 {
        self.stats.resets.load(Ordering::Relaxed)
    }
    /// When a server→client byte was last delivered to the client.
    pub fn last_down(&self) -> Option<Instant> {
        *self.stats.last_down.lock().unwrap()
    }
    /// The first instant after `t` at which the client closed a proxied connection (its side
    /// reached EOF or failed while the proxy was reading it).
    pub fn client_closed_after(&self, t: Instant) -> Option<Instant> {
        let v = self
            .stats
            .client_closes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        v.iter().copied().find(|c| *c > t)
    }
    /// True once a server→client byte was delivered after `t`.
    pub fn delivered_since(&self, t: Instant) -> bool {
        self.last_down().is_some_and(|l| l > t)
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    stats: Arc<Stats>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        if *mode.borrow() == Mode::Reset || stats.open.load(Ordering::Relaxed) >= MAX_CONNS as u64 {
            rst(client, &stats);
            continue;
        }
        tokio::spawn(serve(client, upstream, mode.clone(), stats.clone()));
    }
}

fn rst(s: TcpStream, stats: &Stats) {
    let _ = s.set_zero_linger();
    stats.resets.fetch_add(1, Ordering::Relaxed);
    drop(s);
}

/// Decrements the open count however a connection's task ends.
struct OpenGuard(Arc<Stats>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    control: watch::Sender<Mode>,
    stats: Arc<Stats>,
) {
    let mut mode = control.subscribe();
    stats.open.fetch_add(1, Ordering::Relaxed);
    let _guard = OpenGuard(stats.clone());
    // Held while blackholed: nothing is dialed until the link is back (or reset).
    loop {
        let m = *mode.borrow_and_update();
        match m {
            Mode::Reset => return rst(client, &stats),
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let server =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
            Ok(Ok(s)) => s,
            _ => return rst(client, &stats),
        };
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Either direction can end the whole connection (a reset or a cut): `kill` tells the other.
    let (kill, _) = watch::channel(false);
    let up = pump(
        Dir::Up,
        cr,
        sw,
        control.clone(),
        kill.clone(),
        stats.clone(),
    );
    let down = pump(Dir::Down, sr, cw, control, kill.clone(), stats.clone());
    let _ = tokio::join!(up, down);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// client → server
    Up,
    /// server → client
    Down,
}

/// How a pump ends the connection.
enum End {
    /// Its reader hit EOF: pass the FIN on, let the other direction finish.
    Eof,
    /// RST both sockets.
    Reset,
    /// Close both sockets (FIN) now.
    Close,
}

async fn pump(
    dir: Dir,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    control: watch::Sender<Mode>,
    kill: watch::Sender<bool>,
    stats: Arc<Stats>,
) {
    let mut mode = control.subscribe();
    let mut killed = kill.subscribe();
    let mut buf = vec![0u8; CHUNK];
    let end = loop {
        let m = *mode.borrow_and_update();
        if m == Mode::Reset {
            break End::Reset;
        }
        if *killed.borrow_and_update() {
            break End::Close;
        }
        let n = tokio::select! {
            r = mode.changed() => {
                if r.is_err() { break End::Reset; }
                continue;
            }
            _ = killed.changed() => continue,
            r = rd.read(&mut buf), if m != Mode::Blackhole => match r {
                Ok(0) | Err(_) => {
                    if dir == Dir::Up {
                        note_client_close(&stats);
                    }
                    break End::Eof;
                }
                Ok(n) => n,
            },
        };
        // The mode may have changed while the read was pending: judge the chunk by the mode now.
        let mut now_mode = *mode.borrow();
        while now_mode == Mode::Blackhole {
            if mode.changed().await.is_err() {
                break;
            }
            now_mode = *mode.borrow();
        }
        match now_mode {
            Mode::Reset => break End::Reset,
            Mode::Latency(d) => tokio::time::sleep(d).await,
            Mode::CutMidFrame if dir == Dir::Down => {
                // One connection takes the cut; the proxy is back to passing.
                let took = control.send_if_modified(|m| {
                    let cut = *m == Mode::CutMidFrame;
                    if cut {
                        *m = Mode::Pass;
                    }
                    cut
                });
                if took {
                    // Half the chunk (a lone byte stays whole: there is no "mid" to cut).
                    let part = (n / 2).max(1);
                    if wr.write_all(&buf[..part]).await.is_ok() {
                        note_down(&stats, part);
                    }
                    stats.cuts.fetch_add(1, Ordering::Relaxed);
                    break End::Close;
                }
            }
            _ => {}
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            break End::Close;
        }
        match dir {
            Dir::Up => {
                stats.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
            }
            Dir::Down => note_down(&stats, n),
        }
    };
    match end {
        End::Eof => {
            let _ = wr.shutdown().await;
        }
        End::Reset => {
            let _ = wr.as_ref().set_zero_linger();
            stats.resets.fetch_add(1, Ordering::Relaxed);
            kill.send_replace(true);
        }
        End::Close => {
            let _ = wr.shutdown().await;
            kill.send_replace(true);
        }
    }
}

fn note_client_close(stats: &Stats) {
    let mut v = stats
        .client_closes
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if v.len() < MAX_CLOSES {
        v.push(Instant::now());
    }
}

fn note_down(stats: &Stats, n: usize) {
    stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
    *stats.last_down.lock().unwrap() = Some(Instant::now());
}
