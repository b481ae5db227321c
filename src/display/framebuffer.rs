//! A Linux framebuffer (`/dev/fbN`: HDMI, or an SPI TFT such as an ST7789 240×240 or ILI9341
//! 240×320 driven by the kernel's panel overlays) showing the pairing QR, the pairing code and the
//! channel status.
//!
//! The geometry comes from sysfs (`/sys/class/graphics/fbN/{virtual_size,bits_per_pixel,stride}`
//! and the current mode in `modes`): no ioctl, no unsafe. A frame is drawn into our own buffer in
//! the device's pixel format (16 bpp RGB565 or 32 bpp XRGB8888, little-endian) and written whole
//! with one plain file write from offset 0. Blocking: the display task calls it from
//! `spawn_blocking`. Never keeps the device open between frames (a TFT whose driver is reloaded
//! comes back on the next frame), never logs.

use super::DisplayError;
use super::render::{QrMatrix, Scaled, View, code_display, wrap};
use crate::pairing::{Pairing, Words, words};
use embedded_graphics::Pixel;
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle, ascii};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{Dimensions, DrawTarget, Drawable, OriginDimensions, Point, Size};
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest frame we allocate: a 1920×1080 XRGB8888 frame is 8.3 MB and the unit caps the daemon
/// at 128 MB. A 4K mode (33 MB) is refused with a hint to pick a smaller HDMI mode.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A sysfs attribute is a short line; anything longer is not what we expect.
const MAX_SYSFS_BYTES: u64 = 4096;

/// Lines of channel status at the bottom of the screen, and of explanation under the title: few
/// on a small TFT, where every line costs the QR a pixel per module (240×240 keeps 3 px).
const STATUS_LINES: [usize; 2] = [1, 3];
const BODY_LINES: [usize; 2] = [2, 3];

/// How the device stores a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// 16 bpp, 5-6-5, little-endian (SPI TFTs, the Pi's 16-bit HDMI console).
    Rgb565,
    /// 32 bpp, bytes B, G, R, X in memory.
    Xrgb8888,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> u32 {
        match self {
            PixelFormat::Rgb565 => 2,
            PixelFormat::Xrgb8888 => 4,
        }
    }
}

/// The visible size, the pixel format and the bytes per line (`stride`, at least width × bpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    pub stride: u32,
}

impl Geometry {
    /// A tightly packed geometry (stride = width × bytes per pixel).
    pub fn packed(width: u32, height: u32, format: PixelFormat) -> Geometry {
        Geometry {
            width,
            height,
            format,
            stride: width * format.bytes_per_pixel(),
        }
    }

    /// Parses the sysfs attributes: `virtual_size` ("1920,1080"), `bits_per_pixel` ("32"),
    /// `stride` ("7680") and, when present, `modes` ("U:1920x1080p-0"; the visible size when the
    /// virtual one is taller for panning).
    pub fn from_sysfs_text(
        virtual_size: &str,
        bits_per_pixel: &str,
        stride: &str,
        modes: Option<&str>,
    ) -> Result<Geometry, String> {
        let (vw, vh) = virtual_size
            .trim()
            .split_once(',')
            .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)))
            .ok_or_else(|| {
                format!(
                    "virtual_size {:?} is not `<width>,<height>`",
                    virtual_size.trim()
                )
            })?;
        let format = match bits_per_pixel.trim() {
            "16" => PixelFormat::Rgb565,
            "32" => PixelFormat::Xrgb8888,
            other => {
                return Err(format!(
                    "{other} bits per pixel is not supported (16 RGB565 or 32 XRGB8888; \
                     set `framebuffer_depth=16` or 32 in config.txt, or `fbset -depth 16`)"
                ));
            }
        };
        let stride: u32 = stride
            .trim()
            .parse()
            .map_err(|_| format!("stride {:?} is not a number", stride.trim()))?;
        // "U:1920x1080p-0": the first mode line, when it fits inside the virtual size.
        let visible = modes
            .and_then(|m| m.lines().next())
            .and_then(|l| l.split_once(':'))
            .and_then(|(_, rest)| {
                let (w, rest) = rest.split_once('x')?;
                let h: String = rest.chars().take_while(char::is_ascii_digit).collect();
                Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))
            })
            .filter(|&(w, h)| w > 0 && h > 0 && w <= vw && h <= vh);
        let (width, height) = visible.unwrap_or((vw, vh));
        let g = Geometry {
            width,
            height,
            format,
            stride,
        };
        g.check()?;
        Ok(g)
    }

    /// The frame's size in bytes, checked against the stride and [`MAX_FRAME_BYTES`].
    pub fn check(&self) -> Result<usize, String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("empty geometry {}x{}", self.width, self.height));
        }
        if u64::from(self.stride) < u64::from(self.width) * u64::from(self.format.bytes_per_pixel())
        {
            return Err(format!(
                "stride {} is shorter than a line of {} pixels",
                self.stride, self.width
            ));
        }
        let bytes = u64::from(self.stride) * u64::from(self.height);
        if bytes > MAX_FRAME_BYTES as u64 {
            return Err(format!(
                "a {}x{} frame is {bytes} bytes, over the {MAX_FRAME_BYTES}-byte limit: choose a \
                 smaller HDMI mode (e.g. `video=HDMI-A-1:1920x1080` in cmdline.txt)",
                self.width, self.height
            ));
        }
        Ok(bytes as usize)
    }
}

