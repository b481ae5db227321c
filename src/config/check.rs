//! Semantic checks after parsing: numbers, names, references, secrets. Each problem becomes a
//! [`ConfigError`] pointing at the offending value, with what would be valid.

use super::{
    AgentConfig, AgentKind, BUILTIN_AGENT, Config, ConfigError, DmPolicy, Secret, line_col,
};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A secret file larger than this is a mistake (a key is a line).
const MAX_SECRET_BYTES: u64 = 16 * 1024;
/// The page's token: shorter ones can be guessed over the network.
pub const MIN_WEB_TOKEN_CHARS: usize = 16;
/// Turns running at once: more would only queue inside the agent; fewer than one does nothing.
const MAX_CONCURRENT_TURNS: usize = 256;

pub(super) struct Checker<'a> {
    text: &'a str,
    path: Option<PathBuf>,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(super) fn err_at<T>(&mut self, v: &Spanned<T>, message: impl Into<String>) {
        let span = v.span();
        // Spans of 0..0 mark built-in defaults, which have no place in the file.
        let line_col = if span == (0..0) {
            None
        } else {
            Some(line_col(self.text, span.start))
        };
        self.errors.push(ConfigError {
            path: self.path.clone(),
            line_col,
            message: message.into(),
        });
    }
    pub(super) fn err(&mut self, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.clone(),
            line_col: None,
            message: message.into(),
        });
    }

    /// Reads a secret from `file` or `env`; exactly one must be given when `required`.
    fn secret(
        &mut self,
        what: &str,
        file: Option<&Spanned<PathBuf>>,
        env: Option<&Spanned<String>>,
        required: bool,
        table: &str,
    ) -> Option<Secret> {
        match (file, env) {
            (Some(f), Some(_)) => {
                self.err_at(
                    f,
                    format!("{what}: give either a *_file or a *_env, not both"),
                );
                None
            }
            (Some(f), None) => {
                let p = self.resolve(f.get_ref());
                match read_secret_file(&p) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.err_at(f, format!("{what}: {e}"));
                        None
                    }
                }
            }
            (None, Some(e)) => match std::env::var(e.get_ref()) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
                _ => {
                    self.err_at(
                        e,
                        format!(
                            "{what}: the environment variable `{}` is not set or empty",
                            e.get_ref()
                        ),
                    );
                    None
                }
            },
            (None, None) if required => {
                self.err(format!(
                    "[{table}]: {what} is missing: add a file path (the secret alone on its first line, mode 0600) \
                     or the name of an environment variable that holds it; secrets are never written inline"
                ));
                None
            }
            (None, None) => None,
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        secret_path(self.path.as_deref(), p)
    }
}

/// Where a secret file named in the config is: relative paths are relative to the config file's
/// directory.
pub fn secret_path(config: Option<&Path>, p: &Path) -> PathBuf {
    match (config, p.is_relative()) {
        (Some(cfg), true) => cfg
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf()),
        _ => p.to_path_buf(),
    }
}

/// Reads a secret file the way the service does: a regular file, private to its owner (as ssh
/// wants a private key: else refused with the `chmod 600` to run), at most [`MAX_SECRET_BYTES`],
/// the secret alone on its first line. Errors are in plain words with what to do.
pub fn read_secret_file(p: &Path) -> Result<Secret, String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    // A device or a FIFO has no length to check: /dev/zero would be read until memory runs out,
    // a FIFO would block start-up forever.
    if !meta.is_file() {
        return Err(format!(
            "`{}` is not a regular file; put the secret in a file",
            p.display()
        ));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "`{}` is {} bytes; a secret file holds one line",
            p.display(),
            meta.len()
        ));
    }
    // As ssh does for a private key: a secret other users could read (or replace) is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let how = if mode & 0o044 != 0 {
                "readable"
            } else {
                "writable"
            };
            return Err(format!(
                "{path} is {how} by other users (mode {mode:04o}); run: chmod 600 {path}",
                path = crate::cli::shell_quote(&p.display().to_string())
            ));
        }
    }
    // Read at most one byte past the limit: the file may have grown since the check above.
    let mut text = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "`{}` is over {MAX_SECRET_BYTES} bytes; a secret file holds one line",
            p.display()
        ));
    }
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(format!(
            "`{}` is empty; put the secret on its first line",
            p.display()
        ));
    }
    Ok(Secret::new(line.to_string()))
}

