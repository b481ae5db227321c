//! An idle box spares the SD card: with WhatsApp paired and connected and Telegram long-polling,
//! nothing arrives and nothing is written — no store commit, no fsync — over a window longer than
//! every keepalive and ping period. Owns no product code; the figure goes to a `QA idle:` line.

use kit::support;

use std::time::Duration;
use support::metric;
use support::rig::{Options, Rig};

/// Longer than the transport ping (5 s), the deaf-link probe (15 s) and the library's shortest
/// keepalive tick (15 s), so each periodic task has run at least once inside it.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// After clawbox reports WhatsApp up (the app-state sync's version rows are written just then,
/// about 10 s after login against the fake), time for the last start-up write to land: the
/// library saves its device record once more about 20 s later (observed with a key log: one
/// `dev` write 30 s after login, then nothing over the next 60 s).
const SETTLE: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_idle_box_writes_nothing() {
    let _alone = support::alone::alone().await;
    let mut rig = Rig::up(Options::default()).await;
    assert!(
        rig.wait_wa_connected(support::SOON).await.is_some(),
        "WhatsApp connects"
    );
    let deadline = tokio::time::Instant::now() + support::SOON;
    while !rig.health().await.contains("linked") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clawbox never reported WhatsApp up: {}",
            rig.health().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let before = rig.metrics().await;
    assert!(
        metric(&before, "clawbox_store_fsyncs_total") > 0,
        "pairing and start-up were written (the counter is read right): {before}"
    );
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = rig.metrics().await;
    let fsyncs = metric(&after, "clawbox_store_fsyncs_total")
        - metric(&before, "clawbox_store_fsyncs_total");
    let commits = metric(&after, "clawbox_store_commits_total")
        - metric(&before, "clawbox_store_commits_total");
    println!(
        "QA idle: WhatsApp connected + Telegram polling, {} s idle: {commits} store commits, \
         {fsyncs} fsyncs",
        IDLE_WINDOW.as_secs()
    );
    assert!(
        rig.health().await.contains("whatsapp"),
        "still serving /healthz"
    );
    assert_eq!(commits, 0, "an idle box commits nothing");
    assert_eq!(fsyncs, 0, "an idle box fsyncs nothing");
    rig.stop().await;
}
