//! Malformed input from each fake server against the real `clawbox run` binary: WhatsApp (a frame
//! that fails Noise decryption, a valid frame holding no binary node, a truncated frame, an
//! oversized frame), Telegram (cut-off JSON, wrong shapes, non-JSON 200, a proxy's HTML 502),
//! OpenAI (broken SSE, a non-JSON data line, a stream cut before `[DONE]`, a 200 with HTML) and
//! OpenClaw (non-JSON text, wrong types, an unknown event, a binary frame). For each: a clear
//! error in the log saying what and where, the link recovers (the next message is answered),
//! nothing is lost (the message in flight is answered exactly once), the process stays up.
//! Each test prints a `QA <scenario>: ` line with its figures.

use kit::{fakes, support};

use fakes::openai::{FakeConfig as AiConfig, FakeOpenAi, Scripted};
use fakes::openclaw::{FakeConfig as ClawConfig, FakeGateway};
use fakes::telegram::{FakeError, FakeTelegram};
use fakes::whatsapp::FakeWhatsApp;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

const TOKEN: &str = "123456:TEST-token_abc";
const ALICE: i64 = 111;
const FRIEND: &str = "+15550002222";
const POLITE: &str = "Sorry, I couldn't reach the assistant just now.";

// ---- shared helpers ------------------------------------------------------------------------

fn telegram_section(tg: &FakeTelegram) -> String {
    format!(
        "[channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{ALICE}]\napi_root = \"{}\"\npoll_timeout_s = 2\n",
        tg.api_root()
    )
}

fn tg_replies(tg: &FakeTelegram, word: &str) -> usize {
    tg.sent()
        .iter()
        .filter(|m| m.chat_id == ALICE && m.text.contains(word))
        .count()
}

async fn tg_wait_reply(tg: &FakeTelegram, word: &str) {
    wait_for(
        &format!("a reply mentioning {word}"),
        || tg_replies(tg, word) >= 1,
        || format!("{:#?}", tg.sent()),
    )
    .await;
}

