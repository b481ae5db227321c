//! Soak with faults: the real binary carries WhatsApp and Telegram traffic from several contacts
//! while a seeded random schedule resets, blackholes, slows and cuts each link in turn. Proves every
//! accepted message is answered exactly once, every healed link is back within 5 s (p99; never past
//! 60 s), and memory stays flat. Some WhatsApp blackholes outlast dead-link detection: each of
//! those must have been noticed (the box gave the silent connection up and a new one logged in
//! after the heal), and a run long enough to hold one always has one. A WhatsApp reconnect is a
//! new connection's login after the heal, never the old connection resuming. CLAWBOX_SOAK_SECS
//! sets the length (default: a short CI run), CLAWBOX_SOAK_SEED replays a schedule. Owns no
//! product code; figures go to `QA soak:` lines.

use kit::support;

use std::time::Duration;
use support::faultproxy::{FaultProxy, Mode};
use support::rig::{self, Chan, Options, Rig, Tally, percentile};
use tokio::time::Instant;

/// Length of the CI run when CLAWBOX_SOAK_SECS is unset.
const CI_SECS: u64 = 45;
/// Gap between two inbound messages (both channels together).
const SEND_EVERY: Duration = Duration::from_millis(250);
/// Chats per channel the traffic is spread over.
const SOAK_CHATS: usize = 8;
/// A link stays healthy this long (ms range) between faults.
const HEALTHY_MS: (u64, u64) = (2_000, 6_000);
const HEALTHY_MS_MAX: Duration = Duration::from_millis(HEALTHY_MS.1);
/// A fault lasts this long (ms range); past the longest backoff cap so the cap is exercised.
const FAULT_MS: (u64, u64) = (1_000, 8_000);
/// The worst case of the WhatsApp keepalive probe ([`clawbox::retry::DEAF_LINK_NOTICED`]: a probe
/// every 15 s, then 2 unanswered probes of 10 s + 2 s slack = 39 s). It is the backstop for a link
/// that still carries bytes; a silent (blackholed) link is noticed sooner, by the transport's
/// WebSocket check (`dead_link_bound`). (This said 55 s, from a 10 s pause per probe the code never
/// had, until the retry policy was gathered in src/retry.rs.)
const PROBE_WORST: Duration = clawbox::retry::DEAF_LINK_NOTICED;
/// A WhatsApp blackhole longer than `dead_link_bound` by this must have been noticed: timers on a
/// loaded 2-core machine slip, but not by seconds.
const DETECT_MARGIN: Duration = Duration::from_secs(5);
/// One WhatsApp blackhole in this many is drawn long (past detection); each costs up to a minute.
const LONG_BLACKHOLE_ONE_IN: u8 = 4;
/// Slack between a fault's planned end and the end of the run.
const END_SLACK: Duration = Duration::from_secs(1);
/// The longest a WhatsApp fault other than a long blackhole holds the link before the next fault
/// can start: a cut waits up to 10 s for server bytes, then a healthy spell.
const NEXT_FAULT_WITHIN: Duration = Duration::from_millis(10_000 + HEALTHY_MS.1);
/// After a heal, a WhatsApp link whose old connection is still logged in and carries bytes again
/// this long after it counts as resumed (a blackhole shorter than detection). A connection the box
/// had given up is detached within milliseconds of the heal (the proxy passes its FIN on).
const RESUME_SETTLE: Duration = Duration::from_secs(2);
/// Reconnect after a heal: the promise (p99) and the hard limit (max).
const RECONNECT_P99: Duration = Duration::from_secs(5);
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// RSS sampled this often.
const RSS_EVERY: Duration = Duration::from_secs(1);
/// RSS "start" is taken after this warm-up (connections, caches, allocator arenas settle).
const WARMUP: Duration = Duration::from_secs(8);
/// End RSS may exceed start by at most this: allocator noise, not growth with traffic.
const RSS_GROWTH_BOUND_KIB: u64 = 4 * 1024;
/// WhatsApp inboxes are read this often (the fake keeps a bounded inbox per contact).
const COLLECT_EVERY: Duration = Duration::from_secs(2);
/// After the last fault heals: time for every message to be answered.
const DRAIN: Duration = Duration::from_secs(60);
/// After every message is answered: time for a duplicate to show up, if one were coming.
const DUP_WATCH: Duration = Duration::from_secs(3);

