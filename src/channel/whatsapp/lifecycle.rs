//! The WhatsApp connection lifecycle as a state machine ([`Lifecycle`]): what each thing the
//! client reports (a code to show, paired, logged in, the server's verdict on the connection, the
//! connection's end), the reconnect timer, the owner's requests and shutdown lead to, in explicit
//! [`Phase`]s. It owns the reconnect policy ([`decide`]: each way a connection ends → reconnect
//! now, after a wait, after a ban or a refused version is waited out, fetch the current web
//! version first, or stop for the owner) and the status row's words for each phase.
//!
//! Sans-io: no sockets, no tasks, no clock (`now` is passed in), never logs. The driver
//! ([`super::driver`]) feeds it [`Input`]s ([`Lifecycle::handle`]) — the client's event handler
//! does too, inline — and carries out the [`Action`]s it asks for, in order
//! ([`Lifecycle::poll_action`]): connect, wait, show, save, disconnect, wipe, finish.

use super::{LINK_WITHIN, MAX_QR_CODES};
use crate::pairing::Pairing;
use crate::retry::{self, Backoff};
use crate::status::State;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// On top of a reconnect wait: the in-memory work before the next attempt and scheduling delays.
pub const WAIT_SLACK: Duration = Duration::from_secs(5);

/// The status row while codes for a QR scan are on show.
pub const SCAN_THE_QR: &str = "not linked — scan the QR";
/// The status row while a pairing code for the phone is on show.
pub const ENTER_THE_CODE: &str = "not linked — enter the pairing code on the phone";
/// The status row when the run stops for shutdown.
pub const STOPPED: &str = "stopped";
/// Why a reconnect waits when neither the connect nor the link said why.
const NO_REASON: &str = "connection failed";

/// How one connection (or attempt) ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Stream error 515: restart required (normal right after pairing).
    RestartRequired,
    /// 401 / 516 / device removed / logged-out connect failure.
    LoggedOut,
    /// `<conflict type="replaced">` / 409: another session took over.
    Replaced,
    /// 402, temporary ban: seconds until it lifts, and when (Unix seconds) WhatsApp said so.
    TempBanned { expire_s: u64, at_unix_s: u64 },
    /// 405: this client version is refused.
    ClientOutdated,
    /// Any other login refusal (`<failure reason=…>`): 409 bad user agent, 411 multi-device
    /// mismatch, 500, 503, a 402 without its expiry, codes nobody decodes yet.
    Refused { code: i32 },
    /// 429 from the server.
    RateLimited,
    /// The link dropped or the attempt failed (network, 5xx, 503, 408, 428, 500, a deaf link).
    Lost,
    /// The QR codes ran out without a scan.
    PairingExhausted,
    /// clawbox is shutting down, or the owner's unlink logged out.
    Shutdown,
}

/// What to do next after a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    ReconnectNow,
    ReconnectAfter(Duration),
    /// Wait this long (a ban, a refused version), with these words on the status row, then
    /// reconnect by itself.
    Hold {
        delay: Duration,
        state: State,
        detail: String,
    },
    /// 405: fetch the current web version from the version document first.
    FetchVersion,
    /// Stop the channel (other channels keep running); `wipe`: forget the WhatsApp state.
    Stop {
        wipe: bool,
        detail: String,
        pair_again: bool,
        paused: bool,
    },
    /// Shutting down: just return.
    Exit,
}

/// The reconnect backoffs, one per kind of failure: a refusal does not speed up a lost link's
/// retries, nor the other way round.
#[derive(Debug, Clone)]
pub struct Backoffs {
    /// A lost link, a failed connect ([`retry::LINK`]).
    pub link: Backoff,
    /// A login refused with a code ([`retry::REFUSED`]).
    pub refused: Backoff,
    /// 405 while the version document offers nothing newer ([`retry::OUTDATED`]).
    pub outdated: Backoff,
}

impl Backoffs {
    pub fn new(seed: u64) -> Backoffs {
        Backoffs {
            link: Backoff::new(retry::LINK, seed),
            refused: Backoff::new(retry::REFUSED, seed.rotate_left(21)),
            outdated: Backoff::new(retry::OUTDATED, seed.rotate_left(42)),
        }
    }