/// `[web]`: a listen address, a token wherever others can reach it, plain host names.
fn check_web(c: &mut Checker<'_>, cfg: &mut Config) {
    let web = &mut cfg.web;
    if let Some(listen) = &web.listen {
        match listen.get_ref().parse::<SocketAddr>() {
            Ok(a) if !a.ip().is_loopback() && web.token_file.is_none() => c.err_at(
                listen,
                format!(
                    "[web] listen = \"{}\" is reachable from other machines: add token_file = \
                     \"/etc/clawbox/web.token\" (a random line of at least {MIN_WEB_TOKEN_CHARS} \
                     characters, mode 0600, e.g. `head -c 24 /dev/urandom | base64`), or listen on \
                     127.0.0.1",
                    listen.get_ref()
                ),
            ),
            Ok(_) => {}
            Err(_) => c.err_at(
                listen,
                "[web] listen is not an address; expected e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
            ),
        }
    }
    if let Some(f) = &web.token_file {
        let p = c.resolve(f.get_ref());
        match read_secret_file(&p) {
            Ok(s) if s.expose().chars().count() < MIN_WEB_TOKEN_CHARS => c.err_at(
                f,
                format!(
                    "[web] token_file: the token is shorter than {MIN_WEB_TOKEN_CHARS} characters; \
                     make a longer one, e.g. `head -c 24 /dev/urandom | base64`"
                ),
            ),
            Ok(s) => web.token = Some(s),
            Err(e) => c.err_at(f, format!("[web] token_file: {e}")),
        }
    }
    for h in &web.hostnames {
        let name = h.get_ref();
        let plain = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !plain {
            c.err_at(
                h,
                format!("[web] hostnames: `{name}` is not a host name (letters, digits, '-', '.')"),
            );
        }
    }
}

