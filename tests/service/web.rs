//! The pairing and status page, through the real daemon: in a real headless Chromium (Debian's
//! `chromium`; tests/run.sh installs it) the page is screenshotted at a phone's size while the fake
//! WhatsApp shows a QR, the QR is decoded back from the PNG and equals the service's payload, the
//! fake phone scans what the page showed, and the page then says "linked". Over raw sockets: no
//! token off loopback refuses to start (exit 78, file:line:col); without the token a request gets
//! 401 and no state; oversized, malformed, wrong-Host and CSRF-less requests are refused.

use kit::{fakes, support};

use fakes::whatsapp::FakeWhatsApp;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A phone's viewport (a Pixel-class screen in CSS pixels).
const PHONE: (u32, u32) = (412, 915);
/// Chromium gets this long to start, load the page and write its output.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

/// Headless Chromium with a fresh profile; `what` is `--screenshot=FILE` or `--dump-dom`.
/// Returns stdout.
async fn chromium(profile: &Path, what: &str, url: &str) -> String {
    let bin = which("chromium").expect("chromium");
    let out = tokio::time::timeout(
        CHROMIUM_TIMEOUT,
        tokio::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                &format!("--user-data-dir={}", profile.display()),
                &format!("--window-size={},{}", PHONE.0, PHONE.1),
                what,
                url,
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished in time")
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every QR code in a PNG file, decoded.
fn qr_codes_in(png_path: &Path) -> (u32, u32, Vec<String>) {
    let file = std::io::BufReader::new(std::fs::File::open(png_path).unwrap());
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let samples = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let luma = |x: usize, y: usize| -> u8 {
        let i = (y * w + x) * samples;
        if samples < 3 {
            return px[i];
        }
        let (r, g, b) = (px[i] as u32, px[i + 1] as u32, px[i + 2] as u32);
        ((r * 299 + g * 587 + b * 114) / 1000) as u8
    };
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, luma);
    let codes = img
        .detect_grids()
        .into_iter()
        .filter_map(|g| g.decode().ok().map(|(_, s)| s))
        .collect();
    (info.width, info.height, codes)
}

/// With `CLAWBOX_SHOTS=DIR`, the screenshots are kept there (for a person to look at).
fn keep(shot: &Path) {
    if let Some(dir) = std::env::var_os("CLAWBOX_SHOTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(shot, Path::new(&dir).join(shot.file_name().unwrap()));
    }
}

/// The latest QR payload a running `clawbox pair whatsapp` printed.
fn latest_qr(p: &Proc) -> String {
    let out = p.stdout();
    let at = out
        .iter()
        .rposition(|l| l.starts_with("QR data"))
        .expect("a QR");
    out[at + 1].trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_services_qr_and_then_linked() {
    if which("chromium").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing: tests/run.sh installs it"
        );
        eprintln!("skipped: needs chromium (tests/run.sh installs it)");
        return;
    }
    let fake = FakeWhatsApp::start().await;
    let web_port = free_port();
    let bx = TestBox::new(
        &format!(
            "[channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n",
            fake.ws_url(),
            fake.version_url()
        ),
        &[],
    );
    let mut daemon = bx.run().await;
    let url = format!("http://127.0.0.1:{web_port}/");

    // The service's payload, as its control socket streams it.
    let mut pair = spawn(
        &["pair", "whatsapp", "--config", bx.cfg.to_str().unwrap()],
        &[],
        bx.dir.path(),
    );
    wait_qr(&pair).await;

    // The page on a phone-sized screen, as Chromium draws it.
    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("page-qr.png");
    chromium(
        &shots.path().join("profile-1"),
        &format!("--screenshot={}", shot.display()),
        &url,
    )
    .await;
    keep(&shot);
    let (w, h, codes) = qr_codes_in(&shot);
    assert_eq!((w, h), PHONE, "a phone-sized screenshot");
    assert_eq!(codes.len(), 1, "one readable QR on the page: {codes:?}");
    let payload = latest_qr(&pair);
    assert_eq!(codes[0], payload, "the page shows the service's live QR");

    // The phone scans what the page showed: the running service is linked.
    fake.scan(&codes[0]).await.unwrap();
    assert_eq!(pair.exit_code().await, Some(0), "{:#?}", pair.stderr());
    let dom = chromium(&shots.path().join("profile-2"), "--dump-dom", &url).await;
    assert!(
        dom.contains(&format!("WhatsApp linked {}", fake.phone_number())),
        "{dom}"
    );
    assert!(!dom.contains("<svg"), "no QR once linked");
    assert!(
        dom.contains("id=\"pairform\" hidden"),
        "no form once linked"
    );
    let shot = shots.path().join("page-linked.png");
    chromium(
        &shots.path().join("profile-3"),
        &format!("--screenshot={}", shot.display()),
        &url,
    )
    .await;
    keep(&shot);
    assert!(qr_codes_in(&shot).2.is_empty(), "no QR left on screen");
    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, Some(0));
}