/// An in-memory frame in the device's pixel format; an `embedded-graphics` draw target.
#[derive(Debug, Clone)]
pub struct Frame {
    geometry: Geometry,
    buf: Vec<u8>,
}

impl Frame {
    pub fn new(geometry: Geometry) -> Result<Frame, String> {
        let bytes = geometry.check()?;
        Ok(Frame {
            geometry,
            buf: vec![0; bytes],
        })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The bytes to write to the device, `stride × height`.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The colour at (x, y), decoded from the device format (RGB565 loses the low bits).
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb888> {
        let g = self.geometry;
        if x >= g.width || y >= g.height {
            return None;
        }
        let at = (y * g.stride + x * g.format.bytes_per_pixel()) as usize;
        match g.format {
            PixelFormat::Rgb565 => {
                let v = u16::from_le_bytes([*self.buf.get(at)?, *self.buf.get(at + 1)?]);
                let r = ((v >> 11) & 0x1f) as u8;
                let gr = ((v >> 5) & 0x3f) as u8;
                let b = (v & 0x1f) as u8;
                Some(Rgb888::new(
                    r << 3 | r >> 2,
                    gr << 2 | gr >> 4,
                    b << 3 | b >> 2,
                ))
            }
            PixelFormat::Xrgb8888 => {
                let p = self.buf.get(at..at + 4)?;
                Some(Rgb888::new(p[2], p[1], p[0]))
            }
        }
    }

    fn encode(&self, c: Rgb888) -> ([u8; 4], usize) {
        match self.geometry.format {
            PixelFormat::Rgb565 => {
                let v: u16 = (u16::from(c.r() >> 3) << 11)
                    | (u16::from(c.g() >> 2) << 5)
                    | u16::from(c.b() >> 3);
                let [a, b] = v.to_le_bytes();
                ([a, b, 0, 0], 2)
            }
            PixelFormat::Xrgb8888 => ([c.b(), c.g(), c.r(), 0xff], 4),
        }
    }
}

impl OriginDimensions for Frame {
    fn size(&self) -> Size {
        Size::new(self.geometry.width, self.geometry.height)
    }
}

impl DrawTarget for Frame {
    type Color = Rgb888;
    type Error = std::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        let g = self.geometry;
        for Pixel(p, c) in pixels {
            if p.x < 0 || p.y < 0 || p.x as u32 >= g.width || p.y as u32 >= g.height {
                continue;
            }
            let (bytes, n) = self.encode(c);
            let at = (p.y as u32 * g.stride + p.x as u32 * g.format.bytes_per_pixel()) as usize;
            if let Some(dst) = self.buf.get_mut(at..at + n) {
                dst.copy_from_slice(&bytes[..n]);
            }
        }
        Ok(())
    }

    // Row copies instead of a pixel iterator: a 1080p clear is two million pixels.
    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let Some(bottom_right) = area.bottom_right() else {
            return Ok(());
        };
        let g = self.geometry;
        let (bytes, n) = self.encode(color);
        let x0 = area.top_left.x as u32;
        let x1 = bottom_right.x as u32 + 1;
        for y in area.top_left.y as u32..=bottom_right.y as u32 {
            let start = (y * g.stride + x0 * g.format.bytes_per_pixel()) as usize;
            let end = (y * g.stride + x1 * g.format.bytes_per_pixel()) as usize;
            if let Some(row) = self.buf.get_mut(start..end) {
                for px in row.chunks_exact_mut(n) {
                    px.copy_from_slice(&bytes[..n]);
                }
            }
        }
        Ok(())
    }
}

const BACKGROUND: Rgb888 = Rgb888::BLACK;
const TEXT: Rgb888 = Rgb888::WHITE;
const TITLE: Rgb888 = Rgb888::new(0x7f, 0xd8, 0x7f);

