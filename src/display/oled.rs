//! A 128×64 monochrome I²C OLED (SSD1306, or SH1106 on the 1.3" modules): the pairing code, the
//! state and the channel status. The QR is drawn only when it stays scannable (at least
//! [`MIN_MODULE_PX`] pixels per module with its quiet zone): a real WhatsApp payload is version 9
//! (53 modules), which would need 122 px; the screen then says to scan on the HDMI/LCD screen or to
//! use the pairing code.
//!
//! The renderer is pure (a [`View`] in, a 1-bit frame in the controller's page layout out). The
//! device writer speaks the controller's command set itself over `/dev/i2c-N` through `i2cdev`'s
//! safe wrapper of the `I2C_SLAVE` ioctl; it is blocking and called from `spawn_blocking`. Never
//! logs.

use super::DisplayError;
use super::render::{QrMatrix, View, code_display, wrap};
use crate::config::OledController;
use crate::pairing::{Pairing, Words, words};
use embedded_graphics::Pixel;
use embedded_graphics::mono_font::{MonoTextStyle, ascii};
use embedded_graphics::pixelcolor::BinaryColor;
use embedded_graphics::prelude::{DrawTarget, Drawable, OriginDimensions, Point, Size};
use embedded_graphics::text::{Baseline, Text};
use i2cdev::core::I2CDevice;
use i2cdev::linux::LinuxI2CDevice;
use std::path::{Path, PathBuf};

pub const WIDTH: u32 = 128;
pub const HEIGHT: u32 = 64;
/// Eight rows per byte, as the controller's RAM is laid out.
pub const PAGES: usize = (HEIGHT / 8) as usize;

/// Below two pixels per module a 0.96" OLED's code does not scan reliably.
pub const MIN_MODULE_PX: u32 = 2;

/// The most common module address; some are strapped to 0x3D.
pub const DEFAULT_ADDRESS: u8 = 0x3C;

/// Where the big pairing code's top edge is (10×20 font, centred across).
pub const CODE_TOP: i32 = 14;

/// Text rows of the 6×10 font: 21 characters by 6 lines.
const COLS: usize = (WIDTH / 6) as usize;
const LINE_H: i32 = 10;

/// A 128×64 1-bit frame in page layout: byte `page * 128 + x`, bit `y % 8`.
#[derive(Clone, PartialEq, Eq)]
pub struct OledFrame {
    pub buf: [u8; WIDTH as usize * PAGES],
}

impl Default for OledFrame {
    fn default() -> Self {
        OledFrame {
            buf: [0; WIDTH as usize * PAGES],
        }
    }
}

impl std::fmt::Debug for OledFrame {
    // The picture, one line per row ('#' lit): readable in a failed assertion.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for y in 0..HEIGHT {
            let row: String = (0..WIDTH)
                .map(|x| if self.get(x, y) { '#' } else { '.' })
                .collect();
            writeln!(f, "{row}")?;
        }
        Ok(())
    }
}

impl OledFrame {
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < WIDTH && y < HEIGHT && self.buf[(y / 8 * WIDTH + x) as usize] & (1 << (y % 8)) != 0
    }

    /// The 128 bytes of one page (8 rows).
    pub fn page(&self, page: usize) -> &[u8] {
        let start = page.min(PAGES - 1) * WIDTH as usize;
        &self.buf[start..start + WIDTH as usize]
    }

    /// Lit pixels in rows `y0..y1`.
    pub fn lit_in_rows(&self, y0: u32, y1: u32) -> usize {
        (y0..y1.min(HEIGHT))
            .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
            .filter(|&(x, y)| self.get(x, y))
            .count()
    }
}

impl OriginDimensions for OledFrame {
    fn size(&self) -> Size {
        Size::new(WIDTH, HEIGHT)
    }
}

impl DrawTarget for OledFrame {
    type Color = BinaryColor;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<BinaryColor>>,
    {
        for Pixel(p, c) in pixels {
            if p.x < 0 || p.y < 0 || p.x as u32 >= WIDTH || p.y as u32 >= HEIGHT {
                continue;
            }
            let (x, y) = (p.x as u32, p.y as u32);
            let byte = &mut self.buf[(y / 8 * WIDTH + x) as usize];
            match c {
                BinaryColor::On => *byte |= 1 << (y % 8),
                BinaryColor::Off => *byte &= !(1 << (y % 8)),
            }
        }
        Ok(())
    }
}

fn line(frame: &mut OledFrame, s: &str, row: i32) {
    let style = MonoTextStyle::new(&ascii::FONT_6X10, BinaryColor::On);
    let Ok(_) =
        Text::with_baseline(s, Point::new(0, row * LINE_H), style, Baseline::Top).draw(frame);
}

