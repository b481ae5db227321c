//! A faithful OpenAI-compatible server on loopback, for tests: real HTTP/1.1 (hyper), real JSON
//! shapes, real SSE framing, byte for byte as OpenAI, llama.cpp and Ollama send them.
//!
//! It serves `POST /v1/chat/completions` (streamed as `chat.completion.chunk` events ending in
//! `data: [DONE]`, or one `chat.completion` when `stream` is false or absent), `GET /v1/models`,
//! and OpenAI's error shape for a wrong key, a forced status or an unknown route. Behaviour knobs
//! in [`FakeConfig`] produce slow heads, slow or stalled streams and scripted raw bodies. It never
//! talks to anything but the client that connects to it, and stops when dropped.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Request bodies larger than this are refused (413): a test never sends one.
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
/// Stream chunks buffered between the producer task and hyper.
const STREAM_CHANNEL: usize = 16;
/// Scripted answers queued at once (a test scripts a handful).
const MAX_SCRIPTED: usize = 64;

/// One scripted answer to the next chat completion, overriding [`FakeConfig`] for that request.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// A 200 `text/event-stream` whose body is exactly these pieces (one write each), then the
    /// body ends (with or without `[DONE]`, as the pieces say).
    Stream(Vec<String>),
    /// Like `Stream`, but after the pieces the connection is dropped mid-body (no terminating
    /// chunk), as when the server process dies or a proxy cuts the stream.
    StreamCut(Vec<String>),
    /// A complete response with this status, content type and body (e.g. a proxy's HTML page).
    Body {
        status: u16,
        content_type: &'static str,
        body: String,
    },
}

pub type ReplyFn = Arc<dyn Fn(&Value) -> String + Send + Sync>;

/// How the fake behaves. `Default` is a healthy, keyless server echoing the last user message.
#[derive(Clone)]
pub struct FakeConfig {
    /// The assistant's reply as a function of the request body.
    pub reply: ReplyFn,
    /// Pause before each streamed chunk (including the first).
    pub chunk_delay: Duration,
    /// Characters of reply per content chunk.
    pub chars_per_chunk: usize,
    /// Pause before the response head of a chat completion (to trigger an ack timeout).
    pub head_delay: Duration,
    /// Send the role chunk and one content chunk (with `raw_stream`: its first two pieces), then
    /// hold the body open until the client goes away.
    pub stall_after_first_chunk: bool,
    /// Answer chat completions with this status and OpenAI's error shape instead.
    pub status: Option<u16>,
    /// When set, requests must carry `Authorization: Bearer <key>`, else 401.
    pub api_key: Option<String>,
    /// Model ids listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// Answer `stream: true` with one `chat.completion` JSON anyway, as some servers do.
    pub ignore_stream: bool,
    /// When set, the streamed body is exactly these pieces (one write each, `chunk_delay` before
    /// each), instead of generated chunks: for malformed or unusual streams.
    pub raw_stream: Option<Vec<String>>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            reply: Arc::new(|req| format!("echo: {}", last_user_message(req))),
            chunk_delay: Duration::from_millis(20),
            chars_per_chunk: 4,
            head_delay: Duration::ZERO,
            stall_after_first_chunk: false,
            status: None,
            api_key: None,
            models: vec!["fake-model".into()],
            ignore_stream: false,
            raw_stream: None,
        }
    }
}

/// The `content` of the last `user` message of a chat completion request ("" if none).
pub fn last_user_message(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    /// The JSON body (`Value::Null` when empty or not JSON).
    pub body: Value,
    /// When the whole request had arrived (before any `head_delay`).
    pub at: tokio::time::Instant,
}

struct State {
    cfg: FakeConfig,
    received: Mutex<Vec<Received>>,
    /// Streams whose client went away before the stream ended.
    abandoned: watch::Sender<usize>,
    /// Streams whose last piece was handed to the connection.
    completed: watch::Sender<usize>,
    /// Answers for the next chat completions, in order, before `cfg` applies again.
    script: Mutex<VecDeque<Scripted>>,
}