/// The text layout for a screen `width` pixels wide.
struct Layout {
    font: &'static MonoFont<'static>,
    /// Integer scale of the font.
    scale: u32,
    line_h: u32,
    margin: u32,
    /// 0: small TFT, 1: HDMI (index into [`STATUS_LINES`] and [`BODY_LINES`]).
    size: usize,
}

/// The 6×10 font on small TFTs (40 characters across 240 px, lines packed), 10×20 on HDMI,
/// doubled from 1920 px up.
fn layout_for(width: u32) -> Layout {
    if width < 400 {
        Layout {
            font: &ascii::FONT_6X10,
            scale: 1,
            line_h: 10,
            margin: 2,
            size: 0,
        }
    } else {
        let scale = (width / 960).max(1);
        Layout {
            font: &ascii::FONT_10X20,
            scale,
            line_h: 22 * scale,
            margin: 4 * scale,
            size: 1,
        }
    }
}

fn text_line(
    frame: &mut Frame,
    s: &str,
    at: Point,
    font: &'static MonoFont<'static>,
    scale: u32,
    color: Rgb888,
) {
    let mut scaled = Scaled {
        target: frame,
        scale,
        origin: at,
    };
    let style = MonoTextStyle::new(font, color);
    let Ok(_) = Text::with_baseline(s, Point::zero(), style, Baseline::Top).draw(&mut scaled);
}

/// Draws `view` over the whole frame: title and explanation at the top, the QR (largest integer
/// module size with its quiet zone) or the big pairing code in the middle, the channel status at
/// the bottom.
pub fn draw(frame: &mut Frame, view: &View) {
    let Size { width, height } = frame.size();
    let Ok(()) = frame.clear(BACKGROUND);
    let Layout {
        font,
        scale,
        line_h,
        margin,
        size,
    } = layout_for(width);
    let char_w = font.character_size.width * scale;
    let cols = ((width.saturating_sub(2 * margin)) / char_w.max(1)) as usize;

    let Words { title, body } = words(&view.pairing);
    let mut y = margin;
    text_line(
        frame,
        title,
        Point::new(margin as i32, y as i32),
        font,
        scale,
        TITLE,
    );
    y += line_h;
    for line in wrap(&body, cols, BODY_LINES[size]) {
        text_line(
            frame,
            &line,
            Point::new(margin as i32, y as i32),
            font,
            scale,
            TEXT,
        );
        y += line_h;
    }
    let top = y + margin;

    let status = wrap(&view.status, cols, STATUS_LINES[size]);
    let status_top = height.saturating_sub(margin + status.len() as u32 * line_h);
    for (i, line) in status.iter().enumerate() {
        let at = Point::new(margin as i32, (status_top + i as u32 * line_h) as i32);
        text_line(frame, line, at, font, scale, TEXT);
    }

    let mid_h = status_top.saturating_sub(top + margin);
    let mid_w = width.saturating_sub(2 * margin);
    match &view.pairing {
        Pairing::Qr { payload, .. } => match QrMatrix::new(payload) {
            Ok(qr) => {
                let px = qr.module_px(mid_w, mid_h);
                if px == 0 {
                    let note = "The screen is too small for the QR: use the pairing code \
                                (clawbox pair whatsapp --phone +<number>).";
                    for (i, line) in wrap(note, cols, 3).iter().enumerate() {
                        let at = Point::new(margin as i32, (top + i as u32 * line_h) as i32);
                        text_line(frame, line, at, font, scale, TEXT);
                    }
                } else {
                    let side = qr.total() * px;
                    let x = (width - side) / 2;
                    let y = top + (mid_h - side) / 2;
                    let at = Point::new(x as i32, y as i32);
                    let Ok(()) = qr.draw(frame, at, px, Rgb888::WHITE, Rgb888::BLACK);
                }
            }
            Err(e) => {
                for (i, line) in wrap(&e, cols, 2).iter().enumerate() {
                    let at = Point::new(margin as i32, (top + i as u32 * line_h) as i32);
                    text_line(frame, line, at, font, scale, TEXT);
                }
            }
        },
        Pairing::Code { code } => {
            let shown = code_display(code);
            let big = &ascii::FONT_10X20;
            let n = shown.chars().count().max(1) as u32;
            let s = (mid_w / (n * big.character_size.width))
                .min(mid_h / big.character_size.height)
                .max(1);
            let w = n * big.character_size.width * s;
            let h = big.character_size.height * s;
            let at = Point::new(
                (width.saturating_sub(w) / 2) as i32,
                (top + mid_h.saturating_sub(h) / 2) as i32,
            );
            text_line(frame, &shown, at, big, s, TEXT);
        }
        _ => {}
    }
}

