//! Fuzz target `sse`: arbitrary bytes, cut into pushes at points chosen by the input, into
//! `clawbox::agent::sse::SseParser` and the OpenAI streamed-reply core
//! (`clawbox::agent::openai::ReplyStream`). Owns nothing else.
//!
//! Input: the first byte seeds the cut points; the rest is the response body, where `0xFF k` (a
//! byte never found in UTF-8 text) stands for the byte before it repeated `(k + 1) × 512` more
//! times, so short inputs reach the 64 KiB and 256 KiB caps.
//!
//! Asserts: never panics; the events (and the error, if any) do not depend on where the body was
//! cut; every event and the reply stay within their caps (`MAX_LINE_BYTES`,
//! `MAX_EVENT_DATA_BYTES`, `MAX_REPLY_BYTES`), so memory is bounded whatever the server sends.
#![no_main]

use clawbox::agent::openai::{MAX_REPLY_BYTES, ReplyStream};
use clawbox::agent::sse::{
    MAX_EVENT_DATA_BYTES, MAX_LINE_BYTES, PUSH_SLICE_BYTES, SseError, SseEvent, SseParser,
};
use libfuzzer_sys::fuzz_target;

/// Largest expanded body: four times the largest cap, so every cap can be broken.
const MAX_BODY: usize = 4 * MAX_EVENT_DATA_BYTES;
/// Byte-by-byte pushes only for bodies up to this (a million one-byte pushes would be slow).
const MAX_BYTEWISE: usize = 16 * 1024;

/// The body with its repeat markers expanded, at most [`MAX_BODY`] bytes.
fn expand(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() && out.len() < MAX_BODY {
        match (raw[i], raw.get(i + 1), out.last()) {
            (0xFF, Some(&k), Some(&prev)) => {
                let n = ((usize::from(k) + 1) * 512).min(MAX_BODY - out.len());
                out.resize(out.len() + n, prev);
                i += 2;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Push sizes from `seed`: a tiny xorshift, so the same input always cuts the same way.
fn cuts(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed) | 0x100;
    let mut at = 0;
    let mut out = Vec::new();
    while at < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Mostly small pushes (network reads split anywhere), sometimes a full slice.
        let n = if x % 8 == 0 {
            PUSH_SLICE_BYTES
        } else {
            (x % 64) as usize + 1
        };
        let n = n.min(len - at);
        out.push(n);
        at += n;
    }
    out
}

fn parse(body: &[u8], sizes: &[usize]) -> (Vec<SseEvent>, Option<SseError>) {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    let mut err = None;
    let mut at = 0;
    for &n in sizes {
        let r = p.push(&body[at..at + n]);
        at += n;
        // The reader drains after every push, as the OpenAI agent does.
        while let Some(ev) = p.next_event() {
            assert!(
                ev.data.len() <= MAX_EVENT_DATA_BYTES,
                "event data over its cap"
            );
            assert!(
                ev.event
                    .as_ref()
                    .is_none_or(|e| e.len() <= 3 * MAX_LINE_BYTES),
                "event name over its cap"
            );
            events.push(ev);
        }
        if let Err(e) = r {
            // A failed parser stays failed.
            assert_eq!(p.push(b"data: more\n\n"), Err(e.clone()));
            err = Some(e);
            break;
        }
    }
    (events, err)
}

fn reply(body: &[u8], sizes: &[usize]) -> Result<String, String> {
    let mut s = ReplyStream::new();
    let mut at = 0;
    for &n in sizes {
        let fed = s.feed(&body[at..at + n]).map_err(|e| e.to_string())?;
        at += n;
        if fed.done {
            break;
        }
    }
    let text = s.finish().map_err(|e| e.to_string())?;
    assert!(text.len() <= MAX_REPLY_BYTES, "reply over its cap");
    Ok(text)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, raw)) = data.split_first() else {
        return;
    };
    let body = &expand(raw)[..];
    let whole: Vec<usize> = body.chunks(PUSH_SLICE_BYTES).map(<[u8]>::len).collect();
    let cut = cuts(seed, body.len());
    let reference = parse(body, &whole);
    assert_eq!(
        parse(body, &cut),
        reference,
        "the cut points changed the events"
    );
    if body.len() <= MAX_BYTEWISE {
        let bytes = vec![1; body.len()];
        assert_eq!(
            parse(body, &bytes),
            reference,
            "byte-by-byte pushes changed the events"
        );
    }

    let answer = reply(body, &whole);
    assert_eq!(
        reply(body, &cut),
        answer,
        "the cut points changed the reply"
    );
});