/// How long a silent WhatsApp link can go unnoticed at most: the transport's WebSocket check
/// declares it dead after `DEAD_AFTER` without a frame, looked at every `PING_EVERY` (25 s; the
/// README's "a silent link noticed within 25 s").
fn dead_link_bound() -> Duration {
    clawbox::retry::SILENT_LINK_NOTICED
}

/// Long WhatsApp blackholes: from past detection (with its margin) to past the probe's backstop.
fn long_blackhole() -> (Duration, Duration) {
    (
        dead_link_bound() + DETECT_MARGIN,
        PROBE_WORST + DETECT_MARGIN,
    )
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Healthy {
        until: Instant,
    },
    Faulted {
        kind: Mode,
        from: Instant,
        until: Instant,
        /// The WhatsApp connection logged in when the fault began.
        old_conn: Option<u64>,
    },
    /// Healed at `since` after a fault of `length`; waiting for the link to carry bytes again.
    Healing {
        since: Instant,
        kind: Mode,
        length: Duration,
        old_conn: Option<u64>,
    },
    /// A cut is armed; the link healed when it happened.
    Cutting {
        armed: Instant,
        old_conn: Option<u64>,
    },
}

/// How a WhatsApp blackhole ended.
#[derive(Clone, Copy, Debug)]
struct Blackhole {
    length: Duration,
    /// Some(time from the heal to the new connection's login) when the box had noticed the dead
    /// link and reconnected; None when the old connection simply carried on.
    reconnect: Option<Duration>,
}

struct Link {
    chan: Chan,
    phase: Phase,
    reconnects: Vec<Duration>,
    faults: Vec<String>,
    blackholes: Vec<Blackhole>,
    long_drawn: bool,
}

fn pick(rng: &mut fastrand::Rng, (lo, hi): (u64, u64)) -> Duration {
    Duration::from_millis(rng.u64(lo..=hi))
}

fn pick_between(rng: &mut fastrand::Rng, (lo, hi): (Duration, Duration)) -> Duration {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.u64(ms(lo)..=ms(hi)))
}

/// True when the WhatsApp link must now take a blackhole past dead-link detection: the run can
/// still hold one, has not had one, and the next chance might not fit.
fn long_blackhole_due(link: &Link, left: Duration) -> bool {
    let lo = long_blackhole().0;
    link.chan == Chan::WhatsApp
        && !link.long_drawn
        && left >= lo + END_SLACK
        && left < lo + END_SLACK + NEXT_FAULT_WITHIN
}

/// How long the next WhatsApp blackhole lasts: one in `LONG_BLACKHOLE_ONE_IN` (and any that is
/// due) past dead-link detection, cut to end before the run does; the others a usual fault.
fn whatsapp_blackhole_len(rng: &mut fastrand::Rng, link: &mut Link, left: Duration) -> Duration {
    let (lo, hi) = long_blackhole();
    let fits = left >= lo + END_SLACK;
    if fits && (long_blackhole_due(link, left) || rng.u8(0..LONG_BLACKHOLE_ONE_IN) == 0) {
        link.long_drawn = true;
        return pick_between(rng, (lo, hi)).min(left - END_SLACK);
    }
    pick(rng, FAULT_MS)
}

fn proxy(rig: &Rig, chan: Chan) -> &FaultProxy {
    match chan {
        Chan::WhatsApp => rig.wa_proxy(),
        Chan::Telegram => rig.tg_proxy(),
    }
}

/// How a healed link came back.
enum Back {
    /// A new connection (WhatsApp: a login after the heal; Telegram: bytes again), this long after.
    Reconnected(Duration),
    /// WhatsApp only: the connection from before the fault carried on (it was never given up).
    Resumed,
}

