//! Unit tests of the Telegram sans-io core: answers classified in the Bot API's real shapes,
//! send outcomes, update conversion, the offset over the confirmed prefix, failures mapped to
//! waits and statuses, getMe, and the saved offset's bytes.

use super::*;
use serde_json::json;

fn body(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn ok(v: Value) -> Vec<u8> {
    body(json!({"ok": true, "result": v}))
}

fn text_update(id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": id, "message": {
        "message_id": id * 10, "date": 1_700_000_000,
        "from": {"id": 42, "is_bot": false, "first_name": "Ann"},
        "chat": {"id": chat, "type": "private", "first_name": "Ann"},
        "text": text}})
}

fn poller() -> Poller {
    let mut p = Poller::new(50, false, None, 1);
    let me = ok(json!({"id": 1, "is_bot": true, "first_name": "B", "username": "b_bot"}));
    p.handle_get_me(Fetched::Body {
        status: 200,
        body: &me,
    });
    p
}

#[test]
fn classify_reads_errors_in_the_real_shape() {
    let b = body(json!({"ok": false, "error_code": 429,
        "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}}));
    let r = classify::<Value>(Fetched::Body {
        status: 429,
        body: &b,
    });
    assert_eq!(r.unwrap_err(), ApiError::RetryAfter(Duration::from_secs(7)));

    let b = body(
        json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request"}),
    );
    let r = classify::<Value>(Fetched::Body {
        status: 409,
        body: &b,
    });
    assert_eq!(r.unwrap_err(), ApiError::Conflict);

    let b =
        body(json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}));
    let r = classify::<Value>(Fetched::Body {
        status: 400,
        body: &b,
    });
    assert_eq!(
        r.unwrap_err(),
        ApiError::Rejected {
            code: 400,
            description: "Bad Request: chat not found".into()
        }
    );

    // A proxy's HTML 502 page is transient; an unreadable 200 is malformed.
    let r = classify::<Value>(Fetched::Body {
        status: 502,
        body: b"<html>bad gateway</html>",
    });
    assert!(matches!(r, Err(ApiError::Transient(_))));
    let r = classify::<Value>(Fetched::Body {
        status: 200,
        body: b"{\"ok\":tr",
    });
    assert!(matches!(r, Err(ApiError::Malformed(_))));
    // A huge retry_after is capped.
    let b = body(
        json!({"ok": false, "error_code": 429, "description": "x", "parameters": {"retry_after": 999_999}}),
    );
    let r = classify::<Value>(Fetched::Body {
        status: 429,
        body: &b,
    });
    assert_eq!(
        r.unwrap_err(),
        ApiError::RetryAfter(crate::retry::RETRY_AFTER_CAP)
    );
}

#[test]
fn unknown_fields_are_accepted() {
    let b = ok(
        json!({"id": 1, "is_bot": true, "first_name": "B", "username": "b_bot",
        "can_join_groups": true, "some_future_field": {"x": 1}}),
    );
    let me: User = classify(Fetched::Body {
        status: 200,
        body: &b,
    })
    .unwrap();
    assert_eq!(me.username.as_deref(), Some("b_bot"));
}

#[test]
fn send_outcomes_map_to_what_delivery_does() {
    let b = body(
        json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
    );
    assert_eq!(
        send_outcome(Fetched::Body {
            status: 403,
            body: &b
        }),
        Err(SendError::Permanent(
            "Forbidden: bot was blocked by the user".into()
        ))
    );
    let b = body(
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 3", "parameters": {"retry_after": 3}}),
    );
    assert_eq!(
        send_outcome(Fetched::Body {
            status: 429,
            body: &b
        }),
        Err(SendError::RetryAfter(Duration::from_secs(3)))
    );
    assert!(matches!(
        send_outcome(Fetched::Failed("connection refused")),
        Err(SendError::Retry(_))
    ));
    assert!(matches!(
        send_outcome(Fetched::Body {
            status: 500,
            body: b"{\"ok\":false,\"error_code\":500,\"description\":\"Internal Server Error\"}"
        }),
        Err(SendError::InDoubt(_))
    ));
    let b =
        ok(json!({"message_id": 5, "date": 1, "chat": {"id": 1, "type": "private"}, "text": "hi"}));
    assert_eq!(
        send_outcome(Fetched::Body {
            status: 200,
            body: &b
        }),
        Ok(())
    );
}

#[test]
fn updates_convert_to_inbound() {
    let item = convert(text_update(7, 99, "hello"), false).unwrap();
    let ib = item.inbound.unwrap();
    assert_eq!(ib.id, "7");
    assert_eq!(ib.chat, "99");
    assert_eq!(ib.sender, "42");
    assert!(!ib.is_group);
    assert_eq!(ib.content, Content::Text("hello".into()));
    assert_eq!(ib.ts_ms, 1_700_000_000_000);

    let photo = json!({"update_id": 8, "message": {"message_id": 1, "date": 2,
        "from": {"id": 42, "is_bot": false, "first_name": "Ann"},
        "chat": {"id": -100, "type": "supergroup", "title": "G"},
        "photo": [{"file_id": "a", "file_unique_id": "b", "width": 1, "height": 1}],
        "caption": "look"}});
    let ib = convert(photo, false).unwrap().inbound.unwrap();
    assert!(ib.is_group);
    assert_eq!(
        ib.content,
        Content::Media {
            kind: MediaKind::Image,
            caption: Some("look".into())
        }
    );

    for (field, kind) in [
        ("video_note", MediaKind::Video),
        ("animation", MediaKind::Video),
        ("voice", MediaKind::Audio),
        ("document", MediaKind::Document),
        ("sticker", MediaKind::Sticker),
    ] {
        let u = json!({"update_id": 9, "message": {"message_id": 1, "date": 2,
            "chat": {"id": 5, "type": "private"}, "from": {"id": 5, "first_name": "x"},
            field: {"file_id": "a"}}});
        let ib = convert(u, false).unwrap().inbound.unwrap();
        assert_eq!(
            ib.content,
            Content::Media {
                kind,
                caption: None
            },
            "{field}"
        );
    }

    let loc = json!({"update_id": 10, "message": {"message_id": 1, "date": 2,
        "chat": {"id": 5, "type": "private"}, "from": {"id": 5, "first_name": "x"},
        "location": {"latitude": 1.0, "longitude": 2.0}}});
    let ib = convert(loc, false).unwrap().inbound.unwrap();
    assert_eq!(
        ib.content,
        Content::Text("[unsupported message: location]".into())
    );
}

#[test]
fn edits_are_ignored_unless_asked_for() {
    let u = json!({"update_id": 11, "edited_message": {"message_id": 1, "date": 2, "edit_date": 3,
        "chat": {"id": 5, "type": "private"}, "from": {"id": 5, "first_name": "x"}, "text": "fixed"}});
    assert_eq!(convert(u.clone(), false).unwrap().inbound, None);
    let ib = convert(u, true).unwrap().inbound.unwrap();
    assert_eq!(ib.content, Content::Text("fixed".into()));
    assert_eq!(ib.id, "11");
}

#[test]
fn the_offset_moves_only_over_the_confirmed_prefix() {
    let mut p = poller();
    assert_eq!(p.request().offset, None);
    let b = ok(json!([
        text_update(1, 5, "a"),
        {"update_id": 2, "message": "not a message"},
        text_update(3, 5, "c"),
        text_update(4, 5, "d"),
    ]));
    let step = p.handle_updates(Fetched::Body {
        status: 200,
        body: &b,
    });
    assert_eq!(
        step,
        PollStep::Deliver {
            status: None,
            recovered: false,
            malformed: 1
        }
    );
    assert_eq!(p.next_submission().unwrap().id, "1");
    // Not confirmed yet: the same one again, offset unmoved.
    assert_eq!(p.next_submission().unwrap().id, "1");
    assert_eq!(p.offset(), None);
    p.confirm();
    // The unreadable update 2 is skipped past on the way to 3.
    assert_eq!(p.next_submission().unwrap().id, "3");
    assert_eq!(p.offset(), Some(3));
    let wait = p.submit_failed();
    assert!(wait <= crate::retry::LINK.cap);
    assert_eq!(p.next_submission(), None);
    assert_eq!(p.offset(), Some(3));
    assert_eq!(p.request().offset, Some(3));
    assert_eq!(p.take_offset_to_save(), Some(3));
    assert_eq!(p.take_offset_to_save(), None);
}

#[test]
fn failures_map_to_waits_and_statuses() {
    let mut p = poller();
    let b = body(
        json!({"ok": false, "error_code": 409, "description": "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}),
    );
    match p.handle_updates(Fetched::Body {
        status: 409,
        body: &b,
    }) {
        PollStep::Wait { delay, status, .. } => {
            assert!(delay <= crate::retry::LINK.cap);
            assert_eq!(status, Some((State::Degraded, CONFLICT_DETAIL.into())));
        }
        other => panic!("{other:?}"),
    }
    let b = body(
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}}),
    );
    match p.handle_updates(Fetched::Body {
        status: 429,
        body: &b,
    }) {
        PollStep::Wait { delay, .. } => assert_eq!(delay, Duration::from_secs(7)),
        other => panic!("{other:?}"),
    }
    match p.handle_updates(Fetched::Body {
        status: 200,
        body: b"<<garbage>>",
    }) {
        PollStep::Wait {
            malformed, status, ..
        } => {
            assert!(
                malformed.as_deref().is_some_and(|w| w.contains("line 1")),
                "says why: {malformed:?}"
            );
            assert_eq!(status, None);
        }
        other => panic!("{other:?}"),
    }
    for _ in 0..20 {
        match p.handle_updates(Fetched::Failed("connection refused")) {
            PollStep::Wait { delay, status, .. } => {
                assert!(delay <= crate::retry::LINK.cap);
                assert_eq!(status.unwrap().0, State::Degraded);
            }
            other => panic!("{other:?}"),
        }
    }
    let b = ok(json!([]));
    assert_eq!(
        p.handle_updates(Fetched::Body {
            status: 200,
            body: &b
        }),
        PollStep::Deliver {
            status: Some((State::Up, "@b_bot".into())),
            recovered: true,
            malformed: 0
        }
    );
    let b = body(json!({"ok": false, "error_code": 401, "description": "Unauthorized"}));
    assert_eq!(
        p.handle_updates(Fetched::Body {
            status: 401,
            body: &b
        }),
        PollStep::Stop {
            status: (State::NeedsOwner, TOKEN_REJECTED_DETAIL.into())
        }
    );
}