/// `+` then 7 to 15 digits, not starting with 0 (ITU-T E.164).
/// A WhatsApp LID as `allow_from` takes it: its user part (digits, no device) then `@lid`.
pub fn is_lid(s: &str) -> bool {
    let Some(digits) = s.strip_suffix("@lid") else {
        return false;
    };
    (1..=20).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Agent names are used in logs, metrics and `providers test NAME`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn check(cfg: &mut Config, text: &str) -> Result<(), Vec<ConfigError>> {
    let mut c = Checker {
        text,
        path: cfg.source.clone(),
        errors: Vec::new(),
    };

    // [gateway]
    match cfg.gateway.health_listen.get_ref().parse::<SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => {}
        Ok(_) => c.err_at(
            &cfg.gateway.health_listen,
            "health_listen must be a loopback address (127.0.0.1:PORT or [::1]:PORT): /healthz and /metrics have no authentication",
        ),
        Err(_) => c.err_at(&cfg.gateway.health_listen, "health_listen is not an address; expected e.g. \"127.0.0.1:8787\""),
    }
    if !["error", "warn", "info", "debug", "trace"]
        .contains(&cfg.gateway.log_level.get_ref().as_str())
    {
        c.err_at(
            &cfg.gateway.log_level,
            "log_level must be one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
        );
    }

    check_web(&mut c, cfg);

    // [router] and [pacing]
    let r = &cfg.router;
    if r.ack_timeout_s == 0 || r.accumulation_timeout_s == 0 {
        c.err("[router]: ack_timeout_s and accumulation_timeout_s must be at least 1");
    }
    if r.max_concurrent_turns == 0 || r.max_concurrent_turns > MAX_CONCURRENT_TURNS {
        c.err(format!(
            "[router]: max_concurrent_turns must be between 1 and {MAX_CONCURRENT_TURNS}"
        ));
    }
    let p = &cfg.pacing;
    if p.min_gap_ms[0] > p.min_gap_ms[1] || p.chunk_gap_ms[0] > p.chunk_gap_ms[1] {
        c.err("[pacing]: min_gap_ms and chunk_gap_ms are [low, high] with low <= high");
    }
    if p.global_per_minute == 0 || p.global_burst == 0 {
        c.err("[pacing]: global_per_minute and global_burst must be at least 1");
    }
    if cfg.store.cache_kib < 256 {
        c.err("[store]: cache_kib must be at least 256");
    }

    // [agents.*]
    let names: Vec<String> = cfg.agents.keys().cloned().collect();
    for (name, agent) in cfg.agents.iter_mut() {
        if !valid_name(name) {
            c.err(format!(
                "[agents.{name}]: agent names use letters, digits, '-' and '_' (at most 64)"
            ));
        }
        check_agent(&mut c, name, agent);
    }

    // [channels.*]
    let known = |n: &str| n == BUILTIN_AGENT || names.iter().any(|k| k == n);
    let names_list = || {
        let mut all = names.clone();
        if !all.iter().any(|n| n == BUILTIN_AGENT) {
            all.push(BUILTIN_AGENT.into());
        }
        all.join(", ")
    };
    // Every channel's `agent = …` must name a declared agent (or the built-in echo).
    let agent_refs = [
        cfg.channels.telegram.as_ref().and_then(|t| t.agent.clone()),
        cfg.channels.whatsapp.as_ref().and_then(|w| w.agent.clone()),
        cfg.channels.console.as_ref().and_then(|c| c.agent.clone()),
    ];
    for a in agent_refs.iter().flatten() {
        if !known(a.get_ref()) {
            c.err_at(
                a,
                format!(
                    "no agent named `{}`; declared: {}",
                    a.get_ref(),
                    names_list()
                ),
            );
        }
    }
    // [channels.*.groups]
    let declared = names_list();
    // Whether the named agent takes a system prompt (only openai agents have one).
    let takes_prompt = |n: &str| {
        cfg.agents
            .get(n)
            .is_some_and(|a| *a.kind.get_ref() == AgentKind::Openai)
    };
    let agents = super::groups::Agents {
        known: &known,
        declared: &declared,
        takes_prompt: &takes_prompt,
    };
    if let Some(t) = cfg.channels.telegram.as_ref() {
        let channel_agent = cfg.agent_of(crate::vocab::ChannelKind::Telegram);
        super::groups::check(
            &mut c,
            &t.groups,
            super::groups::IdForms::Telegram,
            &agents,
            &channel_agent,
        );
    }
    if let Some(w) = cfg.channels.whatsapp.as_ref() {
        let channel_agent = cfg.agent_of(crate::vocab::ChannelKind::WhatsApp);
        super::groups::check(
            &mut c,
            &w.groups,
            super::groups::IdForms::WhatsApp,
            &agents,
            &channel_agent,
        );
    }
    if let Some(t) = cfg.channels.telegram.as_mut() {
        if t.enabled {
            t.token = c.secret(
                "the bot token",
                t.token_file.as_ref(),
                t.token_env.as_ref(),
                true,
                "channels.telegram",
            );
        }
        if t.dm_policy == DmPolicy::Allowlist && t.allow_from.is_empty() && t.enabled {
            c.err(
                "[channels.telegram]: dm_policy = \"allowlist\" with an empty allow_from lets nobody in; \
                 add numeric user ids (allow_from = [123456789]) or set dm_policy = \"open\"",
            );
        }
        for id in &t.allow_from {
            if *id.get_ref() <= 0 {
                c.err_at(id, "Telegram user ids are positive numbers, e.g. 123456789");
            }
        }
        let pt = *t.poll_timeout_s.get_ref();
        if !(1..=300).contains(&pt) {
            c.err_at(
                &t.poll_timeout_s,
                "poll_timeout_s must be between 1 and 300 (Telegram's long poll)",
            );
        }
        let root = t.api_root.get_ref();
        if !(root.starts_with("https://") || root.starts_with("http://")) {
            c.err_at(
                &t.api_root,
                "api_root must start with https:// (or http:// for a local Bot API server)",
            );
        }
    }
    if let Some(w) = cfg.channels.whatsapp.as_ref() {
        for n in &w.allow_from {
            let v = n.get_ref();
            if v.ends_with("@lid") {
                if !is_lid(v) {
                    c.err_at(
                        n,
                        format!("`{v}` is not a WhatsApp LID: write its digits then @lid, e.g. \"123456789012345@lid\""),
                    );
                }
            } else if !is_e164(v) {
                c.err_at(
                    n,
                    format!("`{v}` is not an E.164 number or a LID: write + then country code and number, digits only, e.g. \"+491701234567\", or a LID such as \"123456789012345@lid\""),
                );
            }
        }
        let u = w.server_url.get_ref();
        if !(u.starts_with("wss://") || u.starts_with("ws://")) {
            c.err_at(
                &w.server_url,
                "server_url must start with wss:// (or ws:// for a local test server)",
            );
        }
        let v = w.version_url.get_ref();
        if !(v.starts_with("https://") || v.starts_with("http://")) {
            c.err_at(
                &w.version_url,
                "version_url must start with https:// (or http:// for a local test server)",
            );
        }
    }

    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(c.errors)
    }
}