pub struct FakeOpenAi {
    addr: SocketAddr,
    state: Arc<State>,
    /// The accept loop; it owns every connection task, so aborting it stops them all.
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeOpenAi {
    pub async fn start(cfg: FakeConfig) -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            cfg,
            received: Mutex::new(Vec::new()),
            abandoned: watch::channel(0).0,
            completed: watch::channel(0).0,
            script: Mutex::new(VecDeque::new()),
        });
        let st = state.clone();
        let server = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    break; // the listener is broken: stop rather than spin
                };
                // Small frames must leave at once: Nagle would hold them for real milliseconds
                // while a paused test clock jumps ahead.
                let _ = tcp.set_nodelay(true);
                let st = st.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
                // Reap finished connections so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
        });
        FakeOpenAi {
            addr,
            state,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`: what goes into an agent's `url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The body of every chat completion request, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .map(|r| r.body)
            .collect()
    }

    /// Every request (any route), in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// When the newest request matching `pred` arrived, looked up under the lock without copying
    /// the log (a poll loop that clones every request would slow the fake it is timing).
    pub fn arrival_of(&self, pred: impl Fn(&Received) -> bool) -> Option<tokio::time::Instant> {
        let log = self.state.received.lock().unwrap();
        log.iter().rev().find(|r| pred(r)).map(|r| r.at)
    }

    /// Streams the client dropped before their end.
    pub fn abandoned(&self) -> usize {
        *self.state.abandoned.borrow()
    }

    /// Waits until at least `n` streams were dropped by the client.
    pub async fn wait_abandoned(&self, n: usize) {
        let mut rx = self.state.abandoned.subscribe();
        let _ = rx.wait_for(|&v| v >= n).await;
    }

    /// Answers the next chat completion with `s` (queued behind earlier scripted answers).
    pub fn script_next(&self, s: Scripted) {
        let mut q = self.state.script.lock().unwrap();
        assert!(q.len() < MAX_SCRIPTED, "too many scripted answers");
        q.push_back(s);
    }

    /// Scripted answers not yet used.
    pub fn scripted_left(&self) -> usize {
        self.state.script.lock().unwrap().len()
    }

    /// Streams whose last piece (`data: [DONE]`) was handed to the connection.
    pub fn completed(&self) -> usize {
        *self.state.completed.borrow()
    }
}

/// A response body fed by a channel: each message is written as it arrives (one HTTP chunk), and
/// the body ends when the sender is dropped.
/// An `Err` item aborts the body: hyper drops the connection without the terminating chunk.
pub struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

type FakeBody = Either<Full<Bytes>, ChannelBody>;

