//! The sans-io core of WhatsApp identities: one person has a phone number (PN) and a LID, and a
//! message may name them by either. This file owns what to look up and when: the `allow_from`
//! entries to resolve after a login (all of them at most once a day, the unresolved ones at most
//! every [`RETRY_UNRESOLVED_AFTER`]), the budget of lookups for unknown LIDs (a small token
//! bucket, each LID once the server answered), and the two address forms of a sender handed to the policy.
//!
//! No sockets, no clock (`now` is passed in), no client: [`super::identity`] is the shell that
//! asks the server (usync) and reads the library's LID↔PN mapping, which the library persists in
//! our store ([`super::storage`]: `lid/` and `pn/` rows) — that table is the cache. Never decides
//! who may talk to the assistant (the policy does, on both forms).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// A full re-resolution of `allow_from` at most this often: a person's LID is stable; the daily
/// pass only catches a number that moved to another account.
pub const REFRESH_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// Entries that did not resolve (not on WhatsApp, the server did not answer) are asked again at
/// most this often, so a link that reconnects every few seconds in an outage does not ask each
/// time.
pub const RETRY_UNRESOLVED_AFTER: Duration = Duration::from_secs(10 * 60);
/// Lookups of unknown LIDs that may go out at once: a few strangers writing at the same moment.
pub const LOOKUP_BURST: u32 = 3;
/// One more lookup of an unknown LID is allowed this often: a flood of strangers costs WhatsApp
/// at most one usync query a minute (a LID seen before is never asked again, see
/// [`MAX_LOOKED_UP`]).
pub const LOOKUP_REFILL: Duration = Duration::from_secs(60);
/// LIDs remembered as already looked up (the oldest forgotten beyond): each unknown LID is asked
/// about once, and a stranger writing again costs nothing.
pub const MAX_LOOKED_UP: usize = 4096;
/// How long a message waits for the lookup of its unknown LID before it is judged without it
/// (the client's receive path waits meanwhile).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// `allow_from` entries resolved per usync query (WhatsApp Web batches its contact sync queries
/// in pages of this order).
pub const RESOLVE_BATCH: usize = 256;

/// One `allow_from` entry as WhatsApp addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A phone number: digits, no `+`.
    Pn(String),
    /// A LID: digits, no `@lid`.
    Lid(String),
}

impl Entry {
    /// `+<digits>` or `<digits>@lid` (as `config check` admits them); anything else is None.
    pub fn parse(s: &str) -> Option<Entry> {
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if let Some(d) = s.strip_prefix('+') {
            digits(d).then(|| Entry::Pn(d.to_string()))
        } else if let Some(d) = s.strip_suffix("@lid") {
            digits(d).then(|| Entry::Lid(d.to_string()))
        } else {
            None
        }
    }

    /// The entry's JID string (`<digits>@s.whatsapp.net` or `<digits>@lid`).
    pub fn jid(&self) -> String {
        match self {
            Entry::Pn(d) => format!("{d}@s.whatsapp.net"),
            Entry::Lid(d) => format!("{d}@lid"),
        }
    }
}

/// Which `allow_from` entries to look up now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub entries: Vec<Entry>,
    /// Every entry is asked (the daily refresh): when it succeeds, its time is saved.
    pub full: bool,
}

/// Decides the lookups of `allow_from` after each login.
#[derive(Debug, Default)]
pub struct Resolver {
    /// When a lookup last went out (this process).
    last_attempt: Option<Instant>,
}

impl Resolver {
    /// Whether a lookup went out less than [`RETRY_UNRESOLVED_AFTER`] ago: [`Resolver::plan`]
    /// then asks nothing, so a caller on the message path can skip the work before it.
    pub fn recent(&self, now: Instant) -> bool {
        self.last_attempt
            .is_some_and(|t| now.saturating_duration_since(t) < RETRY_UNRESOLVED_AFTER)
    }

