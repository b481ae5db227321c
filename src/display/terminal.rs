//! The pairing state on a terminal: the words ([`crate::pairing::words`]) and the QR
//! ([`pairing_text`], drawn by [`crate::display::qr`]) for `clawbox pair whatsapp` and for `clawbox run` watched
//! from a terminal ([`display`]), and for the pairing stream `clawbox pair whatsapp` reads from a
//! running service. Never logs what it shows (the QR payload and the pairing code are secrets
//! while they live).

use crate::display::qr;
use crate::pairing::{Pairing, words};

/// Where [`display`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Stdout,
    Stderr,
}

/// What a terminal shows for a pairing state (None: nothing to show): the words every surface
/// says ([`crate::pairing::words`]) around the QR or the code.
pub fn pairing_text(p: &Pairing, term: Option<(usize, usize)>) -> Option<String> {
    let w = words(p);
    match p {
        Pairing::Idle => None,
        Pairing::Qr { payload, expires_s } => Some(format!(
            "\n{} (it changes in about {expires_s} s):\n{}",
            w.line(),
            qr::for_terminal(payload, term)
        )),
        Pairing::Code { code } => Some(format!("\nWhatsApp pairing code: {code}\n{}\n", w.line())),
        _ => Some(format!("{}\n", w.line())),
    }
}

/// Shows every pairing state change on a terminal (the QR redrawn on each new code) until
/// shutdown.
pub async fn display(
    mut rx: tokio::sync::watch::Receiver<Pairing>,
    mut shutdown: crate::shutdown::Shutdown,
    screen: Screen,
) {
    use std::io::Write;
    loop {
        let text = pairing_text(
            &rx.borrow_and_update().clone(),
            qr::terminal_size_from_env(),
        );
        if let Some(text) = text {
            let _ = match screen {
                Screen::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
                Screen::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            };
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_states_read_like_a_doctor() {
        assert_eq!(pairing_text(&Pairing::Idle, None), None);
        let code = pairing_text(
            &Pairing::Code {
                code: "ABCD-EFGH".into(),
            },
            None,
        )
        .unwrap();
        assert!(code.contains("ABCD-EFGH") && code.contains("Link with phone number"));
        assert!(
            pairing_text(&Pairing::Paused, None)
                .unwrap()
                .contains("clawbox pair whatsapp")
        );
        assert!(
            pairing_text(&Pairing::PairAgain, None)
                .unwrap()
                .contains("pair again")
        );
        assert_eq!(
            pairing_text(
                &Pairing::Linked {
                    number: "+4917".into()
                },
                None
            )
            .unwrap(),
            "WhatsApp linked: +4917\n"
        );
        let qr = pairing_text(
            &Pairing::Qr {
                payload: "2@ref,k,k,k".into(),
                expires_s: 20,
            },
            None,
        )
        .unwrap();
        assert!(
            qr.starts_with(
                "\nLink WhatsApp: scan the QR code with WhatsApp > Settings > Linked devices"
            ) && qr.contains("(it changes in about 20 s)")
                && qr.contains("QR data"),
            "{qr}"
        );
    }
}
