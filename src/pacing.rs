//! Human-like send timing for one channel account: when to start "typing…" and when to send.
//!
//! A sans-io core: the caller passes `now` in and gets instants back; this never sleeps, never reads
//! a clock, never talks to a channel. [`crate::delivery`] owns the timers and carries the plan out.
//!
//! Three rules, after the habits of a person on a phone (see the pacing anchors):
//! - a reply is preceded by typing for `min(base + per_char × length, max)`;
//! - two replies on one account are at least a random `min_gap_ms` apart, the chunks of one reply
//!   a random `chunk_gap_ms` apart;
//! - a token bucket (`global_burst` tokens, refilled at `global_per_minute`) caps the sustained
//!   send rate whatever the conversations do.
//!
//! Randomness comes from a seeded generator, so a given seed gives the same plan every time.

use crate::config::PacingConfig;
use std::time::Duration;
use tokio::time::Instant;

/// No configured delay (typing or gap) holds a send longer than this: a config typo such as
/// `typing_max_ms = 4000000` must not park replies for an hour, and it keeps `Instant` arithmetic
/// far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Bucket arithmetic is exact in integers: one token is this many units, so that a refill of
/// `per_minute` tokens per minute is exactly `per_minute` units per nanosecond.
const UNITS_PER_TOKEN: i128 = 60_000_000_000;

/// When to switch typing on and when to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub typing_at: Instant,
    pub send_at: Instant,
}

/// The pacing state of one channel account.
pub struct Pacer {
    enabled: bool,
    typing_base: Duration,
    typing_per_char: Duration,
    typing_max: Duration,
    min_gap_ms: (u64, u64),
    chunk_gap_ms: (u64, u64),
    rng: fastrand::Rng,
    last_send: Option<Instant>,
    bucket: Bucket,
}

/// Token bucket in integer units (see [`UNITS_PER_TOKEN`]).
struct Bucket {
    /// Units refilled per nanosecond (= tokens per minute).
    per_ns: i128,
    capacity: i128,
    /// May go below zero if a send happened without a token; the debt is repaid by the refill.
    units: i128,
    /// When `units` was last brought up to date.
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let ns = now.duration_since(self.at).as_nanos() as i128;
            self.units = (self.units + ns.saturating_mul(self.per_ns)).min(self.capacity);
            self.at = now;
        }
    }

    /// Earliest instant ≥ `now` at which one token is available.
    fn ready(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let deficit = UNITS_PER_TOKEN - self.units;
        if deficit <= 0 {
            return now;
        }
        // Round up so the token really is there at the returned instant.
        let ns = (deficit + self.per_ns - 1) / self.per_ns;
        let wait = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)).min(MAX_DELAY);
        now + wait
    }

    fn spend(&mut self, at: Instant) {
        self.refill(at);
        self.units -= UNITS_PER_TOKEN;
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v).min(MAX_DELAY)
}

/// A `[low, high]` pair in order, whatever the config said (config check rejects low > high).
fn range(pair: [u64; 2]) -> (u64, u64) {
    let lo = pair[0].min(MAX_DELAY.as_millis() as u64);
    let hi = pair[1].min(MAX_DELAY.as_millis() as u64);
    (lo.min(hi), lo.max(hi))
}

impl Pacer {
    pub fn new(cfg: &PacingConfig, seed: u64, now: Instant) -> Pacer {
        // Config check rejects zero; guard anyway so the bucket can always refill.
        let per_minute = i128::from(cfg.global_per_minute.max(1));
        let capacity = i128::from(cfg.global_burst.max(1)) * UNITS_PER_TOKEN;
        Pacer {
            enabled: cfg.enabled,
            typing_base: ms(cfg.typing_base_ms),
            typing_per_char: ms(cfg.typing_per_char_ms),
            typing_max: ms(cfg.typing_max_ms),
            min_gap_ms: range(cfg.min_gap_ms),
            chunk_gap_ms: range(cfg.chunk_gap_ms),
            rng: fastrand::Rng::with_seed(seed),
            last_send: None,
            bucket: Bucket {
                per_ns: per_minute,
                capacity,
                units: capacity,
                at: now,
            },
        }
    }

