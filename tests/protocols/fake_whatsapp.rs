//! Proves the fake WhatsApp server against the REAL whatsapp-rust 0.7.0 client (unmodified, its
//! own Bot, Tokio WebSocket transport and in-memory store) over loopback sockets: QR and pair-code
//! linking, login, Signal messages both ways, the offline queue, and fault injection.
//!
//! Real time, not the paused clock: the client spawns its own timers (QR rotation, the 10 s
//! app-state key grace after pairing, keepalive, IQ timeouts), and a paused runtime auto-advances
//! through them while sockets are idle, firing timeouts the real protocol would never hit. Every
//! wait is bounded (`WAIT`), so a broken fake fails the test instead of hanging it.

use kit::fakes;

use std::sync::Arc;
use std::time::Duration;

use fakes::whatsapp::FakeWhatsApp;
use tokio::sync::mpsc;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::http::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid, TokioRuntime};

/// Upper bound for one protocol step. Pairing includes the client's own 10 s key-share grace and
/// reconnect backoff; 60 s leaves room on a loaded 2-core machine.
pub(crate) const WAIT: Duration = Duration::from_secs(60);
/// Bound for the client's keepalive to declare a silent socket dead (ping interval up to 30 s
/// plus a 20 s answer timeout), with margin.
const KEEPALIVE_WAIT: Duration = Duration::from_secs(120);
pub(crate) const CONTACT: &str = "+15551234567";

/// Media is never downloaded in these tests; any HTTP call is a bug in the test setup.
struct NoHttp;

#[whatsapp_rust::async_trait]
impl HttpClient for NoHttp {
    async fn execute(&self, request: HttpRequest) -> whatsapp_rust::anyhow::Result<HttpResponse> {
        Err(whatsapp_rust::anyhow::anyhow!(
            "no HTTP in tests (asked for {})",
            request.url
        ))
    }
}

/// Prints the client's `log` lines when `WA_TEST_LOG` is set (e.g. `debug`).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        eprintln!(
            "[client {}] {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
    }
    fn flush(&self) {}
}

