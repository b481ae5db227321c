//! The Telegram channel's `run` against the fake Bot API on real loopback sockets, with tokio's
//! paused clock: inbound conversion and confirmation, outbound sends and typing, the error paths
//! (409, 429, 401, garbage), send limits and shutdown.

use kit::fakes;

use clawbox::channel::telegram::doubt;
use clawbox::channel::telegram::{self, proto};
use clawbox::channel::{Arm, ChannelCommand, ChannelContext, ChannelError, Doubt, SendError};
use clawbox::config::{Secret, TelegramConfig};
use clawbox::http::HttpClient;
use clawbox::intake::{Intake, IntakeError, Submission, Submitted};
use clawbox::metrics::Metrics;
use clawbox::shutdown::{Shutdown, ShutdownTrigger};
use clawbox::status::{Board, State};
use clawbox::store::Store;
use clawbox::vocab::{ChannelKind, Content, Inbound, MediaKind};
use fakes::telegram::{FakeError, FakeTelegram};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TOKEN: &str = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz";
const USER: i64 = 4242;
/// Long enough for any step (the fake's long poll holds 50 s of paused time).
const WAIT: Duration = Duration::from_secs(300);

struct Harness {
    fake: FakeTelegram,
    subs: mpsc::Receiver<Submission>,
    cmds: mpsc::Sender<ChannelCommand>,
    board: Board,
    metrics: Arc<Metrics>,
    trigger: ShutdownTrigger,
    run: JoinHandle<Result<(), ChannelError>>,
    _dir: tempfile::TempDir,
}

fn config(api_root: &str, token: &str) -> TelegramConfig {
    let mut cfg: TelegramConfig =
        toml::from_str(&format!("api_root = {api_root:?}\npoll_timeout_s = 50\n")).unwrap();
    cfg.token = Some(Secret::new(token.into()));
    cfg
}

async fn start_with(fake: FakeTelegram, cfg: TelegramConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store = Store::open_in_memory(metrics.clone()).unwrap();
    let (intake, subs) = Intake::test_channel(16);
    let board = Board::default();
    let reporter = board.register("telegram", true);
    let (cmds, rx) = mpsc::channel(16);
    let (trigger, shutdown) = Shutdown::new();
    let ctx = ChannelContext {
        intake,
        store,
        metrics: metrics.clone(),
        reporter,
        http: HttpClient::new(),
        commands: Arc::new(Mutex::new(rx)),
        shutdown,
    };
    let run = tokio::spawn(telegram::run(Arc::new(cfg), ctx));
    Harness {
        fake,
        subs,
        cmds,
        board,
        metrics,
        trigger,
        run,
        _dir: dir,
    }
}

async fn start(fake: FakeTelegram) -> Harness {
    let cfg = config(&fake.api_root(), TOKEN);
    start_with(fake, cfg).await
}

impl Harness {
    async fn next_submission(&mut self) -> Submission {
        tokio::time::timeout(WAIT, self.subs.recv())
            .await
            .expect("no submission in time")
            .expect("intake closed")
    }

    /// The next submitted message, answered Accepted.
    async fn accept(&mut self) -> Inbound {
        let s = self.next_submission().await;
        let msg = s.msg.clone();
        s.reply.send(Ok(Submitted::Accepted)).unwrap();
        msg
    }

    fn row(&self) -> (State, String) {
        let r = &self.board.snapshot()[0];
        (r.state, r.detail.clone())
    }

    async fn wait_state(&self, state: State) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let (s, d) = self.row();
            if s == state {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "row never reached {state:?}; now {s:?} {d}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&self, chat: i64, text: &str) -> oneshot::Receiver<Result<(), SendError>> {
        let (done, rx) = oneshot::channel();
        self.cmds
            .send(ChannelCommand::Send {
                chat: chat.to_string(),
                text: text.into(),
                key: format!("k-{text}"),
                after: 0,
                reply_to: None,
                arm: clawbox::channel::Arm::unrecorded(),
                done,
            })
            .await
            .unwrap();
        rx
    }

