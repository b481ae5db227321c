//! `clawbox doctor` through the binary against the fakes (WhatsApp, Telegram, an OpenAI-compatible
//! agent): every line OK on a healthy box, with the daemon running and without it; and each
//! broken setting — a wrong Telegram token, an agent nobody answers for, a store owned by the
//! wrong user, a clock two hours off (Telegram's Date header), an unlinked WhatsApp — gives its
//! FAIL line with the fix, and a nonzero exit. The doctor changes nothing it finds wrong.

use kit::{fakes, support};

use fakes::openai::{FakeConfig, FakeOpenAi};
use fakes::telegram::FakeTelegram;
use fakes::whatsapp::FakeWhatsApp;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use support::*;

const TOKEN: &str = "123456:DOCTOR-token_ok";
/// Tests run as root, with no `clawbox` user: the service's user is named (root), so the
/// verdicts do not depend on the machine's users.
const AS_ROOT: (&str, &str) = ("CLAWBOX_SERVICE_USER", "root");

struct Fakes {
    wa: FakeWhatsApp,
    tg: FakeTelegram,
    ai: FakeOpenAi,
}

async fn fakes() -> Fakes {
    Fakes {
        wa: FakeWhatsApp::start().await,
        tg: FakeTelegram::start(TOKEN).await,
        ai: FakeOpenAi::start(FakeConfig::default()).await,
    }
}

/// A box on the fakes; `extra` is appended to the config, the bot token file holds `token`.
fn box_on(f: &Fakes, token: &str, extra: &str) -> TestBox {
    TestBox::new(
        &format!(
            "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"fake-model\"\n\
             [channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\nallow_from = [\"+15550100000\"]\n\
             [channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [900001]\n\
             api_root = \"{}\"\npoll_timeout_s = 2\n{extra}",
            f.ai.base_url(),
            f.wa.ws_url(),
            f.wa.version_url(),
            f.tg.api_root(),
        ),
        &[("tg.token", token)],
    )
}

/// `clawbox doctor [--json] --config …` on `bx`: (exit code, stdout).
async fn doctor(bx: &TestBox, json: bool) -> (Option<i32>, String) {
    let cfg = bx.cfg.to_str().unwrap();
    let mut args = vec!["doctor", "--config", cfg];
    if json {
        args.push("--json");
    }
    let mut c = command(&args, &[AS_ROOT]);
    c.current_dir(bx.dir.path());
    let out = tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("the doctor ends within its bounds")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// The JSON report: (exit code, check name → (level, summary, fix)).
async fn report(bx: &TestBox) -> (Option<i32>, Vec<(String, String, String, String)>, String) {
    let (code, out) = doctor(bx, true).await;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let checks = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (s("check"), s("level"), s("summary"), s("fix"))
        })
        .collect();
    (code, checks, out)
}

fn line<'a>(
    checks: &'a [(String, String, String, String)],
    name: &str,
) -> &'a (String, String, String, String) {
    checks
        .iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no `{name}` line in {checks:#?}"))
}