#[test]
fn too_large_asks_for_one_update_at_a_time() {
    let mut p = poller();
    assert_eq!(p.request().limit, UPDATES_LIMIT);
    p.handle_updates(Fetched::TooLarge);
    assert_eq!(p.request().limit, 1);
    let b = ok(json!([]));
    p.handle_updates(Fetched::Body {
        status: 200,
        body: &b,
    });
    assert_eq!(p.request().limit, UPDATES_LIMIT);
}

#[test]
fn get_me_rejected_token_stops() {
    let mut p = Poller::new(50, true, Some(10), 1);
    let b = body(json!({"ok": false, "error_code": 401, "description": "Unauthorized"}));
    assert_eq!(
        p.handle_get_me(Fetched::Body {
            status: 401,
            body: &b
        }),
        StartStep::Stop {
            status: (State::NeedsOwner, TOKEN_REJECTED_DETAIL.into())
        }
    );
    let r = p.request();
    assert_eq!(r.offset, Some(10));
    assert_eq!(
        r.allowed_updates,
        vec!["message", "message_reaction", "edited_message"]
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["timeout"], 50);
}

#[test]
fn offsets_round_trip() {
    assert_eq!(
        decode_offset(&encode_offset(123_456_789)),
        Some(123_456_789)
    );
    assert_eq!(encode_offset(1), vec![0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(decode_offset(&[1, 2, 3]), None);
}
