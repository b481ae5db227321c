//! The security matrix, against the real `clawbox run` binary and the wire-faithful fakes:
//! strangers on WhatsApp and Telegram dropped before any agent call (the agent sees nothing, the
//! drop metric counts); replays after a reconnect (Telegram redelivering updates, the WhatsApp
//! server replaying its offline queue) never answered twice, strangers still dropped; our own
//! message echoed back never answered (no loop); a 1 MiB inbound message bounded with a clear
//! outcome; a state directory with wrong permissions fixed to 0700/0600 and said so in the log;
//! secrets and message bodies never in the logs at info (and what debug shows). Covers what
//! `flow.rs`, `telegram_flow.rs` and `whatsapp_flow.rs` do not. Each test prints a
//! `QA <scenario>: ` line with its evidence.

use kit::{fakes, support};

use fakes::openai::{FakeConfig as AiConfig, FakeOpenAi};
use fakes::openclaw::{FakeConfig as ClawConfig, FakeGateway};
use fakes::telegram::FakeTelegram;
use fakes::whatsapp::FakeWhatsApp;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const TOKEN: &str = "123456:TEST-secret_TG_token";
const ALICE: i64 = 111;
const MALLORY: i64 = 666;
const FRIEND: &str = "+15550002222";
const STRANGER: &str = "+15550003333";
const OPENAI_KEY: &str = "sk-test-SECRETopenaiKEY0123456789";
const CLAW_TOKEN: &str = "claw-SECRET-gateway-token-42";

fn telegram_section(tg: &FakeTelegram, agent: Option<&str>) -> String {
    format!(
        "[channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{ALICE}]\napi_root = \"{}\"\npoll_timeout_s = 2\n{}",
        tg.api_root(),
        agent
            .map(|a| format!("agent = \"{a}\"\n"))
            .unwrap_or_default()
    )
}

fn whatsapp_section(fake: &FakeWhatsApp, agent: Option<&str>) -> String {
    format!(
        "[channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\nallow_from = [\"{FRIEND}\"]\n{}",
        fake.ws_url(),
        fake.version_url(),
        agent
            .map(|a| format!("agent = \"{a}\"\n"))
            .unwrap_or_default()
    )
}

fn openai_section(ai: &FakeOpenAi) -> String {
    format!(
        "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\napi_key_file = \"ai.key\"\n",
        ai.base_url()
    )
}

fn tg_replies(tg: &FakeTelegram, chat: i64, word: &str) -> usize {
    tg.sent()
        .iter()
        .filter(|m| m.chat_id == chat && m.text.contains(word))
        .count()
}

async fn tg_wait_reply(tg: &FakeTelegram, word: &str) {
    wait_for(
        &format!("a reply mentioning {word}"),
        || tg_replies(tg, ALICE, word) >= 1,
        || format!("{:#?}", tg.sent()),
    )
    .await;
}

async fn wa_replies(fake: &FakeWhatsApp, who: &str, word: &str) -> usize {
    fake.contact_inbox(who)
        .await
        .iter()
        .filter(|m| m.text.contains(word))
        .count()
}

