//! The running service's own view of itself, for `clawbox doctor`. [`ask`] is the one place that
//! asks: the control socket ([`crate::control::client::report`]) first, the loopback `/healthz`
//! ([`crate::health`]) when the socket cannot be used (an older service, or a user who may not use
//! it). Read-only.

use super::{Check, NAME_SERVICE};
use crate::config::Config;
use std::time::Duration;

/// The daemon is on this box's loopback: it answers at once or not at all.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(3);

/// One component of the running service: `whatsapp`, `telegram`, `agent NAME`, `router`, ….
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    /// `up`, `starting`, `degraded`, `needs-owner` or `off` ([`crate::status::State`]).
    pub state: String,
    pub detail: String,
}

/// What asking the service gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// It runs; `healthy` when every component is up (or off on purpose).
    Running {
        healthy: bool,
        components: Vec<Component>,
    },
    /// Nothing answered where it would (`where_`): it is not running.
    NotRunning { where_: String },
    /// Something answered, but not like clawbox.
    Stranger { where_: String, said: String },
}

impl Asked {
    /// The running service's component `name`, if it runs and has one.
    pub fn component(&self, name: &str) -> Option<&Component> {
        match self {
            Asked::Running { components, .. } => components.iter().find(|c| c.name == name),
            _ => None,
        }
    }
    pub fn running(&self) -> bool {
        matches!(self, Asked::Running { .. })
    }
}

/// Asks the running service how it is.
pub async fn ask(cfg: &Config) -> Asked {
    if let Some(Ok(report)) = crate::control::client::report(&cfg.state_dir()).await {
        return Asked::Running {
            healthy: report.healthy,
            components: report
                .components
                .into_iter()
                .filter(|c| !c.internal)
                .map(|c| Component {
                    name: c.name,
                    state: c.state,
                    detail: c.detail,
                })
                .collect(),
        };
    }
    ask_health(cfg).await
}

/// [`ask`] over `/healthz`.
async fn ask_health(cfg: &Config) -> Asked {
    let addr = cfg.gateway.health_listen.get_ref().clone();
    let not_running = || Asked::NotRunning {
        where_: addr.clone(),
    };
    let Ok(req) = http::Request::get(format!("http://{addr}/healthz"))
        .header(http::header::HOST, addr.as_str())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
    else {
        return not_running();
    };
    let resp = match super::net::fetch(&crate::http::HttpClient::new(), req, SERVICE_TIMEOUT).await
    {
        Ok(r) => r,
        Err(_) => return not_running(),
    };
    match parse(resp.body()) {
        Some((healthy, components)) => Asked::Running {
            healthy,
            components,
        },
        None => Asked::Stranger {
            where_: addr,
            said: format!("HTTP {}", resp.status().as_u16()),
        },
    }
}

/// A `/healthz` body: (healthy, components), or None when it is not one.
fn parse(body: &[u8]) -> Option<(bool, Vec<Component>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let healthy = match v.get("status")?.as_str()? {
        "ok" => true,
        "degraded" => false,
        _ => return None,
    };
    let components = v
        .get("components")?
        .as_array()?
        .iter()
        .map(|c| {
            let field = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            Component {
                name: field("name"),
                state: field("state"),
                detail: field("detail"),
            }
        })
        .collect();
    Some((healthy, components))
}

/// The service's line.
pub fn check(asked: &Asked) -> Check {
    match asked {
        Asked::Running {
            healthy: true,
            components,
        } => Check::ok(
            NAME_SERVICE,
            format!("running; {} components healthy", components.len()),
        ),
        Asked::Running { components, .. } => {
            let sick: Vec<String> = components
                .iter()
                .filter(|c| !matches!(c.state.as_str(), "up" | "off"))
                .map(|c| format!("{} {} ({})", c.name, c.state, c.detail))
                .collect();
            Check::warn(
                NAME_SERVICE,
                format!("running, but not all well: {}", sick.join("; ")),
                "the lines above say why; the service's log has the rest: journalctl -u clawbox",
            )
        }
        Asked::NotRunning { where_ } => Check::warn(
            NAME_SERVICE,
            format!("not running (nothing answers on {where_})"),
            "start it: sudo systemctl start clawbox (systemctl status clawbox says why it stopped)",
        ),
        Asked::Stranger { where_, said } => Check::warn(
            NAME_SERVICE,
            format!("{where_} answered ({said}), but not like clawbox"),
            "another program uses that port: give clawbox another gateway.health_listen",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    #[test]
    fn the_health_report_is_read_and_judged() {
        let body = br#"{"status":"degraded","components":[
            {"name":"whatsapp","state":"needs-owner","detail":"not linked","last_beat_ms_ago":3},
            {"name":"telegram","state":"up","detail":"@bot","last_beat_ms_ago":3}]}"#;
        let (healthy, comps) = parse(body).unwrap();
        assert!(!healthy);
        let asked = Asked::Running {
            healthy,
            components: comps,
        };
        assert_eq!(asked.component("telegram").unwrap().detail, "@bot");
        let c = check(&asked);
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.summary.contains("whatsapp needs-owner (not linked)") && !c.summary.contains("@bot"),
            "{}",
            c.summary
        );
        assert_eq!(parse(b"<html>"), None);
        assert_eq!(parse(br#"{"status":"fine"}"#), None);
    }
}
