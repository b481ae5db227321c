//! The Telegram channel inside the real daemon, against the fake Bot API: exactly one reply across
//! SIGKILLs and restarts, Bot API faults that never stop the other channels (the console runs in
//! the same process), long replies split in order, and the state shown in status and metrics.

use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi};
use fakes::telegram::{FakeError, FakeTelegram};
use std::time::Duration;
use support::*;

const TOKEN: &str = "123456:TEST-token_abc";
const ALICE: i64 = 111;

struct Gw {
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    port: u16,
}

fn gateway(tg: &FakeTelegram, agent: Option<&FakeOpenAi>) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path().join("tg.token"), TOKEN);
    let port = free_port();
    let agent = match agent {
        Some(ai) => format!(
            "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
            ai.base_url()
        ),
        None => String::new(),
    };
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n{agent}\
         [channels.console]\nenabled = true\n[channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{ALICE}]\n\
         api_root = \"{}\"\npoll_timeout_s = 2\n",
        dir.path().join("state").display(),
        tg.api_root()
    );
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    Gw {
        dir,
        cfg: path,
        port,
    }
}

impl Gw {
    async fn start(&self, fault: Option<&str>) -> Proc {
        let mut envs = vec![];
        if let Some(f) = fault {
            envs.push(("CLAWBOX_FAULT", f));
        }
        let p = spawn(
            &["run", "--config", self.cfg.to_str().unwrap()],
            &envs,
            self.dir.path(),
        );
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        p
    }
    async fn health(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/healthz", self.port)).await
    }
    /// Polls /healthz until it mentions `needle`.
    async fn wait_health(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let h = self.health().await;
            if h.contains(needle) {
                return h;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/healthz never said {needle:?}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn replies_to(tg: &FakeTelegram, word: &str) -> usize {
    tg.sent()
        .iter()
        .filter(|m| m.chat_id == ALICE && m.text.contains(word))
        .count()
}

/// A later message's reply: proof the daemon has caught up, so counting earlier replies is final.
async fn settle(tg: &FakeTelegram, word: &str) {
    tg.push_text(ALICE, ALICE, word);
    wait_for(
        "the settling reply",
        || replies_to(tg, word) == 1,
        || format!("{:#?}", tg.sent()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_accept_before_reply_gives_exactly_one_reply() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let gw = gateway(&tg, Some(&ai));
    let mut p = gw.start(None).await;
    let id = tg.push_text(ALICE, ALICE, "question-one");
    // Accepted (the offset moved past it) and the turn is at the agent: kill -9 now.
    tg.wait_confirmed(id + 1, SOON).await;
    wait_for(
        "the turn at the agent",
        || ai.requests().len() == 1,
        String::new,
    )
    .await;
    p.kill9().await;
    assert_eq!(replies_to(&tg, "question-one"), 0);

    let mut p = gw.start(None).await;
    wait_for(
        "the resumed reply",
        || replies_to(&tg, "question-one") == 1,
        || format!("{:#?}", tg.sent()),
    )
    .await;
    settle(&tg, "question-two").await;
    assert_eq!(replies_to(&tg, "question-one"), 1, "exactly one reply");
    assert_eq!(tg.pending_updates(), 0, "nothing left unconfirmed");
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_the_offset_is_confirmed_is_deduplicated() {
    let tg = FakeTelegram::start(TOKEN).await;
    let gw = gateway(&tg, None);
    // Abort right after the update is durable, before Telegram is told (offset not confirmed).
    let mut p = gw.start(Some("crash:after-accept:1")).await;
    tg.push_text(ALICE, ALICE, "only-once");
    assert_eq!(p.exit_code().await, None, "aborted");
    assert!(tg.pending_updates() >= 1, "Telegram will deliver it again");
    let mut p = gw.start(None).await;
    settle(&tg, "later").await;
    assert_eq!(replies_to(&tg, "only-once"), 1, "{:#?}", tg.sent());
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_reply_does_not_replay_it() {
    let tg = FakeTelegram::start(TOKEN).await;
    let gw = gateway(&tg, None);
    let mut p = gw.start(None).await;
    tg.push_text(ALICE, ALICE, "hello-once");
    wait_for(
        "the reply",
        || replies_to(&tg, "hello-once") == 1,
        String::new,
    )
    .await;
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
    let mut p = gw.start(None).await;
    settle(&tg, "after-restart").await;
    assert_eq!(replies_to(&tg, "hello-once"), 1, "{:#?}", tg.sent());
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

async fn console_still_answers(p: &mut Proc, word: &str) {
    p.write_line(word).await;
    p.wait_stdout("the console's reply", |o| o.iter().any(|l| l == word))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_then_success_while_the_console_keeps_working() {
    let tg = FakeTelegram::start(TOKEN).await;
    tg.fail_next("getUpdates", 3, FakeError::Conflict);
    let gw = gateway(&tg, None);
    let mut p = gw.start(None).await;
    wait_for("409s served", || tg.calls("getUpdates") >= 2, String::new).await;
    console_still_answers(&mut p, "console-during-409").await;
    tg.push_text(ALICE, ALICE, "after-conflict");
    wait_for(
        "telegram recovered",
        || replies_to(&tg, "after-conflict") == 1,
        String::new,
    )
    .await;
    assert!(gw.health().await.contains("\"telegram\""));
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_polls_wait_retry_after_while_the_console_keeps_working() {
    let tg = FakeTelegram::start(TOKEN).await;
    tg.fail_next("getUpdates", 1, FakeError::TooManyRequests(2));
    let gw = gateway(&tg, None);
    let mut p = gw.start(None).await;
    let calls = tg.wait_calls("getUpdates", 2, SOON).await;
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(1950),
        "waited retry_after (2 s): {gap:?}"
    );
    console_still_answers(&mut p, "console-during-429").await;
    tg.push_text(ALICE, ALICE, "after-429");
    wait_for(
        "telegram working",
        || replies_to(&tg, "after-429") == 1,
        String::new,
    )
    .await;
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_stops_telegram_only() {
    let tg = FakeTelegram::start(TOKEN).await;
    tg.fail_next("getMe", 1, FakeError::Unauthorized);
    let gw = gateway(&tg, None);
    let mut p = gw.start(None).await;
    let h = gw.wait_health("token rejected").await;
    assert!(h.contains("needs-owner"), "{h}");
    console_still_answers(&mut p, "console-after-401").await;
    let status = command(&["status", "--config", gw.cfg.to_str().unwrap()], &[])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("telegram") && text.contains("token rejected"),
        "{text}"
    );
    assert_eq!(status.status.code(), Some(1), "degraded");
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_bot_api_is_counted_and_nothing_is_lost() {
    let tg = FakeTelegram::start(TOKEN).await;
    let gw = gateway(&tg, None);
    let mut p = gw.start(None).await;
    tg.push_text(ALICE, ALICE, "before-garbage");
    wait_for(
        "first reply",
        || replies_to(&tg, "before-garbage") == 1,
        String::new,
    )
    .await;
    tg.fail_next("getUpdates", 1, FakeError::Garbage);
    tg.push_text(ALICE, ALICE, "after-garbage");
    wait_for(
        "the update after the garbage",
        || replies_to(&tg, "after-garbage") == 1,
        || format!("{:#?}", tg.sent()),
    )
    .await;
    // The garbage counted once, both replies confirmed sent, nothing left unanswered: exact
    // lines, read once the box has caught up with what the fake already recorded.
    metrics_showing(
        gw.port,
        &[
            "clawbox_malformed_total{channel=\"telegram\"} 1",
            "clawbox_messages_out_total{channel=\"telegram\"} 2",
            "clawbox_inbox_pending 0",
        ],
    )
    .await;
    console_still_answers(&mut p, "console-fine").await;
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_character_reply_arrives_as_three_messages_in_order() {
    let tg = FakeTelegram::start(TOKEN).await;
    let gw = gateway(&tg, None);
    let mut p = gw.start(None).await;
    let text: String = (0..250)
        .map(|i| format!("Sentence number {i:03} of the long reply. "))
        .collect::<String>();
    let text = text.chars().take(10_000).collect::<String>();
    tg.push_text(ALICE, ALICE, &text);
    let sent = tg.wait_sent(3, SOON).await;
    assert_eq!(sent.len(), 3);
    for m in &sent {
        assert_eq!(m.chat_id, ALICE);
        assert!(m.text.chars().count() <= 4096);
    }
    assert!(sent[0].text.starts_with("Sentence number 000"));
    assert!(sent[1].message_id > sent[0].message_id && sent[2].message_id > sent[1].message_id);
    let joined: String = sent
        .iter()
        .map(|m| m.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        joined,
        text.trim_end(),
        "split on boundaries, nothing lost, in order"
    );
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}