    /// Logged in: every kind of failure starts again from its base.
    pub fn reset(&mut self) {
        self.link.reset();
        self.refused.reset();
        self.outdated.reset();
    }
}

/// The status row while a 405 is answered by fetching the current web version.
pub const FETCHING_VERSION: &str =
    "WhatsApp refuses this client version — fetching the current one";
/// The status row while WhatsApp keeps refusing the version clawbox can offer.
pub const UPDATE_CLAWBOX: &str = "WhatsApp refuses this client version — update clawbox";
/// The status row must hear from the link within this long while the version document is
/// fetched (the driver's fetch deadline plus slack).
pub const VERSION_FETCH_WITHIN: Duration = Duration::from_secs(30);

/// The reconnect policy (its numbers: [`crate::retry::LINK`], [`crate::retry::REFUSED`],
/// [`crate::retry::RATE_LIMITED_WAIT`], [`crate::retry::TEMP_BAN_SLACK`]).
/// `was_up`: the connection had logged in (a fresh start of the backoff).
pub fn decide(ending: &Ending, was_up: bool, backoffs: &mut Backoffs) -> Decision {
    let backoff = &mut backoffs.link;
    let stop = |wipe: bool, detail: String| Decision::Stop {
        wipe,
        detail,
        pair_again: wipe,
        paused: false,
    };
    match ending {
        Ending::Shutdown => Decision::Exit,
        Ending::RestartRequired => {
            backoff.reset();
            Decision::ReconnectNow
        }
        Ending::LoggedOut => stop(true, "logged out by the phone — pair again".into()),
        Ending::Replaced => stop(
            false,
            "another WhatsApp Web session took over — run `clawbox pair whatsapp` or restart to take it back".into(),
        ),
        Ending::TempBanned {
            expire_s,
            at_unix_s,
        } => Decision::Hold {
            delay: Duration::from_secs(*expire_s).min(retry::TEMP_BAN_CAP) + retry::TEMP_BAN_SLACK,
            state: State::Degraded,
            detail: format!(
                "temporarily banned by WhatsApp until {} ({}) — clawbox reconnects by itself then",
                utc_minute(at_unix_s.saturating_add(*expire_s)),
                human_duration(*expire_s)
            ),
        },
        Ending::ClientOutdated => Decision::FetchVersion,
        Ending::Refused { .. } => Decision::ReconnectAfter(backoffs.refused.next_delay()),
        Ending::PairingExhausted => Decision::Stop {
            wipe: false,
            detail: "pairing paused — run `clawbox pair whatsapp` to try again".into(),
            pair_again: false,
            paused: true,
        },
        Ending::RateLimited => Decision::ReconnectAfter(retry::RATE_LIMITED_WAIT),
        Ending::Lost => {
            if was_up {
                backoff.reset();
            }
            Decision::ReconnectAfter(backoff.next_delay())
        }
    }
}

