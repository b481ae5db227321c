//! The OpenAI-compatible agent against a faithful fake server on real loopback sockets.
use kit::fakes;

use clawbox::agent::openai::OpenAi;
use clawbox::agent::{AgentError, HistoryEntry, Progress, Role, TurnRequest};
use clawbox::config::Config;
use clawbox::http::HttpClient;
use fakes::openai::{FakeConfig, FakeOpenAi};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// An agent named `x` built through the real config parser; `extra` is more TOML for the table.
fn agent(url: &str, extra: &str) -> OpenAi {
    let text = format!(
        "[agents.x]\nkind = \"openai\"\nurl = \"{url}\"\nmodel = \"fake-model\"\n{extra}\n"
    );
    let cfg = Config::parse(&text, None).unwrap_or_else(|e| panic!("{e:?}"));
    OpenAi::new("x", &cfg.agents["x"], HttpClient::new())
}

/// A key file (mode 0600 by tempfile) and the TOML line pointing at it.
fn key_file(key: &str) -> (tempfile::NamedTempFile, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{key}").unwrap();
    let line = format!("api_key_file = '{}'", f.path().display());
    (f, line)
}

fn turn(text: &str) -> TurnRequest {
    TurnRequest {
        session_key: "agent:x:clawbox-1".into(),
        text: text.into(),
        history: vec![],
        idempotency_key: "k1".into(),
        system_prompt: None,
    }
}

/// A port on loopback where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(start_paused = true)]
async fn a_turn_streams_over_several_chunks_and_reports_progress() {
    let fake = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(250),
        chars_per_chunk: 4,
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    let (progress, mut rx) = Progress::new();
    assert_eq!(*rx.borrow(), 0);
    let seen = tokio::spawn(async move {
        let mut seen = vec![];
        while rx.changed().await.is_ok() {
            seen.push(*rx.borrow_and_update());
        }
        seen
    });
    let started = tokio::time::Instant::now();
    // "echo: hello world" is 17 characters: 5 content chunks of 4.
    let reply = agent.turn(turn("hello world"), progress).await.unwrap();
    assert_eq!(reply, "echo: hello world");
    // It really streamed: role chunk + 5 content chunks + stop chunk + [DONE], 250 ms apart.
    assert!(
        started.elapsed() >= Duration::from_millis(250 * 8),
        "{:?}",
        started.elapsed()
    );
    // Accepted first, then one step per content chunk (the role and stop chunks carry none).
    assert_eq!(seen.await.unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(fake.completed(), 1);

    let got = &fake.received()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.accept.as_deref(), Some("text/event-stream"));
    assert_eq!(got.authorization, None, "no key configured, no header");
    assert_eq!(
        got.body,
        json!({"model": "fake-model", "stream": true,
               "messages": [{"role": "user", "content": "hello world"}]})
    );
}