    /// `min(typing_base_ms + typing_per_char_ms × chars, typing_max_ms)`
    pub fn typing_for(&self, chars: usize) -> Duration {
        let per_char = self
            .typing_per_char
            .saturating_mul(u32::try_from(chars).unwrap_or(u32::MAX));
        self.typing_base
            .saturating_add(per_char)
            .min(self.typing_max)
    }

    fn gap(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(self.rng.u64(lo..=hi))
    }

    /// First chunk of a reply, ready at `now`.
    pub fn plan_first(&mut self, now: Instant, chars: usize) -> Plan {
        if !self.enabled {
            return Plan {
                typing_at: now,
                send_at: now,
            };
        }
        let gap = self.gap(self.min_gap_ms);
        let typing = self.typing_for(chars);
        let mut send_at = (now + typing).max(self.bucket.ready(now));
        if let Some(last) = self.last_send {
            send_at = send_at.max(last + gap);
        }
        let typing_at = send_at.checked_sub(typing).map_or(now, |t| t.max(now));
        Plan { typing_at, send_at }
    }

    /// A later chunk of the same reply, ready at `now` (just after the previous chunk was sent).
    pub fn plan_next_chunk(&mut self, now: Instant) -> Plan {
        if !self.enabled {
            return Plan {
                typing_at: now,
                send_at: now,
            };
        }
        let gap = self.gap(self.chunk_gap_ms);
        let mut send_at = now.max(self.bucket.ready(now));
        if let Some(last) = self.last_send {
            send_at = send_at.max(last + gap);
        }
        Plan {
            typing_at: now,
            send_at,
        }
    }

