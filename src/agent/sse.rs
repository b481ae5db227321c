//! Server-Sent Events parser: bytes in, events out, every buffer bounded.
//!
//! Sans-io: no sockets, no clock, no tokio. The caller pushes body bytes as they arrive (split
//! anywhere, even inside a line or a CRLF) and drains [`SseParser::next_event`] after each push.
//! It follows the WHATWG `text/event-stream` rules that matter for OpenAI-compatible streams:
//! lines end in `\n`, `\r\n` or `\r`; a blank line dispatches the event; `data:` lines join with
//! `\n`; `:` comments, `id:` and `retry:` are ignored; a leading BOM is skipped; an event whose
//! data is empty is not dispatched; an unfinished event at the end of the stream is dropped.
//! It never interprets the data (that is the agent's job) and never grows without limit.

use std::collections::VecDeque;
use std::fmt;

/// Longest line accepted (field name + value). An OpenAI chunk is well under 1 KiB and a server
/// that sends a whole reply in one chunk sends a few KiB of chat text; 64 KiB of one line without a
/// newline is a broken or hostile stream, not a reply.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Largest data of one event (all its `data:` lines). Four maximal lines: room for servers that
/// split one JSON chunk over several `data:` lines, while a reply-sized event is still refused.
pub const MAX_EVENT_DATA_BYTES: usize = 4 * MAX_LINE_BYTES;
/// The most bytes a caller should push between two drains (see [`MAX_QUEUED_EVENTS`]).
pub const PUSH_SLICE_BYTES: usize = 4096;
/// Events waiting to be drained. The smallest dispatching event, `data\n\n`, is 6 bytes, so one
/// push of [`PUSH_SLICE_BYTES`] yields at most 683 events; 1024 only overflows when a caller does
/// not drain, which is a bug we report instead of buffering without end.
pub const MAX_QUEUED_EVENTS: usize = 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if one was given (OpenAI sends none; some servers send `error`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The stream broke a limit; the caller should drop the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    LineTooLong { limit: usize },
    EventTooLarge { limit: usize },
    TooManyQueued { limit: usize },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong { limit } => {
                write!(f, "event-stream line longer than {limit} bytes")
            }
            SseError::EventTooLarge { limit } => {
                write!(f, "event-stream event data larger than {limit} bytes")
            }
            SseError::TooManyQueued { limit } => write!(
                f,
                "more than {limit} event-stream events waiting to be read (the reader is not draining)"
            ),
        }
    }
}

impl std::error::Error for SseError {}

