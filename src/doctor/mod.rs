//! `clawbox doctor`: checks the box end to end and explains, one line per check — OK, WARN or
//! FAIL, with the fix — as text or `--json`; exit 0 only when nothing FAILs.
//!
//! The checks that only look at this box ([`local`]: config, state directory and store, secret
//! files, free space) run first. Then the running service is asked about itself ([`service`]),
//! and everything that waits on the network runs at once: WhatsApp's endpoint and Telegram's
//! `getMe` ([`net`]: DNS, TCP, TLS, the token), the WhatsApp link, the agents' probes
//! (`providers test`'s, one after the other); the clock's line ([`clock`]) is judged from what
//! they saw. Each has its deadline ([`net::ENDPOINT_TIMEOUT`], [`AGENT_TIMEOUT`] per agent), so a
//! run ends within [`service::SERVICE_TIMEOUT`] + the longer of the endpoint's deadline and the
//! agents' deadlines added up, whatever the network does.
//!
//! Fixes nothing itself (each fix is said): the store is opened, as `providers test` opens it,
//! only when it exists with the right owner and mode (opening would fix those, which is the
//! service's business), and never while the service runs (then the service says whether WhatsApp
//! is linked).

pub mod clock;
pub mod local;
pub mod net;
pub mod service;

use crate::config::{AgentKind, Config};
use crate::store::Store;
use service::Asked;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One agent's probe, whole: above the OpenAI probe's own 10 s, room for an OpenClaw handshake.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(20);

pub const NAME_CONFIG: &str = "config";
pub const NAME_STATE: &str = "state-dir";
pub const NAME_STORE: &str = "store";
pub const NAME_SECRETS: &str = "secrets";
pub const NAME_DISK: &str = "disk";
pub const NAME_CLOCK: &str = "clock";
pub const NAME_WHATSAPP_NET: &str = "whatsapp-net";
pub const NAME_TELEGRAM_NET: &str = "telegram-net";
pub const NAME_WHATSAPP: &str = "whatsapp";
pub const NAME_TELEGRAM: &str = "telegram";
pub const NAME_SERVICE: &str = "service";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub summary: String,
    /// What to do, for WARN and FAIL.
    pub fix: Option<String>,
    /// How long the check's network part took.
    pub ms: Option<u64>,
}

impl Check {
    pub fn ok(name: &str, summary: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            level: Level::Ok,
            summary: summary.into(),
            fix: None,
            ms: None,
        }
    }
    pub fn warn(name: &str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Warn,
            fix: Some(fix.into()),
            ..Check::ok(name, summary)
        }
    }
    pub fn fail(name: &str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            level: Level::Fail,
            fix: Some(fix.into()),
            ..Check::ok(name, summary)
        }
    }
    pub fn took(self, ms: u64) -> Check {
        Check {
            ms: Some(ms),
            ..self
        }
    }
}

/// `clawbox doctor`: prints the report; returns the exit code (0: nothing failed, 1: something did).
pub async fn run(config: Option<&Path>, json: bool) -> i32 {
    let checks = examine(config).await;
    print!("{}", render(&checks, json));
    if checks.iter().any(|c| c.level == Level::Fail) {
        1
    } else {
        0
    }
}

