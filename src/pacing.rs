//! Human-like send timing (interim: the full version lands from its own branch).

use crate::config::PacingConfig;
use std::time::Duration;
use tokio::time::Instant;

pub struct Plan {
    pub typing_at: Instant,
    pub send_at: Instant,
}

pub struct Pacer {
    cfg: PacingConfig,
}

impl Pacer {
    pub fn new(cfg: &PacingConfig, _seed: u64, _now: Instant) -> Pacer {
        Pacer { cfg: cfg.clone() }
    }
    pub fn typing_for(&self, chars: usize) -> Duration {
        let ms = self
            .cfg
            .typing_base_ms
            .saturating_add(self.cfg.typing_per_char_ms.saturating_mul(chars as u64));
        Duration::from_millis(ms.min(self.cfg.typing_max_ms))
    }
    pub fn plan_first(&mut self, now: Instant, _chars: usize) -> Plan {
        Plan {
            typing_at: now,
            send_at: now,
        }
    }
    pub fn plan_next_chunk(&mut self, now: Instant) -> Plan {
        Plan {
            typing_at: now,
            send_at: now,
        }
    }
    pub fn on_sent(&mut self, _at: Instant) {}
}
