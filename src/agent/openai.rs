//! The OpenAI-compatible agent: `POST {url}/chat/completions` with `stream: true`, the reply read
//! as Server-Sent Events; `GET {url}/models` for `clawbox providers test`.
//!
//! Works with OpenAI, llama.cpp's server, Ollama, vLLM and anything else that speaks that API.
//! [`ReplyStream`] (in `reply`, re-exported here) is the sans-io core (stream bytes in, progress
//! and the reply out); [`OpenAi`] is the thin driver that owns the HTTP exchange. The endpoint is
//! stateless, so each turn carries the session's recent history. It never retries (the router
//! decides), never applies the router's timeouts itself (it is cancel-safe: dropping the future
//! closes the connection), and never logs the API key or any message text above debug.

mod reply;

pub use reply::{Fed, MAX_REPLY_BYTES, ReplyStream};

use super::sse::PUSH_SLICE_BYTES;
use super::{AgentError, HistoryEntry, ProbeReport, Progress, Role, TurnRequest};
use crate::config::{AgentConfig, Secret};
use crate::http::{HttpClient, HttpError};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use reply::{http_error, parse_completion};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// Past messages sent with each turn unless `history_messages` is configured: ten exchanges keep
/// a conversation coherent and the prompt small for a local model on a Pi-class box.
pub const DEFAULT_HISTORY_MESSAGES: usize = 20;
/// A server that ignores `stream: true` answers with one JSON document: the reply plus JSON
/// escaping and metadata.
const MAX_JSON_REPLY_BODY_BYTES: usize = 2 * MAX_REPLY_BYTES;
/// Of an error response we keep only enough to show the server's message.
const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;
/// Deadline for the response head. The router's ack timeout is shorter and is what normally
/// fires; this only bounds a caller without one (a slow local model loading its weights can take
/// a minute before it answers).
const HEAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline for reading an error body or a non-streamed reply once the head arrived.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// `clawbox providers test` waits this long for `/models`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Model lists can be long (hosted routers list hundreds of models with descriptions).
const MAX_MODELS_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Boxed so the [`super::Agent`] enum stays small (the HTTP client alone is a few hundred bytes).
pub struct OpenAi(Box<Inner>);

struct Inner {
    http: HttpClient,
    /// The API base, without a trailing `/` (`http://127.0.0.1:11434/v1`).
    url: String,
    model: String,
    key: Option<Secret>,
    system_prompt: Option<String>,
    history_messages: usize,
    max_tokens: Option<u32>,
}

impl OpenAi {
    /// `cfg` has been checked: `url` and `model` are present. Were they not, requests fail with a
    /// clear error instead of a panic.
    pub fn new(_name: &str, cfg: &AgentConfig, http: HttpClient) -> Self {
        OpenAi(Box::new(Inner {
            http,
            url: cfg
                .url
                .as_ref()
                .map(|u| u.get_ref().trim_end_matches('/').to_string())
                .unwrap_or_default(),
            model: cfg
                .model
                .as_ref()
                .map(|m| m.get_ref().clone())
                .unwrap_or_default(),
            key: cfg.secret.clone(),
            system_prompt: cfg.system_prompt.as_ref().map(|s| s.get_ref().clone()),
            history_messages: cfg
                .history_messages
                .as_ref()
                .map(|h| *h.get_ref())
                .unwrap_or(DEFAULT_HISTORY_MESSAGES),
            max_tokens: cfg.max_tokens.as_ref().map(|m| *m.get_ref()),
        }))
    }

    /// Runs one turn. Cancel-safe: dropping the future drops the connection and nothing else.
    pub async fn turn(&self, req: TurnRequest, progress: Progress) -> Result<String, AgentError> {
        self.0.turn(req, progress).await
    }

    /// `clawbox providers test`: lists the models, checks the key and the configured model.
    pub async fn probe(&self, name: &str) -> ProbeReport {
        self.0.probe(name).await
    }
}

