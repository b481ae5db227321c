//! The commands' side of the control socket: `clawbox pair whatsapp`, `clawbox unpair whatsapp`
//! and `clawbox status` ask the running service when there is one, and otherwise work directly on
//! the service's state (`pair`, `unpair`) or fall back to `/healthz` (`status`). Renders the
//! service's live QR with the terminal renderer, redrawn as it rotates, until linked, paused or
//! cancelled (Ctrl-C closes the connection, which cancels in the service).

use super::{EXIT_NOPERM, Event, MAX_LINE, Report, Request, connect_path};
use crate::config::Config;
use crate::display::qr;
use crate::display::terminal::pairing_text;
use crate::pairing::Pairing;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// `status` and `unpair` give the service this long for its answer (an unlink may first wait for
/// WhatsApp to log in and log out).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a service answers on the state directory's socket.
pub enum Conn {
    Open(UnixStream),
    /// No socket, or nobody listening: no service runs on this state.
    NoService,
    /// This user may not even reach the socket (the state directory is someone else's): whether a
    /// service runs cannot be told. The direct path refuses such a user by the state directory's
    /// ownership rule ([`crate::state_dir`]), with the command to run.
    NoAccess,
}

/// This command line, quoted, to suggest running it as someone else.
fn this_command() -> String {
    let words: Vec<String> = std::env::args_os()
        .map(|a| crate::cli::shell_quote(&a.to_string_lossy()).into_owned())
        .collect();
    if words.is_empty() {
        "clawbox".into()
    } else {
        words.join(" ")
    }
}

/// The words for a caller that may not talk to the service of `state_dir`.
fn not_allowed(state_dir: &Path, why: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let euid = nix::unistd::geteuid().as_raw();
    let owner = std::fs::metadata(state_dir).map(|m| m.uid()).unwrap_or(0);
    let hint = crate::state_dir::refusal_message(
        state_dir,
        euid,
        crate::state_dir::Refusal::NotYours { owner },
        &this_command(),
    );
    format!("{why}: only root and the service's user may talk to it; {hint}")
}

pub async fn connect(state_dir: &Path) -> Conn {
    let path = connect_path(state_dir);
    match UnixStream::connect(&path).await {
        Ok(s) => Conn::Open(s),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Conn::NoAccess,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no service on the control socket");
            Conn::NoService
        }
    }
}

/// One request's answer, line by line.
struct Answer {
    lines: BufReader<UnixStream>,
}

impl Answer {
    async fn ask(mut s: UnixStream, req: &Request) -> std::io::Result<Answer> {
        let line = req.to_line();
        match s.write_all(format!("{line}\n").as_bytes()).await {
            // The service may have answered (a refusal) and closed already: read what it said.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
            r => r?,
        }
        Ok(Answer {
            lines: BufReader::new(s),
        })
    }

    /// The next event; None at the end of the answer. A line over [`MAX_LINE`] or not an event is
    /// an error.
    async fn next(&mut self) -> std::io::Result<Option<Event>> {
        let mut buf = Vec::new();
        let n = (&mut self.lines)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if !buf.ends_with(b"\n") && n > MAX_LINE {
            return Err(std::io::Error::other("the service's answer is too long"));
        }
        Event::parse(&buf).map(Some).map_err(|e| {
            std::io::Error::other(format!("the service's answer is not an event: {e}"))
        })
    }
}

/// The exit code, and the line, for an answer other than the one a command waits for: a
/// refusal, an error, busy, another version's answer, or none at all.
fn unexpected(answer: Result<Event, String>, state_dir: &Path) -> i32 {
    match answer {
        Ok(Event::Refused { error }) => refused(&error, state_dir),
        Ok(Event::Error { error }) => {
            eprintln!("clawbox: {error}");
            1
        }
        Ok(Event::Busy) => {
            eprintln!("clawbox: the service is busy with other requests; try again in a moment");
            1
        }
        Ok(_) => {
            eprintln!("clawbox: the service answered something else; is it another version?");
            1
        }
        Err(e) => {
            eprintln!("clawbox: {e}");
            1
        }
    }
}

fn refused(error: &str, state_dir: &Path) -> i32 {
    eprintln!(
        "clawbox: {}",
        not_allowed(state_dir, &format!("the clawbox service refused: {error}"))
    );
    EXIT_NOPERM
}

