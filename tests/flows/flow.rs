//! End to end through the real binary, on loopback, against the fakes: a streamed turn with
//! history and 🗑️ reset (console), the allowlist, two chats at once, batching during a turn, and
//! the ack and accumulation timeouts (Telegram and console), a console line typed slowly.

use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi, last_user_message};
use fakes::telegram::FakeTelegram;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const TOKEN: &str = "123456:TEST-token_abc";

fn console_config(dir: &std::path::Path, base_url: &str, extra: &str) -> String {
    format!(
        "[gateway]\nstate_dir = \"{}\"\n\n{extra}\n\n[agents.ai]\nkind = \"openai\"\nurl = \"{base_url}\"\nmodel = \"fake-model\"\nsystem_prompt = \"Be brief.\"\n",
        dir.join("state").display()
    )
}

fn messages(req: &Value) -> Vec<(String, String)> {
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(role: &str, text: &str) -> (String, String) {
    (role.to_string(), text.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_turns_keep_history_until_a_reset() {
    let fake = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(30),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, console_config(dir.path(), &fake.base_url(), "")).unwrap();
    let mut p = spawn(
        &["chat", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    );

    p.write_line("hello there").await;
    p.wait_stdout("first reply", |o| {
        o.iter().any(|l| l == "echo: hello there")
    })
    .await;
    p.write_line("how are you").await;
    p.wait_stdout("second reply", |o| {
        o.iter().any(|l| l == "echo: how are you")
    })
    .await;
    p.write_line("🗑️").await;
    p.wait_stdout("reset confirmation", |o| {
        o.iter().any(|l| l.contains("fresh conversation"))
    })
    .await;
    p.write_line("again").await;
    p.wait_stdout("third reply", |o| o.iter().any(|l| l == "echo: again"))
        .await;
    p.close_stdin();
    assert_eq!(p.exit_code().await, Some(0), "{:?}", p.stderr());

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3, "the reset is not sent to the agent");
    assert!(reqs.iter().all(|r| r["stream"] == Value::Bool(true)));
    assert_eq!(
        messages(&reqs[0]),
        vec![pair("system", "Be brief."), pair("user", "hello there")]
    );
    assert_eq!(
        messages(&reqs[1]),
        vec![
            pair("system", "Be brief."),
            pair("user", "hello there"),
            pair("assistant", "echo: hello there"),
            pair("user", "how are you"),
        ],
        "history is sent on the second turn"
    );
    assert_eq!(
        messages(&reqs[2]),
        vec![pair("system", "Be brief."), pair("user", "again")],
        "history cleared by 🗑️"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_ends_the_turn_politely() {
    let fake = FakeOpenAi::start(FakeConfig {
        head_delay: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let extra = "[router]\nack_timeout_s = 1\ntimeout_reply = \"Sorry, slow assistant.\"";
    std::fs::write(&cfg, console_config(dir.path(), &fake.base_url(), extra)).unwrap();
    let mut p = spawn(
        &["chat", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    );
    p.write_line("anyone there?").await;
    p.wait_stdout("the polite timeout reply", |o| {
        o.iter().any(|l| l == "Sorry, slow assistant.")
    })
    .await;
    p.close_stdin();
    assert_eq!(p.exit_code().await, Some(0));
    assert_eq!(fake.completed(), 0, "the agent never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accumulation_timeout_ends_a_stalled_stream_politely() {
    let fake = FakeOpenAi::start(FakeConfig {
        stall_after_first_chunk: true,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let extra = "[router]\nack_timeout_s = 30\naccumulation_timeout_s = 1\ntimeout_reply = \"Sorry, it stalled.\"";
    std::fs::write(&cfg, console_config(dir.path(), &fake.base_url(), extra)).unwrap();
    let mut p = spawn(
        &["chat", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    );
    p.write_line("tell me a story").await;
    p.wait_stdout("the polite stall reply", |o| {
        o.iter().any(|l| l == "Sorry, it stalled.")
    })
    .await;
    p.close_stdin();
    assert_eq!(p.exit_code().await, Some(0));
    fake.wait_abandoned(1).await;
}

struct Gateway {
    _dir: tempfile::TempDir,
    proc_: Proc,
    health: String,
}

async fn start_gateway(tg: &FakeTelegram, ai: &FakeOpenAi, allow: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path().join("tg.token"), format!("{TOKEN}\n"));
    let port = free_port();
    let cfg = format!(
        "[gateway]\nstate_dir = \"{state}\"\nhealth_listen = \"127.0.0.1:{port}\"\n\n[pacing]\nenabled = false\n\n\
         [agents.ai]\nkind = \"openai\"\nurl = \"{url}\"\nmodel = \"fake-model\"\n\n\
         [channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{allow}]\napi_root = \"{root}\"\npoll_timeout_s = 5\n",
        state = dir.path().join("state").display(),
        url = ai.base_url(),
        root = tg.api_root(),
    );
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    let p = spawn(
        &["run", "--config", path.to_str().unwrap()],
        &[],
        dir.path(),
    );
    p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
        .await;
    Gateway {
        _dir: dir,
        proc_: p,
        health: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_causes_no_agent_call_no_typing_no_reply() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(FakeConfig::default()).await;
    let mut gw = start_gateway(&tg, &ai, "111").await;

    let stranger = tg.push_text(222, 222, "let me in");
    tg.wait_confirmed(stranger + 1, SOON).await;
    // The allowed user right after proves the pipeline works, so the silence above is meaningful.
    tg.push_text(111, 111, "hi, it's me");
    let sent = tg.wait_sent(1, SOON).await;
    assert_eq!(sent[0].chat_id, 111);
    assert_eq!(sent[0].text, "echo: hi, it's me");

    assert_eq!(
        ai.requests().len(),
        1,
        "only the allowed user reached the agent"
    );
    assert!(
        tg.sent().iter().all(|m| m.chat_id != 222),
        "no reply to the stranger"
    );
    assert!(
        tg.chat_actions().iter().all(|a| a.chat_id != 222),
        "no typing for the stranger"
    );
    let metrics = http_get(&format!("{}/metrics", gw.health)).await;
    assert!(
        metrics.contains(
            "clawbox_messages_dropped_total{channel=\"telegram\",reason=\"not_allowed\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("clawbox_messages_in_total{channel=\"telegram\"} 1"),
        "{metrics}"
    );
    let health = http_get(&format!("{}/healthz", gw.health)).await;
    assert!(health.contains("\"telegram\""), "{health}");
    gw.proc_.sigterm();
    assert_eq!(gw.proc_.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chats_at_once_never_see_each_others_replies() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(40),
        ..Default::default()
    })
    .await;
    let mut gw = start_gateway(&tg, &ai, "111, 333").await;
    for i in 0..3 {
        tg.push_text(111, 111, &format!("alice-{i}"));
        tg.push_text(333, 333, &format!("bob-{i}"));
    }
    // Batching may merge some of each chat's messages; every word must come back, to its own chat.
    support::wait_for(
        "all six words answered",
        || {
            let sent = tg.sent();
            (0..3).all(|i| {
                sent.iter().any(|m| m.text.contains(&format!("alice-{i}")))
                    && sent.iter().any(|m| m.text.contains(&format!("bob-{i}")))
            })
        },
        || format!("{:#?}", tg.sent()),
    )
    .await;
    for m in tg.sent() {
        match m.chat_id {
            111 => assert!(!m.text.contains("bob"), "alice got bob's reply: {m:?}"),
            333 => assert!(!m.text.contains("alice"), "bob got alice's reply: {m:?}"),
            other => panic!("reply to unknown chat {other}"),
        }
    }
    gw.proc_.sigterm();
    assert_eq!(gw.proc_.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_messages_during_a_turn_become_exactly_one_next_turn() {
    let tg = FakeTelegram::start(TOKEN).await;
    // The first turn streams slowly, so the next three arrive while it is in flight.
    let ai = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(300),
        reply: Arc::new(|req| format!("echo: {}", last_user_message(req))),
        ..Default::default()
    })
    .await;
    let mut gw = start_gateway(&tg, &ai, "111").await;
    tg.push_text(111, 111, "first");
    support::wait_for(
        "the first request",
        || !ai.requests().is_empty(),
        String::new,
    )
    .await;
    let a = tg.push_text(111, 111, "second");
    tg.push_text(111, 111, "third");
    let c = tg.push_text(111, 111, "fourth");
    tg.wait_confirmed(c + 1, SOON).await;
    assert!(a < c);
    tg.wait_sent(2, SOON).await;
    // Give a would-be third turn the chance to show up before counting.
    support::wait_for("the second turn done", || ai.completed() >= 2, String::new).await;
    let reqs = ai.requests();
    assert_eq!(reqs.len(), 2, "exactly one turn after the first: {reqs:#?}");
    assert_eq!(last_user_message(&reqs[1]), "second\nthird\nfourth");
    let sent = tg.sent();
    assert_eq!(sent[0].text, "echo: first");
    assert_eq!(sent[1].text, "echo: second\nthird\nfourth");
    gw.proc_.sigterm();
    assert_eq!(gw.proc_.exit_code().await, Some(0));
}

/// A line typed in two parts, with a pause longer than the console loop's idle tick between them,
/// is one message: the tick that turns the loop does not lose the part already read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_line_typed_slowly_is_one_message() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut p = spawn(
        &["chat", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    );
    let stdin = p.stdin.as_mut().unwrap();
    stdin.write_all(b"hello ").await.unwrap();
    stdin.flush().await.unwrap();
    // The typing pause itself (the scenario, not a wait for a result).
    tokio::time::sleep(clawbox::channel::console::TICK + Duration::from_secs(1)).await;
    p.write_line("world").await;
    p.wait_stdout("the echo of the whole line", |o| {
        o.iter().any(|l| l == "hello world")
    })
    .await;
    p.close_stdin();
    assert_eq!(p.exit_code().await, Some(0), "{:?}", p.stderr());
    assert_eq!(p.stdout(), vec!["hello world".to_string()], "one message");
}
