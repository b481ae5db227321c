//! WhatsApp's retries, refusals and key events through the real daemon against the fake server:
//! a contact's message that fails to decrypt is asked for again and answered once; a contact's
//! retry receipt gets the reply re-encrypted and resent once; each refusal code (nack) of a
//! reply leads to a resend or to a reply given up with a line for the owner, never to a lost or
//! doubled reply or a reconnect; the server saying prekeys run low gets an upload; a contact who
//! reinstalled WhatsApp is answered under the new identity. Every test also counts the
//! connections the box opened: none of this may cost a reconnect.

use super::whatsapp_flow::{FRIEND, linked_and_running, replies, stop, turns, wait_reply};
use kit::{fakes, support};

use fakes::whatsapp::{FakeWhatsApp, RetryStats};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// After the last expected reply: long enough for a doubled reply or another retry to show up
/// (the box retries a refused send within 1–8 s; the fake answers at once).
const QUIET: Duration = Duration::from_secs(4);

/// The fake's retry counters once `pred` holds for them (polled until [`SOON`]).
async fn wait_stats(
    fake: &FakeWhatsApp,
    what: &str,
    pred: impl Fn(&RetryStats) -> bool,
) -> RetryStats {
    let t = Instant::now();
    loop {
        let s = fake.retry_stats().await;
        if pred(&s) {
            return s;
        }
        assert!(t.elapsed() < SOON, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Over [`QUIET`], the contact never holds more than `n` replies mentioning `word`; returns the
/// count at the end.
async fn stays_at_most(fake: &FakeWhatsApp, word: &str, n: usize) -> usize {
    let t = Instant::now();
    loop {
        let got = replies(fake, FRIEND, word).await;
        assert!(
            got <= n,
            "{got} replies mentioning {word}: {:#?}",
            fake.contact_inbox(FRIEND).await
        );
        if t.elapsed() >= QUIET {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A first exchange, so the box and the contact have Signal sessions both ways.
async fn warm_up(fake: &FakeWhatsApp) {
    fake.contact_send(FRIEND, "warm-up", None, None)
        .await
        .unwrap();
    wait_reply(fake, FRIEND, "warm-up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_message_is_asked_for_again_and_answered_once() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;

    // The contact's very first message (a pkmsg) arrives damaged.
    fake.contact_send_undecryptable(FRIEND, "garbled-first")
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "garbled-first").await;
    let s = fake.retry_stats().await;
    assert!(s.retry_receipts >= 1 && s.contact_resends >= 1, "{s:?}");

    // And a later one, inside the established session (a msg).
    fake.contact_send_undecryptable(FRIEND, "garbled-later")
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "garbled-later").await;
    let s2 = fake.retry_stats().await;
    assert!(s2.retry_receipts > s.retry_receipts, "{s2:?}");
    assert!(s2.contact_resends > s.contact_resends, "{s2:?}");

    assert_eq!(stays_at_most(&fake, "garbled-first", 1).await, 1);
    assert_eq!(stays_at_most(&fake, "garbled-later", 1).await, 1);
    let m = bx.metrics().await;
    assert_eq!(turns(&m), 2, "one turn per message: {m}");
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}

/// The retry bound: whatsapp-rust 0.7.0 (like WA Web and whatsmeow) asks at most 5 times for
/// one message; the box neither answers nor loops, and the chat carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_decrypts_is_asked_for_at_most_five_times_and_not_answered() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;
    warm_up(&fake).await;

    fake.contact_send_never_decryptable(FRIEND, "never-readable")
        .await
        .unwrap();
    // Receipts from the second on carry the device's keys: the contact starts new sessions from
    // them and the resends still fail.
    let s = wait_stats(&fake, "five retry receipts, five resends", |s| {
        s.retry_receipts == 5 && s.contact_resends == 5
    })
    .await;
    p.wait_stderr("the failure is logged", |e| {
        e.iter().any(|l| l.contains("could not be decrypted"))
    })
    .await;
    assert_eq!(stays_at_most(&fake, "never-readable", 0).await, 0);
    assert_eq!(fake.retry_stats().await, s, "no sixth receipt");

    fake.contact_send(FRIEND, "still-talking", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "still-talking").await;
    let m = bx.metrics().await;
    assert_eq!(turns(&m), 2, "warm-up and still-talking only: {m}");
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_retry_receipt_gets_the_reply_resent_once_with_the_same_id() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;
    warm_up(&fake).await;

    fake.fault_with("retry-receipt", None, None, None)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "resend-me", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "resend-me").await;
    let s = wait_stats(&fake, "the box re-encrypted and resent", |s| {
        s.asked_resends == 1 && s.client_resends >= 1
    })
    .await;
    assert_eq!(s.asked_resends, 1, "{s:?}");
    assert_eq!(stays_at_most(&fake, "resend-me", 1).await, 1);
    // The copy the contact read is the resend of the original message: the same id, once.
    let inbox = fake.contact_inbox(FRIEND).await;
    let got: Vec<_> = inbox
        .iter()
        .filter(|m| m.text.contains("resend-me"))
        .collect();
    assert_eq!(got.len(), 1, "{inbox:#?}");
    assert!(
        got[0].id.starts_with("3EB0"),
        "the box's own id: {:?}",
        got[0].id
    );
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}

/// Each refusal code on a reply: the retryable ones (transient, stale state, restriction) get
/// the reply through exactly once on a later try; a rejected one gives the reply up with a line
/// for the owner and sends nothing; the chat carries on; no code costs a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_code_resends_once_or_gives_up_with_a_line_and_never_reconnects() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;
    warm_up(&fake).await;

    for (code, word) in [
        (500u16, "nack-500"),
        (421, "nack-421"),
        (479, "nack-479"),
        (463, "nack-463"),
    ] {
        let before = fake.retry_stats().await.nacks;
        fake.fault_with("nack", Some(code), None, None)
            .await
            .unwrap();
        fake.contact_send(FRIEND, word, None, None).await.unwrap();
        wait_reply(&fake, FRIEND, word).await;
        assert_eq!(
            fake.retry_stats().await.nacks,
            before + 1,
            "{code} refused once"
        );
        assert_eq!(
            stays_at_most(&fake, word, 1).await,
            1,
            "{code}: exactly one reply"
        );
    }
    // The stale-state codes (421, 479) rebuilt the chat's sessions before the resend.
    let rebuilt = p
        .stderr()
        .iter()
        .filter(|l| l.contains("sessions are rebuilt"))
        .count();
    assert_eq!(rebuilt, 2, "{:#?}", p.stderr());

    // Rejected: given up at once, the owner told, nothing sent.
    let before = fake.retry_stats().await.nacks;
    fake.fault_with("nack", Some(400), None, None)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "nack-400", None, None)
        .await
        .unwrap();
    p.wait_stderr("the owner is told", |e| {
        e.iter()
            .any(|l| l.contains("error 400") && l.contains("given up"))
    })
    .await;
    let h = bx.health().await;
    assert!(
        h.contains("a reply was given up") && h.contains("error 400"),
        "{h}"
    );
    assert_eq!(stays_at_most(&fake, "nack-400", 0).await, 0);
    assert_eq!(
        fake.retry_stats().await.nacks,
        before + 1,
        "400 is not retried"
    );

    // A refusal that keeps coming: bounded tries, then given up with a line, no loop.
    let before = fake.retry_stats().await.nacks;
    fake.fault_with("nack", Some(503), Some(50), None)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "nack-forever", None, None)
        .await
        .unwrap();
    p.wait_stderr("the owner is told", |e| {
        e.iter()
            .any(|l| l.contains("error 503") && l.contains("giving up"))
    })
    .await;
    let s = fake.retry_stats().await;
    assert_eq!(stays_at_most(&fake, "nack-forever", 0).await, 0);
    assert_eq!(
        fake.retry_stats().await.nacks,
        s.nacks,
        "no try after giving up"
    );
    assert_eq!(s.nacks - before, 4, "bounded tries: {s:?}");
    // Clear what is left of the fault; the chat still works.
    fake.fault_with("nack", Some(503), Some(0), None)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "after-refusals", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "after-refusals").await;

    let m = bx.metrics().await;
    assert_eq!(turns(&m), 8, "one turn per message: {m}");
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekeys_running_low_get_an_upload() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;
    // The uploads at login are done before the box counts as connected here.
    let before = wait_stats(&fake, "the login upload", |s| s.prekey_uploads >= 1)
        .await
        .prekey_uploads;
    fake.fault_with("prekeys-low", None, Some(3), None)
        .await
        .unwrap();
    wait_stats(&fake, "an upload after prekeys-low", |s| {
        s.prekey_uploads > before
    })
    .await;
    // The refilled pool serves a new contact's first message.
    warm_up(&fake).await;
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_who_reinstalled_is_answered_under_the_new_identity() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;
    warm_up(&fake).await;

    fake.fault_with("identity-change", None, None, Some(FRIEND))
        .await
        .unwrap();
    p.wait_stderr("the identity change is logged", |e| {
        e.iter().any(|l| l.contains("security code changed"))
    })
    .await;
    fake.contact_send(FRIEND, "after-reinstall", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "after-reinstall").await;
    assert_eq!(stays_at_most(&fake, "after-reinstall", 1).await, 1);
    let line = p
        .stderr()
        .into_iter()
        .find(|l| l.contains("security code changed"))
        .unwrap();
    assert!(
        !line.contains(FRIEND.trim_start_matches('+')),
        "no number in the line: {line}"
    );
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}

