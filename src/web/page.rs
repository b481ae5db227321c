//! What the pairing page shows, as HTML text: each channel's state, the live pairing QR drawn as
//! SVG from the QR matrix (the same ECC-L matrix the terminal and the displays draw), the pairing
//! code, the linked number, what needs the owner and what to do, and the form for a pairing code.
//! The script that refreshes the live part and the style sheet are served as files from the same
//! origin (the page's CSP allows no inline code). Fits a phone screen; no framework, no CDN.
//!
//! Pure: a [`View`] in, text out. Every value from outside is escaped.

use crate::display::render::{QUIET_ZONE, QrMatrix, code_display};
use crate::pairing::{Pairing, words};
use crate::status::{Row, State};

/// Pixels per QR module in the SVG's natural size: a version-9 code (61 modules with the quiet
/// zone) is 366 px wide, inside a 412 px phone screen, and every module a whole number of pixels.
pub const MODULE_PX: u32 = 6;

/// The page's script: polls `/live` every 2 s and swaps the live part in when it changed; hides
/// the form once linked. No framework; nothing inline (CSP `script-src 'self'`).
pub const SCRIPT: &str = r#"(function () {
  var live = document.getElementById("live");
  var form = document.getElementById("pairform");
  var last = null;
  function linked() {
    var l = live.querySelector("[data-linked]");
    if (form && l) { form.hidden = l.getAttribute("data-linked") === "1"; }
  }
  function tick() {
    fetch("/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (t) { if (t !== last) { last = t; live.innerHTML = t; linked(); } })
      .catch(function () {})
      .then(function () { setTimeout(tick, 2000); });
  }
  linked();
  setTimeout(tick, 2000);
})();
"#;