/// Polls `/healthz` until `pred` holds for its JSON.
async fn wait_health(bx: &TestBox, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let h = bx.health().await;
        if serde_json::from_str::<Value>(&h).is_ok_and(|v| pred(&v)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn component_state(v: &Value, name: &str) -> String {
    v["components"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .and_then(|c| c["state"].as_str())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_box_is_all_ok_and_a_store_given_away_fails_with_the_chown() {
    let f = fakes().await;
    let bx = box_on(&f, TOKEN, "");
    pair_whatsapp(&f.wa, &bx).await;
    let mut daemon = bx.run().await;
    wait_health(&bx, "every component up", |v| v["status"] == "ok").await;

    // With the service running: its own view of WhatsApp and of itself.
    let (code, checks, out) = report(&bx).await;
    let names: Vec<&str> = checks.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "config",
            "state-dir",
            "store",
            "secrets",
            "disk",
            "clock",
            "whatsapp-net",
            "telegram-net",
            "whatsapp",
            "telegram",
            "agent:ai",
            "service"
        ],
        "{out}"
    );
    for (name, level, summary, fix) in &checks {
        assert_eq!(level, "ok", "{name}: {summary} / {fix}\n{out}");
    }
    assert_eq!(code, Some(0), "{out}");
    assert!(line(&checks, "whatsapp").2.contains("linked +15550001111"));
    assert!(
        line(&checks, "telegram")
            .2
            .contains("the token is accepted")
    );
    assert!(line(&checks, "clock").2.contains("right to the second"));
    assert!(line(&checks, "service").2.starts_with("running"));
    // The same as text: one OK line per check and the tally.
    let (code, text) = doctor(&bx, false).await;
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 13, "{text}");
    assert!(lines[..12].iter().all(|l| l.starts_with("OK ")), "{text}");
    assert_eq!(lines[12], "12 OK, 0 WARN, 0 FAIL");

    // Without the service: the store says whether WhatsApp is linked, and since when.
    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, Some(0));
    let (code, checks, out) = report(&bx).await;
    assert_eq!(code, Some(0), "a stopped service is a warning: {out}");
    let (_, level, summary, _) = line(&checks, "whatsapp");
    assert_eq!(level, "ok", "{out}");
    assert!(
        summary.starts_with("linked +15550001111, since ") && summary.ends_with(" ago"),
        "{summary}"
    );
    let (_, level, summary, fix) = line(&checks, "service");
    assert_eq!(level, "warn");
    assert!(summary.starts_with("not running"), "{summary}");
    assert!(fix.contains("systemctl start clawbox"), "{fix}");

    // The state directory given to nobody (65534): what root's service left in it is not theirs.
    if !root_can_be_nobody() {
        eprintln!("the rest skipped: needs root that can chown to nobody (65534)");
        return;
    }
    let state = bx.state();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let (code, checks, out) = report(&bx).await;
    assert_eq!(code, Some(1), "{out}");
    let (_, level, summary, fix) = line(&checks, "state-dir");
    assert_eq!(level, "fail", "{out}");
    assert!(
        summary.contains("belongs to nobody, not to root (the service's user)"),
        "{summary}"
    );
    assert_eq!(
        fix,
        &format!("sudo chown -R root:root {}", state.display()),
        "{out}"
    );
    // The store is not opened behind a wrong owner: nothing is said about the link.
    let (_, level, summary, _) = line(&checks, "whatsapp");
    assert_eq!(level, "warn");
    assert!(summary.starts_with("not checked"), "{summary}");
    // The doctor changed nothing it found wrong.
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), 65534);
    assert_eq!(
        std::fs::metadata(state.join("clawbox.redb")).unwrap().uid(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_setting_gives_its_fail_line_with_the_fix() {
    let f = fakes().await;
    // A well-formed token Telegram does not know, an agent nobody answers for, a Telegram whose
    // clock is two hours behind ours (so ours is two hours ahead), and WhatsApp never linked.
    let dead = free_port();
    let bx = box_on(
        &f,
        "123456:WRONG-token_x",
        &format!(
            "[agents.dead]\nkind = \"openai\"\nurl = \"http://127.0.0.1:{dead}/v1\"\nmodel = \"m\"\n"
        ),
    );
    f.tg.set_clock_offset(-2 * 3600);
    let mut daemon = bx.run().await;
    wait_health(&bx, "WhatsApp showing its QR", |v| {
        component_state(v, "whatsapp") == "needs-owner"
    })
    .await;

    let (code, checks, out) = report(&bx).await;
    assert_eq!(code, Some(1), "{out}");
    let (_, level, summary, fix) = line(&checks, "telegram");
    assert_eq!(level, "fail", "{out}");
    assert!(
        summary.contains("Telegram refused the bot token (401"),
        "{summary}"
    );
    assert!(
        fix.contains("@BotFather") && fix.contains("tg.token"),
        "{fix}"
    );
    assert!(
        !out.contains("WRONG-token"),
        "a token is never printed: {out}"
    );
    let (_, level, summary, fix) = line(&checks, "agent:dead");
    assert_eq!(level, "fail", "{out}");
    assert!(summary.contains("cannot connect"), "{summary}");
    assert!(fix.contains("clawbox providers test dead"), "{fix}");
    // The other agent is fine: each agent has its own line.
    assert_eq!(line(&checks, "agent:ai").1, "ok", "{out}");
    let (_, level, summary, fix) = line(&checks, "clock");
    assert_eq!(level, "fail", "{out}");
    assert!(
        summary.contains("this box's clock is 2 h 0 min ahead of 127.0.0.1:"),
        "{summary}"
    );
    assert!(fix.contains("timedatectl set-ntp true"), "{fix}");
    let (_, level, summary, fix) = line(&checks, "whatsapp");
    assert_eq!(level, "fail", "{out}");
    assert!(summary.contains("not linked"), "{summary}");
    assert!(fix.contains("clawbox pair whatsapp"), "{fix}");
    assert_eq!(line(&checks, "service").1, "warn", "degraded: {out}");
    // The lines that are not broken stay OK.
    for name in [
        "config",
        "state-dir",
        "store",
        "secrets",
        "disk",
        "telegram-net",
    ] {
        assert_eq!(line(&checks, name).1, "ok", "{name}: {out}");
    }
    // As text: the FAIL line, its fix under it.
    let (_, text) = doctor(&bx, false).await;
    let at = text
        .lines()
        .position(|l| l.starts_with("FAIL  telegram "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        text.lines()
            .nth(at + 1)
            .unwrap()
            .trim()
            .starts_with("fix: "),
        "{text}"
    );

    // Without the service, the store says it: not linked.
    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, Some(0));
    let (code, checks, out) = report(&bx).await;
    assert_eq!(code, Some(1));
    let (_, level, summary, fix) = line(&checks, "whatsapp");
    assert_eq!(
        (level.as_str(), summary.as_str()),
        ("fail", "not linked"),
        "{out}"
    );
    assert!(fix.contains("--phone"), "{fix}");
}

#[tokio::test]
async fn a_config_that_does_not_parse_is_one_fail_line_and_nothing_else_runs() {
    let (dir, path) = scratch("[channels.telegram\n");
    let mut c = command(
        &["doctor", "--json", "--config", path.to_str().unwrap()],
        &[AS_ROOT],
    );
    c.current_dir(dir.path());
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["checks"][0]["check"], "config");
    assert_eq!(v["checks"][0]["level"], "fail");
    let summary = v["checks"][0]["summary"].as_str().unwrap();
    assert!(summary.contains("clawbox.toml:1:"), "{summary}");
}
