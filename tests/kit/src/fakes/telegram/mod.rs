//! A fake Telegram Bot API on a loopback socket, speaking the real wire protocol: HTTP/1.1,
//! `POST /bot<TOKEN>/<method>` (or GET with a query string) with JSON or form bodies, answered with
//! the real `{"ok":…}` envelopes, real Message/User/Chat shapes and real error words.
//!
//! getUpdates long-polls like the real server (held up to `timeout` seconds, a newer getUpdates
//! terminates a held one with 409, an offset confirms and deletes every update below it). Tests push
//! updates, inject faults per method and read back what the client sent. Never a mock of our own
//! client: anything that talks the Bot API can be pointed at it, the clawbox binary included.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Request bodies above this are refused, as a real server would (the Bot API's text limit is far
/// below it).
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The first update_id handed out; real ids are large numbers.
const FIRST_UPDATE_ID: i64 = 700_000_001;
/// Telegram's longest message text, in characters.
const MAX_TEXT_CHARS: usize = 4096;
/// Telegram returns at most this many updates per getUpdates.
const MAX_LIMIT: usize = 100;
/// Updates remembered for `redeliver` (a test pushes a handful).
const MAX_HISTORY: usize = 10_000;
/// What a Garbage fault sends back: a cut-off 200 body.
pub const GARBAGE_BODY: &str = "{\"ok\":true,\"result\":[{\"update_id\":7000";

/// A fault to answer the next call(s) of a method with, in the real server's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeError {
    /// 409: "Conflict: terminated by other getUpdates request; …".
    Conflict,
    /// 429 with `parameters.retry_after`.
    TooManyRequests(u64),
    /// 401 "Unauthorized".
    Unauthorized,
    /// 500 "Internal Server Error".
    ServerError,
    /// 200 with a cut-off, unparseable body.
    Garbage,
    /// 400 "Bad Request: chat not found".
    ChatNotFound,
    /// 403 "Forbidden: bot was blocked by the user".
    Blocked,
    /// 200 with well-formed JSON of the wrong shape: `result` is an object, not an array.
    WrongShape,
    /// 200 `text/plain` that is not JSON at all (a captive portal or a misrouted proxy).
    NotJson,
    /// 502 with nginx's HTML error page, as a reverse proxy in front of the Bot API sends it.
    ProxyHtml502,
    /// The call is carried out (a sendMessage makes its message), but its answer is held this
    /// long before it goes out: the request reached Telegram and the answer is lost to a client
    /// that gives up, is cut off or is killed meanwhile.
    CarriedOutAnswerHeld(Duration),
}

/// What a `NotJson` fault sends back.
pub const NOT_JSON_BODY: &str = "OK\n";
/// What a `ProxyHtml502` fault sends back: nginx's stock page, byte for byte.
pub const PROXY_HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0 (Ubuntu)</center>\r\n</body>\r\n</html>\r\n";

mod cues;
mod groups;
mod server;

pub use cues::ReactionCall;
pub use groups::{GroupChat, GroupPost};

use server::dated;

/// A message the client sent with sendMessage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    pub chat_id: i64,
    pub text: String,
    pub message_id: i64,
    pub at: Instant,
    /// `reply_parameters.message_id`: the message this one quotes.
    pub reply_to_message_id: Option<i64>,
    /// `message_thread_id`: the forum topic it was sent in.
    pub message_thread_id: Option<i64>,
}

/// A sendChatAction the client made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatAction {
    pub chat_id: i64,
    pub action: String,
    pub at: Instant,
}

/// One call as received: when, and its parameters (JSON, form or query, as a JSON object).
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub params: Value,
}

