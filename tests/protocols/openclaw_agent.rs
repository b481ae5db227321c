//! The OpenClaw agent against the fake gateway (the kit's fakes/openclaw.rs) on real loopback
//! WebSockets, with tokio's paused clock where time matters; plus `real_gateway`, ignored by
//! default, run by tests/openclaw-interop/run.sh against a real openclaw gateway.
use kit::fakes;

use clawbox::agent::openclaw::OpenClaw;
use clawbox::agent::{AgentError, Progress, ResetOutcome, TurnRequest};
use clawbox::config::{AgentConfig, AgentKind, Secret};
use clawbox::metrics::Metrics;
use clawbox::shutdown::{Shutdown, ShutdownTrigger};
use clawbox::status::{Board, Reporter, State};
use clawbox::store::Store;
use fakes::openclaw::{FakeConfig, FakeGateway, FakeReply};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

fn config(url: &str, token: &str) -> AgentConfig {
    AgentConfig {
        kind: Spanned::new(0..0, AgentKind::Openclaw),
        url: Some(Spanned::new(0..0, url.to_string())),
        model: None,
        api_key_file: None,
        api_key_env: None,
        token_file: None,
        token_env: None,
        system_prompt: None,
        history_messages: None,
        max_tokens: None,
        agent_id: None,
        session_prefix: None,
        ack_timeout_s: None,
        accumulation_timeout_s: None,
        secret: Some(Secret::new(token.to_string())),
    }
}

struct Harness {
    agent: Arc<OpenClaw>,
    reporter: Reporter,
    board: Board,
    _trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
}

fn agent(url: &str, token: &str) -> (OpenClaw, Reporter, Board, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    // In memory, inline: waiting on the file store's writer thread would let the paused clock jump.
    let store = Store::open_in_memory(Arc::new(Metrics::default())).unwrap();
    let board = Board::default();
    let reporter = board.register("agent:claw", false);
    let a = OpenClaw::new("claw", &config(url, token), store, reporter.clone());
    (a, reporter, board, dir)
}

/// An agent with `run` spawned.
fn running(url: &str, token: &str) -> Harness {
    let (a, reporter, board, dir) = agent(url, token);
    let agent = Arc::new(a);
    let (trigger, shutdown) = Shutdown::new();
    let a2 = agent.clone();
    tokio::spawn(async move { a2.run(shutdown).await });
    Harness {
        agent,
        reporter,
        board,
        _trigger: trigger,
        _dir: dir,
    }
}

fn req(session: &str, text: &str, key: &str) -> TurnRequest {
    TurnRequest {
        session_key: session.into(),
        text: text.into(),
        history: vec![],
        idempotency_key: key.into(),
        system_prompt: None,
    }
}

