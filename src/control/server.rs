//! The service's side of the control socket: binds it (0600; a link in the state directory when it
//! lives in the runtime directory), checks each caller's credentials, reads one request line
//! (bounded in size and time) and answers it from the board, the pairing state and the WhatsApp
//! channel's [`Linker`]. A bounded number of connections; never blocks the rest of the service.
//! Never logs the QR payload or the pairing code.

use super::{
    Component, Event, MAX_CONNECTIONS, MAX_LINE, PAIR_STREAM_LIMIT, REQUEST_TIMEOUT, Report,
    Request, WRITE_TIMEOUT, WhatsAppReport, allowed, bind_path, connect_path, encode,
};
use crate::channel::whatsapp::link::{Linker, PairReply};
use crate::pairing::{Pairing, PairingPublisher, words};
use crate::shutdown::Shutdown;
use crate::status::Board;
use crate::vocab::ChannelKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How often a pairing stream looks at the channel's row for a state worth telling (connecting,
/// reconnecting) while no code is showing.
const STATE_POLL: Duration = Duration::from_millis(500);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What the socket answers from.
pub struct Control {
    pub board: Board,
    pub pairing: PairingPublisher,
    /// None when the WhatsApp channel is not enabled.
    pub linker: Option<Linker>,
    pub state_dir: PathBuf,
    pub started: Instant,
    /// The service's user: besides root, the only one let in.
    pub uid: u32,
}

/// A bound socket. The service removes `path` and `link` when it stops.
pub struct Bound {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// The state directory's link to `path`, when the socket lives elsewhere.
    pub link: Option<PathBuf>,
}

/// Removes a leftover socket or link at `p` (a crashed run's); refuses to touch anything else.
fn clear(p: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_socket() || m.file_type().is_symlink() => std::fs::remove_file(p)
            .map_err(|e| format!("cannot remove the old {}: {e}", p.display())),
        Ok(_) => Err(format!(
            "{} is in the way of the control socket and is not one; move it away",
            p.display()
        )),
        Err(_) => Ok(()),
    }
}

/// Binds the socket for the state directory `state_dir` (see the module doc of
/// [`crate::control`] for where). Called after the store is open: no other service holds this
/// state, so a socket left there is a crashed run's.
pub fn bind(runtime_dir: Option<&Path>, state_dir: &Path) -> Result<Bound, String> {
    let path = bind_path(runtime_dir, state_dir);
    clear(&path)?;
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {} private (chmod 0600): {e}", path.display()))?;
    let entry = connect_path(state_dir);
    let link = if entry != path {
        clear(&entry)?;
        std::os::unix::fs::symlink(&path, &entry)
            .map_err(|e| format!("cannot link {} to the control socket: {e}", entry.display()))?;
        Some(entry)
    } else {
        None
    };
    Ok(Bound {
        listener,
        path,
        link,
    })
}

/// Serves the socket until `shutdown` trips.
pub async fn serve(listener: UnixListener, ctl: Arc<Control>, mut shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Dropped on return: connections still open are aborted (a pairing stream's client sees EOF).
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // One non-blocking write of a short answer, then close.
            let _ = stream.try_write(format!("{}\n", encode(&Event::Busy)).as_bytes());
            continue;
        };
        let ctl = ctl.clone();
        let sd = shutdown.clone();
        conns.spawn(async move {
            handle(stream, &ctl, sd).await;
            drop(permit);
        });
    }
}

async fn send(w: &mut OwnedWriteHalf, ev: &Event) -> bool {
    let line = format!("{}\n", encode(ev));
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(line.as_bytes())).await,
        Ok(Ok(()))
    )
}

