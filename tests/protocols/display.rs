//! The board displays as a person sees them: a realistic WhatsApp pairing QR drawn on a 240×240
//! RGB565 TFT (through the real framebuffer writer: sysfs geometry in, file bytes out), a 240×320
//! TFT and 1280×720 / 1920×1080 XRGB8888 HDMI frames, read back by an independent QR decoder
//! (`rqrr`); the OLED showing the pairing code's glyphs; and the display task writing a serial
//! console on each change while a missing device neither stops it nor the others.

use clawbox::config::DisplayConfig;
use clawbox::display::framebuffer::{self, Frame, Framebuffer, Geometry, PixelFormat};
use clawbox::display::oled::{self, OledFrame};
use clawbox::display::{View, render::QrMatrix};
use clawbox::pairing::{Pairing, PairingPublisher};
use clawbox::shutdown::Shutdown;
use clawbox::status::{Board, State};
use std::time::Duration;

/// A realistic pairing payload: `2@` + the server's ref, then the noise key, identity key and adv
/// secret (44 base64 characters each) and the platform, ≈225 bytes.
fn payload() -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = fastrand::Rng::with_seed(7);
    let mut b64 = |n: usize| -> String {
        (0..n)
            .map(|_| B64[rng.usize(..64)] as char)
            .collect::<String>()
    };
    let ref_ = format!("2@{}", b64(86));
    let mut key = || format!("{}=", b64(43));
    let p = format!("{ref_},{},{},{},1", key(), key(), key());
    assert!(
        (220..=232).contains(&p.len()),
        "realistic size: {}",
        p.len()
    );
    p
}

fn qr_view(p: &str) -> View {
    View {
        pairing: Pairing::Qr {
            payload: p.to_string(),
            expires_s: 20,
        },
        status: "telegram: up (@clawbox_bot); whatsapp: needs-owner (scan the QR)".into(),
    }
}

/// Grayscale from raw device bytes, decoded independently of the crate's own `Frame::pixel`.
fn luma(bytes: &[u8], g: Geometry, x: usize, y: usize) -> u8 {
    let at = y * g.stride as usize + x * g.format.bytes_per_pixel() as usize;
    let (r, gr, b) = match g.format {
        PixelFormat::Rgb565 => {
            let v = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            (
                ((v >> 11) & 0x1f) as u32 * 255 / 31,
                ((v >> 5) & 0x3f) as u32 * 255 / 63,
                (v & 0x1f) as u32 * 255 / 31,
            )
        }
        PixelFormat::Xrgb8888 => (bytes[at + 2] as u32, bytes[at + 1] as u32, bytes[at] as u32),
    };
    ((r * 299 + gr * 587 + b * 114) / 1000) as u8
}

/// Decodes every QR in the image; returns the contents and each grid's width in pixels.
/// An OLED frame at 4× for the decoder. A lit pixel is bright: a light module.
fn upscale(f: &OledFrame) -> impl FnMut(usize, usize) -> u8 + '_ {
    move |x, y| {
        if f.get((x / 4) as u32, (y / 4) as u32) {
            255
        } else {
            0
        }
    }
}

fn decode(w: usize, h: usize, pixel: impl FnMut(usize, usize) -> u8) -> Vec<(String, i32)> {
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, pixel);
    img.detect_grids()
        .into_iter()
        .filter_map(|g| {
            let width = (g.bounds[1].x - g.bounds[0].x).abs();
            g.decode().ok().map(|(_, content)| (content, width))
        })
        .collect()
}

#[test]
fn the_qr_on_a_240x240_tft_decodes_to_the_payload_through_sysfs_and_the_device_file() {
    let dir = tempfile::tempdir().unwrap();
    let sysfs = dir.path().join("fb1");
    std::fs::create_dir(&sysfs).unwrap();
    std::fs::write(sysfs.join("virtual_size"), "240,240\n").unwrap();
    std::fs::write(sysfs.join("bits_per_pixel"), "16\n").unwrap();
    std::fs::write(sysfs.join("stride"), "480\n").unwrap();
    let dev = dir.path().join("dev-fb1");
    std::fs::write(&dev, b"").unwrap();

    let p = payload();
    let mut fb = Framebuffer::with_sysfs(&dev, &sysfs);
    fb.show(&qr_view(&p)).unwrap();
    let bytes = std::fs::read(&dev).unwrap();
    assert_eq!(bytes.len(), 240 * 240 * 2, "one whole RGB565 frame");
    let g = Geometry::packed(240, 240, PixelFormat::Rgb565);
    let found = decode(240, 240, |x, y| luma(&bytes, g, x, y));
    assert_eq!(found.len(), 1, "one QR code on the screen");
    assert_eq!(found[0].0, p);
    // Version 9 (53 modules) at 3 px per module: the largest that fits under the text.
    assert_eq!(QrMatrix::new(&p).unwrap().width, 53);
    assert!(
        (150..=165).contains(&found[0].1),
        "53 modules × 3 px ≈ 159 px, got {}",
        found[0].1
    );
}