/// Lines of stderr at warn or error level mentioning every one of `needles`.
fn log_lines(p: &Proc, needles: &[&str]) -> Vec<String> {
    p.stderr()
        .into_iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

async fn wait_log(p: &Proc, what: &str, needles: &[&str]) -> String {
    let n: Vec<String> = needles.iter().map(|s| s.to_string()).collect();
    p.wait_stderr(what, |e| {
        e.iter().any(|l| {
            (l.contains("WARN") || l.contains("ERROR")) && n.iter().all(|x| l.contains(x.as_str()))
        })
    })
    .await;
    log_lines(p, needles).remove(0)
}

async fn stop(mut p: Proc) {
    p.sigterm();
    assert_eq!(
        p.exit_code().await,
        Some(0),
        "clean exit: {:#?}",
        p.stderr()
    );
}

fn still_running(p: &mut Proc) {
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the process stays up: {:#?}",
        p.stderr()
    );
}

// ---- Telegram ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bot_api_answers_are_logged_and_nothing_is_lost() {
    let tg = FakeTelegram::start(TOKEN).await;
    let bx = TestBox::new(&telegram_section(&tg), &[("tg.token", TOKEN)]);
    let mut p = bx.run().await;
    tg.push_text(ALICE, ALICE, "warm-up");
    tg_wait_reply(&tg, "warm-up").await;

    let faults = [
        ("cut-off JSON", FakeError::Garbage),
        ("wrong shape", FakeError::WrongShape),
        ("non-JSON 200", FakeError::NotJson),
        ("HTML 502", FakeError::ProxyHtml502),
    ];
    let mut timings = Vec::new();
    for (i, (name, fault)) in faults.iter().enumerate() {
        let before = tg.calls("getupdates");
        tg.fail_next("getUpdates", 1, fault.clone());
        // The fault is served on the next poll; this message waits behind it.
        let word = format!("in-flight-{i}");
        let t = Instant::now();
        tg.push_text(ALICE, ALICE, &word);
        wait_for(
            &format!("the {name} answer served"),
            || tg.calls("getupdates") >= before + 2,
            String::new,
        )
        .await;
        tg_wait_reply(&tg, &word).await;
        timings.push(t.elapsed());
    }
    // Updates of the wrong types inside a good answer: skipped, the good one after them answered.
    let bad1 = tg.push_raw(
        serde_json::json!({"message": {"message_id": "seven", "chat": "alice",
        "from": 5, "date": "now", "text": 42}}),
    );
    let bad2 = tg.push_raw(serde_json::json!({"message": [1, 2, 3]}));
    tg.push_text(ALICE, ALICE, "after-bad-updates");
    tg_wait_reply(&tg, "after-bad-updates").await;
    tg.wait_confirmed(bad2 + 2, SOON).await;

    let getupdates_logged = wait_log(
        &p,
        "the unreadable answer logged",
        &["telegram", "getUpdates"],
    )
    .await;
    let skipped = wait_log(
        &p,
        "the skipped updates logged",
        &["telegram", "skipped unreadable updates"],
    )
    .await;
    let html = log_lines(&p, &["telegram", "502"]);
    assert!(!html.is_empty(), "the 502 is named: {:#?}", p.stderr());

    // Settle: one more message, then every reply is counted once.
    tg.push_text(ALICE, ALICE, "settle");
    tg_wait_reply(&tg, "settle").await;
    for i in 0..faults.len() {
        assert_eq!(
            tg_replies(&tg, &format!("in-flight-{i}")),
            1,
            "exactly once"
        );
    }
    assert_eq!(tg.pending_updates(), 0, "nothing left unconfirmed");
    let m = bx.metrics().await;
    let malformed: u64 = m
        .lines()
        .find(|l| l.starts_with("clawbox_malformed_total{channel=\"telegram\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Three unreadable answers (the 502 is a transient server error) and two unreadable updates.
    assert!(malformed >= 5, "{m}");
    still_running(&mut p);
    let worst = timings.iter().max().copied().unwrap_or_default();
    println!(
        "QA malformed-telegram: 4 bad answers + 2 bad updates (ids {bad1},{bad2}), malformed_total={malformed}, \
         every in-flight message answered once, slowest recovery {:.1}s; log: {:?} / {:?} / {:?}",
        worst.as_secs_f64(),
        getupdates_logged,
        skipped,
        html.first()
    );
    stop(p).await;
}

// ---- OpenAI --------------------------------------------------------------------------------

fn sse(data: &str) -> String {
    format!("data: {data}\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_openai_streams_end_in_the_polite_reply_once() {
    let tg = FakeTelegram::start(TOKEN).await;
    let ai = FakeOpenAi::start(AiConfig::default()).await;
    let agent = format!(
        "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
        ai.base_url()
    );
    let bx = TestBox::new(
        &format!("{agent}{}", telegram_section(&tg)),
        &[("tg.token", TOKEN)],
    );
    let mut p = bx.run().await;
    tg.push_text(ALICE, ALICE, "warm-up");
    tg_wait_reply(&tg, "echo: warm-up").await;

    let role = sse(
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    );
    let part = sse(
        r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"half an ans"},"finish_reason":null}]}"#,
    );
    let cases: Vec<(&str, Scripted, &[&str])> = vec![
        (
            "broken SSE lines",
            // A line far longer than any event the parser accepts, never ended.
            Scripted::Stream(vec![
                role.clone(),
                format!("data: {}", "x".repeat(2 * 1024 * 1024)),
            ]),
            &["turn failed"],
        ),
        (
            "non-JSON data line",
            Scripted::Stream(vec![role.clone(), sse("<html>oops</html>"), sse("[DONE]")]),
            &["turn failed", "not a chat.completion.chunk"],
        ),
        (
            "stream cut before [DONE]",
            Scripted::StreamCut(vec![role.clone(), part.clone()]),
            &["turn failed"],
        ),
        (
            "200 with HTML",
            Scripted::Body {
                status: 200,
                content_type: "text/html",
                body: "<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>".into(),
            },
            &["turn failed"],
        ),
    ];
    let mut evidence = Vec::new();
    for (i, (name, script, needles)) in cases.into_iter().enumerate() {
        ai.script_next(script);
        let word = format!("question-{i}");
        let t = Instant::now();
        tg.push_text(ALICE, ALICE, &word);
        wait_for(
            &format!("the polite reply after {name}"),
            || tg.sent().iter().filter(|m| m.text.contains(POLITE)).count() > i,
            || format!("{:#?}\n{:#?}", tg.sent(), p.stderr()),
        )
        .await;
        let line = wait_log(&p, name, needles).await;
        assert_eq!(ai.scripted_left(), 0, "{name} was served");
        evidence.push(format!("{name}: {:.1}s", t.elapsed().as_secs_f64()));
        let _ = line;
        // The next message is answered normally: the agent link recovered.
        let next = format!("next-{i}");
        tg.push_text(ALICE, ALICE, &next);
        tg_wait_reply(&tg, &format!("echo: {next}")).await;
    }
    let polite = tg.sent().iter().filter(|m| m.text.contains(POLITE)).count();
    assert_eq!(
        polite,
        4,
        "one polite reply per bad stream: {:#?}",
        tg.sent()
    );
    assert!(
        tg.sent().iter().all(|m| !m.text.contains("half an ans")),
        "a cut stream is never passed off as the answer: {:#?}",
        tg.sent()
    );
    let errors: Vec<String> = log_lines(&p, &["turn failed"]);
    still_running(&mut p);
    println!(
        "QA malformed-openai: 4 bad streams, 4 polite replies (one each), {} 'turn failed' log lines, \
         next message answered each time; {}; e.g. {:?}",
        errors.len(),
        evidence.join(", "),
        errors.first()
    );
    stop(p).await;
}

