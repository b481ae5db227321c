//! Reading what an OpenAI-compatible server answers, sans-io: [`ReplyStream`] turns the streamed
//! chat completion's Server-Sent Events into progress and the reply (bounded by
//! [`MAX_REPLY_BYTES`]); a non-streamed `chat.completion` and an error body are read into the
//! reply or the error's words. Never does I/O: the driver in [`super`] owns the HTTP exchange.

use crate::agent::AgentError;
use crate::agent::sse::SseParser;
use http::StatusCode;
use serde::Deserialize;

/// The longest reply accepted. A WhatsApp or Telegram message is ~4096 characters; 256 KiB is
/// already dozens of messages, so more is a runaway generation, not an answer.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;
/// How much of the server's error message goes into the error we return (and so into logs).
const MAX_ERROR_MESSAGE_CHARS: usize = 200;

/// What one push of stream bytes did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Chunks that carried content (or reasoning): each is progress for the router.
    pub deltas: usize,
    /// `data: [DONE]` was seen: the reply is complete.
    pub done: bool,
}

/// Sans-io core of one streamed chat completion: the SSE bytes in, the reply out.
pub struct ReplyStream {
    parser: SseParser,
    text: String,
    chunks: usize,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    /// llama.cpp and DeepSeek stream a model's thinking here; not part of the reply, but progress.
    reasoning_content: Option<String>,
    /// Ollama's and OpenRouter's name for the same.
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorField,
}

/// OpenAI sends `{"error": {"message": …}}`; some servers send `{"error": "…"}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Object(ApiError),
    Text(String),
}

impl Default for ReplyStream {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyStream {
    pub fn new() -> Self {
        ReplyStream {
            parser: SseParser::new(),
            text: String::new(),
            chunks: 0,
        }
    }

    /// Feeds stream bytes (at most
    /// [`PUSH_SLICE_BYTES`](crate::agent::sse::PUSH_SLICE_BYTES) at a time).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Fed, AgentError> {
        self.parser
            .push(bytes)
            .map_err(|e| AgentError::Protocol(format!("bad event stream: {e}")))?;
        let mut fed = Fed::default();
        while let Some(ev) = self.parser.next_event() {
            let data = ev.data.trim();
            if data == "[DONE]" {
                fed.done = true;
                return Ok(fed);
            }
            self.chunks += 1;
            if ev.event.as_deref() == Some("error") {
                return Err(AgentError::Failed(format!(
                    "the server reported an error mid-reply: {}",
                    clip(data)
                )));
            }
            let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
                AgentError::Protocol(format!(
                    "stream chunk {} is not a chat.completion.chunk: {e}",
                    self.chunks
                ))
            })?;
            if let Some(err) = chunk.error {
                return Err(AgentError::Failed(format!(
                    "the server reported an error mid-reply: {}",
                    clip(err.message.as_deref().unwrap_or("(no message)"))
                )));
            }
            // Only the first choice: we never ask for `n` > 1. Chunks without choices (usage
            // reports) carry nothing for us.
            let Some(delta) = chunk.choices.into_iter().next().and_then(|c| c.delta) else {
                continue;
            };
            let content = delta.content.unwrap_or_default();
            let thinking = delta
                .reasoning_content
                .or(delta.reasoning)
                .is_some_and(|r| !r.is_empty());
            if content.is_empty() && !thinking {
                continue;
            }
            if self.text.len() + content.len() > MAX_REPLY_BYTES {
                return Err(AgentError::Protocol(format!(
                    "the reply is longer than {MAX_REPLY_BYTES} bytes"
                )));
            }
            self.text.push_str(&content);
            fed.deltas += 1;
        }
        Ok(fed)
    }

    /// The reply, once `[DONE]` was seen or the body ended.
    pub fn finish(self) -> Result<String, AgentError> {
        if self.text.is_empty() {
            return Err(AgentError::Protocol(format!(
                "the stream ended without any reply text ({} chunks received)",
                self.chunks
            )));
        }
        Ok(self.text)
    }
}

/// The reply of a non-streamed `chat.completion`.
pub(super) fn parse_completion(bytes: &[u8]) -> Result<String, AgentError> {
    #[derive(Deserialize)]
    struct Completion {
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        content: Option<String>,
    }
    let c: Completion = serde_json::from_slice(bytes)
        .map_err(|e| AgentError::Protocol(format!("the reply is not a chat.completion: {e}")))?;
    match c.choices.into_iter().next().and_then(|c| c.message.content) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(AgentError::Protocol("the reply has no text".into())),
    }
}