fn init_logs() {
    if let Ok(level) = std::env::var("WA_TEST_LOG") {
        let filter = level.parse().unwrap_or(log::LevelFilter::Info);
        if log::set_logger(&StderrLog).is_ok() {
            log::set_max_level(filter);
        }
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

pub(crate) struct TestClient {
    pub(crate) handle: BotHandle,
    events: mpsc::UnboundedReceiver<Arc<Event>>,
}

impl TestClient {
    async fn start(fake: &FakeWhatsApp, backend: Arc<wacore_store::InMemoryBackend>) -> Self {
        init_logs();
        let (tx, events) = mpsc::unbounded_channel();
        let bot = Bot::builder()
            .with_backend_arc(backend)
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(fake.ws_url()))
            .with_http_client(NoHttp)
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 0))
            .with_push_name("clawbox test")
            .skip_history_sync()
            .on_event(move |event, _client| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .build()
            .await
            .unwrap();
        Self {
            handle: bot.spawn(),
            events,
        }
    }

    pub(crate) fn client(&self) -> Arc<Client> {
        self.handle.client()
    }

    /// Waits for the first event `pick` accepts; panics with what was seen on timeout.
    pub(crate) async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(v) = pick(&event) {
                        return v;
                    }
                    seen.push(format!("{:?}", std::mem::discriminant(&*event)));
                }
                Ok(None) => panic!("event stream closed while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; saw {} other events",
                    seen.len()
                ),
            }
        }
    }

    async fn wait_connected(&mut self) {
        self.wait_for("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    }
}

// The in-memory store lives in wacore; re-exported by whatsapp-rust.
use whatsapp_rust::wacore::store as wacore_store;

/// A fresh client linked by QR: QR → scan → pair-success → 515 → reconnect → Connected.
pub(crate) async fn paired_client(
    fake: &FakeWhatsApp,
) -> (TestClient, Arc<wacore_store::InMemoryBackend>) {
    let backend = Arc::new(wacore_store::InMemoryBackend::new());
    let mut client = TestClient::start(fake, backend.clone()).await;
    let qr = client
        .wait_for("QR code", |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await;
    fake.scan(&qr).await.unwrap();
    client
        .wait_for("PairSuccess", |e| {
            matches!(e, Event::PairSuccess(_)).then_some(())
        })
        .await;
    client.wait_connected().await;
    (client, backend)
}

pub(crate) fn text_of(msg: &wa::Message) -> Option<String> {
    msg.conversation.clone().or_else(|| {
        msg.extended_text_message
            .as_option()
            .and_then(|e| e.text.clone())
    })
}

pub(crate) async fn wait_inbox(fake: &FakeWhatsApp, contact: &str, text: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if fake
            .contact_inbox(contact)
            .await
            .iter()
            .any(|m| m.text == text)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "contact {contact} never received {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_pairing_links_and_logs_in() {
    let fake = FakeWhatsApp::start().await;
    let before = fake.state().await;
    assert!(!before.paired && !before.connected && before.jid.is_none());

    let (client, _backend) = paired_client(&fake).await;

    let state = fake.state().await;
    assert!(state.paired, "fake says not paired");
    assert!(state.connected, "fake says not connected");
    let jid = state.jid.unwrap();
    assert!(jid.starts_with("15550001111:"), "unexpected jid {jid}");
    assert!(client.client().is_logged_in());

    // The admin API reports the same state over HTTP.
    let body = http_get(&fake.admin_url(), "/state").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["paired"], true);
    assert_eq!(v["connected"], true);
    assert_eq!(v["jid"], serde_json::Value::String(jid));
    client.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_code_links() {
    let fake = FakeWhatsApp::start().await;
    let backend = Arc::new(wacore_store::InMemoryBackend::new());
    let mut client = TestClient::start(&fake, backend).await;
    // The socket is up once the first QR arrives; then ask for a code instead.
    client
        .wait_for("QR code", |e| {
            matches!(e, Event::PairingQrCode(_)).then_some(())
        })
        .await;
    let code = client
        .client()
        .pair_with_code(PairCodeOptions {
            phone_number: fake.phone_number().trim_start_matches('+').to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        code.chars().filter(|c| c.is_ascii_alphanumeric()).count(),
        8
    );

    fake.enter_code(&code).await.unwrap();
    client
        .wait_for("PairSuccess", |e| {
            matches!(e, Event::PairSuccess(_)).then_some(())
        })
        .await;
    client.wait_connected().await;
    let state = fake.state().await;
    assert!(state.paired && state.connected);
    client.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_both_ways() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;

    // 3. A contact's text arrives decrypted, from the right sender.
    let id = fake
        .contact_send(CONTACT, "hello from a contact", None, None)
        .await
        .unwrap();
    let (text, sender, got_id) = client
        .wait_for("text message", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                text_of(&m.message).map(|t| (t, m.info.source.sender.clone(), m.info.id.clone()))
            }),
            _ => None,
        })
        .await;
    assert_eq!(text, "hello from a contact");
    assert_eq!(sender.user, "15551234567");
    assert_eq!(got_id, id);

    // A media message arrives with its caption (a `msg` on the now established session).
    fake.contact_send(CONTACT, "ignored", Some("image"), Some("look at this"))
        .await
        .unwrap();
    let caption = client
        .wait_for("image message", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                m.message
                    .image_message
                    .as_option()
                    .and_then(|i| i.caption.clone())
            }),
            _ => None,
        })
        .await;
    assert_eq!(caption, "look at this");

    // 4. The client replies; the contact decrypts it.
    let reply = wa::Message {
        conversation: Some("hi back".into()),
        ..Default::default()
    };
    client
        .client()
        .send_message(Jid::pn("15551234567"), reply)
        .await
        .unwrap();
    wait_inbox(&fake, CONTACT, "hi back").await;

    // The client can also start a chat with a contact the fake has not seen yet.
    let first = wa::Message {
        conversation: Some("new chat".into()),
        ..Default::default()
    };
    client
        .client()
        .send_message(Jid::pn("15557654321"), first)
        .await
        .unwrap();
    wait_inbox(&fake, "+15557654321", "new chat").await;
    client.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_arrive_on_reconnect() {
    let fake = FakeWhatsApp::start().await;
    let (client, backend) = paired_client(&fake).await;
    client.handle.shutdown().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fake.state().await.connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fake.contact_send(CONTACT, "while you were away 1", None, None)
        .await
        .unwrap();
    fake.contact_send(CONTACT, "while you were away 2", None, None)
        .await
        .unwrap();

    let mut again = TestClient::start(&fake, backend).await;
    // Events are delivered concurrently: `Connected` may come before or after the backlog.
    let mut got = Vec::new();
    let mut connected = false;
    while got.len() < 2 || !connected {
        let (batch, is_connected) = again
            .wait_for("offline messages and Connected", |e| match e {
                Event::Messages(batch) => Some((
                    batch
                        .messages
                        .iter()
                        .filter_map(|m| text_of(&m.message).map(|t| (t, m.info.is_offline)))
                        .collect::<Vec<_>>(),
                    false,
                )),
                Event::Connected(_) => Some((Vec::new(), true)),
                _ => None,
            })
            .await;
        got.extend(batch);
        connected |= is_connected;
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("while you were away 1".to_string(), true),
            ("while you were away 2".to_string(), true)
        ]
    );
    again.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_drop_restart_and_conflict() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;

    fake.fault("drop", None).await.unwrap();
    client
        .wait_for("Disconnected after drop", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    client.wait_connected().await;

    fake.fault("stream-error", Some(515)).await.unwrap();
    client.wait_connected().await;
    assert!(fake.state().await.connected);

    fake.fault("conflict", None).await.unwrap();
    client
        .wait_for("StreamReplaced", |e| {
            matches!(e, Event::StreamReplaced(_)).then_some(())
        })
        .await;
    client.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_blackhole_then_heal_reconnects() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let old = fake.state().await.conn.expect("logged in");
    fake.fault("blackhole", None).await.unwrap();
    // The client's keepalive (ping every 15-30 s, dead 20 s after an unanswered send) notices the
    // silence and closes the socket; the fake then detaches that connection (it no longer counts
    // as connected) and holds the client's new sockets while blackholed.
    let deadline = tokio::time::Instant::now() + KEEPALIVE_WAIT;
    while fake.state().await.conn == Some(old) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never gave up the blackholed connection"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !fake.state().await.connected,
        "nobody is logged in while blackholed once the client gave the old link up"
    );
    let healed = tokio::time::Instant::now();
    fake.fault("heal", None).await.unwrap();
    client.wait_connected().await;
    let login = fake
        .login_after(healed)
        .await
        .expect("a connection logged in after the heal");
    assert!(
        login.conn > old,
        "a new connection, not the old one: {login:?}"
    );
    assert_eq!(fake.state().await.conn, Some(login.conn));
    // The admin API serves the same login log.
    let logins: serde_json::Value =
        serde_json::from_str(&http_get(&fake.admin_url(), "/logins").await).unwrap();
    let last = logins.as_array().and_then(|l| l.last()).cloned().unwrap();
    assert_eq!(last["conn"], login.conn);
    assert_eq!(last["at_unix_ms"], login.at_unix_ms);
    client.handle.shutdown().await;
}