/// Waits (in virtual time) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(start_paused = true)]
async fn handshake_then_a_turn_with_deltas() {
    let gw = FakeGateway::start(FakeConfig {
        deltas: 3,
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    let (progress, rx) = Progress::new();
    let reply = h
        .agent
        .turn(req("agent:main:clawbox-1", "hi there", "k-1"), progress)
        .await
        .unwrap();
    assert_eq!(reply, "echo: hi there");
    // accepted (1) then three deltas: the watch value counts them.
    assert!(*rx.borrow() >= 4, "progress was {}", *rx.borrow());

    let connect = &gw.frames_of("connect")[0];
    let p = &connect["params"];
    assert_eq!(p["minProtocol"], 4);
    assert_eq!(p["maxProtocol"], 4);
    assert_eq!(p["client"]["id"], "gateway-client");
    assert_eq!(p["client"]["mode"], "backend");
    assert_eq!(p["client"]["platform"], "linux");
    assert_eq!(p["role"], "operator");
    assert_eq!(
        p["scopes"],
        serde_json::json!(["operator.read", "operator.write", "operator.admin"])
    );
    assert_eq!(p["auth"], serde_json::json!({"token": "test-token"}));
    // The fake verified the signature; the device block is there and complete.
    assert_eq!(p["device"]["id"].as_str().unwrap().len(), 64);
    assert_eq!(gw.hellos(), 1);
    let send = &gw.frames_of("chat.send")[0];
    assert_eq!(
        send["params"],
        serde_json::json!({"sessionKey":"agent:main:clawbox-1","message":"hi there","idempotencyKey":"k-1"})
    );
    assert_eq!(h.reporter.state(), State::Up);
    assert!(
        h.board
            .status_line()
            .contains("gateway 2026.9.6-fake, protocol 4"),
        "{}",
        h.board.status_line()
    );
}

#[tokio::test(start_paused = true)]
async fn device_token_is_stored_and_used_on_reconnect() {
    let gw = FakeGateway::start(FakeConfig {
        issue_device_token: Some("dev-token-1".into()),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    until("first hello", || gw.hellos() == 1).await;
    gw.drop_connections();
    until("second hello", || gw.hellos() == 2).await;
    let connects = gw.frames_of("connect");
    assert_eq!(
        connects[0]["params"]["auth"],
        serde_json::json!({"token": "test-token"})
    );
    assert_eq!(
        connects[1]["params"]["auth"],
        serde_json::json!({"deviceToken": "dev-token-1"})
    );
    // Same device identity both times (and the fake verified the signature over the device token).
    assert_eq!(
        connects[0]["params"]["device"]["id"],
        connects[1]["params"]["device"]["id"]
    );
    let r = h
        .agent
        .turn(req("agent:main:s", "x", "k"), Progress::new().0)
        .await
        .unwrap();
    assert_eq!(r, "echo: x");
}

#[tokio::test(start_paused = true)]
async fn concurrent_sessions_never_mix_events() {
    let gw = FakeGateway::start(FakeConfig {
        deltas: 4,
        reply: Arc::new(|sk, m| {
            if sk.ends_with("alice") {
                FakeReply::Text(format!("alpha alpha alpha {m}"))
            } else {
                FakeReply::Text(format!("beta beta {m}"))
            }
        }),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    // Another client's run in alice's session with an unknown runId must be ignored.
    let gw2 = gw.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(60)).await;
        gw2.broadcast_event(
            "chat",
            serde_json::json!({"runId":"someone-else","sessionKey":"agent:main:alice","seq":1,
                "state":"final","message":{"role":"assistant","content":[{"type":"text","text":"WRONG"}]}}),
        );
    });
    let (a, b) = tokio::join!(
        h.agent
            .turn(req("agent:main:alice", "1", "ka"), Progress::new().0),
        h.agent
            .turn(req("agent:main:bob", "2", "kb"), Progress::new().0),
    );
    assert_eq!(a.unwrap(), "alpha alpha alpha 1");
    assert_eq!(b.unwrap(), "beta beta 2");
}

#[tokio::test(start_paused = true)]
async fn run_error_and_abort_are_agent_errors() {
    let gw = FakeGateway::start(FakeConfig {
        reply: Arc::new(|_, m| match m {
            "boom" => FakeReply::Error("model exploded".into()),
            _ => FakeReply::Aborted,
        }),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    let e = h
        .agent
        .turn(req("agent:main:s", "boom", "k1"), Progress::new().0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AgentError::Failed(m) if m.contains("model exploded")),
        "{e:?}"
    );
    let e = h
        .agent
        .turn(req("agent:main:s", "stop", "k2"), Progress::new().0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AgentError::Failed(m) if m.contains("aborted")),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn reset_clears_with_admin_and_starts_a_new_generation_without() {
    let gw = FakeGateway::start(FakeConfig::default()).await;
    let h = running(&gw.url, "test-token");
    assert_eq!(
        h.agent.reset("agent:main:s").await.unwrap(),
        ResetOutcome::Cleared
    );
    let frames = gw.frames_of("sessions.reset");
    assert_eq!(frames.len(), 1);
    assert_eq!(
        frames[0]["params"],
        serde_json::json!({"key":"agent:main:s","reason":"reset"})
    );

    let gw = FakeGateway::start(FakeConfig {
        grant_admin: false,
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    assert_eq!(
        h.agent.reset("agent:main:s").await.unwrap(),
        ResetOutcome::NewGeneration
    );
    assert!(gw.frames_of("sessions.reset").is_empty());
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_make_it_reconnect() {
    let gw = FakeGateway::start(FakeConfig {
        tick_interval: Duration::from_secs(1),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    until("up", || gw.hellos() == 1).await;
    // Ticks keep it alive well past two intervals.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(gw.connects(), 1);
    gw.set_ticks(false);
    let silenced = tokio::time::Instant::now();
    until("degraded", || h.reporter.state() == State::Degraded).await;
    let after = silenced.elapsed();
    assert!(
        after >= Duration::from_millis(1000) && after <= Duration::from_millis(2200),
        "declared dead after {after:?}"
    );
    gw.set_ticks(true);
    until("reconnected", || gw.hellos() == 2).await;
    until("up again", || h.reporter.state() == State::Up).await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_in_flight_during_a_drop_is_retried_with_the_same_key_and_runs_once() {
    // The run outlives the drop: the re-sent key finds it in flight and its events continue.
    let gw = FakeGateway::start(FakeConfig {
        deltas: 2,
        delta_delay: Duration::from_secs(2),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    let agent = h.agent.clone();
    let turn = tokio::spawn(async move {
        agent
            .turn(req("agent:main:s", "q", "key-1"), Progress::new().0)
            .await
    });
    until("chat.send", || gw.frames_of("chat.send").len() == 1).await;
    gw.drop_connections();
    let reply = turn.await.unwrap().unwrap();
    assert_eq!(reply, "echo: q");
    let sends = gw.frames_of("chat.send");
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0]["params"]["idempotencyKey"], "key-1");
    assert_eq!(sends[1]["params"]["idempotencyKey"], "key-1");
    assert_eq!(gw.model_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_run_that_finished_during_the_drop_is_read_back_from_history() {
    let gw = FakeGateway::start(FakeConfig {
        deltas: 1,
        delta_delay: Duration::from_millis(20),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    until("up", || gw.hellos() == 1).await;
    gw.drop_after_next_chat_send();
    let reply = h
        .agent
        .turn(req("agent:main:s", "later", "key-2"), Progress::new().0)
        .await
        .unwrap();
    assert_eq!(reply, "echo: later");
    assert_eq!(gw.model_calls(), 1);
    assert_eq!(gw.frames_of("chat.send").len(), 2);
    assert_eq!(gw.frames_of("chat.history").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_turn_future_leaves_nothing_behind() {
    let gw = FakeGateway::start(FakeConfig {
        delta_delay: Duration::from_secs(30),
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        h.agent
            .turn(req("agent:main:s", "slow", "k-slow"), Progress::new().0),
    )
    .await;
    assert!(r.is_err(), "the turn should still be running");
    // The cancelled turn is forgotten: it is not re-sent after a reconnect.
    assert_eq!(gw.frames_of("chat.send").len(), 1);
    gw.drop_connections();
    until("reconnected", || gw.hellos() == 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gw.frames_of("chat.send").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn pairing_required_needs_the_owner_then_connects_after_approval() {
    let gw = FakeGateway::start(FakeConfig {
        require_pairing: true,
        ..FakeConfig::default()
    })
    .await;
    let h = running(&gw.url, "test-token");
    until("needs owner", || h.reporter.state() == State::NeedsOwner).await;
    let ids = gw.pairing_requests();
    assert_eq!(ids.len(), 1);
    let line = h.board.status_line();
    assert!(
        line.contains(&format!("openclaw devices approve {}", ids[0])),
        "{line}"
    );
    // A turn fails at once with the same instruction instead of waiting for a timeout.
    let e = h
        .agent
        .turn(req("agent:main:s", "x", "k"), Progress::new().0)
        .await
        .unwrap_err();
    assert!(matches!(&e, AgentError::Unreachable(m) if m.contains("openclaw devices approve")));
    gw.approve(&ids[0]);
    until("up after approval", || h.reporter.state() == State::Up).await;
}

#[tokio::test(start_paused = true)]
async fn probe_reports_facts() {
    let gw = FakeGateway::start(FakeConfig::default()).await;
    let (a, _r, _b, _d) = agent(&gw.url, "test-token");
    let rep = a.probe("claw").await;
    assert!(rep.ok, "{:?}", rep.error);
    let fact = |k: &str| {
        rep.facts
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(fact("server version").as_deref(), Some("2026.9.6-fake"));
    assert_eq!(fact("protocol").as_deref(), Some("4"));
    assert_eq!(fact("default agent").as_deref(), Some("main"));
    assert!(fact("scopes").unwrap().contains("operator.admin"));
    assert!(fact("handshake latency").unwrap().ends_with(" ms"));
}

#[tokio::test(start_paused = true)]
async fn probe_wrong_token_says_so() {
    let gw = FakeGateway::start(FakeConfig::default()).await;
    let (a, _r, _b, _d) = agent(&gw.url, "not-the-token");
    let rep = a.probe("claw").await;
    assert!(!rep.ok);
    let e = rep.error.unwrap();
    assert!(e.contains("rejected the token"), "{e}");
    assert!(e.contains("token_file"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn probe_pairing_required_gives_the_approve_command() {
    let gw = FakeGateway::start(FakeConfig {
        require_pairing: true,
        ..FakeConfig::default()
    })
    .await;
    let (a, _r, _b, _d) = agent(&gw.url, "test-token");
    let rep = a.probe("claw").await;
    assert!(!rep.ok);
    let e = rep.error.unwrap();
    assert!(e.contains("openclaw devices approve req-1"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn probe_protocol_mismatch_is_named() {
    let gw = FakeGateway::start(FakeConfig {
        protocol: 5,
        ..FakeConfig::default()
    })
    .await;
    let (a, _r, _b, _d) = agent(&gw.url, "test-token");
    let rep = a.probe("claw").await;
    assert!(!rep.ok);
    let e = rep.error.unwrap();
    assert!(e.contains("protocol mismatch"), "{e}");
}

#[tokio::test]
async fn probe_connection_refused_is_named() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let (a, _r, _b, _d) = agent(&format!("ws://127.0.0.1:{port}"), "test-token");
    let rep = a.probe("claw").await;
    assert!(!rep.ok);
    let e = rep.error.unwrap();
    assert!(e.contains("connection refused"), "{e}");
}

/// Against a real gateway: `OPENCLAW_URL`, `OPENCLAW_TOKEN` (run by tests/openclaw-interop/run.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real openclaw gateway; see tests/openclaw-interop/run.sh"]
async fn real_gateway() {
    let url = std::env::var("OPENCLAW_URL").expect("OPENCLAW_URL");
    let token = std::env::var("OPENCLAW_TOKEN").expect("OPENCLAW_TOKEN");

    let (bad, _r, _b, _d) = agent(&url, "wrong-token-0000");
    let rep = bad.probe("claw").await;
    assert!(!rep.ok);
    let e = rep.error.unwrap();
    println!("probe with a wrong token: {e}");
    assert!(e.contains("rejected the token"), "{e}");

    let (probe_agent, _r, _b, _d) = agent(&url, &token);
    let rep = probe_agent.probe("claw").await;
    assert!(rep.ok, "{:?}", rep.error);
    for (k, v) in &rep.facts {
        println!("probe: {k}: {v}");
    }
    println!("MEASURED handshake latency: {} ms", rep.latency_ms);

    let h = running(&url, &token);
    let run = format!("{}", std::process::id());
    let s1 = format!("agent:main:clawbox-interop-{run}-a");
    let s2 = format!("agent:main:clawbox-interop-{run}-b");
    let timed = |label: &'static str, fut| async move {
        let t = std::time::Instant::now();
        let r: Result<String, AgentError> = tokio::time::timeout(Duration::from_secs(180), fut)
            .await
            .expect("turn timed out");
        println!("MEASURED {label}: {} ms", t.elapsed().as_millis());
        r
    };
    let (p, rx) = Progress::new();
    let r1 = timed(
        "turn 1",
        h.agent.turn(req(&s1, "ping one", &format!("{run}-1")), p),
    )
    .await
    .unwrap();
    println!("turn 1 reply: {r1:?}, progress {}", *rx.borrow());
    assert!(r1.contains("one"), "{r1}");
    let r2 = timed(
        "turn 2 (same session)",
        h.agent
            .turn(req(&s1, "ping two", &format!("{run}-2")), Progress::new().0),
    )
    .await
    .unwrap();
    assert!(r2.contains("two"), "{r2}");
    let outcome = h.agent.reset(&s1).await.unwrap();
    println!("reset: {outcome:?}");
    assert!(matches!(
        outcome,
        ResetOutcome::Cleared | ResetOutcome::NewGeneration
    ));
    let t = std::time::Instant::now();
    let (a, b) = tokio::join!(
        h.agent.turn(
            req(&s1, "alpha three", &format!("{run}-3")),
            Progress::new().0
        ),
        h.agent.turn(
            req(&s2, "beta four", &format!("{run}-4")),
            Progress::new().0
        ),
    );
    println!(
        "MEASURED two concurrent sessions: {} ms",
        t.elapsed().as_millis()
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    println!("concurrent replies: {a:?} / {b:?}");
    assert!(a.contains("alpha") && !a.contains("beta"), "{a}");
    assert!(b.contains("beta") && !b.contains("alpha"), "{b}");
}
