//! The console channel behind `clawbox chat`: lines typed on stdin are messages from the owner,
//! replies are printed on stdout. It goes through the same policy, router, store and delivery as
//! every other channel, so an owner can try their agent setup on the box itself.

use super::{ChannelCommand, ChannelContext, ChannelError};
use crate::intake::Submitted;
use crate::vocab::{ChannelKind, ChannelSpec, Content, Inbound};
use std::io::{IsTerminal, Write};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;

pub const SPEC: ChannelSpec = ChannelSpec {
    kind: ChannelKind::Console,
    max_chars: 4096,
};

/// Longest line read as one message; the rest of a longer line is discarded.
const MAX_LINE_BYTES: u64 = 64 * 1024;
/// The console's chat and sender ids.
pub const CHAT: &str = "console";
/// The loop turns (and beats) at least this often while nobody types: well inside the row's
/// standing allowance ([`crate::status::DEFAULT_ALLOWANCE`]).
pub const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the console until stdin closes (then sets `eof`) and shutdown. Replies keep printing after
/// EOF until the daemon has answered everything and shuts down.
pub async fn run(ctx: ChannelContext, eof: watch::Sender<bool>) -> Result<(), ChannelError> {
    let mut shutdown = ctx.shutdown.clone();
    let mut commands = ctx.commands.lock().await;
    let tty = std::io::stdin().is_terminal();
    let run_id = crate::store::now_ms();
    let mut n: u64 = 0;
    let mut reader = BufReader::new(tokio::io::stdin());
    let mut stdin_open = true;
    let mut buf = Vec::new();
    ctx.reporter.set(
        crate::status::State::Up,
        if tty {
            "type a message; Ctrl-D to quit"
        } else {
            "reading stdin"
        },
    );
    if tty {
        prompt();
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Each turn of the loop is progress: a body that blocks (a stuck submit or write) stops it.
        ctx.reporter.beat();
        tokio::select! {
            // Nobody typed for a tick: turn anyway, so an idle console still beats.
            _ = tick.tick() => {}
            read = async {
                // A read cut short by another arm leaves its bytes in `buf` (read_until appends);
                // the next turn goes on with the same line.
                let room = MAX_LINE_BYTES.saturating_sub(buf.len() as u64);
                let r = (&mut reader).take(room).read_until(b'\n', &mut buf).await;
                if buf.len() as u64 >= MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
                    // Discard the rest of an over-long line.
                    let mut rest = Vec::new();
                    let _ = (&mut reader).take(16 * MAX_LINE_BYTES).read_until(b'\n', &mut rest).await;
                }
                r
            }, if stdin_open => {
                match read {
                    Ok(0) | Err(_) if buf.is_empty() => {
                        stdin_open = false;
                        let _ = eof.send(true);
                    }
                    // A line, or the last one before the end of input.
                    Ok(_) | Err(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                        buf.clear();
                        if line.trim().is_empty() {
                            if tty { prompt(); }
                            continue;
                        }
                        n += 1;
                        let msg = Inbound {
                            channel: ChannelKind::Console,
                            id: format!("{run_id}-{n}"),
                            chat: CHAT.into(),
                            sender: CHAT.into(),
                            sender_alt: None,
                            author: "console".into(),
                            wire_seq: 0,
                            is_group: false,
                            content: Content::Text(line),
                            ts_ms: crate::store::now_ms(),
                            cues: Default::default(),
                        };
                        match ctx.intake.submit(msg).await {
                            Ok(Submitted::Accepted | Submitted::Duplicate | Submitted::Dropped(_) | Submitted::Noted) => {}
                            Err(e) => eprintln!("clawbox: {e}"),
                        }
                    }
                }
            }
            cmd = commands.recv() => match cmd {
                Some(ChannelCommand::Send { text, arm, done, .. }) => {
                    if let Err(e) = arm.arm(0).await {
                        let _ = done.send(Err(e));
                        continue;
                    }
                    let r = {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "{text}").and_then(|()| out.flush())
                    };
                    let _ = done.send(r.map_err(|e| super::SendError::Permanent(format!("stdout: {e}"))));
                    if tty { prompt(); }
                }
                // A terminal keeps no record of what it printed.
                Some(ChannelCommand::Reconcile { done, .. }) => {
                    let _ = done.send(super::Doubt::Unknowable);
                }
                Some(ChannelCommand::Typing { .. } | ChannelCommand::React { .. }) => {}
                None => return Ok(()),
            },
            _ = shutdown.wait() => return Ok(()),
        }
    }
}

fn prompt() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "› ");
    let _ = err.flush();
}
