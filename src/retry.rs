//! The retry policy: every reconnect, restart and retry wait in clawbox, and every dead-link
//! budget, as named profiles with their reasons and the README promises they keep. The one file
//! to read (and the one to change) for "how soon does clawbox try again, and how soon does it
//! notice a dead link".
//!
//! [`Backoff`] computes the delays (capped exponential, half jitter). Pure: the caller owns the
//! clock and the sleeping; this only says how long. The callers:
//! - [`LINK`]: WhatsApp reconnects (`channel::whatsapp::lifecycle::decide`), OpenClaw gateway
//!   reconnects (`agent::openclaw::driver`), Telegram poll retries (`channel::telegram::proto`).
//! - [`RESTART`] (+ [`HEALTHY_RUN`]): the supervisor's task restarts.
//! - [`SEND`]: a reply chunk that failed, and a chunk in doubt the channel cannot settle yet
//!   (`delivery`).
//! - [`INTAKE`]: a WhatsApp message the inbox refused for now (`channel::whatsapp::inbound`).
//! - Fixed waits: [`RATE_LIMITED_WAIT`], [`RESTRICTED_WAIT`], [`STORE_RETRY`] (a turn after a
//!   store failure, `router::runner`), [`DISPLAY_RETRY`] (a failed display device), and
//!   [`RETRY_AFTER_CAP`] on any wait a server asks for.
//! - Dead links: WhatsApp's silent link ([`PING_EVERY`], [`DEAD_AFTER`] → [`SILENT_LINK_NOTICED`])
//!   and deaf link ([`PROBE_EVERY`] … → [`DEAF_LINK_NOTICED`]); the OpenClaw gateway's
//!   ([`GATEWAY_MISSED_TICKS`]); every link's [`CONNECT_TIMEOUT`].
//!
//! How long one attempt may take (request and handshake deadlines) stays with each protocol, and
//! the status board's allowances with their rows. The unit tests below hold each profile to the
//! README's words ("What you can count on").

use std::time::Duration;

/// A capped exponential backoff: the first delay is at most `base`, the ceiling doubles per
/// attempt, no delay is ever over `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The first delay's upper bound.
    pub base: Duration,
    /// The longest delay ever returned: the worst wait between two attempts.
    pub cap: Duration,
}

impl Profile {
    /// A fresh backoff on this profile; `seed` spreads the jitter of parallel users apart.
    pub fn backoff(self, seed: u64) -> Backoff {
        Backoff::new(self, seed)
    }
}

/// Reconnecting a link that was lost (WhatsApp, the OpenClaw gateway) and retrying a failed
/// Telegram poll. README: "tried again never more than 3 s apart", and a link is back within 5 s
/// of the network healing ([`HEAL_WITHIN`]): an attempt that is in flight when the network heals
/// goes through; otherwise the next one starts within `cap` (1.5–3 s at worst, half-jittered),
/// and a connect and login take well under 2 s. (tests/system/soak.rs measured 9.8 s with a 10 s cap
/// after a 6 s outage, hence 3 s.)
pub const LINK: Profile = Profile {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(3),
};
/// The README's promise for [`LINK`]: the link is up again this soon after the network heals.
pub const HEAL_WITHIN: Duration = Duration::from_secs(5);
/// What a connect and a login are allowed on a working network (a Pi does TLS in well under 1 s;
/// tests/flows/whatsapp_flow.rs measures the whole heal through the binary): [`LINK`]'s cap plus this
/// is [`HEAL_WITHIN`].
pub const CONNECT_AND_LOGIN: Duration = Duration::from_secs(2);
/// TCP connect + TLS + WebSocket upgrade of a link (WhatsApp, the OpenClaw gateway) must finish
/// within this (WhatsApp's own 20 s handshake deadline covers the Noise handshake after it).
/// Short, so an attempt hung in a dead network gives way to a fresh one soon after the network
/// heals.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Restarting a channel or agent task after an error or a panic: the first restart within 1 s, a
/// broken channel retried at least every 30 s (and never in a tight loop).
pub const RESTART: Profile = Profile {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
};
/// A task that ran this long before failing starts its [`RESTART`] backoff afresh.
pub const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Trying a failed reply chunk again, and asking again about a chunk in doubt the channel cannot
/// settle yet: once a link is back, the reply follows within 8 s (a failed try while it is down
/// is local or one small request, so this costs little; it was 60 s before the soak).
pub const SEND: Profile = Profile {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(8),
};

