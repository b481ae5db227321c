//! Crash loop: SIGKILL the real binary at random instants while WhatsApp and Telegram traffic flows
//! (and while pairing: with the QR up, and right after the scan), restarting it each time on the
//! same state dir. Proves the store opens every time, the box never has to pair again once paired,
//! and every message is answered exactly once on both channels — counted from the raw deliveries
//! the fakes recorded, every part of a long reply on its own: zero lost, zero duplicates, whatever
//! a kill caught mid-send, and no contact's message the box cannot decrypt after a restart (no
//! retry receipt: the Signal state the WhatsApp library writes lazily is never lost in a way
//! that breaks a session).
//!
//! Two variants: fast (pacing off, one-chunk replies, many kills) and as shipped (production
//! pacing, replies split into chunks, a Telegram outage, a 429 or a request Telegram carried out
//! but never answered in the kill window). CLAWBOX_CRASH_KILLS and CLAWBOX_CRASH_KILLS_PACED set
//! the number of kills during traffic (default: a short CI run); CLAWBOX_CRASH_SEED replays one.
//! Figures go to `QA crash_loop:` lines.

use kit::{fakes, support};

use fakes::openai::FakeConfig;
use fakes::telegram::FakeError;
use std::collections::BTreeMap;
use std::time::Duration;
use support::rig::{self, Agent, Options, Rig, Tally};
use support::{Proc, SOON, wait_qr};
use tokio::time::Instant;

/// Kills during traffic when CLAWBOX_CRASH_KILLS is unset.
const CI_KILLS: usize = 15;
/// Kills of the paced variant when CLAWBOX_CRASH_KILLS_PACED is unset (each reply takes seconds).
const CI_KILLS_PACED: usize = 6;
/// Paced variant: messages per burst, a reply's parts and each part's length (over half of
/// WhatsApp's 4000 and Telegram's 4096 characters, so every part is a chunk of its own).
const PACED_BURST: (usize, usize) = (1, 2);
const PACED_PARTS: u32 = 2;
const PACED_PART_CHARS: usize = 2_200;
/// Paced variant: the drain allows the shipped pacing (typing up to 4 s, 1.5–3.5 s between
/// replies, 20 sends a minute per channel) to catch up with everything sent: a base, plus time
/// per kill for the up to two messages (four chunks) each burst adds.
const PACED_DRAIN: Duration = Duration::from_secs(240);
const PACED_DRAIN_PER_KILL: Duration = Duration::from_secs(8);
/// Messages sent before each kill (range).
const BURST: (usize, usize) = (1, 4);
/// How long the box runs before the kill (ms range): from mid-start-up to after a turn finished.
const KILL_AFTER_MS: (u64, u64) = (0, 1_500);
/// The fake AI streams each reply slowly, so kills land mid-turn and mid-reply too.
const AI_CHUNK_DELAY: Duration = Duration::from_millis(60);
const AI_CHARS_PER_CHUNK: usize = 4;
/// After the last restart: time for every message to be answered.
const DRAIN: Duration = Duration::from_secs(90);
/// After every message is answered: time for a duplicate to show up, if one were coming.
const DUP_WATCH: Duration = Duration::from_secs(3);

fn opts() -> Options {
    Options {
        agent: Agent::OpenAi(FakeConfig {
            chunk_delay: AI_CHUNK_DELAY,
            chars_per_chunk: AI_CHARS_PER_CHUNK,
            ..Default::default()
        }),
        wa_contacts: 2,
        tg_users: 2,
        ..Default::default()
    }
}

async fn kill_pair(mut p: Proc) {
    p.kill9().await;
}

