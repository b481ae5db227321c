//! The server's refusals of our sent messages (nacks): what each `error` code of the `<ack>` to a
//! message means, and what becomes of the reply — sent again soon, sent again after the chat's
//! Signal sessions are rebuilt (fresh devices and keys), or given up with a line for the owner —
//! with a bounded number of refusals per message, so no code makes a reply loop.
//!
//! Sans-io: codes and counts in, decisions out; no client, no clock beyond the `now` passed in.
//! Codes as the open clients name them: whatsapp-rust 0.7.0 `client/node_io.rs`
//! (`take_ack_waiter`: 463 MissingTcToken, 479 SmaxInvalid), wacore `protocol/nack.rs`
//! (`NackReason`, WA Web's `NackFromStanza`), whatsmeow #859 (479 sending to a LID without a
//! mapping), Baileys #2441 (463: a restriction that retrying does not lift at once).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// Refusals of one message (one id) before its reply is given up whatever the code says: a
/// refusal the server keeps repeating is not transient, and the owner should hear of it within a
/// minute rather than after a day of silent retries (the send backoff is 1–8 s).
pub const MAX_REFUSALS: u32 = 4;
/// Message ids whose refusals are remembered at once (delivery sends one chunk at a time per
/// channel, so a handful are live); the oldest is forgotten beyond this.
pub const MAX_TRACKED: usize = 256;
/// A message not refused again within this is forgotten (its retries are long over).
pub const TRACK_TTL: Duration = Duration::from_secs(3600);

/// Our own code for a send the server accepted that reached none of the recipient's devices:
/// whatsapp-rust 0.7.0 sends a DM whose every recipient device failed to encrypt (no session, no
/// key bundle) to our own devices alone, the server acks it and `send` returns Ok (#1298, fixed
/// after 0.7.0 by #1299). Counted and decided like a refusal.
pub const UNREACHED: &str = "unreached";

/// What a refusal code means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The server failed or is busy: send the same message again later.
    Transient,
    /// Our view of the chat is stale (addressing, devices, an old Signal counter): rebuild the
    /// chat's sessions (devices and keys fetched again) and send again.
    Refresh,
    /// The account is restricted towards this chat for now (no trusted-contact token, new chats
    /// capped): try again a few times, then give up and tell the owner.
    Restricted,
    /// The message will never be accepted (malformed, unknown recipient, unsupported): give up.
    Rejected,
}

/// The code's class and what it means, in words for the log and status lines.
pub fn classify(code: &str) -> (Class, &'static str) {
    match code {
        "408" => (Class::Transient, "the server timed out"),
        "429" => (Class::Transient, "rate limited"),
        "500" => (Class::Transient, "internal server error"),
        "503" => (Class::Transient, "service unavailable"),
        "552" => (Class::Transient, "server database failure"),
        "421" => (Class::Refresh, "stale addressing mode"),
        UNREACHED => (
            Class::Transient,
            "accepted, but encrypted for none of the recipient's devices",
        ),
        "479" => (
            Class::Refresh,
            "stanza rejected as malformed (stale address)",
        ),
        "496" => (Class::Refresh, "old Signal counter"),
        "463" => (Class::Restricted, "missing trusted-contact token"),
        "475" => (Class::Restricted, "new chats capped for this account"),
        "400" => (Class::Rejected, "bad request"),
        "403" => (Class::Rejected, "forbidden"),
        "404" => (Class::Rejected, "recipient not found"),
        "406" => (Class::Rejected, "not acceptable"),
        "487" | "488" | "489" | "490" | "491" => (Class::Rejected, "stanza not understood"),
        "499" => (Class::Rejected, "message deleted on the recipient's side"),
        "551" => (Class::Rejected, "unsupported LID group"),
        _ => (Class::Rejected, "unknown refusal"),
    }
}

/// What to do with the reply after a refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the same message (same id) again after the usual backoff.
    Retry { why: String },
    /// Rebuild the chat's Signal sessions, then send the same message again.
    RefreshThenRetry { why: String },
    /// Give the reply up; `why` is the owner's line.
    GiveUp { why: String },
}

/// Refusals per message id, bounded in count and age.
#[derive(Debug, Default)]
pub struct Refusals {
    seen: HashMap<String, (u32, Instant)>,
    order: VecDeque<String>,
}

