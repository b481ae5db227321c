//! Unit tests of the OpenClaw gateway core, driven frame by frame with a given `now`: chat events
//! filtered by run and session, a turn reported once, the dead-link tick rule, the pairing error
//! and the pre-login frame bound.

use super::*;

fn ready_conn(now: Instant) -> Connection {
    let mut c = Connection::new(
        Credentials {
            token: "t".into(),
            device_token: None,
        },
        None,
        now,
    );
    c.handle_frame(
        r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":5}}"#,
        now,
    )
    .unwrap();
    let connect: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
    assert_eq!(connect["params"]["auth"]["token"], "t");
    assert_eq!(connect["params"]["minProtocol"], 4);
    assert!(connect["params"].get("device").is_none());
    let id = connect["id"].as_str().unwrap();
    let hello = json!({"type":"res","id":id,"ok":true,"payload":{
        "type":"hello-ok","protocol":4,"server":{"version":"2026.9.6"},
        "auth":{"scopes":["operator.read","operator.write"]},
        "policy":{"tickIntervalMs":1000},
        "snapshot":{"sessionDefaults":{"defaultAgentId":"main"}}}});
    c.handle_frame(&hello.to_string(), now).unwrap();
    match c.poll_output() {
        Some(Output::Ready(h)) => {
            assert!(!h.admin);
            assert_eq!(h.default_agent.as_deref(), Some("main"));
            assert_eq!(h.tick_interval, Duration::from_secs(1));
        }
        o => panic!("{o:?}"),
    }
    c
}

#[test]
fn chat_events_of_other_runs_and_sessions_are_ignored() {
    let now = Instant::now();
    let mut c = ready_conn(now);
    c.send_chat(7, "agent:main:a", "hi", "k1").unwrap();
    let send: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
    assert_eq!(
        send["params"],
        json!({"sessionKey":"agent:main:a","message":"hi","idempotencyKey":"k1"})
    );
    let ev = |sk: &str, run: &str, state: &str, text: &str| {
        json!({"type":"event","event":"chat","payload":{"runId":run,"sessionKey":sk,"seq":1,
            "state":state,"message":{"role":"assistant","content":[{"type":"text","text":text}]}}})
        .to_string()
    };
    c.handle_frame(&ev("agent:main:b", "k1", "delta", "x"), now)
        .unwrap();
    c.handle_frame(&ev("agent:main:a", "k2", "delta", "y"), now)
        .unwrap();
    assert_eq!(c.poll_output(), None);
    c.handle_frame(&ev("agent:main:a", "k1", "delta", "Hel"), now)
        .unwrap();
    c.handle_frame(&ev("agent:main:a", "k1", "delta", "Hello"), now)
        .unwrap();
    assert_eq!(c.partial(7), Some("Hello"));
    c.handle_frame(&ev("agent:main:a", "k1", "final", "Hello!"), now)
        .unwrap();
    let outs: Vec<Output> = std::iter::from_fn(|| c.poll_output()).collect();
    assert_eq!(
        outs,
        vec![
            Output::Delta { op: 7 },
            Output::Delta { op: 7 },
            Output::Finished {
                op: 7,
                result: Ok("Hello!".into())
            }
        ]
    );
}

/// Found by the `openclaw_frame` fuzz target: a turn that finished with its `final` event,
/// then had its chat.send refused (an answer that came late), was reported twice.
#[test]
fn a_refusal_after_the_final_event_reports_the_turn_once() {
    let now = Instant::now();
    let mut c = ready_conn(now);
    c.send_chat(2, "agent:main:main", "hi", "run-2").unwrap();
    let send: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
    let final_ev = json!({"type":"event","event":"chat","payload":{"runId":"run-2",
        "sessionKey":"agent:main:main","seq":4,"state":"final","message":"Hi there"}});
    c.handle_frame(&final_ev.to_string(), now).unwrap();
    let refused = json!({"type":"res","id":send["id"],"ok":false,
        "error":{"code":"UNAVAILABLE","message":"agent busy"}});
    c.handle_frame(&refused.to_string(), now).unwrap();
    let outs: Vec<Output> = std::iter::from_fn(|| c.poll_output()).collect();
    assert_eq!(
        outs,
        vec![Output::Finished {
            op: 2,
            result: Ok("Hi there".into())
        }]
    );
}

#[test]
fn two_silent_tick_intervals_are_a_dead_link() {
    let now = Instant::now();
    let mut c = ready_conn(now);
    assert_eq!(c.poll_timeout(), now + Duration::from_secs(2));
    c.handle_timeout(now + Duration::from_millis(1999)).unwrap();
    assert!(matches!(
        c.handle_timeout(now + Duration::from_secs(2)),
        Err(ProtoError::DeadLink(_))
    ));
}

#[test]
fn pairing_error_carries_the_request_id() {
    let now = Instant::now();
    let mut c = Connection::new(
        Credentials {
            token: "t".into(),
            device_token: None,
        },
        None,
        now,
    );
    c.handle_frame(
        r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"n","ts":5}}"#,
        now,
    )
    .unwrap();
    let connect: Value = serde_json::from_str(&c.poll_transmit().unwrap()).unwrap();
    let res = json!({"type":"res","id":connect["id"],"ok":false,"error":{"code":"NOT_PAIRED",
        "message":"pairing required","details":{"code":"PAIRING_REQUIRED","requestId":"req-1"}}});
    assert_eq!(
        c.handle_frame(&res.to_string(), now),
        Err(ProtoError::PairingRequired {
            request_id: Some("req-1".into())
        })
    );
}

#[test]
fn oversized_prelogin_frame_is_refused() {
    let now = Instant::now();
    let mut c = Connection::new(
        Credentials {
            token: "t".into(),
            device_token: None,
        },
        None,
        now,
    );
    let big = "x".repeat(MAX_PRELOGIN_FRAME + 1);
    assert!(matches!(
        c.handle_frame(&big, now),
        Err(ProtoError::TooLarge { .. })
    ));
}