    /// A send happened at `at`: records the last send and spends one token of the global bucket.
    pub fn on_sent(&mut self, at: Instant) {
        if !self.enabled {
            return;
        }
        self.last_send = Some(self.last_send.map_or(at, |last| last.max(at)));
        self.bucket.spend(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PacingConfig {
        PacingConfig::default()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn typing_grows_with_length_up_to_the_cap() {
        let p = Pacer::new(&cfg(), 1, Instant::now());
        assert_eq!(p.typing_for(0), ms(800));
        assert_eq!(p.typing_for(10), ms(1100));
        assert_eq!(p.typing_for(100), ms(3800));
        assert_eq!(p.typing_for(107), ms(4000));
        assert_eq!(p.typing_for(108), ms(4000));
        assert_eq!(p.typing_for(usize::MAX), ms(4000));
    }

    #[test]
    fn the_first_send_waits_for_typing() {
        let t0 = Instant::now();
        let mut p = Pacer::new(&cfg(), 7, t0);
        let plan = p.plan_first(t0, 10);
        assert_eq!(plan.typing_at, t0);
        assert_eq!(plan.send_at, t0 + ms(1100));
    }

    #[test]
    fn replies_keep_a_seeded_random_min_gap() {
        let t0 = Instant::now();
        let run = |seed| {
            let mut p = Pacer::new(&cfg(), seed, t0);
            let first = p.plan_first(t0, 0);
            p.on_sent(first.send_at);
            // The next reply is ready right after the send: only the gap holds it back.
            let second = p.plan_first(first.send_at, 0);
            (first, second)
        };
        let mut gaps = Vec::new();
        for seed in 0..50 {
            let (first, second) = run(seed);
            let gap = second.send_at - first.send_at;
            assert!(
                (ms(1500)..=ms(3500)).contains(&gap),
                "seed {seed}: gap {gap:?}"
            );
            // Typing is switched on so that it ends exactly at the send.
            assert_eq!(second.typing_at, second.send_at - ms(800));
            // Same seed, same plan.
            assert_eq!(run(seed), (first, second));
            gaps.push(gap);
        }
        gaps.sort();
        gaps.dedup();
        assert!(gaps.len() > 10, "the gap is random across seeds: {gaps:?}");
    }

    #[test]
    fn a_long_typing_time_covers_the_gap() {
        let t0 = Instant::now();
        let mut p = Pacer::new(&cfg(), 3, t0);
        p.on_sent(t0);
        // 4 s of typing exceeds any 1.5–3.5 s gap: the send waits for typing, typing starts now.
        let plan = p.plan_first(t0, 500);
        assert_eq!(plan.typing_at, t0);
        assert_eq!(plan.send_at, t0 + ms(4000));
    }

    #[test]
    fn chunks_follow_with_a_chunk_gap_and_typing_stays_on() {
        let t0 = Instant::now();
        let mut p = Pacer::new(&cfg(), 11, t0);
        let mut at = p.plan_first(t0, 20).send_at;
        p.on_sent(at);
        for _ in 0..3 {
            let plan = p.plan_next_chunk(at);
            assert_eq!(plan.typing_at, at);
            let gap = plan.send_at - at;
            assert!((ms(300)..=ms(1000)).contains(&gap), "gap {gap:?}");
            at = plan.send_at;
            p.on_sent(at);
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let c = PacingConfig {
            typing_base_ms: 0,
            typing_per_char_ms: 0,
            min_gap_ms: [0, 0],
            chunk_gap_ms: [0, 0],
            global_per_minute: 6, // one token per 10 s
            global_burst: 3,
            ..cfg()
        };
        let mut p = Pacer::new(&c, 5, t0);
        // Three sends go out at once.
        for _ in 0..3 {
            let plan = p.plan_first(t0, 0);
            assert_eq!(plan.send_at, t0);
            p.on_sent(plan.send_at);
        }
        // The fourth waits for one token: 10 s.
        let plan = p.plan_first(t0, 0);
        assert_eq!(plan.send_at, t0 + Duration::from_secs(10));
        p.on_sent(plan.send_at);
        // And the next one 10 s after that, chunks included.
        let plan = p.plan_next_chunk(t0 + Duration::from_secs(10));
        assert_eq!(plan.send_at, t0 + Duration::from_secs(20));
        p.on_sent(plan.send_at);
        // After a long pause the bucket is full again, but not fuller than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            let plan = p.plan_first(later, 0);
            assert_eq!(plan.send_at, later);
            p.on_sent(plan.send_at);
        }
        assert_eq!(
            p.plan_first(later, 0).send_at,
            later + Duration::from_secs(10)
        );
    }

    #[test]
    fn disabled_pacing_sends_immediately() {
        let t0 = Instant::now();
        let c = PacingConfig {
            enabled: false,
            global_burst: 1,
            ..cfg()
        };
        let mut p = Pacer::new(&c, 9, t0);
        for _ in 0..5 {
            let plan = p.plan_first(t0, 1000);
            assert_eq!(
                plan,
                Plan {
                    typing_at: t0,
                    send_at: t0
                }
            );
            p.on_sent(t0);
            let plan = p.plan_next_chunk(t0);
            assert_eq!(
                plan,
                Plan {
                    typing_at: t0,
                    send_at: t0
                }
            );
            p.on_sent(t0);
        }
    }

    #[test]
    fn absurd_config_values_are_capped() {
        let t0 = Instant::now();
        let c = PacingConfig {
            typing_base_ms: u64::MAX,
            typing_max_ms: u64::MAX,
            min_gap_ms: [u64::MAX, 0],
            ..cfg()
        };
        let mut p = Pacer::new(&c, 1, t0);
        let plan = p.plan_first(t0, 5);
        assert_eq!(plan.send_at, t0 + MAX_DELAY);
        p.on_sent(plan.send_at);
        let next = p.plan_first(plan.send_at, 5);
        assert!(next.send_at <= plan.send_at + MAX_DELAY);
    }
}
