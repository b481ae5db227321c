//! Telegram's conversation cues through the real daemon, against the fake Bot API and a fake
//! OpenAI agent: the commands (registered with setMyCommands, `/start` and `/help` answered
//! without an agent call, `/reset` starting a fresh conversation, a stranger's command ignored),
//! a 👍 on a reply noted as feedback for the next turn instead of starting one, and the
//! acknowledgement reaction on a slow turn (and none on a fast one).

use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi, last_user_message};
use fakes::telegram::{FakeError, FakeTelegram, ReactionCall};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::*;

const TOKEN: &str = "123456:TEST-token_abc";
const ALICE: i64 = 111;
const STRANGER: i64 = 999;

struct Gw {
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    port: u16,
}

/// The daemon with Telegram (ALICE allowed) and `ai` as its agent; `router` is extra `[router]`
/// settings.
fn gateway(tg: &FakeTelegram, ai: &FakeOpenAi, router: &str) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    write_secret(dir.path().join("tg.token"), TOKEN);
    let port = free_port();
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
         [router]\n{router}\n\
         [agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n\
         [channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{ALICE}]\n\
         api_root = \"{}\"\npoll_timeout_s = 2\n",
        dir.path().join("state").display(),
        ai.base_url(),
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
    async fn start(&self) -> Proc {
        let p = spawn(
            &["run", "--config", self.cfg.to_str().unwrap()],
            &[],
            self.dir.path(),
        );
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        p
    }
}

/// Pushes `text` from ALICE and waits for the reply that follows it; returns the reply's text.
async fn ask(tg: &FakeTelegram, text: &str) -> String {
    let before = tg.sent().len();
    tg.push_text(ALICE, ALICE, text);
    let sent = tg.wait_sent(before + 1, SOON).await;
    sent[before].text.clone()
}

