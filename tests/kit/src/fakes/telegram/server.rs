//! The fake Telegram's server side: the HTTP handler, one function per Bot API method, the real
//! server's answers and error words, and parameter parsing (JSON, form or query).

use super::*;

fn raw_response(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static("nginx/1.18.0 (Ubuntu)"),
    );
    r
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        hyper::header::SERVER,
        hyper::header::HeaderValue::from_static("nginx/1.18.0"),
    );
    r
}

pub(super) fn ok(result: Value) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, json!({"ok": true, "result": result}))
}

pub(super) fn error(code: u16, description: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

fn fault_response(err: &FakeError) -> Response<Full<Bytes>> {
    match err {
        FakeError::Conflict => error(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
        ),
        FakeError::TooManyRequests(secs) => reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"ok": false, "error_code": 429,
                   "description": format!("Too Many Requests: retry after {secs}"),
                   "parameters": {"retry_after": secs}}),
        ),
        FakeError::Unauthorized => error(401, "Unauthorized"),
        FakeError::ServerError => error(500, "Internal Server Error"),
        FakeError::ChatNotFound => error(400, "Bad Request: chat not found"),
        FakeError::Blocked => error(403, "Forbidden: bot was blocked by the user"),
        FakeError::WrongShape => ok(json!({"update_id": "not-a-list", "message": 5})),
        FakeError::NotJson => raw_response(StatusCode::OK, "text/plain", NOT_JSON_BODY),
        FakeError::ProxyHtml502 => {
            raw_response(StatusCode::BAD_GATEWAY, "text/html", PROXY_HTML_502)
        }
        // Carried out in `handle`, which holds the real answer back.
        FakeError::CarriedOutAnswerHeld(_) => error(500, "Internal Server Error"),
        FakeError::Garbage => {
            let mut r = Response::new(Full::new(Bytes::from_static(GARBAGE_BODY.as_bytes())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_params(s: &str) -> Value {
    let mut m = serde_json::Map::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), Value::String(percent_decode(v)));
    }
    Value::Object(m)
}

/// A parameter as an integer, whether it came as a JSON number or a form string.
pub(super) fn int_param(params: &Value, key: &str) -> Option<i64> {
    match params.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An object parameter: a JSON object, or (form/query) a JSON-serialized one.
fn object_param(params: &Value, key: &str) -> Option<Value> {
    match params.get(key)? {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object),
        v @ Value::Object(_) => Some(v.clone()),
        _ => None,
    }
}

fn str_param(params: &Value, key: &str) -> Option<String> {
    match params.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `allowed_updates`: a JSON array, or (form/query) a JSON-serialized array.
fn list_param(params: &Value, key: &str) -> Option<Vec<String>> {
    let v = match params.get(key)? {
        Value::String(s) => serde_json::from_str(s).ok()?,
        v => v.clone(),
    };
    Some(
        v.as_array()?
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
    )
}

/// [`handle`], with the `Date` header of the server's clock (hyper writes the real time unless
/// the answer carries its own).
pub(super) async fn dated(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut resp = handle(inner.clone(), req).await?;
    let offset = inner.lock().clock_offset_s;
    if offset != 0 {
        let now = std::time::SystemTime::now();
        let d = Duration::from_secs(offset.unsigned_abs());
        let at = if offset > 0 { now + d } else { now - d };
        if let Ok(v) = hyper::header::HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
            resp.headers_mut().insert(hyper::header::DATE, v);
        }
    }
    Ok(resp)
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(413, "Request Entity Too Large")),
    };

    let Some(rest) = path.strip_prefix("/bot") else {
        return Ok(error(404, "Not Found"));
    };
    let Some((token, method)) = rest.split_once('/') else {
        return Ok(error(404, "Not Found"));
    };
    {
        let st = inner.lock();
        if token != st.token {
            // Telegram: a malformed token is 404, a well-formed unknown or revoked one 401.
            return Ok(if token_is_well_formed(token) {
                error(401, "Unauthorized")
            } else {
                error(404, "Not Found")
            });
        }
    }

    let mut params = form_params(&query);
    if !body.is_empty() {
        let from_body = if content_type.starts_with("application/json") {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => return Ok(error(400, "Bad Request: parameters must be a JSON object")),
                Err(_) => return Ok(error(400, "Bad Request: can't parse JSON object")),
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            form_params(&String::from_utf8_lossy(&body))
        } else {
            json!({})
        };
        if let (Some(p), Some(b)) = (params.as_object_mut(), from_body.as_object()) {
            p.extend(b.clone());
        }
    }

    let method = method.to_ascii_lowercase();
    let fault = {
        let mut st = inner.lock();
        st.calls.entry(method.clone()).or_default().push(Call {
            at: Instant::now(),
            params: params.clone(),
        });
        st.faults.get_mut(&method).and_then(VecDeque::pop_front)
    };
    inner.bump();
    let held = match fault {
        Some(FakeError::CarriedOutAnswerHeld(d)) => Some(d),
        Some(f) => return Ok(fault_response(&f)),
        None => None,
    };
    let answer = match method.as_str() {
        "getme" => get_me(&inner),
        "getupdates" => get_updates(&inner, &params).await,
        "sendmessage" => send_message(&inner, &params),
        "sendchataction" => send_chat_action(&inner, &params),
        "editmessagereplymarkup" => edit_reply_markup(&inner, &params),
        "deletewebhook" => ok(json!(true)),
        "setmycommands" => super::cues::set_my_commands(&params),
        "setmessagereaction" => super::cues::set_message_reaction(&inner, &params),
        _ => error(404, "Not Found"),
    };
    if let Some(d) = held {
        tokio::time::sleep(d).await;
    }
    Ok(answer)
}

