//! WhatsApp groups through the real `clawbox run` binary against the fake server's groups
//! (sender keys, `w:g2`, `w:gp2`) and the fake OpenAI agent: `clawbox groups list` shows the
//! groups the linked account is in; a busy group the assistant is not addressed in costs nothing
//! (no agent call, no reply, no fsync); an @-mention of the account gets one reply in the group,
//! quoting it, read by every member's device, and the agent hears the sender's name and what was
//! said before; a reply to the assistant's message counts as a mention; a group and a sender that
//! are not allowed get nothing, counted by reason.

use std::time::Duration;

use kit::fakes::openai::{FakeOpenAi, last_user_message};
use kit::fakes::whatsapp::{FakeWhatsApp, GroupAddressing, GroupDelivery, MemberSend};
use kit::support::*;

use super::whatsapp_flow::{Bx, FRIEND, linked_and_running, start_linked, stop};

const BOB: &str = "+15550004444";
const CAROL: &str = "+15550005555";

/// `clawbox groups list`'s exit code and stdout.
async fn groups_list(cfg: &std::path::Path) -> (Option<i32>, String, String) {
    let out = command(&["groups", "list", "--config", cfg.to_str().unwrap()], &[])
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_list_shows_the_groups_the_account_is_in() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    let (code, out, err) = groups_list(&bx.cfg).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("in no group"), "{out}");

    let family = fake
        .group_create("Family", &[FRIEND, BOB, CAROL], GroupAddressing::Pn)
        .await
        .unwrap();
    let team = fake
        .group_create("team \"ops\"", &[BOB], GroupAddressing::Lid)
        .await
        .unwrap();
    let (code, out, err) = groups_list(&bx.cfg).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{family}\tFamily").as_str(),
            format!("{team}\tteam \"ops\"").as_str()
        ],
        "one line a group, id then subject, sorted by subject"
    );
    stop(p).await;

    // No service: the command says so instead of guessing.
    let (code, out, err) = groups_list(&bx.cfg).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("not running"), "{err}");
}

const MALLORY: &str = "+15550006666";
/// The store's flush interval (src/store/maintenance.rs) and then some: lazily committed writes
/// are fsynced by then, so an unchanged fsync count after it is final.
const PAST_A_FLUSH: Duration = Duration::from_millis(2_600);

fn dropped(m: &str, reason: &str) -> u64 {
    metric(
        m,
        &format!("clawbox_messages_dropped_total{{channel=\"whatsapp\",reason=\"{reason}\"}}"),
    )
}

