//! The WhatsApp channel inside the real daemon, against the protocol-faithful fake server
//! (Noise, binary nodes, Signal): pairing by QR and by code, no re-pairing after restarts or
//! SIGKILL, the allowlist, media placeholders, the owner's "message yourself" chat (the default
//! mode), offline catch-up answered exactly once, and each disconnect reason leading to what it
//! must (reconnect fast, stop, or say "pair again").

use kit::{fakes, support};

use fakes::whatsapp::FakeWhatsApp;
use std::time::Duration;
use support::*;
use tokio::time::Instant;

pub(crate) const FRIEND: &str = "+15550002222";
const STRANGER: &str = "+15550003333";

pub(crate) struct Bx {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) cfg: std::path::PathBuf,
    pub(crate) port: u16,
}

pub(crate) fn new_box(fake: &FakeWhatsApp) -> Bx {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
         [channels.console]\nenabled = true\n\
         [channels.whatsapp]\nserver_url = \"{}\"\nversion_url = \"{}\"\nallow_from = [\"{FRIEND}\"]\n",
        dir.path().join("state").display(),
        fake.ws_url(),
        fake.version_url()
    );
    let path = dir.path().join("clawbox.toml");
    std::fs::write(&path, cfg).unwrap();
    Bx {
        dir,
        cfg: path,
        port,
    }
}

