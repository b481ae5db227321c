//! The driver's unit tests: the lifecycle's actions carried out on a client that never connects.

use super::super::MAX_QR_CODES;
use super::super::test_support::{shared, test_client};
use super::*;

fn qr(code: &str) -> Arc<Event> {
    Arc::new(Event::PairingQrCode(
        whatsapp_rust::types::events::PairingQrCode::builder()
            .code(code.to_string())
            .timeout(Duration::from_secs(20))
            .build(),
    ))
}

/// A driver's side of a run on `sh`, with a client that never connects.
async fn run_on(sh: &Arc<Shared>) -> Run {
    let client = test_client(sh).await;
    Run {
        teardown: Teardown {
            client: client.clone(),
            link: transport::Link::default(),
            conn: None,
            slot: None,
        },
        sh: sh.clone(),
        current: tokio::sync::watch::channel(client.clone()).0,
        client,
        bot: None,
        web_version: version::FALLBACK_VERSION,
        backend: KvBackend::new(sh.ctx.store.kv(KvTable::WhatsApp)),
        phone: None,
        link: transport::Link::default(),
        conn: None,
        probe: None,
        wait: None,
    }
}

/// Carries out everything the lifecycle asks for now, except connecting; returns the actions.
async fn carry_out(run: &mut Run) -> Vec<Action> {
    let mut done = Vec::new();
    loop {
        let next = run.sh.life().poll_action();
        let Some(a) = next else { return done };
        if !matches!(a, Action::Connect { .. }) {
            assert_eq!(run.perform(a.clone()).await, None, "{a:?}");
        }
        done.push(a);
    }
}

#[tokio::test]
async fn qr_codes_are_published_and_pairing_pauses_after_three() {
    let (sh, _subs, prx, board) = shared(false);
    let mut run = run_on(&sh).await;
    sh.feed(Input::Start { paired: false });
    carry_out(&mut run).await;
    assert_eq!(
        board.snapshot()[0].detail,
        "not linked — connecting to show the QR"
    );
    let h = Events(sh.clone());
    for i in 1..=MAX_QR_CODES {
        h.handle_event(qr(&format!("2@ref{i},k,k,k")));
        carry_out(&mut run).await;
        assert_eq!(
            *prx.borrow(),
            Pairing::Qr {
                payload: format!("2@ref{i},k,k,k"),
                expires_s: 20
            }
        );
        assert_eq!(board.snapshot()[0].detail, "not linked — scan the QR");
    }
    // The next code means three expired unscanned: the attempt ends, nothing new is shown.
    h.handle_event(qr("2@ref4,k,k,k"));
    assert_eq!(carry_out(&mut run).await, [Action::Disconnect]);
    assert!(
        matches!(&*prx.borrow(), Pairing::Qr { payload, .. } if payload.ends_with("ref3,k,k,k"))
    );
    // Its end pauses pairing on every surface and in the status row.
    sh.life().handle(
        Input::ConnectionEnded {
            connect_error: None,
        },
        Instant::now(),
    );
    let why = "pairing paused — run `clawbox pair whatsapp` to try again";
    let next = sh.life().poll_action();
    let mut last = None;
    for a in next
        .into_iter()
        .chain(std::iter::from_fn(|| sh.life().poll_action()))
    {
        last = run.perform(a).await;
    }
    assert_eq!(last, Some(Outcome::NeedsOwner(why.into())));
    assert_eq!(*prx.borrow(), Pairing::Paused);
    assert_eq!(board.snapshot()[0].detail, why);
}

