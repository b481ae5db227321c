//! WhatsApp's LID addressing through the real daemon against the fake server: one person writes
//! from their number, from their LID with the number as `sender_pn`, or from their LID alone,
//! and the allowlist recognises them in every form (each `allow_from` entry resolved by usync
//! after login); the reply goes back to their chat; a stranger in each form gets nothing and costs
//! no agent call; a LID in `allow_from` names the same person by number; a flood of unknown
//! LIDs costs WhatsApp a bounded number of lookups; and a friend writing from the LID alone before
//! the box knows it (undecryptable in the session held under the number) is answered once, after
//! the retry receipt and the friend's resend.

use super::whatsapp_flow::{
    Bx, FRIEND, linked_and_running, new_box, replies, start_linked, stop, turns, wait_reply,
};
use kit::{fakes, support};

use fakes::whatsapp::{Addressing, FakeWhatsApp};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// After the last message that should be dropped: time for a wrongly admitted one to be answered.
const QUIET_WATCH: Duration = Duration::from_secs(3);
/// Unknown-LID lookups the box may make at once (`channel::whatsapp::lid::LOOKUP_BURST`), plus one
/// for a refill if the test straddles a minute.
const LOOKUP_BOUND: u64 = 3 + 1;

/// `fake`'s JID form of a number: `<digits>@s.whatsapp.net`.
fn pn_jid(e164: &str) -> String {
    format!("{}@s.whatsapp.net", e164.trim_start_matches('+'))
}

/// A box whose `allow_from` is `allow` (numbers or LIDs), linked and running.
async fn box_allowing(fake: &FakeWhatsApp, allow: &[&str]) -> (Bx, Proc) {
    let bx = new_box(fake);
    let cfg = std::fs::read_to_string(&bx.cfg).unwrap();
    let list = allow
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = cfg.replace(
        &format!("allow_from = [\"{FRIEND}\"]"),
        &format!("allow_from = [{list}]"),
    );
    assert!(cfg.contains(&list), "{cfg}");
    std::fs::write(&bx.cfg, cfg).unwrap();
    start_linked(fake, bx).await
}

/// Until the box says it resolved `allow_from` after login (the mapping is in its store then).
async fn resolved(p: &Proc) {
    p.wait_stderr("allow_from resolved after login", |e| {
        e.iter().any(|l| l.contains("allow_from resolved"))
    })
    .await;
}

/// `who` sends `text` in `addressing`; the one reply comes back into their chat (their number's
/// or their LID's); returns the address it was sent to.
async fn one_reply_in_their_chat(
    fake: &FakeWhatsApp,
    who: &str,
    lid: &str,
    text: &str,
    addressing: Addressing,
) -> String {
    fake.contact_send_as(who, text, addressing).await.unwrap();
    wait_reply(fake, who, text).await;
    let got: Vec<_> = fake
        .contact_inbox(who)
        .await
        .into_iter()
        .filter(|m| m.text.contains(text))
        .collect();
    assert_eq!(got.len(), 1, "one reply to {addressing:?}: {got:#?}");
    assert!(
        got[0].to == pn_jid(who) || got[0].to == lid,
        "the reply to {addressing:?} went to {}, not {who}'s chat ({} or {lid})",
        got[0].to,
        pn_jid(who)
    );
    got[0].to.clone()
}

/// An allowlisted contact writing as LID-only, as LID with the number attribute, and from the
/// number gets exactly one reply each in their chat; the number was resolved to its LID by one
/// usync lookup after login, so the LID-only message needed no lookup of its own. A stranger in
/// each form gets nothing and costs no agent call; only the LID-only stranger costs a lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_is_answered_once_in_every_address_form_and_strangers_in_none() {
    let fake = FakeWhatsApp::start().await;
    let lid = fake.contact_lid(FRIEND).await.unwrap();
    let (bx, p) = linked_and_running(&fake).await;
    // allow_from resolved after login: the friend's number → LID, in one query.
    resolved(&p).await;
    let after_login = fake.usync_counts().await;
    assert_eq!(after_login.pn_to_lid, 1, "{after_login:?}");
    assert_eq!(after_login.iqs.get("lid"), Some(&1), "{after_login:?}");
    assert_eq!(after_login.lid_to_pn, 0, "{after_login:?}");

    let mut chats = Vec::new();
    for (text, form) in [
        ("lid only [l1]", Addressing::LidOnly),
        ("lid with number [l2]", Addressing::Lid),
        ("plain number [l3]", Addressing::Pn),
    ] {
        chats.push(one_reply_in_their_chat(&fake, FRIEND, &lid, text, form).await);
    }
    // A 1:1 chat on an account not yet migrated to LID chats is addressed by number (the client's
    // `resolve_dm_wire_jid`; a LID stanza from such an account is refused by WhatsApp with 400).
    assert_eq!(
        chats,
        vec![pn_jid(FRIEND); 3],
        "each reply in the friend's chat"
    );
    let c = fake.usync_counts().await;
    assert_eq!(
        c.lid_to_pn, 0,
        "the friend's LID was known from login: {c:?}"
    );

    // Strangers, one per form.
    let strangers = [
        ("+15550004441", Addressing::Pn),
        ("+15550004442", Addressing::Lid),
        ("+15550004443", Addressing::LidOnly),
    ];
    for (who, form) in strangers {
        fake.contact_send_as(who, &format!("let me in {who}"), form)
            .await
            .unwrap();
    }
    let m = metrics_showing(
        bx.port,
        &["clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"} 3"],
    )
    .await;
    tokio::time::sleep(QUIET_WATCH).await;
    for (who, _) in strangers {
        assert!(fake.contact_inbox(who).await.is_empty(), "nothing to {who}");
    }
    let m2 = bx.metrics().await;
    assert_eq!(
        turns(&m2),
        3,
        "one agent call per friend message only: {m2}"
    );
    assert_eq!(turns(&m), 3, "{m}");
    assert_eq!(
        metric(&m2, "clawbox_messages_in_total{channel=\"whatsapp\"}"),
        3,
        "{m2}"
    );
    assert_eq!(
        metric(
            &m2,
            "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"}"
        ),
        3,
        "{m2}"
    );
    // The LID-only stranger was looked up once (the others carried their number).
    let c = fake.usync_counts().await;
    assert_eq!(c.lid_to_pn, 1, "{c:?}");
    for (text, _) in [("lid only [l1]", ()), ("plain number [l3]", ())] {
        assert_eq!(replies(&fake, FRIEND, text).await, 1, "still one: {text}");
    }
    stop(p).await;
}

