//! `clawbox providers test`: really exercises each configured agent (handshake, auth, a request)
//! and reports in plain words; exit 0 only if all pass.

use crate::agent::{Agent, ProbeReport};
use crate::config::{AgentKind, Config};
use crate::http::HttpClient;
use crate::status::Board;
use crate::store::Store;

pub async fn test(cfg: &Config, only: Option<&str>, json: bool) -> i32 {
    if let Some(o) = only {
        if !cfg.agents.contains_key(o) && o != crate::config::BUILTIN_AGENT {
            eprintln!("clawbox: no agent named `{o}` in the config");
            return 64;
        }
    }
    // The probe of an OpenClaw agent reads its stored device identity; open the store read-write
    // only if the daemon is not holding it, else probe without it.
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let store_dir = cfg.state_dir();
    let store = match Store::open(&store_dir, &cfg.store, metrics.clone()) {
        Ok(s) => s,
        Err(_) => match Store::open(
            &std::env::temp_dir().join(format!("clawbox-probe-{}", std::process::id())),
            &cfg.store,
            metrics,
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("clawbox: {e}");
                return 70;
            }
        },
    };
    let reports = probe(cfg, only, Some(&store)).await;
    store.close().await;
    let ok = reports.iter().all(|r| r.ok);
    if json {
        let arr: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                let facts: serde_json::Map<String, serde_json::Value> =
                    r.facts.iter().map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone()))).collect();
                serde_json::json!({"agent": r.agent, "kind": r.kind, "ok": r.ok, "latency_ms": r.latency_ms, "facts": facts, "error": r.error})
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
    } else {
        for r in &reports {
            println!(
                "{} {} ({}) {} ms",
                if r.ok { "PASS" } else { "FAIL" },
                r.agent,
                r.kind,
                r.latency_ms
            );
            for (k, v) in &r.facts {
                println!("    {k}: {v}");
            }
            if let Some(e) = &r.error {
                println!("    error: {e}");
            }
        }
    }
    if ok { 0 } else { 1 }
}

/// Probes the configured agents (only `only` when given; the built-in echo when none is
/// declared), one after the other. `store` holds the OpenClaw device identities: without it an
/// OpenClaw agent is not probed (a new identity would only ask the gateway for pairing).
/// Boxed: `providers test` and `clawbox doctor` share one copy of every agent's probe code.
pub fn probe<'a>(
    cfg: &'a Config,
    only: Option<&'a str>,
    store: Option<&'a Store>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<ProbeReport>> + 'a>> {
    Box::pin(probe_each(cfg, only, store))
}

async fn probe_each(cfg: &Config, only: Option<&str>, store: Option<&Store>) -> Vec<ProbeReport> {
    let http = HttpClient::new();
    let board = Board::default();
    let mut reports: Vec<ProbeReport> = Vec::new();
    let names: Vec<&String> = cfg
        .agents
        .keys()
        .filter(|n| only.is_none_or(|o| o == n.as_str()))
        .collect();
    if names.is_empty() {
        let echo = Agent::Echo(crate::agent::echo::Echo);
        reports.push(echo.probe(crate::config::BUILTIN_AGENT).await);
    }
    for name in names {
        let acfg = &cfg.agents[name];
        let agent = match (store, acfg.kind.get_ref()) {
            (Some(s), _) => Agent::from_config(name, acfg, &http, s, board.register(name, false)),
            (None, AgentKind::Openai) => {
                Agent::OpenAi(crate::agent::openai::OpenAi::new(name, acfg, http.clone()))
            }
            (None, AgentKind::Echo) => Agent::Echo(crate::agent::echo::Echo),
            (None, AgentKind::Openclaw) => {
                reports.push(ProbeReport {
                    agent: name.clone(),
                    kind: "openclaw",
                    ok: false,
                    facts: Vec::new(),
                    error: Some(
                        "not probed: its device identity is in the store, which cannot be opened \
                         now"
                        .into(),
                    ),
                    latency_ms: 0,
                });
                continue;
            }
        };
        reports.push(agent.probe(name).await);
    }
    reports
}