#[test]
fn the_qr_decodes_on_a_240x320_tft_and_on_hdmi_frames() {
    let p = payload();
    for (g, min_px) in [
        (Geometry::packed(240, 320, PixelFormat::Rgb565), 3),
        (Geometry::packed(1280, 720, PixelFormat::Xrgb8888), 9),
        (Geometry::packed(1920, 1080, PixelFormat::Xrgb8888), 14),
    ] {
        let mut frame = Frame::new(g).unwrap();
        framebuffer::draw(&mut frame, &qr_view(&p));
        let bytes = frame.bytes();
        let found = decode(g.width as usize, g.height as usize, |x, y| {
            luma(bytes, g, x, y)
        });
        assert_eq!(found.len(), 1, "{}x{}: one QR code", g.width, g.height);
        assert_eq!(found[0].0, p, "{}x{}", g.width, g.height);
        let px = found[0].1 / 53;
        assert!(
            px >= min_px,
            "{}x{}: {px} px per module, expected at least {min_px}",
            g.width,
            g.height
        );
    }
}

#[test]
fn a_stride_wider_than_the_line_is_honoured() {
    // Some drivers pad lines: 240 px of RGB565 in a 512-byte stride.
    let g = Geometry {
        width: 240,
        height: 240,
        format: PixelFormat::Rgb565,
        stride: 512,
    };
    let p = payload();
    let mut frame = Frame::new(g).unwrap();
    framebuffer::draw(&mut frame, &qr_view(&p));
    assert_eq!(frame.bytes().len(), 512 * 240);
    let found = decode(240, 240, |x, y| luma(frame.bytes(), g, x, y));
    assert_eq!(found.first().map(|f| f.0.as_str()), Some(p.as_str()));
}

#[test]
fn the_oled_shows_the_pairing_code_in_its_big_font_and_the_status_below() {
    let view = View {
        pairing: Pairing::Code {
            code: "K7QX2M9B".into(),
        },
        status: "whatsapp: needs-owner (enter the code)".into(),
    };
    let shown = oled::render(&view);
    let mut reference = OledFrame::default();
    oled::draw_code(&mut reference, "K7QX2M9B");
    let (top, bottom) = (oled::CODE_TOP as u32, oled::CODE_TOP as u32 + 20);
    assert!(
        reference.lit_in_rows(top, bottom) > 100,
        "the code has glyphs"
    );
    for y in top..bottom {
        for x in 0..oled::WIDTH {
            assert_eq!(
                shown.get(x, y),
                reference.get(x, y),
                "pixel ({x},{y}) of the code:\n{shown:?}"
            );
        }
    }
    // A different code does not match: the comparison can fail.
    let mut other = OledFrame::default();
    oled::draw_code(&mut other, "K7QX2M9C");
    assert_ne!(other, reference);
    // The heading above and the status under the code.
    assert!(shown.lit_in_rows(0, top) > 20, "{shown:?}");
    assert!(shown.lit_in_rows(40, 64) > 20, "{shown:?}");
}

#[test]
fn the_oled_draws_a_qr_only_when_it_stays_scannable() {
    // A real payload: no QR (it would need 122 px at 2 px per module), the note instead.
    let real = oled::render(&qr_view(&payload()));
    assert!(decode(512, 256, upscale(&real)).is_empty());
    assert!(
        real.lit_in_rows(10, 50) > 100,
        "the note is there:\n{real:?}"
    );
    // A short payload fits at 2 px per module and decodes.
    let short = oled::render(&qr_view("clawbox"));
    let found = decode(512, 256, upscale(&short));
    assert_eq!(
        found.first().map(|f| f.0.as_str()),
        Some("clawbox"),
        "{short:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_task_writes_the_serial_console_on_each_change_despite_a_missing_framebuffer() {
    let dir = tempfile::tempdir().unwrap();
    let tty = dir.path().join("ttyAMA0");
    std::fs::write(&tty, b"").unwrap();
    let cfg = DisplayConfig {
        framebuffer: Some("/nonexistent/fb7".into()),
        serial: Some(tty.clone()),
        ..DisplayConfig::default()
    };
    let board = Board::default();
    let wa = board.register("whatsapp", true);
    wa.set(State::NeedsOwner, "enter the code");
    let (publisher, rx) = PairingPublisher::new();
    let (trigger, shutdown) = Shutdown::new();
    let task = tokio::spawn(clawbox::display::run(cfg, rx, board.clone(), shutdown));

    // Writes happen on the blocking pool; give them real time while the clock is paused.
    async fn wait_for(path: &std::path::Path, needle: &str) -> String {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{needle:?} never reached {}", path.display());
    }
    publisher.publish(Pairing::Code {
        code: "K7QX2M9B".into(),
    });
    let text = wait_for(&tty, "Pairing code: K7QX-2M9B").await;
    assert!(
        text.contains("whatsapp: needs-owner (enter the code)"),
        "{text}"
    );

    wa.set(State::Up, "linked +4915112345678");
    publisher.publish(Pairing::Linked {
        number: "+4915112345678".into(),
    });
    let text = wait_for(&tty, "WhatsApp linked").await;
    assert!(
        text.starts_with("\r\n==== clawbox: WhatsApp linked ===="),
        "{text}"
    );
    assert!(
        text.contains("whatsapp: up (linked +4915112345678)"),
        "{text}"
    );

    trigger.trip();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the display task stops on shutdown")
        .unwrap();
}
