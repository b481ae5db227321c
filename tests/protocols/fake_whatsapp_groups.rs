//! Proves the fake's groups against the REAL whatsapp-rust 0.7.0 client: members' messages with
//! sender keys (the distribution message pairwise the first time, then skmsg alone), mentions
//! and a quote in `contextInfo`, the push name; the group's metadata and the groups the account
//! is in (`w:g2`); the client's own send to the group, decrypted by every member's devices with
//! the group cipher; members added and removed (`w:gp2`), after which a removed member can no
//! longer read what the client sends (the client rotated its sender key). Driven through the
//! admin API, as a test in another language would.

use std::time::Duration;

use super::fake_whatsapp::{WAIT, http_get, http_post, paired_client, text_of};
use kit::fakes::whatsapp::FakeWhatsApp;
use whatsapp_rust::Jid;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::stanza::groups::GroupNotificationAction;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::waproto::whatsapp as wa;

const ALICE: &str = "+15550000001";
const BOB: &str = "+15550000002";
const CAROL: &str = "+15550000003";
const DAVE: &str = "+15550000004";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn post_ok(fake: &FakeWhatsApp, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, out) = http_post(&fake.admin_url(), path, &body.to_string()).await;
    assert_eq!(status, 200, "{path}: {out}");
    json(&out)
}