/// A stale-state refusal rebuilds the chat's sessions, and the server then has no key bundle for
/// the contact (twice: the library asks again within the send). 0.7.0 then sends the message to
/// the account's own phone only, the server acks it and `send` returns Ok (whatsapp-rust #1298):
/// the contact got nothing. The box's check that a recipient device has a session catches it
/// (`nack::UNREACHED`), sends again with fresh keys, and the contact gets the reply once. The
/// fake counts the copy that went out without the contact's (`unreached_sends`): exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_bundle_after_a_stale_refusal_still_gets_one_reply() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = linked_and_running(&fake).await;
    let attempts = fake.connection_attempts().await;
    warm_up(&fake).await;

    fake.fault_with("nack", Some(421), None, None)
        .await
        .unwrap();
    fake.fault_with("no-bundle", None, Some(2), Some(FRIEND))
        .await
        .unwrap();
    fake.contact_send(FRIEND, "reach-me", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "reach-me").await;
    let s = fake.retry_stats().await;
    assert_eq!((s.nacks, s.refused_bundles), (1, 2), "{s:?}");
    assert_eq!(
        s.unreached_sends, 1,
        "one send reached only the owner's phone (#1298), and the box sent it again: {s:?}"
    );
    assert_eq!(stays_at_most(&fake, "reach-me", 1).await, 1);
    assert_eq!(fake.connection_attempts().await, attempts, "no reconnect");
    stop(p).await;
}
