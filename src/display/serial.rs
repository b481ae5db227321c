//! A serial console (`/dev/serial0`, `/dev/ttyAMA0`, `/dev/ttyS0`) showing the pairing state as
//! text: the QR in half-block characters (the terminal renderer, [`crate::display::qr`])
//! with the raw string, or the pairing code, and the channel status. Written once per change, not
//! redrawn: a serial line is slow and its scrollback is the history.
//!
//! The line speed is left as the kernel console set it (`console=serial0,115200`): setting it needs
//! termios ioctls, which this crate does not issue. The device is opened with `O_NOCTTY` for every
//! write, so it never becomes the daemon's controlling terminal (a hang-up would SIGHUP it). Never
//! logs the text (the QR payload is a pairing secret while it lives).

use super::DisplayError;
use super::render::{View, code_display, wrap};
use crate::display::qr;
use crate::pairing::{Pairing, words};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Width of the wrapped prose: fits the 80-column default of every terminal program.
const COLS: usize = 78;

/// Lines of status text.
const STATUS_LINES: usize = 4;

/// The text for `view`, lines ending in CR LF (a raw serial line may not translate LF).
pub fn text(view: &View) -> String {
    let m = words(&view.pairing);
    let mut out = String::new();
    out.push_str(&format!("\n==== clawbox: {} ====\n", m.title));
    match &view.pairing {
        Pairing::Qr { payload, expires_s } => {
            if let Ok(r) = qr::render(payload) {
                out.push_str(&format!(
                    "(the QR code needs a terminal of {} columns x {} rows, UTF-8)\n",
                    r.cols, r.rows
                ));
            }
            out.push_str(&qr::for_terminal(payload, None));
            out.push_str(&format!(
                "This code expires in {expires_s} s; a new one follows. Or link with the \
                 8-character code: clawbox pair whatsapp --phone +<number>\n"
            ));
        }
        Pairing::Code { code } => {
            out.push_str(&format!("Pairing code: {}\n", code_display(code)));
            for l in wrap(&m.body, COLS, 4) {
                out.push_str(&l);
                out.push('\n');
            }
        }
        _ => {
            for l in wrap(&m.body, COLS, 4) {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    for l in wrap(&view.status, COLS, STATUS_LINES) {
        out.push_str(&l);
        out.push('\n');
    }
    out.replace('\n', "\r\n")
}

/// A serial device, opened for each write.
#[derive(Debug)]
pub struct Serial {
    device: PathBuf,
}

impl Serial {
    pub fn new(device: &Path) -> Serial {
        Serial {
            device: device.to_path_buf(),
        }
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Writes the text for `view`. Blocking (at 115200 baud a QR is about half a second).
    pub fn show(&mut self, view: &View) -> Result<(), DisplayError> {
        let body = text(view);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&self.device)
            .map_err(|source| DisplayError::Open {
                device: self.device.clone(),
                source,
            })?;
        f.write_all(body.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|source| DisplayError::Write {
                device: self.device.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_and_the_status_are_written_with_crlf() {
        let view = View {
            pairing: Pairing::Code {
                code: "ABCD1234".into(),
            },
            status: "whatsapp: needs-owner (enter the code)".into(),
        };
        let t = text(&view);
        assert!(t.contains("Pairing code: ABCD-1234\r\n"), "{t}");
        assert!(t.contains("whatsapp: needs-owner (enter the code)\r\n"));
        assert!(!t.replace("\r\n", "").contains('\n'));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tty");
        std::fs::write(&path, b"").unwrap();
        Serial::new(&path).show(&view).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), t);
    }
}