/// `allow_from` names the contact by LID; the contact writing from the number (the library maps
/// it to the LID resolved at login) and from the LID alone is answered once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_in_allow_from_lets_the_person_in_by_number_and_by_lid() {
    let fake = FakeWhatsApp::start().await;
    let who = "+15550005555";
    let lid = fake.contact_lid(who).await.unwrap();
    let (bx, p) = box_allowing(&fake, &[&lid]).await;
    resolved(&p).await;
    assert_eq!(
        fake.usync_counts().await.lid_to_pn,
        1,
        "the LID → number lookup"
    );
    one_reply_in_their_chat(&fake, who, &lid, "by number [n1]", Addressing::Pn).await;
    one_reply_in_their_chat(&fake, who, &lid, "by lid [n2]", Addressing::LidOnly).await;
    // And a stranger by number is still nobody.
    fake.contact_send_as("+15550006666", "hello?", Addressing::Pn)
        .await
        .unwrap();
    metrics_showing(
        bx.port,
        &["clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"} 1"],
    )
    .await;
    let m = bx.metrics().await;
    assert_eq!(turns(&m), 2, "{m}");
    stop(p).await;
}

/// Fifty strangers writing from LIDs nobody knows: each is dropped, none reaches the agent, and
/// WhatsApp is asked about a bounded few of them (a small token bucket), not fifty. An allowlisted
/// friend writing LID-only right after is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_lids_does_not_flood_usync() {
    let fake = FakeWhatsApp::start().await;
    let lid = fake.contact_lid(FRIEND).await.unwrap();
    let (bx, p) = linked_and_running(&fake).await;
    resolved(&p).await;
    let before = fake.usync_counts().await;
    let t0 = Instant::now();
    for i in 0..50 {
        let who = format!("+1555007{i:04}");
        fake.contact_send_as(&who, "spam", Addressing::LidOnly)
            .await
            .unwrap();
    }
    let m = metrics_showing(
        bx.port,
        &["clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"} 50"],
    )
    .await;
    assert_eq!(turns(&m), 0, "{m}");
    let c = fake.usync_counts().await;
    let lookups = c.lid_to_pn - before.lid_to_pn;
    assert!(
        (1..=LOOKUP_BOUND).contains(&lookups),
        "{lookups} LID lookups for 50 unknown LIDs in {:?}: {c:?}",
        t0.elapsed()
    );
    one_reply_in_their_chat(
        &fake,
        FRIEND,
        &lid,
        "after the flood [f1]",
        Addressing::LidOnly,
    )
    .await;
    for i in 0..50 {
        let who = format!("+1555007{i:04}");
        assert!(
            fake.contact_inbox(&who).await.is_empty(),
            "nothing to {who}"
        );
    }
    stop(p).await;
}

/// The box holds a session with a friend by number and does not know the friend's LID (usync
/// leaves it out: the state before the box learned it); the friend then writes from the LID
/// alone. The box cannot decrypt that in a session it holds under the number, asks with a retry
/// receipt, and the friend's resend (in a new session from the receipt's keys) is answered once,
/// in the friend's chat, after one LID → number lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_only_message_before_the_box_knows_the_lid_is_answered_once_after_a_resend() {
    let fake = FakeWhatsApp::start().await;
    fake.fault_with("lid-unknown", None, None, Some(FRIEND))
        .await
        .unwrap();
    let lid = fake.contact_lid(FRIEND).await.unwrap();
    let (bx, p) = linked_and_running(&fake).await;
    resolved(&p).await;
    // The session by number: the friend writes from it and is answered.
    one_reply_in_their_chat(&fake, FRIEND, &lid, "by number [u1]", Addressing::Pn).await;
    let before = fake.retry_stats().await;
    assert_eq!(fake.usync_counts().await.lid_to_pn, 0, "no LID seen yet");

    one_reply_in_their_chat(&fake, FRIEND, &lid, "lid alone [u2]", Addressing::LidOnly).await;
    let after = fake.retry_stats().await;
    assert!(
        after.retry_receipts > before.retry_receipts
            && after.contact_resends > before.contact_resends,
        "the LID-only message came through the contact's resend: {before:?} → {after:?}"
    );
    let c = fake.usync_counts().await;
    assert_eq!(c.lid_to_pn, 1, "the unknown LID was looked up once: {c:?}");
    tokio::time::sleep(QUIET_WATCH).await;
    for text in ["by number [u1]", "lid alone [u2]"] {
        assert_eq!(replies(&fake, FRIEND, text).await, 1, "still one: {text}");
    }
    let m = bx.metrics().await;
    assert_eq!(turns(&m), 2, "one agent call per message: {m}");
    stop(p).await;
}