// ---- OpenClaw ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_gateway_frames_are_logged_and_the_turn_is_answered_once() {
    let tg = FakeTelegram::start(TOKEN).await;
    let gw = FakeGateway::start(ClawConfig {
        delta_delay: Duration::from_millis(700),
        ..Default::default()
    })
    .await;
    let agent = format!(
        "[agents.claw]\nkind = \"openclaw\"\nurl = \"{}\"\ntoken_file = \"gw.token\"\n",
        gw.url
    );
    let bx = TestBox::new(
        &format!("{agent}{}", telegram_section(&tg)),
        &[("tg.token", TOKEN), ("gw.token", "test-token")],
    );
    let mut p = bx.run().await;
    tg.push_text(ALICE, ALICE, "warm-up");
    tg_wait_reply(&tg, "echo: warm-up").await;
    let connects_before = gw.hellos();

    // One bad frame per turn, each sent while that turn's run is in flight at the gateway.
    enum Bad {
        Text(&'static str),
        Binary(&'static [u8]),
    }
    let cases: [(&str, Bad); 5] = [
        ("non-JSON text", Bad::Text("this is not json {")),
        (
            "wrong types (event)",
            Bad::Text(
                r#"{"type":"event","event":"chat","payload":"should be an object","seq":"nine"}"#,
            ),
        ),
        (
            "wrong types (res)",
            Bad::Text(r#"{"type":"res","id":42,"ok":"yes"}"#),
        ),
        (
            "unknown event",
            Bad::Text(r#"{"type":"event","event":"presence.galaxy","payload":{"x":1},"seq":99}"#),
        ),
        ("binary frame", Bad::Binary(&[0x00, 0x01, 0xfe, 0xff])),
    ];
    let mut evidence = Vec::new();
    for (i, (name, bad)) in cases.iter().enumerate() {
        let hellos = gw.hellos();
        let calls = gw.model_calls();
        let lines_before = p.stderr().len();
        let word = format!("in-flight-{i}");
        let t = Instant::now();
        tg.push_text(ALICE, ALICE, &word);
        wait_for("the run started", || gw.model_calls() > calls, String::new).await;
        match bad {
            Bad::Text(t) => gw.send_raw_text(t),
            Bad::Binary(b) => gw.send_raw_binary(b),
        }
        tg_wait_reply(&tg, &format!("echo: {word}")).await;
        let took = t.elapsed();
        let next = format!("next-{i}");
        tg.push_text(ALICE, ALICE, &next);
        tg_wait_reply(&tg, &format!("echo: {next}")).await;
        let said: Vec<String> = p.stderr()[lines_before..]
            .iter()
            .filter(|l| l.contains("gateway"))
            .cloned()
            .collect();
        evidence.push(format!(
            "{name}: answered in {:.1}s, reconnects {}, log {:?}",
            took.as_secs_f64(),
            gw.hellos() - hellos,
            said.first()
        ));
    }
    tg.push_text(ALICE, ALICE, "settle");
    tg_wait_reply(&tg, "echo: settle").await;
    for (i, (name, _)) in cases.iter().enumerate() {
        assert_eq!(
            tg_replies(&tg, &format!("echo: in-flight-{i}")),
            1,
            "{name}: exactly once: {:#?}",
            tg.sent()
        );
    }
    assert!(
        tg.sent().iter().all(|m| !m.text.contains(POLITE)),
        "no polite error needed: {:#?}",
        tg.sent()
    );
    let malformed = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains("malformed frame from the gateway"))
        .collect::<Vec<_>>();
    assert!(
        malformed.iter().any(|l| l.contains("not JSON")),
        "the non-JSON frame is named in the log: {:#?}",
        p.stderr()
    );
    still_running(&mut p);
    println!(
        "QA malformed-openclaw: 5 bad frames, each during a run; every in-flight turn answered once, next \
         message answered; total reconnects {}; {}",
        gw.hellos() - connects_before,
        evidence.join("; ")
    );
    stop(p).await;
}

// ---- WhatsApp ------------------------------------------------------------------------------

async fn wa_connected(fake: &FakeWhatsApp) -> bool {
    fake.state().await.connected
}

async fn wa_replies(fake: &FakeWhatsApp, word: &str) -> usize {
    fake.contact_inbox(FRIEND)
        .await
        .iter()
        .filter(|m| m.text.contains(word))
        .count()
}

async fn wa_wait_reply(fake: &FakeWhatsApp, p: &Proc, word: &str) {
    wa_wait_reply_within(fake, p, word, SOON).await
}

async fn wa_wait_reply_within(fake: &FakeWhatsApp, p: &Proc, word: &str, within: Duration) {
    let t = Instant::now();
    while wa_replies(fake, word).await == 0 {
        assert!(
            t.elapsed() < within,
            "no reply mentioning {word}: {:#?}\n{:#?}",
            fake.contact_inbox(FRIEND).await,
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wa_box(fake: &FakeWhatsApp) -> TestBox {
    TestBox::new(
        &format!(
            "[channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\nallow_from = [\"{FRIEND}\"]\n",
            fake.ws_url(),
            fake.version_url()
        ),
        &[],
    )
}

/// A linked, running, connected box that has answered one message.
async fn wa_running() -> (FakeWhatsApp, TestBox, Proc) {
    let fake = FakeWhatsApp::start().await;
    let bx = wa_box(&fake);
    pair_whatsapp(&fake, &bx).await;
    let p = bx.run().await;
    let t = Instant::now();
    while !wa_connected(&fake).await {
        assert!(t.elapsed() < SOON, "not connected");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    fake.contact_send(FRIEND, "warm-up", None, None)
        .await
        .unwrap();
    wa_wait_reply(&fake, &p, "warm-up").await;
    (fake, bx, p)
}

const WA_KINDS: [&str; 3] = ["garbage-node", "truncated", "oversized"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_whatsapp_frames_reconnect_and_lose_nothing() {
    let (fake, bx, mut p) = wa_running().await;
    let mut evidence = Vec::new();
    for kind in WA_KINDS {
        let attempts = fake.connection_attempts().await;
        let word = format!("in-flight-{kind}");
        // The bad frame first, then a message right behind it: it is in flight while the link
        // breaks (or survives) and must be answered exactly once either way.
        let lines_before = p.stderr().len();
        fake.fault(kind, None).await.unwrap();
        let _ = fake.contact_send(FRIEND, &word, None, None).await;
        let t = Instant::now();
        wa_wait_reply(&fake, &p, &word).await;
        let answered = t.elapsed();
        let reconnects = fake.connection_attempts().await - attempts;
        let next = format!("next-{kind}");
        fake.contact_send(FRIEND, &next, None, None).await.unwrap();
        wa_wait_reply(&fake, &p, &next).await;
        // What the log says about it (the library's own warnings are forwarded).
        let said: Vec<String> = p.stderr()[lines_before..]
            .iter()
            .filter(|l| {
                (l.contains("WARN") || l.contains("ERROR"))
                    && (l.contains("unmarshal")
                        || l.contains("decrypt")
                        || l.contains("Transport")
                        || l.contains("disconnect"))
            })
            .cloned()
            .collect();
        assert!(
            !said.is_empty(),
            "{kind}: a clear error in the log: {:#?}",
            &p.stderr()[lines_before..]
        );
        evidence.push(format!(
            "{kind}: {reconnects} reconnect(s), in-flight answered in {:.1}s, log {:?}",
            answered.as_secs_f64(),
            said[0].split_once("Z ").map(|x| x.1).unwrap_or(&said[0])
        ));
    }
    fake.contact_send(FRIEND, "settle", None, None)
        .await
        .unwrap();
    wa_wait_reply(&fake, &p, "settle").await;
    for kind in WA_KINDS {
        assert_eq!(
            wa_replies(&fake, &format!("in-flight-{kind}")).await,
            1,
            "{kind}: exactly once"
        );
        assert_eq!(
            wa_replies(&fake, &format!("next-{kind}")).await,
            1,
            "{kind}: next once"
        );
    }
    still_running(&mut p);
    let health = bx.health().await;
    assert!(health.contains("whatsapp"), "{health}");
    println!(
        "QA malformed-whatsapp: {}; every in-flight and next message answered exactly once",
        evidence.join("; ")
    );
    stop(p).await;
}

/// Limit on how long the link may stay wedged after a frame that fails decryption: the README's
/// 39 s for a link that carries bytes but answers nothing (the keepalive probe), plus 6 s for the
/// reconnect, the redelivery and the reply.
const DECRYPT_RECOVERY: Duration = Duration::from_secs(45);

// whatsapp-rust 0.7.0 advances its read counter on a failed decrypt and counts the undecryptable
// bytes as received data, so its dead-socket check never fires: every later frame fails too and
// the link stays up but deaf (observed > 2 min without a reconnect before the fix). clawbox's
// deaf-link probe (src/channel/whatsapp/probe.rs) notices the unanswered pings and reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_fails_decryption_is_logged_and_the_link_recovers() {
    let (fake, _bx, mut p) = wa_running().await;
    let attempts = fake.connection_attempts().await;
    fake.fault("bad-decrypt", None).await.unwrap();
    fake.contact_send(FRIEND, "after-bad-decrypt", None, None)
        .await
        .unwrap();
    let t = Instant::now();
    wa_wait_reply_within(&fake, &p, "after-bad-decrypt", DECRYPT_RECOVERY).await;
    let took = t.elapsed();
    let reconnects = fake.connection_attempts().await - attempts;
    let logged: Vec<String> = p
        .stderr()
        .into_iter()
        .filter(|l| l.contains("decrypt"))
        .collect();
    still_running(&mut p);
    println!(
        "QA malformed-whatsapp-decrypt: answered {:.1}s after a frame that fails Noise decryption; \
         reconnects {reconnects}; log {:?}",
        took.as_secs_f64(),
        logged.first()
    );
    assert!(
        !logged.is_empty(),
        "the decryption failure is logged: {:#?}",
        p.stderr()
    );
    stop(p).await;
}
