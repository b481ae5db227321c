//! Unit tests of the login failures WhatsApp answers a login with (`<failure reason=…>`), stepped
//! at explicit instants: a 402 ban is waited out and the run resumes by itself, a 405 fetches the
//! current version and reconnects with it, then backs off to hours while it persists, and every
//! other code backs off without a tight loop. (401/403 are logouts: `tests.rs` covers them.)

use super::*;

const SEED: u64 = 7;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn drain(l: &mut Lifecycle) -> Vec<Action> {
    std::iter::from_fn(|| l.poll_action()).collect()
}

/// A run that started at `t` (its first connection running, not logged in yet).
fn started(t: Instant) -> Lifecycle {
    let mut l = Lifecycle::new(false, SEED);
    l.handle(Input::Start { paired: true }, t);
    drain(&mut l);
    l
}

fn ended() -> Input {
    Input::ConnectionEnded {
        connect_error: None,
    }
}

fn reconnect() -> Vec<Action> {
    vec![
        Action::BeatWithin(LINK_WITHIN),
        Action::Connect { reconnect: true },
    ]
}

fn fetching() -> Vec<Action> {
    vec![
        Action::Report(State::Degraded, FETCHING_VERSION.into()),
        Action::BeatWithin(VERSION_FETCH_WITHIN),
        Action::FetchVersion,
    ]
}

/// What a hold of `delay` from `now` with `detail` asks for.
fn held(now: Instant, delay: Duration, state: State, detail: &str) -> Vec<Action> {
    vec![
        Action::Report(state, detail.into()),
        Action::LogReconnect {
            delay,
            why: detail.into(),
            news: false,
        },
        Action::BeatWithin(delay + WAIT_SLACK),
        Action::WaitUntil(now + delay),
    ]
}

/// The login at `now` is answered with `ending`: the connection ends.
fn refused_with(l: &mut Lifecycle, ending: Ending, now: Instant) -> Vec<Action> {
    l.handle(Input::Verdict(ending), now);
    l.handle(ended(), now);
    drain(l)
}

#[test]
fn a_temporary_ban_is_waited_out_with_its_end_on_the_status_row_then_the_run_resumes() {
    let t = Instant::now();
    let mut l = started(t);
    // 2026-12-07 18:00:00 UTC, a ban of 6 h.
    let ban = Ending::TempBanned {
        expire_s: 6 * 3600,
        at_unix_s: 1_796_666_400,
    };
    let delay = secs(6 * 3600) + retry::TEMP_BAN_SLACK;
    let words = "temporarily banned by WhatsApp until 2026-12-08 00:00 UTC (6 h) — clawbox reconnects by itself then";
    assert_eq!(
        refused_with(&mut l, ban, t),
        held(t, delay, State::Degraded, words)
    );
    assert_eq!(l.phase(), &Phase::Backoff { until: t + delay });
    // No attempt while the ban lasts, however often the timer is woken.
    for h in 1..6 {
        l.handle(Input::TimerFired, t + secs(h * 3600));
        assert_eq!(drain(&mut l), [Action::WaitUntil(t + delay)]);
    }
    // Once it is over, the run reconnects by itself and a login clears it.
    l.handle(Input::TimerFired, t + delay);
    assert_eq!(drain(&mut l), reconnect());
    l.handle(Input::Connected, t + delay + secs(1));
    assert_eq!(l.phase(), &Phase::Up);
}

#[test]
fn a_ban_with_a_garbage_expiry_is_waited_out_at_most_a_week() {
    let t = Instant::now();
    let mut l = started(t);
    let actions = refused_with(
        &mut l,
        Ending::TempBanned {
            expire_s: u64::MAX / 4,
            at_unix_s: 1_796_666_400,
        },
        t,
    );
    let until = t + retry::TEMP_BAN_CAP + retry::TEMP_BAN_SLACK;
    assert_eq!(actions.last(), Some(&Action::WaitUntil(until)));
}

#[test]
fn a_405_fetches_the_version_and_reconnects_with_a_newer_one_at_once() {
    let t = Instant::now();
    let mut l = started(t);
    assert_eq!(refused_with(&mut l, Ending::ClientOutdated, t), fetching());
    assert_eq!(l.phase(), &Phase::Updating);
    // A timer or a stray end while fetching does nothing.
    l.handle(Input::TimerFired, t + secs(1));
    l.handle(ended(), t + secs(1));
    assert_eq!(drain(&mut l), []);
    l.handle(Input::VersionFetched { newer: true }, t + secs(1));
    assert_eq!(drain(&mut l), reconnect());
    // The new version logs in: the next 405 (months later) is again answered at once.
    l.handle(Input::Connected, t + secs(2));
    drain(&mut l);
    let later = t + secs(90 * 86_400);
    assert_eq!(
        refused_with(&mut l, Ending::ClientOutdated, later),
        fetching()
    );
    l.handle(Input::VersionFetched { newer: true }, later);
    assert_eq!(drain(&mut l), reconnect());
}