/// editMessageReplyMarkup without `reply_markup` ("remove the keyboard"), as Telegram answers it
/// for a message without one: "not modified" when the message is the bot's own in that chat,
/// "can't be edited" when it is someone else's, "not found" when the id is not in that chat.
fn edit_reply_markup(inner: &Inner, params: &Value) -> Response<Full<Bytes>> {
    let st = inner.lock();
    let (chat_id, _) = match chat_param(&st, params) {
        Ok(c) => c,
        Err(why) => return error(400, why),
    };
    let Some(id) = int_param(params, "message_id") else {
        return error(400, "Bad Request: message identifier is not specified");
    };
    if params.get("reply_markup").is_some() {
        // clawbox never sets markup; this fake only models the probe.
        return error(
            400,
            "Bad Request: reply markup is not supported by this fake",
        );
    }
    match st.messages.get(&(chat_id, id)).map(|(by_bot, _)| *by_bot) {
        Some(true) => error(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        ),
        Some(false) => error(400, "Bad Request: message can't be edited"),
        _ => error(400, "Bad Request: message to edit not found"),
    }
}

pub(super) fn bot_user(st: &State) -> Value {
    json!({"id": st.bot_id, "is_bot": true, "first_name": "Clawbox Test",
           "username": "clawbox_test_bot"})
}

fn get_me(inner: &Inner) -> Response<Full<Bytes>> {
    let st = inner.lock();
    let mut me = bot_user(&st);
    if let Some(m) = me.as_object_mut() {
        m.insert("can_join_groups".into(), json!(true));
        m.insert("can_read_all_group_messages".into(), json!(false));
        m.insert("supports_inline_queries".into(), json!(false));
        m.insert("can_connect_to_business".into(), json!(false));
        m.insert("has_main_web_app".into(), json!(false));
    }
    ok(me)
}

fn update_kind(u: &Value) -> Option<String> {
    u.as_object()?
        .keys()
        .find(|k| k.as_str() != "update_id")
        .cloned()
}

async fn get_updates(inner: &Inner, params: &Value) -> Response<Full<Bytes>> {
    let offset = int_param(params, "offset").filter(|o| *o > 0);
    let limit = int_param(params, "limit")
        .map(|l| l.clamp(1, MAX_LIMIT as i64) as usize)
        .unwrap_or(MAX_LIMIT);
    let timeout = Duration::from_secs(int_param(params, "timeout").unwrap_or(0).max(0) as u64);
    let allowed = list_param(params, "allowed_updates").filter(|l| !l.is_empty());
    let deadline = Instant::now() + timeout;
    let mut rx = inner.version.subscribe();

    let generation = {
        let mut st = inner.lock();
        if let Some(o) = offset {
            while st
                .updates
                .front()
                .and_then(|u| u["update_id"].as_i64())
                .is_some_and(|id| id < o)
            {
                st.updates.pop_front();
            }
            st.confirmed_offset = st.confirmed_offset.max(o);
        }
        if let Some(allowed) = &allowed {
            // Telegram never even records update kinds a bot did not ask for.
            st.updates
                .retain(|u| update_kind(u).is_none_or(|k| allowed.contains(&k)));
        }
        st.poll_generation += 1;
        st.poll_generation
    };
    inner.bump();

    loop {
        {
            let mut st = inner.lock();
            if st.poll_generation != generation {
                return fault_response(&FakeError::Conflict);
            }
            if !st.replays.is_empty() || !st.updates.is_empty() {
                let mut batch: Vec<Value> = st.replays.drain(..).collect();
                batch.extend(st.updates.iter().take(limit).cloned());
                return ok(Value::Array(batch));
            }
        }
        if Instant::now() >= deadline {
            return ok(json!([]));
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return ok(json!([]));
        }
    }
}

