//! Proves the fake's multi-device side against the REAL whatsapp-rust 0.7.0 client: a contact's
//! device list as usync serves it (with the signed key-index list the client requires), the ADV
//! identities of its linked devices (the client rejects a bundle whose identity does not verify
//! against the contact's account key), the `devices` notifications for a device linked or
//! unlinked later, and the owner's own other linked device writing in "message yourself".

use std::collections::HashMap;

use super::fake_whatsapp::{CONTACT, http_get, http_post, paired_client, text_of, wait_inbox};
use kit::fakes::whatsapp::{Addressing, FakeWhatsApp};
use whatsapp_rust::Jid;
use whatsapp_rust::types::events::{DeviceListUpdateType, Event};
use whatsapp_rust::wacore::iq::prekeys::PreKeyFetchSpec;
use whatsapp_rust::waproto::whatsapp as wa;

fn ids(devices: &[Jid]) -> Vec<u16> {
    let mut v: Vec<u16> = devices.iter().map(|j| j.device).collect();
    v.sort_unstable();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_devices_are_listed_signed_and_followed() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let user = CONTACT.trim_start_matches('+');
    let own = fake.phone_number().trim_start_matches('+');
    // Through the admin API, as a test in another language would.
    let (status, body) = http_post(
        &fake.admin_url(),
        &format!("/contacts/{CONTACT}/devices"),
        r#"{"count":3}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["devices"],
        serde_json::json!([0, 1, 2])
    );

    // usync: the client keeps every device (it drops a user whose companions come without a
    // signed key-index list), and its own account lists the phone and itself.
    let signal = client.client();
    let listed = signal
        .signal()
        .get_user_devices(&[Jid::pn(user)])
        .await
        .unwrap();
    assert_eq!(ids(&listed), vec![0, 1, 2], "{listed:?}");
    let mine = signal
        .signal()
        .get_user_devices(&[Jid::pn(own)])
        .await
        .unwrap();
    assert!(ids(&mine).contains(&0), "the phone: {mine:?}");

    // Key bundles: device 0's identity is the account key; each linked device's ADV identity
    // verifies against it, and against no other key.
    let all: Vec<Jid> = (0..3).map(|d| Jid::pn_device(user, d)).collect();
    let out = signal.execute(PreKeyFetchSpec::new(all)).await.unwrap();
    assert_eq!(out.bundles.len(), 3, "rejected: {:?}", out.rejected.len());
    let account: [u8; 32] = out.bundles[&Jid::pn_device(user, 0)]
        .identity_key()
        .unwrap()
        .public_key()
        .public_key_bytes()
        .try_into()
        .unwrap();
    let companions: Vec<Jid> = (1..3).map(|d| Jid::pn_device(user, d)).collect();
    let with = |key: [u8; 32]| -> HashMap<Jid, [u8; 32]> {
        companions.iter().map(|j| (j.clone(), key)).collect()
    };
    let out = signal
        .execute(PreKeyFetchSpec::new(companions.clone()).with_account_identities(with(account)))
        .await
        .unwrap();
    assert_eq!(out.bundles.len(), 2, "ADV identities verify");
    let mut wrong = account;
    wrong[0] ^= 0x55;
    let out = signal
        .execute(PreKeyFetchSpec::new(companions.clone()).with_account_identities(with(wrong)))
        .await
        .unwrap();
    assert!(
        out.bundles.is_empty(),
        "not against another account key: a forged identity would be rejected"
    );

    // A device linked later, then one unlinked: the server tells the client each time.
    fake.set_contact_devices(CONTACT, 4).await.unwrap();
    let added = client
        .wait_for("the device-add notification", |e| match e {
            // (The adds of devices 1 and 2 came earlier, before the client had a list.)
            Event::DeviceListUpdate(u)
                if u.update_type == DeviceListUpdateType::Add
                    && u.devices.iter().any(|d| d.device_id == 3) =>
            {
                Some(u.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(added.user.user, user);
    assert_eq!(added.devices.len(), 1);
    assert_eq!(added.devices[0].device_id, 3);
    assert!(
        added
            .key_index
            .as_ref()
            .is_some_and(|k| k.signed_bytes.is_some())
    );
    let listed = signal
        .signal()
        .get_user_devices(&[Jid::pn(user)])
        .await
        .unwrap();
    assert_eq!(ids(&listed), vec![0, 1, 2, 3], "followed: {listed:?}");

    fake.set_contact_devices(CONTACT, 3).await.unwrap();
    let removed = client
        .wait_for("the device-remove notification", |e| match e {
            Event::DeviceListUpdate(u) if u.update_type == DeviceListUpdateType::Remove => {
                Some(u.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(removed.devices[0].device_id, 3);
    let listed = signal
        .signal()
        .get_user_devices(&[Jid::pn(user)])
        .await
        .unwrap();
    assert_eq!(ids(&listed), vec![0, 1, 2], "followed: {listed:?}");

    // A message the client sends reaches every device and the owner's phone; the admin API says
    // which devices read it, beside the fields it always had.
    let msg = wa::Message {
        conversation: Some("to all of you".into()),
        ..Default::default()
    };
    signal.send_message(Jid::pn(user), msg).await.unwrap();
    wait_inbox(&fake, CONTACT, "to all of you").await;
    let deadline = tokio::time::Instant::now() + super::fake_whatsapp::WAIT;
    loop {
        let body = http_get(&fake.admin_url(), &format!("/contacts/{CONTACT}/messages")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let m = &v[0];
        if m["devices"] == serde_json::json!([0, 1, 2])
            && m["own_devices"] == serde_json::json!([0])
        {
            assert_eq!(m["text"], "to all of you", "{body}");
            assert!(
                m["seq"].is_u64() && m["id"].is_string() && m["ts"].is_u64(),
                "{body}"
            );
            assert_eq!(m["stale_devices"], serde_json::json!([]), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Bad requests are refused, not faked.
    assert!(fake.set_contact_devices(CONTACT, 0).await.is_err());
    assert!(fake.set_contact_devices(CONTACT, 6).await.is_err());
    assert!(
        fake.set_contact_devices(fake.phone_number(), 2)
            .await
            .is_err()
    );
    client.handle.shutdown().await;
}

/// The owner writes in "message yourself" from a linked Desktop (device 2 of the account): the
/// client is told of the new own device, reads the message as its own in its own chat, sent by
/// device 2, in PN and LID form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_desktop_writes_in_the_self_chat() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let own = fake.phone_number().trim_start_matches('+').to_string();
    for (text, addressing) in [("desk pn", Addressing::Pn), ("desk lid", Addressing::Lid)] {
        fake.self_send_from(text, addressing, 2).await.unwrap();
        let info = client
            .wait_for(text, |e| match e {
                Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                    text_of(&m.message)
                        .filter(|t| t == text)
                        .map(|_| m.info.clone())
                }),
                _ => None,
            })
            .await;
        assert!(info.source.is_from_me, "{info:?}");
        assert_eq!(
            info.source.sender.device, 2,
            "sent by the Desktop: {info:?}"
        );
        match addressing {
            Addressing::Pn => assert_eq!(
                info.source.chat.to_string(),
                format!("{own}@s.whatsapp.net")
            ),
            Addressing::Lid | Addressing::LidOnly => {
                assert_eq!(info.source.chat.server.to_string(), "lid", "{info:?}")
            }
        }
    }
    let mine = client
        .client()
        .signal()
        .get_user_devices(&[Jid::pn(own.as_str())])
        .await
        .unwrap();
    assert!(
        ids(&mine).contains(&2),
        "the Desktop is in the own list: {mine:?}"
    );
    assert!(
        fake.self_send_from("x", Addressing::Pn, 7).await.is_err(),
        "device 7 is the linked client itself"
    );
    client.handle.shutdown().await;
}
