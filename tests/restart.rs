//! Crash safety through the real binary: SIGKILL in the middle of a stream of turns, and aborts at
//! each step of the durability order; after a restart on the same state directory every accepted
//! message is answered exactly once and no reply is sent twice.

mod fakes;
mod support;

use fakes::openai::{FakeConfig, FakeOpenAi};
use std::path::Path;
use std::time::Duration;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_in_doubt_is_never_sent_twice() {
    // Crash after the chunk was marked in flight but before it left: on a channel whose sends are
    // not idempotent, its fate is unknown, so it is not resent (and the owner is told in the log).
    let (outs, err) = crash_at("before-send").await;
    assert_eq!(count(&outs, "msg-2"), 0, "{outs:#?}");
    assert!(
        err.iter().any(|l| l.contains("not resending it")),
        "{err:#?}"
    );
}
