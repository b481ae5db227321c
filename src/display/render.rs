//! What every board display shows, and the drawing helpers they share (the words for each pairing
//! state are [`crate::pairing::words`], the same on every surface): the pairing code's display form, the QR module matrix (ECC L, as the terminal draws it),
//! the largest integer module size that fits a box with the quiet zone, word wrapping, and an
//! integer-scaling draw target for big screens.
//!
//! Pure: a [`View`] in, text and geometry out. Never touches a device, never logs (the QR payload
//! and the pairing code are secrets while they live).

use crate::pairing::Pairing;
use embedded_graphics::Pixel;
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Point, Size};
use embedded_graphics::primitives::Rectangle;
use qrcode::{Color, EcLevel, QrCode};

/// Modules of light margin around the code (the QR standard's quiet zone).
pub const QUIET_ZONE: u32 = 4;

/// Status text longer than this is cut before wrapping: the board's status line grows with the
/// number of components, and no display has room for more.
pub const MAX_STATUS_CHARS: usize = 400;

/// One frame's worth of content: the pairing state and the board's one-line status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub pairing: Pairing,
    pub status: String,
}

/// The pairing code as the phone shows it: `ABCD-EFGH` for an 8-character code, else as given.
pub fn code_display(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() == 8 && chars.iter().all(char::is_ascii_alphanumeric) {
        let (a, b) = chars.split_at(4);
        format!(
            "{}-{}",
            a.iter().collect::<String>(),
            b.iter().collect::<String>()
        )
    } else {
        code.to_string()
    }
}

/// A QR code's modules, `width`×`width`, row-major, `true` = dark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrMatrix {
    pub width: u32,
    pub dark: Vec<bool>,
}

impl QrMatrix {
    /// ECC level L, the smallest code (a ~225-byte WhatsApp payload is version 9, 53 modules).
    pub fn new(payload: &str) -> Result<QrMatrix, String> {
        let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::L)
            .map_err(|e| format!("the pairing code does not fit a QR code: {e}"))?;
        let width = u32::try_from(code.width()).map_err(|_| "QR code too wide".to_string())?;
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        Ok(QrMatrix { width, dark })
    }

    pub fn is_dark(&self, x: u32, y: u32) -> bool {
        x < self.width
            && y < self.width
            && self
                .dark
                .get((y * self.width + x) as usize)
                .copied()
                .unwrap_or(false)
    }

    /// Modules across including the quiet zone on both sides.
    pub fn total(&self) -> u32 {
        self.width + 2 * QUIET_ZONE
    }

    /// The largest integer module size (pixels) at which the code and its quiet zone fit a
    /// `w`×`h` box; 0 when not even one pixel per module fits.
    pub fn module_px(&self, w: u32, h: u32) -> u32 {
        w.min(h) / self.total()
    }

    /// Draws the code with its quiet zone at `top_left`, `px` pixels per module: a light square,
    /// then the dark modules.
    pub fn draw<D: DrawTarget>(
        &self,
        target: &mut D,
        top_left: Point,
        px: u32,
        light: D::Color,
        dark: D::Color,
    ) -> Result<(), D::Error> {
        let side = self.total() * px;
        target.fill_solid(&Rectangle::new(top_left, Size::new(side, side)), light)?;
        let step = px as i32;
        let origin = top_left + Point::new(QUIET_ZONE as i32 * step, QUIET_ZONE as i32 * step);
        for y in 0..self.width {
            for x in 0..self.width {
                if self.is_dark(x, y) {
                    let at = origin + Point::new(x as i32 * step, y as i32 * step);
                    target.fill_solid(&Rectangle::new(at, Size::new(px, px)), dark)?;
                }
            }
        }
        Ok(())
    }
}

/// Splits `text` into at most `max_lines` lines of at most `cols` characters, at spaces where it
/// can; a word longer than a line is cut. The last line ends in `..` when text was left out.
/// Characters outside ASCII become `?` (the mono fonts are ASCII).
pub fn wrap(text: &str, cols: usize, max_lines: usize) -> Vec<String> {
    let cols = cols.max(1);
    let clean: String = text
        .chars()
        .take(MAX_STATUS_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else if c.is_whitespace() {
                ' '
            } else {
                '?'
            }
        })
        .collect();
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut truncated = false;
    for word in clean.split(' ').filter(|w| !w.is_empty()) {
        let mut word = word;
        loop {
            let need = if line.is_empty() {
                word.len()
            } else {
                line.len() + 1 + word.len()
            };
            if need <= cols {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
                break;
            }
            if line.is_empty() {
                // A word longer than a line: cut it.
                line.push_str(&word[..cols]);
                word = &word[cols..];
            }
            lines.push(std::mem::take(&mut line));
            if lines.len() == max_lines {
                truncated = true;
                break;
            }
            if word.is_empty() {
                break;
            }
        }
        if truncated {
            break;
        }
    }
    if !truncated && !line.is_empty() {
        if lines.len() < max_lines {
            lines.push(line);
        } else {
            truncated = true;
        }
    }
    if truncated {
        if let Some(last) = lines.last_mut() {
            while last.len() + 2 > cols && !last.is_empty() {
                last.pop();
            }
            last.push_str("..");
        }
    }
    lines
}

/// A view of a draw target in which every pixel is a `scale`×`scale` block, offset by `origin`:
/// the mono fonts are at most 10×20, which is unreadable across a 1080p screen.
pub struct Scaled<'a, D> {
    pub target: &'a mut D,
    pub scale: u32,
    pub origin: Point,
}

impl<D: DrawTarget + OriginDimensions> OriginDimensions for Scaled<'_, D> {
    fn size(&self) -> Size {
        let s = self.target.size();
        let scale = self.scale.max(1);
        Size::new(s.width / scale, s.height / scale)
    }
}

impl<D: DrawTarget + OriginDimensions> DrawTarget for Scaled<'_, D> {
    type Color = D::Color;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let s = self.scale.max(1);
        for Pixel(p, c) in pixels {
            let at = self.origin + Point::new(p.x * s as i32, p.y * s as i32);
            self.target
                .fill_solid(&Rectangle::new(at, Size::new(s, s)), c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_words_and_marks_what_was_cut() {
        assert_eq!(
            wrap("telegram: up (@bot)", 40, 3),
            vec!["telegram: up (@bot)"]
        );
        assert_eq!(
            wrap("one two three four", 9, 3),
            vec!["one two", "three", "four"]
        );
        assert_eq!(wrap("one two three four", 9, 2), vec!["one two", "three.."]);
        assert_eq!(wrap("abcdefghijkl", 5, 3), vec!["abcde", "fghij", "kl"]);
        assert_eq!(
            wrap("whatsapp: up — linked", 40, 1),
            vec!["whatsapp: up ? linked"]
        );
        assert!(wrap("", 10, 2).is_empty());
        assert!(wrap(&"x ".repeat(10_000), 10, 2).len() <= 2);
    }

    #[test]
    fn codes_show_as_the_phone_shows_them() {
        assert_eq!(code_display("ABCD1234"), "ABCD-1234");
        assert_eq!(code_display("ABCD-1234"), "ABCD-1234");
    }

    #[test]
    fn module_size_is_the_largest_that_fits_with_the_quiet_zone() {
        let m = QrMatrix {
            width: 53,
            dark: vec![false; 53 * 53],
        };
        assert_eq!(m.total(), 61);
        assert_eq!(m.module_px(240, 240), 3);
        assert_eq!(m.module_px(1920, 1000), 16);
        assert_eq!(m.module_px(60, 200), 0);
    }
}