/// Every check, in the report's order.
pub async fn examine(config: Option<&Path>) -> Vec<Check> {
    let mut checks = Vec::new();
    let Some(cfg) = local::config(config, &mut checks) else {
        return checks;
    };
    let state = local::state(&cfg, &mut checks);
    local::secrets(&cfg, &state, &mut checks);
    local::disk(&state.dir, &mut checks);

    let asked = service::ask(&cfg).await;
    // The store is the service's while it runs; else opened only when nothing about it is wrong.
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let store = (!asked.running() && state.store_ready)
        .then(|| Store::open(&state.dir, &cfg.store, metrics.clone()));
    let http = crate::http::HttpClient::new();
    let wa = cfg.channels.whatsapp.as_ref().filter(|w| w.enabled);
    let tg = cfg.channels.telegram.as_ref().filter(|t| t.enabled);

    let wa_net = async {
        match wa {
            Some(w) => Some(net::reach(&http, w.server_url.get_ref()).await),
            None => None,
        }
    };
    // getMe reaches the Bot API and checks the token at once; without a token, a HEAD reaches it.
    let tg_me = async {
        let t = tg?;
        let Some(token) = &t.token else {
            return Some(net::Me {
                reach: net::reach(&http, t.api_root.get_ref()).await,
                check: Check::fail(
                    NAME_TELEGRAM,
                    "not tried: the bot token could not be read (see the config and secrets \
                     lines)",
                    "fix those first",
                ),
            });
        };
        let file = t
            .token_file
            .as_ref()
            .map(|f| f.get_ref().display().to_string());
        Some(net::telegram_me(&http, t.api_root.get_ref(), token, file.as_deref()).await)
    };
    let opened = match &store {
        Some(Ok(s)) => Some(s),
        _ => None,
    };
    let link = async {
        match wa {
            Some(_) => Some(whatsapp_link(&asked, &store, &state).await),
            None => None,
        }
    };
    let agents = agents(&cfg, &asked, opened);
    let (wa_net, tg_me, link, agents) = tokio::join!(wa_net, tg_me, link, agents);
    if let Some(Ok(s)) = &store {
        s.close().await;
    }

    let tg_net = tg_me.as_ref().map(|m| &m.reach);
    let mut readings = Vec::new();
    let mut certificate_time = None;
    for r in [wa_net.as_ref(), tg_net].into_iter().flatten() {
        readings.extend(r.date.clone());
        if let Some(e) = &r.failed {
            let e = e.to_string();
            if clock::is_certificate_time_error(&e) {
                certificate_time = Some(e);
            }
        }
    }
    checks.push(clock::verdict(
        &readings,
        clock::system_sync(),
        certificate_time.as_deref(),
    ));
    if let Some(r) = &wa_net {
        checks.push(net::reach_check(NAME_WHATSAPP_NET, "WhatsApp", r));
    }
    if let Some(r) = tg_net {
        checks.push(net::reach_check(NAME_TELEGRAM_NET, "Telegram", r));
    }
    checks.extend(link);
    checks.extend(tg_me.map(|m| m.check));
    checks.extend(agents);
    checks.push(service::check(&asked));
    checks
}

/// Is WhatsApp linked, and since when: from the running service, else from the store.
async fn whatsapp_link(
    asked: &Asked,
    store: &Option<Result<Store, crate::store::StoreError>>,
    state: &local::State,
) -> Check {
    const PAIR: &str = "link it: clawbox pair whatsapp (a QR to scan), or clawbox pair whatsapp \
                        --phone +<your number> (a code to type on the phone)";
    if let Some(c) = asked.component(NAME_WHATSAPP) {
        return match c.state.as_str() {
            "up" => Check::ok(
                NAME_WHATSAPP,
                format!("{} (the running service says)", c.detail),
            ),
            "needs-owner" => Check::fail(NAME_WHATSAPP, c.detail.clone(), PAIR),
            _ => Check::warn(
                NAME_WHATSAPP,
                format!("{}: {} (the running service says)", c.state, c.detail),
                "see the whatsapp-net line; the service keeps retrying on its own",
            ),
        };
    }
    if asked.running() {
        return Check::warn(
            NAME_WHATSAPP,
            "the running service has no WhatsApp channel (started with another config?)",
            "restart it with this config: sudo systemctl restart clawbox",
        );
    }
    let s = match store {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            return Check::warn(
                NAME_WHATSAPP,
                format!("cannot tell: {e}"),
                "run the doctor again when the store is free",
            );
        }
        None if !state.store.exists() => {
            return Check::fail(NAME_WHATSAPP, "not linked (no store yet)", PAIR);
        }
        None => {
            return Check::warn(
                NAME_WHATSAPP,
                "not checked: the store's owner or mode is wrong (see above)",
                "fix the state-dir and store lines first",
            );
        }
    };
    let backend = crate::channel::whatsapp::storage::KvBackend::new(
        s.kv(crate::store::kv::KvTable::WhatsApp),
    );
    match backend.linked().await {
        Some((number, since)) => {
            let since = since
                .map(|ms| {
                    let ago = crate::store::now_ms().saturating_sub(ms) / 1000;
                    format!("since {} ago", clock::span(Duration::from_secs(ago)))
                })
                .unwrap_or_else(|| "since before clawbox kept the date".into());
            Check::ok(NAME_WHATSAPP, format!("linked {number}, {since}"))
        }
        None => Check::fail(NAME_WHATSAPP, "not linked", PAIR),
    }
}

/// Each agent's line: its probe (`providers test`), bounded; an OpenClaw agent of a running
/// service is judged by the service's own connection (a second device identity would only ask
/// the gateway for pairing).
async fn agents(cfg: &Config, asked: &Asked, store: Option<&Store>) -> Vec<Check> {
    if cfg.agents.is_empty() {
        return vec![Check::ok(
            &format!("agent:{}", crate::config::BUILTIN_AGENT),
            "the built-in echo agent (answers with the text it got)",
        )];
    }
    let mut lines = Vec::with_capacity(cfg.agents.len());
    for (name, a) in &cfg.agents {
        lines.push(agent(cfg, name, a, asked, store).await);
    }
    lines
}