/// A framebuffer device and where its sysfs attributes are.
#[derive(Debug)]
pub struct Framebuffer {
    device: PathBuf,
    sysfs: PathBuf,
    /// Reused between frames while the geometry stays the same.
    frame: Option<Frame>,
}

impl Framebuffer {
    /// `/dev/fbN`, with its attributes in `/sys/class/graphics/fbN`.
    pub fn new(device: &Path) -> Framebuffer {
        let resolved = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
        let name = resolved
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        Framebuffer::with_sysfs(device, &Path::new("/sys/class/graphics").join(name))
    }

    /// A device whose attributes live in `sysfs` (tests use a temporary directory).
    pub fn with_sysfs(device: &Path, sysfs: &Path) -> Framebuffer {
        Framebuffer {
            device: device.to_path_buf(),
            sysfs: sysfs.to_path_buf(),
            frame: None,
        }
    }

    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Reads the geometry from sysfs.
    pub fn geometry(&self) -> Result<Geometry, DisplayError> {
        let read = |name: &str| -> Result<String, DisplayError> {
            read_small(&self.sysfs.join(name)).map_err(|e| DisplayError::Geometry {
                device: self.device.clone(),
                message: format!("cannot read {}: {e}", self.sysfs.join(name).display()),
            })
        };
        let virtual_size = read("virtual_size")?;
        let bpp = read("bits_per_pixel")?;
        let stride = read("stride")?;
        let modes = read("modes").ok();
        Geometry::from_sysfs_text(&virtual_size, &bpp, &stride, modes.as_deref()).map_err(
            |message| DisplayError::Geometry {
                device: self.device.clone(),
                message,
            },
        )
    }

    /// Draws `view` and writes the whole frame. Blocking.
    pub fn show(&mut self, view: &View) -> Result<(), DisplayError> {
        let geometry = self.geometry()?;
        let mut frame = match self.frame.take() {
            Some(f) if f.geometry() == geometry => f,
            _ => Frame::new(geometry).map_err(|message| DisplayError::Geometry {
                device: self.device.clone(),
                message,
            })?,
        };
        draw(&mut frame, view);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.device)
            .map_err(|source| DisplayError::Open {
                device: self.device.clone(),
                source,
            })
            .and_then(|mut f| {
                f.write_all(frame.bytes())
                    .and_then(|()| f.flush())
                    .map_err(|source| DisplayError::Write {
                        device: self.device.clone(),
                        source,
                    })
            });
        self.frame = Some(frame);
        written
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(MAX_SYSFS_BYTES)
        .read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_geometry_parses_and_prefers_the_visible_mode() {
        let g =
            Geometry::from_sysfs_text("1920,2160\n", "32\n", "7680\n", Some("U:1920x1080p-0\n"))
                .unwrap();
        assert_eq!(g, Geometry::packed(1920, 1080, PixelFormat::Xrgb8888));
        let g = Geometry::from_sysfs_text("240,240", "16", "480", None).unwrap();
        assert_eq!(g, Geometry::packed(240, 240, PixelFormat::Rgb565));
        let e = Geometry::from_sysfs_text("240,240", "24", "720", None).unwrap_err();
        assert!(e.contains("24 bits per pixel"), "{e}");
        let e = Geometry::from_sysfs_text("240,240", "16", "100", None).unwrap_err();
        assert!(e.contains("stride"), "{e}");
        let e = Geometry::from_sysfs_text("3840,2160", "32", "15360", None).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        assert!(Geometry::from_sysfs_text("junk", "16", "480", None).is_err());
    }

    #[test]
    fn pixels_round_trip_in_both_formats() {
        for format in [PixelFormat::Rgb565, PixelFormat::Xrgb8888] {
            let mut f = Frame::new(Geometry::packed(4, 3, format)).unwrap();
            let Ok(()) = f.fill_solid(
                &Rectangle::new(Point::new(1, 1), Size::new(2, 1)),
                Rgb888::WHITE,
            );
            assert_eq!(f.pixel(1, 1), Some(Rgb888::WHITE));
            assert_eq!(f.pixel(2, 1), Some(Rgb888::WHITE));
            assert_eq!(f.pixel(3, 1), Some(Rgb888::BLACK));
            assert_eq!(f.pixel(1, 0), Some(Rgb888::BLACK));
            assert_eq!(f.pixel(4, 0), None);
        }
    }
}
