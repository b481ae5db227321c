//! Unit tests of the WhatsApp connection lifecycle, without a socket or a clock: every way a
//! connection ends (a drop, a deaf link, a 515 restart, logged out, replaced, banned, outdated,
//! rate limited, codes run out, the owner's unlink, shutdown while connected or waiting) leads to
//! the exact actions and waits, at explicit instants. The waits are checked against a backoff
//! with the same seed.

use super::*;

const SEED: u64 = 7;

/// The instant the tests count from (any will do: only differences matter).
fn t0() -> Instant {
    Instant::now()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The same jitter the machine uses: the exact waits it must ask for.
fn backoff() -> Backoff {
    Backoff::new(retry::LINK, SEED)
}

fn drain(l: &mut Lifecycle) -> Vec<Action> {
    std::iter::from_fn(|| l.poll_action()).collect()
}

/// A run that started (and connected once) at `t0`.
fn started(paired: bool, exit_when_linked: bool, t0: Instant) -> Lifecycle {
    let mut l = Lifecycle::new(exit_when_linked, SEED);
    l.handle(Input::Start { paired }, t0);
    drain(&mut l);
    l
}

/// A run that logged in at `t0`.
fn up(t0: Instant) -> Lifecycle {
    let mut l = started(true, false, t0);
    l.handle(Input::Connected, t0);
    drain(&mut l);
    l
}

fn connect(reconnect: bool) -> Vec<Action> {
    vec![
        Action::BeatWithin(LINK_WITHIN),
        Action::Connect { reconnect },
    ]
}

fn ended(connect_error: Option<&str>) -> Input {
    Input::ConnectionEnded {
        connect_error: connect_error.map(str::to_string),
    }
}

/// What a reconnect after `delay` from `now` asks for, with `why` on the status row.
fn wait(now: Instant, delay: Duration, why: &str, news: bool) -> Vec<Action> {
    vec![
        Action::Report(State::Degraded, format!("reconnecting ({why})")),
        Action::LogReconnect {
            delay,
            why: why.into(),
            news,
        },
        Action::BeatWithin(delay + WAIT_SLACK),
        Action::WaitUntil(now + delay),
    ]
}

fn qr(n: u32) -> Input {
    Input::Qr {
        payload: format!("2@ref{n},k,k,k"),
        expires_s: 20,
    }
}

fn shown(n: u32) -> Vec<Action> {
    vec![
        Action::Report(State::NeedsOwner, SCAN_THE_QR.into()),
        Action::Publish(Pairing::Qr {
            payload: format!("2@ref{n},k,k,k"),
            expires_s: 20,
        }),
    ]
}

fn stopped_for_shutdown() -> Vec<Action> {
    vec![
        Action::Disconnect,
        Action::Report(State::Off, STOPPED.into()),
        Action::Finish(Finish::Shutdown),
    ]
}

#[test]
fn a_run_starts_by_connecting_and_says_whether_it_is_linked() {
    let t = t0();
    let mut l = Lifecycle::new(false, SEED);
    assert_eq!(l.phase(), &Phase::New);
    l.handle(Input::Start { paired: true }, t);
    let mut want = vec![Action::Report(State::Starting, "connecting".into())];
    want.extend(connect(false));
    assert_eq!(drain(&mut l), want);
    assert_eq!(l.phase(), &Phase::Connecting);
    // A second start changes nothing.
    l.handle(Input::Start { paired: true }, t);
    assert_eq!(drain(&mut l), []);

    let mut l = Lifecycle::new(false, SEED);
    l.handle(Input::Start { paired: false }, t);
    assert_eq!(
        drain(&mut l)[0],
        Action::Report(
            State::Starting,
            "not linked — connecting to show the QR".into()
        )
    );
}

#[test]
fn logging_in_announces_the_link_and_a_drop_reconnects_from_the_base_wait() {
    let t = t0();
    let mut l = started(true, false, t);
    l.handle(Input::Connected, t + secs(1));
    assert_eq!(
        drain(&mut l),
        [Action::BeatWithin(LINK_WITHIN), Action::Linked]
    );
    assert_eq!(l.phase(), &Phase::Up);
    // A second "connected" on the same link is not news.
    l.handle(Input::Connected, t + secs(2));
    assert_eq!(drain(&mut l), []);

    // The link drops (or the deaf-link probe ended it: the same, no verdict): the wait starts
    // from the base again, and the library's reason is on the status row.
    let at = t + secs(600);
    l.handle(
        Input::Disconnected {
            reason: "stream closed".into(),
        },
        at,
    );
    l.handle(ended(None), at);
    let d = backoff().next_delay();
    assert!(d <= retry::LINK.base, "{d:?}");
    assert_eq!(drain(&mut l), wait(at, d, "stream closed", true));
    assert_eq!(l.phase(), &Phase::Backoff { until: at + d });

    // Early: still waiting, for the same instant.
    l.handle(Input::TimerFired, at + d - Duration::from_millis(1));
    assert_eq!(drain(&mut l), [Action::WaitUntil(at + d)]);
    l.handle(Input::TimerFired, at + d);
    assert_eq!(drain(&mut l), connect(true));
    assert_eq!(l.phase(), &Phase::Connecting);
}

#[test]
fn failed_attempts_wait_longer_up_to_the_cap_and_say_why_the_connect_failed() {
    let t = t0();
    let mut l = started(true, false, t);
    let mut b = backoff();
    let mut now = t;
    let refused = "could not connect to ws://box: connection refused";
    for i in 0..100 {
        // The connect's own failure beats an old disconnect reason.
        if i == 1 {
            l.handle(
                Input::Disconnected {
                    reason: "old reason".into(),
                },
                now,
            );
        }
        l.handle(ended(Some(refused)), now);
        let d = b.next_delay();
        assert!(d <= retry::LINK.cap, "{d:?}");
        assert_eq!(drain(&mut l), wait(now, d, refused, false), "attempt {i}");
        now += d;
        l.handle(Input::TimerFired, now);
        assert_eq!(drain(&mut l), connect(true));
    }
    // Without a connect error: the last disconnect reason, else plain words.
    l.handle(ended(None), now);
    let d = b.next_delay();
    assert_eq!(drain(&mut l), wait(now, d, "old reason", false));
    let mut fresh = started(true, false, t);
    fresh.handle(ended(None), t);
    let d = backoff().next_delay();
    assert_eq!(drain(&mut fresh), wait(t, d, "connection failed", false));
}

#[test]
fn a_515_on_a_live_link_is_a_drop_that_reconnects_within_the_base_wait() {
    let t = t0();
    let mut l = up(t);
    // Without a pair success, a stream error 515 just ends the connection.
    l.handle(ended(None), t + secs(30));
    let d = backoff().next_delay();
    assert!(d <= retry::LINK.base);
    assert_eq!(
        drain(&mut l),
        wait(t + secs(30), d, "connection failed", true)
    );
}

#[test]
fn pair_success_saves_the_identity_and_the_515_reconnects_at_once() {
    let t = t0();
    let mut l = started(false, false, t);
    l.handle(qr(1), t + secs(1));
    assert_eq!(drain(&mut l), shown(1));
    assert_eq!(l.phase(), &Phase::Pairing);
    l.handle(Input::PairSuccess, t + secs(5));
    assert_eq!(drain(&mut l), [Action::SaveIdentity { restarting: false }]);
    assert_eq!(l.phase(), &Phase::Paired);
    // The server's 515 ends the connection: saved again (a crash point follows), then at once.
    l.handle(ended(None), t + secs(6));
    let mut want = vec![Action::SaveIdentity { restarting: true }];
    want.extend(connect(true));
    assert_eq!(drain(&mut l), want);
    // The next connection logs in with the new identity, and no 515 is assumed any more.
    l.handle(Input::Connected, t + secs(7));
    assert_eq!(
        drain(&mut l),
        [Action::BeatWithin(LINK_WITHIN), Action::Linked]
    );
    l.handle(ended(None), t + secs(8));
    assert!(matches!(drain(&mut l).last(), Some(Action::WaitUntil(_))));
}

#[test]
fn the_pair_command_stops_once_linked() {
    let t = t0();
    let mut l = started(false, true, t);
    l.handle(
        Input::Code {
            code: "ABCD1234".into(),
        },
        t,
    );
    assert_eq!(
        drain(&mut l),
        [
            Action::Report(State::NeedsOwner, ENTER_THE_CODE.into()),
            Action::Publish(Pairing::Code {
                code: "ABCD1234".into()
            }),
        ]
    );
    l.handle(Input::PairSuccess, t);
    l.handle(ended(None), t);
    drain(&mut l);
    l.handle(Input::Connected, t + secs(1));
    assert_eq!(
        drain(&mut l),
        [
            Action::BeatWithin(LINK_WITHIN),
            Action::Linked,
            Action::Disconnect,
            Action::Finish(Finish::Linked),
        ]
    );
    assert_eq!(l.phase(), &Phase::Stopped(Finish::Linked));
    // The connection's end after the disconnect changes nothing.
    l.handle(ended(None), t + secs(2));
    assert_eq!(drain(&mut l), []);
}

#[test]
fn logged_out_by_the_phone_wipes_and_says_pair_again() {
    let t = t0();
    let mut l = up(t);
    l.handle(Input::Verdict(Ending::LoggedOut), t + secs(9));
    // The first verdict wins: the disconnect that follows a logout is not a conflict.
    l.handle(Input::Verdict(Ending::Replaced), t + secs(9));
    assert_eq!(drain(&mut l), []);
    l.handle(ended(None), t + secs(10));
    let why = "logged out by the phone — pair again".to_string();
    assert_eq!(
        drain(&mut l),
        [
            Action::Disconnect,
            Action::Wipe,
            Action::Publish(Pairing::PairAgain),
            Action::Report(State::NeedsOwner, why.clone()),
            Action::Finish(Finish::NeedsOwner(why.clone())),
        ]
    );
    assert_eq!(l.phase(), &Phase::Stopped(Finish::NeedsOwner(why)));
    // Stopped for good: neither a timer nor a shutdown does anything more.
    l.handle(Input::TimerFired, t + secs(60));
    l.handle(Input::Shutdown, t + secs(60));
    assert_eq!(drain(&mut l), []);
}

#[test]
fn replaced_stops_without_wiping() {
    let t = t0();
    let words = "another WhatsApp Web session took over — run `clawbox pair whatsapp` or restart to take it back";
    let mut l = up(t);
    l.handle(Input::Verdict(Ending::Replaced), t + secs(1));
    l.handle(ended(None), t + secs(1));
    assert_eq!(
        drain(&mut l),
        [
            Action::Disconnect,
            Action::Report(State::NeedsOwner, words.into()),
            Action::Finish(Finish::NeedsOwner(words.into())),
        ]
    );
}

#[test]
fn rate_limited_waits_the_fixed_wait_and_keeps_the_backoff_where_it_was() {
    let t = t0();
    let mut l = started(true, false, t);
    l.handle(
        Input::Disconnected {
            reason: "stream error 429".into(),
        },
        t,
    );
    l.handle(Input::Verdict(Ending::RateLimited), t);
    l.handle(ended(None), t + secs(1));
    assert_eq!(
        drain(&mut l),
        wait(
            t + secs(1),
            retry::RATE_LIMITED_WAIT,
            "stream error 429",
            false
        )
    );
    assert_eq!(
        l.phase(),
        &Phase::Backoff {
            until: t + secs(1) + retry::RATE_LIMITED_WAIT
        }
    );
    // The next failure gets the backoff's first wait: the rate limit did not consume one.
    l.handle(Input::TimerFired, t + secs(11));
    drain(&mut l);
    l.handle(ended(None), t + secs(12));
    let d = backoff().next_delay();
    assert_eq!(
        drain(&mut l),
        wait(t + secs(12), d, "stream error 429", false)
    );
}

#[test]
fn shutdown_while_waiting_or_connected_disconnects_and_stops() {
    let t = t0();
    let mut l = up(t);
    l.handle(ended(None), t + secs(1));
    drain(&mut l);
    l.handle(Input::Shutdown, t + secs(2));
    assert_eq!(drain(&mut l), stopped_for_shutdown());
    assert_eq!(l.phase(), &Phase::Stopped(Finish::Shutdown));
    // The wait's timer firing afterwards connects nothing.
    l.handle(Input::TimerFired, t + secs(10));
    assert_eq!(drain(&mut l), []);

    let mut l = up(t);
    l.handle(Input::Shutdown, t + secs(3));
    assert_eq!(drain(&mut l), stopped_for_shutdown());
    l.handle(ended(None), t + secs(3));
    assert_eq!(drain(&mut l), []);
}

#[test]
fn unscanned_codes_pause_pairing_after_max_qr_codes() {
    let t = t0();
    let mut l = started(false, false, t);
    let mut now = t;
    for n in 1..=MAX_QR_CODES {
        l.handle(qr(n), now);
        assert_eq!(drain(&mut l), shown(n));
        now += secs(20);
    }
    // One more code means the last expired unscanned: end the attempt, show nothing new.
    l.handle(qr(MAX_QR_CODES + 1), now);
    assert_eq!(drain(&mut l), [Action::Disconnect]);
    l.handle(qr(MAX_QR_CODES + 2), now);
    l.handle(Input::QrExhausted, now);
    assert_eq!(drain(&mut l), []);
    l.handle(ended(None), now + secs(1));
    let why = "pairing paused — run `clawbox pair whatsapp` to try again".to_string();
    assert_eq!(
        drain(&mut l),
        [
            Action::Disconnect,
            Action::Publish(Pairing::Paused),
            Action::Report(State::NeedsOwner, why.clone()),
            Action::Finish(Finish::NeedsOwner(why)),
        ]
    );

    // The client running out of codes on its own does the same.
    let mut l = started(false, false, t);
    l.handle(qr(1), t);
    drain(&mut l);
    l.handle(Input::QrExhausted, t + secs(20));
    assert_eq!(drain(&mut l), [Action::Disconnect]);
}

#[test]
fn codes_count_across_connections_until_the_owner_asks_again() {
    let t = t0();
    let mut l = started(false, false, t);
    l.handle(qr(1), t);
    l.handle(qr(2), t + secs(20));
    // Only the newest code and words wait for the driver.
    assert_eq!(drain(&mut l), shown(2));
    // The attempt drops while pairing: the count carries over to the next connection.
    l.handle(ended(Some("refused")), t + secs(30));
    let d = backoff().next_delay();
    assert_eq!(drain(&mut l), wait(t + secs(30), d, "refused", false));
    l.handle(Input::TimerFired, t + secs(30) + d);
    drain(&mut l);
    let now = t + secs(40);
    l.handle(qr(3), now);
    assert_eq!(drain(&mut l), shown(3));
    // The owner is watching now: a full set of codes from here.
    l.handle(Input::PairAsked, now);
    for n in 4..4 + MAX_QR_CODES {
        l.handle(qr(n), now);
        assert_eq!(drain(&mut l), shown(n));
    }
    l.handle(qr(99), now);
    assert_eq!(drain(&mut l), [Action::Disconnect]);
}

#[test]
fn the_owners_unlink_is_not_a_logout_by_the_phone() {
    let t = t0();
    let mut l = up(t);
    l.handle(Input::OwnerLogout, t);
    l.handle(Input::Verdict(Ending::LoggedOut), t);
    l.handle(ended(None), t);
    assert_eq!(drain(&mut l), [Action::Finish(Finish::Shutdown)]);
}

#[test]
fn reconnect_policy_table() {
    let mut b = Backoffs::new(1);
    assert_eq!(
        decide(&Ending::RestartRequired, false, &mut b),
        Decision::ReconnectNow
    );
    match decide(&Ending::LoggedOut, true, &mut b) {
        Decision::Stop {
            wipe,
            pair_again,
            detail,
            ..
        } => {
            assert!(wipe && pair_again);
            assert!(detail.contains("pair again"));
        }
        d => panic!("{d:?}"),
    }
    match decide(&Ending::Replaced, true, &mut b) {
        Decision::Stop { wipe, detail, .. } => {
            assert!(!wipe);
            assert!(detail.contains("clawbox pair whatsapp"));
        }
        d => panic!("{d:?}"),
    }
    // 2026-12-07 18:00 UTC + 2 h.
    match decide(
        &Ending::TempBanned {
            expire_s: 7200,
            at_unix_s: 1_796_666_400,
        },
        true,
        &mut b,
    ) {
        Decision::Hold {
            delay,
            state: State::Degraded,
            detail,
        } => {
            assert_eq!(delay, secs(7200) + retry::TEMP_BAN_SLACK);
            assert_eq!(
                detail,
                "temporarily banned by WhatsApp until 2026-12-07 20:00 UTC (2 h) — clawbox reconnects by itself then"
            );
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(
        decide(&Ending::ClientOutdated, true, &mut b),
        Decision::FetchVersion
    );
    assert!(matches!(
        decide(&Ending::PairingExhausted, false, &mut b),
        Decision::Stop {
            paused: true,
            wipe: false,
            ..
        }
    ));
    assert_eq!(decide(&Ending::Shutdown, true, &mut b), Decision::Exit);
    // Transient failures: capped backoff, never over 10 s, however many in a row.
    for _ in 0..100 {
        match decide(&Ending::Lost, false, &mut b) {
            Decision::ReconnectAfter(d) => assert!(d <= Duration::from_secs(10), "{d:?}"),
            d => panic!("{d:?}"),
        }
    }
    match decide(&Ending::RateLimited, false, &mut b) {
        Decision::ReconnectAfter(d) => assert_eq!(d, retry::RATE_LIMITED_WAIT),
        d => panic!("{d:?}"),
    }
    // A connection that was up starts again from the base.
    match decide(&Ending::Lost, true, &mut b) {
        Decision::ReconnectAfter(d) => assert!(d <= retry::LINK.base),
        d => panic!("{d:?}"),
    }
    assert_eq!(human_duration(90), "90 s");
    assert_eq!(human_duration(600), "10 min");
}
