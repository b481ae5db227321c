//! Multi-device WhatsApp through the real daemon, against the fake server: a contact with several
//! devices gets every reply on each of them (and the owner's phone keeps its copy), a device the
//! contact links later gets the later replies (the server's `devices` notification is followed),
//! and the owner writing in "message yourself" — from the phone in phone-number and LID form, and
//! from another of the account's own linked devices — gets exactly one prefixed answer there,
//! never an answer to an answer, in the default configuration.

use kit::{fakes, support};

use super::whatsapp_flow::{
    Bx, ECHO_WATCH, FRIEND, linked_and_running, replies, stop, turns, wait_disconnected,
    wait_self_messages,
};
use fakes::whatsapp::{Addressing, Delivery, FakeWhatsApp};
use std::time::Duration;
use support::*;
use tokio::time::Instant;

/// Until the box has acknowledged every device notification (it acks each after handling it).
async fn wait_devices_taken_in(fake: &FakeWhatsApp) {
    let t = Instant::now();
    while fake.device_notifications_unacked().await > 0 {
        assert!(
            t.elapsed() < SOON,
            "the box acknowledges the device notifications"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A linked, running box that has also looked up its allow_from's LIDs. The box does that right
/// after login; once it knows the friend's LID the library keys the friend's sessions and device
/// list under it, and asks the server for the list again under that key. Waiting for the lookup
/// makes every test take one path: otherwise a reply before the lookup and one after it read
/// two different device lists (the CI run at 23b30fb saw a reply reach a device the box was
/// never told of, through that second fetch). The fake having answered the lookup is not enough:
/// the library stores the mapping after reading the answer (the CI run at 52e2d9c saw a reply
/// sent in between), so this waits for the box's own line saying the lookup is done and stored
/// (`known=1`, or `known=0` under the `lid-unknown` fault).
async fn linked_and_resolved(fake: &FakeWhatsApp) -> (Bx, Proc) {
    let up = linked_and_running(fake).await;
    up.1.wait_stderr("the box resolves allow_from after login", |e| {
        e.iter()
            .any(|l| l.contains("allow_from resolved to both address forms"))
    })
    .await;
    assert!(fake.usync_counts().await.pn_to_lid > 0);
    up
}

/// The replies mentioning `word` that reached FRIEND, once every one of them has been read by
/// all of `devices` (the contact's) and by the owner's phone; fails after `SOON` with what did.
async fn wait_read_by(fake: &FakeWhatsApp, word: &str, devices: &[u16]) -> Vec<Delivery> {
    let t = Instant::now();
    loop {
        let got: Vec<Delivery> = fake
            .contact_deliveries(FRIEND)
            .await
            .into_iter()
            .filter(|d| d.entry.text.contains(word))
            .collect();
        if !got.is_empty()
            && got.iter().all(|d| {
                d.devices == devices && d.own_devices.contains(&0) && d.stale_devices.is_empty()
            })
        {
            return got;
        }
        assert!(
            t.elapsed() < SOON,
            "a reply mentioning {word} read by devices {devices:?} and the owner's phone: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A contact with three devices (phone and two linked) writes twice: each reply is encrypted to
/// all three and the owner's phone gets its copy; answered once each. Then the contact links a
/// fourth device: the server tells the box, and the next reply reaches all four; after two are
/// unlinked, the next reaches the two left and no copy goes to a device that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_with_three_devices_gets_each_reply_on_all_and_a_new_device_gets_later_ones() {
    let fake = FakeWhatsApp::start().await;
    assert_eq!(
        fake.set_contact_devices(FRIEND, 3).await.unwrap(),
        vec![0, 1, 2]
    );
    let (bx, p) = linked_and_resolved(&fake).await;

    fake.contact_send(FRIEND, "hello [d1]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[d1]", &[0, 1, 2]).await;
    // The second reply rides the sessions the first one opened (`msg`, not `pkmsg`).
    fake.contact_send(FRIEND, "again [d2]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[d2]", &[0, 1, 2]).await;

    // The box has the contact's list cached now; the contact links another device.
    assert_eq!(
        fake.set_contact_devices(FRIEND, 4).await.unwrap(),
        vec![0, 1, 2, 3]
    );
    wait_devices_taken_in(&fake).await;
    fake.contact_send(FRIEND, "from my tablet too [d3]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[d3]", &[0, 1, 2, 3]).await;
    // So far every list the box used was the server's: its acks' device hashes agreed.
    let mismatches: Vec<String> = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains("Phash mismatch"))
        .collect();
    assert!(mismatches.is_empty(), "{mismatches:#?}");

    // Two devices unlinked: the next reply goes to the two left, none to a device gone. (The
    // library's fan-out for it still names device 2, whose session the removal deleted: it skips
    // that device, and the ack's hash makes it refresh the list. Nothing is sent to a device gone.)
    assert_eq!(
        fake.set_contact_devices(FRIEND, 2).await.unwrap(),
        vec![0, 1]
    );
    wait_devices_taken_in(&fake).await;
    fake.contact_send(FRIEND, "back to two [d4]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[d4]", &[0, 1]).await;

    // Exactly one reply per message, also after a settle period.
    tokio::time::sleep(ECHO_WATCH).await;
    for word in ["[d1]", "[d2]", "[d3]", "[d4]"] {
        assert_eq!(replies(&fake, FRIEND, word).await, 1, "one reply to {word}");
    }
    assert_eq!(fake.contact_inbox(FRIEND).await.len(), 4);
    let m = bx.metrics().await;
    assert_eq!(turns(&m), 4, "one agent call per message: {m}");
    println!(
        "QA devices: 3-device contact → replies read on devices 0,1,2 (+ the owner's phone); a 4th device linked later reads the next reply; 2 unlinked → the next reply reaches the 2 left only; 4 messages → 4 replies, 4 turns"
    );
    stop(p).await;
}

/// The default configuration (no `self_chat` key at all): the owner writes in "message yourself"
/// from the phone in LID form, then from a linked Desktop (another of the account's devices) in
/// phone-number and LID form. Each gets exactly one answer in the self chat, prefixed; the
/// Desktop gets its copy of the answers too; nothing answers an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_writes_in_the_self_chat_as_lid_and_from_a_desktop_and_gets_one_answer_each() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_resolved(&fake).await;
    let cfg = std::fs::read_to_string(&bx.cfg).unwrap();
    assert!(!cfg.contains("self_chat"), "the default mode: {cfg}");

    let sends = [
        ("from the phone, LID [sl]", Addressing::Lid, 0u16),
        ("from the desktop [sd]", Addressing::Pn, 2),
        ("from the desktop, LID [sdl]", Addressing::Lid, 2),
    ];
    for (i, (text, addressing, device)) in sends.iter().enumerate() {
        fake.self_send_from(text, *addressing, *device)
            .await
            .unwrap();
        let got = wait_self_messages(&fake, i + 1).await;
        assert_eq!(got[i].text, format!("🤖 {text}"), "{got:#?}");
        if *device != 0 {
            // The box follows the account's own device list: the Desktop reads the answer too.
            let t = Instant::now();
            loop {
                let report = fake.message_report(&got[i].id).await.unwrap_or_default();
                if report.own_devices.get(device) == Some(&got[i].text) {
                    break;
                }
                assert!(
                    t.elapsed() < SOON,
                    "the desktop never read the answer: {report:#?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tokio::time::sleep(ECHO_WATCH).await;
    let got = fake.phone_self_messages().await;
    assert_eq!(
        got.len(),
        sends.len(),
        "one answer each, never an answer to an answer: {got:#?}"
    );
    let m = bx.metrics().await;
    assert_eq!(
        metric(&m, "clawbox_messages_in_total{channel=\"whatsapp\"}"),
        3,
        "{m}"
    );
    assert_eq!(
        metric(&m, "clawbox_messages_out_total{channel=\"whatsapp\"}"),
        3,
        "{m}"
    );
    assert_eq!(turns(&m), 3, "one agent call per message: {m}");
    assert!(
        fake.contact_inbox(FRIEND).await.is_empty(),
        "nothing went to anyone else"
    );
    println!(
        "QA self-chat forms: phone/LID, desktop/PN, desktop/LID → 3 prefixed answers in the self chat, {}s later still 3; turns 3",
        ECHO_WATCH.as_secs()
    );
    stop(p).await;
}

/// The box learns a contact's LID only after their sessions exist under the number (the
/// allow_from lookup did not give it; the contact then writes in LID form, with the number as
/// `sender_pn`), so the library moves the sessions to the LID. The contact then unlinks two
/// devices: the next reply reaches the phone alone, with no copy for a device gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_unlinked_after_the_box_learned_the_lid_get_no_copy() {
    let fake = FakeWhatsApp::start().await;
    fake.set_contact_devices(FRIEND, 3).await.unwrap();
    fake.fault_with("lid-unknown", None, None, Some(FRIEND))
        .await
        .unwrap();
    let (_bx, p) = linked_and_resolved(&fake).await;
    fake.contact_send(FRIEND, "by number [n1]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[n1]", &[0, 1, 2]).await;
    fake.contact_send_as(FRIEND, "by lid [n2]", Addressing::Lid)
        .await
        .unwrap();
    wait_read_by(&fake, "[n2]", &[0, 1, 2]).await;
    assert_eq!(fake.set_contact_devices(FRIEND, 1).await.unwrap(), vec![0]);
    wait_devices_taken_in(&fake).await;
    fake.contact_send(FRIEND, "just the phone [n3]", None, None)
        .await
        .unwrap();
    let got = wait_read_by(&fake, "[n3]", &[0]).await;
    assert!(got.iter().all(|d| d.stale_devices.is_empty()), "{got:#?}");
    tokio::time::sleep(ECHO_WATCH).await;
    for word in ["[n1]", "[n2]", "[n3]"] {
        assert_eq!(replies(&fake, FRIEND, word).await, 1, "one reply to {word}");
    }
    stop(p).await;
}

/// The contact links a device while the box is down (after the box cached its list): the
/// server's notification waits in the offline queue, and the first reply after the restart
/// reaches the new device too; answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_while_the_box_is_down_gets_the_replies_after_the_restart() {
    let fake = FakeWhatsApp::start().await;
    fake.set_contact_devices(FRIEND, 2).await.unwrap();
    let (bx, p) = linked_and_resolved(&fake).await;
    fake.contact_send(FRIEND, "before [o1]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[o1]", &[0, 1]).await;
    // The box has the server's ack of the reply before it stops: a stop in the instant between
    // the devices reading it and the ack leaves the reply in doubt, and the box then sends it
    // again after the restart with the same id (the phone shows it once; the crash loop covers
    // that case). This test counts every copy, so it waits the ack out.
    metrics_showing(
        bx.port,
        &["clawbox_messages_out_total{channel=\"whatsapp\"} 1"],
    )
    .await;
    stop(p).await;
    wait_disconnected(&fake).await;

    assert_eq!(
        fake.set_contact_devices(FRIEND, 3).await.unwrap(),
        vec![0, 1, 2]
    );
    fake.contact_send(FRIEND, "after [o2]", None, None)
        .await
        .unwrap();
    let p = bx.run().await;
    wait_read_by(&fake, "[o2]", &[0, 1, 2]).await;
    tokio::time::sleep(ECHO_WATCH).await;
    assert_eq!(replies(&fake, FRIEND, "[o1]").await, 1);
    assert_eq!(replies(&fake, FRIEND, "[o2]").await, 1);
    stop(p).await;
}

/// The notification of a new device is lost: the next reply still goes to the devices the box
/// knew, the server's ack says the device set differs (`phash`), the box refreshes the list, and
/// the reply after that reaches the new device too. Each message answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_device_notification_is_repaired_by_the_ack_hash() {
    let fake = FakeWhatsApp::start().await;
    fake.set_contact_devices(FRIEND, 2).await.unwrap();
    let (_bx, p) = linked_and_resolved(&fake).await;
    fake.contact_send(FRIEND, "first [h1]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[h1]", &[0, 1]).await;
    // No device-list query of the client's still on its way (one that reached the fake after the
    // change below would announce the new device after all): with the receive path writing
    // nothing durable, [h1]'s round trip can finish while one is still coming.
    let mut last = fake.usync_counts().await.devices;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = fake.usync_counts().await.devices;
        if now == last {
            break;
        }
        last = now;
    }

    fake.set_contact_devices_unannounced(FRIEND, 3)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "second [h2]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[h2]", &[0, 1]).await;
    p.wait_stderr("the ack's device hash disagreed", |e| {
        e.iter().any(|l| l.contains("Phash mismatch"))
    })
    .await;
    fake.contact_send(FRIEND, "third [h3]", None, None)
        .await
        .unwrap();
    wait_read_by(&fake, "[h3]", &[0, 1, 2]).await;
    tokio::time::sleep(ECHO_WATCH).await;
    for word in ["[h1]", "[h2]", "[h3]"] {
        assert_eq!(replies(&fake, FRIEND, word).await, 1, "one reply to {word}");
    }
    stop(p).await;
}
