//! What a WhatsApp message costs the disk, through the real daemon against the fake server: a
//! message the box drops (a stranger's) causes no fsync and leaves no plaintext in the state dir;
//! an accepted DM costs one fsync on the inbound path (its inbox write, which the server's
//! acknowledgement waits for). Counted from `/metrics` (`clawbox_store_fsyncs_total`).

use crate::whatsapp_flow::{
    FRIEND, linked_and_running, new_box, pair_by_qr, stop, wait_connected, wait_reply,
};
use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi};
use fakes::whatsapp::FakeWhatsApp;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const STRANGER: &str = "+15550004444";
const FSYNCS: &str = "clawbox_store_fsyncs_total";
const IN_WA: &str = "clawbox_messages_in_total{channel=\"whatsapp\"}";
const DROPPED_WA: &str =
    "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"}";
/// Stranger messages sent in a row.
const STRANGERS: usize = 12;
/// Accepted DMs measured one at a time.
const DMS: usize = 9;
/// After a message was handled: time for everything it causes on the disk to happen (the
/// library's Signal flush comes 25 ms after the message, the read receipt at once) and for the
/// store's periodic flush (every 2 s) to run if anything asked for it.
const AFTERMATH: Duration = Duration::from_millis(2_600);

/// Waits until `/metrics` has stopped moving its fsync counter for [`AFTERMATH`], then returns it.
async fn quiet_fsyncs(bx: &crate::whatsapp_flow::Bx) -> u64 {
    let t = Instant::now();
    let mut last = metric(&bx.metrics().await, FSYNCS);
    loop {
        tokio::time::sleep(AFTERMATH).await;
        let now = metric(&bx.metrics().await, FSYNCS);
        if now == last {
            return now;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the box never stopped fsyncing"
        );
        last = now;
    }
}

async fn wait_metric(bx: &crate::whatsapp_flow::Bx, name: &str, at_least: u64) {
    let t = Instant::now();
    loop {
        let m = bx.metrics().await;
        if metric(&m, name) >= at_least {
            return;
        }
        assert!(t.elapsed() < SOON, "{name} never reached {at_least}: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path);
            }
        }
    }
    hits
}

/// A stranger writes a dozen times: each message is decrypted, dropped by the allowlist and
/// acknowledged, and none costs an fsync, or leaves its text in any file of the state dir (while
/// running, and after a clean stop, which makes everything durable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_messages_cost_no_fsync_and_leave_no_plaintext() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    // Steady state: one accepted round trip, then the start-up writes settle.
    fake.contact_send(FRIEND, "warm up", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "warm up").await;
    let before = quiet_fsyncs(&bx).await;

    let secret = "stranger-plaintext-7d2e91";
    for i in 0..STRANGERS {
        fake.contact_send(STRANGER, &format!("{secret} {i}"), None, None)
            .await
            .unwrap();
    }
    wait_metric(&bx, DROPPED_WA, STRANGERS as u64).await;
    tokio::time::sleep(AFTERMATH).await;
    let after = metric(&bx.metrics().await, FSYNCS);
    assert_eq!(
        after,
        before,
        "{STRANGERS} dropped messages caused {} fsyncs",
        after - before
    );
    assert!(fake.contact_inbox(STRANGER).await.is_empty());
    let state = bx.dir.path().join("state");
    assert_eq!(
        files_containing(&state, secret.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "the stranger's text is in the state dir"
    );
    stop(p).await;
    assert_eq!(
        files_containing(&state, secret.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "the stranger's text is in the state dir after the final flush"
    );
}

/// Accepted DMs, one at a time: the inbound path costs one fsync each (median 1, max 2). The
/// agent holds each answer [`AGENT_HOLDS`], and the counter is read [`INBOUND_WINDOW`] after the
/// message came in, so the reply's own writes (its in-flight mark) are never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_dm_costs_one_fsync_on_the_inbound_path() {
    const AGENT_HOLDS: Duration = Duration::from_millis(1_500);
    const INBOUND_WINDOW: Duration = Duration::from_millis(600);
    /// The library's app-state sync runs about 10 s after login: start-up, not a message's.
    const STARTUP: Duration = Duration::from_secs(12);
    let ai = FakeOpenAi::start(FakeConfig {
        head_delay: AGENT_HOLDS,
        ..Default::default()
    })
    .await;
    let fake = FakeWhatsApp::start().await;
    let bx = new_box(&fake);
    let mut cfg = std::fs::read_to_string(&bx.cfg).unwrap();
    cfg.push_str(&format!(
        "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
        ai.base_url()
    ));
    std::fs::write(&bx.cfg, cfg).unwrap();
    pair_by_qr(&fake, &bx).await;
    let p = bx.run().await;
    wait_connected(&fake, SOON).await;
    let t0 = Instant::now();
    fake.contact_send(FRIEND, "warm up", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "warm up").await;
    tokio::time::sleep(STARTUP.saturating_sub(t0.elapsed())).await;
    let mut fsyncs = Vec::new();
    let mut seen = metric(&bx.metrics().await, IN_WA);
    for i in 0..DMS {
        let before = quiet_fsyncs(&bx).await;
        let text = format!("dm {i}");
        fake.contact_send(FRIEND, &text, None, None).await.unwrap();
        seen += 1;
        wait_metric(&bx, IN_WA, seen).await;
        tokio::time::sleep(INBOUND_WINDOW).await;
        fsyncs.push(metric(&bx.metrics().await, FSYNCS) - before);
        wait_reply(&fake, FRIEND, &text).await;
    }
    println!(
        "QA whatsapp_writes: fsyncs per accepted DM on the inbound path, in order: {fsyncs:?}"
    );
    fsyncs.sort();
    let median = fsyncs[fsyncs.len() / 2];
    let max = *fsyncs.last().unwrap();
    assert_eq!(median, 1, "{fsyncs:?}");
    assert!(max <= 2, "{fsyncs:?}");
    stop(p).await;
}
