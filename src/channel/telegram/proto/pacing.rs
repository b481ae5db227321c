//! Telegram's own send limits and the typing repeat schedule, sans-io: given `now`, the earliest
//! instant a message to a chat may go and which chats need their next sendChatAction. Never reads
//! a clock or sleeps: the [driver](crate::channel::telegram::driver) waits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Telegram allows about one message per second in one chat.
pub const PER_CHAT_INTERVAL: Duration = Duration::from_secs(1);
/// Telegram allows about 30 messages per second over all chats.
pub const GLOBAL_PER_SECOND: usize = 30;
/// Per-chat send times kept before stale ones (older than [`PER_CHAT_INTERVAL`]) are pruned; at
/// most [`GLOBAL_PER_SECOND`] can be fresh, so the map never grows past this.
pub const MAX_TRACKED_CHATS: usize = 64;
/// Telegram shows "typing…" for about 5 s; repeat a little sooner so it never flickers off.
pub const TYPING_REPEAT: Duration = Duration::from_millis(4500);
/// Typing indicators shown at once; more are ignored (typing is best effort).
pub const MAX_TYPING_CHATS: usize = 64;
/// Typing stops on its own after this even if the core never says `on: false` (a lost turn).
pub const MAX_TYPING_DURATION: Duration = Duration::from_secs(600);

/// Telegram's own send limits, on top of the core's human pacing.
#[derive(Default, Debug)]
pub struct RateLimiter {
    last_per_chat: HashMap<String, Instant>,
    /// Send times of the last [`GLOBAL_PER_SECOND`] messages.
    recent: VecDeque<Instant>,
}

impl RateLimiter {
    /// The earliest instant a message to `chat` may go.
    pub fn ready_at(&self, chat: &str, now: Instant) -> Instant {
        let mut at = now;
        if let Some(last) = self.last_per_chat.get(chat) {
            at = at.max(*last + PER_CHAT_INTERVAL);
        }
        if self.recent.len() >= GLOBAL_PER_SECOND {
            if let Some(oldest) = self.recent.front() {
                at = at.max(*oldest + Duration::from_secs(1));
            }
        }
        at
    }

    /// A message to `chat` is going now.
    pub fn record(&mut self, chat: &str, now: Instant) {
        self.recent.push_back(now);
        while self.recent.len() > GLOBAL_PER_SECOND {
            self.recent.pop_front();
        }
        if self.last_per_chat.len() >= MAX_TRACKED_CHATS && !self.last_per_chat.contains_key(chat) {
            self.last_per_chat
                .retain(|_, t| now.saturating_duration_since(*t) < PER_CHAT_INTERVAL);
        }
        self.last_per_chat.insert(chat.to_string(), now);
    }

    /// Chats remembered (for the bound's test).
    pub fn tracked(&self) -> usize {
        self.last_per_chat.len()
    }
}

#[derive(Debug)]
struct TypingEntry {
    due: Instant,
    started: Instant,
}

/// Which chats show "typing…" and when each needs its next sendChatAction.
#[derive(Default, Debug)]
pub struct TypingSchedule {
    chats: HashMap<String, TypingEntry>,
}

impl TypingSchedule {
    /// `on`: show typing now and keep it up; `off`: stop repeating.
    pub fn set(&mut self, chat: &str, on: bool, now: Instant) {
        if !on {
            self.chats.remove(chat);
        } else if let Some(e) = self.chats.get_mut(chat) {
            e.due = now;
        } else if self.chats.len() < MAX_TYPING_CHATS {
            self.chats.insert(
                chat.to_string(),
                TypingEntry {
                    due: now,
                    started: now,
                },
            );
        }
    }

    /// When the next action is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.chats.values().map(|e| e.due).min()
    }

    /// The chats whose action is due at `now`; each is rescheduled [`TYPING_REPEAT`] later, and
    /// chats typing for longer than [`MAX_TYPING_DURATION`] are dropped.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        self.chats
            .retain(|_, e| now.saturating_duration_since(e.started) < MAX_TYPING_DURATION);
        let mut due: Vec<String> = Vec::new();
        for (chat, e) in self.chats.iter_mut() {
            if e.due <= now {
                e.due = now + TYPING_REPEAT;
                due.push(chat.clone());
            }
        }
        due.sort();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_spaces_one_chat_and_caps_the_total() {
        let t0 = Instant::now();
        let mut l = RateLimiter::default();
        assert_eq!(l.ready_at("a", t0), t0);
        l.record("a", t0);
        assert_eq!(l.ready_at("a", t0), t0 + PER_CHAT_INTERVAL);
        assert_eq!(l.ready_at("b", t0), t0);
        let mut l = RateLimiter::default();
        for i in 0..GLOBAL_PER_SECOND {
            l.record(&format!("c{i}"), t0 + Duration::from_millis(i as u64));
        }
        let now = t0 + Duration::from_millis(100);
        assert_eq!(l.ready_at("new", now), t0 + Duration::from_secs(1));
        // Many chats over time: the memory stays bounded.
        for i in 0..1000u64 {
            l.record(&format!("x{i}"), t0 + Duration::from_millis(100 * i));
        }
        assert!(l.tracked() <= MAX_TRACKED_CHATS);
    }

    #[test]
    fn typing_repeats_until_off_and_expires() {
        let t0 = Instant::now();
        let mut t = TypingSchedule::default();
        t.set("a", true, t0);
        assert_eq!(t.next_due(), Some(t0));
        assert_eq!(t.take_due(t0), vec!["a".to_string()]);
        assert_eq!(
            t.take_due(t0 + Duration::from_secs(1)),
            Vec::<String>::new()
        );
        assert_eq!(t.next_due(), Some(t0 + TYPING_REPEAT));
        assert_eq!(t.take_due(t0 + TYPING_REPEAT), vec!["a".to_string()]);
        t.set("a", false, t0 + TYPING_REPEAT);
        assert_eq!(t.next_due(), None);
        t.set("b", true, t0);
        assert!(t.take_due(t0 + MAX_TYPING_DURATION).is_empty());
        assert_eq!(t.next_due(), None);
        for i in 0..(MAX_TYPING_CHATS + 10) {
            t.set(&i.to_string(), true, t0);
        }
        assert_eq!(t.take_due(t0).len(), MAX_TYPING_CHATS);
    }
}