/// `clawbox pair whatsapp [--phone +E164]`: through the running service, else directly.
pub async fn pair(cfg: &Config, phone: Option<String>) -> i32 {
    let state_dir = cfg.state_dir();
    let s = match connect(&state_dir).await {
        Conn::Open(s) => s,
        Conn::NoService | Conn::NoAccess => {
            return super::direct::pair(cfg, phone).await;
        }
    };
    let req = Request::Pair {
        channel: "whatsapp".into(),
        phone,
    };
    let mut answer = match Answer::ask(s, &req).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("clawbox: cannot talk to the clawbox service: {e}");
            return 1;
        }
    };
    eprintln!("Asking the running clawbox service to link WhatsApp (Ctrl-C cancels)…");
    loop {
        let ev = tokio::select! {
            ev = answer.next() => ev,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the connection cancels the pairing in the service.
                eprintln!("clawbox: pairing cancelled; WhatsApp is not linked");
                return 1;
            }
        };
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                eprintln!(
                    "clawbox: the service closed the connection (restarting?); WhatsApp is not linked"
                );
                return 1;
            }
            Err(e) => {
                eprintln!("clawbox: {e}");
                return 1;
            }
        };
        if let Some(code) = show_pair_event(&ev, &state_dir) {
            return code;
        }
    }
}

/// Shows one event of a pairing stream; `Some(exit code)` when it is the last.
fn show_pair_event(ev: &Event, state_dir: &Path) -> Option<i32> {
    use std::io::Write;
    let draw = |p: Pairing| {
        if let Some(text) = pairing_text(&p, qr::terminal_size_from_env()) {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            let _ = std::io::stdout().flush();
        }
    };
    match ev {
        Event::State { state, detail } => {
            eprintln!("WhatsApp: {state} ({detail})");
            None
        }
        Event::Qr { payload, expires_s } => {
            draw(Pairing::Qr {
                payload: payload.clone(),
                expires_s: *expires_s,
            });
            None
        }
        Event::Code { code } => {
            draw(Pairing::Code { code: code.clone() });
            None
        }
        Event::Linked { number, already } => {
            if *already {
                println!(
                    "WhatsApp is already linked to {number}. To link another account: \
                     `clawbox unpair whatsapp`, then pair again."
                );
            } else {
                println!("WhatsApp linked {number}. The running service uses it now.");
            }
            Some(0)
        }
        Event::Paused { detail } | Event::Failed { detail } => {
            eprintln!("clawbox: WhatsApp not linked: {detail}");
            Some(1)
        }
        Event::Cancelled => {
            eprintln!("clawbox: pairing cancelled; WhatsApp is not linked");
            Some(1)
        }
        Event::Refused { error } => Some(refused(error, state_dir)),
        Event::Error { error } => {
            eprintln!("clawbox: {error}");
            Some(1)
        }
        Event::Busy => {
            eprintln!("clawbox: the service is busy with other requests; try again in a moment");
            Some(1)
        }
        Event::Status(_) | Event::Unpaired { .. } | Event::Groups { .. } => {
            eprintln!("clawbox: the service answered something else; is it another version?");
            Some(1)
        }
    }
}

/// Asks `req` and returns the single event answering it.
async fn ask_one(s: UnixStream, req: &Request) -> Result<Event, String> {
    let mut answer = Answer::ask(s, req)
        .await
        .map_err(|e| format!("cannot talk to the clawbox service: {e}"))?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer.next()).await {
        Ok(Ok(Some(ev))) => Ok(ev),
        Ok(Ok(None)) => Err("the service closed the connection without an answer".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer from the service within {} s",
            ANSWER_TIMEOUT.as_secs()
        )),
    }
}

/// Asks "really?" on the terminal; true for y/yes.
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("clawbox: {question} Answer on a terminal, or add --yes.");
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// `clawbox unpair whatsapp [--yes]`: through the running service, else directly.
pub async fn unpair(cfg: &Config, yes: bool) -> i32 {
    if !yes
        && !confirm(
            "Unlink WhatsApp from this box? It logs out (the phone drops this device) and wipes \
             the WhatsApp state; the other channels and the messages are kept.",
        )
    {
        eprintln!("clawbox: nothing changed");
        return 1;
    }
    let state_dir = cfg.state_dir();
    let s = match connect(&state_dir).await {
        Conn::Open(s) => s,
        Conn::NoService | Conn::NoAccess => {
            return super::direct::unpair(cfg).await;
        }
    };
    let req = Request::Unpair {
        channel: "whatsapp".into(),
    };
    match ask_one(s, &req).await {
        Ok(Event::Unpaired { detail }) => {
            println!("{detail}");
            0
        }
        other => unexpected(other, &state_dir),
    }
}