/// `HTTP 401 Unauthorized: <the server's message>`.
pub(super) fn http_error(status: StatusCode, body: &[u8]) -> String {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error: ErrorField::Object(ApiError { message: Some(m) }),
        })
        | Ok(ErrorBody {
            error: ErrorField::Text(m),
        }) => m,
        _ => String::from_utf8_lossy(body).trim().to_string(),
    };
    let reason = status.canonical_reason().unwrap_or("");
    if message.is_empty() {
        format!("HTTP {} {reason}", status.as_u16())
    } else {
        format!("HTTP {} {reason}: {}", status.as_u16(), clip(&message))
    }
}

/// The first [`MAX_ERROR_MESSAGE_CHARS`] characters of a server's message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::sse::PUSH_SLICE_BYTES;
    use serde_json::json;

    fn chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
                   "choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]})
        )
    }

    #[test]
    fn accumulates_content_and_stops_at_done() {
        let mut s = ReplyStream::new();
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n";
        assert_eq!(s.feed(role.as_bytes()).unwrap(), Fed::default());
        assert_eq!(
            s.feed(chunk("Hel").as_bytes()).unwrap(),
            Fed {
                deltas: 1,
                done: false
            }
        );
        let rest = format!(
            "{}data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n",
            chunk("lo")
        );
        assert_eq!(
            s.feed(rest.as_bytes()).unwrap(),
            Fed {
                deltas: 1,
                done: true
            }
        );
        assert_eq!(s.finish().unwrap(), "Hello");
    }

    #[test]
    fn usage_chunks_and_keepalive_comments_are_not_progress() {
        let mut s = ReplyStream::new();
        let fed = s
            .feed(b": keep-alive\n\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n")
            .unwrap();
        assert_eq!(fed, Fed::default());
        assert!(matches!(s.finish(), Err(AgentError::Protocol(_))));
    }

    #[test]
    fn reasoning_is_progress_but_not_reply() {
        let mut s = ReplyStream::new();
        let fed = s
            .feed(b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hmm\"}}]}\n\n")
            .unwrap();
        assert_eq!(fed.deltas, 1);
        s.feed(chunk("ok").as_bytes()).unwrap();
        assert_eq!(s.finish().unwrap(), "ok");
    }

    #[test]
    fn error_object_mid_stream_is_failed() {
        let mut s = ReplyStream::new();
        let e = s
            .feed(b"data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n")
            .unwrap_err();
        assert_eq!(
            e,
            AgentError::Failed("the server reported an error mid-reply: model overloaded".into())
        );
    }

    #[test]
    fn error_event_is_failed_even_when_not_json() {
        let mut s = ReplyStream::new();
        let e = s
            .feed(b"event: error\ndata: backend crashed\n\n")
            .unwrap_err();
        assert_eq!(
            e,
            AgentError::Failed("the server reported an error mid-reply: backend crashed".into())
        );
    }

    #[test]
    fn malformed_json_names_the_chunk() {
        let mut s = ReplyStream::new();
        s.feed(chunk("a").as_bytes()).unwrap();
        match s.feed(b"data: {\"choices\": [\n\n") {
            Err(AgentError::Protocol(m)) => assert!(m.contains("chunk 2"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_size_is_capped() {
        let mut s = ReplyStream::new();
        let big = "x".repeat(60_000);
        let mut r = Ok(Fed::default());
        for _ in 0..5 {
            let c = chunk(&big);
            for slice in c.as_bytes().chunks(PUSH_SLICE_BYTES) {
                r = r.and_then(|_| s.feed(slice));
            }
        }
        assert!(
            matches!(&r, Err(AgentError::Protocol(m)) if m.contains("longer than")),
            "{r:?}"
        );
    }

    #[test]
    fn http_error_shapes() {
        let openai = br#"{"error":{"message":"Incorrect API key provided: sk-wrong.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(
            http_error(StatusCode::UNAUTHORIZED, openai),
            "HTTP 401 Unauthorized: Incorrect API key provided: sk-wrong."
        );
        assert_eq!(
            http_error(StatusCode::NOT_FOUND, br#"{"error":"model 'x' not found"}"#),
            "HTTP 404 Not Found: model 'x' not found"
        );
        assert_eq!(
            http_error(StatusCode::BAD_GATEWAY, b""),
            "HTTP 502 Bad Gateway"
        );
        let long = "é".repeat(500);
        let m = http_error(StatusCode::INTERNAL_SERVER_ERROR, long.as_bytes());
        assert_eq!(
            m.chars().count(),
            "HTTP 500 Internal Server Error: ".len() + MAX_ERROR_MESSAGE_CHARS + 1
        );
    }

    #[test]
    fn non_streamed_completion() {
        let body = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_completion(body).unwrap(), "hi");
        assert!(matches!(
            parse_completion(b"{}"),
            Err(AgentError::Protocol(_))
        ));
    }
}