async fn wa_wait_reply(fake: &FakeWhatsApp, word: &str) {
    let t = Instant::now();
    while wa_replies(fake, FRIEND, word).await == 0 {
        assert!(
            t.elapsed() < SOON,
            "no reply mentioning {word}: {:#?}",
            fake.contact_inbox(FRIEND).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wa_wait_connected(fake: &FakeWhatsApp) {
    let t = Instant::now();
    while !fake.state().await.connected {
        assert!(t.elapsed() < SOON, "not connected");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn stop(mut p: Proc) -> Vec<String> {
    p.sigterm();
    assert_eq!(
        p.exit_code().await,
        Some(0),
        "clean exit: {:#?}",
        p.stderr()
    );
    p.stderr()
}

// ---- strangers and replays -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_replays_on_both_channels_never_reach_the_agent_twice() {
    let tg = FakeTelegram::start(TOKEN).await;
    let wa = FakeWhatsApp::start().await;
    let ai = FakeOpenAi::start(AiConfig {
        api_key: Some(OPENAI_KEY.into()),
        ..Default::default()
    })
    .await;
    let bx = TestBox::new(
        &format!(
            "{}{}{}",
            openai_section(&ai),
            telegram_section(&tg, Some("ai")),
            whatsapp_section(&wa, Some("ai"))
        ),
        &[("tg.token", TOKEN), ("ai.key", OPENAI_KEY)],
    );
    pair_whatsapp(&wa, &bx).await;
    let p = bx.run().await;
    wa_wait_connected(&wa).await;

    // Strangers first: when the friends' messages after them are answered, the strangers' are
    // final.
    let tg_stranger = tg.push_text(MALLORY, MALLORY, "mallory wants in");
    wa.contact_send(STRANGER, "stranger wants in", None, None)
        .await
        .unwrap();
    let tg_friend = tg.push_text(ALICE, ALICE, "alice-hello");
    wa.contact_send(FRIEND, "friend-hello", None, None)
        .await
        .unwrap();
    tg_wait_reply(&tg, "echo: alice-hello").await;
    wa_wait_reply(&wa, "echo: friend-hello").await;
    let asked: Vec<String> = ai
        .requests()
        .iter()
        .map(fakes::openai::last_user_message)
        .collect();
    assert_eq!(
        asked.len(),
        2,
        "only the two friends reached the agent: {asked:?}"
    );
    assert!(asked.iter().all(|m| !m.contains("wants in")), "{asked:?}");
    let m = bx.metrics().await;
    let tg_dropped = metric(
        &m,
        "clawbox_messages_dropped_total{channel=\"telegram\",reason=\"not_allowed\"}",
    );
    let wa_dropped = metric(
        &m,
        "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"}",
    );
    assert_eq!((tg_dropped, wa_dropped), (1, 1), "{m}");
    assert!(tg.sent().iter().all(|s| s.chat_id != MALLORY));
    assert!(tg.chat_actions().iter().all(|a| a.chat_id != MALLORY));
    assert!(wa.contact_inbox(STRANGER).await.is_empty());

    // Replays: Telegram hands both updates out again; the WhatsApp server drops the link and
    // replays every message it ever delivered on the reconnect.
    assert!(tg.redeliver(tg_stranger) && tg.redeliver(tg_friend));
    let attempts = wa.connection_attempts().await;
    wa.fault("replay", None).await.unwrap();
    let t = Instant::now();
    while wa.connection_attempts().await == attempts || !wa.state().await.connected {
        assert!(t.elapsed() < SOON, "no reconnect after the replay fault");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reconnect = t.elapsed();
    // Settle both channels with a fresh message each.
    tg.push_text(ALICE, ALICE, "alice-after-replay");
    wa.contact_send(FRIEND, "friend-after-replay", None, None)
        .await
        .unwrap();
    tg_wait_reply(&tg, "echo: alice-after-replay").await;
    wa_wait_reply(&wa, "echo: friend-after-replay").await;

    assert_eq!(tg_replies(&tg, ALICE, "alice-hello"), 1, "{:#?}", tg.sent());
    assert_eq!(wa_replies(&wa, FRIEND, "friend-hello").await, 1);
    assert!(
        wa.contact_inbox(STRANGER).await.is_empty(),
        "stranger still dropped"
    );
    assert!(
        tg.sent().iter().all(|s| s.chat_id != MALLORY),
        "stranger still dropped"
    );
    let asked = ai.requests().len();
    assert_eq!(asked, 4, "replays never reach the agent");
    let m = bx.metrics().await;
    println!(
        "QA security-strangers: telegram stranger + whatsapp stranger → 0 agent calls, 0 replies, 0 typing; \
         dropped not_allowed telegram={tg_dropped} whatsapp={wa_dropped}; agent saw {asked} requests, all from friends"
    );
    println!(
        "QA security-replay: telegram redelivered 2 updates, whatsapp replayed its delivered messages after a \
         reconnect ({:.1}s); second answers 0, stranger replies 0; dropped_total now telegram={} whatsapp={}",
        reconnect.as_secs_f64(),
        metric(
            &m,
            "clawbox_messages_dropped_total{channel=\"telegram\",reason=\"not_allowed\"}"
        ),
        metric(
            &m,
            "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"}"
        ),
    );
    stop(p).await;
}

// ---- our own message echoed back ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_reply_echoed_back_is_never_answered() {
    let tg = FakeTelegram::start(TOKEN).await;
    let bx = TestBox::new(&telegram_section(&tg, None), &[("tg.token", TOKEN)]);
    let p = bx.run().await;
    tg.push_text(ALICE, ALICE, "ping-1");
    tg_wait_reply(&tg, "ping-1").await;
    let ours = tg.sent()[0].clone();
    // The bot's own message comes back in the chat (as a forward, a channel mirror or a buggy
    // proxy would deliver it): from the bot itself, same text.
    let bot = tg.bot_id();
    tg.push_raw(serde_json::json!({"message": {
        "message_id": ours.message_id, "date": 1,
        "from": {"id": bot, "is_bot": true, "first_name": "Clawbox Test", "username": "clawbox_test_bot"},
        "chat": {"id": ALICE, "type": "private", "first_name": "Test"},
        "text": ours.text}}));
    tg.push_text(ALICE, ALICE, "ping-2");
    tg_wait_reply(&tg, "ping-2").await;
    // Nothing answered the echo: the only replies are to ping-1 and ping-2.
    let sent = tg.sent();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(tg.pending_updates(), 0);
    let m = bx.metrics().await;
    println!(
        "QA security-self-echo: our reply {:?} delivered back from the bot itself → 0 answers (2 replies for 2 \
         real messages); dropped={}",
        ours.text,
        m.lines()
            .filter(|l| l.starts_with("clawbox_messages_dropped_total{channel=\"telegram\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    stop(p).await;
}

// ---- oversized inbound ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_message_is_bounded_and_the_box_stays_up() {
    let tg = FakeTelegram::start(TOKEN).await;
    // The model answers with what it was given, in a few words.
    let ai = FakeOpenAi::start(AiConfig {
        reply: std::sync::Arc::new(|req| {
            let m = fakes::openai::last_user_message(req);
            format!(
                "got {} chars: {}",
                m.chars().count(),
                m.chars()
                    .rev()
                    .take(40)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            )
        }),
        chars_per_chunk: 64,
        chunk_delay: Duration::from_millis(5),
        ..Default::default()
    })
    .await;
    let bx = TestBox::new(
        &format!(
            "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n{}",
            ai.base_url(),
            telegram_section(&tg, Some("ai"))
        ),
        &[("tg.token", TOKEN)],
    );
    let mut p = bx.run().await;
    let huge = "A".repeat(1 << 20);
    let t = Instant::now();
    tg.push_text(ALICE, ALICE, &huge);
    tg.push_text(ALICE, ALICE, "small-after-huge");
    tg_wait_reply(&tg, "small-after-huge").await;
    let took = t.elapsed();
    assert!(p.child.try_wait().unwrap().is_none(), "still up");
    // What the agent was given: the text cut to the inbound cap, with a marker saying so.
    let given: Vec<String> = ai
        .requests()
        .iter()
        .map(fakes::openai::last_user_message)
        .collect();
    let cut = given
        .iter()
        .find(|m| m.starts_with("AAAA"))
        .expect("the huge message reached the agent, cut");
    let cap = clawbox::intake::MAX_INBOUND_CHARS;
    assert!(
        cut.chars().count() < cap + 64,
        "bounded: {} chars",
        cut.chars().count()
    );
    assert!(cut.ends_with("[…message cut: too long]"), "says it was cut");
    let answer = tg
        .sent()
        .into_iter()
        .find(|m| m.text.starts_with("got "))
        .expect("the huge message was answered");
    assert_eq!(
        tg.pending_updates(),
        0,
        "the huge update is confirmed, not retried forever"
    );
    assert!(
        p.stderr().iter().all(|l| !l.contains(&huge[..1024])),
        "the body is not logged"
    );
    let biggest_line = p.stderr().iter().map(|l| l.len()).max().unwrap_or(0);
    println!(
        "QA security-oversized: 1 MiB Telegram text → agent given {} chars (cap {cap}) ending in the cut marker; \
         answered ({:?}); the next message answered {:.1}s after; longest log line {biggest_line} B; still running",
        cut.chars().count(),
        answer.text,
        took.as_secs_f64()
    );
    stop(p).await;
}

// ---- state dir permissions -----------------------------------------------------------------

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_open_to_others_is_made_private_and_the_log_says_so() {
    let tg = FakeTelegram::start(TOKEN).await;
    let bx = TestBox::new(&telegram_section(&tg, None), &[("tg.token", TOKEN)]);
    let p = bx.run().await;
    tg.push_text(ALICE, ALICE, "first");
    tg_wait_reply(&tg, "first").await;
    stop(p).await;
    let state = bx.state();
    let mut files = Vec::new();
    for e in std::fs::read_dir(&state).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            files.push(path);
        }
    }
    assert!(!files.is_empty());
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let p = bx.run().await;
    assert_eq!(mode(&state), 0o700, "the directory is private again");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{} is private again", f.display());
    }
    let said: Vec<String> = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains("WARN") && (l.contains("0700") || l.contains("0600")))
        .collect();
    assert!(
        said.iter().any(|l| l.contains("0700")) && said.iter().any(|l| l.contains("0600")),
        "the log says what was fixed: {:#?}",
        p.stderr()
    );
    tg.push_text(ALICE, ALICE, "second");
    tg_wait_reply(&tg, "second").await;
    println!(
        "QA security-permissions: state dir 0777 + {} file(s) 0644 → 0700/0600 at start; log: {:?}",
        files.len(),
        said
    );
    stop(p).await;
}