#[derive(Debug, Default)]
pub struct SseParser {
    /// The current, unfinished line (without its terminator).
    line: Vec<u8>,
    /// The last byte seen was `\r`: a `\n` right after it belongs to the same terminator, even if
    /// it arrives in the next push.
    after_cr: bool,
    /// No line has been completed yet (a BOM may start the first one).
    first_line: bool,
    /// `data:` lines of the event being built, each followed by `\n`.
    data: String,
    /// The `event:` field of the event being built.
    event: String,
    queue: VecDeque<SseEvent>,
    /// Set once a limit was broken: everything after is refused.
    failed: Option<SseError>,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser {
            first_line: true,
            ..SseParser::default()
        }
    }

    /// Feeds more of the stream. On error the parser stays failed; drop the connection.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.push_inner(bytes);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn push_inner(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.extend_line(&bytes[..i])?;
                    self.after_cr = bytes[i] == b'\r';
                    bytes = &bytes[i + 1..];
                    self.end_line()?;
                }
                None => {
                    self.extend_line(bytes)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    fn extend_line(&mut self, part: &[u8]) -> Result<(), SseError> {
        if self.line.len() + part.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong {
                limit: MAX_LINE_BYTES,
            });
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), SseError> {
        let mut line = std::mem::take(&mut self.line);
        if self.first_line {
            self.first_line = false;
            if line.starts_with(&[0xEF, 0xBB, 0xBF]) {
                line.drain(..3);
            }
        }
        let r = self.process_line(&line);
        // Keep the allocation for the next line.
        line.clear();
        self.line = line;
        r
    }

    fn process_line(&mut self, line: &[u8]) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                // Measured after decoding: a replaced invalid byte takes three.
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > MAX_EVENT_DATA_BYTES {
                    return Err(SseError::EventTooLarge {
                        limit: MAX_EVENT_DATA_BYTES,
                    });
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            // `id`, `retry` and unknown fields: nothing this client uses.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Result<(), SseError> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return Ok(());
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // the `\n` after the last data line
        if self.queue.len() >= MAX_QUEUED_EVENTS {
            return Err(SseError::TooManyQueued {
                limit: MAX_QUEUED_EVENTS,
            });
        }
        self.queue.push_back(SseEvent {
            event: (!event.is_empty()).then_some(event),
            data,
        });
        Ok(())
    }

    /// The next complete event, oldest first.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &mut SseParser) -> Vec<SseEvent> {
        std::iter::from_fn(|| p.next_event()).collect()
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: d.into(),
        }
    }

    #[test]
    fn openai_stream_in_one_push() {
        let mut p = SseParser::new();
        p.push(b"data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(
            all(&mut p),
            vec![data("{\"a\":1}"), data("{\"a\":2}"), data("[DONE]")]
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let stream: &[u8] = b"data: one\r\n\r\n: keep-alive\r\nevent: error\r\ndata: two\r\ndata: three\r\n\r\ndata:four\r\rdata: five\n\n";
        let want = vec![
            data("one"),
            SseEvent {
                event: Some("error".into()),
                data: "two\nthree".into(),
            },
            data("four"),
            data("five"),
        ];
        for cut in 0..=stream.len() {
            let mut p = SseParser::new();
            p.push(&stream[..cut]).unwrap();
            let mut got = all(&mut p);
            p.push(&stream[cut..]).unwrap();
            got.extend(all(&mut p));
            assert_eq!(got, want, "split at {cut}");
        }
        // And byte by byte.
        let mut p = SseParser::new();
        let mut got = vec![];
        for b in stream {
            p.push(std::slice::from_ref(b)).unwrap();
            got.extend(all(&mut p));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn crlf_split_between_pushes_is_one_terminator() {
        let mut p = SseParser::new();
        p.push(b"data: a\r").unwrap();
        p.push(b"\n").unwrap();
        // Had the `\n` counted as a second line end, the event would already be dispatched.
        assert_eq!(p.next_event(), None);
        p.push(b"\r").unwrap();
        p.push(b"\n").unwrap();
        assert_eq!(all(&mut p), vec![data("a")]);
    }

    #[test]
    fn line_split_mid_field_name() {
        let mut p = SseParser::new();
        p.push(b"da").unwrap();
        p.push(b"ta: hel").unwrap();
        assert_eq!(p.next_event(), None);
        p.push(b"lo\n\n").unwrap();
        assert_eq!(all(&mut p), vec![data("hello")]);
    }

    #[test]
    fn comments_id_retry_and_empty_events_dispatch_nothing() {
        let mut p = SseParser::new();
        p.push(b": ping\n\nid: 7\nretry: 100\n\nevent: x\n\n")
            .unwrap();
        assert_eq!(p.next_event(), None);
        // The event type of an undispatched event does not leak into the next one.
        p.push(b"data: y\n\n").unwrap();
        assert_eq!(all(&mut p), vec![data("y")]);
    }

    #[test]
    fn data_field_forms() {
        let mut p = SseParser::new();
        // No space, two spaces (one is kept), no colon (empty value), value with colons.
        p.push(b"data:a\n\ndata:  b\n\ndata\n\ndata: c: d\n\n")
            .unwrap();
        assert_eq!(
            all(&mut p),
            vec![data("a"), data(" b"), data(""), data("c: d")]
        );
    }

    #[test]
    fn leading_bom_is_skipped() {
        let mut p = SseParser::new();
        p.push(&[0xEF, 0xBB]).unwrap();
        p.push(&[0xBF]).unwrap();
        p.push(b"data: x\n\n").unwrap();
        assert_eq!(all(&mut p), vec![data("x")]);
    }

    #[test]
    fn unfinished_event_at_end_is_not_dispatched() {
        let mut p = SseParser::new();
        p.push(b"data: partial\n").unwrap();
        assert_eq!(p.next_event(), None);
    }

    #[test]
    fn oversize_line_is_rejected_even_across_pushes() {
        let mut p = SseParser::new();
        let half = vec![b'x'; MAX_LINE_BYTES / 2 + 1];
        p.push(b"data: ").unwrap();
        p.push(&half).unwrap();
        let e = p.push(&half).unwrap_err();
        assert_eq!(
            e,
            SseError::LineTooLong {
                limit: MAX_LINE_BYTES
            }
        );
        assert!(e.to_string().contains("longer than 65536 bytes"));
        // Once failed, stays failed.
        assert!(p.push(b"\n\n").is_err());
        assert_eq!(p.next_event(), None);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut p = SseParser::new();
        let mut line = b"data: ".to_vec();
        line.resize(MAX_LINE_BYTES, b'y');
        p.push(&line).unwrap();
        p.push(b"\n\n").unwrap();
        assert_eq!(p.next_event().unwrap().data.len(), MAX_LINE_BYTES - 6);
    }

    #[test]
    fn oversize_event_data_is_rejected() {
        let mut p = SseParser::new();
        let mut line = b"data: ".to_vec();
        line.resize(MAX_LINE_BYTES, b'z');
        line.push(b'\n');
        let mut r = Ok(());
        for _ in 0..5 {
            r = r.and_then(|_| p.push(&line));
        }
        assert!(matches!(r, Err(SseError::EventTooLarge { .. })), "{r:?}");
    }

    #[test]
    fn undrained_queue_is_bounded() {
        let mut p = SseParser::new();
        let mut r = Ok(());
        for _ in 0..=MAX_QUEUED_EVENTS {
            r = r.and_then(|_| p.push(b"data\n\n"));
        }
        assert_eq!(
            r,
            Err(SseError::TooManyQueued {
                limit: MAX_QUEUED_EVENTS
            })
        );
    }

    #[test]
    fn a_full_push_slice_of_minimal_events_fits_the_queue() {
        let mut p = SseParser::new();
        let slice: Vec<u8> = b"data\n\n"
            .iter()
            .copied()
            .cycle()
            .take(PUSH_SLICE_BYTES)
            .collect();
        p.push(&slice).unwrap();
        assert_eq!(all(&mut p).len(), PUSH_SLICE_BYTES / 6);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut p = SseParser::new();
        p.push(b"data: a\xFFb\n\n").unwrap();
        assert_eq!(all(&mut p), vec![data("a\u{FFFD}b")]);
    }
}