/// The chat messages of an agent request, as (role, content).
fn messages(req: &Value) -> Vec<(String, String)> {
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").to_string(),
                m["content"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_in_the_menu_start_and_help_skip_the_agent_and_reset_clears_the_history() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(FakeConfig::default()).await;
    let gw = gateway(&tg, &ai, "");
    let mut p = gw.start().await;

    tg.wait_calls("setMyCommands", 1, SOON).await;
    assert_eq!(
        tg.my_commands(),
        Some(vec![
            "start".into(),
            "new".into(),
            "reset".into(),
            "help".into()
        ])
    );

    // A stranger's command does nothing: policy first.
    let stranger = tg.push_text(STRANGER, STRANGER, "/start");
    tg.wait_confirmed(stranger + 1, SOON).await;

    let start = ask(&tg, "/start").await;
    assert!(start.contains("AI assistant"), "{start}");
    let help = ask(&tg, "/help@clawbox_test_bot").await;
    assert!(help.contains("/reset"), "{help}");
    assert!(
        ai.requests().is_empty(),
        "no agent call for /start or /help"
    );

    assert_eq!(ask(&tg, "first question").await, "echo: first question");
    assert_eq!(ask(&tg, "second question").await, "echo: second question");
    let reqs = ai.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        messages(&reqs[1]),
        vec![
            ("user".into(), "first question".into()),
            ("assistant".into(), "echo: first question".into()),
            ("user".into(), "second question".into()),
        ],
        "the conversation so far goes with the second turn"
    );

    let reset = ask(&tg, "/reset").await;
    assert!(reset.contains("fresh conversation"), "{reset}");
    assert_eq!(ask(&tg, "third question").await, "echo: third question");
    let reqs = ai.requests();
    assert_eq!(reqs.len(), 3, "/reset made no agent call of its own");
    assert_eq!(
        messages(&reqs[2]),
        vec![("user".into(), "third question".into())],
        "after /reset the agent starts with an empty history"
    );
    // `/new` is the same reset.
    let new = ask(&tg, "/new").await;
    assert!(new.contains("fresh conversation"), "{new}");

    assert!(
        tg.sent().iter().all(|m| m.chat_id != STRANGER),
        "{:#?}",
        tg.sent()
    );
    let m = http_get(&format!("http://127.0.0.1:{}/metrics", gw.port)).await;
    assert_eq!(metric(&m, "clawbox_session_resets_total"), 2);
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbs_up_on_a_reply_starts_no_turn_and_reaches_the_next_one() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(FakeConfig::default()).await;
    let gw = gateway(&tg, &ai, "");
    let mut p = gw.start().await;

    assert_eq!(ask(&tg, "tell me a joke").await, "echo: tell me a joke");
    let reply_id = tg.sent()[0].message_id;
    let r = tg.push_reaction(ALICE, ALICE, reply_id, "👍");
    // The stranger's reaction is dropped by policy, like their messages.
    let s = tg.push_reaction(STRANGER, STRANGER, reply_id, "👎");
    tg.wait_confirmed(s.max(r) + 1, SOON).await;
    let m = metrics_showing(gw.port, &["clawbox_feedback_total 1"]).await;
    assert_eq!(metric(&m, "clawbox_feedback_total"), 1, "{m}");

    assert_eq!(
        ask(&tg, "another one").await,
        "echo: [feedback: 👍 on an earlier message]\nanother one"
    );
    let reqs = ai.requests();
    assert_eq!(reqs.len(), 2, "the 👍 started no turn of its own");
    assert_eq!(tg.sent().len(), 2, "and got no reply: {:#?}", tg.sent());
    assert_eq!(
        last_user_message(&reqs[1]),
        "[feedback: 👍 on an earlier message]\nanother one"
    );
    // Given once: the turn after does not repeat it.
    assert_eq!(ask(&tg, "and again").await, "echo: and again");
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reply_gets_the_ack_reaction_and_loses_it_a_fast_one_never_gets_it() {
    let tg = FakeTelegram::start(TOKEN).await;
    // 100 ms per 4 characters: "ok" is there in ~0.3 s, the slow answer takes ~2.5 s.
    let ai = FakeOpenAi::start(FakeConfig {
        reply: Arc::new(|req| {
            if last_user_message(req).contains("slow") {
                "a considered answer that takes the agent quite a while to write".into()
            } else {
                "ok".into()
            }
        }),
        chunk_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let gw = gateway(&tg, &ai, "ack_reaction_after_ms = 1000\n");
    let mut p = gw.start().await;

    assert_eq!(ask(&tg, "fast please").await, "ok");
    // The reaction would have been sent before the reply (one command queue, in order).
    assert_eq!(tg.reactions(), vec![], "no reaction on a fast reply");

    let before = tg.sent().len();
    tg.push_text(ALICE, ALICE, "slow please");
    let asked = tg.last_message_id();
    let sent = tg.wait_sent(before + 1, SOON).await;
    assert!(sent[before].text.starts_with("a considered answer"));
    let reactions = tg.reactions();
    assert_eq!(
        reactions,
        vec![
            ReactionCall {
                chat_id: ALICE,
                message_id: asked,
                emoji: Some("👀".into())
            },
            ReactionCall {
                chat_id: ALICE,
                message_id: asked,
                emoji: None
            },
        ],
        "👀 on the slow message, then taken off"
    );
    let calls = tg.calls_of("setMessageReaction");
    let at_agent = ai
        .arrival_of(|r| r.body.to_string().contains("slow please"))
        .unwrap();
    let waited = calls[0].at.duration_since(at_agent);
    assert!(
        waited >= Duration::from_millis(900),
        "the reaction came after the threshold, not {waited:?}"
    );
    assert!(
        calls[1].at <= sent[before].at,
        "taken off when the reply is ready"
    );
    let m = http_get(&format!("http://127.0.0.1:{}/metrics", gw.port)).await;
    assert_eq!(metric(&m, "clawbox_ack_reactions_total"), 1, "{m}");
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

/// Edits are ignored unless `handle_edits = true` (README, "Conversation cues"): the box does not
/// ask for them, so the edit starts no turn; deletions reach no bot at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_an_answered_message_is_ignored_by_default() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(FakeConfig::default()).await;
    let gw = gateway(&tg, &ai, "");
    let mut p = gw.start().await;
    assert_eq!(ask(&tg, "original words").await, "echo: original words");
    tg.push_edit(ALICE, ALICE, "edited words");
    assert_eq!(ask(&tg, "after the edit").await, "echo: after the edit");
    assert_eq!(ai.requests().len(), 2, "no turn for the edit");
    assert!(
        tg.sent().iter().all(|m| !m.text.contains("edited")),
        "{:#?}",
        tg.sent()
    );
    let m = http_get(&format!("http://127.0.0.1:{}/metrics", gw.port)).await;
    assert_eq!(
        metric(&m, "clawbox_messages_in_total{channel=\"telegram\"}"),
        2,
        "{m}"
    );
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}

/// setMyCommands refused at every try: logged, and the bot answers (commands included) anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_set_my_commands_is_logged_and_not_fatal() {
    let tg = FakeTelegram::start(TOKEN).await;
    tg.fail_next("setMyCommands", 3, FakeError::ServerError);
    let ai = FakeOpenAi::start(FakeConfig::default()).await;
    let gw = gateway(&tg, &ai, "");
    let mut p = gw.start().await;
    tg.wait_calls("setMyCommands", 3, SOON).await;
    p.wait_stderr("the setMyCommands warning", |e| {
        e.iter().any(|l| l.contains("setMyCommands failed"))
    })
    .await;
    assert_eq!(ask(&tg, "still there?").await, "echo: still there?");
    assert!(ask(&tg, "/help").await.contains("/reset"));
    assert_eq!(tg.calls("setMyCommands"), 3, "bounded: no fourth try");
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0));
}