/// The big pairing code as drawn: 10×20 font, centred across, top at [`CODE_TOP`]. Public so a
/// test can draw the same reference.
pub fn draw_code(frame: &mut OledFrame, code: &str) {
    let shown = code_display(code);
    let w = shown.chars().count() as i32 * 10;
    let x = ((WIDTH as i32 - w) / 2).max(0);
    let style = MonoTextStyle::new(&ascii::FONT_10X20, BinaryColor::On);
    let Ok(_) =
        Text::with_baseline(&shown, Point::new(x, CODE_TOP), style, Baseline::Top).draw(frame);
}

/// The whole screen for `view`.
pub fn render(view: &View) -> OledFrame {
    let mut f = OledFrame::default();
    let Words { title, body } = words(&view.pairing);
    match &view.pairing {
        Pairing::Qr { payload, .. } => {
            if let Some(qr) = QrMatrix::new(payload)
                .ok()
                .filter(|q| q.module_px(HEIGHT, HEIGHT) >= MIN_MODULE_PX)
            {
                // Left square: the code; right: the title and the status.
                let px = qr.module_px(HEIGHT, HEIGHT);
                let side = qr.total() * px;
                let at = Point::new(0, ((HEIGHT - side) / 2) as i32);
                let Ok(()) = qr.draw(&mut f, at, px, BinaryColor::On, BinaryColor::Off);
                let style = MonoTextStyle::new(&ascii::FONT_6X10, BinaryColor::On);
                let x = side as i32 + 2;
                let cols = ((WIDTH as i32 - x) / 6).max(1) as usize;
                let right = wrap(&format!("{title} {}", view.status), cols, 6);
                for (i, l) in right.iter().enumerate() {
                    let p = Point::new(x, i as i32 * LINE_H);
                    let Ok(_) = Text::with_baseline(l, p, style, Baseline::Top).draw(&mut f);
                }
                return f;
            }
            line(&mut f, title, 0);
            let note = "Scan the QR on the HDMI/LCD screen, or use the pairing code: \
                        clawbox pair whatsapp --phone +<number>";
            for (i, l) in wrap(note, COLS, 4).iter().enumerate() {
                line(&mut f, l, 1 + i as i32);
            }
            if let Some(l) = wrap(&view.status, COLS, 1).first() {
                line(&mut f, l, 5);
            }
        }
        Pairing::Code { code } => {
            line(&mut f, "Enter on the phone:", 0);
            draw_code(&mut f, code);
            for (i, l) in wrap(&view.status, COLS, 2).iter().enumerate() {
                line(&mut f, l, 4 + i as i32);
            }
        }
        _ => {
            line(&mut f, title, 0);
            let body = wrap(&body, COLS, 3);
            let used = body.len();
            for (i, l) in body.iter().enumerate() {
                line(&mut f, l, 1 + i as i32);
            }
            let rows = 5 - used;
            for (i, l) in wrap(&view.status, COLS, rows).iter().enumerate() {
                line(&mut f, l, 1 + (used + i) as i32);
            }
        }
    }
    f
}

/// The commands that wake a 128×64 panel: clock, multiplex, offset, start line, the charge pump
/// (SSD1306) or DC-DC converter (SH1106), segment and COM remap (so (0,0) is the top left of the
/// usual module orientation), COM pins, contrast, precharge, VCOMH, "display RAM", normal, on.
pub fn init_commands(controller: OledController) -> &'static [u8] {
    match controller {
        OledController::Ssd1306 => &[
            0xAE, 0xD5, 0x80, 0xA8, 0x3F, 0xD3, 0x00, 0x40, 0x8D, 0x14, 0x20, 0x02, 0xA1, 0xC8,
            0xDA, 0x12, 0x81, 0xCF, 0xD9, 0xF1, 0xDB, 0x40, 0xA4, 0xA6, 0xAF,
        ],
        OledController::Sh1106 => &[
            0xAE, 0xD5, 0x80, 0xA8, 0x3F, 0xD3, 0x00, 0x40, 0xAD, 0x8B, 0xA1, 0xC8, 0xDA, 0x12,
            0x81, 0x80, 0xD9, 0x22, 0xDB, 0x35, 0xA4, 0xA6, 0xAF,
        ],
    }
}

