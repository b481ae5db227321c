//! The repeat suppressor: a failure that repeats (a box without network retries every few
//! seconds for as long as it takes) is logged once, then at most once per [`REMINDER_EVERY`] with
//! the number of repeats left out, instead of one line per attempt — 40,000 lines a day into the
//! journal of a box whose Wi-Fi is down. A different line (another error, another state) is
//! printed at once. Used for the WhatsApp library's forwarded lines ([`crate::logging`]) and for
//! our own retry lines (WhatsApp and OpenClaw reconnects, Telegram retries, task restarts).
//!
//! A line is identified by its site (who logs it) and its text with every run of digits
//! normalised (a delay, a counter or an attempt number does not make a line new). The table has a
//! fixed capacity and holds hashes and times only: memory does not grow with uptime or with what
//! the network says. The core, [`Repeats`], is given `now`; [`admit`] and [`settled`] are the
//! process-wide table on the real clock.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A repeated line is shown again at most this often, with the count of repeats left out.
pub const REMINDER_EVERY: Duration = Duration::from_secs(10 * 60);

/// Distinct repeating lines tracked at once. A box has a handful of failing things at a time (the
/// network, one agent, a display), each logging one or two kinds of line; 32 leaves room. When
/// full, the line shown longest ago is forgotten: at worst it is shown once more, early.
pub const CAPACITY: usize = 32;

/// The site of the WhatsApp library's forwarded lines (and any other `log` crate user's).
pub const LIBRARY: &str = "library";

#[derive(Clone, Copy, Debug)]
struct Entry {
    site: u64,
    key: u64,
    shown: Instant,
    suppressed: u64,
}

/// The table: which lines were shown when, and how many repeats were left out since.
#[derive(Debug)]
pub struct Repeats {
    slots: [Option<Entry>; CAPACITY],
}

/// What to add to a line that is shown: nothing the first time, "(N more in the last M min)" on
/// a reminder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Note {
    /// Repeats left out since the line was last shown.
    pub suppressed: u64,
    /// Since when they were counted.
    pub since: Duration,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.suppressed == 0 {
            return Ok(());
        }
        write!(
            f,
            " ({} more in the last {} min)",
            self.suppressed,
            self.since.as_secs().div_ceil(60)
        )
    }
}

/// FNV-1a over the bytes, continuing from `h`.
fn fnv(mut h: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn site_hash(site: &str) -> u64 {
    fnv(FNV_START, site.bytes())
}

/// The line's identity: its text with each run of ASCII digits folded into one `#`.
fn line_hash(site: u64, line: &str) -> u64 {
    let mut prev_digit = false;
    let folded = line.bytes().filter_map(move |b| {
        let digit = b.is_ascii_digit();
        let out = match (digit, prev_digit) {
            (true, true) => None,
            (true, false) => Some(b'#'),
            (false, _) => Some(b),
        };
        prev_digit = digit;
        out
    });
    fnv(fnv(site, [0u8]), folded)
}

impl Default for Repeats {
    fn default() -> Self {
        Repeats::new()
    }
}

impl Repeats {
    pub const fn new() -> Repeats {
        Repeats {
            slots: [None; CAPACITY],
        }
    }

    /// `Some(note)`: show the line now (with the note). `None`: a repeat within
    /// [`REMINDER_EVERY`] of the last time it was shown; it is counted.
    pub fn admit(&mut self, site: &str, line: &str, now: Instant) -> Option<Note> {
        let site = site_hash(site);
        let key = line_hash(site, line);
        if let Some(e) = self.slots.iter_mut().flatten().find(|e| e.key == key) {
            let since = now.saturating_duration_since(e.shown);
            if since < REMINDER_EVERY {
                e.suppressed += 1;
                return None;
            }
            let note = Note {
                suppressed: e.suppressed,
                since,
            };
            e.shown = now;
            e.suppressed = 0;
            return Some(note);
        }
        let entry = Entry {
            site,
            key,
            shown: now,
            suppressed: 0,
        };
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            // Full: forget the line shown longest ago.
            None => self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.map(|e| e.shown))
                .map(|(i, _)| i)
                .unwrap_or(0),
        };
        self.slots[slot] = Some(entry);
        Some(Note::default())
    }

    /// The trouble at `site` is over (it connected, it ran well): its next failure is news and is
    /// shown at once.
    pub fn settled(&mut self, site: &str) {
        let site = site_hash(site);
        for slot in &mut self.slots {
            if slot.is_some_and(|e| e.site == site) {
                *slot = None;
            }
        }
    }

    /// Lines tracked now (tests).
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static TABLE: Mutex<Repeats> = Mutex::new(Repeats::new());