#[tokio::test(start_paused = true)]
async fn history_follows_the_system_prompt_and_is_truncated() {
    let fake = FakeOpenAi::start(FakeConfig::default()).await;
    let agent = agent(
        &fake.base_url(),
        "system_prompt = \"Be brief.\"\nhistory_messages = 3\nmax_tokens = 64",
    );
    let mut req = turn("and now?");
    req.history = (0..6)
        .map(|i| HistoryEntry {
            role: if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            text: format!("m{i}"),
        })
        .collect();
    let reply = agent.turn(req, Progress::new().0).await.unwrap();
    assert_eq!(reply, "echo: and now?");
    let body = &fake.requests()[0];
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "m3"},
            {"role": "user", "content": "m4"},
            {"role": "assistant", "content": "m5"},
            {"role": "user", "content": "and now?"},
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn history_defaults_to_twenty_messages() {
    let fake = FakeOpenAi::start(FakeConfig::default()).await;
    let agent = agent(&fake.base_url(), "");
    let mut req = turn("new");
    req.history = (0..30)
        .map(|i| HistoryEntry {
            role: Role::User,
            text: format!("h{i}"),
        })
        .collect();
    agent.turn(req, Progress::new().0).await.unwrap();
    let messages = fake.requests()[0]["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 21);
    assert_eq!(messages[0]["content"], "h10");
    assert_eq!(messages[19]["content"], "h29");
}

#[tokio::test(start_paused = true)]
async fn the_bearer_key_is_sent_when_configured() {
    let fake = FakeOpenAi::start(FakeConfig {
        api_key: Some("sk-test-0123456789".into()),
        ..FakeConfig::default()
    })
    .await;
    let (_file, line) = key_file("sk-test-0123456789");
    let agent = agent(&fake.base_url(), &line);
    let reply = agent.turn(turn("hi"), Progress::new().0).await.unwrap();
    assert_eq!(reply, "echo: hi");
    assert_eq!(
        fake.received()[0].authorization.as_deref(),
        Some("Bearer sk-test-0123456789")
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrong_key_fails_with_the_servers_401_message() {
    let fake = FakeOpenAi::start(FakeConfig {
        api_key: Some("sk-right-0123456789".into()),
        ..FakeConfig::default()
    })
    .await;
    let (_file, line) = key_file("sk-wrong-0123456789");
    let agent = agent(&fake.base_url(), &line);
    let (progress, rx) = Progress::new();
    match agent.turn(turn("hi"), progress).await {
        Err(AgentError::Failed(m)) => {
            assert!(
                m.starts_with("HTTP 401 Unauthorized: Incorrect API key provided"),
                "{m}"
            );
            assert!(m.chars().count() <= 200 + "HTTP 401 Unauthorized: ".len() + 1);
            assert!(!m.contains("sk-wrong-0123456789"), "the key leaked: {m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*rx.borrow(), 0, "a rejected request was not accepted");
}

#[tokio::test(start_paused = true)]
async fn a_server_error_status_is_failed() {
    let fake = FakeOpenAi::start(FakeConfig {
        status: Some(500),
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    assert_eq!(
        agent.turn(turn("hi"), Progress::new().0).await,
        Err(AgentError::Failed(
            "HTTP 500 Internal Server Error: The server had an error while processing your request. Sorry about that!"
                .into()
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_never_completes_and_dropping_it_closes_the_connection() {
    let fake = FakeOpenAi::start(FakeConfig {
        stall_after_first_chunk: true,
        chunk_delay: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    let (progress, rx) = Progress::new();
    let r = tokio::time::timeout(
        Duration::from_secs(3600),
        agent.turn(turn("hello"), progress),
    )
    .await;
    assert!(r.is_err(), "the turn returned by itself: {r:?}");
    // Accepted and one delta arrived before the stall: the router's accumulation timeout is what
    // ends such a turn.
    assert_eq!(*rx.borrow(), 2);
    // The timed-out future was dropped: the fake sees its client go away.
    tokio::time::timeout(Duration::from_secs(5), fake.wait_abandoned(1))
        .await
        .expect("the connection was not closed after the future was dropped");
    assert_eq!(fake.completed(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_leaves_progress_at_zero() {
    let fake = FakeOpenAi::start(FakeConfig {
        head_delay: Duration::from_secs(60),
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    let (progress, rx) = Progress::new();
    let r = tokio::time::timeout(Duration::from_secs(10), agent.turn(turn("hi"), progress)).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(*rx.borrow(), 0, "nothing was accepted: an ack timeout");
    // The request itself did arrive.
    assert_eq!(fake.requests().len(), 1);
}

fn raw(pieces: &[&str]) -> FakeConfig {
    FakeConfig {
        raw_stream: Some(pieces.iter().map(|s| s.to_string()).collect()),
        ..FakeConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn malformed_chunk_json_is_a_protocol_error() {
    let fake = FakeOpenAi::start(raw(&[
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\n\n",
        "data: [DONE]\n\n",
    ]))
    .await;
    let agent = agent(&fake.base_url(), "");
    match agent.turn(turn("hi"), Progress::new().0).await {
        Err(AgentError::Protocol(m)) => {
            assert!(
                m.contains("chunk 2") && m.contains("chat.completion.chunk"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn crlf_framing_split_across_writes_is_read() {
    let fake = FakeOpenAi::start(raw(&[
        ": hello\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r",
        "\n\r\ndata: {\"choices\":[{\"de",
        "lta\":{\"content\":\"b\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n",
    ]))
    .await;
    let agent = agent(&fake.base_url(), "");
    assert_eq!(
        agent.turn(turn("x"), Progress::new().0).await,
        Ok("ab".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_ending_without_done_keeps_the_text_but_not_nothing() {
    let fake = FakeOpenAi::start(raw(&[
        "data: {\"choices\":[{\"delta\":{\"content\":\"partial\"}}]}\n\n",
    ]))
    .await;
    let agent1 = agent(&fake.base_url(), "");
    assert_eq!(
        agent1.turn(turn("x"), Progress::new().0).await,
        Ok("partial".into())
    );

    let empty = FakeOpenAi::start(raw(&[
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
    ]))
    .await;
    let agent2 = agent(&empty.base_url(), "");
    assert!(matches!(
        agent2.turn(turn("x"), Progress::new().0).await,
        Err(AgentError::Protocol(m)) if m.contains("without any reply text")
    ));
}

#[tokio::test(start_paused = true)]
async fn an_oversize_reply_is_a_protocol_error() {
    let fake = FakeOpenAi::start(FakeConfig {
        reply: Arc::new(|_| "y".repeat(300 * 1024)),
        chars_per_chunk: 16 * 1024,
        chunk_delay: Duration::ZERO,
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    assert!(matches!(
        agent.turn(turn("x"), Progress::new().0).await,
        Err(AgentError::Protocol(m)) if m.contains("longer than 262144 bytes")
    ));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_is_not_listening_is_unreachable() {
    let agent = agent(&format!("http://127.0.0.1:{}/v1", closed_port()), "");
    let (progress, rx) = Progress::new();
    match agent.turn(turn("hi"), progress).await {
        Err(AgentError::Unreachable(m)) => assert!(m.contains("127.0.0.1"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(*rx.borrow(), 0);
}

#[tokio::test(start_paused = true)]
async fn probe_reports_the_endpoint_and_the_model() {
    let fake = FakeOpenAi::start(FakeConfig {
        models: vec!["other".into(), "fake-model".into()],
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    let r = agent.probe("x").await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.agent, "x");
    assert_eq!(r.kind, "openai");
    assert_eq!(r.error, None);
    assert_eq!(
        r.facts,
        vec![
            ("endpoint", fake.base_url()),
            ("models", "2".into()),
            (
                "model configured",
                "fake-model (listed by the server)".into()
            ),
        ]
    );
    let got = &fake.received()[0];
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("GET", "/v1/models")
    );
}

#[tokio::test(start_paused = true)]
async fn probe_says_when_the_model_is_not_listed() {
    let fake = FakeOpenAi::start(FakeConfig {
        models: vec!["llama3.2:latest".into()],
        ..FakeConfig::default()
    })
    .await;
    let r = agent(&fake.base_url(), "").probe("x").await;
    assert!(r.ok);
    assert!(r.facts[2].1.contains("NOT listed"), "{:?}", r.facts);
}

#[tokio::test(start_paused = true)]
async fn probe_of_a_closed_port_says_to_start_the_server() {
    let url = format!("http://127.0.0.1:{}/v1", closed_port());
    let r = agent(&url, "").probe("x").await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(
        e.starts_with(&format!("cannot connect to {url} — is the server running?")),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn probe_with_a_wrong_key_says_the_key_was_rejected() {
    let fake = FakeOpenAi::start(FakeConfig {
        api_key: Some("sk-right-0123456789".into()),
        ..FakeConfig::default()
    })
    .await;
    let (_file, line) = key_file("sk-wrong-0123456789");
    let r = agent(&fake.base_url(), &line).probe("x").await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(e.starts_with("the API key was rejected (HTTP 401"), "{e}");
    assert_eq!(
        fake.received()[0].authorization.as_deref(),
        Some("Bearer sk-wrong-0123456789")
    );

    // And without any key configured, it says one is needed.
    let r = agent(&fake.base_url(), "").probe("x").await;
    assert!(r.error.unwrap().starts_with("the server wants an API key"));
}

#[tokio::test(start_paused = true)]
async fn probe_of_a_url_without_v1_says_so() {
    let fake = FakeOpenAi::start(FakeConfig::default()).await;
    let url = format!("http://{}", fake.addr());
    let r = agent(&url, "").probe("x").await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(
        e.contains("was not found (HTTP 404") && e.contains("/v1"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_ignoring_stream_true_still_works() {
    let fake = FakeOpenAi::start(FakeConfig {
        ignore_stream: true,
        ..FakeConfig::default()
    })
    .await;
    let agent = agent(&fake.base_url(), "");
    let (progress, rx) = Progress::new();
    assert_eq!(
        agent.turn(turn("plain"), progress).await,
        Ok("echo: plain".into())
    );
    assert_eq!(*rx.borrow(), 2, "accepted, then the whole reply at once");
}

/// The fake's non-streamed path (used by other tests): a plain `chat.completion`.
#[tokio::test(start_paused = true)]
async fn the_fake_answers_non_streamed_requests_with_a_chat_completion() {
    let fake = FakeOpenAi::start(FakeConfig::default()).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "yo"}]});
    let req = http::Request::post(format!("{}/chat/completions", fake.base_url()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = HttpClient::new()
        .request(req, Duration::from_secs(5), 64 * 1024)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: yo");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}