fn json_response(status: StatusCode, v: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Either::Left(Full::new(Bytes::from(v.to_string()))))
        .unwrap()
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Value,
) -> Response<FakeBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Response<FakeBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let authorization = header_str(&req, header::AUTHORIZATION);
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let accept = header_str(&req, header::ACCEPT);
    let bytes = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large.",
                "invalid_request_error",
                Value::Null,
            ));
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    st.received.lock().unwrap().push(Received {
        method: method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        content_type,
        accept,
        body: parsed.clone().unwrap_or(Value::Null),
        at: tokio::time::Instant::now(),
    });

    if let Some(key) = &st.cfg.api_key {
        let want = format!("Bearer {key}");
        match authorization.as_deref() {
            None => {
                return Ok(error_response(
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error",
                    Value::Null,
                ));
            }
            Some(got) if got != want => {
                let given = got.strip_prefix("Bearer ").unwrap_or(got);
                let shown: String = if given.chars().count() > 8 {
                    let head: String = given.chars().take(3).collect();
                    let tail: String = given
                        .chars()
                        .rev()
                        .take(4)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    format!("{head}*****{tail}")
                } else {
                    "*****".into()
                };
                return Ok(error_response(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
                    ),
                    "invalid_request_error",
                    json!("invalid_api_key"),
                ));
            }
            Some(_) => {}
        }
    }

    match (method, path.as_str()) {
        (Method::GET, "/v1/models") => {
            let created = unix_now();
            let data: Vec<Value> = st
                .cfg
                .models
                .iter()
                .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "clawbox-fake"}))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": data}),
            ))
        }
        (Method::POST, "/v1/chat/completions") => {
            if !st.cfg.head_delay.is_zero() {
                tokio::time::sleep(st.cfg.head_delay).await;
            }
            let scripted = st.script.lock().unwrap().pop_front();
            let scripted_kind = match &scripted {
                Some(Scripted::StreamCut(_)) => Kind::Cut,
                _ => Kind::Whole,
            };
            match scripted {
                Some(Scripted::Body {
                    status,
                    content_type,
                    body,
                }) => {
                    return Ok(Response::builder()
                        .status(StatusCode::from_u16(status).unwrap())
                        .header(header::CONTENT_TYPE, content_type)
                        .body(Either::Left(Full::new(Bytes::from(body))))
                        .unwrap());
                }
                Some(Scripted::Stream(pieces)) | Some(Scripted::StreamCut(pieces)) => {
                    let cut = matches!(scripted_kind, Kind::Cut);
                    let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
                    tokio::spawn(async move {
                        let tx2 = tx.clone();
                        produce(st.clone(), tx, pieces).await;
                        if cut {
                            let _ = tx2
                                .send(Err(std::io::Error::other("stream cut by the fake")))
                                .await;
                        }
                    });
                    return Ok(Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
                        .header(header::CACHE_CONTROL, "no-cache")
                        .body(Either::Right(ChannelBody(rx)))
                        .unwrap());
                }
                None => {}
            }
            if let Some(code) = st.cfg.status {
                let status = StatusCode::from_u16(code).unwrap();
                let (message, kind, code) = match code {
                    429 => (
                        "Rate limit reached for requests. Please try again in 20s.",
                        "requests",
                        json!("rate_limit_exceeded"),
                    ),
                    500..=599 => (
                        "The server had an error while processing your request. Sorry about that!",
                        "server_error",
                        Value::Null,
                    ),
                    _ => (
                        "The request was refused.",
                        "invalid_request_error",
                        Value::Null,
                    ),
                };
                return Ok(error_response(status, message, kind, code));
            }
            let Some(body) = parsed else {
                return Ok(error_response(
                    StatusCode::BAD_REQUEST,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                    "invalid_request_error",
                    Value::Null,
                ));
            };
            let model = body["model"].as_str().unwrap_or("").to_string();
            let id = format!("chatcmpl-fake{:08x}", fastrand::u32(..));
            let created = unix_now();
            let reply = (st.cfg.reply)(&body);
            if body["stream"] != Value::Bool(true) || st.cfg.ignore_stream {
                let n = reply.chars().count() as u64;
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{"index": 0,
                                     "message": {"role": "assistant", "content": reply, "refusal": null},
                                     "logprobs": null, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}
                    }),
                ));
            }
            let pieces = match &st.cfg.raw_stream {
                Some(raw) => raw.clone(),
                None => stream_pieces(&id, created, &model, &reply, st.cfg.chars_per_chunk.max(1)),
            };
            let (tx, rx) = mpsc::channel(STREAM_CHANNEL);
            tokio::spawn(produce(st.clone(), tx, pieces));
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Either::Right(ChannelBody(rx)))
                .unwrap())
        }
        (m, p) => Ok(error_response(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({m} {p})"),
            "invalid_request_error",
            Value::Null,
        )),
    }
}

/// The SSE events of one streamed reply, as OpenAI sends them: a role chunk, content chunks, an
/// empty-delta chunk with `finish_reason: "stop"`, then `[DONE]`.
pub fn stream_pieces(
    id: &str,
    created: u64,
    model: &str,
    reply: &str,
    chars_per_chunk: usize,
) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        format!("data: {c}\n\n")
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    let chars: Vec<char> = reply.chars().collect();
    for piece in chars.chunks(chars_per_chunk) {
        let text: String = piece.iter().collect();
        out.push(chunk(json!({"content": text}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    out.push("data: [DONE]\n\n".into());
    out
}

/// Whether a scripted stream ends cleanly or is cut.
enum Kind {
    Whole,
    Cut,
}

/// Writes the pieces one by one; notes whether the client stayed to the end.
async fn produce(
    st: Arc<State>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    pieces: Vec<String>,
) {
    // With a stall, send the role chunk and the first content chunk only.
    let take = if st.cfg.stall_after_first_chunk {
        2
    } else {
        usize::MAX
    };
    for piece in pieces.into_iter().take(take) {
        tokio::time::sleep(st.cfg.chunk_delay).await;
        if tx.send(Ok(Bytes::from(piece))).await.is_err() {
            st.abandoned.send_modify(|n| *n += 1);
            return;
        }
    }
    if st.cfg.stall_after_first_chunk {
        // Hold the body open until the client gives up.
        tx.closed().await;
        st.abandoned.send_modify(|n| *n += 1);
        return;
    }
    st.completed.send_modify(|n| *n += 1);
}