/// Sends `raw` and reads the whole answer: (status, head in lower case, body).
async fn ask(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

const TOKEN: &str = "k3Zr8VqY2mLp0sWd7NcXhTu5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_page_needs_a_token_and_refuses_what_it_must() {
    let fake = FakeWhatsApp::start().await;
    let web_port = free_port();
    let wa = format!(
        "[channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\n",
        fake.ws_url(),
        fake.version_url()
    );

    // No token on an address other machines reach: refused at start, with where and what to do.
    let bx = TestBox::new(
        &format!("{wa}[web]\nlisten = \"0.0.0.0:{web_port}\"\n"),
        &[],
    );
    let mut p = spawn(
        &["run", "--config", bx.cfg.to_str().unwrap()],
        &[],
        bx.dir.path(),
    );
    assert_eq!(p.exit_code().await, Some(78));
    let err = p.stderr().join("\n");
    let text = std::fs::read_to_string(&bx.cfg).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("listen = "))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("{}:{line}:10: [web] listen", bx.cfg.display()))
            && err.contains("add token_file"),
        "{err}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", web_port)).await.is_err(),
        "nothing listens"
    );
    // A token others can read is refused too (the secret-file rules).
    let bx = TestBox::new(
        &format!("{wa}[web]\nlisten = \"0.0.0.0:{web_port}\"\ntoken_file = \"web.token\"\n"),
        &[],
    );
    std::fs::write(bx.dir.path().join("web.token"), TOKEN).unwrap();
    let mut p = spawn(
        &["config", "check", bx.cfg.to_str().unwrap()],
        &[],
        bx.dir.path(),
    );
    assert_eq!(p.exit_code().await, Some(78));
    assert!(p.stderr().join("\n").contains("chmod 600"));

    // With the token.
    let bx = TestBox::new(
        &format!(
            "{wa}[web]\nlisten = \"0.0.0.0:{web_port}\"\ntoken_file = \"web.token\"\nhostnames = [\"clawbox.local\"]\n"
        ),
        &[("web.token", TOKEN)],
    );
    let mut daemon = bx.run().await;
    let addr: SocketAddr = format!("127.0.0.1:{web_port}").parse().unwrap();
    let host = format!("Host: 127.0.0.1:{web_port}\r\n");
    // Wait for the QR: there is something to leak.
    let mut pair = spawn(
        &["pair", "whatsapp", "--config", bx.cfg.to_str().unwrap()],
        &[],
        bx.dir.path(),
    );
    let payload = wait_qr(&pair).await;

    // Without the token: 401 and nothing of the state.
    for path in ["/", "/live", "/app.js", "/?token=wrong"] {
        let (status, head, body) = ask(
            addr,
            format!("GET {path} HTTP/1.1\r\n{host}\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status, 401, "{path}");
        for secret in [
            payload.as_str(),
            "whatsapp",
            "WhatsApp",
            "needs-owner",
            "<svg",
            "csrf",
        ] {
            assert!(!body.contains(secret), "{path} leaks {secret}: {body}");
        }
        assert!(head.contains("content-security-policy: default-src 'none'"));
        assert!(head.contains("x-frame-options: deny"));
        assert!(head.contains("referrer-policy: no-referrer"));
        assert!(head.contains("x-content-type-options: nosniff"));
    }
    // The token, swapped for a cookie; the page then shows the state.
    let (status, head, _) = ask(
        addr,
        format!("GET /?token={TOKEN} HTTP/1.1\r\nHost: clawbox.local:{web_port}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 303);
    assert!(head.contains("location: /\r\n"));
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let auth = format!("{host}Cookie: {cookie}\r\n");
    let (status, head, page) = ask(addr, format!("GET / HTTP/1.1\r\n{auth}\r\n").as_bytes()).await;
    assert_eq!(status, 200, "{page}");
    assert!(head.contains("content-type: text/html"));
    assert!(page.contains("<svg") && page.contains("WhatsApp"), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();

    // A wrong Host (a DNS-rebinding page): refused, with or without the token.
    for with in ["", auth.as_str()] {
        let with = with.replace(&host, "");
        let (status, _, body) = ask(
            addr,
            format!("GET / HTTP/1.1\r\nHost: evil.example:{web_port}\r\n{with}\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status, 421);
        assert!(!body.contains(&payload));
    }
    // Over the size caps.
    let mut big = format!("GET / HTTP/1.1\r\n{auth}x-junk: ").into_bytes();
    big.extend(std::iter::repeat_n(b'a', 9 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(ask(addr, &big).await.0, 431);
    let body = "a".repeat(4096);
    let (status, _, _) = ask(
        addr,
        format!(
            "POST /pair HTTP/1.1\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    // Malformed.
    for raw in [
        "GARBAGE\r\n\r\n".to_string(),
        format!("GET / HTTP/1.1\r\n{auth}no colon here\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n{auth}{host}\r\n"),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
    ] {
        assert_eq!(ask(addr, raw.as_bytes()).await.0, 400, "{raw}");
    }
    // A POST without the page's token, or from another origin: refused, nothing started.
    let form = |extra: &str, body: &str| {
        format!(
            "POST /pair HTTP/1.1\r\n{auth}{extra}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(ask(addr, form("", "how=qr").as_bytes()).await.0, 403);
    let good = format!("csrf={csrf}&how=qr&phone=");
    assert_eq!(
        ask(
            addr,
            form("Origin: http://evil.example\r\n", &good).as_bytes()
        )
        .await
        .0,
        403
    );
    // GET never changes anything.
    assert_eq!(
        ask(addr, format!("GET /pair HTTP/1.1\r\n{auth}\r\n").as_bytes())
            .await
            .0,
        405
    );
    // With the token and the same origin, the request reaches the service.
    let (status, head, _) = ask(
        addr,
        form(&format!("Origin: http://127.0.0.1:{web_port}\r\n"), &good).as_bytes(),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    assert!(
        daemon
            .stderr()
            .iter()
            .all(|l| !l.contains(TOKEN) && !l.contains(&csrf)),
        "no secret in the log"
    );
    pair.kill9().await;
    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, Some(0));
}
