//! A whole box for system tests: the fake WhatsApp (paired once by QR), the fake Telegram Bot API
//! and the fake OpenAI server (or the built-in echo agent), each behind its own [`FaultProxy`],
//! plus the real `clawbox run` binary on a temp state dir with a /healthz port. Helpers kill -9 and
//! restart it on the same state, read /metrics, `clawbox status` and VmRSS, send traffic from N
//! contacts on both channels and tally every raw delivery the fakes recorded per (channel, chat,
//! inbound token, reply part) so a test can check exactly-once. Owns no assertion policy (the test
//! files decide what passes) and never reaches beyond 127.0.0.1.

use super::faultproxy::FaultProxy;
use super::{Proc, SOON, free_port, http_get, spawn};
use crate::fakes::openai::{FakeConfig, FakeOpenAi};
use crate::fakes::telegram::FakeTelegram;
use crate::fakes::whatsapp::{Addressing, FakeWhatsApp};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The bot token the fake Telegram accepts.
pub const TG_TOKEN: &str = "123456:RIG-token_abc";
/// First WhatsApp contact number; contact i is this + i.
const WA_CONTACT_BASE: u64 = 15_550_100_000;
/// First Telegram user id; user i (chatting in its private chat, same id) is this + i.
const TG_USER_BASE: i64 = 900_001;
/// Long-poll hold the box asks Telegram for: short, so a poll cut by a fault is renewed soon.
pub const TG_POLL_TIMEOUT_S: u64 = 2;
/// Bound on one `clawbox status` run.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chan {
    WhatsApp,
    Telegram,
}

impl Chan {
    pub fn name(self) -> &'static str {
        match self {
            Chan::WhatsApp => "whatsapp",
            Chan::Telegram => "telegram",
        }
    }
}

pub enum Agent {
    Echo,
    OpenAi(FakeConfig),
}

pub struct Options {
    pub whatsapp: bool,
    pub telegram: bool,
    pub agent: Agent,
    /// WhatsApp contacts on the allowlist.
    pub wa_contacts: usize,
    /// Telegram users on the allowlist, each in its own private chat.
    pub tg_users: usize,
    /// Pacing as shipped (typing, gaps, send budget); off by default to keep tests short.
    pub pacing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            whatsapp: true,
            telegram: true,
            agent: Agent::Echo,
            wa_contacts: 3,
            tg_users: 3,
            pacing: false,
        }
    }
}

/// One inbound message the test sent: where, its token (the text carries `[token]`), when.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub chan: Chan,
    pub chat: String,
    pub token: String,
    pub at: Instant,
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub cfg: PathBuf,
    pub health_port: u16,
    pub wa: Option<FakeWhatsApp>,
    pub wa_proxy: Option<FaultProxy>,
    pub tg: Option<FakeTelegram>,
    pub tg_proxy: Option<FaultProxy>,
    pub ai: Option<FakeOpenAi>,
    pub ai_proxy: Option<FaultProxy>,
    pub proc: Option<Proc>,
    pub wa_contacts: Vec<String>,
    pub tg_users: Vec<i64>,
    /// stderr of every `clawbox run` that ended (kill -9 or stop), for counting log lines.
    pub past_stderr: Vec<String>,
    pub inbound: Vec<Inbound>,
    /// Every WhatsApp delivery the fake's contacts recorded so far, each once (by its delivery
    /// sequence), per contact: (message id, text).
    wa_raw: HashMap<String, Vec<(String, String)>>,
    /// Per contact: the next delivery sequence not yet taken.
    wa_next: HashMap<String, u64>,
    next_token: u64,
    /// Times the daemon was started.
    pub starts: u64,
}