/// Reads one line of at most [`MAX_LINE`] bytes. None: closed, too long or not UTF-8.
async fn read_line(r: &mut OwnedReadHalf) -> Option<String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_LINE {
            return None;
        }
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn handle(stream: UnixStream, ctl: &Control, shutdown: Shutdown) {
    let peer = stream.peer_cred().map(|c| c.uid());
    let (mut r, mut w) = stream.into_split();
    // The request line first, whoever sends it: a refusal sent before the client finished
    // writing would meet a closed socket (EPIPE) instead of being read.
    let line = tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut r)).await;
    match peer {
        Ok(uid) if allowed(uid, ctl.uid) => {}
        other => {
            tracing::info!(peer_uid = ?other.ok(), "control socket: caller refused");
            let _ = send(
                &mut w,
                &Event::Refused {
                    error: format!(
                        "only root and the service's user ({}) may talk to the clawbox service",
                        user_name(ctl.uid)
                    ),
                },
            )
            .await;
            return;
        }
    }
    let line = match line {
        Ok(Some(l)) => l,
        Ok(None) => {
            let error = format!("expected one JSON request line of at most {MAX_LINE} bytes");
            let _ = send(&mut w, &Event::Error { error }).await;
            return;
        }
        Err(_) => return,
    };
    let req = match Request::parse(&line) {
        Ok(r) => r,
        Err(e) => {
            let error = format!("not a request ({e}); see `clawbox --help`");
            let _ = send(&mut w, &Event::Error { error }).await;
            return;
        }
    };
    tracing::debug!(request = ?RequestKind(&req), "control socket request");
    let whatsapp = |channel: &str| -> Result<&Linker, String> {
        if channel != ChannelKind::WhatsApp.as_str() {
            return Err(format!(
                "unknown channel `{channel}`: only `whatsapp` is linked this way"
            ));
        }
        ctl.linker.as_ref().ok_or_else(|| {
            "WhatsApp is not enabled in this service's config: add `[channels.whatsapp]` to it \
             and restart the service"
                .to_string()
        })
    };
    match req {
        Request::Status => {
            let _ = send(&mut w, &Event::Status(report(ctl))).await;
        }
        Request::Cancel { channel } => match whatsapp(&channel) {
            Ok(l) => {
                l.cancel();
                let _ = send(&mut w, &Event::Cancelled).await;
            }
            Err(error) => {
                let _ = send(&mut w, &Event::Error { error }).await;
            }
        },
        Request::Unpair { channel } => {
            let ev = match whatsapp(&channel) {
                Ok(l) => match l.unpair().await {
                    Ok(detail) => Event::Unpaired { detail },
                    Err(error) => Event::Error { error },
                },
                Err(error) => Event::Error { error },
            };
            let _ = send(&mut w, &ev).await;
        }
        Request::Groups { channel } => {
            let ev = match whatsapp(&channel) {
                Ok(l) => match l.groups().await {
                    Ok(listing) => Event::Groups {
                        groups: listing
                            .groups
                            .into_iter()
                            .map(|g| (g.jid, g.subject))
                            .collect(),
                        more: listing.more as u64,
                    },
                    Err(error) => Event::Error { error },
                },
                Err(error) => Event::Error { error },
            };
            let _ = send(&mut w, &ev).await;
        }
        Request::Pair { channel, phone } => match whatsapp(&channel) {
            Ok(l) => {
                if let Some(p) = &phone {
                    if !crate::config::check::is_e164(p) {
                        let error = format!(
                            "{p} is not a phone number: write + then country code and number, e.g. +491701234567"
                        );
                        let _ = send(&mut w, &Event::Error { error }).await;
                        return;
                    }
                }
                pair(ctl, l, phone, r, w, shutdown).await
            }
            Err(error) => {
                let _ = send(&mut w, &Event::Error { error }).await;
            }
        },
    }
}

/// The request's kind for the debug log: never the phone number.
struct RequestKind<'a>(&'a Request);

impl std::fmt::Debug for RequestKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Request::Status => "status",
            Request::Pair { .. } => "pair",
            Request::Cancel { .. } => "cancel",
            Request::Unpair { .. } => "unpair",
            Request::Groups { .. } => "groups",
        })
    }
}

/// True once the client closed its end or sent anything: both mean stop.
async fn gone(r: &mut OwnedReadHalf) {
    let mut b = [0u8; 64];
    let _ = r.read(&mut b).await;
}

/// What a pairing state means for a stream: the event to send and whether it is the last one.
fn event_for(p: &Pairing) -> Option<(Event, bool)> {
    match p {
        Pairing::Idle => None,
        Pairing::Qr { payload, expires_s } => Some((
            Event::Qr {
                payload: payload.clone(),
                expires_s: *expires_s,
            },
            false,
        )),
        Pairing::Code { code } => Some((Event::Code { code: code.clone() }, false)),
        Pairing::Linked { number } => Some((
            Event::Linked {
                number: number.clone(),
                already: false,
            },
            true,
        )),
        Pairing::Paused => Some((
            Event::Paused {
                detail: words(p).line(),
            },
            true,
        )),
        Pairing::PairAgain => Some((
            Event::Failed {
                detail: words(p).line(),
            },
            true,
        )),
        Pairing::Stopped { why } => Some((
            Event::Failed {
                detail: why.clone(),
            },
            true,
        )),
    }
}