/// A box with the OpenAI agent and `[channels.whatsapp.groups]` allowing `allowed`, the friend
/// (Alice) allowed to DM; `allow_from` in groups: Alice, Bob and Carol.
async fn group_box(fake: &FakeWhatsApp, ai: &FakeOpenAi, allowed: &str) -> (Bx, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[gateway]\nstate_dir = \"{state}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
         [agents.ai]\nkind = \"openai\"\nurl = \"{url}\"\nmodel = \"m\"\n\
         [channels.whatsapp]\nserver_url = \"{ws}\"\nversion_url = \"{version}\"\nallow_from = [\"{FRIEND}\"]\n\
         [channels.whatsapp.groups]\npolicy = \"allowlist\"\nallow = [\"{allowed}\"]\n\
         allow_from = [\"{FRIEND}\", \"{BOB}\", \"{CAROL}\"]\nrequire_mention = true\n",
        state = dir.path().join("state").display(),
        url = ai.base_url(),
        ws = fake.ws_url(),
        version = fake.version_url(),
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

fn say(from: &str, name: &str, text: &str) -> MemberSend {
    MemberSend {
        from: from.into(),
        text: text.into(),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// The fsync count once it has not moved for a flush interval: nothing lazily written is left.
async fn quiet_fsyncs(bx: &Bx) -> u64 {
    for _ in 0..10 {
        let before = metric(&bx.metrics().await, "clawbox_store_fsyncs_total");
        tokio::time::sleep(PAST_A_FLUSH).await;
        let after = metric(&bx.metrics().await, "clawbox_store_fsyncs_total");
        if before == after {
            return after;
        }
    }
    panic!("the box never stopped writing: {}", bx.metrics().await);
}

/// Waits until the box sent `n` messages to group `gid`, each read by every device of
/// `members`; returns them.
async fn box_messages(
    fake: &FakeWhatsApp,
    gid: &str,
    n: usize,
    members: &[&str],
) -> Vec<GroupDelivery> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let sent = fake.group_messages(gid).await.unwrap();
        let all_read = sent.iter().all(|d| {
            members
                .iter()
                .all(|m| d.read_by.get(*m).and_then(|r| r.get(&0)) == Some(&d.text))
        });
        if sent.len() >= n && all_read {
            return sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} messages read by {members:?} never came: {sent:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_unaddressed_group_messages_cost_no_agent_call_no_reply_no_fsync() {
    let fake = FakeWhatsApp::start().await;
    let ai = FakeOpenAi::start(Default::default()).await;
    let family = fake
        .group_create("Family", &[FRIEND, BOB, CAROL], GroupAddressing::Lid)
        .await
        .unwrap();
    let (bx, p) = group_box(&fake, &ai, &family).await;
    let fsyncs = quiet_fsyncs(&bx).await;
    let before = dropped(&bx.metrics().await, "group_unaddressed");
    for i in 0..20 {
        let (who, name) = if i % 2 == 0 {
            (BOB, "Bob")
        } else {
            (CAROL, "Carol")
        };
        fake.group_send(&family, &say(who, name, &format!("chat line {i}")))
            .await
            .unwrap();
    }
    metrics_showing(
        bx.port,
        &[&format!(
            "clawbox_messages_dropped_total{{channel=\"whatsapp\",reason=\"group_unaddressed\"}} {}",
            before + 20
        )],
    )
    .await;
    tokio::time::sleep(PAST_A_FLUSH).await;
    let m = bx.metrics().await;
    assert_eq!(ai.requests().len(), 0, "no agent call");
    assert!(
        fake.group_messages(&family).await.unwrap().is_empty(),
        "no reply"
    );
    assert_eq!(
        metric(&m, "clawbox_store_fsyncs_total"),
        fsyncs,
        "20 unaddressed messages cost no fsync: {m}"
    );
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_gets_one_quoted_reply_read_by_every_member_and_strangers_get_nothing() {
    let fake = FakeWhatsApp::start().await;
    let ai = FakeOpenAi::start(Default::default()).await;
    // Bob has a linked device too: the reply reaches it through the LID group's fan-out.
    assert_eq!(fake.set_contact_devices(BOB, 2).await.unwrap(), vec![0, 1]);
    let family = fake
        .group_create(
            "Family",
            &[FRIEND, BOB, CAROL, MALLORY],
            GroupAddressing::Lid,
        )
        .await
        .unwrap();
    let other = fake
        .group_create("Other", &[FRIEND, BOB], GroupAddressing::Pn)
        .await
        .unwrap();
    let (bx, p) = group_box(&fake, &ai, &family).await;
    let members = [FRIEND, BOB, CAROL, MALLORY];

    fake.group_send(&family, &say(BOB, "Bob", "did anyone book the table?"))
        .await
        .unwrap();
    fake.group_send(&family, &say(CAROL, "Carol", "not yet"))
        .await
        .unwrap();
    // A mention of someone else is no mention of the assistant.
    let mut others = say(CAROL, "Carol", "@Bob can you?");
    others.mentions = vec![BOB.into()];
    fake.group_send(&family, &others).await.unwrap();
    // Alice @-mentions the linked account.
    let mut ask = say(FRIEND, "Alice", "@bot what do you think?");
    ask.mentions = vec!["self".into()];
    let asked = fake.group_send(&family, &ask).await.unwrap();
    let sent = box_messages(&fake, &family, 1, &members).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(
        sent[0].read_by.get(BOB).and_then(|r| r.get(&1)),
        Some(&sent[0].text),
        "Bob's linked device reads the reply too: {sent:#?}"
    );
    assert_eq!(
        sent[0].quoted_id.as_deref(),
        Some(asked.as_str()),
        "{sent:#?}"
    );
    assert!(
        sent[0]
            .quoted_participant
            .as_deref()
            .is_some_and(|p| p.ends_with("@lid")),
        "quotes Alice as the group names her: {sent:#?}"
    );
    assert_eq!(
        sent[0].quoted_text.as_deref(),
        Some("@bot what do you think?"),
        "the quote carries the text the members' phones show: {sent:#?}"
    );
    let requests = ai.requests();
    assert_eq!(requests.len(), 1);
    let heard = last_user_message(&requests[0]);
    assert_eq!(
        heard,
        "[recent messages]\n[Bob] did anyone book the table?\n[Carol] not yet\n\
         [Carol] @Bob can you?\n[/recent messages]\n[Alice] @bot what do you think?",
        "the sender's name and the recent context"
    );

    // Bob answers the assistant's message without a mention: that addresses it too.
    let mut reply = say(BOB, "Bob", "are you sure?");
    reply.quote = Some(sent[0].id.clone());
    let bobs = fake.group_send(&family, &reply).await.unwrap();
    let sent = box_messages(&fake, &family, 2, &members).await;
    assert_eq!(
        sent[1].quoted_id.as_deref(),
        Some(bobs.as_str()),
        "asked {asked}, bob {bobs}: {sent:#?} {:#?}",
        ai.requests()
            .iter()
            .map(last_user_message)
            .collect::<Vec<_>>()
    );
    assert_eq!(ai.requests().len(), 2);

    // A sender the group does not allow, and a group that is not allowed: nothing.
    let mut mallory = say(MALLORY, "Mallory", "@bot obey me");
    mallory.mentions = vec!["self".into()];
    fake.group_send(&family, &mallory).await.unwrap();
    let mut elsewhere = say(FRIEND, "Alice", "@bot over here");
    elsewhere.mentions = vec!["self".into()];
    fake.group_send(&other, &elsewhere).await.unwrap();
    let m = metrics_showing(
        bx.port,
        &[
            "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"group_sender_not_allowed\"} 1",
            "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"group_not_allowed\"} 1",
        ],
    )
    .await;
    assert_eq!(dropped(&m, "group_unaddressed"), 3, "{m}");
    assert_eq!(ai.requests().len(), 2, "no agent call for them");
    assert_eq!(fake.group_messages(&family).await.unwrap().len(), 2);
    assert!(fake.group_messages(&other).await.unwrap().is_empty());
    println!(
        "QA whatsapp-groups: LID group of 4; mention → 1 quoted reply read by every member device, \
         with sender name and 3 lines of context; reply to the assistant → 1 more; \
         non-allowed sender and group → nothing"
    );
    stop(p).await;
}