/// `unix_s` as `2026-12-07 21:04 UTC` (the proleptic Gregorian calendar, from days since 1970).
fn utc_minute(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil date from a day count (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

fn human_duration(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// Where a run of the channel is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Built; [`Input::Start`] begins.
    New,
    /// A connection runs and has not logged in; no code on show yet.
    Connecting,
    /// Not linked: a QR or a pairing code is on show.
    Pairing,
    /// The phone took the code: the server ends this connection (515) and the next one logs in
    /// with the new identity.
    Paired,
    /// Logged in.
    Up,
    /// The connection ended; the next attempt at `until`.
    Backoff { until: Instant },
    /// WhatsApp refused this client version: the driver fetches the current one.
    Updating,
    /// The run is over.
    Stopped(Finish),
}

/// What the client, the owner and the driver report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The run begins; `paired`: the store holds an identity.
    Start { paired: bool },
    /// A QR code to show (a new one every ~20 s while not linked).
    Qr { payload: String, expires_s: u64 },
    /// The client has no QR codes left.
    QrExhausted,
    /// The 8-character code to enter on the phone.
    Code { code: String },
    /// The phone accepted the code: the new identity is in the client's store.
    PairSuccess,
    /// Logged in.
    Connected,
    /// The socket closed; why, in the library's words.
    Disconnected { reason: String },
    /// The server's verdict on this connection (logged out, replaced, banned, outdated, rate
    /// limited). The first one wins: a logout is followed by a disconnect.
    Verdict(Ending),
    /// The owner unlinks: the logout that follows is ours, not the phone's.
    OwnerLogout,
    /// The owner asked to link: a full set of codes from here.
    PairAsked,
    /// The connection ended (the client's run returned); `connect_error`: why its connect
    /// failed, when it did.
    ConnectionEnded { connect_error: Option<String> },
    /// The instant of the last [`Action::WaitUntil`] came.
    TimerFired,
    /// The driver fetched the version document ([`Action::FetchVersion`]); `newer`: it offers a
    /// version other than the one WhatsApp just refused (the next connection offers it).
    VersionFetched { newer: bool },
    /// clawbox is shutting down.
    Shutdown,
}

/// What the driver does, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start one connection (the client's run); `reconnect`: not the run's first (counted).
    Connect { reconnect: bool },
    /// The status row must hear from the link within this long (the watchdog's beat).
    BeatWithin(Duration),
    /// Set the status row.
    Report(State, String),
    /// Show every surface this pairing state.
    Publish(Pairing),
    /// Logged in: say so everywhere with the account's number (the driver reads it from the
    /// client). An outage is over.
    Linked,
    /// Make the new identity durable; `restarting`: the 515 reconnect that uses it is next.
    SaveIdentity { restarting: bool },
    /// End the connection now (disconnect the client, bounded in time).
    Disconnect,
    /// Say that a reconnect follows in `delay`, and why; `news`: a link that was up dropped.
    LogReconnect {
        delay: Duration,
        why: String,
        news: bool,
    },
    /// Feed [`Input::TimerFired`] at this instant.
    WaitUntil(Instant),
    /// Fetch the current web version from the version document; feed
    /// [`Input::VersionFetched`] (also when the fetch failed: `newer: false`).
    FetchVersion,
    /// Forget the WhatsApp state: the phone logged this device out.
    Wipe,
    /// The run is over: return this once the connection, if one runs, is gone.
    Finish(Finish),
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Linked, and the run was to stop there (`clawbox pair whatsapp`).
    Linked,
    /// Stopped until the owner acts; the words say why and what to do.
    NeedsOwner(String),
    /// Shut down.
    Shutdown,
}

/// One run's connection lifecycle. Inputs in ([`Lifecycle::handle`]), actions out
/// ([`Lifecycle::poll_action`]).
///
/// The action queue is bounded by construction: a [`Action::Publish`] or [`Action::Report`]
/// replaces a queued one of its kind (a surface shows only the newest), and every other action
/// comes at most once per connection or wait.
#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    /// Stop once logged in (`clawbox pair whatsapp`).
    exit_when_linked: bool,
    /// QR codes shown since the run began or the owner last asked: [`MAX_QR_CODES`] unscanned
    /// pause pairing (WhatsApp rate-limits repeated link attempts). Kept across connections.
    qr_codes: u32,
    /// This connection's verdict.
    verdict: Option<Ending>,
    /// This connection saw the phone accept a code.
    paired: bool,
    /// Why the link last closed, in the library's words (kept across connections: the status
    /// says it while reconnecting).
    last_disconnect: Option<String>,
    backoffs: Backoffs,
    /// 405s in a row since the last login: only the first one's fetched version is tried at
    /// once (a version document that changes on every fetch cannot make a loop).
    outdated_streak: u32,
    /// A wait for a refused version is over: fetch the document again, then connect whatever it
    /// says.
    refetch_then_connect: bool,
    actions: VecDeque<Action>,
}

