//! Crash safety through the real binary: SIGKILL in the middle of a stream of turns, and aborts at
//! each step of the durability order; after a restart on the same state directory every accepted
//! message is answered exactly once and no reply is sent twice. The console (`clawbox chat`) and
//! Telegram with the shipped pacing and chunked replies, where a send's fate is settled by probing.

use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi};
use fakes::telegram::FakeError;
use std::path::Path;
use std::time::Duration;
use support::rig::{self, Agent, Chan, Options, Rig};
use support::*;

/// How many lines of all runs' stdout mention `word` (a reply echoes its message).
fn count(outputs: &[Vec<String>], word: &str) -> usize {
    outputs
        .iter()
        .flatten()
        .filter(|l| l.split(|c: char| c.is_whitespace()).any(|w| w == word))
        .count()
}

fn accepted(p: &Proc) -> usize {
    p.stderr()
        .iter()
        .filter(|l| l.contains(" accepted "))
        .count()
}

fn chat(cfg: &Path, dir: &Path, fault: Option<&str>) -> Proc {
    let mut envs = vec![];
    if let Some(f) = fault {
        envs.push(("CLAWBOX_FAULT", f));
    }
    spawn(&["chat", "--config", cfg.to_str().unwrap()], &envs, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_turn_then_restart_answers_every_accepted_message_once() {
    let ai = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(150),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nstate_dir = \"{}\"\n[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
            dir.path().join("state").display(),
            ai.base_url()
        ),
    )
    .unwrap();

    let mut first = chat(&cfg, dir.path(), None);
    for k in 1..=2 {
        first.write_line(&format!("msg-{k}")).await;
        first
            .wait_stdout("a reply", |o| {
                o.iter().any(|l| l.contains(&format!("msg-{k}")))
            })
            .await;
    }
    first.write_line("msg-3").await;
    first.write_line("msg-4").await;
    // msg-3's turn is streaming and msg-4 is durable and waiting: kill -9 now.
    wait_for(
        "msg-3 at the agent and msg-4 accepted",
        || ai.requests().len() == 3 && accepted(&first) == 4,
        || format!("{:#?}", first.stderr()),
    )
    .await;
    first.kill9().await;
    let out1 = first.stdout();
    assert_eq!(
        count(std::slice::from_ref(&out1), "msg-3"),
        0,
        "msg-3 was not answered before the kill"
    );

    let mut second = chat(&cfg, dir.path(), None);
    second
        .wait_stdout("the resumed turns", |o| {
            count(&[o.to_vec()], "msg-3") == 1 && count(&[o.to_vec()], "msg-4") == 1
        })
        .await;
    second.write_line("msg-5").await;
    second
        .wait_stdout("a reply", |o| o.iter().any(|l| l.contains("msg-5")))
        .await;
    second.close_stdin();
    assert_eq!(second.exit_code().await, Some(0), "{:#?}", second.stderr());
    let outs = [out1, second.stdout()];
    for k in 1..=5 {
        assert_eq!(
            count(&outs, &format!("msg-{k}")),
            1,
            "msg-{k} answered exactly once: {outs:#?}"
        );
    }
}