/// The owner's phone writes in "message yourself": the linked client gets it as its own message
/// in its own chat (from device 0, content unwrapped from the deviceSentMessage); what the client
/// sends back into that chat reaches the phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_writes_in_the_self_chat_and_reads_the_answer() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    let own = fake.phone_number().trim_start_matches('+').to_string();
    let (status, body) = http_post(
        &fake.admin_url(),
        "/phone/self",
        r#"{"text":"note to self","addressing":"pn"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (text, info) = client
        .wait_for("the self-chat message", |e| match e {
            Event::Messages(batch) => batch
                .messages
                .iter()
                .find_map(|m| text_of(&m.message).map(|t| (t, m.info.clone()))),
            _ => None,
        })
        .await;
    assert_eq!(text, "note to self");
    assert_eq!(info.id, id);
    assert!(info.source.is_from_me, "{info:?}");
    assert_eq!(
        info.source.chat.to_string(),
        format!("{own}@s.whatsapp.net")
    );
    assert_eq!(info.source.sender.user, own);
    assert_eq!(info.source.sender.device, 0, "sent by the primary phone");

    // Twice: the first a pkmsg (no session yet), the second a msg on the same session.
    fake.phone_self_send("second note").await.unwrap();
    client
        .wait_for("the second self-chat message", |e| match e {
            Event::Messages(batch) => batch
                .messages
                .iter()
                .find_map(|m| text_of(&m.message).filter(|t| t == "second note")),
            _ => None,
        })
        .await;

    let reply = wa::Message {
        conversation: Some("noted".into()),
        ..Default::default()
    };
    client
        .client()
        .send_message(Jid::pn(own.as_str()), reply)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !fake
        .phone_self_messages()
        .await
        .iter()
        .any(|m| m.text == "noted")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the phone never read the answer in the self chat"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = http_get(&fake.admin_url(), "/phone/self/messages").await;
    assert!(body.contains("noted"), "{body}");
    assert!(
        fake.contact_inbox(&own).await.is_empty(),
        "the account is not a contact of itself"
    );
    // The same chat in LID form: from and recipient the account's own LID (devices.rs).
    let (status, body) = http_post(
        &fake.admin_url(),
        "/phone/self",
        r#"{"text":"lid note","addressing":"lid"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let info = client
        .wait_for("the LID-form self-chat message", |e| match e {
            Event::Messages(batch) => batch.messages.iter().find_map(|m| {
                text_of(&m.message)
                    .filter(|t| t == "lid note")
                    .map(|_| m.info.clone())
            }),
            _ => None,
        })
        .await;
    assert!(info.source.is_from_me, "{info:?}");
    assert!(info.source.chat.is_lid(), "the own LID chat: {info:?}");
    assert_eq!(info.source.sender.device, 0, "sent by the primary phone");
    let (status, _) = http_post(
        &fake.admin_url(),
        "/phone/self",
        r#"{"text":"x","addressing":"e164"}"#,
    )
    .await;
    assert_eq!(status, 400, "an unknown addressing form is refused");
    client.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stream_error_401_logs_out() {
    let fake = FakeWhatsApp::start().await;
    let (mut client, _backend) = paired_client(&fake).await;
    fake.fault("stream-error", Some(401)).await.unwrap();
    client
        .wait_for("LoggedOut", |e| {
            matches!(e, Event::LoggedOut(_)).then_some(())
        })
        .await;
    client.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rejects_bad_requests() {
    let fake = FakeWhatsApp::start().await;
    let (status, _) = http_post(&fake.admin_url(), "/faults", r#"{"kind":"meteor"}"#).await;
    assert_eq!(status, 400);
    let (status, _) = http_post(&fake.admin_url(), "/phone/scan", r#"{"qr":"a,b,c,d"}"#).await;
    assert_eq!(status, 400, "a scan with no client connected must fail");
    let (status, body) = http_post(
        &fake.admin_url(),
        "/contacts/+15551234567/messages",
        r#"{"text":"hi"}"#,
    )
    .await;
    assert_eq!(status, 400, "nothing is linked yet: {body}");
    let body = http_get(&fake.admin_url(), "/contacts/+15551234567/messages").await;
    assert_eq!(body, "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_requires_path_and_origin() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let fake = FakeWhatsApp::start().await;
    let wrong_path = format!("ws://{}/other", fake.ws_addr());
    let mut req = wrong_path.into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://web.whatsapp.com".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let req = fake.ws_url().into_client_request().unwrap();
    assert!(
        tokio_tungstenite::connect_async(req).await.is_err(),
        "no Origin header must be refused"
    );
}

async fn http_request(base: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HttpClientLegacy;
    use hyper_util::rt::TokioExecutor;
    let client: HttpClientLegacy<_, Full<bytes::Bytes>> =
        HttpClientLegacy::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

pub(crate) async fn http_get(base: &str, path: &str) -> String {
    let (status, body) = http_request(base, "GET", path, "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

pub(crate) async fn http_post(base: &str, path: &str, body: &str) -> (u16, String) {
    http_request(base, "POST", path, body).await
}
