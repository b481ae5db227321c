//! Is the box's clock right? TLS certificates and WhatsApp's signed timestamps need it, and a Pi
//! has no battery clock: after every boot the time comes from the network or is wrong.
//!
//! Two kinds of evidence: what the system's time service says ([`system_sync`]: systemd-timesyncd's
//! `/run/systemd/timesync/synchronized`), and the `Date` header of real answers from Telegram and
//! WhatsApp ([`reading`]): a measured offset, which wins over any flag. [`verdict`] is pure, so each case is tested without a wrong clock.
//! Never sets the clock (that is the time service's job).

use super::{Check, NAME_CLOCK};
use std::time::{Duration, SystemTime};

/// systemd-timesyncd's run directory: there while it runs.
const TIMESYNCD_DIR: &str = "/run/systemd/timesync";
/// In [`TIMESYNCD_DIR`], touched by timesyncd once the clock is synchronised.
const TIMESYNCD_FLAG: &str = "synchronized";
/// An offset this large is drift, not measurement noise (`Date` has whole seconds, and the
/// answer's own latency adds up to a second or two): the time service is not keeping up.
pub const WARN_OFFSET: Duration = Duration::from_secs(10);
/// An offset this large breaks things: TLS session tickets and certificates near their edges,
/// and the signed timestamps of WhatsApp's login tolerate a few minutes at most.
pub const FAIL_OFFSET: Duration = Duration::from_secs(300);

/// What the system's time service says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Synchronised, according to the named source.
    Yes(&'static str),
    /// Not synchronised (yet), according to the named source.
    No(&'static str),
    /// No time service could be asked (a container, no systemd).
    Unknown,
}

/// A server's clock against ours: `offset_s` = its time − ours, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub source: String,
    pub offset_s: i64,
}

/// A reading from an HTTP `Date` header (RFC 9110 IMF-fixdate) received at `local` (our clock
/// when the answer arrived); None when the header is not a date.
pub fn reading(source: &str, date: &str, local: SystemTime) -> Option<Reading> {
    let server = httpdate::parse_http_date(date.trim()).ok()?;
    let offset_s = match server.duration_since(local) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
        Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
    };
    Some(Reading {
        source: source.to_string(),
        offset_s,
    })
}

/// Asks the system's time service: systemd-timesyncd (Debian's and Raspberry Pi OS's) keeps
/// [`TIMESYNCD_FLAG`] from its first synchronisation on. `timedatectl` would answer for chrony
/// too, but running it would link std's process spawning (31 KiB) for what the `Date` readings
/// measure better.
pub fn system_sync() -> Sync {
    system_sync_in(std::path::Path::new(TIMESYNCD_DIR))
}

/// [`system_sync`] with timesyncd's run directory given.
fn system_sync_in(dir: &std::path::Path) -> Sync {
    if dir.join(TIMESYNCD_FLAG).exists() {
        Sync::Yes("systemd-timesyncd")
    } else if dir.is_dir() {
        // timesyncd runs and has not reached a time server yet.
        Sync::No("systemd-timesyncd")
    } else {
        Sync::Unknown
    }
}

/// Whether a TLS failure is the clock's fault: a certificate "not valid yet" or "expired" for a
/// clock that is far off.
pub fn is_certificate_time_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("notvalidyet") || m.contains("not valid yet") || m.contains("expired")
}

/// "2 h 5 min", "45 s", "3 days".
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86_400),
    }
}

const FIX_SYNC: &str = "turn network time on: sudo timedatectl set-ntp true (systemd-timesyncd; \
    chrony or ntpd work too) and let UDP port 123 out; a Pi has no battery clock and needs it \
    after every boot";