struct State {
    token: String,
    bot_id: i64,
    next_update_id: i64,
    /// Unconfirmed updates, ascending by update_id.
    updates: VecDeque<Value>,
    confirmed_offset: i64,
    /// Chats the bot has seen (from pushed updates), by id: sendMessage to others is "chat not found".
    chats: HashMap<i64, Value>,
    /// The bot's message counter: private chats and basic groups share it, as a real bot
    /// account's message box does.
    next_message_id: i64,
    /// Supergroups number their messages themselves, per chat (as Telegram's channels do).
    supergroup_ids: HashMap<i64, i64>,
    /// Every message by (chat, id): sent by the bot, and the Message JSON (for
    /// editMessageReplyMarkup and for `reply_to_message`).
    messages: HashMap<(i64, i64), (bool, Value)>,
    sent: Vec<SentMessage>,
    actions: Vec<ChatAction>,
    faults: HashMap<String, VecDeque<FakeError>>,
    calls: HashMap<String, Vec<Call>>,
    /// Generation of the newest getUpdates: an older held one is terminated with 409.
    poll_generation: u64,
    /// Every update ever pushed (up to `MAX_HISTORY`), for `redeliver`.
    history: Vec<Value>,
    /// Updates to hand out again on the next getUpdates whatever its offset (`redeliver`).
    replays: VecDeque<Value>,
    /// The server's clock against the real one, in seconds: every answer's `Date` header says
    /// it (a client whose clock is off sees a server whose clock is right, the other way round).
    clock_offset_s: i64,
}

impl State {
    /// The id the next message in `chat` gets: a supergroup's own counter, else the bot's box.
    fn next_message_id_in(&mut self, chat: &Value) -> i64 {
        if chat["type"] == "supergroup" {
            let n = self
                .supergroup_ids
                .entry(chat["id"].as_i64().unwrap_or(0))
                .or_insert(0);
            *n += 1;
            *n
        } else {
            let id = self.next_message_id;
            self.next_message_id += 1;
            id
        }
    }

    fn remember(&mut self, update: &Value) {
        if self.history.len() < MAX_HISTORY {
            self.history.push(update.clone());
        }
    }
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every change, so waiters (long polls, `wait_*`) wake.
    version: watch::Sender<u64>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }
}

/// The running fake. Dropping it stops accepting connections.
pub struct FakeTelegram {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn token_is_well_formed(t: &str) -> bool {
    match t.split_once(':') {
        Some((id, secret)) => {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !secret.is_empty()
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    }
}

impl FakeTelegram {
    /// Starts the fake on 127.0.0.1:<free port>, accepting `token` (e.g. `123456:ABC-def…`).
    pub async fn start(token: &str) -> FakeTelegram {
        let bot_id = token
            .split_once(':')
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or(1);
        let (version, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                token: token.to_string(),
                bot_id,
                next_update_id: FIRST_UPDATE_ID,
                updates: VecDeque::new(),
                confirmed_offset: 0,
                chats: HashMap::new(),
                next_message_id: 1,
                supergroup_ids: HashMap::new(),
                messages: HashMap::new(),
                sent: Vec::new(),
                actions: Vec::new(),
                faults: HashMap::new(),
                calls: HashMap::new(),
                poll_generation: 0,
                history: Vec::new(),
                replays: VecDeque::new(),
                clock_offset_s: 0,
            }),
            version,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept_inner = inner.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Small frames must leave at once: Nagle would hold them for real milliseconds
                // while a paused test clock jumps ahead.
                let _ = stream.set_nodelay(true);
                let inner = accept_inner.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| dated(inner.clone(), req));
                    let _ = http1::Builder::new()
                        .header_read_timeout(None)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeTelegram { inner, addr, task }
    }

    /// Sets the server's clock `secs` ahead of the real one (negative: behind), as every
    /// answer's `Date` header says from now on.
    pub fn set_clock_offset(&self, secs: i64) {
        self.inner.lock().clock_offset_s = secs;
    }