/// Offering a WhatsApp message again to an inbox that refused it for now (busy, or a store
/// error): a busy inbox drains in well under a second, so retries are quick, but never a spin.
pub const INTAKE: Profile = Profile {
    base: Duration::from_millis(250),
    cap: Duration::from_secs(2),
};

/// Reconnecting after WhatsApp refused a login with a code that is neither a logout, a ban nor
/// "outdated" (409 bad user agent, 411 multi-device mismatch, 500, 503, codes nobody decodes yet):
/// the server answered, so the network is fine and a quick retry would only be refused again (or
/// look like a client hammering a refusal). From 10 s up to 30 min apart: at most 4 attempts in
/// the first minute, and a server that comes back is tried within half an hour.
pub const REFUSED: Profile = Profile {
    base: Duration::from_secs(10),
    cap: Duration::from_secs(30 * 60),
};
/// Reconnecting while WhatsApp keeps answering 405 (client outdated) although clawbox fetched the
/// current web version: only a newer clawbox (or a newer version document) helps, so the tries go
/// from 30 min up to 6 h apart — a box left alone for a week asks a few dozen times, not thousands.
pub const OUTDATED: Profile = Profile {
    base: Duration::from_secs(30 * 60),
    cap: Duration::from_secs(6 * 3600),
};
/// A temporary ban (402) is waited out for the `expire` WhatsApp gives plus this much (its clock
/// and ours may differ by a little; a login a moment early would be refused again).
pub const TEMP_BAN_SLACK: Duration = Duration::from_secs(30);
/// The longest ban wait honoured before trying again anyway: a garbage `expire` cannot park the
/// channel for years; a real ban that is still on answers 402 again and is waited out afresh.
pub const TEMP_BAN_CAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Wait before reconnecting when WhatsApp says we connect too often: deliberately slower than
/// [`LINK`]'s cap, so a rate limit is not hammered. README: "10 s when WhatsApp says it is
/// rate-limited".
pub const RATE_LIMITED_WAIT: Duration = Duration::from_secs(10);
/// Wait before offering again a message WhatsApp refused for an account restriction that lifts
/// with time (463: no trusted-contact token yet; 475: too many new chats).
pub const RESTRICTED_WAIT: Duration = Duration::from_secs(300);
/// Wait after a store failure before a session's turn is tried again (the store's own health
/// check decides whether the process must stop; this only keeps the turn from spinning).
pub const STORE_RETRY: Duration = Duration::from_secs(2);
/// A display device that failed (a missing `/dev` node, an unplugged panel) is tried again after
/// this long: slow enough not to flood the journal or spin, quick enough that a reconnected
/// display lights up soon.
pub const DISPLAY_RETRY: Duration = Duration::from_secs(30);
/// A wait a server asks for (Telegram's `retry_after`, a channel's "not yet") is honoured up to
/// this: an hour-long flood ban is re-asked hourly, which is harmless, and a garbage value cannot
/// park a channel for days.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// A WhatsApp WebSocket ping this often keeps NAT state warm and proves the link.
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// No WebSocket frame at all for this long = a dead WhatsApp link (a live server answers our
/// pings, RFC 6455 5.5.2). Checked at each ping.
pub const DEAD_AFTER: Duration = Duration::from_secs(20);
/// The worst case to notice a silent WhatsApp link (a blackhole, a dead NAT): the last frame came
/// just after a check, so the check that finds [`DEAD_AFTER`] of silence is at most one
/// [`PING_EVERY`] later. README: "a silent link noticed within 25 s". (The library's own
/// keepalive, 15–30 s + 20 s, is slower.)
pub const SILENT_LINK_NOTICED: Duration = DEAD_AFTER.saturating_add(PING_EVERY);