    /// After a login: all `entries` when the last full refresh (`since_full`: how long ago, None
    /// if never) is [`REFRESH_EVERY`] old, else those `resolved` says have no mapping — unless a
    /// lookup went out less than [`RETRY_UNRESOLVED_AFTER`] ago. Records the attempt.
    pub fn plan(
        &mut self,
        entries: &[Entry],
        resolved: impl Fn(&Entry) -> bool,
        since_full: Option<Duration>,
        now: Instant,
    ) -> Plan {
        if entries.is_empty() {
            return Plan::default();
        }
        let recent = self.recent(now);
        let stale = since_full.is_none_or(|d| d >= REFRESH_EVERY);
        let plan = if stale && !recent {
            Plan {
                entries: entries.to_vec(),
                full: true,
            }
        } else if recent {
            Plan::default()
        } else {
            Plan {
                entries: entries.iter().filter(|e| !resolved(e)).cloned().collect(),
                full: false,
            }
        };
        if !plan.entries.is_empty() {
            self.last_attempt = Some(now);
        }
        plan
    }
}

/// The budget of lookups for LIDs with no known number: a token bucket ([`LOOKUP_BURST`],
/// one more every [`LOOKUP_REFILL`]) and the LIDs already asked about.
#[derive(Debug)]
pub struct Lookups {
    tokens: u32,
    refilled: Instant,
    asked: HashSet<String>,
    order: VecDeque<String>,
}

