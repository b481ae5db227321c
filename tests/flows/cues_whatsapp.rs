//! WhatsApp's conversation cues through the real daemon, against the fake server: read receipts
//! (blue ticks) for accepted messages only — none for a stranger's, none in the self chat, none
//! with `read_receipts = false` — a contact's 👍 on a reply noted as feedback for the next turn
//! (no turn, no reply, no receipt of its own), and the acknowledgement reaction on a slow turn,
//! taken off when the reply is ready, and none on a fast one.

use crate::whatsapp_flow::{Bx, FRIEND, replies, start_linked, stop, wait_reply};
use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi, last_user_message};
use fakes::whatsapp::{FakeWhatsApp, Reaction};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const STRANGER: &str = "+15550003333";
const FRIEND_DIGITS: &str = "15550002222";

/// A linked, running box with FRIEND allowed; `extra` is appended to the config (sections of its
/// own: `[router]`, `[agents.…]`), `whatsapp` to `[channels.whatsapp]`.
async fn running_box(fake: &FakeWhatsApp, whatsapp: &str, extra: &str) -> (Bx, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
         [channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\nallow_from = [\"{FRIEND}\"]\n{whatsapp}\n{extra}",
        dir.path().join("state").display(),
        fake.ws_url(),
        fake.version_url()
    );
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    let bx = Bx {
        dir,
        cfg: path,
        port,
    };
    start_linked(fake, bx).await
}

/// Waits until a read receipt covers message `id`.
async fn wait_receipt(fake: &FakeWhatsApp, id: &str) {
    let t = tokio::time::Instant::now();
    while !fake
        .read_receipts()
        .await
        .iter()
        .any(|r| r.ids.iter().any(|i| i == id))
    {
        assert!(
            t.elapsed() < SOON,
            "no read receipt for {id}: {:#?}",
            fake.read_receipts().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receipted(fake: &FakeWhatsApp, id: &str) -> bool {
    fake.read_receipts()
        .await
        .iter()
        .any(|r| r.ids.iter().any(|i| i == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_for_accepted_messages_only_and_a_thumbs_up_is_feedback_not_a_turn() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = running_box(&fake, "", "").await;

    let stranger = fake
        .contact_send(STRANGER, "let me in [x1]", None, None)
        .await
        .unwrap();
    metrics_showing(
        bx.port,
        &["clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"} 1"],
    )
    .await;
    let own = fake.phone_self_send("note to self [s1]").await.unwrap();
    let first = fake
        .contact_send(FRIEND, "hello there [r1]", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "[r1]").await;
    wait_receipt(&fake, &first).await;
    let r = fake
        .read_receipts()
        .await
        .into_iter()
        .find(|r| r.ids.contains(&first))
        .unwrap();
    assert_eq!(r.kind, "read", "{r:?}");
    assert!(
        r.to.starts_with(FRIEND_DIGITS),
        "to the friend's chat: {r:?}"
    );
    assert_eq!(r.participant, None, "a DM names no participant");

    // The friend likes the reply: noted for the next turn, no turn and no reply of its own.
    let reply_id = fake.contact_inbox(FRIEND).await[0].id.clone();
    let thumbs = fake.contact_react(FRIEND, &reply_id, "👍").await.unwrap();
    metrics_showing(bx.port, &["clawbox_feedback_total 1"]).await;

    let second = fake
        .contact_send(FRIEND, "and now [r2]", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "[r2]").await;
    wait_receipt(&fake, &second).await;
    let inbox = fake.contact_inbox(FRIEND).await;
    assert_eq!(inbox.len(), 2, "no reply to the 👍: {inbox:#?}");
    assert_eq!(
        inbox[1].text, "[feedback: 👍 on an earlier message]\nand now [r2]",
        "the echo agent shows what the next turn's text carried"
    );
    assert_eq!(replies(&fake, FRIEND, "[r1]").await, 1);
    let m = bx.metrics().await;
    // The self-chat note, [r1] and [r2]: three messages, three turns; none for the 👍.
    assert_eq!(
        metric(&m, "clawbox_messages_in_total{channel=\"whatsapp\"}"),
        3,
        "{m}"
    );
    assert_eq!(crate::whatsapp_flow::turns(&m), 3, "none for the 👍: {m}");

    assert!(
        !receipted(&fake, &stranger).await,
        "no receipt for a dropped message"
    );
    assert!(!receipted(&fake, &own).await, "no receipt in the self chat");
    assert!(
        !receipted(&fake, &thumbs).await,
        "no receipt for a reaction"
    );
    assert!(fake.contact_inbox(STRANGER).await.is_empty());
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_false_sends_none() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = running_box(&fake, "read_receipts = false", "").await;
    fake.contact_send(FRIEND, "quietly [q1]", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "[q1]").await;
    // A second turn after the first: anything the first would have sent has been sent.
    fake.contact_send(FRIEND, "again [q2]", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "[q2]").await;
    assert_eq!(fake.read_receipts().await, vec![]);
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_turn_gets_the_ack_reaction_taken_off_with_the_reply_a_fast_one_none() {
    let fake = FakeWhatsApp::start().await;
    // 100 ms per 4 characters: "ok" is there in ~0.3 s, the slow answer takes ~2.5 s.
    let ai = FakeOpenAi::start(FakeConfig {
        reply: Arc::new(|req| {
            if last_user_message(req).contains("slow") {
                "a considered answer that takes the agent quite a while to write".into()
            } else {
                "ok fast".into()
            }
        }),
        chunk_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let extra = format!(
        "[router]\nack_reaction_after_ms = 1000\n[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
        ai.base_url()
    );
    let (_bx, p) = running_box(&fake, "", &extra).await;

    fake.contact_send(FRIEND, "fast please", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "ok fast").await;
    // A reaction would have left before the reply (queued when the turn ended).
    assert_eq!(fake.reactions().await, vec![], "none on a fast reply");

    let slow = fake
        .contact_send(FRIEND, "slow please", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "considered").await;
    let want = vec![
        Reaction {
            contact: FRIEND_DIGITS.into(),
            target_id: slow.clone(),
            emoji: "👀".into(),
        },
        Reaction {
            contact: FRIEND_DIGITS.into(),
            target_id: slow,
            emoji: String::new(),
        },
    ];
    let t = tokio::time::Instant::now();
    while fake.reactions().await != want {
        assert!(
            t.elapsed() < SOON,
            "👀 then its removal expected: {:#?}",
            fake.reactions().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(p).await;
}

/// Edits and deletions of an accepted message are ignored (README, "Conversation cues"): the
/// answer already given stands; no turn, no reply, nothing accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_or_a_deletion_of_an_answered_message_is_ignored() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = running_box(&fake, "", "").await;
    let first = fake
        .contact_send(FRIEND, "original words [e1]", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "[e1]").await;
    fake.contact_edit(FRIEND, &first, "edited words [e2]")
        .await
        .unwrap();
    fake.contact_revoke(FRIEND, &first).await.unwrap();
    // A later message's reply: the box has taken in everything sent before it.
    fake.contact_send(FRIEND, "after the edit [e3]", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "[e3]").await;
    let inbox = fake.contact_inbox(FRIEND).await;
    assert_eq!(inbox.len(), 2, "{inbox:#?}");
    assert_eq!(replies(&fake, FRIEND, "[e2]").await, 0);
    let m = bx.metrics().await;
    assert_eq!(
        metric(&m, "clawbox_messages_in_total{channel=\"whatsapp\"}"),
        2,
        "{m}"
    );
    assert_eq!(crate::whatsapp_flow::turns(&m), 2, "{m}");
    stop(p).await;
}