fn check_agent(c: &mut Checker<'_>, name: &str, a: &mut AgentConfig) {
    let kind = *a.kind.get_ref();
    let table = format!("agents.{name}");
    // Keys each kind accepts, beyond `kind` and the timeouts.
    let foreign: Vec<(&str, Option<std::ops::Range<usize>>)> = vec![
        ("url", a.url.as_ref().map(|v| v.span())),
        ("model", a.model.as_ref().map(|v| v.span())),
        ("api_key_file", a.api_key_file.as_ref().map(|v| v.span())),
        ("api_key_env", a.api_key_env.as_ref().map(|v| v.span())),
        ("token_file", a.token_file.as_ref().map(|v| v.span())),
        ("token_env", a.token_env.as_ref().map(|v| v.span())),
        ("system_prompt", a.system_prompt.as_ref().map(|v| v.span())),
        (
            "history_messages",
            a.history_messages.as_ref().map(|v| v.span()),
        ),
        ("max_tokens", a.max_tokens.as_ref().map(|v| v.span())),
        ("agent_id", a.agent_id.as_ref().map(|v| v.span())),
        (
            "session_prefix",
            a.session_prefix.as_ref().map(|v| v.span()),
        ),
    ];
    let allowed: &[&str] = match kind {
        AgentKind::Echo => &[],
        AgentKind::Openai => &[
            "url",
            "model",
            "api_key_file",
            "api_key_env",
            "system_prompt",
            "history_messages",
            "max_tokens",
        ],
        AgentKind::Openclaw => &[
            "url",
            "token_file",
            "token_env",
            "agent_id",
            "session_prefix",
        ],
    };
    let kind_name = match kind {
        AgentKind::Echo => "echo",
        AgentKind::Openai => "openai",
        AgentKind::Openclaw => "openclaw",
    };
    for (key, span) in foreign {
        if let Some(span) = span {
            if !allowed.contains(&key) {
                let v = Spanned::new(span, ());
                c.err_at(
                    &v,
                    format!(
                        "`{key}` is not a setting of a kind = \"{kind_name}\" agent; it takes: {}",
                        if allowed.is_empty() {
                            "no settings".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                );
            }
        }
    }
    match kind {
        AgentKind::Echo => {}
        AgentKind::Openai => {
            match &a.url {
                None => c.err(format!("[{table}]: `url` is missing: the endpoint's base URL, e.g. \"http://127.0.0.1:11434/v1\"")),
                Some(u) if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) => {
                    c.err_at(u, "url must start with http:// or https://, e.g. \"http://127.0.0.1:11434/v1\"")
                }
                Some(_) => {}
            }
            if a.model.is_none() {
                c.err(format!(
                    "[{table}]: `model` is missing, e.g. model = \"llama3.2\""
                ));
            }
            // Local servers (Ollama, llama.cpp) need no key.
            a.secret = c.secret(
                "the API key",
                a.api_key_file.as_ref(),
                a.api_key_env.as_ref(),
                false,
                &table,
            );
        }
        AgentKind::Openclaw => {
            match &a.url {
                None => c.err(format!("[{table}]: `url` is missing: the gateway's WebSocket URL, e.g. \"ws://127.0.0.1:18789\"")),
                Some(u) if !(u.get_ref().starts_with("ws://") || u.get_ref().starts_with("wss://")) => {
                    c.err_at(u, "url must start with ws:// or wss://, e.g. \"wss://gateway.example:18789\"")
                }
                Some(_) => {}
            }
            a.secret = c.secret(
                "the gateway token",
                a.token_file.as_ref(),
                a.token_env.as_ref(),
                true,
                &table,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn e164() {
        assert!(is_e164("+491701234567"));
        assert!(!is_e164("491701234567"));
        assert!(!is_e164("+0491701234567"));
        assert!(!is_e164("+49 170 1234567"));
        assert!(!is_e164("+123"));
    }

    #[test]
    fn lid() {
        assert!(is_lid("123456789012345@lid"));
        assert!(!is_lid("123456789012345"));
        assert!(!is_lid("+123456789012345@lid"));
        assert!(!is_lid("123456789012345:3@lid"));
        assert!(!is_lid("@lid"));
        assert!(!is_lid("0123@lid"));
        assert!(!is_lid("12345678901234567890123@lid"));
        assert!(!is_lid("1234 5678@lid"));
    }

    /// A secret path naming a device must be refused, not read: `/dev/zero` has length 0 and
    /// never ends.
    #[test]
    fn a_secret_file_that_is_not_a_regular_file_is_refused() {
        let e = read_secret_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_secret_file(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&f).unwrap().expose(), "s3cret");
    }

    /// Like ssh with a private key: group or world bits on a secret file refuse it, with the fix.
    #[test]
    fn a_secret_file_open_to_other_users_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        for (mode, how) in [
            (0o644, "readable"),
            (0o640, "readable"),
            (0o604, "readable"),
            (0o620, "writable"),
            (0o602, "writable"),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_secret_file(&f).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "{p} is {how} by other users (mode {mode:04o}); run: chmod 600 {p}",
                    p = f.display()
                )
            );
            assert!(!e.contains("s3cret"));
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_secret_file(&f).unwrap().expose(), "s3cret");
        }
    }
}