/// Every login refusal the library reports reaches the lifecycle as what it is: a ban with
/// its length, a refusal with its code (409, 411, 503, unknown).
#[tokio::test]
async fn login_refusals_reach_the_lifecycle_with_their_code_and_expiry() {
    use whatsapp_rust::types::events::{
        ConnectFailure, ConnectFailureReason, TempBanReason, TemporaryBan,
    };
    for (reason, code) in [
        (ConnectFailureReason::BadUserAgent, 409),
        (ConnectFailureReason::Unknown(411), 411),
        (ConnectFailureReason::ServiceUnavailable, 503),
        (ConnectFailureReason::Unknown(499), 499),
    ] {
        let (sh, _subs, _prx, _board) = shared(false);
        sh.feed(Input::Start { paired: true });
        while sh.life().poll_action().is_some() {}
        Events(sh.clone()).handle_event(Arc::new(Event::ConnectFailure(
            ConnectFailure::builder().reason(reason).build(),
        )));
        sh.life().handle(
            Input::ConnectionEnded {
                connect_error: None,
            },
            Instant::now(),
        );
        let actions: Vec<Action> = std::iter::from_fn(|| sh.life().poll_action()).collect();
        assert!(
            actions.contains(&Action::Report(
                State::Degraded,
                format!("reconnecting (WhatsApp refused the login: {code})")
            )),
            "{code}: {actions:?}"
        );
    }
    let (sh, _subs, _prx, _board) = shared(false);
    sh.feed(Input::Start { paired: true });
    while sh.life().poll_action().is_some() {}
    Events(sh.clone()).handle_event(Arc::new(Event::TemporaryBan(
        TemporaryBan::builder()
            .code(TempBanReason::from(101))
            .expire(whatsapp_rust::chrono::Duration::seconds(7200))
            .build(),
    )));
    let now = Instant::now();
    sh.life().handle(
        Input::ConnectionEnded {
            connect_error: None,
        },
        now,
    );
    let actions: Vec<Action> = std::iter::from_fn(|| sh.life().poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Report(State::Degraded, w)
            if w.starts_with("temporarily banned by WhatsApp until ") && w.contains("UTC (2 h)"))),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::WaitUntil(
            now + Duration::from_secs(7200) + crate::retry::TEMP_BAN_SLACK
        )),
        "{actions:?}"
    );
}

#[tokio::test]
async fn the_servers_verdicts_reach_the_lifecycle_and_the_first_wins() {
    let (sh, _subs, _prx, _board) = shared(false);
    sh.feed(Input::Start { paired: true });
    sh.feed(Input::Connected);
    while sh.life().poll_action().is_some() {}
    let h = Events(sh.clone());
    use whatsapp_rust::types::events::{ConnectFailureReason, LoggedOut, StreamReplaced};
    let out = LoggedOut::builder()
        .on_connect(false)
        .reason(ConnectFailureReason::LoggedOut)
        .build();
    h.handle_event(Arc::new(Event::LoggedOut(out)));
    h.handle_event(Arc::new(Event::StreamReplaced(
        StreamReplaced::builder().build(),
    )));
    sh.life().handle(
        Input::ConnectionEnded {
            connect_error: None,
        },
        Instant::now(),
    );
    let actions: Vec<Action> = std::iter::from_fn(|| sh.life().poll_action()).collect();
    assert_eq!(actions[..2], [Action::Disconnect, Action::Wipe]);
}

/// A connection that does not end after its disconnect is waited for [`CONNECTION_END_WAIT`]
/// and no longer, then aborted: a run (pairing, a stop) always ends.
#[tokio::test(start_paused = true)]
async fn a_connection_that_never_ends_is_given_up_after_the_wait() {
    let (dropped_tx, mut dropped) = tokio::sync::oneshot::channel::<()>();
    let c = tokio::spawn(async move {
        let _tell_when_dropped = dropped_tx;
        std::future::pending::<()>().await
    });
    let t0 = Instant::now();
    connection_gone(c).await;
    assert_eq!(t0.elapsed(), CONNECTION_END_WAIT);
    tokio::task::yield_now().await;
    assert!(
        matches!(
            dropped.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ),
        "the task was aborted"
    );
    // One that ends is not waited for beyond its end.
    let t1 = Instant::now();
    connection_gone(tokio::spawn(async {})).await;
    assert!(t1.elapsed() < CONNECTION_END_WAIT);
}
