//! The pairing state on a terminal: the words and the QR ([`pairing_text`], drawn by
//! [`crate::display::qr`]) for `clawbox pair whatsapp` and for `clawbox run` watched
//! from a terminal ([`display`]), and for the pairing stream `clawbox pair whatsapp` reads from a
//! running service. Never logs what it shows (the QR payload and the pairing code are secrets
//! while they live).

use crate::display::qr;
use crate::pairing::Pairing;

/// Where [`display`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Stdout,
    Stderr,
}

/// The words a terminal shows for a pairing state (None: nothing to show).
pub fn pairing_text(p: &Pairing, term: Option<(usize, usize)>) -> Option<String> {
    match p {
        Pairing::Idle => None,
        Pairing::Qr { payload, expires_s } => Some(format!(
            "\nWhatsApp: not linked. Scan this QR code (it changes in about {expires_s} s):\n{}",
            qr::for_terminal(payload, term)
        )),
        Pairing::Code { code } => Some(format!(
            "\nWhatsApp pairing code: {code}\nOn the phone: WhatsApp → Settings → Linked devices → \
             Link a device → Link with phone number instead, then type the code.\n"
        )),
        Pairing::Linked { number } => Some(format!("WhatsApp: linked {number}\n")),
        Pairing::Paused => Some(
            "WhatsApp: pairing paused after several unscanned codes — run `clawbox pair whatsapp` to try again\n"
                .into(),
        ),
        Pairing::PairAgain => Some(
            "WhatsApp: logged out by the phone — run `clawbox pair whatsapp` to pair again\n".into(),
        ),
        Pairing::Stopped { why } => Some(format!("WhatsApp: stopped: {why}\n")),
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
            "WhatsApp: linked +4917\n"
        );
    }
}