impl Refusals {
    /// The server refused message `id` with `code` at `now`: what to do.
    pub fn on_nack(&mut self, id: &str, code: &str, now: Instant) -> Decision {
        self.expire(now);
        let n = match self.seen.get_mut(id) {
            Some((n, at)) => {
                *n = n.saturating_add(1);
                *at = now;
                *n
            }
            None => {
                self.seen.insert(id.to_string(), (1, now));
                self.order.push_back(id.to_string());
                while self.order.len() > MAX_TRACKED {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
                1
            }
        };
        let (class, meaning) = classify(code);
        let why = format!("WhatsApp refused the message (error {code}: {meaning})");
        if class == Class::Rejected {
            return Decision::GiveUp { why };
        }
        if n >= MAX_REFUSALS {
            self.forget(id);
            return Decision::GiveUp {
                why: format!("{why}, {n} times; giving up"),
            };
        }
        match class {
            Class::Refresh => Decision::RefreshThenRetry { why },
            _ => Decision::Retry { why },
        }
    }

    /// Message `id` was accepted (or given up): its count goes.
    pub fn forget(&mut self, id: &str) {
        if self.seen.remove(id).is_some() {
            self.order.retain(|o| o != id);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(old) = self.order.front() {
            match self.seen.get(old) {
                Some((_, at)) if now.saturating_duration_since(*at) < TRACK_TTL => break,
                _ => {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the open clients name, and what becomes of the reply on its first refusal.
    #[test]
    fn each_code_is_classified() {
        let table: &[(&str, Class)] = &[
            ("408", Class::Transient),
            ("429", Class::Transient),
            ("500", Class::Transient),
            ("503", Class::Transient),
            ("552", Class::Transient),
            ("421", Class::Refresh),
            (UNREACHED, Class::Transient),
            ("479", Class::Refresh),
            ("496", Class::Refresh),
            ("463", Class::Restricted),
            ("475", Class::Restricted),
            ("400", Class::Rejected),
            ("403", Class::Rejected),
            ("404", Class::Rejected),
            ("406", Class::Rejected),
            ("487", Class::Rejected),
            ("491", Class::Rejected),
            ("499", Class::Rejected),
            ("551", Class::Rejected),
            ("777", Class::Rejected),
            ("", Class::Rejected),
        ];
        let now = Instant::now();
        for (code, class) in table {
            assert_eq!(classify(code).0, *class, "{code}");
            let d = Refusals::default().on_nack("3EB0A", code, now);
            let want = match class {
                Class::Transient | Class::Restricted => matches!(d, Decision::Retry { .. }),
                Class::Refresh => matches!(d, Decision::RefreshThenRetry { .. }),
                Class::Rejected => matches!(d, Decision::GiveUp { .. }),
            };
            assert!(want, "{code}: {d:?}");
            let why = match d {
                Decision::Retry { why }
                | Decision::RefreshThenRetry { why }
                | Decision::GiveUp { why } => why,
            };
            assert!(why.contains(&format!("error {code}")), "{why}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_refusal_is_given_up_after_the_bound_whatever_the_code() {
        for code in ["500", "421", "463"] {
            let mut r = Refusals::default();
            let now = Instant::now();
            for _ in 1..MAX_REFUSALS {
                assert!(!matches!(
                    r.on_nack("id", code, now),
                    Decision::GiveUp { .. }
                ));
            }
            match r.on_nack("id", code, now) {
                Decision::GiveUp { why } => assert!(why.contains("giving up"), "{why}"),
                d => panic!("{code}: {d:?}"),
            }
            assert!(r.is_empty(), "forgotten once given up");
            // Another message starts its own count.
            assert!(matches!(
                r.on_nack("other", code, now),
                Decision::Retry { .. } | Decision::RefreshThenRetry { .. }
            ));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counts_are_per_message_bounded_and_expire() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        r.on_nack("a", "500", t0);
        r.forget("a");
        assert!(r.is_empty());
        for i in 0..MAX_TRACKED + 10 {
            r.on_nack(&format!("m{i}"), "500", t0);
        }
        assert_eq!(r.len(), MAX_TRACKED);
        tokio::time::advance(TRACK_TTL + Duration::from_secs(1)).await;
        r.on_nack("late", "500", Instant::now());
        assert_eq!(r.len(), 1, "old counts expired");
        // A refusal after the TTL starts a fresh count.
        let mut r = Refusals::default();
        for _ in 1..MAX_REFUSALS {
            r.on_nack("x", "500", t0);
        }
        let later = t0 + TRACK_TTL + Duration::from_secs(1);
        assert!(matches!(
            r.on_nack("x", "500", later),
            Decision::Retry { .. }
        ));
    }
}
