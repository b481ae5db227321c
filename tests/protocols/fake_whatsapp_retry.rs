//! Proves the fake's retry, refusal and key-event stanzas against the REAL whatsapp-rust 0.7.0
//! client, driven through the admin API as a test would: the client parses each one as the real
//! server's (an undecryptable copy → its retry receipt → the resend decrypts; a nack → a
//! `ServerAck` carrying the code while `send_message` said Ok; prekeys low → an upload; an
//! identity notification → `IdentityChange`; a contact's retry receipt → a resend, same id; a
//! LID-only message in no session the client has → its retry receipt to the LID → the resend,
//! same id and form, decrypts).

use super::fake_whatsapp::{CONTACT, http_get, http_post, paired_client, text_of, wait_inbox};
use kit::fakes;

use std::time::Duration;

use fakes::whatsapp::{Addressing, FakeWhatsApp};
use whatsapp_rust::Jid;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::waproto::whatsapp as wa;

/// Bound for one step that needs no reconnect.
const STEP: Duration = Duration::from_secs(20);

/// `GET /retries` → one counter.
async fn stat(fake: &FakeWhatsApp, name: &str) -> u64 {
    let body = http_get(&fake.admin_url(), "/retries").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

async fn wait_stat(fake: &FakeWhatsApp, name: &str, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let n = stat(fake, name).await;
        if n >= at_least {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(t: &str) -> wa::Message {
    wa::Message {
        conversation: Some(t.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_reads_each_retry_and_key_stanza() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let admin = fake.admin_url();
    let contact = Jid::pn(CONTACT.trim_start_matches('+'));

    // Undecryptable first copy: the client dispatches UndecryptableMessage, asks with a retry
    // receipt, and the contact's resend (same id) arrives decrypted.
    let (status, body) = http_post(
        &admin,
        &format!("/contacts/{CONTACT}/messages"),
        r#"{"text":"damaged then fine","undecryptable":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id: String = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let undecryptable = client
        .wait_for("UndecryptableMessage", |e| match e {
            Event::UndecryptableMessage(u) => Some(u.info.id.clone()),
            _ => None,
        })
        .await;
    assert_eq!(undecryptable, id);
    let (got, got_id) = client
        .wait_for("the resend, decrypted", |e| match e {
            Event::Messages(batch) => batch
                .messages
                .iter()
                .find_map(|m| text_of(&m.message).map(|t| (t, m.info.id.clone()))),
            _ => None,
        })
        .await;
    assert_eq!(
        (got.as_str(), got_id.as_str()),
        ("damaged then fine", id.as_str())
    );
    assert_eq!(stat(&fake, "retry_receipts").await, 1);
    assert_eq!(stat(&fake, "contact_resends").await, 1);

    // A nack: send_message says Ok, the ServerAck carries the code.
    let (status, body) = http_post(&admin, "/faults", r#"{"kind":"nack","code":479}"#).await;
    assert_eq!(status, 200, "{body}");
    let sent = client
        .client()
        .send_message(contact.clone(), text("refused"))
        .await
        .expect("0.7.0 returns Ok before the server's answer");
    let (class, error) = client
        .wait_for("the error ack", |e| match e {
            Event::ServerAck(a) if a.id == sent.message_id => {
                Some((a.class.clone(), a.error.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(class.as_deref(), Some("message"));
    assert_eq!(error.as_deref(), Some("479"));
    assert_eq!(stat(&fake, "nacks").await, 1);

    // A contact's retry receipt: the client re-encrypts and resends with the same id.
    let (status, body) = http_post(&admin, "/faults", r#"{"kind":"retry-receipt"}"#).await;
    assert_eq!(status, 200, "{body}");
    let sent = client
        .client()
        .send_message(contact.clone(), text("asked again"))
        .await
        .unwrap();
    wait_inbox(&fake, CONTACT, "asked again").await;
    wait_stat(&fake, "client_resends", 1).await;
    let inbox = fake.contact_inbox(CONTACT).await;
    let copies: Vec<_> = inbox.iter().filter(|m| m.text == "asked again").collect();
    assert_eq!(copies.len(), 1, "{inbox:#?}");
    assert_eq!(copies[0].id, sent.message_id);
    assert!(
        inbox.iter().all(|m| m.text != "refused"),
        "a refused message is not delivered"
    );

    // Prekeys low: the client uploads.
    let uploads = stat(&fake, "prekey_uploads").await;
    let (status, body) = http_post(&admin, "/faults", r#"{"kind":"prekeys-low","count":2}"#).await;
    assert_eq!(status, 200, "{body}");
    wait_stat(&fake, "prekey_uploads", uploads + 1).await;

    // A reinstall: IdentityChange for the contact, then its pkmsg under the new identity reads.
    let (status, body) = http_post(
        &admin,
        "/faults",
        &format!(r#"{{"kind":"identity-change","contact":"{CONTACT}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let who = client
        .wait_for("IdentityChange", |e| match e {
            Event::IdentityChange(c) => Some(c.user.user.to_string()),
            _ => None,
        })
        .await;
    assert_eq!(who, CONTACT.trim_start_matches('+'));
    fake.contact_send(CONTACT, "new phone, same me", None, None)
        .await
        .unwrap();
    let got = client
        .wait_for("a message under the new identity", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| text_of(&m.message)),
            _ => None,
        })
        .await;
    assert_eq!(got, "new phone, same me");

    // Bad fault requests are refused.
    for bad in [
        r#"{"kind":"nack"}"#,
        r#"{"kind":"identity-change"}"#,
        r#"{"kind":"identity-change","contact":"+15550009999"}"#,
    ] {
        let (status, _) = http_post(&admin, "/faults", bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    client.handle.shutdown().await;
}

/// A contact the client holds a session with by number (both ways: the contact's device has read
/// the client's answer, so it writes plain `msg`s) writes from its LID alone, which the client
/// does not know (usync leaves it out): 0.7.0 finds no session under the LID, sends a retry
/// receipt to the LID (with its keys from the second one on), and the contact's resend — same
/// id, still from the LID alone, in a new session from those keys — decrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lid_only_message_the_client_cannot_decrypt_is_resent_in_the_same_form() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let (status, body) = http_post(
        &fake.admin_url(),
        "/faults",
        &format!(r#"{{"kind":"lid-unknown","contact":"{CONTACT}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lid = fake.contact_lid(CONTACT).await.unwrap();
    fake.contact_send_as(CONTACT, "by number", Addressing::Pn)
        .await
        .unwrap();
    let got = client
        .wait_for("the message by number", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| text_of(&m.message)),
            _ => None,
        })
        .await;
    assert_eq!(got, "by number");
    client
        .client()
        .send_message(Jid::pn(CONTACT.trim_start_matches('+')), text("answer"))
        .await
        .unwrap();
    wait_inbox(&fake, CONTACT, "answer").await;
    assert_eq!(stat(&fake, "retry_receipts").await, 0);

    let id = fake
        .contact_send_as(CONTACT, "from the lid alone", Addressing::LidOnly)
        .await
        .unwrap();
    let (got, got_id, sender, alt) = client
        .wait_for("the resend, decrypted", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                text_of(&m.message).map(|t| {
                    (
                        t,
                        m.info.id.clone(),
                        m.info.source.sender.to_string(),
                        m.info.source.sender_alt.as_ref().map(|j| j.to_string()),
                    )
                })
            }),
            _ => None,
        })
        .await;
    assert_eq!(
        (got.as_str(), got_id.as_str()),
        ("from the lid alone", id.as_str())
    );
    assert_eq!(sender, lid, "still from the LID");
    assert_eq!(alt, None, "still without the number");
    let receipts = stat(&fake, "retry_receipts").await;
    let resends = stat(&fake, "contact_resends").await;
    assert!(receipts >= 1, "retry receipts: {receipts}");
    assert_eq!(resends, receipts, "one resend per retry receipt");
    client.handle.shutdown().await;
}