    /// `http://127.0.0.1:PORT`, for `api_root`.
    pub fn api_root(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The id the newest message in the bot's box got (0 before any).
    pub fn last_message_id(&self) -> i64 {
        self.inner.lock().next_message_id - 1
    }

    /// The bot's own user id (the number before the token's colon).
    pub fn bot_id(&self) -> i64 {
        self.inner.lock().bot_id
    }

    fn push_message(&self, key: &str, chat: Value, from: Value, fill: Value) -> i64 {
        let mut st = self.inner.lock();
        let id = st.next_update_id;
        st.next_update_id += 1;
        let message_id = st.next_message_id_in(&chat);
        let cid = chat["id"].as_i64();
        if let Some(cid) = cid {
            st.chats.insert(cid, chat.clone());
        }
        let mut msg = json!({
            "message_id": message_id,
            "from": from,
            "chat": chat,
            "date": now_unix(),
        });
        if let (Some(m), Some(f)) = (msg.as_object_mut(), fill.as_object()) {
            for (k, v) in f {
                m.insert(k.clone(), v.clone());
            }
        }
        if let Some(cid) = cid {
            st.messages.insert((cid, message_id), (false, msg.clone()));
        }
        let update = json!({"update_id": id, key: msg});
        st.remember(&update);
        st.updates.push_back(update);
        drop(st);
        self.inner.bump();
        id
    }

    fn user(id: i64) -> Value {
        json!({"id": id, "is_bot": false, "first_name": "Test", "last_name": "User",
               "username": format!("user{id}"), "language_code": "en"})
    }

    fn private_chat(id: i64) -> Value {
        json!({"id": id, "first_name": "Test", "last_name": "User",
               "username": format!("user{id}"), "type": "private"})
    }

    /// A private text message from `from_user_id` in chat `chat_id`; returns its update_id.
    pub fn push_text(&self, from_user_id: i64, chat_id: i64, text: &str) -> i64 {
        self.push_message(
            "message",
            Self::private_chat(chat_id),
            Self::user(from_user_id),
            json!({"text": text}),
        )
    }

    /// A text message in a group (`chat_id` negative, like real groups).
    pub fn push_group_text(&self, from_user_id: i64, chat_id: i64, text: &str) -> i64 {
        self.push_message(
            "message",
            json!({"id": chat_id, "title": "Test Group", "type": "supergroup"}),
            Self::user(from_user_id),
            json!({"text": text}),
        )
    }

    /// An `edited_message` update carrying the new text.
    pub fn push_edit(&self, from_user_id: i64, chat_id: i64, text: &str) -> i64 {
        self.push_message(
            "edited_message",
            Self::private_chat(chat_id),
            Self::user(from_user_id),
            json!({"text": text, "edit_date": now_unix()}),
        )
    }

    /// A private media message. `kind` is the Bot API field: photo, video, video_note, animation,
    /// voice, audio, document, sticker (or location, contact, … for unsupported kinds).
    pub fn push_media(
        &self,
        from_user_id: i64,
        chat_id: i64,
        kind: &str,
        caption: Option<&str>,
    ) -> i64 {
        let file = |extra: Value| {
            let mut f = json!({"file_id": "AgACAgIAAxkBAAIBZ2X", "file_unique_id": "AQADx7Ex"});
            if let (Some(m), Some(e)) = (f.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            f
        };
        let media = match kind {
            "photo" => json!([
                file(json!({"width": 90, "height": 60, "file_size": 1200})),
                file(json!({"width": 1280, "height": 853, "file_size": 98_000})),
            ]),
            "video" | "animation" => {
                file(json!({"width": 640, "height": 360, "duration": 5, "mime_type": "video/mp4"}))
            }
            "video_note" => file(json!({"length": 240, "duration": 4})),
            "voice" => file(json!({"duration": 3, "mime_type": "audio/ogg", "file_size": 9000})),
            "audio" => file(json!({"duration": 180, "mime_type": "audio/mpeg", "title": "Song"})),
            "document" => file(
                json!({"file_name": "report.pdf", "mime_type": "application/pdf", "file_size": 52000}),
            ),
            "sticker" => file(
                json!({"type": "regular", "width": 512, "height": 512, "is_animated": false, "is_video": false, "emoji": "👍"}),
            ),
            "location" => json!({"latitude": 52.52, "longitude": 13.405}),
            "contact" => json!({"phone_number": "+4915100000000", "first_name": "Bob"}),
            other => json!({"unknown_kind": other}),
        };
        let mut fill = json!({ kind: media });
        if let Some(c) = caption {
            fill["caption"] = json!(c);
        }
        self.push_message(
            "message",
            Self::private_chat(chat_id),
            Self::user(from_user_id),
            fill,
        )
    }

    /// Any update JSON, delivered as is (malformed ones included). Without an `update_id` it
    /// gets the next one; returns the update_id used.
    pub fn push_raw(&self, mut update: Value) -> i64 {
        let mut st = self.inner.lock();
        let id = match update.get("update_id").and_then(Value::as_i64) {
            Some(id) => id,
            None => {
                let id = st.next_update_id;
                if let Some(m) = update.as_object_mut() {
                    m.insert("update_id".into(), json!(id));
                }
                id
            }
        };
        st.next_update_id = st.next_update_id.max(id + 1);
        let pos = st
            .updates
            .iter()
            .position(|u| u["update_id"].as_i64().unwrap_or(i64::MIN) > id)
            .unwrap_or(st.updates.len());
        st.remember(&update);
        st.updates.insert(pos, update);
        drop(st);
        self.inner.bump();
        id
    }

    /// Delivers an earlier update again, same update_id and content, as Telegram does with updates
    /// whose offset was never confirmed (e.g. after the bot's connection broke). False if unknown.
    pub fn redeliver(&self, update_id: i64) -> bool {
        let mut st = self.inner.lock();
        let Some(u) = st
            .history
            .iter()
            .find(|u| u["update_id"].as_i64() == Some(update_id))
            .cloned()
        else {
            return false;
        };
        st.replays.push_back(u);
        drop(st);
        self.inner.bump();
        true
    }

    /// Lets sendMessage reach a chat no pushed update mentioned.
    pub fn add_chat(&self, chat_id: i64) {
        self.inner
            .lock()
            .chats
            .insert(chat_id, Self::private_chat(chat_id));
    }

    /// Answers the next `n` calls of `method` with `err`.
    pub fn fail_next(&self, method: &str, n: usize, err: FakeError) {
        let mut st = self.inner.lock();
        let q = st.faults.entry(method.to_ascii_lowercase()).or_default();
        q.extend(std::iter::repeat_n(err, n));
    }

    pub fn sent(&self) -> Vec<SentMessage> {
        self.inner.lock().sent.clone()
    }

    pub fn chat_actions(&self) -> Vec<ChatAction> {
        self.inner.lock().actions.clone()
    }

    /// The highest offset a getUpdates confirmed: every update below it is gone.
    pub fn confirmed_offset(&self) -> i64 {
        self.inner.lock().confirmed_offset
    }

    /// Updates pushed and not confirmed yet.
    pub fn pending_updates(&self) -> usize {
        self.inner.lock().updates.len()
    }

    /// How many times `method` was called (faulted calls included).
    pub fn calls(&self, method: &str) -> usize {
        self.calls_of(method).len()
    }

    /// Every call of `method`, in arrival order.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.inner
            .lock()
            .calls
            .get(&method.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&State) -> Option<T>,
    ) -> T {
        let mut rx = self.inner.version.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = check(&self.inner.lock()) {
                return t;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("fake telegram: timed out after {timeout:?} waiting for {what}"),
            }
        }
    }

    /// Waits until at least `n` messages were sent; returns all of them.
    pub async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        self.wait_until(timeout, &format!("{n} sent messages"), |st| {
            (st.sent.len() >= n).then(|| st.sent.clone())
        })
        .await
    }

    /// Waits until at least `n` chat actions were made; returns all of them.
    pub async fn wait_actions(&self, n: usize, timeout: Duration) -> Vec<ChatAction> {
        self.wait_until(timeout, &format!("{n} chat actions"), |st| {
            (st.actions.len() >= n).then(|| st.actions.clone())
        })
        .await
    }

    /// Waits until `method` was called at least `n` times; returns the calls.
    pub async fn wait_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let key = method.to_ascii_lowercase();
        self.wait_until(timeout, &format!("{n} calls of {method}"), |st| {
            let calls = st.calls.get(&key)?;
            (calls.len() >= n).then(|| calls.clone())
        })
        .await
    }

    /// Waits until the confirmed offset reaches `offset`.
    pub async fn wait_confirmed(&self, offset: i64, timeout: Duration) {
        self.wait_until(timeout, &format!("offset {offset} confirmed"), |st| {
            (st.confirmed_offset >= offset).then_some(())
        })
        .await
    }
}