/// The I²C messages that put `frame` on the panel, page by page in page addressing mode (which
/// both controllers have): a command message (control byte 0x00: page, column low and high
/// nibble) then a data message (control byte 0x40 and the page's 128 bytes). The SH1106's RAM is
/// 132 columns wide with the glass centred: its column starts at 2.
pub fn frame_messages(frame: &OledFrame, controller: OledController) -> Vec<Vec<u8>> {
    let col: u8 = match controller {
        OledController::Ssd1306 => 0,
        OledController::Sh1106 => 2,
    };
    let mut out = Vec::with_capacity(2 * PAGES);
    for page in 0..PAGES {
        out.push(vec![0x00, 0xB0 | page as u8, col & 0x0F, 0x10 | (col >> 4)]);
        let mut data = Vec::with_capacity(1 + WIDTH as usize);
        data.push(0x40);
        data.extend_from_slice(frame.page(page));
        out.push(data);
    }
    out
}

/// The panel on an I²C bus. The bus stays open between frames; an error drops it, and the next
/// frame reopens and re-initialises the panel.
pub struct Oled {
    bus: PathBuf,
    address: u8,
    controller: OledController,
    dev: Option<LinuxI2CDevice>,
    shown: Option<OledFrame>,
}

impl Oled {
    pub fn new(bus: &Path, address: u8, controller: OledController) -> Oled {
        Oled {
            bus: bus.to_path_buf(),
            address,
            controller,
            dev: None,
            shown: None,
        }
    }

    pub fn device(&self) -> &Path {
        &self.bus
    }

    /// Renders `view` and sends it. Blocking.
    pub fn show(&mut self, view: &View) -> Result<(), DisplayError> {
        let frame = render(view);
        let r = self.send(&frame);
        if r.is_err() {
            self.dev = None;
            self.shown = None;
        } else {
            self.shown = Some(frame);
        }
        r
    }

    fn send(&mut self, frame: &OledFrame) -> Result<(), DisplayError> {
        let write_err = |bus: &Path, e: i2cdev::linux::LinuxI2CError| DisplayError::Write {
            device: bus.to_path_buf(),
            source: std::io::Error::other(e),
        };
        if self.dev.is_none() {
            if !(0x03..=0x77).contains(&self.address) {
                return Err(DisplayError::Geometry {
                    device: self.bus.clone(),
                    message: format!(
                        "I²C address {:#04x} is outside 0x03..=0x77 (the OLED is usually 0x3c)",
                        self.address
                    ),
                });
            }
            let mut dev = LinuxI2CDevice::new(&self.bus, u16::from(self.address)).map_err(|e| {
                DisplayError::Open {
                    device: self.bus.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
            let mut cmd = vec![0x00];
            cmd.extend_from_slice(init_commands(self.controller));
            dev.write(&cmd).map_err(|e| write_err(&self.bus, e))?;
            self.dev = Some(dev);
            self.shown = None;
        }
        if self.shown.as_ref() == Some(frame) {
            return Ok(());
        }
        let Some(dev) = self.dev.as_mut() else {
            return Ok(());
        };
        for m in frame_messages(frame, self.controller) {
            dev.write(&m).map_err(|e| write_err(&self.bus, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_address_every_page_with_the_controller_offset() {
        let mut f = OledFrame::default();
        let Ok(()) = f.draw_iter([Pixel(Point::new(5, 9), BinaryColor::On)]);
        let m = frame_messages(&f, OledController::Ssd1306);
        assert_eq!(m.len(), 16);
        assert_eq!(m[2], vec![0x00, 0xB1, 0x00, 0x10]);
        assert_eq!(m[3].len(), 129);
        assert_eq!(m[3][0], 0x40);
        assert_eq!(m[3][1 + 5], 0b10, "pixel (5,9): page 1, bit 1");
        let m = frame_messages(&f, OledController::Sh1106);
        assert_eq!(m[0], vec![0x00, 0xB0, 0x02, 0x10]);
        assert_eq!(init_commands(OledController::Ssd1306).last(), Some(&0xAF));
        assert_eq!(init_commands(OledController::Sh1106).first(), Some(&0xAE));
    }

    #[test]
    fn a_missing_bus_is_an_open_error_naming_it() {
        let mut o = Oled::new(
            Path::new("/nonexistent/i2c-9"),
            0x3C,
            OledController::Ssd1306,
        );
        let view = View {
            pairing: Pairing::Idle,
            status: String::new(),
        };
        let e = o.show(&view).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/i2c-9"), "{e}");
        let mut o = Oled::new(
            Path::new("/nonexistent/i2c-9"),
            0x90,
            OledController::Ssd1306,
        );
        assert!(o.show(&view).unwrap_err().to_string().contains("0x90"));
    }
}
