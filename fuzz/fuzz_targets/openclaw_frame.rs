//! Fuzz target `openclaw_frame`: arbitrary text frames into the OpenClaw gateway client's sans-io
//! core (`clawbox::agent::openclaw::proto::Connection`), once on a fresh connection (before
//! hello) and once on a connection that finished a real handshake and has two turns in flight,
//! with `now` moving forward. Owns nothing else.
//!
//! Input: lines. A line is one received text frame, except lines starting with `#`, which are the
//! driver's own calls: `#send N` (chat.send for op N, runId `run-N`), `#reset N`, `#cancel N`,
//! `#wait MS` (time passes, then the timer fires).
//!
//! Asserts: never panics; every frame the client writes is a JSON `req` with a string id and method,
//! and survives a JSON round trip; pending requests and partial replies stay within their limits;
//! every result belongs to an operation the driver started, and is reported at most once;
//! `Ready` only comes from a handshake.
#![no_main]

use clawbox::agent::openclaw::identity::DeviceIdentity;
use clawbox::agent::openclaw::proto::{
    Connection, Credentials, MAX_FRAME, MAX_PENDING, OpId, Output,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Time between two received frames.
const FRAME_GAP: Duration = Duration::from_millis(50);
/// Longest `#wait`: beyond any tick interval the core accepts.
const MAX_WAIT_MS: u64 = 30 * 60 * 1000;
/// The session keys of the turns started before the frames of the ready run.
const SESSION_A: &str = "agent:main:main";
const SESSION_B: &str = "agent:main:other";

fn identity() -> Arc<DeviceIdentity> {
    static ID: OnceLock<Arc<DeviceIdentity>> = OnceLock::new();
    ID.get_or_init(|| Arc::new(DeviceIdentity::generate().expect("a key").0))
        .clone()
}

struct Harness {
    conn: Connection,
    now: Instant,
    /// Ops the driver started and has not seen finish.
    open: HashSet<OpId>,
    /// Every op id ever used.
    started: HashSet<OpId>,
    /// The handshake finished (Ready was polled, or the connection was made ready by the harness).
    ready: bool,
}

impl Harness {
    fn new(device_token: Option<&str>, with_identity: bool) -> Harness {
        let now = Instant::now();
        let conn = Connection::new(
            Credentials {
                token: "shared-token".into(),
                device_token: device_token.map(str::to_string),
            },
            with_identity.then(identity),
            now,
        );
        Harness {
            conn,
            now,
            open: HashSet::new(),
            started: HashSet::new(),
            ready: false,
        }
    }

    /// A real handshake: challenge, the client's connect, hello-ok.
    fn handshake(&mut self) {
        let challenge = json!({"type":"event","event":"connect.challenge",
            "payload":{"nonce":"3f9a","ts":1_760_000_000_000u64}});
        self.frame(&challenge.to_string())
            .expect("a valid challenge is accepted");
        let hello = json!({"type":"res","id":"c1","ok":true,"payload":{
            "type":"hello-ok","protocol":4,"server":{"version":"2026.9.6"},
            "auth":{"scopes":["operator.read","operator.write","operator.admin"],"deviceToken":"dt-1"},
            "policy":{"tickIntervalMs":1000,"maxPayload":26214400},
            "snapshot":{"sessionDefaults":{"defaultAgentId":"main"}}}});
        self.frame(&hello.to_string())
            .expect("a valid hello-ok is accepted");
        assert!(self.ready && self.conn.is_ready());
    }

    fn frame(&mut self, text: &str) -> Result<(), ()> {
        self.now += FRAME_GAP;
        let r = self.conn.handle_frame(text, self.now);
        self.drain();
        r.map_err(|e| {
            let _ = e.to_string();
        })
    }

    fn command(&mut self, line: &str) -> Result<(), ()> {
        let mut words = line[1..].split_whitespace();
        let verb = words.next().unwrap_or("");
        let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        // The driver never reuses an operation id (they count up from 1).
        if matches!(verb, "send" | "reset") && !self.started.insert(n) {
            return Ok(());
        }
        match verb {
            "send" => {
                let session = if n % 2 == 0 { SESSION_A } else { SESSION_B };
                if self
                    .conn
                    .send_chat(n, session, "hello there", &format!("run-{n}"))
                    .is_ok()
                {
                    self.open.insert(n);
                }
            }
            "reset" => {
                if self.conn.send_reset(n, SESSION_A).is_ok() {
                    self.open.insert(n);
                }
            }
            "cancel" => {
                self.conn.cancel(n);
                self.open.remove(&n);
                assert!(self.conn.partial(n).is_none());
            }
            "wait" => {
                self.now += Duration::from_millis(n.min(MAX_WAIT_MS));
                let r = self.conn.handle_timeout(self.now);
                self.drain();
                return r.map_err(|e| {
                    let _ = e.to_string();
                });
            }
            _ => {}
        }
        self.drain();
        Ok(())
    }

    /// What the driver does after every input: write every frame, route every output.
    fn drain(&mut self) {
        while let Some(frame) = self.conn.poll_transmit() {
            let v: Value = serde_json::from_str(&frame).expect("the client writes JSON");
            assert_eq!(v["type"], "req", "{frame}");
            assert!(v["id"].is_string() && v["method"].is_string(), "{frame}");
            let again: Value = serde_json::from_str(&v.to_string()).expect("round trip");
            assert_eq!(again, v);
        }
        while let Some(out) = self.conn.poll_output() {
            match out {
                Output::Ready(hello) => {
                    assert!(!self.ready, "Ready twice");
                    assert_eq!(hello.protocol, 4);
                    self.ready = true;
                }
                Output::Accepted { op } | Output::Delta { op } => {
                    assert!(
                        self.open.contains(&op),
                        "progress for op {op} never started"
                    );
                }
                Output::Finished { op, .. } | Output::ResetDone { op, .. } => {
                    assert!(self.open.remove(&op), "result for op {op} not open");
                    assert!(self.conn.partial(op).is_none());
                }
            }
        }
        assert!(self.conn.pending_requests() <= MAX_PENDING);
        for op in self.conn.ops() {
            if let Some(p) = self.conn.partial(op) {
                assert!(p.len() <= MAX_FRAME);
            }
        }
        let _ = self.conn.poll_timeout();
        assert_eq!(self.ready, self.conn.is_ready());
    }

    fn feed(&mut self, input: &str) {
        for line in input.split('\n') {
            let r = if line.starts_with('#') {
                self.command(line)
            } else {
                self.frame(line)
            };
            if r.is_err() {
                return; // the driver closes the connection
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the WebSocket protocol; tungstenite refuses anything else.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    // Before hello: with and without a device identity and token, chosen by the input.
    let mut fresh = Harness::new((data.len() % 3 == 0).then_some("dt-0"), data.len() % 2 == 1);
    fresh.feed(input);

    // After a real hello-ok, with two turns and a reset in flight (requests c2, c3, c4).
    let mut up = Harness::new(None, false);
    up.handshake();
    up.command("#send 2").expect("send");
    up.command("#send 3").expect("send");
    up.command("#reset 4").expect("reset");
    up.feed(input);
});