/// The clock's line from the readings, the time service's flag, and a TLS failure that blamed a
/// certificate's dates (`certificate_time`).
pub fn verdict(readings: &[Reading], sync: Sync, certificate_time: Option<&str>) -> Check {
    let worst = readings.iter().max_by_key(|r| r.offset_s.unsigned_abs());
    let sync_words = match sync {
        Sync::Yes(src) => format!("{src}: synchronised"),
        Sync::No(src) => format!("{src}: NOT synchronised"),
        Sync::Unknown => "no time service to ask".to_string(),
    };
    if let Some(r) = worst {
        let off = Duration::from_secs(r.offset_s.unsigned_abs());
        let way = if r.offset_s > 0 { "behind" } else { "ahead of" };
        let said = format!(
            "this box's clock is {} {way} {} (its Date header); {sync_words}",
            span(off),
            r.source
        );
        if off >= FAIL_OFFSET {
            return Check::fail(
                NAME_CLOCK,
                format!("{said}: TLS and WhatsApp's login need the right time"),
                FIX_SYNC,
            );
        }
        if off >= WARN_OFFSET {
            return Check::warn(NAME_CLOCK, said, FIX_SYNC);
        }
        let sources: Vec<&str> = readings.iter().map(|r| r.source.as_str()).collect();
        let right = format!(
            "right to the second against {} (Date header); {sync_words}",
            sources.join(", ")
        );
        return match sync {
            // Right now, but nothing keeps it right: the next boot starts from a wrong time.
            Sync::No(_) => Check::warn(NAME_CLOCK, right, FIX_SYNC),
            _ => Check::ok(NAME_CLOCK, right),
        };
    }
    if let Some(e) = certificate_time {
        return Check::fail(
            NAME_CLOCK,
            format!("a server's certificate is out of date for this clock ({e}); {sync_words}"),
            FIX_SYNC,
        );
    }
    match sync {
        Sync::Yes(_) => Check::ok(NAME_CLOCK, sync_words),
        Sync::No(_) => Check::warn(NAME_CLOCK, sync_words, FIX_SYNC),
        Sync::Unknown => Check::warn(
            NAME_CLOCK,
            "cannot tell: no time service to ask, and no server's Date was read",
            "make WhatsApp or Telegram reachable (see their lines), or turn network time on: \
             sudo timedatectl set-ntp true",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    fn at(offset_s: i64) -> Reading {
        Reading {
            source: "api.telegram.org".into(),
            offset_s,
        }
    }

    #[test]
    fn a_date_header_gives_the_offset_both_ways() {
        let local = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let r = reading("x", "Sun, 06 Nov 1994 10:49:37 GMT", local).unwrap();
        assert_eq!(r.offset_s, 7200);
        let r = reading("x", "Sun, 06 Nov 1994 08:48:37 GMT", local).unwrap();
        assert_eq!(r.offset_s, -60);
        assert_eq!(reading("x", "yesterday", local), None);
        assert_eq!(reading("x", "", local), None);
    }

    #[test]
    fn a_measured_offset_decides_and_says_how_far_and_which_way() {
        let c = verdict(&[at(2 * 3600)], Sync::Unknown, None);
        assert_eq!(c.level, Level::Fail);
        assert!(
            c.summary
                .contains("2 h 0 min behind api.telegram.org (its Date header)"),
            "{}",
            c.summary
        );
        assert!(
            c.fix
                .as_deref()
                .unwrap()
                .contains("timedatectl set-ntp true")
        );
        // Even a time service that says "synchronised" is overruled by a real measurement.
        let c = verdict(&[at(-400)], Sync::Yes("systemd-timesyncd"), None);
        assert_eq!(c.level, Level::Fail);
        assert!(c.summary.contains("6 min ahead of"), "{}", c.summary);
        assert_eq!(verdict(&[at(30)], Sync::Unknown, None).level, Level::Warn);
        // Within the noise of a whole-second header: right.
        let c = verdict(&[at(1)], Sync::Unknown, None);
        assert_eq!(c.level, Level::Ok, "{}", c.summary);
        // The worst of several servers counts.
        assert_eq!(
            verdict(&[at(0), at(9999)], Sync::Unknown, None).level,
            Level::Fail
        );
    }

    #[test]
    fn without_a_measurement_the_time_service_decides() {
        assert_eq!(
            verdict(&[], Sync::Yes("systemd-timesyncd"), None).level,
            Level::Ok
        );
        assert_eq!(
            verdict(&[], Sync::No("systemd-timesyncd"), None).level,
            Level::Warn
        );
        assert_eq!(verdict(&[], Sync::Unknown, None).level, Level::Warn);
        // Right now but unsynchronised: the next boot of a Pi starts wrong.
        assert_eq!(
            verdict(&[at(0)], Sync::No("systemd-timesyncd"), None).level,
            Level::Warn
        );
        // A certificate "not valid yet" with no date read: the clock is the suspect.
        let c = verdict(
            &[],
            Sync::Unknown,
            Some("invalid peer certificate: NotValidYet"),
        );
        assert_eq!(c.level, Level::Fail);
        assert!(is_certificate_time_error(
            "invalid peer certificate: NotValidYet"
        ));
        assert!(is_certificate_time_error("certificate expired"));
        assert!(!is_certificate_time_error("UnknownIssuer"));
    }

    #[test]
    fn timesyncd_says_synchronised_not_yet_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("timesync");
        assert_eq!(system_sync_in(&run), Sync::Unknown);
        std::fs::create_dir(&run).unwrap();
        assert_eq!(system_sync_in(&run), Sync::No("systemd-timesyncd"));
        std::fs::write(run.join(TIMESYNCD_FLAG), b"").unwrap();
        assert_eq!(system_sync_in(&run), Sync::Yes("systemd-timesyncd"));
    }

    #[test]
    fn spans_read_like_a_person_says_them() {
        assert_eq!(span(Duration::from_secs(45)), "45 s");
        assert_eq!(span(Duration::from_secs(600)), "10 min");
        assert_eq!(span(Duration::from_secs(7500)), "2 h 5 min");
        assert_eq!(span(Duration::from_secs(3 * 86_400 + 5)), "3 days");
    }
}