// ---- secrets never in logs -----------------------------------------------------------------

/// One run at `level`: Telegram → OpenAI (with a key), console → OpenClaw (with a token); a
/// message through each. Returns every captured stderr line.
async fn run_and_capture(level: &str) -> (Vec<String>, [&'static str; 2]) {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(AiConfig {
        api_key: Some(OPENAI_KEY.into()),
        ..Default::default()
    })
    .await;
    let gw = FakeGateway::start(ClawConfig {
        token: CLAW_TOKEN.into(),
        ..Default::default()
    })
    .await;
    let bx = TestBox::new(
        &format!(
            "{}[agents.claw]\nkind = \"openclaw\"\nurl = \"{}\"\ntoken_file = \"claw.token\"\n\
             [channels.console]\nenabled = true\nagent = \"claw\"\n{}",
            openai_section(&ai),
            gw.url,
            telegram_section(&tg, Some("ai"))
        ),
        &[
            ("tg.token", TOKEN),
            ("ai.key", OPENAI_KEY),
            ("claw.token", CLAW_TOKEN),
        ],
    );
    const TG_BODY: &str = "my-bank-pin-is-4711";
    const CONSOLE_BODY: &str = "diary-entry-top-secret";
    let mut p = bx.run_with(&[("CLAWBOX_LOG", level)]).await;
    tg.push_text(ALICE, ALICE, TG_BODY);
    tg_wait_reply(&tg, TG_BODY).await;
    p.write_line(CONSOLE_BODY).await;
    p.wait_stdout("the console reply", |o| {
        o.iter().any(|l| l.contains(CONSOLE_BODY))
    })
    .await;
    let err = stop(p).await;
    (err, [TG_BODY, CONSOLE_BODY])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_bodies_never_appear_in_the_logs() {
    let secrets = [
        ("telegram token", TOKEN),
        ("telegram token secret part", "TEST-secret_TG_token"),
        ("openai key", OPENAI_KEY),
        ("openclaw token", CLAW_TOKEN),
    ];
    let (info, bodies) = run_and_capture("info").await;
    let mut leaks = Vec::new();
    for line in &info {
        for (what, s) in secrets
            .iter()
            .chain([("telegram body", bodies[0]), ("console body", bodies[1])].iter())
        {
            if line.contains(s) {
                leaks.push(format!("{what}: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "info-level leaks: {leaks:#?}");
    let (debug, bodies) = run_and_capture("debug").await;
    let mut secret_leaks = Vec::new();
    let mut body_lines = 0;
    for line in &debug {
        for (what, s) in &secrets {
            if line.contains(s) {
                secret_leaks.push(format!("{what}: {line}"));
            }
        }
        if bodies.iter().any(|b| line.contains(b)) {
            body_lines += 1;
        }
    }
    assert!(
        secret_leaks.is_empty(),
        "debug-level secret leaks: {secret_leaks:#?}"
    );
    println!(
        "QA security-secrets: info run {} lines, debug run {} lines; telegram token, openai key, openclaw token \
         found 0 times at either level; message bodies at info 0, at debug {body_lines} line(s)",
        info.len(),
        debug.len()
    );
}
