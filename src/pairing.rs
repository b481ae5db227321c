//! The pairing state of the WhatsApp link, published for every surface that shows it: the
//! terminal (`clawbox pair whatsapp`, `clawbox run` when unpaired), `/healthz` and `STATUS=`, and
//! the board's displays (LCD, OLED, serial console), the control socket's pairing stream and the
//! pairing page. One small interface: a watch channel the
//! connector writes and any number of displays read; and the one table of words every surface
//! says for each state ([`words`]).

use tokio::sync::watch;

/// What a display should show now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Pairing {
    /// Nothing to show (not started, or a channel that needs no pairing).
    #[default]
    Idle,
    /// Scan this with WhatsApp → Linked devices. `expires_s`: how long this code lives.
    Qr { payload: String, expires_s: u64 },
    /// Enter this 8-character code on the phone (WhatsApp → Linked devices → Link with phone number).
    Code { code: String },
    /// Linked; `number` is the account's E.164 number.
    Linked { number: String },
    /// Codes expired without a scan; pairing stopped until the owner asks again.
    Paused,
    /// The phone removed this device: the owner must pair again.
    PairAgain,
    /// Stopped and nothing showing: pairing was cancelled, the owner unlinked the account, or the
    /// channel stopped for another reason; `why` says which, with what to do.
    Stopped { why: String },
}

/// The connector's end.
#[derive(Clone, Debug)]
pub struct PairingPublisher(watch::Sender<Pairing>);

impl PairingPublisher {
    pub fn new() -> (PairingPublisher, watch::Receiver<Pairing>) {
        let (tx, rx) = watch::channel(Pairing::Idle);
        (PairingPublisher(tx), rx)
    }
    pub fn publish(&self, p: Pairing) {
        self.0.send_replace(p);
    }
    pub fn subscribe(&self) -> watch::Receiver<Pairing> {
        self.0.subscribe()
    }
    /// What is published now.
    pub fn current(&self) -> Pairing {
        self.0.borrow().clone()
    }
}

/// What a surface says for a pairing state: a short title and a sentence (what happened, what to
/// do). Each surface lays them out its own way, around the QR or the code it draws itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    pub title: &'static str,
    pub body: String,
}

impl Words {
    /// Title and sentence on one line (a terminal, the control stream).
    pub fn line(&self) -> String {
        if self.body.is_empty() {
            self.title.to_string()
        } else {
            format!("{}: {}", self.title, self.body)
        }
    }
}

/// The words for `p`, the same on every surface (the terminal, the board's displays, the page,
/// the pairing stream). ASCII only: the boards' mono fonts have no arrows.
pub fn words(p: &Pairing) -> Words {
    let (title, body) = match p {
        Pairing::Idle => ("clawbox", String::new()),
        Pairing::Qr { .. } => (
            "Link WhatsApp",
            "scan the QR code with WhatsApp > Settings > Linked devices > Link a device".into(),
        ),
        Pairing::Code { .. } => (
            "Link WhatsApp",
            "on the phone: WhatsApp > Settings > Linked devices > Link a device > Link with phone \
             number instead, then enter the code"
                .into(),
        ),
        Pairing::Linked { number } => ("WhatsApp linked", number.clone()),
        Pairing::Paused => (
            "Pairing paused",
            "no code was scanned; run `clawbox pair whatsapp` to try again".into(),
        ),
        Pairing::PairAgain => (
            "Logged out by the phone",
            "run `clawbox pair whatsapp` to pair again".into(),
        ),
        Pairing::Stopped { why } => ("WhatsApp stopped", why.clone()),
    };
    Words { title, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_ascii_words_that_say_what_to_do() {
        let states = [
            Pairing::Qr {
                payload: "2@x".into(),
                expires_s: 20,
            },
            Pairing::Code {
                code: "ABCD1234".into(),
            },
            Pairing::Linked {
                number: "+4917".into(),
            },
            Pairing::Paused,
            Pairing::PairAgain,
        ];
        for p in &states {
            let w = words(p);
            assert!(w.line().is_ascii(), "{p:?}: {w:?}");
            assert!(!w.body.is_empty(), "{p:?}");
            // Never the secret itself: each surface draws the QR or the code on its own.
            assert!(!w.line().contains("2@x") && !w.line().contains("ABCD1234"));
        }
        assert_eq!(words(&Pairing::Idle).line(), "clawbox");
        assert_eq!(
            words(&Pairing::Linked {
                number: "+4917".into()
            })
            .line(),
            "WhatsApp linked: +4917"
        );
        assert!(
            words(&Pairing::Qr {
                payload: String::new(),
                expires_s: 1
            })
            .body
            .contains("Linked devices")
        );
        assert!(
            words(&Pairing::Code {
                code: String::new()
            })
            .body
            .contains("Link with phone number")
        );
        assert!(
            words(&Pairing::Paused)
                .line()
                .contains("clawbox pair whatsapp")
        );
        assert_eq!(
            words(&Pairing::PairAgain).line(),
            "Logged out by the phone: run `clawbox pair whatsapp` to pair again"
        );
        assert_eq!(
            words(&Pairing::Stopped {
                why: "unlinked by the owner".into()
            })
            .line(),
            "WhatsApp stopped: unlinked by the owner"
        );
    }
}
