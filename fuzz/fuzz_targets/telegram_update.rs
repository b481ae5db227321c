//! Fuzz target `telegram_update`: arbitrary bytes as the body of a Bot API answer through the
//! Telegram sans-io core: envelope classification (getUpdates, getMe, sendMessage), every
//! update → `Inbound` conversion, and the long poller's offset bookkeeping. Owns nothing else.
//!
//! Asserts: never panics; the offset only moves forward and, once a batch is confirmed, lies past
//! every update it delivered; each submitted message carries its update id; a `retry_after` is
//! capped; `convert` agrees with the poller.
#![no_main]

use clawbox::vocab::ChannelKind;
use clawbox::channel::telegram::proto::{self, ApiError, Fetched, PollStep, Poller, StartStep};
use clawbox::retry::RETRY_AFTER_CAP as MAX_RETRY_AFTER;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// HTTP statuses the Bot API (or a proxy in front of it) answers with.
const STATUSES: [u16; 5] = [200, 400, 409, 429, 502];

fuzz_target!(|body: &[u8]| {
    for status in STATUSES {
        let fetched = Fetched::Body { status, body };
        check_poll(fetched, None, false);
        check_poll(fetched, Some(1_000), true);
        let _ = proto::send_outcome(fetched);
        let mut p = Poller::new(30, false, None, 7);
        match p.handle_get_me(fetched) {
            StartStep::Wait { delay, .. } => assert!(delay <= MAX_RETRY_AFTER),
            StartStep::Ready { .. } | StartStep::Stop { .. } => {}
        }
        if let Err(ApiError::RetryAfter(d)) = proto::classify::<Vec<Value>>(fetched) {
            assert!(d <= MAX_RETRY_AFTER && !d.is_zero(), "retry_after {d:?}");
        }
    }
});

fn check_poll(fetched: Fetched<'_>, saved: Option<i64>, edits: bool) {
    let mut p = Poller::new(30, edits, saved, 1);
    match p.handle_updates(fetched) {
        PollStep::Deliver { .. } => {}
        PollStep::Wait { delay, .. } => {
            assert!(delay <= MAX_RETRY_AFTER);
            assert_eq!(p.offset(), saved, "a failed poll moved the offset");
            assert!(p.next_submission().is_none());
            return;
        }
        PollStep::Stop { .. } => return,
    }
    // Which updates the core should deliver, by converting them one by one.
    let mut want: Vec<i64> = Vec::new();
    let mut max_id: Option<i64> = None;
    if let Ok(raw) = proto::classify::<Vec<Value>>(fetched) {
        // A bot with a username: mention entities are sliced out of the text (UTF-16 offsets
        // and lengths as the update says) and replies checked against its id.
        let me = proto::Me {
            id: 42,
            username: Some("b_bot".into()),
        };
        for update in raw {
            let named = proto::convert_for(update.clone(), edits, &me);
            if let Ok(item) = &named {
                if let Some(m) = &item.inbound {
                    let _ = clawbox::turn_text::compose(m, &m.content.render(), &[]);
                }
            }
            if let Ok(item) = proto::convert(update, edits) {
                assert_eq!(
                    named
                        .as_ref()
                        .map(|i| (i.update_id, i.inbound.is_some()))
                        .ok(),
                    Some((item.update_id, item.inbound.is_some())),
                    "the bot's identity changes what a message says, not which updates count"
                );
                if item.update_id >= saved.unwrap_or(i64::MIN) {
                    max_id = max_id.max(Some(item.update_id));
                    if item.inbound.is_some() {
                        want.push(item.update_id);
                    }
                }
            }
        }
    }
    want.sort_unstable();
    let mut got = Vec::new();
    let mut last = p.offset();
    while let Some(m) = p.next_submission() {
        assert_eq!(m.channel, ChannelKind::Telegram);
        let id: i64 = m.id.parse().expect("an Inbound id is its update_id");
        let _ = m.content.render();
        got.push(id);
        p.confirm();
        assert!(p.offset() >= last, "the offset moved back");
        assert!(p.offset().is_some_and(|o| o > id || id == i64::MAX));
        last = p.offset();
    }
    assert_eq!(
        got, want,
        "delivered updates differ from their one-by-one conversion"
    );
    if let Some(max) = max_id {
        let past = max.saturating_add(1);
        assert!(
            p.offset() >= Some(past),
            "offset {:?} not past {max}",
            p.offset()
        );
    }
    if let Some(o) = p.take_offset_to_save() {
        assert_eq!(proto::decode_offset(&proto::encode_offset(o)), Some(o));
    }
}