    /// Sends with an arm that reports the hint it was armed with.
    async fn send_armed(&self, chat: i64, text: &str) -> (Result<(), SendError>, Option<u64>) {
        let armed = Arc::new(std::sync::Mutex::new(None));
        let (done, rx) = oneshot::channel();
        self.cmds
            .send(ChannelCommand::Send {
                chat: chat.to_string(),
                text: text.into(),
                key: format!("k-{text}"),
                after: 0,
                reply_to: None,
                arm: Arm::observed(armed.clone()),
                done,
            })
            .await
            .unwrap();
        let r = rx.await.unwrap();
        let hint = *armed.lock().unwrap();
        (r, hint)
    }

    /// Asks the channel to settle a chunk armed with `hint`, whose outcome became unknown long
    /// enough ago that no wait is due.
    async fn reconcile(&self, chat: i64, hint: u64) -> Doubt {
        let (done, rx) = oneshot::channel();
        let since_ms = clawbox::store::now_ms() - 2 * doubt::SETTLE_AFTER.as_millis() as u64;
        self.cmds
            .send(ChannelCommand::Reconcile {
                chat: chat.to_string(),
                key: "k".into(),
                hint,
                since_ms,
                done,
            })
            .await
            .unwrap();
        rx.await.unwrap()
    }

    async fn stop(self) -> Result<(), ChannelError> {
        self.trigger.trip();
        tokio::time::timeout(Duration::from_secs(1), self.run)
            .await
            .expect("run did not stop promptly")
            .unwrap()
    }

    fn malformed(&self) -> u64 {
        self.metrics.malformed[ChannelKind::Telegram].load(Relaxed)
    }
}

fn offset_of(call: &fakes::telegram::Call) -> Option<i64> {
    call.params.get("offset").and_then(|v| v.as_i64())
}

