//! Telegram groups through the real binary against the fake Bot API and the fake OpenAI agent: a
//! busy group the bot is not addressed in costs nothing (no agent call, no reply, no fsync); a
//! mention gets exactly one reply in the group, quoting it, and the agent sees the sender's name
//! and what was said before; a reply to the bot's message counts as a mention; mention patterns,
//! per-group agent and system prompt, forum topics; groups and senders that are not allowed, and
//! groups left off (the default), get nothing and are counted by reason.

use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi, last_user_message};
use fakes::telegram::{FakeTelegram, GroupChat, GroupPost, ReactionCall, SentMessage};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const TOKEN: &str = "123456:TEST-token_abc";
const BOT: &str = "@clawbox_test_bot";
const ALICE: i64 = 111;
const BOB: i64 = 222;
const CAROL: i64 = 333;
const MALLORY: i64 = 666;
/// A basic group and a supergroup, as Telegram numbers them.
const FAMILY: i64 = -4_012_345_678;
const TEAM: i64 = -1_001_234_567_890;
/// The store's flush interval (src/store/maintenance.rs) and then some: lazily committed writes
/// are fsynced by then, so an unchanged fsync count after it is final.
const PAST_A_FLUSH: Duration = Duration::from_millis(2_600);

fn dropped(m: &str, reason: &str) -> u64 {
    metric(
        m,
        &format!("clawbox_messages_dropped_total{{channel=\"telegram\",reason=\"{reason}\"}}"),
    )
}

fn telegram(tg: &FakeTelegram, groups: &str) -> String {
    format!(
        "[channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{ALICE}, {BOB}]\n\
         api_root = \"{}\"\npoll_timeout_s = 2\n{groups}",
        tg.api_root()
    )
}

fn openai(ai: &FakeOpenAi) -> String {
    format!(
        "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
        ai.base_url()
    )
}

/// The user text of the agent's requests, in order.
fn asked(ai: &FakeOpenAi) -> Vec<String> {
    ai.requests().iter().map(last_user_message).collect()
}

/// Waits until `chat` got `n` messages from the bot; returns them.
async fn replies_in(tg: &FakeTelegram, chat: i64, n: usize) -> Vec<SentMessage> {
    wait_for(
        &format!("{n} replies in {chat}"),
        || tg.sent_to(chat).len() >= n,
        || format!("{:#?}", tg.sent()),
    )
    .await;
    tg.sent_to(chat)
}