/// How often the deaf-link probe asks WhatsApp for a pong (one tiny keepalive IQ; WhatsApp Web
/// pings at a similar pace while idle).
pub const PROBE_EVERY: Duration = Duration::from_secs(15);
/// How long a probe's pong may take: generous for a slow mobile uplink.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Extra time on top of the IQ's own deadline before the probe gives up on the call itself.
pub const PROBE_SLACK: Duration = Duration::from_secs(2);
/// Unanswered probes in a row before the link counts as deaf: one could be a slow moment.
pub const PROBE_FAILURES: u32 = 2;
/// The worst case to notice a deaf WhatsApp link (it still carries bytes, so
/// [`SILENT_LINK_NOTICED`] never fires, but answers nothing): the link went deaf just after a
/// probe was answered; the next probe goes [`PROBE_EVERY`] later, and each of the
/// [`PROBE_FAILURES`] unanswered ones takes at most `PROBE_DEADLINE + PROBE_SLACK` (the next goes
/// at once; one that failed sooner is paced to [`PROBE_DEADLINE`]). 15 + 2 × 12 = 39 s. README:
/// "one that still carries bytes but answers nothing: 39 s".
pub const DEAF_LINK_NOTICED: Duration = PROBE_EVERY.saturating_add(
    PROBE_DEADLINE
        .saturating_add(PROBE_SLACK)
        .saturating_mul(PROBE_FAILURES),
);

/// The OpenClaw gateway announces a tick interval (`policy.tickIntervalMs`, 30 s by default) and
/// ticks that often; this many silent intervals in a row = a dead gateway link (one could be a
/// slow moment).
pub const GATEWAY_MISSED_TICKS: u32 = 2;

/// A capped, jittered exponential backoff on a [`Profile`]. `next_delay()` yields the delay
/// before the next attempt; `reset()` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    profile: Profile,
    attempt: u32,
    rng: fastrand::Rng,
}

/// Exponent beyond which doubling cannot matter (2^16 × any sane base exceeds any sane cap).
const MAX_EXPONENT: u32 = 16;