/// `clawbox groups list`: the groups the linked WhatsApp account is in, through the running
/// service (the channel asks WhatsApp). One line a group: its id (what
/// `[channels.whatsapp.groups] allow` takes), a tab, its subject.
pub async fn groups(cfg: &Config) -> i32 {
    let state_dir = cfg.state_dir();
    let s = match connect(&state_dir).await {
        Conn::Open(s) => s,
        Conn::NoService => {
            eprintln!(
                "clawbox: the clawbox service is not running; start it (systemctl start clawbox) \
                 and ask again"
            );
            return 1;
        }
        Conn::NoAccess => {
            eprintln!(
                "clawbox: {}",
                not_allowed(&state_dir, "cannot reach the clawbox service")
            );
            return EXIT_NOPERM;
        }
    };
    let req = Request::Groups {
        channel: "whatsapp".into(),
    };
    match ask_one(s, &req).await {
        Ok(Event::Groups { groups, more }) => {
            if groups.is_empty() {
                println!("The linked WhatsApp account is in no group.");
            }
            for (jid, subject) in groups {
                println!("{jid}\t{subject}");
            }
            if more > 0 {
                println!("… and {more} more");
            }
            0
        }
        other => unexpected(other, &state_dir),
    }
}

/// The running service's [`Report`] for the state directory `state_dir` (what `clawbox doctor`
/// asks): None when no service answers there or this user may not ask it; `Err` when it answered
/// something else.
pub async fn report(state_dir: &Path) -> Option<Result<Report, String>> {
    let Conn::Open(s) = connect(state_dir).await else {
        return None;
    };
    Some(match ask_one(s, &Request::Status).await {
        Ok(Event::Status(report)) => Ok(report),
        Ok(Event::Refused { error }) => Err(format!("the service refused: {error}")),
        Ok(other) => Err(format!("the service answered {other:?}")),
        Err(e) => Err(e),
    })
}

/// `clawbox status`: the service's report over the socket; without it (no service, or a user
/// who may not use the socket), `/healthz`. Exit 0 healthy, 1 degraded, 2 not reachable.
pub async fn status(cfg: &Config) -> i32 {
    match report(&cfg.state_dir()).await {
        Some(Ok(report)) => {
            print!("{}", render(&report));
            return if report.healthy { 0 } else { 1 };
        }
        Some(Err(e)) => tracing::debug!(error = %e, "status over the socket failed"),
        None => {}
    }
    let Ok(addr) = cfg.gateway.health_listen.get_ref().parse() else {
        return crate::config::EXIT_CONFIG;
    };
    crate::health::status_command(addr).await
}

/// One aligned line per component (as `/healthz`'s report), then the WhatsApp link.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.components {
        let line = format!("{:<12} {:<11} {}", c.name, c.state, c.detail);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no components\n");
    }
    if let Some(w) = &r.whatsapp {
        match &w.number {
            Some(n) => out.push_str(&format!("WhatsApp linked to {n}\n")),
            None => out.push_str(&format!("WhatsApp not linked (pairing: {})\n", w.pairing)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Component, WhatsAppReport};

    #[test]
    fn the_report_reads_like_healthz_plus_the_link() {
        let r = Report {
            version: "0.1.0".into(),
            uptime_s: 5,
            state_dir: "/var/lib/clawbox".into(),
            healthy: false,
            components: vec![
                Component {
                    name: "whatsapp".into(),
                    state: "needs-owner".into(),
                    detail: "not linked — scan the QR".into(),
                    last_beat_ms_ago: 1,
                    internal: false,
                },
                Component {
                    name: "router".into(),
                    state: "up".into(),
                    detail: String::new(),
                    last_beat_ms_ago: 1,
                    internal: true,
                },
            ],
            whatsapp: Some(WhatsAppReport {
                pairing: "qr".into(),
                number: None,
            }),
        };
        assert_eq!(
            render(&r),
            "whatsapp     needs-owner not linked — scan the QR\nrouter       up\n\
             WhatsApp not linked (pairing: qr)\n"
        );
    }
}