/// The fsync count once it has not moved for a flush interval: nothing lazily written is left.
async fn quiet_fsyncs(bx: &TestBox) -> u64 {
    for _ in 0..10 {
        let m = bx.metrics().await;
        assert!(
            m.lines()
                .any(|l| l.starts_with("clawbox_store_fsyncs_total ")),
            "{m}"
        );
        let before = metric(&m, "clawbox_store_fsyncs_total");
        tokio::time::sleep(PAST_A_FLUSH).await;
        let after = metric(&bx.metrics().await, "clawbox_store_fsyncs_total");
        if before == after {
            return after;
        }
    }
    panic!("the box never stopped writing: {}", bx.metrics().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_group_costs_nothing_and_a_mention_gets_one_quoted_reply_with_the_context() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(Default::default()).await;
    let bx = TestBox::new(
        &format!(
            "{}{}",
            openai(&ai),
            telegram(
                &tg,
                &format!(
                    "[channels.telegram.groups]\npolicy = \"allowlist\"\nallow = [{FAMILY}, \"{TEAM}\"]\n\
                     allow_from = [{ALICE}, {BOB}, {CAROL}]\n"
                )
            )
        ),
        &[("tg.token", TOKEN)],
    );
    let p = bx.run().await;
    let chats = [
        GroupChat::group(FAMILY, "Family"),
        GroupChat::supergroup(TEAM, "Team"),
    ];
    for (round, chat) in chats.iter().enumerate() {
        let fsyncs = quiet_fsyncs(&bx).await;
        let commits = metric(&bx.metrics().await, "clawbox_store_commits_total");
        let calls = ai.requests().len();
        let unaddressed_before = dropped(&bx.metrics().await, "group_unaddressed");
        // 20 messages among Bob and Carol, none addressing the bot.
        for i in 0..20 {
            let (id, name) = if i % 2 == 0 {
                (BOB, "Bob")
            } else {
                (CAROL, "Carol")
            };
            tg.push_group_post(chat, GroupPost::new(id, name, &format!("chat line {i}")));
        }
        metrics_showing(
            bx.port,
            &[&format!(
                "clawbox_messages_dropped_total{{channel=\"telegram\",reason=\"group_unaddressed\"}} {}",
                unaddressed_before + 20
            )],
        )
        .await;
        // Nothing lazily committed either: a whole flush interval later the count has not moved.
        tokio::time::sleep(PAST_A_FLUSH).await;
        let m = bx.metrics().await;
        assert_eq!(
            metric(&m, "clawbox_store_fsyncs_total"),
            fsyncs,
            "20 unaddressed messages cost no fsync: {m}"
        );
        assert_eq!(
            metric(&m, "clawbox_store_commits_total"),
            commits,
            "nor any write at all: {m}"
        );
        assert_eq!(ai.requests().len(), calls, "no agent call");
        assert!(tg.sent_to(chat.id).is_empty(), "no reply");
        assert!(
            tg.chat_actions().iter().all(|a| a.chat_id != chat.id),
            "not even typing"
        );

        // Alice addresses the bot: one reply, quoting her message, and the agent hears the last
        // 20 lines and who asks.
        let alice = tg.push_group_post(
            chat,
            GroupPost::new(ALICE, "Alice", &format!("{BOT} what do you think?")),
        );
        let sent = replies_in(&tg, chat.id, 1).await;
        assert_eq!(sent[0].reply_to_message_id, Some(alice), "{sent:#?}");
        assert_eq!(sent[0].message_thread_id, None);
        let mut want = String::from("[recent messages]\n");
        for i in 0..20 {
            let name = if i % 2 == 0 { "Bob" } else { "Carol" };
            want.push_str(&format!("[{name}] chat line {i}\n"));
        }
        want.push_str(&format!(
            "[/recent messages]\n[Alice] {BOT} what do you think?"
        ));
        assert_eq!(asked(&ai).last().unwrap(), &want);
        assert_eq!(ai.requests().len(), calls + 1);

        // Bob replies to the bot's answer without a mention: that addresses it too. The context
        // starts afresh after the bot was addressed.
        tg.push_group_post(chat, GroupPost::new(CAROL, "Carol", "one more thing"));
        tg.push_group_post(
            chat,
            GroupPost::new(BOB, "Bob", "are you sure?").replying_to(sent[0].message_id),
        );
        let sent = replies_in(&tg, chat.id, 2).await;
        let bobs = asked(&ai).last().unwrap().clone();
        assert!(
            bobs.starts_with("[recent messages]\n[Carol] one more thing\n[/recent messages]\n[in reply to your message: echo: (recent messages) [Bob] chat line 0 [Carol] chat line 1"),
            "{bobs}"
        );
        assert!(bobs.ends_with("…]\n[Bob] are you sure?"), "{bobs}");
        assert_eq!(sent.len(), 2, "round {round}: {sent:#?}");
        assert!(sent[1].reply_to_message_id.is_some());
        // A reply to someone else is not one to the bot.
        tg.push_group_post(
            chat,
            GroupPost::new(CAROL, "Carol", "no idea").replying_to(alice),
        );
    }
    // Both groups are one session each, apart from each other and from Alice's DM.
    tg.push_text(ALICE, ALICE, "and in private?");
    replies_in(&tg, ALICE, 1).await;
    let history_lens: Vec<usize> = ai
        .requests()
        .iter()
        .map(|r| r["messages"].as_array().map_or(0, Vec::len))
        .collect();
    // Per group: the first turn has no history, the second one exchange; the DM none.
    assert_eq!(history_lens, vec![1, 3, 1, 3, 1], "{:#?}", ai.requests());
    let m = bx.metrics().await;
    assert_eq!(dropped(&m, "group_unaddressed"), 2 * 22, "{m}");
    assert_eq!(tg.sent_to(FAMILY).len() + tg.sent_to(TEAM).len(), 4);
    println!(
        "QA telegram-groups: group and supergroup, 20 unaddressed each → 0 agent calls, 0 replies, 0 fsyncs; \
         mention → 1 quoted reply with 20 lines of context; reply to the bot → 1 quoted reply"
    );
    p.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_senders_not_allowed_get_nothing_patterns_overrides_and_topics_work() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(Default::default()).await;
    // DMs go to the built-in echo; the team's turns go to the OpenAI agent with its own prompt.
    let bx = TestBox::new(
        &format!(
            "{}{}",
            openai(&ai),
            telegram(
                &tg,
                &format!(
                    "agent = \"echo\"\n[channels.telegram.groups]\npolicy = \"allowlist\"\nallow = [{TEAM}]\n\
                     mention_patterns = [\"Claw\"]\n\
                     [channels.telegram.groups.chats.\"{TEAM}\"]\nagent = \"ai\"\n\
                     system_prompt = \"You help the team. Be brief.\"\n"
                )
            )
        ),
        &[("tg.token", TOKEN)],
    );
    let p = bx.run().await;
    let mut team = GroupChat::supergroup(TEAM, "Team");
    team.is_forum = true;
    let other = GroupChat::supergroup(-1_009_999_999_999, "Elsewhere");
    // Not allowed: a group not on the list (even when mentioned), a sender not on the DM list.
    tg.push_group_post(&other, GroupPost::new(ALICE, "Alice", &format!("{BOT} hi")));
    tg.push_group_post(
        &team,
        GroupPost::new(MALLORY, "Mallory", &format!("{BOT} let me in")),
    );
    // A pattern as a whole word addresses it; inside another word it does not.
    tg.push_group_post(&team, GroupPost::new(BOB, "Bob", "the clawbox thing"));
    let mut post = GroupPost::new(ALICE, "Alice", "claw, status?");
    post.thread = Some(7);
    let asked_in_topic = tg.push_group_post(&team, post);
    let sent = replies_in(&tg, TEAM, 1).await;
    assert_eq!(sent[0].reply_to_message_id, Some(asked_in_topic));
    assert_eq!(
        sent[0].message_thread_id,
        Some(7),
        "in the topic it was asked in"
    );
    let reqs = ai.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let messages = reqs[0]["messages"].as_array().unwrap();
    assert_eq!(
        messages[0],
        serde_json::json!({"role": "system", "content": "You help the team. Be brief."})
    );
    assert_eq!(
        last_user_message(&reqs[0]),
        "[recent messages]\n[Bob] the clawbox thing\n[/recent messages]\n[Alice] claw, status?"
    );
    // A text mention (the bot picked from the member list) addresses it too.
    let mut post = GroupPost::new(BOB, "Bob", "ok Clawbox Test");
    post.text_mention_of_bot = Some((3, 12));
    tg.push_group_post(&team, post);
    replies_in(&tg, TEAM, 2).await;
    assert_eq!(asked(&ai).last().unwrap(), "[Bob] ok Clawbox Test");
    // DMs still go to the channel's agent (echo), not the group's.
    tg.push_text(ALICE, ALICE, "dm check");
    let dm = replies_in(&tg, ALICE, 1).await;
    assert_eq!(dm[0].reply_to_message_id, None, "DM replies quote nothing");
    assert_eq!(ai.requests().len(), 2, "the DM went to echo");
    let m = bx.metrics().await;
    assert_eq!(dropped(&m, "group_not_allowed"), 1, "{m}");
    assert_eq!(dropped(&m, "group_sender_not_allowed"), 1, "{m}");
    assert_eq!(dropped(&m, "group_unaddressed"), 1, "{m}");
    assert!(tg.sent_to(other.id).is_empty());
    let named = format!("ignoring group {}: it is not in allow", other.id);
    assert!(
        p.stderr().iter().any(|l| l.contains(&named)),
        "{:#?}",
        p.stderr()
    );
    assert!(!asked(&ai).iter().any(|t| t.contains("let me in")));
    p.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_off_by_default_and_a_quote_in_a_dm_reaches_the_agent() {
    let tg = FakeTelegram::start(TOKEN).await;
    let bx = TestBox::new(&telegram(&tg, ""), &[("tg.token", TOKEN)]);
    let p = bx.run().await;
    let team = GroupChat::supergroup(TEAM, "Team");
    tg.push_group_post(
        &team,
        GroupPost::new(ALICE, "Alice", &format!("{BOT} hello?")),
    );
    tg.push_text(ALICE, ALICE, "settle");
    replies_in(&tg, ALICE, 1).await;
    let m = metrics_showing(
        bx.port,
        &["clawbox_messages_dropped_total{channel=\"telegram\",reason=\"group\"} 1"],
    )
    .await;
    assert!(tg.sent_to(TEAM).is_empty(), "{m}");
    // The owner learns the group's id from the log (once), never what was said in it.
    let named = format!("ignoring group {TEAM}: groups are off");
    p.wait_stderr("the group named", |e| e.iter().any(|l| l.contains(&named)))
        .await;
    assert!(!p.stderr().iter().any(|l| l.contains("hello?")));
    // A DM that replies to the bot's message: the agent (echo) gets the quote first.
    let settled = tg.sent_to(ALICE);
    let bot = serde_json::json!({"id": tg.bot_id(), "is_bot": true, "first_name": "Clawbox Test",
                                 "username": "clawbox_test_bot"});
    let chat = serde_json::json!({"id": ALICE, "type": "private", "first_name": "Alice"});
    tg.push_raw(serde_json::json!({"message": {
        "message_id": tg.last_message_id() + 1, "date": 1_700_000_000, "chat": chat,
        "from": {"id": ALICE, "is_bot": false, "first_name": "Alice"},
        "text": "and on Sundays?",
        "reply_to_message": {"message_id": settled[0].message_id, "date": 1_700_000_000,
                             "chat": chat, "from": bot, "text": settled[0].text}}}));
    let sent = replies_in(&tg, ALICE, 2).await;
    assert_eq!(
        sent[1].text,
        "[in reply to your message: settle]\nand on Sundays?"
    );
    assert_eq!(
        sent[1].reply_to_message_id, None,
        "a DM reply quotes nothing"
    );
    p.sigterm();
}

/// A slow answer to a message that addressed the bot in a group gets the acknowledgement
/// reaction on that message (a group message has no number in the bot's box: the reaction finds
/// it by the reply reference) and loses it when the answer is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_in_a_group_gets_the_ack_reaction_on_the_addressed_message() {
    let tg = FakeTelegram::start(TOKEN).await;
    // 100 ms per 4 characters: about 2.5 s for this answer, past the 1 s threshold.
    let ai = FakeOpenAi::start(FakeConfig {
        reply: Arc::new(|_| "a considered answer that takes the agent quite a while".into()),
        chunk_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let bx = TestBox::new(
        &format!(
            "[router]\nack_reaction_after_ms = 1000\n{}{}",
            openai(&ai),
            telegram(
                &tg,
                &format!("[channels.telegram.groups]\npolicy = \"allowlist\"\nallow = [{TEAM}]\n")
            )
        ),
        &[("tg.token", TOKEN)],
    );
    let p = bx.run().await;
    let team = GroupChat::supergroup(TEAM, "Team");
    let alice = tg.push_group_post(&team, GroupPost::new(ALICE, "Alice", &format!("{BOT} hm?")));
    let sent = replies_in(&tg, TEAM, 1).await;
    assert_eq!(sent[0].reply_to_message_id, Some(alice));
    let want = |emoji: Option<&str>| ReactionCall {
        chat_id: TEAM,
        message_id: alice,
        emoji: emoji.map(str::to_string),
    };
    assert_eq!(
        tg.reactions(),
        vec![want(Some("👀")), want(None)],
        "👀 on Alice's message, then taken off"
    );
    p.sigterm();
}