#[test]
fn a_persisting_405_backs_off_to_hours_and_says_update_clawbox() {
    let t = Instant::now();
    let mut l = started(t);
    let mut outdated = Backoff::new(retry::OUTDATED, SEED.rotate_left(42));
    // First 405: the document offers a newer version, tried at once; it is refused too.
    refused_with(&mut l, Ending::ClientOutdated, t);
    l.handle(Input::VersionFetched { newer: true }, t);
    assert_eq!(drain(&mut l), reconnect());
    let mut now = t + secs(1);
    assert_eq!(
        refused_with(&mut l, Ending::ClientOutdated, now),
        fetching()
    );
    // Even a document that changes on every fetch is not tried at once a second time.
    l.handle(Input::VersionFetched { newer: true }, now);
    let mut attempts_in_first_hour = 2;
    let mut last = Duration::ZERO;
    for round in 0..12 {
        let delay = outdated.next_delay();
        let detail = format!(
            "{UPDATE_CLAWBOX} (next try in {})",
            human_duration(delay.as_secs())
        );
        assert_eq!(
            drain(&mut l),
            held(now, delay, State::NeedsOwner, &detail),
            "round {round}"
        );
        assert!(delay >= retry::OUTDATED.base / 2, "{delay:?}");
        assert!(delay <= retry::OUTDATED.cap, "{delay:?}");
        // Nothing before the wait is over.
        l.handle(Input::TimerFired, now + delay - secs(1));
        assert_eq!(drain(&mut l), [Action::WaitUntil(now + delay)]);
        // Then the document is fetched again, and whatever it says is tried.
        now += delay;
        l.handle(Input::TimerFired, now);
        assert_eq!(drain(&mut l), fetching());
        l.handle(Input::VersionFetched { newer: false }, now);
        assert_eq!(drain(&mut l), reconnect());
        if now < t + secs(3600) {
            attempts_in_first_hour += 1;
        }
        assert_eq!(
            refused_with(&mut l, Ending::ClientOutdated, now),
            fetching()
        );
        l.handle(Input::VersionFetched { newer: false }, now);
        last = delay;
    }
    assert!(attempts_in_first_hour <= 4, "{attempts_in_first_hour}");
    // Hours, not seconds, once it has persisted a while.
    assert!(last >= retry::OUTDATED.cap / 2, "{last:?}");
    // Shutdown while fetching stops at once.
    let mut l = started(t);
    refused_with(&mut l, Ending::ClientOutdated, t);
    l.handle(Input::Shutdown, t);
    assert_eq!(
        drain(&mut l),
        [
            Action::Disconnect,
            Action::Report(State::Off, STOPPED.into()),
            Action::Finish(Finish::Shutdown),
        ]
    );
}

#[test]
fn a_405_with_nothing_newer_waits_at_once() {
    let t = Instant::now();
    let mut l = started(t);
    refused_with(&mut l, Ending::ClientOutdated, t);
    l.handle(Input::VersionFetched { newer: false }, t);
    let actions = drain(&mut l);
    assert!(
        matches!(&actions[0], Action::Report(State::NeedsOwner, w) if w.starts_with(UPDATE_CLAWBOX)),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Connect { .. })));
}

/// Every other refusal backs off on its own profile: counted over a minute of refusals, a few
/// attempts, never a loop, each saying the code on the status row.
#[test]
fn other_refusals_back_off_without_a_tight_loop() {
    for code in [409, 411, 500, 503, 402, 499, 600] {
        let t = Instant::now();
        let mut l = started(t);
        let mut refused = Backoff::new(retry::REFUSED, SEED.rotate_left(21));
        let why = format!("reconnecting (WhatsApp refused the login: {code})");
        let mut now = t;
        let mut attempts = 1;
        while now < t + secs(60) {
            let actions = refused_with(&mut l, Ending::Refused { code }, now);
            let delay = refused.next_delay();
            assert_eq!(
                actions[0],
                Action::Report(State::Degraded, why.clone()),
                "{code}"
            );
            assert_eq!(actions.last(), Some(&Action::WaitUntil(now + delay)));
            assert!(delay >= retry::REFUSED.base / 2, "{code}: {delay:?}");
            now += delay;
            l.handle(Input::TimerFired, now);
            assert_eq!(drain(&mut l), reconnect(), "{code}");
            if now <= t + secs(60) {
                attempts += 1;
            }
        }
        assert!(attempts <= 4, "{code}: {attempts} attempts in a minute");
        // A login clears it: the next refusal starts from the base again.
        l.handle(Input::Connected, now);
        drain(&mut l);
        l.handle(Input::Verdict(Ending::Refused { code }), now);
        l.handle(ended(), now);
        match drain(&mut l).last() {
            Some(Action::WaitUntil(until)) => {
                assert!(*until <= now + retry::REFUSED.base, "{code}");
                assert!(*until >= now + retry::REFUSED.base / 2, "{code}");
            }
            a => panic!("{code}: {a:?}"),
        }
    }
}

#[test]
fn utc_minutes_are_civil_dates() {
    assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
    assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
    assert_eq!(
        utc_minute(1_796_666_400 + 3 * 3600 + 4 * 60 + 59),
        "2026-12-07 21:04 UTC"
    );
}