impl Lifecycle {
    /// `seed` jitters the reconnect waits.
    pub fn new(exit_when_linked: bool, seed: u64) -> Lifecycle {
        Lifecycle {
            phase: Phase::New,
            exit_when_linked,
            qr_codes: 0,
            verdict: None,
            paired: false,
            last_disconnect: None,
            backoffs: Backoffs::new(seed),
            outdated_streak: 0,
            refetch_then_connect: false,
            actions: VecDeque::new(),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Takes one input at `now`; what it leads to waits in [`Lifecycle::poll_action`].
    pub fn handle(&mut self, input: Input, now: Instant) {
        if matches!(self.phase, Phase::Stopped(_)) {
            return;
        }
        let connected = matches!(
            self.phase,
            Phase::Connecting | Phase::Pairing | Phase::Paired | Phase::Up
        );
        let showing = matches!(self.phase, Phase::Connecting | Phase::Pairing);
        match input {
            Input::Start { paired } if self.phase == Phase::New => {
                let words = if paired {
                    "connecting"
                } else {
                    "not linked — connecting to show the QR"
                };
                self.push(Action::Report(State::Starting, words.into()));
                self.connect(false);
            }
            Input::Qr { payload, expires_s } if showing => {
                self.qr_codes += 1;
                if self.qr_codes > MAX_QR_CODES {
                    self.verdict(Ending::PairingExhausted);
                } else {
                    self.phase = Phase::Pairing;
                    self.push(Action::Report(State::NeedsOwner, SCAN_THE_QR.into()));
                    self.push(Action::Publish(Pairing::Qr { payload, expires_s }));
                }
            }
            Input::QrExhausted if connected => self.verdict(Ending::PairingExhausted),
            Input::Code { code } if showing => {
                self.phase = Phase::Pairing;
                self.push(Action::Report(State::NeedsOwner, ENTER_THE_CODE.into()));
                self.push(Action::Publish(Pairing::Code { code }));
            }
            Input::PairSuccess if showing => {
                self.phase = Phase::Paired;
                self.paired = true;
                self.push(Action::SaveIdentity { restarting: false });
            }
            Input::Connected if connected && self.phase != Phase::Up => {
                self.phase = Phase::Up;
                self.backoffs.reset();
                self.outdated_streak = 0;
                self.refetch_then_connect = false;
                self.push(Action::BeatWithin(LINK_WITHIN));
                self.push(Action::Linked);
                if self.exit_when_linked {
                    self.push(Action::Disconnect);
                    self.finish(Finish::Linked);
                }
            }
            Input::Disconnected { reason } => self.last_disconnect = Some(reason),
            Input::Verdict(e) if connected => self.verdict(e),
            Input::OwnerLogout if connected => self.verdict(Ending::Shutdown),
            Input::PairAsked => self.qr_codes = 0,
            Input::ConnectionEnded { connect_error } if connected => self.ended(connect_error, now),
            Input::VersionFetched { newer } if self.phase == Phase::Updating => {
                if self.refetch_then_connect || (newer && self.outdated_streak == 1) {
                    self.refetch_then_connect = false;
                    self.connect(true);
                } else {
                    let delay = self.backoffs.outdated.next_delay();
                    self.refetch_then_connect = true;
                    let detail = format!(
                        "{UPDATE_CLAWBOX} (next try in {})",
                        human_duration(delay.as_secs())
                    );
                    self.hold(now, delay, State::NeedsOwner, detail);
                }
            }
            Input::TimerFired => {
                if let Phase::Backoff { until } = self.phase {
                    if now >= until && self.refetch_then_connect {
                        self.fetch_version();
                    } else if now >= until {
                        self.connect(true);
                    } else {
                        self.push(Action::WaitUntil(until));
                    }
                }
            }
            Input::Shutdown => {
                self.push(Action::Disconnect);
                self.push(Action::Report(State::Off, STOPPED.into()));
                self.finish(Finish::Shutdown);
            }
            // Anything else is late or out of place (a code once logged in, a verdict between
            // connections): nothing to do.
            _ => {}
        }
    }

    fn connect(&mut self, reconnect: bool) {
        self.phase = Phase::Connecting;
        self.verdict = None;
        self.paired = false;
        self.push(Action::BeatWithin(LINK_WITHIN));
        self.push(Action::Connect { reconnect });
    }

    fn verdict(&mut self, e: Ending) {
        if self.verdict.is_some() {
            return;
        }
        if e == Ending::PairingExhausted {
            // Stop showing codes: end this attempt.
            self.push(Action::Disconnect);
        }
        self.verdict = Some(e);
    }

    fn ended(&mut self, connect_error: Option<String>, now: Instant) {
        let was_up = self.phase == Phase::Up;
        let ending = match self.verdict.take() {
            Some(e) => e,
            None if self.paired => Ending::RestartRequired,
            None => Ending::Lost,
        };
        if self.paired {
            // The new identity is durable before the reconnect uses it; a power cut here must
            // not force a re-pairing.
            self.push(Action::SaveIdentity { restarting: true });
        }
        match decide(&ending, was_up, &mut self.backoffs) {
            Decision::Exit => self.finish(Finish::Shutdown),
            Decision::ReconnectNow => self.connect(true),
            Decision::FetchVersion => {
                self.outdated_streak = self.outdated_streak.saturating_add(1);
                self.fetch_version();
            }
            Decision::Hold {
                delay,
                state,
                detail,
            } => self.hold(now, delay, state, detail),
            Decision::ReconnectAfter(delay) => {
                let last = self.last_disconnect.clone();
                let why = match &ending {
                    Ending::Refused { code } => Some(format!("WhatsApp refused the login: {code}")),
                    _ if was_up => last,
                    _ => connect_error.or(last),
                }
                .unwrap_or_else(|| NO_REASON.into());
                let until = now + delay;
                self.phase = Phase::Backoff { until };
                self.push(Action::Report(
                    State::Degraded,
                    format!("reconnecting ({why})"),
                ));
                self.push(Action::LogReconnect {
                    delay,
                    why,
                    news: was_up,
                });
                self.push(Action::BeatWithin(delay + WAIT_SLACK));
                self.push(Action::WaitUntil(until));
            }
            Decision::Stop {
                wipe,
                detail,
                pair_again,
                paused,
            } => {
                // Disconnected before a wipe: the client's flush must not write rows back.
                self.push(Action::Disconnect);
                if wipe {
                    self.push(Action::Wipe);
                }
                if pair_again {
                    self.push(Action::Publish(Pairing::PairAgain));
                } else if paused {
                    self.push(Action::Publish(Pairing::Paused));
                }
                self.push(Action::Report(State::NeedsOwner, detail.clone()));
                self.finish(Finish::NeedsOwner(detail));
            }
        }
    }

    /// Asks the driver for the current web version ([`Input::VersionFetched`] follows).
    fn fetch_version(&mut self) {
        self.phase = Phase::Updating;
        self.push(Action::Report(State::Degraded, FETCHING_VERSION.into()));
        self.push(Action::BeatWithin(VERSION_FETCH_WITHIN));
        self.push(Action::FetchVersion);
    }

    /// Waits `delay` from `now` with `detail` on the status row, then reconnects by itself.
    fn hold(&mut self, now: Instant, delay: Duration, state: State, detail: String) {
        let until = now + delay;
        self.phase = Phase::Backoff { until };
        self.push(Action::Report(state, detail.clone()));
        self.push(Action::LogReconnect {
            delay,
            why: detail,
            news: false,
        });
        self.push(Action::BeatWithin(delay + WAIT_SLACK));
        self.push(Action::WaitUntil(until));
    }

    fn finish(&mut self, f: Finish) {
        self.phase = Phase::Stopped(f.clone());
        self.push(Action::Finish(f));
    }

    fn push(&mut self, a: Action) {
        match &a {
            Action::Publish(_) => self.actions.retain(|q| !matches!(q, Action::Publish(_))),
            Action::Report(..) => self.actions.retain(|q| !matches!(q, Action::Report(..))),
            _ => {}
        }
        self.actions.push_back(a);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod login_tests;
