//! The console channel behind `clawbox chat`: lines typed on stdin are messages from the owner,
//! replies are printed on stdout. It goes through the same policy, router, store and delivery as
//! every other channel, so an owner can try their agent setup on the box itself.

use super::{
    ChannelCommand, ChannelContext, ChannelError, ChannelKind, ChannelSpec, Content, Inbound,
};
use crate::router::Submitted;
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
    loop {
        ctx.reporter.beat();
        tokio::select! {
            read = async {
                buf.clear();
                let r = (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut buf).await;
                if matches!(r, Ok(n) if n as u64 == MAX_LINE_BYTES) && buf.last() != Some(&b'\n') {
                    // Discard the rest of an over-long line.
                    let mut rest = Vec::new();
                    let _ = (&mut reader).take(16 * MAX_LINE_BYTES).read_until(b'\n', &mut rest).await;
                }
                r
            }, if stdin_open => {
                match read {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        let _ = eof.send(true);
                    }
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
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
                            author: "console".into(),
                            wire_seq: 0,
                            is_group: false,
                            content: Content::Text(line),
                            ts_ms: crate::store::now_ms(),
                        };
                        match ctx.intake.submit(msg).await {
                            Ok(Submitted::Accepted | Submitted::Duplicate | Submitted::Dropped(_)) => {}
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
                Some(ChannelCommand::Typing { .. }) => {}
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