/// Whether the link healed at `since` is back, and how.
async fn link_back(
    rig: &Rig,
    chan: Chan,
    kind: Mode,
    since: Instant,
    old_conn: Option<u64>,
    now: Instant,
) -> Option<Back> {
    let px = proxy(rig, chan);
    match chan {
        Chan::Telegram => px
            .delivered_since(since)
            .then(|| Back::Reconnected(now - since)),
        Chan::WhatsApp => {
            if let Some(login) = rig.wa().login_after(since).await {
                return Some(Back::Reconnected(login.at - since));
            }
            let resumed = kind == Mode::Blackhole
                && now - since >= RESUME_SETTLE
                && px.delivered_since(since)
                && old_conn.is_some()
                && rig.wa().state().await.conn == old_conn;
            resumed.then_some(Back::Resumed)
        }
    }
}

async fn step(rig: &Rig, link: &mut Link, rng: &mut fastrand::Rng, now: Instant, end: Instant) {
    let px = proxy(rig, link.chan);
    let conn = || async {
        match link.chan {
            Chan::WhatsApp => rig.wa().state().await.conn,
            Chan::Telegram => None,
        }
    };
    link.phase = match link.phase {
        Phase::Healthy { until } if now >= until => {
            let left = end.saturating_duration_since(now);
            let kind = match rng.u8(0..4) {
                _ if long_blackhole_due(link, left) => Mode::Blackhole,
                0 => Mode::Reset,
                1 => Mode::Blackhole,
                2 => Mode::Latency(Duration::from_millis(rng.u64(20..=400))),
                _ => Mode::CutMidFrame,
            };
            let old_conn = conn().await;
            link.faults.push(format!("{kind:?}"));
            px.set(kind);
            if kind == Mode::CutMidFrame {
                Phase::Cutting {
                    armed: now,
                    old_conn,
                }
            } else {
                let length = if kind == Mode::Blackhole && link.chan == Chan::WhatsApp {
                    whatsapp_blackhole_len(rng, link, left)
                } else {
                    pick(rng, FAULT_MS)
                };
                Phase::Faulted {
                    kind,
                    from: now,
                    until: now + length,
                    old_conn,
                }
            }
        }
        Phase::Faulted {
            kind,
            from,
            until,
            old_conn,
        } if now >= until => {
            px.pass();
            Phase::Healing {
                since: now,
                kind,
                length: now - from,
                old_conn,
            }
        }
        Phase::Cutting { armed, old_conn } => {
            if px.mode() != Mode::CutMidFrame {
                // The cut happened (the proxy is back to passing): measure from now.
                Phase::Healing {
                    since: now,
                    kind: Mode::CutMidFrame,
                    length: Duration::ZERO,
                    old_conn,
                }
            } else if now - armed > Duration::from_secs(10) {
                // No server bytes for the cut to take: nothing broke.
                px.pass();
                Phase::Healthy {
                    until: now + pick(rng, HEALTHY_MS),
                }
            } else {
                link.phase
            }
        }
        Phase::Healing {
            since,
            kind,
            length,
            old_conn,
        } => {
            let latency_only = matches!(kind, Mode::Latency(_));
            let back = if latency_only {
                Some(Back::Resumed)
            } else {
                link_back(rig, link.chan, kind, since, old_conn, now).await
            };
            if let Some(back) = back {
                let reconnect = match back {
                    Back::Reconnected(d) => Some(d),
                    Back::Resumed => None,
                };
                if let Some(d) = reconnect {
                    link.reconnects.push(d);
                }
                if kind == Mode::Blackhole && link.chan == Chan::WhatsApp {
                    link.blackholes.push(Blackhole { length, reconnect });
                }
                Phase::Healthy {
                    until: now + pick(rng, HEALTHY_MS),
                }
            } else {
                assert!(
                    now - since <= RECONNECT_MAX,
                    "{} link not back {RECONNECT_MAX:?} after healing a {kind:?}\n{:#?}",
                    link.chan.name(),
                    rig.all_stderr()
                );
                link.phase
            }
        }
        p => p,
    };
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_random_faults_answers_everything_once() {
    let _alone = support::alone::alone().await;
    let secs_total: u64 = std::env::var("CLAWBOX_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_SECS);
    let seed: u64 = std::env::var("CLAWBOX_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("QA soak: seed={seed} duration={secs_total}s (CLAWBOX_SOAK_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);

    // Traffic spread over several chats, as a box sees it: each chat's share (4 msg/s over 16 chats,
    // 0.25 msg/s) stays well under Telegram's one message per second per chat even with each link
    // down about half the time — at 3 chats (0.67/s each) the replies owed grew for as long as the
    // soak ran and 10 minutes left 173 unsent at the end.
    let mut rig = Rig::up(Options {
        wa_contacts: SOAK_CHATS,
        tg_users: SOAK_CHATS,
        ..Options::default()
    })
    .await;
    rig.wait_wa_connected(rig::SETTLE)
        .await
        .expect("WhatsApp connected at start");

    let start = Instant::now();
    let end = start + Duration::from_secs(secs_total);
    let mut links = [Chan::WhatsApp, Chan::Telegram].map(|chan| Link {
        chan,
        phase: Phase::Healthy {
            until: start + pick(&mut rng, HEALTHY_MS),
        },
        reconnects: Vec::new(),
        faults: Vec::new(),
        blackholes: Vec::new(),
        long_drawn: false,
    });
    let mut rss: Vec<(Instant, u64)> = Vec::new();
    let mut rss_start: Option<u64> = None;
    let mut next_send = start;
    let mut next_rss = start;
    let mut next_collect = start;
    let mut n = 0usize;
    loop {
        let now = Instant::now();
        let faulting = now < end;
        if faulting {
            for link in links.iter_mut() {
                step(&rig, link, &mut rng, now, end).await;
            }
        } else {
            // The run is over: heal everything and let the last measurements finish.
            for link in links.iter_mut() {
                match link.phase {
                    Phase::Faulted {
                        kind,
                        from,
                        old_conn,
                        ..
                    } => {
                        proxy(&rig, link.chan).pass();
                        link.phase = Phase::Healing {
                            since: now,
                            kind,
                            length: now - from,
                            old_conn,
                        };
                    }
                    Phase::Cutting { .. } => {
                        proxy(&rig, link.chan).pass();
                        link.phase = Phase::Healthy { until: now };
                    }
                    Phase::Healing { .. } => step(&rig, link, &mut rng, now, end).await,
                    Phase::Healthy { .. } => {}
                }
            }
            if links
                .iter()
                .all(|l| matches!(l.phase, Phase::Healthy { .. }))
            {
                break;
            }
        }
        if faulting && now >= next_send {
            next_send += SEND_EVERY;
            n += 1;
            if rng.bool() {
                // Accepted = the fake took it for delivery (it queues while the box is away).
                let _ = rig.send_wa(rng.usize(..rig.wa_contacts.len())).await;
            } else {
                rig.send_tg(rng.usize(..rig.tg_users.len()));
            }
        }
        if now >= next_rss {
            next_rss += RSS_EVERY;
            if let Some(kib) = rig.rss_kib() {
                rss.push((now, kib));
                if rss_start.is_none() && now - start >= WARMUP {
                    rss_start = Some(kib);
                }
            }
        }
        if now >= next_collect {
            next_collect += COLLECT_EVERY;
            rig.collect_wa().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = rig.inbound.len();
    assert!(sent >= n / 2, "traffic was sent ({sent} of {n})");

    // Everything answered, then a window for duplicates.
    let counts = rig.wait_all_answered(DRAIN).await;
    tokio::time::sleep(DUP_WATCH).await;
    let counts_after = rig.reply_counts().await;
    let rss_end = rig.rss_kib().expect("the daemon is alive");
    let rss_max = rss
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or(rss_end)
        .max(rss_end);
    let rss_start = rss_start.unwrap_or_else(|| rss.first().map(|r| r.1).unwrap_or(rss_end));

    let tally = Tally::of(&mut rig, &counts_after).await;

    let mut all = Vec::new();
    for l in &links {
        all.extend(l.reconnects.iter().copied());
        println!(
            "QA soak: {} faults={} ({}) reconnect p50={} p99={} max={} (n={})",
            l.chan.name(),
            l.faults.len(),
            summarize(&l.faults),
            secs(percentile(&l.reconnects, 50.0)),
            secs(percentile(&l.reconnects, 99.0)),
            secs(percentile(&l.reconnects, 100.0)),
            l.reconnects.len()
        );
    }
    // WhatsApp blackholes: those past dead-link detection, and what the shorter ones did.
    let bound = dead_link_bound();
    let wa_holes = &links[0].blackholes;
    let long: Vec<&Blackhole> = wa_holes
        .iter()
        .filter(|b| b.length >= bound + DETECT_MARGIN)
        .collect();
    let missed: Vec<&&Blackhole> = long.iter().filter(|b| b.reconnect.is_none()).collect();
    let long_back: Vec<Duration> = long.iter().filter_map(|b| b.reconnect).collect();
    let short = wa_holes.len() - long.len();
    let short_resumed = wa_holes
        .iter()
        .filter(|b| b.length < bound + DETECT_MARGIN && b.reconnect.is_none())
        .count();
    println!(
        "QA soak: whatsapp blackholes={}: {} past the {}s dead-link bound (+{}s margin; longest {}), {} of them noticed by the box (new connection logged in {} p50 / {} max after the heal); {} shorter: {} resumed on the same connection, {} reconnected",
        wa_holes.len(),
        long.len(),
        bound.as_secs(),
        DETECT_MARGIN.as_secs(),
        secs(long.iter().map(|b| b.length).max().unwrap_or_default()),
        long.len() - missed.len(),
        secs(percentile(&long_back, 50.0)),
        secs(percentile(&long_back, 100.0)),
        short,
        short_resumed,
        short - short_resumed,
    );
    let mib = |k: u64| format!("{:.1}MiB", k as f64 / 1024.0);
    println!(
        "QA soak: reconnect p50={} p99={} max={} (n={}); rss start={} end={} max={}; {} messages; {}",
        secs(percentile(&all, 50.0)),
        secs(percentile(&all, 99.0)),
        secs(percentile(&all, 100.0)),
        all.len(),
        mib(rss_start),
        mib(rss_end),
        mib(rss_max),
        sent,
        tally.line(),
    );
    assert_eq!(counts.len(), counts_after.len());
    if !(tally.lost.is_empty() && tally.dup.is_empty() && tally.unknowable == [0, 0]) {
        println!("QA logs kept: {}", Tally::keep_logs(&rig, "tally"));
    }
    tally.assert_exactly_once();
    assert!(!all.is_empty(), "some fault broke a link and was measured");
    assert!(
        missed.is_empty(),
        "WhatsApp blackholes past the {bound:?} dead-link bound that the box never noticed (its old connection carried on): {missed:?}"
    );
    if Duration::from_secs(secs_total) >= long_blackhole().0 + HEALTHY_MS_MAX + END_SLACK {
        assert!(
            !long.is_empty(),
            "the run could hold a WhatsApp blackhole past dead-link detection but had none: {wa_holes:?}"
        );
    }
    assert!(
        percentile(&all, 100.0) <= RECONNECT_MAX,
        "a link took longer than {RECONNECT_MAX:?}"
    );
    assert!(
        percentile(&all, 99.0) <= RECONNECT_P99,
        "reconnect p99 over {RECONNECT_P99:?}: {all:?}"
    );
    assert!(
        rss_end <= rss_start + RSS_GROWTH_BOUND_KIB,
        "RSS grew: start={rss_start} KiB end={rss_end} KiB"
    );
    let h = rig.health().await;
    assert!(h.contains("whatsapp") && h.contains("telegram"), "{h}");
    rig.stop().await;
}

fn summarize(faults: &[String]) -> String {
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in faults {
        let k = f.split('(').next().unwrap_or(f);
        *kinds.entry(k).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