fn table() -> std::sync::MutexGuard<'static, Repeats> {
    // A panic elsewhere while holding the lock leaves plain data that is still valid.
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`Repeats::admit`] on the process-wide table, now.
pub fn admit(site: &str, line: &str) -> Option<Note> {
    table().admit(site, line, Instant::now())
}

/// [`Repeats::settled`] on the process-wide table.
pub fn settled(site: &str) {
    table().settled(site)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_repeat_is_shown_once_then_reminded_with_its_count() {
        let mut r = Repeats::new();
        let t0 = Instant::now();
        let line = "Failed to connect: failed to resolve app version. Will retry...";
        assert_eq!(r.admit(LIBRARY, line, t0), Some(Note::default()));
        // Every 2 s for just under ten minutes: all left out.
        let mut t = t0;
        let mut left_out = 0;
        while t + 2 * S < t0 + REMINDER_EVERY {
            t += 2 * S;
            assert_eq!(r.admit(LIBRARY, line, t), None, "at {:?}", t - t0);
            left_out += 1;
        }
        let note = r.admit(LIBRARY, line, t0 + REMINDER_EVERY).unwrap();
        assert_eq!(note.suppressed, left_out);
        assert_eq!(
            note.to_string(),
            format!(" ({left_out} more in the last 10 min)")
        );
        // The count starts again from the reminder.
        assert_eq!(r.admit(LIBRARY, line, t0 + REMINDER_EVERY + S), None);
        let again = r.admit(LIBRARY, line, t0 + 2 * REMINDER_EVERY).unwrap();
        assert_eq!(again.suppressed, 1);
    }

    #[test]
    fn a_different_line_is_a_change_and_shown_at_once() {
        let mut r = Repeats::new();
        let t0 = Instant::now();
        assert!(r.admit("whatsapp", "cannot resolve the name", t0).is_some());
        assert!(
            r.admit("whatsapp", "cannot resolve the name", t0 + S)
                .is_none()
        );
        assert!(
            r.admit("whatsapp", "connection refused", t0 + 2 * S)
                .is_some()
        );
        // The same words from another site are another line.
        assert!(
            r.admit("telegram", "connection refused", t0 + 3 * S)
                .is_some()
        );
        assert!(
            r.admit("whatsapp", "connection refused", t0 + 4 * S)
                .is_none()
        );
    }

    #[test]
    fn numbers_do_not_make_a_line_new() {
        let mut r = Repeats::new();
        let t0 = Instant::now();
        assert!(r.admit("t", "retry 1 in 450 ms", t0).is_some());
        assert!(r.admit("t", "retry 2 in 2900 ms", t0 + S).is_none());
        assert!(
            r.admit("t", "retry 3 in 3000 ms (os error 111)", t0 + S)
                .is_some()
        );
    }

    #[test]
    fn settled_makes_the_next_failure_news() {
        let mut r = Repeats::new();
        let t0 = Instant::now();
        assert!(r.admit("whatsapp", "lost", t0).is_some());
        assert!(r.admit("library", "lost", t0).is_some());
        assert!(r.admit("whatsapp", "lost", t0 + S).is_none());
        r.settled("whatsapp");
        assert_eq!(
            r.admit("whatsapp", "lost", t0 + 2 * S),
            Some(Note::default())
        );
        // Only that site's lines were forgotten.
        assert!(r.admit("library", "lost", t0 + 2 * S).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let mut r = Repeats::new();
        let t0 = Instant::now();
        for i in 0..CAPACITY {
            let line =
                format!("error kind {}", char::from(b'a' + (i % 26) as u8)) + &"!".repeat(i / 26);
            assert!(r.admit("s", &line, t0 + S * i as u32).is_some());
        }
        assert_eq!(r.len(), CAPACITY);
        assert!(r.admit("s", "one more kind", t0 + 100 * S).is_some());
        assert_eq!(r.len(), CAPACITY, "still bounded");
        // The oldest ("error kind a") was forgotten and is news again; the newest is remembered.
        assert!(r.admit("s", "one more kind", t0 + 101 * S).is_none());
        assert!(r.admit("s", "error kind a", t0 + 102 * S).is_some());
    }
}
