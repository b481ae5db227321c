//! Login failures through the real binary against the fake: WhatsApp answers the box's login
//! with `<failure reason=N>` (the fake's `login-failure` fault, or its version check), and each
//! code leads to what it must — 401/403 stop and say "pair again", a 402 ban is waited out and the
//! box resumes by itself, a 405 makes the box fetch the version document and reconnect with the
//! current version (or wait hours and say "update clawbox" when there is none newer), and every
//! other code backs off. Connection attempts are counted over a minute: no reconnect loop.

use super::whatsapp_flow::{Bx, FRIEND, linked_and_running, stop, wait_connected, wait_reply};
use kit::fakes;

use fakes::whatsapp::FakeWhatsApp;
use fakes::whatsapp::login::{DEFAULT_SERVED, WebVersion};
use std::time::Duration;
use tokio::time::Instant;

/// The window connection attempts are counted over.
const MINUTE: Duration = Duration::from_secs(60);
/// A refusal the fault keeps answering for the whole test.
const ALWAYS: u32 = 10_000;

/// The link drops (the fake closes it); the box's next login meets what the test set up.
async fn drop_link(fake: &FakeWhatsApp) {
    fake.fault("drop", None).await.unwrap();
}

/// Connection attempts from the box during `window` from now; `/healthz` is read all along and
/// must say `needle` by the end.
async fn attempts_during(fake: &FakeWhatsApp, bx: &Bx, window: Duration, needle: &str) -> u64 {
    let before = fake.connection_attempts().await;
    let t = Instant::now();
    let mut said = false;
    while t.elapsed() < window {
        said |= bx.health().await.contains(needle);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let h = bx.health().await;
    assert!(said && h.contains(needle), "/healthz: {h}");
    fake.connection_attempts().await - before
}

/// Every other refusal backs off on the refusal profile (10 s doubling): over a minute, the
/// first attempt plus two or three more — never a loop, never a stop.
async fn refused_backs_off(code: u16) {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    fake.login_failure(code, None, ALWAYS).await.unwrap();
    drop_link(&fake).await;
    let why = format!("reconnecting (WhatsApp refused the login: {code})");
    let n = attempts_during(&fake, &bx, MINUTE, &why).await;
    let h = bx.health().await;
    assert!(h.contains("degraded"), "{h}");
    println!("MEASURED attempts in a minute of {code}: {n}");
    assert!((3..=4).contains(&n), "{code}: {n} attempts in a minute");
    assert_eq!(fake.login_failures().await, n, "each attempt was refused");
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_bad_user_agent_backs_off() {
    refused_backs_off(409).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_411_multi_device_mismatch_backs_off() {
    refused_backs_off(411).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_service_unavailable_backs_off() {
    refused_backs_off(503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_code_backs_off() {
    refused_backs_off(499).await;
}

/// A logout at login (401) and a locked account (403) are as a logout by the phone: the state is
/// wiped, the status says "pair again", and nothing reconnects.
async fn logged_out_at_login(code: u16) {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    fake.login_failure(code, None, ALWAYS).await.unwrap();
    drop_link(&fake).await;
    let n = attempts_during(&fake, &bx, MINUTE, "pair again").await;
    let h = bx.health().await;
    assert!(h.contains("needs-owner"), "{h}");
    assert_eq!(n, 1, "{code}: one attempt, then it stops");
    assert_eq!(fake.login_failures().await, 1);
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_at_login_says_pair_again_and_stops() {
    logged_out_at_login(401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_locked_account_says_pair_again_and_stops() {
    logged_out_at_login(403).await;
}

/// A 402 temporary ban: the box waits it out (plus `retry::TEMP_BAN_SLACK`, 30 s) with the
/// ban's end on the status row, does not try before, then logs in by itself and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_ban_is_waited_out_and_the_box_resumes_by_itself() {
    const BAN_S: u64 = 20;
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    fake.login_failure(402, Some(BAN_S), 1).await.unwrap();
    let banned_at = Instant::now();
    drop_link(&fake).await;
    // Until the ban (and the slack) is over: the one refused attempt, nothing more.
    let n = attempts_during(
        &fake,
        &bx,
        Duration::from_secs(BAN_S + 20),
        &format!("UTC ({BAN_S} s) — clawbox reconnects by itself then"),
    )
    .await;
    let h = bx.health().await;
    assert!(h.contains("temporarily banned by WhatsApp until 20"), "{h}");
    assert!(h.contains("degraded"), "{h}");
    assert_eq!(n, 1, "no attempt during the ban");
    assert_eq!(fake.login_failures().await, 1);
    // Then it logs in again by itself.
    wait_connected(&fake, Duration::from_secs(40)).await;
    let took = banned_at.elapsed();
    println!(
        "MEASURED back after a {BAN_S} s ban: {} ms",
        took.as_millis()
    );
    assert!(took >= Duration::from_secs(BAN_S + 30), "{took:?}");
    fake.contact_send(FRIEND, "after-the-ban", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "after-the-ban").await;
    bx.wait_health("linked").await;
    stop(p).await;
}

/// 405 with a newer version required (and named by the version document): the box fetches the
/// document, reconnects at once offering the new version, logs in and answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_fetches_the_current_version_and_reconnects_with_it() {
    let newer: WebVersion = (DEFAULT_SERVED.0, DEFAULT_SERVED.1, DEFAULT_SERVED.2 + 1000);
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    // The box read its version from the fake's document when it started.
    assert_eq!(fake.offered_versions().await.last(), Some(&DEFAULT_SERVED));
    let before = fake.connection_attempts().await;
    fake.require_version(Some(newer), Some(newer)).await;
    drop_link(&fake).await;
    // wait_connected only sees a login: the old connection is gone once the drop closed it.
    let t = Instant::now();
    while fake.login_failures().await == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no 405 happened");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_connected(&fake, Duration::from_secs(10)).await;
    let offered = fake.offered_versions().await;
    assert_eq!(
        offered[offered.len() - 2..],
        [DEFAULT_SERVED, newer],
        "refused with the old version, then the new one: {offered:?}"
    );
    assert_eq!(fake.login_failures().await, 1);
    assert_eq!(fake.connection_attempts().await - before, 2);
    fake.contact_send(FRIEND, "newer-version", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "newer-version").await;
    bx.wait_health(&format!("linked {}", fake.phone_number()))
        .await;
    stop(p).await;
}

/// 405 while the document names nothing newer: the box says "update clawbox" and waits (30 min
/// and more) instead of trying again — one attempt in the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_that_persists_says_update_clawbox_and_does_not_retry_for_minutes() {
    let required: WebVersion = (DEFAULT_SERVED.0, DEFAULT_SERVED.1, DEFAULT_SERVED.2 + 1000);
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    fake.require_version(Some(required), Some(DEFAULT_SERVED))
        .await;
    drop_link(&fake).await;
    let n = attempts_during(&fake, &bx, MINUTE, "update clawbox").await;
    let h = bx.health().await;
    assert!(h.contains("needs-owner"), "{h}");
    assert!(h.contains("next try in"), "{h}");
    assert_eq!(n, 1, "one refused attempt, then a wait of minutes");
    assert_eq!(fake.login_failures().await, 1);
    assert!(
        fake.offered_versions()
            .await
            .iter()
            .all(|v| *v == DEFAULT_SERVED)
    );
    stop(p).await;
}