/// The store opened and the daemon started: no store error, "ready" seen (`Rig::run` waits for it).
fn assert_store_opened(rig: &Rig) {
    let err = rig.proc().stderr();
    assert!(
        !err.iter()
            .any(|l| l.contains("store") && (l.contains("ERROR") || l.contains("corrupt"))),
        "the store did not open cleanly: {err:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_never_repairs_loses_or_duplicates() {
    let _beside = support::alone::shared().await;
    let kills: usize = std::env::var("CLAWBOX_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_KILLS);
    let seed: u64 = std::env::var("CLAWBOX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("QA crash_loop: seed={seed} kills={kills} (CLAWBOX_CRASH_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut rig = Rig::new(opts()).await;

    // ---- kills during pairing ------------------------------------------------------------
    // 1. The QR is up: kill. Nothing was linked.
    let p = rig.spawn_pair();
    let _ = wait_qr(&p).await;
    kill_pair(p).await;
    assert!(!rig.wa().state().await.paired, "nothing linked yet");
    // 2. The phone scans, and the box dies right away.
    let p = rig.spawn_pair();
    let qr = wait_qr(&p).await;
    rig.wa().scan(&qr).await.unwrap();
    kill_pair(p).await;
    // 3. Start the service. If the kill beat the save, the box is not linked and shows it; then it
    //    is paired once more (still before it was ever paired, so no re-pairing).
    let mut pairings_after_kill = 0;
    rig.run().await;
    if rig
        .wait_wa_connected(Duration::from_secs(10))
        .await
        .is_none()
    {
        rig.stop().await;
        rig.pair().await;
        pairings_after_kill += 1;
        rig.run().await;
    }
    rig.wait_wa_connected(SOON)
        .await
        .expect("connected once paired");
    let jid = rig.wa().state().await.jid;
    assert!(jid.is_some(), "the fake knows the linked device");
    // Log lines from here on belong to a paired box.
    let paired_at_line = rig.all_stderr().len();

    // ---- kills during traffic ------------------------------------------------------------
    let mut repairs = 0usize;
    let mut not_back: Vec<usize> = Vec::new();
    let t0 = Instant::now();
    for k in 0..kills {
        for _ in 0..rng.usize(BURST.0..=BURST.1) {
            if rng.bool() {
                let i = rng.usize(..rig.wa_contacts.len());
                rig.send_wa(i).await.expect("the fake accepts the message");
            } else {
                let i = rng.usize(..rig.tg_users.len());
                rig.send_tg(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(
            rng.u64(KILL_AFTER_MS.0..=KILL_AFTER_MS.1),
        ))
        .await;
        rig.kill9().await;
        rig.run().await;
        assert_store_opened(&rig);
        // Logged in again with the same device: the fake would have a new jid after a pairing.
        let state = rig.wa().state().await;
        if state.jid != jid {
            repairs += 1;
        }
        if k % 5 == 4 {
            // Now and then let it come all the way back before the next kill.
            if rig.wait_wa_connected(SOON).await.is_none() {
                not_back.push(k);
            }
        }
        if k % 10 == 9 {
            rig.collect_wa().await;
        }
    }
    let loop_time = t0.elapsed();
    let back = rig.wait_wa_connected(SOON).await;
    let counts = rig.wait_all_answered(DRAIN).await;
    tokio::time::sleep(DUP_WATCH).await;
    let counts = {
        let after = rig.reply_counts().await;
        assert_eq!(after.len(), counts.len());
        after
    };
    let state = rig.wa().state().await;
    if state.jid != jid {
        repairs += 1;
    }
    let qr_shown = rig.all_stderr()[paired_at_line..]
        .iter()
        .filter(|l| l.contains("QR") || l.contains("not linked"))
        .count();

    let tally = Tally::of(&mut rig, &counts).await;
    let retries = rig.wa().retry_stats().await;
    println!(
        "QA crash_loop: {kills} SIGKILLs during traffic in {:.0}s + 2 during pairing (QR up, right after the scan; pairings repeated because the kill beat the save: {pairings_after_kill}); {} starts, store opened every time; re-pairings once paired={repairs}; WhatsApp retry receipts {} and contact resends {}; {}",
        loop_time.as_secs_f64(),
        rig.starts,
        retries.retry_receipts,
        retries.contact_resends,
        tally.line(),
    );

    assert!(back.is_some(), "WhatsApp back after the loop");
    assert!(
        not_back.is_empty(),
        "WhatsApp did not come back after kills {not_back:?}"
    );
    assert_eq!(repairs, 0, "the box had to pair again");
    assert_eq!(qr_shown, 0, "`run` never shows a QR once paired");
    // The WhatsApp library's receive-side Signal state is written lazily (durable with the next
    // fsync): a kill never leaves a session that fails to decrypt the contact's next message.
    assert_eq!(
        retries.retry_receipts, 0,
        "the box could not decrypt a contact's message after a restart"
    );
    if !(tally.lost.is_empty() && tally.dup.is_empty() && tally.unknowable == [0, 0]) {
        println!("QA logs kept: {}", Tally::keep_logs(&rig, "tally"));
    }
    tally.assert_exactly_once();
    rig.stop().await;
    let _ = rig::SETTLE;
}

/// The shipped pacing, replies in chunks, and Telegram trouble in the kill window: an outage
/// (connections reset), a 429, or a sendMessage Telegram carried out whose answer never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loop_with_shipped_pacing_chunked_replies_and_telegram_trouble() {
    let _beside = support::alone::shared().await;
    let kills: usize = std::env::var("CLAWBOX_CRASH_KILLS_PACED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_KILLS_PACED);
    let seed: u64 = std::env::var("CLAWBOX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!(
        "QA crash_loop paced: seed={seed} kills={kills} (CLAWBOX_CRASH_SEED={seed} replays it)"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut rig = Rig::up(Options {
        agent: Agent::OpenAi(FakeConfig {
            reply: rig::long_reply(PACED_PARTS, PACED_PART_CHARS),
            chunk_delay: AI_CHUNK_DELAY,
            chars_per_chunk: 400,
            ..Default::default()
        }),
        wa_contacts: 2,
        tg_users: 2,
        pacing: true,
        ..Default::default()
    })
    .await;
    rig.wait_wa_connected(SOON)
        .await
        .expect("connected once paired");
    let jid = rig.wa().state().await.jid;
    let mut repairs = 0usize;
    let mut trouble: BTreeMap<&str, usize> = BTreeMap::new();
    let t0 = Instant::now();
    for _ in 0..kills {
        for _ in 0..rng.usize(PACED_BURST.0..=PACED_BURST.1) {
            if rng.bool() {
                let i = rng.usize(..rig.wa_contacts.len());
                rig.send_wa(i).await.expect("the fake accepts the message");
            } else {
                let i = rng.usize(..rig.tg_users.len());
                rig.send_tg(i);
            }
        }
        // Let turns run and replies start (typing alone takes up to 4 s).
        tokio::time::sleep(Duration::from_millis(rng.u64(1_000..=6_000))).await;
        let what = match rng.u8(0..4) {
            0 => {
                rig.tg_proxy().reset();
                "telegram outage"
            }
            1 => {
                rig.tg()
                    .fail_next("sendMessage", 1, FakeError::TooManyRequests(3));
                "429"
            }
            2 => {
                rig.tg().fail_next(
                    "sendMessage",
                    1,
                    FakeError::CarriedOutAnswerHeld(Duration::from_secs(30)),
                );
                "answer held"
            }
            _ => "nothing",
        };
        *trouble.entry(what).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=3_000))).await;
        rig.kill9().await;
        rig.run().await;
        assert_store_opened(&rig);
        if rig.wa().state().await.jid != jid {
            repairs += 1;
        }
        // The outage outlasts the restart now and then.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=2_000))).await;
        rig.tg_proxy().pass();
        rig.collect_wa().await;
    }
    let loop_time = t0.elapsed();
    let counts = rig
        .wait_all_answered(PACED_DRAIN + PACED_DRAIN_PER_KILL * kills as u32)
        .await;
    tokio::time::sleep(DUP_WATCH).await;
    let counts = {
        let after = rig.reply_counts().await;
        assert_eq!(after.len(), counts.len());
        after
    };
    let tally = Tally::of(&mut rig, &counts).await;
    let retries = rig.wa().retry_stats().await;
    println!(
        "QA crash_loop paced: {kills} SIGKILLs in {:.0}s with shipped pacing, replies of {PACED_PARTS} chunks, Telegram trouble in the kill window {trouble:?}; re-pairings={repairs}; WhatsApp retry receipts {} and contact resends {}; {}",
        loop_time.as_secs_f64(),
        retries.retry_receipts,
        retries.contact_resends,
        tally.line(),
    );
    assert_eq!(repairs, 0, "the box had to pair again");
    if !(tally.lost.is_empty() && tally.dup.is_empty() && tally.unknowable == [0, 0]) {
        println!("QA logs kept: {}", Tally::keep_logs(&rig, "tally"));
    }
    tally.assert_exactly_once();
    rig.stop().await;
}