impl Lookups {
    pub fn new(now: Instant) -> Lookups {
        Lookups {
            tokens: LOOKUP_BURST,
            refilled: now,
            asked: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// May `lid` (user part) be looked up now? Not once the server answered about it
    /// ([`Lookups::answered`]), and only while the bucket has a token (taken).
    pub fn admit(&mut self, lid: &str, now: Instant) -> bool {
        let gained =
            now.saturating_duration_since(self.refilled).as_secs() / LOOKUP_REFILL.as_secs();
        if gained >= u64::from(LOOKUP_BURST) {
            self.tokens = LOOKUP_BURST;
            self.refilled = now;
        } else if gained > 0 {
            // Below LOOKUP_BURST, so the casts are exact.
            self.tokens = LOOKUP_BURST.min(self.tokens + gained as u32);
            self.refilled += LOOKUP_REFILL * gained as u32;
        }
        if self.tokens == 0 || self.asked.contains(lid) {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// The server answered the lookup of `lid` (with or without a number): it is not asked
    /// again. A lookup that failed (no answer) leaves the LID to a later message, token
    /// permitting.
    pub fn answered(&mut self, lid: &str) {
        if self.asked.contains(lid) {
            return;
        }
        if self.order.len() >= MAX_LOOKED_UP
            && let Some(old) = self.order.pop_front()
        {
            self.asked.remove(&old);
        }
        self.asked.insert(lid.to_string());
        self.order.push_back(lid.to_string());
    }
}

/// A sender's two address forms as the policy sees them: `(sender, sender_alt)`. The number
/// (`+<digits>`) when known, with the LID (`<digits>@lid`) as the alternate; the LID alone when
/// the number is not known.
pub fn forms(pn: Option<&str>, lid: Option<&str>) -> Option<(String, Option<String>)> {
    let e164 = pn.and_then(super::adapter::e164);
    let lid = lid.filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    match (e164, lid) {
        (Some(n), l) => Some((n, l.map(|l| format!("{l}@lid")))),
        (None, Some(l)) => Some((format!("{l}@lid"), None)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pn(d: &str) -> Entry {
        Entry::Pn(d.into())
    }

    #[test]
    fn entries_parse_from_both_forms() {
        assert_eq!(Entry::parse("+491701111111"), Some(pn("491701111111")));
        assert_eq!(
            Entry::parse("123456789012345@lid"),
            Some(Entry::Lid("123456789012345".into()))
        );
        for bad in [
            "491701111111",
            "+",
            "@lid",
            "12a@lid",
            "+49 170",
            "x@s.whatsapp.net",
        ] {
            assert_eq!(Entry::parse(bad), None, "{bad}");
        }
        assert_eq!(pn("4917").jid(), "4917@s.whatsapp.net");
        assert_eq!(Entry::Lid("12".into()).jid(), "12@lid");
    }

    /// First login: everything (the refresh). Later logins the same day: nothing when all are
    /// resolved, the misses otherwise — but not more often than every RETRY_UNRESOLVED_AFTER.
    /// A day later: everything again.
    #[test]
    fn allow_from_is_resolved_daily_and_on_a_miss_not_on_every_login() {
        let t0 = Instant::now();
        let entries = [pn("1"), pn("2"), Entry::Lid("9".into())];
        let mut r = Resolver::default();
        let p = r.plan(&entries, |_| false, None, t0);
        assert!(p.full);
        assert_eq!(p.entries.len(), 3);
        // A reconnect a few seconds later: no lookup, even for a miss.
        let p = r.plan(
            &entries,
            |e| *e != pn("2"),
            Some(Duration::ZERO),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(p, Plan::default());
        // Later the same day: only the miss.
        let t1 = t0 + RETRY_UNRESOLVED_AFTER;
        let p = r.plan(
            &entries,
            |e| *e != pn("2"),
            Some(RETRY_UNRESOLVED_AFTER),
            t1,
        );
        assert_eq!(p.entries, vec![pn("2")]);
        assert!(!p.full);
        // All resolved: nothing, however long since the last attempt (within the day).
        let t2 = t1 + RETRY_UNRESOLVED_AFTER * 3;
        let since = t2 - t0;
        assert_eq!(r.plan(&entries, |_| true, Some(since), t2), Plan::default());
        // A day after the full refresh: all again.
        let t3 = t0 + REFRESH_EVERY;
        let p = r.plan(&entries, |_| true, Some(REFRESH_EVERY), t3);
        assert!(p.full && p.entries.len() == 3);
        // No entries: nothing ever.
        assert_eq!(
            Resolver::default().plan(&[], |_| false, None, t0),
            Plan::default()
        );
    }

    /// A flood of unknown LIDs: at most LOOKUP_BURST at once, then one per LOOKUP_REFILL; a LID
    /// already asked about is never asked again.
    #[test]
    fn unknown_lid_lookups_are_bounded_and_once_each() {
        // A lookup the server answers, as the shell does it.
        fn ask(l: &mut Lookups, lid: &str, now: Instant) -> bool {
            let ok = l.admit(lid, now);
            if ok {
                l.answered(lid);
            }
            ok
        }
        let t0 = Instant::now();
        let mut l = Lookups::new(t0);
        let admitted = (0..50)
            .filter(|i| ask(&mut l, &format!("2000{i}"), t0))
            .count();
        assert_eq!(admitted, LOOKUP_BURST as usize);
        assert!(
            !ask(&mut l, "20000", t0 + LOOKUP_REFILL * 10),
            "asked once already"
        );
        // The bucket refilled meanwhile (to the burst, not beyond).
        let t1 = t0 + LOOKUP_REFILL * 10;
        let admitted = (100..150)
            .filter(|i| ask(&mut l, &format!("2000{i}"), t1))
            .count();
        assert_eq!(admitted, LOOKUP_BURST as usize);
        assert!(!ask(&mut l, "3000", t1 + LOOKUP_REFILL / 2));
        assert!(ask(&mut l, "3000", t1 + LOOKUP_REFILL));
        // A lookup that got no answer may be made again for a later message (token permitting).
        let t2 = t1 + LOOKUP_REFILL * 10;
        assert!(l.admit("4000", t2));
        assert!(l.admit("4000", t2), "not answered: asked again");
        // Over an hour of a steady flood: the burst plus one a minute.
        let mut l = Lookups::new(t0);
        let mut n = 0;
        for s in 0..3600u64 {
            if ask(&mut l, &format!("9{s}"), t0 + Duration::from_secs(s)) {
                n += 1;
            }
        }
        assert_eq!(n, LOOKUP_BURST as usize + 59);
    }

    #[test]
    fn the_memory_of_asked_lids_is_bounded() {
        let t0 = Instant::now();
        let mut l = Lookups::new(t0);
        let mut t = t0;
        for i in 0..(MAX_LOOKED_UP + 1) {
            t += LOOKUP_REFILL;
            assert!(l.admit(&format!("{i}"), t));
            l.answered(&format!("{i}"));
        }
        assert_eq!(l.asked.len(), MAX_LOOKED_UP);
        assert!(l.admit("0", t + LOOKUP_REFILL), "the oldest was forgotten");
    }

    #[test]
    fn a_sender_is_named_by_number_with_its_lid_beside() {
        assert_eq!(
            forms(Some("491701111111"), Some("200000000000001")),
            Some(("+491701111111".into(), Some("200000000000001@lid".into())))
        );
        assert_eq!(
            forms(Some("491701111111"), None),
            Some(("+491701111111".into(), None))
        );
        assert_eq!(
            forms(None, Some("200000000000001")),
            Some(("200000000000001@lid".into(), None))
        );
        assert_eq!(forms(None, None), None);
        assert_eq!(forms(Some("x"), Some("y")), None);
    }
}