/// The chat named by `chat_id`, or the real server's description of why not.
pub(super) fn chat_param(st: &State, params: &Value) -> Result<(i64, Value), &'static str> {
    let Some(raw) = str_param(params, "chat_id") else {
        return Err("Bad Request: chat_id is empty");
    };
    let chat = raw
        .parse::<i64>()
        .ok()
        .and_then(|id| st.chats.get(&id).map(|c| (id, c.clone())));
    chat.ok_or("Bad Request: chat not found")
}

fn send_message(inner: &Inner, params: &Value) -> Response<Full<Bytes>> {
    let mut st = inner.lock();
    let (chat_id, chat) = match chat_param(&st, params) {
        Ok(c) => c,
        Err(why) => return error(400, why),
    };
    let text = str_param(params, "text").unwrap_or_default();
    if text.trim().is_empty() {
        return error(400, "Bad Request: message text is empty");
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return error(400, "Bad Request: message is too long");
    }
    // Telegram: a thread id outside a forum, or a quoted message that is not in the chat (unless
    // allow_sending_without_reply), is refused with these words.
    let thread = int_param(params, "message_thread_id");
    if thread.is_some() && chat["is_forum"] != json!(true) {
        return error(400, "Bad Request: message thread not found");
    }
    let reply = object_param(params, "reply_parameters");
    let reply_to = reply.as_ref().and_then(|r| int_param(r, "message_id"));
    let quoted = reply_to.and_then(|id| st.messages.get(&(chat_id, id)).map(|(_, m)| m.clone()));
    if reply_to.is_some() && quoted.is_none() {
        let allow = reply
            .as_ref()
            .and_then(|r| r.get("allow_sending_without_reply"))
            .is_some_and(|v| v == &json!(true) || v == &json!("true"));
        if !allow {
            return error(400, "Bad Request: message to be replied not found");
        }
    }
    let message_id = st.next_message_id_in(&chat);
    st.sent.push(SentMessage {
        chat_id,
        text: text.clone(),
        message_id,
        at: Instant::now(),
        reply_to_message_id: reply_to,
        message_thread_id: thread,
    });
    let mut message = json!({
        "message_id": message_id,
        "from": bot_user(&st),
        "chat": chat,
        "date": now_unix(),
        "text": text,
    });
    if let Some(t) = thread {
        message["message_thread_id"] = json!(t);
        message["is_topic_message"] = json!(true);
    }
    st.messages
        .insert((chat_id, message_id), (true, message.clone()));
    if let Some(mut q) = quoted {
        // A replied-to message is given without its own reply_to_message.
        if let Some(m) = q.as_object_mut() {
            m.remove("reply_to_message");
        }
        message["reply_to_message"] = q;
    }
    drop(st);
    inner.bump();
    ok(message)
}

fn send_chat_action(inner: &Inner, params: &Value) -> Response<Full<Bytes>> {
    let mut st = inner.lock();
    let (chat_id, _) = match chat_param(&st, params) {
        Ok(c) => c,
        Err(why) => return error(400, why),
    };
    let Some(action) = str_param(params, "action") else {
        return error(400, "Bad Request: action is empty");
    };
    const ACTIONS: [&str; 10] = [
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "upload_video_note",
    ];
    if !ACTIONS.contains(&action.as_str()) {
        return error(400, "Bad Request: wrong type of action");
    }
    st.actions.push(ChatAction {
        chat_id,
        action,
        at: Instant::now(),
    });
    drop(st);
    inner.bump();
    ok(json!(true))
}