impl Rig {
    /// Starts the fakes and their proxies and writes the config; pairs nothing, runs nothing.
    pub async fn new(opts: Options) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let health_port = free_port();
        let mut cfg = format!(
            "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{health_port}\"\n",
            dir.path().join("state").display()
        );
        if !opts.pacing {
            cfg.push_str("[pacing]\nenabled = false\n");
        }
        let (ai, ai_proxy) = match opts.agent {
            Agent::Echo => (None, None),
            Agent::OpenAi(c) => {
                let ai = FakeOpenAi::start(c).await;
                let px = FaultProxy::start(ai.addr()).await;
                cfg.push_str(&format!(
                    "[agents.ai]\nkind = \"openai\"\nurl = \"http://{}/v1\"\nmodel = \"m\"\n",
                    px.addr()
                ));
                (Some(ai), Some(px))
            }
        };
        let wa_contacts: Vec<String> = (0..opts.wa_contacts)
            .map(|i| format!("+{}", WA_CONTACT_BASE + i as u64))
            .collect();
        let tg_users: Vec<i64> = (0..opts.tg_users)
            .map(|i| TG_USER_BASE + i as i64)
            .collect();
        let (wa, wa_proxy) = if opts.whatsapp {
            let wa = FakeWhatsApp::start().await;
            let px = FaultProxy::start(wa.ws_addr()).await;
            let allow: Vec<String> = wa_contacts.iter().map(|c| format!("\"{c}\"")).collect();
            cfg.push_str(&format!(
                "[channels.whatsapp]\nserver_url = \"ws://{}{}\"\nallow_from = [{}]\n",
                px.addr(),
                crate::fakes::whatsapp::WS_PATH,
                allow.join(", ")
            ));
            (Some(wa), Some(px))
        } else {
            cfg.push_str("[channels.whatsapp]\nenabled = false\n");
            (None, None)
        };
        let (tg, tg_proxy) = if opts.telegram {
            let tg = FakeTelegram::start(TG_TOKEN).await;
            let addr: std::net::SocketAddr =
                tg.api_root().trim_start_matches("http://").parse().unwrap();
            let px = FaultProxy::start(addr).await;
            super::write_secret(dir.path().join("tg.token"), TG_TOKEN);
            let allow: Vec<String> = tg_users.iter().map(|u| u.to_string()).collect();
            cfg.push_str(&format!(
                "[channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [{}]\n\
                 api_root = \"http://{}\"\npoll_timeout_s = {TG_POLL_TIMEOUT_S}\n",
                allow.join(", "),
                px.addr()
            ));
            (Some(tg), Some(px))
        } else {
            (None, None)
        };
        let path = dir.path().join("clawbox.toml");
        std::fs::write(&path, cfg).unwrap();
        Rig {
            dir,
            cfg: path,
            health_port,
            wa,
            wa_proxy,
            tg,
            tg_proxy,
            ai,
            ai_proxy,
            proc: None,
            wa_contacts,
            tg_users,
            past_stderr: Vec::new(),
            inbound: Vec::new(),
            wa_raw: HashMap::new(),
            wa_next: HashMap::new(),
            next_token: 0,
            starts: 0,
        }
    }

    /// [`Rig::new`], then pairing by QR (when WhatsApp is on), then `clawbox run`, connected.
    pub async fn up(opts: Options) -> Rig {
        let mut rig = Rig::new(opts).await;
        if rig.wa.is_some() {
            rig.pair().await;
        }
        rig.run().await;
        rig
    }

    pub fn wa(&self) -> &FakeWhatsApp {
        self.wa.as_ref().expect("rig without WhatsApp")
    }
    pub fn tg(&self) -> &FakeTelegram {
        self.tg.as_ref().expect("rig without Telegram")
    }
    pub fn wa_proxy(&self) -> &FaultProxy {
        self.wa_proxy.as_ref().expect("rig without WhatsApp")
    }
    pub fn tg_proxy(&self) -> &FaultProxy {
        self.tg_proxy.as_ref().expect("rig without Telegram")
    }

    pub fn args<'a>(&'a self, cmd: &'a [&'a str]) -> Vec<&'a str> {
        let mut v = cmd.to_vec();
        v.extend_from_slice(&["--config", self.cfg.to_str().unwrap()]);
        v
    }

    // ---- pairing ---------------------------------------------------------------------------

    /// Starts `clawbox pair whatsapp` (no wait).
    pub fn spawn_pair(&self) -> Proc {
        spawn(&self.args(&["pair", "whatsapp"]), &[], self.dir.path())
    }

    /// Pairs by QR: the phone scans, the command exits 0 saying "linked".
    pub async fn pair(&self) {
        let mut p = self.spawn_pair();
        let qr = super::wait_qr(&p).await;
        self.wa().scan(&qr).await.unwrap();
        assert_eq!(
            p.exit_code().await,
            Some(0),
            "pairing: {:#?}\n{:#?}",
            p.stdout(),
            p.stderr()
        );
    }

    // ---- the daemon ------------------------------------------------------------------------

    /// Starts `clawbox run` and waits for "ready" (the store opened, the channels started).
    pub async fn run(&mut self) {
        self.run_with_env(&[]).await
    }

    /// [`Rig::run`] with more environment (a notify socket, a fault).
    pub async fn run_with_env(&mut self, envs: &[(&str, &str)]) {
        assert!(self.proc.is_none(), "already running");
        let p = spawn(&self.args(&["run"]), envs, self.dir.path());
        self.starts += 1;
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        self.proc = Some(p);
    }

    /// Starts `clawbox run` without waiting for anything.
    pub fn run_nowait(&mut self) {
        assert!(self.proc.is_none(), "already running");
        self.proc = Some(spawn(&self.args(&["run"]), &[], self.dir.path()));
        self.starts += 1;
    }

    pub fn proc(&self) -> &Proc {
        self.proc.as_ref().expect("not running")
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.child.id())
    }

    /// SIGKILL; its stderr is kept in `past_stderr`.
    pub async fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9().await;
            self.past_stderr.extend(p.stderr());
        }
    }

    /// SIGTERM and a clean exit (code 0 asserted).
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.sigterm();
            let code = p.exit_code().await;
            self.past_stderr.extend(p.stderr());
            assert_eq!(code, Some(0), "clean stop: {:#?}", self.past_stderr);
        }
    }

    /// Every stderr line of every run so far, the current one included.
    pub fn all_stderr(&self) -> Vec<String> {
        let mut v = self.past_stderr.clone();
        if let Some(p) = &self.proc {
            v.extend(p.stderr());
        }
        v
    }

    pub async fn health(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/healthz", self.health_port)).await
    }
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/metrics", self.health_port)).await
    }

    /// `clawbox status`: (exit code, stdout).
    pub async fn status(&self) -> (Option<i32>, String) {
        let mut p = spawn(&self.args(&["status"]), &[], self.dir.path());
        let code = tokio::time::timeout(STATUS_TIMEOUT, p.exit_code())
            .await
            .ok()
            .flatten();
        (code, p.stdout().join("\n"))
    }

    /// Resident memory of the running daemon, in KiB (VmRSS from /proc/<pid>/status).
    pub fn rss_kib(&self) -> Option<u64> {
        super::procfs::status_kib(self.pid()?, "VmRSS").ok()
    }

    /// Waits until the fake WhatsApp sees the box logged in; returns how long that took.
    pub async fn wait_wa_connected(&self, within: Duration) -> Option<Duration> {
        let t = Instant::now();
        loop {
            if self.wa().state().await.connected {
                return Some(t.elapsed());
            }
            if t.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- traffic ---------------------------------------------------------------------------

    fn token(&mut self, prefix: &str) -> String {
        self.next_token += 1;
        format!("{prefix}{}", self.next_token)
    }

    /// Contact `i` sends a WhatsApp text carrying a fresh token, in the next address form;
    /// recorded as inbound.
    pub async fn send_wa(&mut self, i: usize) -> Result<String, String> {
        let who = self.wa_contacts[i % self.wa_contacts.len()].clone();
        let token = self.token("w");
        // From the number, from the LID with the number as `sender_pn`, and from the LID alone,
        // in turn (the box must know all are the same allowed person). Before the box knows a
        // contact's LID (its first seconds, the allow_from lookup not yet done), a LID-only
        // message in a session it holds under the number fails to decrypt; the contact's resend
        // after the client's retry receipt (the fake's `retry.rs`) delivers it.
        let form =
            [Addressing::Pn, Addressing::Lid, Addressing::LidOnly][(self.next_token % 3) as usize];
        self.wa()
            .contact_send_as(&who, &format!("hello [{token}]"), form)
            .await?;
        self.inbound.push(Inbound {
            chan: Chan::WhatsApp,
            chat: who,
            token: token.clone(),
            at: Instant::now(),
        });
        Ok(token)
    }

    /// User `i` sends a Telegram text carrying a fresh token (the update is available from now).
    pub fn send_tg(&mut self, i: usize) -> String {
        let user = self.tg_users[i % self.tg_users.len()];
        let token = self.token("t");
        self.tg().push_text(user, user, &format!("hello [{token}]"));
        self.inbound.push(Inbound {
            chan: Chan::Telegram,
            chat: user.to_string(),
            token: token.clone(),
            at: Instant::now(),
        });
        token
    }

    /// Reads the fake WhatsApp inboxes and takes every delivery not taken yet (the fake keeps a
    /// bounded inbox per contact, so call this at least every couple of hundred messages per
    /// contact; a delivery that fell out before it was read fails the test).
    pub async fn collect_wa(&mut self) {
        let Some(wa) = self.wa.as_ref() else { return };
        for who in &self.wa_contacts {
            let inbox = wa.contact_inbox(who).await;
            let next = self.wa_next.entry(who.clone()).or_insert(0);
            if let Some(first) = inbox.first() {
                assert!(
                    first.seq <= *next,
                    "deliveries to {who} fell out of the fake's inbox before they were read"
                );
            }
            let raw = self.wa_raw.entry(who.clone()).or_default();
            for m in inbox {
                if m.seq >= *next {
                    *next = m.seq + 1;
                    raw.push((m.id, m.text));
                }
            }
        }
    }

    /// WhatsApp deliveries whose id had already been delivered to that contact (a resend after
    /// a send in doubt, which the phone shows once), and whether each carried the same text as
    /// the first delivery of that id.
    pub async fn wa_retransmissions(&mut self) -> (usize, usize) {
        self.collect_wa().await;
        let (mut again, mut differ) = (0, 0);
        for raw in self.wa_raw.values() {
            let mut first: HashMap<&str, &str> = HashMap::new();
            for (id, text) in raw {
                match first.get(id.as_str()) {
                    Some(t) => {
                        again += 1;
                        differ += usize::from(t != text);
                    }
                    None => {
                        first.insert(id, text);
                    }
                }
            }
        }
        (again, differ)
    }

    /// How many times each inbound token was answered, from the raw deliveries the fakes
    /// recorded: every Telegram message the fake Bot API made, and every WhatsApp message a
    /// contact's phone got (a phone keeps one message per id, so a retransmission of an id is not
    /// a second message; [`Rig::wa_retransmissions`] counts those apart). A reply in parts
    /// (`(part k/N)` in each chunk, see [`long_reply`]) is tallied per part: every part must
    /// arrive exactly once. Keys: (channel, chat, token, part — 0 for a reply in one piece).
    pub async fn reply_counts(&mut self) -> BTreeMap<(Chan, String, String, u32), usize> {
        self.collect_wa().await;
        let mut by_token: HashMap<String, (Chan, String)> = HashMap::new();
        for i in &self.inbound {
            by_token.insert(i.token.clone(), (i.chan, i.chat.clone()));
        }
        let mut counts: BTreeMap<(Chan, String, String, u32), usize> = BTreeMap::new();
        let mut parts: HashMap<String, u32> = HashMap::new();
        let mut bump = |text: &str, chan: Chan, chat: &str| {
            let part = part_of(text);
            for tok in tokens_in(text) {
                if let Some((c, ch)) = by_token.get(&tok)
                    && *c == chan
                    && ch == chat
                {
                    if let Some((_, n)) = part {
                        parts.insert(tok.clone(), n);
                    }
                    let k = part.map_or(0, |(k, _)| k);
                    *counts.entry((chan, chat.to_string(), tok, k)).or_default() += 1;
                }
            }
        };
        for (who, raw) in &self.wa_raw {
            let mut ids: HashSet<&str> = HashSet::new();
            for (id, text) in raw {
                if ids.insert(id) {
                    bump(text, Chan::WhatsApp, who);
                }
            }
        }
        if let Some(tg) = &self.tg {
            for m in tg.sent() {
                bump(&m.text, Chan::Telegram, &m.chat_id.to_string());
            }
        }
        for i in &self.inbound {
            match parts.get(&i.token) {
                Some(&n) => {
                    for k in 1..=n {
                        counts
                            .entry((i.chan, i.chat.clone(), i.token.clone(), k))
                            .or_insert(0);
                    }
                }
                None => {
                    counts
                        .entry((i.chan, i.chat.clone(), i.token.clone(), 0))
                        .or_insert(0);
                }
            }
        }
        counts
    }

    /// Waits until every inbound has at least one reply, or `within` passes; returns the counts.
    pub async fn wait_all_answered(
        &mut self,
        within: Duration,
    ) -> BTreeMap<(Chan, String, String, u32), usize> {
        let t = Instant::now();
        loop {
            let counts = self.reply_counts().await;
            if counts.values().all(|&n| n >= 1) || t.elapsed() > within {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Per Telegram token: when its update was made available and when the reply reached the fake.
    pub fn tg_turn_latencies(&self, tokens: &HashSet<String>) -> Vec<Duration> {
        let sent = self.tg().sent();
        let mut out = Vec::new();
        for i in self.inbound.iter().filter(|i| tokens.contains(&i.token)) {
            if let Some(m) = sent.iter().find(|m| tokens_in(&m.text).contains(&i.token)) {
                out.push(m.at.saturating_duration_since(i.at));
            }
        }
        out
    }

    /// Log lines saying a reply chunk's outcome was unknown and the channel was asked whether it
    /// arrived (a send cut mid-flight, or found in flight after a restart).
    pub fn doubt_lines(&self, chan: Chan) -> usize {
        self.count_lines(chan, "asking the channel whether it arrived")
    }

    /// Log lines saying a chunk in doubt was settled: (it had arrived, it had not).
    pub fn settled_lines(&self, chan: Chan) -> (usize, usize) {
        (
            self.count_lines(chan, "the chunk in doubt had arrived"),
            self.count_lines(chan, "the chunk in doubt had not arrived"),
        )
    }

    /// Log lines saying a chunk's fate could not be known and it was not resent.
    pub fn unknowable_lines(&self, chan: Chan) -> usize {
        self.count_lines(chan, "cannot be known on this channel")
    }

    fn count_lines(&self, chan: Chan, words: &str) -> usize {
        self.all_stderr()
            .iter()
            .filter(|l| l.contains(words) && l.contains(chan.name()))
            .count()
    }
}

/// What the fakes recorded, tallied: every (message, part) must have arrived exactly once.
pub struct Tally {
    pub keys: usize,
    pub once: usize,
    pub lost: Vec<(Chan, String, String, u32)>,
    pub dup: Vec<((Chan, String, String, u32), usize)>,
    pub wa_resent_ids: usize,
    pub wa_resent_differ: usize,
    pub doubt: [usize; 2],
    pub settled: [(usize, usize); 2],
    pub unknowable: [usize; 2],
}

impl Tally {
    pub async fn of(rig: &mut Rig, counts: &BTreeMap<(Chan, String, String, u32), usize>) -> Tally {
        let (wa_resent_ids, wa_resent_differ) = rig.wa_retransmissions().await;
        let chans = [Chan::WhatsApp, Chan::Telegram];
        Tally {
            keys: counts.len(),
            once: counts.values().filter(|n| **n == 1).count(),
            lost: counts
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(k, _)| k.clone())
                .collect(),
            dup: counts
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
            wa_resent_ids,
            wa_resent_differ,
            doubt: chans.map(|c| rig.doubt_lines(c)),
            settled: chans.map(|c| rig.settled_lines(c)),
            unknowable: chans.map(|c| rig.unknowable_lines(c)),
        }
    }

    pub fn lost_on(&self, chan: Chan) -> usize {
        self.lost.iter().filter(|k| k.0 == chan).count()
    }

    pub fn line(&self) -> String {
        format!(
            "{} reply parts expected: answered once={}, lost={} (whatsapp {}, telegram {}), duplicates={}; settle asks (a chunk in doubt asked about; one chunk can be asked again after a crash): whatsapp {} (settled: arrived {}, resent {}; same-id retransmissions {}, with other text {}), telegram {} (settled: arrived {}, resent {}), not resendable {}",
            self.keys,
            self.once,
            self.lost.len(),
            self.lost_on(Chan::WhatsApp),
            self.lost_on(Chan::Telegram),
            self.dup.len(),
            self.doubt[0],
            self.settled[0].0,
            self.settled[0].1,
            self.wa_resent_ids,
            self.wa_resent_differ,
            self.doubt[1],
            self.settled[1].0,
            self.settled[1].1,
            self.unknowable[0] + self.unknowable[1],
        )
    }

    /// Writes every log line of the box to a file under the system temp dir (kept after the test
    /// for a post-mortem) and returns its path.
    pub fn keep_logs(rig: &Rig, name: &str) -> String {
        let path = std::env::temp_dir().join(format!("clawbox-{name}-{}.log", std::process::id()));
        let _ = std::fs::write(&path, rig.all_stderr().join("\n"));
        path.display().to_string()
    }

    pub fn assert_exactly_once(&self) {
        assert!(
            self.dup.is_empty(),
            "answered more than once: {:#?}",
            self.dup
        );
        assert!(self.lost.is_empty(), "never answered: {:#?}", self.lost);
        assert_eq!(
            self.wa_resent_differ, 0,
            "a WhatsApp message id was delivered again with other text"
        );
        assert_eq!(
            self.unknowable[0] + self.unknowable[1],
            0,
            "a chunk was given up as unknowable"
        );
    }
}

/// `(k, n)` when the text is part k of n of a reply made by [`long_reply`].
pub fn part_of(text: &str) -> Option<(u32, u32)> {
    let at = text.find("(part ")?;
    let rest = &text[at + 6..];
    let (k, rest) = rest.split_once('/')?;
    let (n, _) = rest.split_once(')')?;
    Some((k.parse().ok()?, n.parse().ok()?))
}

/// An agent reply in `parts` paragraphs of about `chars` characters each, every one naming the
/// tokens of the request's last user message and its part number, so a reply split into chunks
/// (`chars` > half the channel's limit: one paragraph per chunk) can be tallied chunk by chunk.
pub fn long_reply(parts: u32, chars: usize) -> crate::fakes::openai::ReplyFn {
    std::sync::Arc::new(move |req| {
        let last = crate::fakes::openai::last_user_message(req);
        let toks: Vec<String> = tokens_in(&last).iter().map(|t| format!("[{t}]")).collect();
        let head = toks.join(" ");
        (1..=parts)
            .map(|k| {
                let mut p = format!("(part {k}/{parts}) {head} ");
                while p.len() < chars {
                    p.push_str("lorem ipsum ");
                }
                p
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    })
}

/// Every `[token]` in a text.
pub fn tokens_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(a) = rest.find('[') {
        let after = &rest[a + 1..];
        match after.find(']') {
            Some(b) => {
                out.push(after[..b].to_string());
                rest = &after[b + 1..];
            }
            None => break,
        }
    }
    out
}

/// Percentile (0..=100) of a sample, nearest-rank; zero for an empty one.
pub fn percentile(sample: &[Duration], p: f64) -> Duration {
    if sample.is_empty() {
        return Duration::ZERO;
    }
    let mut v = sample.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns the time it took.
pub async fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if cond() {
            return Some(t.elapsed());
        }
        if t.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A generous bound for a whole test phase to settle.
pub const SETTLE: Duration = Duration::from_secs(60);

/// `SOON`, re-exported for tests that use only the rig.
pub const RIG_SOON: Duration = SOON;