async fn agent(
    cfg: &Config,
    name: &str,
    a: &crate::config::AgentConfig,
    asked: &Asked,
    store: Option<&Store>,
) -> Check {
    let line = format!("agent:{name}");
    let check_it = format!("clawbox providers test {name}");
    let secret_named = a.api_key_file.is_some()
        || a.api_key_env.is_some()
        || a.token_file.is_some()
        || a.token_env.is_some();
    let required = *a.kind.get_ref() == AgentKind::Openclaw;
    if a.secret.is_none() && (secret_named || required) {
        return Check::fail(
            &line,
            "not tried: its key or token could not be read (see the config and secrets lines)",
            "fix those first",
        );
    }
    if *a.kind.get_ref() == AgentKind::Openclaw {
        if let Some(c) = asked.component(&format!("agent {name}")) {
            return match c.state.as_str() {
                "up" => Check::ok(
                    &line,
                    format!("connected: {} (the running service says)", c.detail),
                ),
                _ => Check::fail(
                    &line,
                    format!("{}: {} (the running service says)", c.state, c.detail),
                    format!("the service's log says more (journalctl -u clawbox); then {check_it}"),
                ),
            };
        }
    }
    if *a.kind.get_ref() == AgentKind::Openclaw && store.is_none() {
        return Check::warn(
            &line,
            "not probed: its device identity is in the store, which the doctor does not open now \
             (see the state-dir and store lines)",
            check_it,
        );
    }
    match tokio::time::timeout(
        AGENT_TIMEOUT,
        crate::providers::probe(cfg, Some(name), store),
    )
    .await
    {
        Ok(reports) => match reports.into_iter().next() {
            Some(r) if r.ok => {
                let facts: Vec<String> = r.facts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                Check::ok(&line, format!("{} answers; {}", r.kind, facts.join(", ")))
                    .took(r.latency_ms)
            }
            Some(r) => Check::fail(
                &line,
                format!(
                    "{} does not answer: {}",
                    r.kind,
                    r.error.unwrap_or_else(|| "no reason given".into())
                ),
                format!("do what it says; {check_it} tries it again alone"),
            )
            .took(r.latency_ms),
            None => Check::warn(&line, "not probed", check_it),
        },
        Err(_) => Check::fail(
            &line,
            format!("no answer within {} s", AGENT_TIMEOUT.as_secs()),
            format!("is it running and reachable from this box? {check_it}"),
        ),
    }
}

/// The report as text (one line per check, the fix below a WARN or FAIL) or one JSON object.
pub fn render(checks: &[Check], json: bool) -> String {
    let count = |l: Level| checks.iter().filter(|c| c.level == l).count();
    if json {
        let list: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "check": c.name,
                    "level": c.level.word().to_ascii_lowercase(),
                    "summary": c.summary,
                    "fix": c.fix,
                    "ms": c.ms,
                })
            })
            .collect();
        let v = serde_json::json!({
            "ok": count(Level::Fail) == 0,
            "fail": count(Level::Fail),
            "warn": count(Level::Warn),
            "checks": list,
        });
        return format!("{v}\n");
    }
    const INDENT: &str = "                     ";
    let mut out = String::new();
    for c in checks {
        let mut lines = c.summary.lines();
        let first = lines.next().unwrap_or("");
        out.push_str(&format!("{:<5} {:<14} {first}", c.level.word(), c.name));
        if let Some(ms) = c.ms {
            out.push_str(&format!(" [{ms} ms]"));
        }
        out.push('\n');
        for l in lines {
            out.push_str(&format!("{INDENT}{l}\n"));
        }
        if let Some(f) = &c.fix {
            out.push_str(&format!("{INDENT}fix: {f}\n"));
        }
    }
    out.push_str(&format!(
        "{} OK, {} WARN, {} FAIL\n",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_puts_the_fix_under_its_line_and_json_says_the_same() {
        let checks = vec![
            Check::ok(NAME_CONFIG, "/etc/clawbox/clawbox.toml is valid"),
            Check::fail(NAME_TELEGRAM, "refused\nsecond line", "copy it again").took(12),
        ];
        let text = render(&checks, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "OK    config         /etc/clawbox/clawbox.toml is valid"
        );
        assert_eq!(lines[1], "FAIL  telegram       refused [12 ms]");
        assert_eq!(lines[2].trim(), "second line");
        assert_eq!(lines[3].trim(), "fix: copy it again");
        assert_eq!(lines[4], "1 OK, 0 WARN, 1 FAIL");
        let v: serde_json::Value = serde_json::from_str(&render(&checks, true)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][1]["level"], "fail");
        assert_eq!(v["checks"][1]["fix"], "copy it again");
        assert_eq!(v["checks"][1]["ms"], 12);
        assert_eq!(v["checks"][0]["fix"], serde_json::Value::Null);
    }
}
