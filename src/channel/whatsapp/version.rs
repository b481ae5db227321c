//! The WhatsApp Web version clawbox offers at login (`ClientPayload.user_agent.app_version`): read
//! from the version document (`version_url`, WhatsApp Web's service worker `sw.js` by default,
//! whose `client_revision` is the current build, parsed by the library's own `parse_sw_js`) when
//! the channel starts and after every 405 (client outdated). A compiled-in version stands in
//! until a fetch has worked; the last fetched one is kept for the process's later runs.
//!
//! The library fetches `sw.js` itself only when no version is given and caches it for 24 h, from
//! a fixed URL; clawbox always gives it one ([`Bot::builder().with_version`]), so the real box and
//! the tests against the fake take the same path, and a 405 gets a fresh fetch at once.

use crate::http::HttpClient;
use bytes::Bytes;
use http_body_util::Full;
use std::sync::Mutex;
use std::time::Duration;

/// A WhatsApp Web version: (primary, secondary, tertiary), e.g. 2.3000.1026131876.
pub type WebVersion = (u32, u32, u32);

/// The real version document.
pub const DEFAULT_VERSION_URL: &str = "https://web.whatsapp.com/sw.js";
/// Offered until a fetch worked: the version whatsapp-rust 0.7.0 itself starts from.
pub const FALLBACK_VERSION: WebVersion = (2, 3000, 1_042_742_319);
/// The whole fetch (connect, TLS, body) must finish within this: a connect after a 405 waits for
/// it, and a hung server must not hold the channel.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest version document read: the real `sw.js` is ~100 KB.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// The user agent WhatsApp Web's own page fetch sends (the library sends the same).
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The last version fetched in this process (later runs start from it if a fetch fails).
static LAST_FETCHED: Mutex<Option<WebVersion>> = Mutex::new(None);

/// The version document's version, or why there is none.
pub async fn fetch(client: &HttpClient, url: &str) -> Result<WebVersion, String> {
    let req = http::Request::get(url)
        .header("user-agent", USER_AGENT)
        .header("sec-fetch-site", "none")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad version_url: {e}"))?;
    let resp = client
        .request(req, FETCH_TIMEOUT, MAX_DOCUMENT)
        .await
        .map_err(|e| format!("version document: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("version document: HTTP {}", resp.status().as_u16()));
    }
    let body = String::from_utf8_lossy(resp.body());
    let v = whatsapp_rust::version::parse_sw_js(&body)
        .ok_or_else(|| "version document: no client_revision in it".to_string())?;
    if let Ok(mut last) = LAST_FETCHED.lock() {
        *last = Some(v);
    }
    Ok(v)
}

/// The version to start a run with: fetched now, else the last one fetched, else the fallback.
pub async fn starting(client: &HttpClient, url: &str) -> WebVersion {
    match fetch(client, url).await {
        Ok(v) => {
            tracing::info!(version = %show(v), "WhatsApp Web version");
            v
        }
        Err(e) => {
            let v = LAST_FETCHED
                .lock()
                .ok()
                .and_then(|l| *l)
                .unwrap_or(FALLBACK_VERSION);
            tracing::warn!(error = %e, version = %show(v), "could not read the current WhatsApp Web version; offering the last known one");
            v
        }
    }
}

/// `2.3000.1026131876`.
pub fn show(v: WebVersion) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}