/// The style sheet: one column, large touch targets, readable on a phone.
pub const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#111}\
main{max-width:30rem;margin:0 auto;padding:1rem}\
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1rem 0 .4rem}\
section{background:#fff;border-radius:.5rem;padding:.8rem;margin-bottom:1rem}\
.qr{display:block;max-width:100%;height:auto;margin:.5rem auto;background:#fff}\
.code{font-size:2rem;font-family:ui-monospace,monospace;letter-spacing:.1em;text-align:center}\
.ok{color:#0a6b2d;font-weight:bold}.warn{color:#9a3b00;font-weight:bold}\
table{width:100%;border-collapse:collapse}td{padding:.3rem .2rem;border-top:1px solid #ddd;vertical-align:top}\
label{display:block;margin:.4rem 0}input{font-size:1.1rem;padding:.5rem;width:100%;box-sizing:border-box}\
button{font-size:1.05rem;padding:.6rem;margin:.4rem 0;width:100%}\
.notice{background:#fff3cd;padding:.6rem;border-radius:.4rem}";

/// What a page shows.
pub struct View<'a> {
    pub pairing: &'a Pairing,
    /// The rows the owner configured (internal machinery left out).
    pub rows: &'a [Row],
    /// None: the WhatsApp channel is not enabled.
    pub whatsapp: bool,
}

/// `s` safe in HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The QR code of `payload` as an SVG: a white square with the quiet zone and one path of dark
/// modules, each row's runs as rectangles.
pub fn qr_svg(payload: &str) -> Result<String, String> {
    let m = QrMatrix::new(payload)?;
    let size = m.width + 2 * QUIET_ZONE;
    let mut d = String::new();
    for y in 0..m.width {
        let dark = |x: u32| m.dark[(y * m.width + x) as usize];
        let mut x = 0;
        while x < m.width {
            if !dark(x) {
                x += 1;
                continue;
            }
            let start = x;
            while x < m.width && dark(x) {
                x += 1;
            }
            let run = x - start;
            d.push_str(&format!(
                "M{} {}h{run}v1h-{run}z",
                start + QUIET_ZONE,
                y + QUIET_ZONE
            ));
        }
    }
    let px = size * MODULE_PX;
    Ok(format!(
        "<svg class=\"qr\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         width=\"{px}\" height=\"{px}\" shape-rendering=\"crispEdges\" role=\"img\" \
         aria-label=\"WhatsApp pairing QR code\"><rect width=\"{size}\" height=\"{size}\" \
         fill=\"#fff\"/><path d=\"{d}\" fill=\"#000\"/></svg>"
    ))
}

/// The part of the page that changes: WhatsApp's pairing, the channels, what needs the owner.
pub fn live(v: &View<'_>) -> String {
    let mut out = String::new();
    let linked = matches!(v.pairing, Pairing::Linked { .. });
    out.push_str(&format!(
        "<section data-linked=\"{}\"><h2>WhatsApp</h2>",
        if linked { 1 } else { 0 }
    ));
    if !v.whatsapp {
        out.push_str("<p>WhatsApp is not enabled: add <code>[channels.whatsapp]</code> to the config and restart the service.</p>");
    } else {
        let w = words(v.pairing);
        match v.pairing {
            Pairing::Qr { payload, .. } => match qr_svg(payload) {
                Ok(svg) => {
                    out.push_str(&format!(
                        "<p>{} (the code changes every 20 seconds or so; this page follows \
                         it).</p>",
                        escape(&w.line())
                    ));
                    out.push_str(&svg);
                }
                Err(e) => out.push_str(&format!("<p class=\"warn\">{}</p>", escape(&e))),
            },
            Pairing::Code { code } => out.push_str(&format!(
                "<p>{}:</p><p class=\"code\">{}</p>",
                escape(&w.line()),
                escape(&code_display(code))
            )),
            Pairing::Linked { number } => out.push_str(&format!(
                "<p class=\"ok\">{} {}</p>",
                w.title,
                escape(number)
            )),
            Pairing::Paused | Pairing::PairAgain | Pairing::Stopped { .. } => {
                out.push_str(&format!(
                    "<p class=\"warn\">{} (or use the form below)</p>",
                    escape(&w.line())
                ))
            }
            Pairing::Idle => {
                let words = v
                    .rows
                    .iter()
                    .find(|r| r.name == "whatsapp")
                    .map(|r| r.detail.clone())
                    .unwrap_or_default();
                out.push_str(&format!("<p>{}</p>", escape(&words)));
            }
        }
    }
    out.push_str("</section><section><h2>Channels</h2><table>");
    for r in v.rows {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            r.state.as_str(),
            escape(&r.detail)
        ));
    }
    out.push_str("</table></section>");
    let problems: Vec<&Row> = v
        .rows
        .iter()
        .filter(|r| matches!(r.state, State::NeedsOwner | State::Degraded))
        .collect();
    if !problems.is_empty() {
        out.push_str("<section><h2>Needs you</h2>");
        for r in problems {
            out.push_str(&format!(
                "<p><b>{}</b>: {}</p>",
                escape(&r.name),
                escape(&r.detail)
            ));
        }
        out.push_str("</section>");
    }
    out
}

/// The whole page; `csrf` goes into the form, `notice` (a refused form) above it.
pub fn page(v: &View<'_>, csrf: &str, notice: Option<&str>) -> String {
    let linked = matches!(v.pairing, Pairing::Linked { .. });
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>clawbox</title><link rel=\"stylesheet\" href=\"/app.css\">\
         <script src=\"/app.js\" defer></script></head><body><main><h1>clawbox</h1>",
    );
    if let Some(n) = notice {
        out.push_str(&format!("<p class=\"notice\">{}</p>", escape(n)));
    }
    out.push_str("<div id=\"live\">");
    out.push_str(&live(v));
    out.push_str("</div>");
    if v.whatsapp {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/pair\" id=\"pairform\"{}><section><h2>Link WhatsApp</h2>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <label for=\"phone\">Your WhatsApp number, to get a pairing code (the way when you \
             read this page on that phone):</label>\
             <input id=\"phone\" name=\"phone\" type=\"tel\" inputmode=\"tel\" autocomplete=\"tel\" \
             placeholder=\"+491701234567\">\
             <button type=\"submit\" name=\"how\" value=\"code\">Get a pairing code</button>\
             <button type=\"submit\" name=\"how\" value=\"qr\">Show a QR code</button>\
             </section></form>",
            if linked { " hidden" } else { "" },
            escape(csrf)
        ));
    }
    out.push_str("</main></body></html>");
    out
}

/// The page for a browser without the token: no state at all.
pub fn locked() -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
     <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
     <title>clawbox</title></head><body><h1>clawbox</h1><p>This page needs its token. Open \
     <code>/?token=…</code> on this address, with the token from the file that <code>[web] \
     token_file</code> names on the box.</p></body></html>"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_from_outside_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let rows = [];
        let p = Pairing::Stopped {
            why: "<script>alert(1)</script>".into(),
        };
        let html = page(
            &View {
                pairing: &p,
                rows: &rows,
                whatsapp: true,
            },
            "t\"x",
            Some("<b>"),
        );
        assert!(!html.contains("<script>alert") && !html.contains("<b>"));
        assert!(html.contains("value=\"t&quot;x\""));
    }

    #[test]
    fn the_svg_has_one_unit_per_module_and_the_quiet_zone() {
        let svg = qr_svg("2@abc,def,ghi,1").unwrap();
        let m = QrMatrix::new("2@abc,def,ghi,1").unwrap();
        let size = m.width + 2 * QUIET_ZONE;
        assert!(svg.contains(&format!("viewBox=\"0 0 {size} {size}\"")));
        assert!(svg.contains(&format!("width=\"{}\"", size * MODULE_PX)));
        // Every dark module is covered by exactly one run: the run lengths add up.
        let dark = m.dark.iter().filter(|d| **d).count() as u32;
        let covered: u32 = svg
            .split('h')
            .skip(1)
            .filter_map(|s| s.split('v').next()?.parse::<u32>().ok())
            .sum();
        assert_eq!(covered, dark);
    }
}
