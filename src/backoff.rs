//! The one retry policy: capped exponential backoff with full jitter.
//!
//! Used by the supervisor (task restarts), the channels (reconnects) and the agents. Pure: the caller
//! owns the clock and the sleeping; this only says how long.

use std::time::Duration;

/// A capped, jittered exponential backoff. `next()` yields the delay before the next attempt;
/// `reset()` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

/// Exponent beyond which doubling cannot matter (2^16 × any sane base exceeds any sane cap).
const MAX_EXPONENT: u32 = 16;

impl Backoff {
    /// `base` is the first delay's upper bound, `cap` the largest delay ever returned.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Delay before the next attempt: uniform in [ceiling/2, ceiling], where the ceiling doubles
    /// per attempt up to `cap`. Half-jitter keeps attempts spread out without ever retrying instantly.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.attempt.min(MAX_EXPONENT);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let ms = ceiling.as_millis() as u64;
        let half = ms / 2;
        Duration::from_millis(half + self.rng.u64(0..=ms - half))
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10), 7);
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
}
