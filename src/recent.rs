//! Recent group context: per group, the messages the assistant was not addressed in since it was
//! last addressed there, so an addressed "what do you think?" reaches the agent with what it is
//! about. Held in memory only: a busy group the box is not addressed in costs no write at all
//! (and a restart forgets the context, which only makes the next answer less informed).
//!
//! Bounded three ways: lines per group, bytes per group, groups. A message that is taken as
//! context is a line `[<sender name>] <text>`; an addressed message takes a snapshot of its
//! group's lines into its stored text ([`crate::turn_text`]) and, once that is accepted, the
//! lines up to the snapshot are forgotten (the agent has seen them; its answer follows).

use crate::vocab::ChannelKind;
use std::collections::{HashMap, VecDeque};

/// Lines kept per group: "the last N messages" of the issue; about a screenful of chat, enough
/// for the agent to follow a thread without paying for a long transcript on every turn.
pub const MAX_LINES: usize = 20;
/// Bytes of text kept per group: bounds the prompt growth (and memory) whatever the lines hold.
pub const MAX_BYTES: usize = 8 * 1024;
/// Longest single line, in bytes: one pasted essay must not push out every other line.
pub const MAX_LINE_BYTES: usize = 1024;
/// Groups with context at once; the least recently touched is forgotten first. 64 × 8 KiB is
/// at most half a MiB, on a box whose idle RSS target is 10 MiB only in the worst case.
pub const MAX_GROUPS: usize = 64;

/// One remembered message.
#[derive(Debug, Clone)]
struct Line {
    serial: u64,
    /// The message's id on its channel: a redelivered message is not remembered twice.
    id: String,
    text: String,
}

#[derive(Debug, Default)]
struct Group {
    lines: VecDeque<Line>,
    bytes: usize,
    touched: u64,
}

/// What an addressed message took from its group's context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The lines, oldest first.
    pub lines: Vec<String>,
    /// Forget up to here once the message is accepted.
    pub upto: u64,
}

/// Every group's recent context.
#[derive(Debug, Default)]
pub struct Recent {
    groups: HashMap<(ChannelKind, String), Group>,
    serial: u64,
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn cut_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Recent {
    /// Remembers `line` (already formatted) said in `chat` as message `id`.
    pub fn remember(&mut self, channel: ChannelKind, chat: &str, id: &str, line: &str) {
        self.serial += 1;
        let serial = self.serial;
        let key = (channel, chat.to_string());
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            let oldest = self
                .groups
                .iter()
                .min_by_key(|(_, g)| g.touched)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.groups.remove(&k);
            }
        }
        let g = self.groups.entry(key).or_default();
        g.touched = serial;
        if g.lines.iter().any(|l| l.id == id) {
            return;
        }
        let text = cut_bytes(line, MAX_LINE_BYTES);
        g.bytes += text.len();
        g.lines.push_back(Line {
            serial,
            id: id.to_string(),
            text,
        });
        while g.lines.len() > MAX_LINES || g.bytes > MAX_BYTES {
            match g.lines.pop_front() {
                Some(l) => g.bytes -= l.text.len(),
                None => break,
            }
        }
    }

    /// The context an addressed message in `chat` carries: the lines after `after` (the `upto`
    /// of a snapshot an earlier message of the same batch took, not yet consumed; else 0).
    pub fn snapshot(&self, channel: ChannelKind, chat: &str, after: u64) -> Snapshot {
        match self.groups.get(&(channel, chat.to_string())) {
            None => Snapshot::default(),
            Some(g) => {
                let lines: Vec<&Line> = g.lines.iter().filter(|l| l.serial > after).collect();
                Snapshot {
                    upto: lines.last().map_or(0, |l| l.serial),
                    lines: lines.into_iter().map(|l| l.text.clone()).collect(),
                }
            }
        }
    }

    /// The message that carried `snap` was accepted: its lines are the agent's now.
    pub fn consume(&mut self, channel: ChannelKind, chat: &str, upto: u64) {
        let key = (channel, chat.to_string());
        let Some(g) = self.groups.get_mut(&key) else {
            return;
        };
        while g.lines.front().is_some_and(|l| l.serial <= upto) {
            if let Some(l) = g.lines.pop_front() {
                g.bytes -= l.text.len();
            }
        }
        if g.lines.is_empty() {
            self.groups.remove(&key);
        }
    }

    /// Groups holding context (for tests and the status of memory use).
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const T: ChannelKind = ChannelKind::Telegram;

    #[test]
    fn lines_are_bounded_by_count_and_bytes_and_deduped() {
        let mut r = Recent::default();
        for i in 0..30 {
            r.remember(T, "-1", &i.to_string(), &format!("[A] {i}"));
        }
        r.remember(T, "-1", "29", "[A] 29");
        let s = r.snapshot(T, "-1", 0);
        assert_eq!(s.lines.len(), MAX_LINES);
        assert_eq!(s.lines.first().unwrap(), "[A] 10");
        assert_eq!(s.lines.last().unwrap(), "[A] 29");
        let big = "x".repeat(5000);
        for i in 0..20 {
            r.remember(T, "-2", &i.to_string(), &big);
        }
        let s = r.snapshot(T, "-2", 0);
        let bytes: usize = s.lines.iter().map(String::len).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert!(s.lines.iter().all(|l| l.len() <= MAX_LINE_BYTES));
        assert_eq!(s.lines.len(), MAX_BYTES / MAX_LINE_BYTES);
    }

    #[test]
    fn consuming_forgets_only_what_the_snapshot_held() {
        let mut r = Recent::default();
        r.remember(T, "-1", "1", "[A] one");
        r.remember(T, "-1", "2", "[B] two");
        let s = r.snapshot(T, "-1", 0);
        assert_eq!(s.lines, vec!["[A] one", "[B] two"]);
        r.remember(T, "-1", "3", "[C] three");
        // A second addressed message of the same batch gets only what came after the first's.
        assert_eq!(r.snapshot(T, "-1", s.upto).lines, vec!["[C] three"]);
        assert_eq!(r.snapshot(T, "-1", u64::MAX), Snapshot::default());
        r.consume(T, "-1", s.upto);
        assert_eq!(r.snapshot(T, "-1", 0).lines, vec!["[C] three"]);
        r.consume(T, "-1", u64::MAX);
        assert_eq!(r.groups(), 0);
        assert_eq!(r.snapshot(T, "-1", 0), Snapshot::default());
    }

    #[test]
    fn groups_are_bounded_least_recent_first() {
        let mut r = Recent::default();
        for g in 0..MAX_GROUPS {
            r.remember(T, &format!("-{g}"), "1", "x");
        }
        r.remember(T, "-0", "2", "y");
        r.remember(T, "-new", "1", "z");
        assert_eq!(r.groups(), MAX_GROUPS);
        assert!(
            r.snapshot(T, "-1", 0).lines.is_empty(),
            "-1 was the least recent"
        );
        assert_eq!(r.snapshot(T, "-0", 0).lines.len(), 2);
        assert_eq!(r.snapshot(ChannelKind::WhatsApp, "-0", 0).lines.len(), 0);
    }

    #[test]
    fn cutting_keeps_characters_whole() {
        assert_eq!(cut_bytes("abc", 10), "abc");
        let c = cut_bytes(&"é".repeat(100), 10);
        assert!(c.len() <= 10 && c.ends_with('…'), "{c}");
    }
}
