//! The OpenClaw agent inside the real daemon: Telegram (fake Bot API) → router → OpenClaw gateway
//! → reply, and `clawbox providers test`. Runs against the fake gateway; the ignored test
//! `real_gateway_through_clawbox` runs the same scenario against a real openclaw gateway
//! (tests/openclaw-interop/run.sh provides `OPENCLAW_URL`, `OPENCLAW_TOKEN`, `OPENCLAW_MODEL_LOG`).

use kit::{fakes, support};

use fakes::openclaw::{FakeConfig, FakeGateway, FakeReply};
use fakes::telegram::FakeTelegram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const TG_TOKEN: &str = "123456:TEST-token_abc";
const ALICE: i64 = 111;
const BOB: i64 = 333;

/// How the scenario checks what only the gateway side can see.
enum Peer {
    Fake(Arc<FakeGateway>),
    /// The real gateway; the fake model's last request body is kept in this file.
    Real {
        model_log: Option<PathBuf>,
    },
}

fn write_config(
    dir: &std::path::Path,
    url: &str,
    token: &str,
    tg: &FakeTelegram,
    timeouts: (u64, u64),
) -> PathBuf {
    write_secret(dir.join("gw.token"), token);
    write_secret(dir.join("tg.token"), TG_TOKEN);
    let cfg = format!(
        "[gateway]\nstate_dir = \"{state}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
         [router]\nack_timeout_s = {ack}\naccumulation_timeout_s = {acc}\n\
         [agents.claw]\nkind = \"openclaw\"\nurl = \"{url}\"\ntoken_file = \"gw.token\"\n\
         [channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{ALICE}, {BOB}]\napi_root = \"{root}\"\npoll_timeout_s = 2\n",
        state = dir.join("state").display(),
        port = free_port(),
        ack = timeouts.0,
        acc = timeouts.1,
        root = tg.api_root(),
    );
    let path = dir.join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn replies(tg: &FakeTelegram, chat: i64, word: &str) -> usize {
    tg.sent()
        .iter()
        .filter(|m| m.chat_id == chat && m.text.contains(word))
        .count()
}

async fn reply_to(tg: &FakeTelegram, chat: i64, word: &str) {
    wait_for(
        &format!("a reply mentioning {word}"),
        || replies(tg, chat, word) >= 1,
        || format!("{:#?}", tg.sent()),
    )
    .await;
}

async fn providers_test(cfg: &std::path::Path) -> (Option<i32>, String) {
    let out = command(
        &["providers", "test", "--config", cfg.to_str().unwrap()],
        &[],
    )
    .output()
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn scenario(url: &str, token: &str, peer: Peer) {
    let tg = FakeTelegram::start(TG_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), url, token, &tg, (120, 180));

    // providers test: passes with the right token, fails in plain words with a wrong one.
    let (code, out) = providers_test(&cfg).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("PASS claw (openclaw)") && out.contains("protocol: 4"),
        "{out}"
    );
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = write_config(bad_dir.path(), url, "wrong-token-0000", &tg, (120, 180));
    let (code, out) = providers_test(&bad).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL claw") && out.contains("rejected the token"),
        "{out}"
    );

    let mut p = spawn(&["run", "--config", cfg.to_str().unwrap()], &[], dir.path());
    p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
        .await;

    // A reply, then a second turn in the same session.
    tg.push_text(ALICE, ALICE, "first words apple");
    reply_to(&tg, ALICE, "apple").await;
    let t = std::time::Instant::now();
    tg.push_text(ALICE, ALICE, "second words banana");
    reply_to(&tg, ALICE, "banana").await;
    println!(
        "MEASURED turn 2 through clawbox (Bot API poll → reply sent): {} ms",
        t.elapsed().as_millis()
    );
    match &peer {
        Peer::Fake(gw) => {
            let keys: Vec<String> = gw
                .frames_of("chat.send")
                .iter()
                .map(|f| f["params"]["sessionKey"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(keys.len(), 2);
            assert_eq!(keys[0], keys[1], "the same session for both turns");
            assert_eq!(keys[0], format!("agent:main:clawbox-telegram-{ALICE}"));
        }
        Peer::Real {
            model_log: Some(log),
        } => {
            let body = std::fs::read_to_string(log).unwrap();
            assert!(
                body.contains("apple") && body.contains("banana"),
                "the gateway sent turn 1 as history: {body}"
            );
        }
        Peer::Real { model_log: None } => {}
    }

    // 🗑️ resets the session and is confirmed.
    tg.push_text(ALICE, ALICE, "🗑️");
    reply_to(&tg, ALICE, "fresh conversation").await;
    if let Peer::Fake(gw) = &peer {
        let resets = gw.frames_of("sessions.reset");
        assert_eq!(resets.len(), 1);
        assert_eq!(
            resets[0]["params"]["key"],
            format!("agent:main:clawbox-telegram-{ALICE}")
        );
        assert_eq!(resets[0]["params"]["reason"], "reset");
    }

    // Two chats at once: no cross-talk.
    tg.push_text(ALICE, ALICE, "alice cherry");
    tg.push_text(BOB, BOB, "bob damson");
    reply_to(&tg, ALICE, "cherry").await;
    reply_to(&tg, BOB, "damson").await;
    assert_eq!(replies(&tg, ALICE, "damson"), 0);
    assert_eq!(replies(&tg, BOB, "cherry"), 0);

    // Three messages while a turn runs: all answered.
    tg.push_text(ALICE, ALICE, "slow elderberry");
    tg.push_text(ALICE, ALICE, "then fig");
    tg.push_text(ALICE, ALICE, "and grape");
    tg.push_text(ALICE, ALICE, "and honeydew");
    for w in ["elderberry", "fig", "grape", "honeydew"] {
        reply_to(&tg, ALICE, w).await;
    }
    let health = http_get(&format!("http://{}/healthz", health_addr(&cfg))).await;
    assert!(
        health.contains("agent claw") && health.contains("\"up\""),
        "{health}"
    );
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
    // Info-level logs carry neither secrets nor what people wrote.
    let logs = p.stderr().join("\n");
    assert!(logs.contains(" INFO "), "logs were captured");
    for secret in [
        token,
        TG_TOKEN,
        "TEST-token_abc",
        "apple",
        "banana",
        "cherry",
        "damson",
    ] {
        assert!(
            !logs.contains(secret),
            "the log contains {secret:?}:\n{logs}"
        );
    }
}

fn health_addr(cfg: &std::path::Path) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("health_listen"))
        .unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_through_the_fake_gateway() {
    let gw = FakeGateway::start(FakeConfig {
        token: "gw-token".into(),
        delta_delay: Duration::from_millis(150),
        reply: Arc::new(|_, m| FakeReply::Text(format!("echo: {m}"))),
        ..Default::default()
    })
    .await;
    scenario(&gw.url, "gw-token", Peer::Fake(gw.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_scope_a_reset_starts_a_new_session_and_says_so() {
    let gw = FakeGateway::start(FakeConfig {
        token: "gw-token".into(),
        grant_admin: false,
        ..Default::default()
    })
    .await;
    let tg = FakeTelegram::start(TG_TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &gw.url, "gw-token", &tg, (30, 60));
    let mut p = spawn(&["run", "--config", cfg.to_str().unwrap()], &[], dir.path());
    p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
        .await;
    tg.push_text(ALICE, ALICE, "one");
    reply_to(&tg, ALICE, "one").await;
    tg.push_text(ALICE, ALICE, "🗑️");
    reply_to(&tg, ALICE, "stays on the gateway").await;
    tg.push_text(ALICE, ALICE, "two");
    reply_to(&tg, ALICE, "two").await;
    let keys: Vec<String> = gw
        .frames_of("chat.send")
        .iter()
        .map(|f| f["params"]["sessionKey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        keys,
        vec![
            format!("agent:main:clawbox-telegram-{ALICE}"),
            format!("agent:main:clawbox-telegram-{ALICE}-r1")
        ]
    );
    assert!(
        gw.frames_of("sessions.reset").is_empty(),
        "no admin scope: not even tried"
    );
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real openclaw gateway: run tests/openclaw-interop/run.sh"]
async fn real_gateway_through_clawbox() {
    let url = std::env::var("OPENCLAW_URL").expect("OPENCLAW_URL");
    let token = std::env::var("OPENCLAW_TOKEN").expect("OPENCLAW_TOKEN");
    let model_log = std::env::var_os("OPENCLAW_MODEL_LOG").map(PathBuf::from);
    scenario(&url, &token, Peer::Real { model_log }).await;
}