impl Backoff {
    /// A fresh backoff; `seed` spreads the jitter of parallel users apart.
    pub fn new(profile: Profile, seed: u64) -> Self {
        Backoff {
            profile,
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Delay before the next attempt: uniform in [ceiling/2, ceiling], where the ceiling doubles
    /// per attempt up to the cap. Half-jitter keeps attempts spread out without ever retrying
    /// instantly.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.attempt.min(MAX_EXPONENT);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self
            .profile
            .base
            .saturating_mul(1u32 << exp)
            .min(self.profile.cap);
        let ms = ceiling.as_millis() as u64;
        let half = ms / 2;
        Duration::from_millis(half + self.rng.u64(0..=ms - half))
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a success: the next failure starts again from the base.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let p = Profile {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        };
        let mut b = p.backoff(7);
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10), "{d:?} over the cap");
            assert!(d >= Duration::from_millis(250));
        }
        // Deep into the sequence the floor is cap/2.
        assert!(b.next_delay() >= Duration::from_secs(5));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    /// Every profile: the first delay is at most its base, no delay is ever over its cap or under
    /// half the base (never a spin), over many seeds and long failure streaks.
    #[test]
    fn every_profile_stays_within_its_base_and_cap() {
        for p in [LINK, RESTART, SEND, INTAKE] {
            assert!(p.base <= p.cap, "{p:?}");
            for seed in 0..200 {
                let mut b = p.backoff(seed);
                assert!(b.next_delay() <= p.base, "{p:?} seed {seed}");
                for _ in 0..40 {
                    let d = b.next_delay();
                    assert!(d <= p.cap && d >= p.base / 2, "{p:?} seed {seed}: {d:?}");
                }
            }
        }
    }

    /// README: "tried again never more than 3 s apart …; 10 s apart when WhatsApp says it is
    /// rate-limited; a wait Telegram asks for is honoured up to an hour … A reply chunk that
    /// failed is tried again at most 8 s apart." A rate limit is waited out longer than any
    /// ordinary reconnect.
    #[test]
    fn reconnect_waits_keep_the_readme_numbers() {
        assert_eq!(LINK.cap, Duration::from_secs(3));
        assert_eq!(RATE_LIMITED_WAIT, Duration::from_secs(10));
        assert!(RATE_LIMITED_WAIT > LINK.cap);
        assert_eq!(RETRY_AFTER_CAP, Duration::from_secs(3600));
        assert!(RETRY_AFTER_CAP >= RESTRICTED_WAIT && RETRY_AFTER_CAP >= RATE_LIMITED_WAIT);
        assert_eq!(SEND.cap, Duration::from_secs(8));
    }

    /// README: "a silent gateway after two of its tick intervals (60 s by default)".
    #[test]
    fn a_silent_gateway_is_dead_after_two_default_ticks() {
        use crate::agent::openclaw::proto::DEFAULT_TICK_INTERVAL;
        assert_eq!(
            DEFAULT_TICK_INTERVAL * GATEWAY_MISSED_TICKS,
            Duration::from_secs(60)
        );
    }

    /// README: "a silent link noticed within 25 s (one that still carries bytes but answers
    /// nothing: 39 s)" — derived from the numbers the transport and the probe run on.
    #[test]
    fn dead_link_budgets_are_the_readme_numbers() {
        assert_eq!(SILENT_LINK_NOTICED, Duration::from_secs(25));
        assert_eq!(DEAF_LINK_NOTICED, Duration::from_secs(39));
        // A silent link is found by the transport before the probe could.
        assert!(SILENT_LINK_NOTICED < DEAF_LINK_NOTICED);
        // A live link has at least three pings to answer before it counts as silent.
        assert!(DEAD_AFTER >= PING_EVERY * 3);
    }

    /// The promise "back within 5 s of the network healing", on a paused clock: attempts fail
    /// while the network is down (refused at once, or hung until [`CONNECT_TIMEOUT`]); the
    /// network heals at an arbitrary moment; the first attempt after it (plus a connect and
    /// login) is never later than [`HEAL_WITHIN`].
    #[tokio::test(start_paused = true)]
    async fn a_healed_network_is_used_again_within_the_promise() {
        assert_eq!(HEAL_WITHIN, Duration::from_secs(5));
        let mut worst = Duration::ZERO;
        for seed in 0..64u64 {
            for hangs in [false, true] {
                let t0 = Instant::now();
                // Down long enough to reach the cap, healing at a point of the cycle set by seed.
                let heal_at = t0 + Duration::from_secs(20) + Duration::from_millis(seed * 137);
                let mut b = LINK.backoff(seed);
                let up_at = loop {
                    let attempt = Instant::now();
                    if attempt >= heal_at {
                        break attempt + CONNECT_AND_LOGIN;
                    }
                    if hangs {
                        // A hung attempt gives way at the connect timeout, or goes through when
                        // the network heals while it waits.
                        let give_up = attempt + CONNECT_TIMEOUT;
                        if heal_at < give_up {
                            tokio::time::sleep_until(heal_at).await;
                            break Instant::now() + CONNECT_AND_LOGIN;
                        }
                        tokio::time::sleep_until(give_up).await;
                    }
                    tokio::time::sleep(b.next_delay()).await;
                };
                worst = worst.max(up_at - heal_at);
            }
        }
        assert!(worst <= HEAL_WITHIN, "back {worst:?} after the heal");
        assert!(
            worst > LINK.cap / 2,
            "the test never hit a long wait: {worst:?}"
        );
    }
}
