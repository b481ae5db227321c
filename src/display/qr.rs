//! The pairing QR for a terminal: half-block characters (`▀`, `▄`, `█`, space), two modules per
//! character cell vertically, ECC level L (the smallest code: a ~225-byte WhatsApp payload is
//! version 9, 53 modules, 61×31 characters with the quiet zone) and a 4-module quiet zone.
//!
//! Pure: a payload in, text out. Light modules are drawn filled (a terminal's foreground on a dark
//! background), so the code reads dark-on-light as a scanner expects. Never writes to a terminal
//! itself and never logs the payload (it is a pairing secret while it lives).

use qrcode::{Color, EcLevel, QrCode};

/// Modules of blank margin around the code (the QR standard's quiet zone).
pub const QUIET_ZONE: usize = 4;

/// A rendered code and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The drawing, `rows` lines of `cols` characters.
    pub text: String,
    pub cols: usize,
    pub rows: usize,
}

/// Draws `payload` as half-blocks.
pub fn render(payload: &str) -> Result<Rendered, String> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::L)
        .map_err(|e| format!("the pairing code does not fit a QR code: {e}"))?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    // Light outside the code (the quiet zone).
    let light = |x: usize, y: usize| -> bool {
        if x < QUIET_ZONE || y < QUIET_ZONE || x >= width + QUIET_ZONE || y >= width + QUIET_ZONE {
            return true;
        }
        colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Light
    };
    let rows = size.div_ceil(2);
    let mut text = String::with_capacity(rows * (size * 3 + 1));
    for r in 0..rows {
        for x in 0..size {
            let top = light(x, 2 * r);
            let bottom = 2 * r + 1 >= size || light(x, 2 * r + 1);
            text.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        text.push('\n');
    }
    Ok(Rendered {
        text,
        cols: size,
        rows,
    })
}

/// What to print for a terminal of `cols`×`rows` (None: size unknown): the code when it fits,
/// else a note saying how much room it needs; then the raw string and the pairing-code option.
pub fn for_terminal(payload: &str, term: Option<(usize, usize)>) -> String {
    let mut out = String::new();
    match render(payload) {
        Ok(r) => {
            let fits = term.is_none_or(|(c, l)| c >= r.cols && l >= r.rows);
            if fits {
                out.push_str(&r.text);
            } else {
                out.push_str(&format!(
                    "(this terminal is too small for the QR code: it needs {} columns × {} rows; \
                     enlarge the window or use `clawbox pair whatsapp --phone +<number>`)\n",
                    r.cols, r.rows
                ));
            }
        }
        Err(e) => {
            out.push_str(&e);
            out.push('\n');
        }
    }
    out.push_str("Scan with WhatsApp → Settings → Linked devices → Link a device.\n");
    out.push_str("QR data (paste into any QR generator if the drawing does not scan):\n");
    out.push_str(payload);
    out.push('\n');
    out
}

/// The terminal size from `$COLUMNS`/`$LINES` when the shell exports them.
pub fn terminal_size_from_env() -> Option<(usize, usize)> {
    let c = std::env::var("COLUMNS").ok()?.parse().ok()?;
    let l = std::env::var("LINES").ok()?.parse().ok()?;
    Some((c, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A realistic pairing payload: ref, noise key, identity key, adv secret (base64), platform.
    fn payload() -> String {
        // The server's ref: "2@" and 84 base64 characters.
        let ref_ = "2@".to_string() + &"Qm9vdHN0cmFwUmVmZXJlbmNl".repeat(3) + "AbCdEfGhIj==";
        let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
        format!("{ref_},{key},{key},{key},1")
    }

    /// Reads the half-blocks back into a module matrix (true = dark) and drops the quiet zone.
    fn decode(text: &str, width: usize) -> Vec<Vec<bool>> {
        let size = width + 2 * QUIET_ZONE;
        let mut grid = vec![vec![false; size]; size + 1];
        for (r, line) in text.lines().enumerate() {
            for (x, ch) in line.chars().enumerate() {
                let (top_light, bottom_light) = match ch {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected character {other:?}"),
                };
                grid[2 * r][x] = !top_light;
                grid[2 * r + 1][x] = !bottom_light;
            }
        }
        (QUIET_ZONE..QUIET_ZONE + width)
            .map(|y| grid[y][QUIET_ZONE..QUIET_ZONE + width].to_vec())
            .collect()
    }

    #[test]
    fn a_realistic_payload_renders_and_reads_back() {
        let p = payload();
        assert!(
            (200..=260).contains(&p.len()),
            "realistic size: {}",
            p.len()
        );
        let r = render(&p).unwrap();
        let code = QrCode::with_error_correction_level(p.as_bytes(), EcLevel::L).unwrap();
        assert_eq!(code.version(), qrcode::Version::Normal(9));
        assert_eq!((r.cols, r.rows), (61, 31), "documented terminal size");
        assert!(r.text.lines().all(|l| l.chars().count() == r.cols));
        let width = code.width();
        let modules = decode(&r.text, width);
        let colors = code.to_colors();
        for y in 0..width {
            for x in 0..width {
                assert_eq!(
                    modules[y][x],
                    colors[y * width + x] == Color::Dark,
                    "module ({x},{y})"
                );
            }
        }
        // Quiet zone: the first two text rows and the first four columns are all light.
        let first: Vec<&str> = r.text.lines().take(2).collect();
        assert!(first.iter().all(|l| l.chars().all(|c| c == '█')));
        assert!(
            r.text
                .lines()
                .all(|l| l.chars().take(QUIET_ZONE).all(|c| c == '█'))
        );
    }

    #[test]
    fn small_terminals_get_a_note_and_the_raw_string() {
        let p = payload();
        let small = for_terminal(&p, Some((80, 24)));
        assert!(small.contains("needs 61 columns × 31 rows"), "{small}");
        assert!(!small.contains('▀'));
        assert!(small.contains(&p));
        let big = for_terminal(&p, Some((120, 50)));
        assert!(big.contains('▀') && big.contains(&p));
    }
}