/// Polls `GET /groups/<jid>/messages` until the message with `text` was read by exactly
/// `readers` (each on its phone, device 0); returns that entry.
async fn wait_read(
    fake: &FakeWhatsApp,
    gid: &str,
    text: &str,
    readers: &[&str],
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = http_get(&fake.admin_url(), &format!("/groups/{gid}/messages")).await;
        let all = json(&body);
        if let Some(m) = all
            .as_array()
            .and_then(|a| a.iter().find(|m| m["text"] == text))
        {
            let read: Vec<String> = m["read_by"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let mut want: Vec<String> = readers.iter().map(|r| r.to_string()).collect();
            want.sort();
            if read == want {
                for r in readers {
                    assert_eq!(m["read_by"][r]["0"], text, "{body}");
                }
                return m.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{text:?} never read by exactly {readers:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_group_message(
    client: &mut super::fake_whatsapp::TestClient,
    text: &str,
) -> (wa::Message, MessageInfo) {
    client
        .wait_for(text, |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                (text_of(&m.message).as_deref() == Some(text))
                    .then(|| ((*m.message).clone(), (*m.info).clone()))
            }),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_both_ways_with_sender_keys() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let own = fake.phone_number().trim_start_matches('+').to_string();
    let created = post_ok(
        &fake,
        "/groups",
        serde_json::json!({"subject": "Family", "members": [ALICE, BOB, CAROL]}),
    )
    .await;
    let gid = created["jid"].as_str().unwrap().to_string();
    assert!(gid.ends_with("@g.us"), "{created}");
    let group: Jid = gid.parse().unwrap();

    // A member's first message: SKDM pairwise + skmsg; the client reads it as a group message.
    let first = post_ok(
        &fake,
        &format!("/groups/{gid}/messages"),
        serde_json::json!({"from": ALICE, "text": "hello all", "name": "Alice"}),
    )
    .await;
    let (_, info) = next_group_message(&mut client, "hello all").await;
    assert!(info.source.is_group, "{info:?}");
    assert_eq!(info.source.chat, group);
    assert_eq!(info.source.sender.user, ALICE.trim_start_matches('+'));
    assert_eq!(info.push_name, "Alice");
    assert_eq!(info.id, first["id"].as_str().unwrap());
    assert!(
        info.source.sender_alt.as_ref().is_some_and(|j| j.is_lid()),
        "participant_lid read as the sender's other form: {info:?}"
    );

    // Bob mentions the account and quotes Alice.
    let asked = post_ok(
        &fake,
        &format!("/groups/{gid}/messages"),
        serde_json::json!({"from": BOB, "text": "@bot what do you think?",
            "mentions": ["self", CAROL], "quote": first["id"]}),
    )
    .await;
    let (msg, info) = next_group_message(&mut client, "@bot what do you think?").await;
    assert_eq!(info.source.sender.user, BOB.trim_start_matches('+'));
    let ctx = msg
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .expect("contextInfo");
    assert_eq!(
        ctx.mentioned_jid,
        vec![
            format!("{own}@s.whatsapp.net"),
            format!("{}@s.whatsapp.net", CAROL.trim_start_matches('+'))
        ]
    );
    assert_eq!(ctx.stanza_id.as_deref(), first["id"].as_str());
    assert_eq!(
        ctx.participant.as_deref(),
        Some(format!("{}@s.whatsapp.net", ALICE.trim_start_matches('+')).as_str())
    );
    assert_eq!(
        ctx.quoted_message
            .as_option()
            .and_then(|q| q.conversation.clone())
            .as_deref(),
        Some("hello all")
    );

    // Alice again: skmsg alone (her key is distributed), still decrypted.
    post_ok(
        &fake,
        &format!("/groups/{gid}/messages"),
        serde_json::json!({"from": ALICE, "text": "second one"}),
    )
    .await;
    next_group_message(&mut client, "second one").await;

    // Metadata and the groups the account is in.
    let signal = client.client();
    let info = signal.groups().query_info(&group).await.unwrap();
    assert_eq!(info.participants.len(), 4, "three members and the account");
    let mine = signal.groups().get_participating().await.unwrap();
    assert_eq!(mine.get(&group).map(|m| m.subject.as_str()), Some("Family"));

    // The client writes to the group, quoting Bob: every member's phone decrypts it.
    let reply = wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some("I think so".into()),
            context_info: MessageField::some(wa::ContextInfo {
                stanza_id: asked["id"].as_str().map(str::to_string),
                participant: Some(format!("{}@s.whatsapp.net", BOB.trim_start_matches('+'))),
                quoted_message: MessageField::some(wa::Message {
                    conversation: Some("@bot what do you think?".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Alice also reads on a linked device (a Desktop): it gets its own copy of the sender key.
    fake.set_contact_devices(ALICE, 2).await.unwrap();
    signal.send_message(group.clone(), reply).await.unwrap();
    let read = wait_read(&fake, &gid, "I think so", &[ALICE, BOB, CAROL]).await;
    assert_eq!(
        read["read_by"][ALICE]["1"], "I think so",
        "every device: {read}"
    );
    assert_eq!(
        read["quoted_participant"],
        format!("{}@s.whatsapp.net", BOB.trim_start_matches('+'))
    );
    assert_eq!(read["quoted_id"], asked["id"], "{read}");

    // Carol leaves, Dave joins: the client is told of each.
    post_ok(
        &fake,
        &format!("/groups/{gid}/members"),
        serde_json::json!({"add": [DAVE], "remove": [CAROL]}),
    )
    .await;
    let mut saw = (false, false);
    while saw != (true, true) {
        let action = client
            .wait_for("a w:gp2 add or remove", |e| match e {
                Event::GroupUpdate(u) if u.group_jid == group => Some(u.action.clone()),
                _ => None,
            })
            .await;
        match action {
            GroupNotificationAction::Add { participants, .. } => {
                assert_eq!(participants[0].jid.user, DAVE.trim_start_matches('+'));
                saw.0 = true;
            }
            GroupNotificationAction::Remove { participants, .. } => {
                assert_eq!(participants[0].jid.user, CAROL.trim_start_matches('+'));
                saw.1 = true;
            }
            _ => {}
        }
    }
    // The next send reaches Dave and not Carol, whose copy of the old key no longer fits.
    let text = wa::Message {
        conversation: Some("welcome Dave".into()),
        ..Default::default()
    };
    signal.send_message(group.clone(), text).await.unwrap();
    wait_read(&fake, &gid, "welcome Dave", &[ALICE, BOB, DAVE]).await;

    // Bad requests are refused.
    let (status, _) = http_post(
        &fake.admin_url(),
        &format!("/groups/{gid}/messages"),
        &serde_json::json!({"from": CAROL, "text": "I left"}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "a non-member cannot write");
    let (status, _) = http_post(
        &fake.admin_url(),
        "/groups/120363000000000000@g.us/messages",
        &serde_json::json!({"from": ALICE, "text": "x"}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "no such group");
    let listed = json(&http_get(&fake.admin_url(), "/groups").await);
    assert_eq!(listed[0]["jid"], gid);
    client.handle.shutdown().await;
}

/// A LID-addressed group (WhatsApp's default today): participants are LIDs with their number
/// beside (`participant_pn`), a mention of the account names its LID, and the client's send is
/// addressed to the members' LIDs — each still decrypts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_group_names_everyone_by_lid() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let created = post_ok(
        &fake,
        "/groups",
        serde_json::json!({"subject": "Team", "members": [ALICE, BOB], "addressing": "lid"}),
    )
    .await;
    let gid = created["jid"].as_str().unwrap().to_string();
    let group: Jid = gid.parse().unwrap();
    let alice_lid =
        json(&http_get(&fake.admin_url(), &format!("/contacts/{ALICE}/lid")).await)["lid"]
            .as_str()
            .unwrap()
            .to_string();
    let own_lid = client
        .client()
        .lid()
        .map(|j| format!("{}@lid", j.user))
        .expect("the client knows its LID after login");
    post_ok(
        &fake,
        &format!("/groups/{gid}/messages"),
        serde_json::json!({"from": ALICE, "text": "lid hello", "mentions": ["self"]}),
    )
    .await;
    let (msg, info) = next_group_message(&mut client, "lid hello").await;
    assert_eq!(info.source.chat, group);
    assert_eq!(info.source.sender.to_string(), alice_lid, "{info:?}");
    assert_eq!(
        info.source.sender_alt.as_ref().map(|j| j.user.to_string()),
        Some(ALICE.trim_start_matches('+').to_string()),
        "participant_pn: {info:?}"
    );
    let mentioned = msg
        .extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .map(|c| c.mentioned_jid.clone())
        .unwrap_or_default();
    assert_eq!(mentioned, vec![own_lid], "our LID");

    let signal = client.client();
    let text = wa::Message {
        conversation: Some("hi team".into()),
        ..Default::default()
    };
    signal.send_message(group, text).await.unwrap();
    wait_read(&fake, &gid, "hi team", &[ALICE, BOB]).await;
    client.handle.shutdown().await;
}
