//! The pairing state of the WhatsApp link, published for every surface that shows it: the
//! terminal (`clawbox pair whatsapp`, `clawbox run` when unpaired), `/healthz` and `STATUS=`, and
//! the board's displays (LCD, OLED, serial console), the control socket's pairing stream and the
//! pairing page. One small interface: a watch channel the
//! connector writes and any number of displays read.

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