/// Runs two messages with an abort armed at the second pass of `point`, restarts, and returns
/// both runs' stdout and the second run's stderr.
async fn crash_at(point: &str) -> ([Vec<String>; 2], Vec<String>) {
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
    let mut first = chat(&cfg, dir.path(), Some(&format!("crash:{point}:2")));
    first.write_line("msg-1").await;
    first
        .wait_stdout("a reply", |o| o.iter().any(|l| l == "msg-1"))
        .await;
    first.write_line("msg-2").await;
    let code = first.exit_code().await;
    assert_eq!(
        code,
        None,
        "the process aborted (killed by a signal): {:#?}",
        first.stderr()
    );
    assert!(
        first
            .stderr()
            .iter()
            .any(|l| l.contains(&format!("injected crash at {point}")))
    );

    let mut second = chat(&cfg, dir.path(), None);
    second.close_stdin();
    assert_eq!(second.exit_code().await, Some(0), "{:#?}", second.stderr());
    ([first.stdout(), second.stdout()], second.stderr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_accept_before_anything_else() {
    let (outs, _) = crash_at("after-accept").await;
    assert_eq!(count(&outs, "msg-1"), 1, "{outs:#?}");
    assert_eq!(
        count(&outs, "msg-2"),
        1,
        "resumed after the restart: {outs:#?}"
    );
    assert_eq!(count(&outs[..1], "msg-2"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_reply_was_recorded_but_not_sent() {
    let (outs, _) = crash_at("after-turn").await;
    assert_eq!(count(&outs, "msg-1"), 1, "{outs:#?}");
    assert_eq!(
        count(&outs, "msg-2"),
        1,
        "sent after the restart: {outs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_sending_before_marking_sent_does_not_send_twice() {
    let (outs, _) = crash_at("after-send").await;
    assert_eq!(
        count(&outs[..1], "msg-2"),
        1,
        "sent before the crash: {outs:#?}"
    );
    assert_eq!(
        count(&outs, "msg-2"),
        1,
        "and not again after the restart: {outs:#?}"
    );
}

/// The console keeps no record of what it printed: a chunk found in flight after a crash cannot
/// be settled there, so it is not printed again (and the log says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_console_a_chunk_in_doubt_is_not_printed_twice() {
    let (outs, err) = crash_at("before-send").await;
    assert_eq!(count(&outs, "msg-2"), 0, "{outs:#?}");
    assert!(
        err.iter().any(|l| l.contains("not resending it")),
        "{err:#?}"
    );
}

// ---- Telegram, as shipped (production pacing, replies split into chunks) -----------------------

/// A Telegram box with the shipped pacing whose agent answers in two chunks; the first message is
/// answered, the second one's turn runs with `fault` armed; then the box restarts clean. Returns
/// the rig (stopped) for the tally.
async fn telegram_crash(fault: &str, trouble: impl FnOnce(&Rig)) -> Rig {
    let mut rig = Rig::new(Options {
        whatsapp: false,
        agent: Agent::OpenAi(FakeConfig {
            reply: rig::long_reply(2, 2_200),
            chars_per_chunk: 500,
            ..Default::default()
        }),
        tg_users: 1,
        pacing: true,
        ..Default::default()
    })
    .await;
    rig.run_with_env(&[("CLAWBOX_FAULT", fault)]).await;
    rig.send_tg(0);
    let counts = rig.wait_all_answered(TG_TURN).await;
    assert!(counts.values().all(|n| *n == 1), "first reply: {counts:#?}");
    trouble(&rig);
    rig.send_tg(0);
    let died = wait_exit(&mut rig, TG_TURN).await;
    assert!(
        died,
        "the armed fault ended the process: {:#?}",
        rig.all_stderr()
    );
    rig.run().await;
    let _ = rig.wait_all_answered(TG_TURN).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.stop().await;
    rig
}

/// Telegram pacing: typing up to 4 s, gaps, two chunks, and a settling probe after a crash.
const TG_TURN: Duration = Duration::from_secs(60);

/// Waits for the running box to exit on its own (an injected abort); true if it did.
async fn wait_exit(rig: &mut Rig, within: Duration) -> bool {
    let Some(mut p) = rig.proc.take() else {
        return false;
    };
    let code = tokio::time::timeout(within, p.exit_code()).await;
    rig.past_stderr.extend(p.stderr());
    matches!(code, Ok(None))
}

async fn assert_each_part_once(rig: &mut Rig) {
    let counts = rig.reply_counts().await;
    assert_eq!(counts.len(), 4, "two messages, two parts each: {counts:#?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "every part exactly once: {counts:#?}\n{:#?}",
        rig.all_stderr()
    );
}

/// Killed after the chunk was marked in flight, before its request left: after the restart the
/// bot's messages are probed, the chunk is not there, it is sent — exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_crash_before_the_request_left_is_answered_exactly_once() {
    // The 3rd arm: the first reply's two chunks, then the second reply's first.
    let mut rig = telegram_crash("crash:before-send:3", |_| {}).await;
    assert_each_part_once(&mut rig).await;
    assert_eq!(
        rig.settled_lines(Chan::Telegram),
        (0, 1),
        "settled: not arrived"
    );
}

/// Killed after Telegram made the message, before it was marked sent: found by probing, never
/// sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_crash_after_the_send_is_not_sent_again() {
    let mut rig = telegram_crash("crash:after-send:3", |_| {}).await;
    assert_each_part_once(&mut rig).await;
    assert_eq!(
        rig.settled_lines(Chan::Telegram),
        (1, 0),
        "settled: arrived"
    );
}

/// A 429 answers the second reply's first chunk, and the box is killed during the wait: the
/// chunk never left, and is sent after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_429_then_a_crash_during_the_wait_loses_nothing() {
    let mut rig = Rig::new(Options {
        whatsapp: false,
        agent: Agent::OpenAi(FakeConfig {
            reply: rig::long_reply(2, 2_200),
            chars_per_chunk: 500,
            ..Default::default()
        }),
        tg_users: 1,
        pacing: true,
        ..Default::default()
    })
    .await;
    rig.run().await;
    rig.tg()
        .fail_next("sendMessage", 1, FakeError::TooManyRequests(30));
    rig.send_tg(0);
    let t = std::time::Instant::now();
    while rig.tg().calls("sendMessage") == 0 {
        assert!(t.elapsed() < TG_TURN, "the reply was tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.kill9().await;
    rig.run().await;
    let _ = rig.wait_all_answered(TG_TURN).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.stop().await;
    let counts = rig.reply_counts().await;
    assert_eq!(counts.len(), 2, "{counts:#?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:#?}");
}

/// Telegram made the message but its answer never came, and the box was killed meanwhile: after
/// the restart the probe finds it; nothing is sent twice. And a request cut before Telegram got
/// it (the link reset while the box runs) is found missing and sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_sends_cut_mid_flight_are_settled_by_probing() {
    let mut rig = Rig::new(Options {
        whatsapp: false,
        agent: Agent::OpenAi(FakeConfig {
            reply: rig::long_reply(2, 2_200),
            chars_per_chunk: 500,
            ..Default::default()
        }),
        tg_users: 1,
        pacing: true,
        ..Default::default()
    })
    .await;
    rig.run().await;
    // 1. Carried out, answer held; killed while waiting for it.
    rig.tg().fail_next(
        "sendMessage",
        1,
        FakeError::CarriedOutAnswerHeld(Duration::from_secs(60)),
    );
    rig.send_tg(0);
    let t = std::time::Instant::now();
    while rig.tg().sent().is_empty() {
        assert!(t.elapsed() < TG_TURN, "the reply was sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rig.kill9().await;
    rig.run().await;
    let counts = rig.wait_all_answered(TG_TURN).await;
    assert!(counts.values().all(|n| *n == 1), "{counts:#?}");
    // 2. The link resets under a live send (the box keeps running): in doubt, probed, resent.
    let before = rig.tg().calls("sendMessage");
    rig.send_tg(0);
    while rig.tg().calls("sendMessage") == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.tg_proxy().reset();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    rig.tg_proxy().pass();
    let _ = rig.wait_all_answered(TG_TURN).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.stop().await;
    let counts = rig.reply_counts().await;
    assert_eq!(counts.len(), 4, "{counts:#?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "{counts:#?}\n{:#?}",
        rig.all_stderr()
    );
    assert!(
        rig.settled_lines(Chan::Telegram).0 >= 1,
        "the held send was found by probing: {:#?}",
        rig.all_stderr()
    );
}