impl Bx {
    fn args<'a>(&'a self, cmd: &'a [&'a str]) -> Vec<&'a str> {
        let mut v = cmd.to_vec();
        v.extend_from_slice(&["--config", self.cfg.to_str().unwrap()]);
        v
    }
    pub(crate) async fn run(&self) -> Proc {
        let p = spawn(&self.args(&["run"]), &[], self.dir.path());
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        p
    }
    pub(crate) async fn health(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/healthz", self.port)).await
    }
    pub(crate) async fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.port)).await
    }
    pub(crate) async fn wait_health(&self, needle: &str) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let h = self.health().await;
            if h.contains(needle) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never said {needle:?}: {h}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub(crate) async fn wait_connected(fake: &FakeWhatsApp, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if fake.state().await.connected {
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "not connected within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(crate) async fn wait_disconnected(fake: &FakeWhatsApp) {
    let t = Instant::now();
    while fake.state().await.connected {
        assert!(t.elapsed() < SOON, "still connected");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `clawbox pair whatsapp`: the phone scans the printed QR data; the command exits 0 once linked.
pub(crate) async fn pair_by_qr(fake: &FakeWhatsApp, bx: &Bx) {
    let mut p = spawn(&bx.args(&["pair", "whatsapp"]), &[], bx.dir.path());
    let payload = wait_qr(&p).await;
    let out = p.stdout();
    assert!(payload.split(',').count() >= 4, "a QR payload: {payload}");
    assert!(
        out.iter()
            .any(|l| l.contains('▀') || l.contains('▄') || l.contains('█')),
        "the QR is drawn"
    );
    fake.scan(&payload).await.unwrap();
    assert_eq!(
        p.exit_code().await,
        Some(0),
        "{:#?}\n{:#?}",
        p.stdout(),
        p.stderr()
    );
    assert!(
        p.stdout()
            .iter()
            .any(|l| l.contains(&format!("linked {}", fake.phone_number())))
    );
}

/// A box linked by QR, with `clawbox run` started and connected.
pub(crate) async fn linked_and_running(fake: &FakeWhatsApp) -> (Bx, Proc) {
    start_linked(fake, new_box(fake)).await
}

/// Pairs `bx` by QR, runs it and waits until the fake sees it logged in.
pub(crate) async fn start_linked(fake: &FakeWhatsApp, bx: Bx) -> (Bx, Proc) {
    pair_by_qr(fake, &bx).await;
    let p = bx.run().await;
    wait_connected(fake, SOON).await;
    (bx, p)
}

/// SIGTERM, and a clean exit.
pub(crate) async fn stop(mut p: Proc) {
    p.sigterm();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
}

pub(crate) async fn replies(fake: &FakeWhatsApp, who: &str, word: &str) -> usize {
    fake.contact_inbox(who)
        .await
        .iter()
        .filter(|m| m.text.contains(word))
        .count()
}

pub(crate) async fn wait_reply(fake: &FakeWhatsApp, who: &str, word: &str) {
    let t = Instant::now();
    while replies(fake, who, word).await == 0 {
        assert!(
            t.elapsed() < SOON,
            "no reply mentioning {word}: {:#?}",
            fake.contact_inbox(who).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_by_qr_then_restarts_and_sigkill_never_need_pairing_again() {
    let fake = FakeWhatsApp::start().await;
    let (bx, mut p) = linked_and_running(&fake).await;
    bx.wait_health(&format!("linked {}", fake.phone_number()))
        .await;
    p.kill9().await;
    let p = bx.run().await;
    wait_connected(&fake, SOON).await;
    bx.wait_health(&format!("linked {}", fake.phone_number()))
        .await;
    stop(p).await;
    let p = bx.run().await;
    wait_connected(&fake, SOON).await;
    assert!(
        !p.stderr().iter().any(|l| l.contains("not linked")),
        "{:#?}",
        p.stderr()
    );
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_by_code() {
    let fake = FakeWhatsApp::start().await;
    let bx = new_box(&fake);
    let phone = fake.phone_number();
    let mut p = spawn(
        &bx.args(&["pair", "whatsapp", "--phone", phone]),
        &[],
        bx.dir.path(),
    );
    p.wait_stdout("the pairing code", |o| {
        o.iter().any(|l| l.starts_with("WhatsApp pairing code:"))
    })
    .await;
    let line = p
        .stdout()
        .into_iter()
        .find(|l| l.starts_with("WhatsApp pairing code:"))
        .unwrap();
    let code = line
        .trim_start_matches("WhatsApp pairing code:")
        .trim()
        .to_string();
    assert_eq!(code.replace('-', "").len(), 8, "{code}");
    fake.enter_code(&code).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    let p = bx.run().await;
    wait_connected(&fake, SOON).await;
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_gets_the_echo_stranger_gets_nothing_media_is_a_placeholder() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;

    fake.contact_send(STRANGER, "let me in", None, None)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "hello from a friend", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "hello from a friend").await;
    fake.contact_send(FRIEND, "", Some("image"), Some("look at this"))
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "<media:image>").await;
    let media = fake
        .contact_inbox(FRIEND)
        .await
        .into_iter()
        .find(|m| m.text.contains("<media:image>"))
        .unwrap();
    assert_eq!(media.text, "<media:image>\nlook at this");

    assert!(
        fake.contact_inbox(STRANGER).await.is_empty(),
        "nothing to the stranger"
    );
    let m = bx.metrics().await;
    assert!(
        m.contains("clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("clawbox_messages_in_total{channel=\"whatsapp\"} 2"),
        "{m}"
    );
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_down_are_answered_once_after_restart() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    stop(p).await;
    wait_disconnected(&fake).await;
    fake.contact_send(FRIEND, "while-down-one", None, None)
        .await
        .unwrap();
    fake.contact_send(FRIEND, "while-down-two", None, None)
        .await
        .unwrap();
    let p = bx.run().await;
    wait_reply(&fake, FRIEND, "while-down-one").await;
    wait_reply(&fake, FRIEND, "while-down-two").await;
    fake.contact_send(FRIEND, "settle", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "settle").await;
    assert_eq!(replies(&fake, FRIEND, "while-down-one").await, 1);
    assert_eq!(replies(&fake, FRIEND, "while-down-two").await, 1);
    stop(p).await;
}

/// After the answer in the self chat: time for a second answer to show up, if the box were to
/// answer its own answer (with the echo agent an echo loop would send one every turn).
pub(crate) const ECHO_WATCH: Duration = Duration::from_secs(5);

/// What the box sent into the self chat, as the phone read it, once `n` messages are there.
pub(crate) async fn wait_self_messages(
    fake: &FakeWhatsApp,
    n: usize,
) -> Vec<fakes::whatsapp::InboxEntry> {
    let t = Instant::now();
    loop {
        let got = fake.phone_self_messages().await;
        if got.len() >= n {
            return got;
        }
        assert!(
            t.elapsed() < SOON,
            "{n} message(s) expected in the self chat: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Agent turns so far, whatever their outcome.
pub(crate) fn turns(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("clawbox_turns_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The default mode (`self_chat = true`, the default prefix): the owner writes in "message
/// yourself" on the phone; the answer comes back in that chat with the prefix, exactly once, and
/// the box never answers its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_writes_in_the_self_chat_and_gets_one_prefixed_answer_there() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    fake.phone_self_send("note to self [s1]").await.unwrap();
    let got = wait_self_messages(&fake, 1).await;
    assert_eq!(got[0].text, "🤖 note to self [s1]", "{got:#?}");
    tokio::time::sleep(ECHO_WATCH).await;
    let got = fake.phone_self_messages().await;
    assert_eq!(
        got.len(),
        1,
        "one answer, never an answer to the answer: {got:#?}"
    );
    let m = bx.metrics().await;
    assert_eq!(
        metric(&m, "clawbox_messages_in_total{channel=\"whatsapp\"}"),
        1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "clawbox_messages_out_total{channel=\"whatsapp\"}"),
        1,
        "{m}"
    );
    assert_eq!(turns(&m), 1, "one agent call: {m}");

    // The conversation goes on: the owner's next message is answered, once, in the same chat.
    fake.phone_self_send("and another [s2]").await.unwrap();
    let got = wait_self_messages(&fake, 2).await;
    assert_eq!(got[1].text, "🤖 and another [s2]", "{got:#?}");
    tokio::time::sleep(ECHO_WATCH).await;
    let got = fake.phone_self_messages().await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let m = bx.metrics().await;
    assert_eq!(
        metric(&m, "clawbox_messages_in_total{channel=\"whatsapp\"}"),
        2,
        "{m}"
    );
    assert_eq!(turns(&m), 2, "{m}");
    println!(
        "QA self-chat: 2 messages from the phone in \"message yourself\" → 2 answers there, each prefixed \"🤖 \", {}s later still 2 (no answer to an answer); agent turns 2",
        ECHO_WATCH.as_secs()
    );
    assert!(
        fake.contact_inbox(FRIEND).await.is_empty(),
        "nothing went to anyone else"
    );
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_515_reconnect_within_seconds() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = linked_and_running(&fake).await;

    fake.fault("drop", None).await.unwrap();
    wait_disconnected(&fake).await;
    let took = wait_connected(&fake, Duration::from_secs(5)).await;
    println!("MEASURED reconnect after drop: {} ms", took.as_millis());

    fake.fault("stream-error", Some(515)).await.unwrap();
    wait_disconnected(&fake).await;
    let took = wait_connected(&fake, Duration::from_secs(5)).await;
    println!("MEASURED reconnect after 515: {} ms", took.as_millis());
    assert!(
        took < Duration::from_secs(2),
        "515 means reconnect at once: {took:?}"
    );

    fake.contact_send(FRIEND, "still-here", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "still-here").await;
    stop(p).await;
}

/// The dead-link promise (README: noticed within 25 s) with a 5 s margin.
const DEAD_LINK_DETECTED_WITHIN: Duration = Duration::from_secs(30);
/// The reconnect promise once the link is back.
const RECONNECT_WITHIN: Duration = Duration::from_secs(5);
/// One retry cycle of the box against a blackholed server: the connect timeout (5 s) plus the
/// longest backoff (3 s).
const RETRY_CYCLE_MS: u64 = 8_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_link_is_detected_within_30s_and_heals_within_5s() {
    let fake = FakeWhatsApp::start().await;
    let (_bx, p) = linked_and_running(&fake).await;
    let old = fake.state().await.conn.expect("logged in");
    fake.fault("blackhole", None).await.unwrap();
    let t = Instant::now();
    // Detected = the box closed the silent connection: the fake then detaches it.
    while fake.state().await.conn == Some(old) {
        assert!(
            t.elapsed() < DEAD_LINK_DETECTED_WITHIN,
            "dead link not detected within {DEAD_LINK_DETECTED_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "MEASURED dead link detected after {} ms",
        t.elapsed().as_millis()
    );
    // Blackholed, the box keeps trying; the fake holds each new socket, so nobody logs in.
    let attempts = fake.connection_attempts().await;
    let t = Instant::now();
    while fake.connection_attempts().await == attempts {
        assert!(
            t.elapsed() < SOON,
            "no new connection attempt into the blackhole"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !fake.state().await.connected,
        "nobody logged in while blackholed"
    );
    // Heal at a random point of the box's retry cycle (an attempt held open for up to its 5 s
    // connect timeout, then up to 3 s of backoff), not always while an attempt is waiting.
    let pause = Duration::from_millis(fastrand::u64(0..=RETRY_CYCLE_MS));
    tokio::time::sleep(pause).await;
    let healed = Instant::now();
    fake.fault("heal", None).await.unwrap();
    // Reconnected = a new connection logged in after the heal (not the old one resuming).
    let login = loop {
        if let Some(l) = fake.login_after(healed).await {
            break l;
        }
        assert!(
            healed.elapsed() < RECONNECT_WITHIN,
            "no new login within {RECONNECT_WITHIN:?} of the heal: {:?}",
            fake.logins().await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(login.conn > old, "{login:?}");
    let took = login.at - healed;
    println!(
        "MEASURED reconnect after heal: {} ms (healed {} ms into the retry cycle)",
        took.as_millis(),
        pause.as_millis()
    );
    fake.contact_send(FRIEND, "after-the-blackhole", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "after-the-blackhole").await;
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_out_wipes_whatsapp_only_and_says_pair_again() {
    let fake = FakeWhatsApp::start().await;
    let (bx, mut p) = linked_and_running(&fake).await;
    fake.fault("stream-error", Some(401)).await.unwrap();
    let h = bx.wait_health("pair again").await;
    assert!(h.contains("needs-owner"), "{h}");
    // The console, another channel, still answers.
    p.write_line("console-still-works").await;
    p.wait_stdout("the console reply", |o| {
        o.iter().any(|l| l == "console-still-works")
    })
    .await;
    stop(p).await;
    // The WhatsApp auth state is gone: a restart is unpaired and does not log in.
    let attempts = fake.connection_attempts().await;
    let p = bx.run().await;
    bx.wait_health("whatsapp").await;
    assert!(!fake.state().await.connected || fake.connection_attempts().await == attempts);
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_stops_reconnecting() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    fake.fault("conflict", None).await.unwrap();
    let h = bx.wait_health("needs-owner").await;
    assert!(
        h.to_lowercase().contains("another") || h.contains("took over"),
        "{h}"
    );
    let attempts = fake.connection_attempts().await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            fake.connection_attempts().await,
            attempts,
            "no reconnect loop after a conflict"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_pair_success_and_the_515_reconnect_needs_no_pairing_again() {
    let fake = FakeWhatsApp::start().await;
    let bx = new_box(&fake);
    let mut p = spawn(
        &bx.args(&["pair", "whatsapp"]),
        &[("CLAWBOX_FAULT", "crash:after-pair-success")],
        bx.dir.path(),
    );
    fake.scan(&wait_qr(&p).await).await.unwrap();
    assert_eq!(
        p.exit_code().await,
        None,
        "aborted at the crash point: {:#?}",
        p.stderr()
    );
    assert!(
        p.stderr()
            .iter()
            .any(|l| l.contains("injected crash at after-pair-success"))
    );
    // The service starts on the same state: it logs in with the identity saved before the crash.
    let p = bx.run().await;
    wait_connected(&fake, SOON).await;
    bx.wait_health(&format!("linked {}", fake.phone_number()))
        .await;
    stop(p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_traffic_then_every_message_is_answered_once() {
    use fakes::openai::{FakeConfig, FakeOpenAi};
    let ai = FakeOpenAi::start(FakeConfig {
        chunk_delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let fake = FakeWhatsApp::start().await;
    let bx = new_box(&fake);
    let mut cfg = std::fs::read_to_string(&bx.cfg).unwrap();
    cfg.push_str(&format!(
        "[agents.ai]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"m\"\n",
        ai.base_url()
    ));
    std::fs::write(&bx.cfg, cfg).unwrap();
    pair_by_qr(&fake, &bx).await;
    let mut p = bx.run().await;
    wait_connected(&fake, SOON).await;
    fake.contact_send(FRIEND, "traffic-one", None, None)
        .await
        .unwrap();
    let t = Instant::now();
    while ai.requests().is_empty() {
        assert!(t.elapsed() < SOON, "the turn never reached the agent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.contact_send(FRIEND, "traffic-two", None, None)
        .await
        .unwrap();
    // traffic-one's turn is streaming, traffic-two is on its way in: kill -9 now.
    p.kill9().await;
    let p = bx.run().await;
    wait_reply(&fake, FRIEND, "traffic-one").await;
    wait_reply(&fake, FRIEND, "traffic-two").await;
    fake.contact_send(FRIEND, "settle", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "settle").await;
    assert_eq!(
        replies(&fake, FRIEND, "traffic-one").await,
        1,
        "{:#?}",
        fake.contact_inbox(FRIEND).await
    );
    assert_eq!(
        replies(&fake, FRIEND, "traffic-two").await,
        1,
        "{:#?}",
        fake.contact_inbox(FRIEND).await
    );
    stop(p).await;
}

/// A bug that panics the WhatsApp driver: the supervisor restarts it, and the old client is
/// disconnected before the new one connects — never two clients on one identity (the server
/// would replace one with the other, and both would work on the same Signal state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_driver_never_leaves_a_second_client_connected() {
    let fake = FakeWhatsApp::start().await;
    let bx = new_box(&fake);
    pair_by_qr(&fake, &bx).await;
    let p = spawn(
        &bx.args(&["run"]),
        &[("CLAWBOX_FAULT", "panic:whatsapp-connected")],
        bx.dir.path(),
    );
    p.wait_stderr("the driver panicked and was restarted", |e| {
        e.iter().any(|l| l.contains("panicked; restarting"))
    })
    .await;
    let attempts = fake.connection_attempts().await;
    // Connected again, by the restarted driver (a new connection).
    let t = Instant::now();
    while !(fake.state().await.connected && fake.connection_attempts().await > attempts) {
        assert!(t.elapsed() < SOON, "reconnected after the panic");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    fake.contact_send(FRIEND, "after the panic", None, None)
        .await
        .unwrap();
    wait_reply(&fake, FRIEND, "after the panic").await;
    assert_eq!(
        fake.state().await.replaced,
        0,
        "a connection was pushed out by a second client: {:#?}",
        p.stderr()
    );
    stop(p).await;
}
