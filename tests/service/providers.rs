//! `clawbox providers test` through the binary: it really connects (WebSocket handshake and auth
//! for OpenClaw, a request for OpenAI-compatible endpoints), reports facts and plain-words errors,
//! exits 0 only if every agent passes, and speaks JSON with `--json`.

use kit::{fakes, support};

use fakes::openai::{FakeConfig as AiConfig, FakeOpenAi};
use fakes::openclaw::{FakeConfig, FakeGateway};
use serde_json::Value;
use support::*;

async fn run(config: &str, args: &[&str]) -> (Option<i32>, String, tempfile::TempDir) {
    let (dir, path) = scratch(config);
    write_secret(dir.path().join("gw.token"), "gw-token");
    let mut a = vec!["providers", "test", "--config", path.to_str().unwrap()];
    a.extend_from_slice(args);
    let mut c = command(&a, &[]);
    c.current_dir(dir.path());
    let out = c.output().await.unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text, dir)
}

fn openclaw(url: &str) -> String {
    format!(
        "[gateway]\nstate_dir = \"state\"\n[agents.claw]\nkind = \"openclaw\"\nurl = \"{url}\"\ntoken_file = \"gw.token\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_every_agent_and_the_exit_code_is_the_worst() {
    let gw = FakeGateway::start(FakeConfig {
        token: "gw-token".into(),
        ..Default::default()
    })
    .await;
    let ai = FakeOpenAi::start(AiConfig::default()).await;
    let cfg = format!(
        "{}[agents.local]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"fake-model\"\n[agents.dead]\nkind = \"openai\"\nurl = \"http://127.0.0.1:{}/v1\"\nmodel = \"x\"\n",
        openclaw(&gw.url),
        ai.base_url(),
        free_port()
    );
    let (code, out, _d) = run(&cfg, &["--json"]).await;
    assert_eq!(code, Some(1), "one agent is down: {out}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let by = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by("claw")["ok"], true);
    assert_eq!(by("claw")["facts"]["protocol"], "4");
    assert_eq!(by("local")["ok"], true);
    assert_eq!(by("dead")["ok"], false);
    assert!(
        by("dead")["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{out}"
    );

    // Only the named agent is tested.
    let (code, out, _d) = run(&cfg, &["local"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("PASS local (openai)") && !out.contains("claw"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_required_names_the_approve_command() {
    let gw = FakeGateway::start(FakeConfig {
        token: "gw-token".into(),
        require_pairing: true,
        ..Default::default()
    })
    .await;
    let (code, out, _d) = run(&openclaw(&gw.url), &[]).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("openclaw devices approve"), "{out}");
    let ids = gw.pairing_requests();
    assert!(
        !ids.is_empty() && out.contains(&ids[0]),
        "the exact request id: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_mismatch_is_said_in_plain_words() {
    let gw = FakeGateway::start(FakeConfig {
        token: "gw-token".into(),
        protocol: 5,
        ..Default::default()
    })
    .await;
    let (code, out, _d) = run(&openclaw(&gw.url), &[]).await;
    assert_eq!(code, Some(1));
    assert!(out.to_lowercase().contains("protocol"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_said_in_plain_words() {
    let (code, out, _d) = run(&openclaw(&format!("ws://127.0.0.1:{}", free_port())), &[]).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("FAIL claw"), "{out}");
    assert!(out.to_lowercase().contains("connect"), "{out}");
}