#[tokio::test(start_paused = true)]
async fn private_text_is_submitted_confirmed_and_answered_with_typing() {
    let fake = FakeTelegram::start(TOKEN).await;
    let id = fake.push_text(USER, USER, "hello there");
    let mut h = start(fake).await;

    let s = h.next_submission().await;
    assert_eq!(
        s.msg,
        Inbound {
            channel: ChannelKind::Telegram,
            id: id.to_string(),
            chat: USER.to_string(),
            sender: USER.to_string(),
            sender_alt: None,
            author: USER.to_string(),
            wire_seq: s.msg.wire_seq,
            is_group: false,
            content: Content::Text("hello there".into()),
            ts_ms: s.msg.ts_ms,
            cues: s.msg.cues.clone(),
        }
    );
    assert!(s.msg.ts_ms > 1_600_000_000_000, "date × 1000");
    // Not confirmed before the intake answered.
    assert!(h.fake.confirmed_offset() <= id);
    s.reply.send(Ok(Submitted::Accepted)).unwrap();
    h.fake.wait_confirmed(id + 1, WAIT).await;
    assert_eq!(h.row(), (State::Up, "@clawbox_test_bot".into()));

    let first = &h.fake.calls_of("getUpdates")[0];
    assert_eq!(first.params["timeout"], 50);
    assert_eq!(
        first.params["allowed_updates"],
        serde_json::json!(["message", "message_reaction"])
    );

    // A reply goes out in the same chat and is confirmed.
    let done = h.send(USER, "hi back").await;
    let sent = h.fake.wait_sent(1, WAIT).await;
    assert_eq!(sent[0].chat_id, USER);
    assert_eq!(sent[0].text, "hi back");
    assert_eq!(done.await.unwrap(), Ok(()));

    // Typing shows now and is repeated every 4.5 s while on.
    h.cmds
        .send(ChannelCommand::Typing {
            chat: USER.to_string(),
            on: true,
        })
        .await
        .unwrap();
    let actions = h.fake.wait_actions(3, WAIT).await;
    assert!(
        actions
            .iter()
            .all(|a| a.chat_id == USER && a.action == "typing")
    );
    assert_eq!(actions[1].at - actions[0].at, proto::TYPING_REPEAT);
    assert_eq!(actions[2].at - actions[1].at, proto::TYPING_REPEAT);
    h.cmds
        .send(ChannelCommand::Typing {
            chat: USER.to_string(),
            on: false,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(h.fake.chat_actions().len(), 3, "typing stopped when off");

    assert_eq!(h.stop().await.unwrap(), ());
}

#[tokio::test(start_paused = true)]
async fn media_groups_edits_and_unsupported_kinds_convert() {
    let fake = FakeTelegram::start(TOKEN).await;
    let photo = fake.push_media(USER, USER, "photo", Some("look at this"));
    fake.push_media(USER, USER, "voice", None);
    fake.push_media(USER, USER, "location", None);
    fake.push_edit(USER, USER, "edited text");
    let group = fake.push_group_text(USER, -100_123, "hi group");
    let mut h = start(fake).await;

    let m = h.accept().await;
    assert_eq!(m.id, photo.to_string());
    assert_eq!(
        m.content,
        Content::Media {
            kind: MediaKind::Image,
            caption: Some("look at this".into())
        }
    );
    let m = h.accept().await;
    assert_eq!(
        m.content,
        Content::Media {
            kind: MediaKind::Audio,
            caption: None
        }
    );
    let m = h.accept().await;
    assert_eq!(
        m.content,
        Content::Text("[unsupported message: location]".into())
    );
    // The edit was not asked for (allowed_updates) and is not submitted; the group message is, as a
    // group.
    let m = h.accept().await;
    assert_eq!(m.id, group.to_string());
    assert!(m.is_group);
    assert_eq!(m.chat, "-100123");
    h.fake.wait_confirmed(group + 1, WAIT).await;
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn edits_are_submitted_when_handle_edits_is_on() {
    let fake = FakeTelegram::start(TOKEN).await;
    let id = fake.push_edit(USER, USER, "edited text");
    let mut cfg = config(&fake.api_root(), TOKEN);
    cfg.handle_edits = true;
    let mut h = start_with(fake, cfg).await;
    let m = h.accept().await;
    assert_eq!(m.id, id.to_string());
    assert_eq!(m.content, Content::Text("edited text".into()));
    let first = &h.fake.calls_of("getUpdates")[0];
    assert_eq!(
        first.params["allowed_updates"],
        serde_json::json!(["message", "message_reaction", "edited_message"])
    );
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failed_submit_is_not_confirmed_and_comes_again() {
    let fake = FakeTelegram::start(TOKEN).await;
    let a = fake.push_text(USER, USER, "first");
    let b = fake.push_text(USER, USER, "second");
    let mut h = start(fake).await;

    assert_eq!(h.accept().await.id, a.to_string());
    let s = h.next_submission().await;
    assert_eq!(s.msg.id, b.to_string());
    s.reply
        .send(Err(IntakeError::Store("disk full".into())))
        .unwrap();

    // Offered again, same id, and never confirmed in between.
    let s = h.next_submission().await;
    assert_eq!(s.msg.id, b.to_string());
    assert!(h.fake.confirmed_offset() <= b, "b confirmed before durable");
    assert!(
        h.fake
            .calls_of("getUpdates")
            .iter()
            .all(|c| offset_of(c).is_none_or(|o| o <= b))
    );
    s.reply.send(Ok(Submitted::Duplicate)).unwrap();
    h.fake.wait_confirmed(b + 1, WAIT).await;
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn conflict_degrades_then_recovers() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.fail_next("getUpdates", 2, FakeError::Conflict);
    let mut h = start(fake).await;

    // The third poll is the one that works (held: no updates yet); the row still says why.
    h.fake.wait_calls("getUpdates", 3, WAIT).await;
    let (state, detail) = h.row();
    assert_eq!(state, State::Degraded);
    assert_eq!(detail, proto::CONFLICT_DETAIL);
    assert!(detail.contains("another bot instance or a webhook"));

    let id = h.fake.push_text(USER, USER, "after conflict");
    assert_eq!(h.accept().await.id, id.to_string());
    assert_eq!(h.wait_state(State::Up).await, "@clawbox_test_bot");
    assert_eq!(h.metrics.reconnects[ChannelKind::Telegram].load(Relaxed), 1);
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn too_many_requests_on_poll_waits_exactly_retry_after() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.fail_next("getUpdates", 1, FakeError::TooManyRequests(7));
    let h = start(fake).await;
    let calls = h.fake.wait_calls("getUpdates", 2, WAIT).await;
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_secs(7) && gap < Duration::from_millis(7100),
        "waited {gap:?}"
    );
    assert_eq!(
        offset_of(&calls[0]),
        offset_of(&calls[1]),
        "same request resent"
    );
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_stops_the_channel_for_the_owner() {
    let fake = FakeTelegram::start(TOKEN).await;
    let cfg = config(
        &fake.api_root(),
        "123456:WRONG-token_abcdefghijklmnopqrstuvw",
    );
    let h = start_with(fake, cfg).await;
    let r = tokio::time::timeout(WAIT, h.run).await.unwrap().unwrap();
    assert!(r.is_ok());
    let row = &h.board.snapshot()[0];
    assert_eq!(row.state, State::NeedsOwner);
    assert_eq!(row.detail, "token rejected by Telegram — check token_file");
    assert_eq!(h.fake.calls("getUpdates"), 0);
}

#[tokio::test(start_paused = true)]
async fn unauthorized_while_polling_stops_too() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.fail_next("getUpdates", 1, FakeError::Unauthorized);
    let h = start(fake).await;
    let r = tokio::time::timeout(WAIT, h.run).await.unwrap().unwrap();
    assert!(r.is_ok());
    assert_eq!(h.board.snapshot()[0].state, State::NeedsOwner);
    assert_eq!(h.fake.calls("getUpdates"), 1, "no retry after 401");
}

#[tokio::test(start_paused = true)]
async fn garbage_is_counted_and_good_offsets_are_kept() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.fail_next("getUpdates", 1, FakeError::Garbage);
    let a = fake.push_text(USER, USER, "a");
    let bad = fake.push_raw(serde_json::json!({"message": "not a message object"}));
    let c = fake.push_text(USER, USER, "c");
    let mut h = start(fake).await;

    assert_eq!(h.accept().await.id, a.to_string());
    assert_eq!(
        h.accept().await.id,
        c.to_string(),
        "the bad update is skipped"
    );
    assert!(bad > a && bad < c);
    h.fake.wait_confirmed(c + 1, WAIT).await;
    // One whole unreadable response plus one unreadable update.
    assert_eq!(h.malformed(), 2);
    let calls = h.fake.calls_of("getUpdates");
    assert_eq!(offset_of(&calls[0]), None);
    assert_eq!(offset_of(&calls[1]), None, "retried from the same offset");

    // Polling carries on past it.
    let d = h.fake.push_text(USER, USER, "d");
    assert_eq!(h.accept().await.id, d.to_string());
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn send_errors_map_to_what_delivery_should_do() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.add_chat(USER);
    fake.fail_next("sendMessage", 1, FakeError::TooManyRequests(5));
    fake.fail_next("sendMessage", 1, FakeError::Blocked);
    fake.fail_next("sendMessage", 1, FakeError::ServerError);
    let h = start(fake).await;

    let r = h.send(USER, "one").await.await.unwrap();
    assert_eq!(r, Err(SendError::RetryAfter(Duration::from_secs(5))));
    // One chat's sends are a second apart (the channel's own limit).
    tokio::time::sleep(proto::PER_CHAT_INTERVAL).await;
    let r = h.send(USER, "two").await.await.unwrap();
    assert_eq!(
        r,
        Err(SendError::Permanent(
            "Forbidden: bot was blocked by the user".into()
        ))
    );
    tokio::time::sleep(proto::PER_CHAT_INTERVAL).await;
    // A 5xx answers a request that reached the server side: whether the message was made is
    // not known (a proxy may fail after Telegram did), so the chunk is settled, not resent.
    let r = h.send(USER, "three").await.await.unwrap();
    assert!(matches!(r, Err(SendError::InDoubt(_))), "{r:?}");
    // A chat the bot never saw: the real server's 400.
    let r = h.send(999_999, "four").await.await.unwrap();
    assert_eq!(
        r,
        Err(SendError::Permanent("Bad Request: chat not found".into()))
    );
    assert!(h.fake.sent().is_empty());
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sends_to_one_chat_are_a_second_apart() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.add_chat(USER);
    fake.add_chat(USER + 1);
    let h = start(fake).await;
    assert_eq!(h.send(USER, "one").await.await.unwrap(), Ok(()));
    // Too soon for the same chat: nothing is sent, and the channel says when (the delivery loop
    // waits that long before it marks the chunk in flight again).
    let r = h.send(USER, "two").await.await.unwrap();
    let Err(SendError::NotYet(wait)) = r else {
        panic!("{r:?}")
    };
    assert!(
        wait > Duration::ZERO && wait <= proto::PER_CHAT_INTERVAL,
        "{wait:?}"
    );
    // Another chat is not held back by the first chat's limit.
    assert_eq!(h.send(USER + 1, "other chat").await.await.unwrap(), Ok(()));
    tokio::time::sleep(wait).await;
    assert_eq!(h.send(USER, "two").await.await.unwrap(), Ok(()));
    let sent = h.fake.wait_sent(3, WAIT).await;
    assert_eq!(
        sent.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        ["one", "other chat", "two"]
    );
    assert!(sent[2].at - sent[0].at >= proto::PER_CHAT_INTERVAL);
    assert!(sent[1].at - sent[0].at < proto::PER_CHAT_INTERVAL);
    h.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_promptly_during_a_long_poll_and_the_row_is_not_stalled_meanwhile() {
    let fake = FakeTelegram::start(TOKEN).await;
    let h = start(fake).await;
    h.fake.wait_calls("getUpdates", 1, WAIT).await;
    // Deep inside a 50 s long poll, past the standing allowance: not stalled, because the poll
    // announced how long it may take.
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert!(Duration::from_secs(45) > clawbox::status::DEFAULT_ALLOWANCE);
    assert_eq!(h.fake.calls("getUpdates"), 1, "still the same poll");
    assert!(h.board.stalled(Instant::now()).is_empty());
    let board = h.board.clone();
    h.stop().await.unwrap();
    assert_eq!(board.snapshot()[0].state, State::Off);
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_then_count_a_reconnect() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.fail_next("getUpdates", 3, FakeError::ServerError);
    let mut h = start(fake).await;
    let calls = h.fake.wait_calls("getUpdates", 4, WAIT).await;
    let (state, detail) = h.row();
    assert_eq!(state, State::Degraded);
    assert!(detail.starts_with("cannot reach Telegram"), "{detail}");
    // Jittered, capped backoff between the retries.
    for w in calls.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap > Duration::ZERO && gap <= clawbox::retry::LINK.cap,
            "{gap:?}"
        );
    }
    let id = h.fake.push_text(USER, USER, "back");
    assert_eq!(h.accept().await.id, id.to_string());
    assert_eq!(h.wait_state(State::Up).await, "@clawbox_test_bot");
    assert_eq!(h.metrics.reconnects[ChannelKind::Telegram].load(Relaxed), 1);
    h.stop().await.unwrap();
}

/// The fake takes what other Bot API clients send too: form bodies and GET query strings.
#[tokio::test(start_paused = true)]
async fn fake_accepts_form_bodies_and_query_strings() {
    use bytes::Bytes;
    use http_body_util::Full;
    let fake = FakeTelegram::start(TOKEN).await;
    let id = fake.push_text(USER, USER, "x");
    let http = HttpClient::new();
    let root = fake.api_root();
    let get = http::Request::get(format!(
        "{root}/bot{TOKEN}/getUpdates?offset={}&timeout=0",
        id + 1
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let r = http.request(get, WAIT, 1 << 20).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(r.body()).unwrap(),
        serde_json::json!({"ok": true, "result": []})
    );
    assert_eq!(fake.confirmed_offset(), id + 1);
    let post = http::Request::post(format!("{root}/bot{TOKEN}/sendMessage"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!(
            "chat_id={USER}&text=caf%C3%A9+ok"
        ))))
        .unwrap();
    let r = http.request(post, WAIT, 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["text"], "café ok");
    assert_eq!(v["result"]["from"]["is_bot"], true);
    assert_eq!(fake.sent()[0].text, "café ok");
    let bad = http::Request::post(format!("{root}/bot123456:nope/getMe"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = http.request(bad, WAIT, 1 << 20).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(r.body()).unwrap(),
        serde_json::json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
}

/// A chunk is armed (marked in flight) only when its request really goes: never while the chat's
/// rate limit holds it back. It is armed with the highest private message id the bot knows.
#[tokio::test(start_paused = true)]
async fn a_send_is_armed_only_when_its_request_goes() {
    let fake = FakeTelegram::start(TOKEN).await;
    let mut h = start(fake).await;
    let update = h.fake.push_text(USER, USER, "hello");
    let _ = h.accept().await;
    let _ = update;
    let user_msg = h.fake.last_message_id();
    let (r, hint) = h.send_armed(USER, "one").await;
    assert_eq!(r, Ok(()));
    assert_eq!(hint, Some(user_msg as u64), "armed with the last id known");
    let (r, hint) = h.send_armed(USER, "two").await;
    assert!(matches!(r, Err(SendError::NotYet(_))), "{r:?}");
    assert_eq!(hint, None, "held back by the per-chat limit: never armed");
    // The next send knows the id its own first message got.
    tokio::time::sleep(proto::PER_CHAT_INTERVAL).await;
    let (r, hint) = h.send_armed(USER, "two").await;
    assert_eq!(r, Ok(()));
    assert_eq!(hint, Some(h.fake.sent()[0].message_id as u64));
    h.stop().await.unwrap();
}

/// A sendMessage that Telegram carried out but whose answer never came: in doubt, then found by
/// probing, never sent again.
#[tokio::test(start_paused = true)]
async fn a_send_carried_out_but_unanswered_is_found_not_repeated() {
    let fake = FakeTelegram::start(TOKEN).await;
    let mut h = start(fake).await;
    h.fake.push_text(USER, USER, "hello");
    let _ = h.accept().await;
    // Other traffic in the bot's message box between the hint and the chunk: another user's
    // private message (another chat), and the user's own next message.
    h.fake.fail_next(
        "sendMessage",
        1,
        FakeError::CarriedOutAnswerHeld(Duration::from_secs(120)),
    );
    let (r, hint) = h.send_armed(USER, "the reply").await;
    assert!(matches!(r, Err(SendError::InDoubt(_))), "{r:?}");
    let hint = hint.expect("armed");
    assert_eq!(h.fake.sent().len(), 1, "Telegram made the message");
    h.fake.push_text(USER + 1, USER + 1, "someone else");
    h.fake.push_text(USER, USER, "and again");
    assert_eq!(h.reconcile(USER, hint).await, Doubt::Sent);
    assert_eq!(h.fake.sent().len(), 1, "probing sends nothing");
    // The ids above the hint were probed in order, up to the chunk's.
    let probes = h.fake.calls_of("editMessageReplyMarkup");
    assert_eq!(
        probes.len(),
        1,
        "the chunk's id is the first above the hint"
    );
    h.stop().await.unwrap();
}

/// A chunk that never reached Telegram (armed, then cut before the request left) is found
/// missing: sending it is safe. Ids of other chats and of the user's messages are stepped over.
#[tokio::test(start_paused = true)]
async fn a_send_that_never_arrived_is_found_missing() {
    let fake = FakeTelegram::start(TOKEN).await;
    let mut h = start(fake).await;
    h.fake.push_text(USER, USER, "hello");
    let _ = h.accept().await;
    let hint = h.fake.last_message_id() as u64;
    h.fake.push_text(USER + 1, USER + 1, "someone else");
    h.fake.push_text(USER, USER, "and again");
    assert_eq!(h.reconcile(USER, hint).await, Doubt::NotSent);
    assert_eq!(
        h.fake.calls_of("editMessageReplyMarkup").len() as u64,
        doubt::MAX_PROBES
    );
    assert!(h.fake.sent().is_empty());
    // No id known when it was armed: the bot's older messages could not be told apart.
    assert_eq!(h.reconcile(USER, 0).await, Doubt::Unknowable);
    h.stop().await.unwrap();
}

/// While Telegram cannot be reached, a chunk in doubt stays unresolved (asked again later), never
/// resent and never dropped.
#[tokio::test(start_paused = true)]
async fn a_chunk_in_doubt_stays_unresolved_while_telegram_is_down() {
    let fake = FakeTelegram::start(TOKEN).await;
    let mut h = start(fake).await;
    h.fake.push_text(USER, USER, "hello");
    let _ = h.accept().await;
    let hint = h.fake.last_message_id() as u64;
    h.fake
        .fail_next("editMessageReplyMarkup", 1, FakeError::ServerError);
    assert!(matches!(
        h.reconcile(USER, hint).await,
        Doubt::Unresolved(_)
    ));
    h.fake
        .fail_next("editMessageReplyMarkup", 1, FakeError::TooManyRequests(7));
    assert_eq!(
        h.reconcile(USER, hint).await,
        Doubt::NotYet(Duration::from_secs(7))
    );
    h.stop().await.unwrap();
}