async fn pair(
    ctl: &Control,
    linker: &Linker,
    phone: Option<String>,
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    mut shutdown: Shutdown,
) {
    let mut rx = ctl.pairing.subscribe();
    let answer = tokio::select! {
        a = linker.pair(phone) => a,
        _ = gone(&mut r) => {
            linker.cancel();
            return;
        }
    };
    match answer {
        Err(detail) => {
            let _ = send(&mut w, &Event::Failed { detail }).await;
            return;
        }
        Ok(PairReply::AlreadyLinked(number)) => {
            let _ = send(
                &mut w,
                &Event::Linked {
                    number,
                    already: true,
                },
            )
            .await;
            return;
        }
        Ok(PairReply::Started) => {}
    }
    // A code already on show is this pairing's (the channel was showing codes); an outcome
    // published before the request is an earlier one's and is not repeated.
    let mut showing = rx.borrow_and_update().clone();
    if matches!(showing, Pairing::Qr { .. } | Pairing::Code { .. }) {
        if let Some((ev, _)) = event_for(&showing) {
            if !send(&mut w, &ev).await {
                linker.cancel();
                return;
            }
        }
    } else {
        showing = Pairing::Idle;
    }
    let row_name = ChannelKind::WhatsApp.as_str();
    let mut told_row: Option<(String, String)> = None;
    let mut poll = tokio::time::interval(STATE_POLL);
    let deadline = Instant::now() + PAIR_STREAM_LIMIT;
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    let _ = send(&mut w, &Event::Failed { detail: "the service is stopping".into() }).await;
                    return;
                }
                showing = rx.borrow_and_update().clone();
                if let Some((ev, last)) = event_for(&showing) {
                    if !send(&mut w, &ev).await {
                        linker.cancel();
                        return;
                    }
                    if last {
                        return;
                    }
                }
            }
            _ = poll.tick() => {
                if matches!(showing, Pairing::Qr { .. } | Pairing::Code { .. }) {
                    continue;
                }
                let row = ctl.board.snapshot().into_iter().find(|r| r.name == row_name);
                if let Some(row) = row {
                    let now = (row.state.as_str().to_string(), row.detail.clone());
                    if told_row.as_ref() != Some(&now) {
                        let ev = Event::State { state: now.0.clone(), detail: now.1.clone() };
                        if !send(&mut w, &ev).await {
                            linker.cancel();
                            return;
                        }
                        told_row = Some(now);
                    }
                }
            }
            _ = gone(&mut r) => {
                tracing::info!("control socket: the pairing terminal went away; cancelling");
                linker.cancel();
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                linker.cancel();
                let detail = format!(
                    "not linked within {} min; pairing stopped — run the command again",
                    PAIR_STREAM_LIMIT.as_secs() / 60
                );
                let _ = send(&mut w, &Event::Failed { detail }).await;
                return;
            }
            _ = shutdown.wait() => {
                let _ = send(&mut w, &Event::Failed { detail: "the service is stopping".into() }).await;
                return;
            }
        }
    }
}

fn report(ctl: &Control) -> Report {
    let now = Instant::now();
    let rows = ctl.board.snapshot();
    let components = rows
        .iter()
        .map(|r| Component {
            name: r.name.clone(),
            state: r.state.as_str().into(),
            detail: r.detail.clone(),
            last_beat_ms_ago: u64::try_from(now.saturating_duration_since(r.last_beat).as_millis())
                .unwrap_or(u64::MAX),
            internal: r.internal,
        })
        .collect();
    let whatsapp = ctl.linker.as_ref().map(|_| {
        let p = ctl.pairing.current();
        WhatsAppReport {
            pairing: pairing_name(&p).into(),
            number: match p {
                Pairing::Linked { number } => Some(number),
                _ => None,
            },
        }
    });
    Report {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: now.saturating_duration_since(ctl.started).as_secs(),
        state_dir: ctl.state_dir.display().to_string(),
        healthy: ctl.board.all_healthy(),
        components,
        whatsapp,
    }
}

/// The pairing state's name in a [`Report`].
pub fn pairing_name(p: &Pairing) -> &'static str {
    match p {
        Pairing::Idle => "idle",
        Pairing::Qr { .. } => "qr",
        Pairing::Code { .. } => "code",
        Pairing::Linked { .. } => "linked",
        Pairing::Paused => "paused",
        Pairing::PairAgain => "pair-again",
        Pairing::Stopped { .. } => "stopped",
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("#{uid}"))
}