impl Inner {
    /// The JSON body of one streamed chat completion request.
    fn request_body(&self, req: &TurnRequest) -> Value {
        let mut messages = Vec::with_capacity(self.history_messages.min(req.history.len()) + 2);
        if let Some(s) = req.system_prompt.as_ref().or(self.system_prompt.as_ref()) {
            messages.push(json!({"role": "system", "content": s}));
        }
        let skip = req.history.len().saturating_sub(self.history_messages);
        for HistoryEntry { role, text } in &req.history[skip..] {
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": text}));
        }
        messages.push(json!({"role": "user", "content": req.text}));
        let mut body = json!({"model": self.model, "messages": messages, "stream": true});
        if let (Some(m), Some(obj)) = (self.max_tokens, body.as_object_mut()) {
            obj.insert("max_tokens".into(), m.into());
        }
        body
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, AgentError> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        if let Some(k) = &self.key {
            let mut v =
                header::HeaderValue::from_str(&format!("Bearer {}", k.expose())).map_err(|_| {
                    AgentError::Failed(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    )
                })?;
            // Kept out of hyper's and our Debug output.
            v.set_sensitive(true);
            b = b.header(header::AUTHORIZATION, v);
        }
        if !body.is_empty() {
            b = b
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "text/event-stream");
        }
        b.body(Full::new(body)).map_err(|e| {
            AgentError::Failed(format!(
                "cannot build a request to `{}{path}`: {e}",
                self.url
            ))
        })
    }

    /// Runs one turn. Cancel-safe: dropping the future drops the connection and nothing else.
    async fn turn(&self, req: TurnRequest, progress: Progress) -> Result<String, AgentError> {
        let body = serde_json::to_vec(&self.request_body(&req))
            .map_err(|e| AgentError::Failed(format!("cannot encode the request: {e}")))?;
        let request = self.request(http::Method::POST, "/chat/completions", body.into())?;
        tracing::debug!(url = %self.url, model = %self.model, "openai: sending a turn");
        let resp = self
            .http
            .stream(request, HEAD_TIMEOUT)
            .await
            .map_err(|e| match e {
                HttpError::Request(e) => {
                    AgentError::Failed(format!("bad endpoint URL `{}`: {e}", self.url))
                }
                HttpError::Timeout => AgentError::Unreachable(format!(
                    "no response from {} within {} s",
                    self.url,
                    HEAD_TIMEOUT.as_secs()
                )),
                e => AgentError::Unreachable(format!("{}: {e}", self.url)),
            })?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = read_capped(&mut body, MAX_ERROR_BODY_BYTES).await;
            return Err(AgentError::Failed(http_error(status, &bytes)));
        }
        progress.accepted();
        if is_json {
            // The server ignored `stream: true` and sent the whole completion at once.
            let bytes = read_json_reply(&mut body).await?;
            progress.delta();
            return parse_completion(&bytes);
        }
        let mut stream = ReplyStream::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                AgentError::Unreachable(format!("the connection broke mid-reply: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            for slice in data.chunks(PUSH_SLICE_BYTES) {
                let fed = stream.feed(slice)?;
                for _ in 0..fed.deltas {
                    progress.delta();
                }
                if fed.done {
                    return stream.finish();
                }
            }
        }
        stream.finish()
    }

    /// `clawbox providers test`: lists the models, checks the key and the configured model.
    async fn probe(&self, name: &str) -> ProbeReport {
        let mut report = ProbeReport {
            agent: name.to_string(),
            kind: "openai",
            ok: false,
            facts: vec![("endpoint", self.url.clone())],
            error: None,
            latency_ms: 0,
        };
        let request = match self.request(http::Method::GET, "/models", Bytes::new()) {
            Ok(r) => r,
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let started = Instant::now();
        let result = self
            .http
            .request(request, PROBE_TIMEOUT, MAX_MODELS_BODY_BYTES)
            .await;
        report.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                report.error = Some(self.transport_words(&e));
                return report;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let detail = http_error(status, resp.body());
            report.error = Some(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.key.is_some() => {
                    format!("the API key was rejected ({detail}); check api_key_file / api_key_env")
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                    "the server wants an API key ({detail}); set api_key_file or api_key_env"
                ),
                StatusCode::NOT_FOUND => format!(
                    "{}/models was not found ({detail}); `url` should be the API base, usually ending in /v1",
                    self.url
                ),
                _ => format!("the server answered with an error: {detail}"),
            });
            return report;
        }
        let list: ModelList = match serde_json::from_slice(resp.body()) {
            Ok(l) => l,
            Err(e) => {
                report.error = Some(format!(
                    "{}/models did not answer with an OpenAI model list ({e}); is `url` the API base, usually ending in /v1?",
                    self.url
                ));
                return report;
            }
        };
        let listed = list.data.iter().any(|m| {
            m.id.as_deref().is_some_and(|id| {
                // Ollama lists `llama3.2:latest` for a model configured as `llama3.2`.
                id == self.model || id.strip_suffix(":latest") == Some(&self.model)
            })
        });
        report.facts.push(("models", list.data.len().to_string()));
        report.facts.push((
            "model configured",
            if listed {
                format!("{} (listed by the server)", self.model)
            } else {
                format!(
                    "{} (NOT listed by the server: check `model`; some servers load models on demand)",
                    self.model
                )
            },
        ));
        report.ok = true;
        report
    }

    /// A transport failure in words the owner can act on.
    fn transport_words(&self, e: &HttpError) -> String {
        let url = &self.url;
        match e {
            HttpError::Timeout => format!(
                "no answer from {url} within {} s — is the server overloaded or the address wrong?",
                PROBE_TIMEOUT.as_secs()
            ),
            HttpError::TooLarge(n) => {
                format!(
                    "{url}/models answered with more than {n} bytes; is this an OpenAI-compatible API?"
                )
            }
            HttpError::Request(e) => format!("`{url}` is not a usable URL: {e}"),
            HttpError::Transport(t) | HttpError::Connect(t) => {
                let lower = t.to_ascii_lowercase();
                if lower.contains("connection refused") {
                    format!("cannot connect to {url} — is the server running? ({t})")
                } else if lower.contains("dns") || lower.contains("lookup") {
                    format!("cannot find the host of {url} — check the name in `url` ({t})")
                } else if lower.contains("certificate")
                    || lower.contains("tls")
                    || lower.contains("handshake")
                {
                    format!(
                        "the TLS connection to {url} failed — check the certificate and that the port speaks https ({t})"
                    )
                } else {
                    format!("cannot connect to {url} ({t})")
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: Option<String>,
}

/// Reads at most `max` bytes of `body` (within [`BODY_READ_TIMEOUT`]); the rest is left unread.
/// Used for error bodies, where what we got is better than nothing.
async fn read_capped(body: &mut Incoming, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while out.len() < max {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = max - out.len();
                        out.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(BODY_READ_TIMEOUT, read).await;
    out
}

/// Reads a whole non-streamed reply, refusing more than [`MAX_JSON_REPLY_BODY_BYTES`].
async fn read_json_reply(body: &mut Incoming) -> Result<Vec<u8>, AgentError> {
    let mut out = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                AgentError::Unreachable(format!("the connection broke mid-reply: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > MAX_JSON_REPLY_BODY_BYTES {
                    return Err(AgentError::Protocol(format!(
                        "the reply is longer than {MAX_JSON_REPLY_BODY_BYTES} bytes"
                    )));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            AgentError::Unreachable(format!(
                "the reply did not finish within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })??;
    Ok(out)
}
