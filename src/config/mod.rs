//! The configuration: one strict TOML file, or none at all (embedded defaults: the echo agent).
//!
//! Parsing is strict (`deny_unknown_fields` everywhere, exact types) and every error names the
//! file, line and column and says what would be valid. Semantic checks (E.164 numbers, secret
//! files, agent names) live in [`check`]. A bad config makes `run` and `config check` exit 78
//! (EX_CONFIG), which the systemd unit does not restart on.

pub mod check;
pub mod groups;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// sysexits' EX_CONFIG: the unit's `RestartPreventExitStatus=78` stops a crash loop on it.
pub const EXIT_CONFIG: i32 = 78;

/// Where `run` looks when no `--config` is given, in order.
pub const DEFAULT_PATHS: [&str; 2] = ["/etc/clawbox/clawbox.toml", "./clawbox.toml"];

/// A config file larger than this is not a config file (and is not read into memory).
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Loopback port of `/healthz` and `/metrics` unless configured.
pub const DEFAULT_HEALTH_PORT: u16 = 8787;

/// An error in the configuration, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: Option<PathBuf>,
    /// 1-based line and column, when the error has a place in the file.
    pub line_col: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        match self.line_col {
            Some((l, c)) => write!(f, "{path}:{l}:{c}: {}", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A secret read from a file or the environment. Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: GatewayConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub router: RouterConfig,
    #[serde(default)]
    pub pacing: PacingConfig,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentConfig>,
    #[serde(default)]
    pub channels: ChannelsConfig,
    #[serde(default)]
    pub display: DisplayConfig,
    #[serde(default)]
    pub web: WebConfig,
    /// The file this came from (None: embedded defaults).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The embedded defaults (no config file): the echo agent and the WhatsApp channel for the owner's
/// own "message yourself" chat, so a fresh box shows its pairing QR on first start. A config file
/// that leaves `[channels.whatsapp]` out has no WhatsApp channel.
impl Default for Config {
    fn default() -> Self {
        Config {
            gateway: GatewayConfig::default(),
            store: StoreConfig::default(),
            router: RouterConfig::default(),
            pacing: PacingConfig::default(),
            agents: BTreeMap::new(),
            channels: ChannelsConfig {
                whatsapp: Some(WhatsAppConfig::default()),
                ..ChannelsConfig::default()
            },
            display: DisplayConfig::default(),
            web: WebConfig::default(),
            source: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Where the store lives. Default: `$STATE_DIRECTORY` (systemd), else `/var/lib/clawbox` when
    /// it exists (an installed box), else `./state`.
    pub state_dir: Option<PathBuf>,
    /// Loopback address of `/healthz` and `/metrics`.
    pub health_listen: Spanned<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: Spanned<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            state_dir: None,
            health_listen: Spanned::new(0..0, format!("127.0.0.1:{DEFAULT_HEALTH_PORT}")),
            log_level: Spanned::new(0..0, "info".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// 0 (the default): group commit without waiting — the writer commits what is queued at once,
    /// and whatever arrives during that fsync shares the next one, so latency stays one fsync and
    /// a burst still costs few. A window > 0 first waits that long for company (fewer fsyncs on a
    /// card with very slow flushes, at that much latency per message).
    pub commit_window_ms: u64,
    /// redb page cache. redb's own default is 1 GiB: far too much for a Pi.
    pub cache_kib: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commit_window_ms: 0,
            cache_kib: 2048,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionScope {
    #[default]
    PerChat,
    PerUser,
    PerUserPerChat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    pub session_scope: SessionScope,
    /// The `<prefix>` in `agent:<agent_id>:<prefix>-<id>`.
    pub session_prefix: String,
    /// Seconds for the agent to be reached and accept the turn.
    pub ack_timeout_s: u64,
    /// Seconds without progress after which a turn is given up.
    pub accumulation_timeout_s: u64,
    /// Turns running at once across all chats.
    pub max_concurrent_turns: usize,
    pub reset_reply: String,
    pub timeout_reply: String,
    pub error_reply: String,
    /// The answer to Telegram's `/start` (no agent call).
    pub start_reply: String,
    /// The answer to Telegram's `/help` (no agent call).
    pub help_reply: String,
    /// The reaction put on the message that started a turn once the reply takes longer than
    /// `ack_reaction_after_ms`, and taken off when the reply is ready. `""` turns it off. In a
    /// group only on a message that mentions the assistant.
    pub ack_reaction: String,
    pub ack_reaction_after_ms: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            session_scope: SessionScope::PerChat,
            session_prefix: "clawbox".into(),
            ack_timeout_s: 10,
            accumulation_timeout_s: 120,
            max_concurrent_turns: 8,
            reset_reply: "🗑️ Done — I've started a fresh conversation.".into(),
            timeout_reply:
                "Sorry, this is taking longer than expected. Please try again in a moment.".into(),
            error_reply:
                "Sorry, I couldn't reach the assistant just now. Please try again in a moment."
                    .into(),
            start_reply: "Hi! I'm an AI assistant, connected here by clawbox. Write to me and I'll answer. /reset (or /new) starts a fresh conversation; /help shows what I understand.".into(),
            help_reply: "Write to me in plain words and I'll answer. /reset or /new starts a fresh conversation (so does a message that is only 🗑️). React to one of my replies (👍, 👎, …) and I'll take it into account next time.".into(),
            ack_reaction: "👀".into(),
            ack_reaction_after_ms: 4000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacingConfig {
    /// Off only for benchmarks and tests: real accounts need it.
    pub enabled: bool,
    pub typing_base_ms: u64,
    pub typing_per_char_ms: u64,
    pub typing_max_ms: u64,
    /// Random minimum gap between two sends on one account, [low, high] milliseconds.
    pub min_gap_ms: [u64; 2],
    /// Random gap between the chunks of one long reply, [low, high] milliseconds.
    pub chunk_gap_ms: [u64; 2],
    /// Global send budget per channel account: sustained rate and burst.
    pub global_per_minute: u32,
    pub global_burst: u32,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            typing_base_ms: 800,
            typing_per_char_ms: 30,
            typing_max_ms: 4000,
            min_gap_ms: [1500, 3500],
            chunk_gap_ms: [300, 1000],
            global_per_minute: 20,
            global_burst: 5,
        }
    }
}

/// `[display]`: the board's pairing displays (see `board/README.md`). Every device is off by
/// default; a configured device that is missing is logged once and retried, never fatal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisplayConfig {
    /// A Linux framebuffer: `/dev/fb0` (HDMI) or `/dev/fb1` (an SPI TFT). Default: none.
    pub framebuffer: Option<PathBuf>,
    /// The I²C bus of a 128×64 SSD1306/SH1106 OLED, e.g. `/dev/i2c-1`. Default: none.
    pub oled: Option<PathBuf>,
    /// The OLED's 7-bit I²C address. Default: 0x3C (most modules; some are strapped to 0x3D).
    pub oled_address: Option<u8>,
    /// `ssd1306` (default) or `sh1106` (the 1.3" modules: 132-column RAM, shifted by 2).
    pub oled_controller: OledController,
    /// A serial console, e.g. `/dev/serial0`, `/dev/ttyAMA0` or `/dev/ttyS0`. Default: none.
    pub serial: Option<PathBuf>,
}

/// `[web]`: the pairing and status page ([`crate::web`]). Off unless `listen` is set; on any
/// address but loopback it needs `token_file`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where to serve the page, e.g. `"127.0.0.1:8080"` or `"0.0.0.0:8080"`. Default: off.
    pub listen: Option<Spanned<String>>,
    /// The page's token (first line, mode 0600, at least 16 characters). Required unless `listen`
    /// is a loopback address.
    pub token_file: Option<Spanned<PathBuf>>,
    /// Names the page may be reached by besides IP addresses and `localhost` (the `Host` header is
    /// checked against them: no DNS rebinding), e.g. `["clawbox.local"]`.
    pub hostnames: Vec<Spanned<String>>,
    #[serde(skip)]
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OledController {
    #[default]
    Ssd1306,
    Sh1106,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    Echo,
    Openai,
    Openclaw,
}

/// One `[agents.<name>]` table. Fields that do not belong to its `kind` are rejected by [`check`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub kind: Spanned<AgentKind>,
    /// openai: base URL ending in `/v1`; openclaw: `ws://` or `wss://` gateway URL.
    pub url: Option<Spanned<String>>,
    /// openai: model name.
    pub model: Option<Spanned<String>>,
    /// openai: bearer key; openclaw: gateway token. From a file (first line) or an env variable.
    pub api_key_file: Option<Spanned<PathBuf>>,
    pub api_key_env: Option<Spanned<String>>,
    pub token_file: Option<Spanned<PathBuf>>,
    pub token_env: Option<Spanned<String>>,
    /// openai: system prompt sent first in every turn.
    pub system_prompt: Option<Spanned<String>>,
    /// openai: how many past messages (user + assistant) are sent with each turn.
    pub history_messages: Option<Spanned<usize>>,
    /// openai: `max_tokens` of the request.
    pub max_tokens: Option<Spanned<u32>>,
    /// openclaw: the agent id in session keys (`agent:<agent_id>:…`).
    pub agent_id: Option<Spanned<String>>,
    /// openclaw: session key prefix (default `clawbox`).
    pub session_prefix: Option<Spanned<String>>,
    /// Per-agent overrides of the router's timeouts.
    pub ack_timeout_s: Option<Spanned<u64>>,
    pub accumulation_timeout_s: Option<Spanned<u64>>,
    #[serde(skip)]
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    #[default]
    Allowlist,
    Open,
    Disabled,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    pub telegram: Option<TelegramConfig>,
    pub whatsapp: Option<WhatsAppConfig>,
    pub console: Option<ConsoleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub agent: Option<Spanned<String>>,
    pub token_file: Option<Spanned<PathBuf>>,
    pub token_env: Option<Spanned<String>>,
    #[serde(default)]
    pub dm_policy: DmPolicy,
    /// Numeric Telegram user ids.
    #[serde(default)]
    pub allow_from: Vec<Spanned<i64>>,
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_s: Spanned<u64>,
    /// Bot API root; a local Bot API server or a test fake.
    #[serde(default = "default_telegram_root")]
    pub api_root: Spanned<String>,
    /// Answer edits of earlier messages as new messages.
    #[serde(default)]
    pub handle_edits: bool,
    /// Group chats: see [`groups`].
    #[serde(default)]
    pub groups: groups::GroupsConfig,
    #[serde(skip)]
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub agent: Option<Spanned<String>>,
    #[serde(default)]
    pub dm_policy: DmPolicy,
    /// E.164 numbers (`+` and digits) or LIDs (`<digits>@lid`): each names a person, whichever
    /// address form their messages arrive in.
    #[serde(default)]
    pub allow_from: Vec<Spanned<String>>,
    /// The owner's own "message yourself" chat talks to the assistant.
    #[serde(default = "yes")]
    pub self_chat: bool,
    #[serde(default = "default_self_prefix")]
    pub self_prefix: String,
    #[serde(default = "yes")]
    pub read_receipts: bool,
    /// WebSocket endpoint; tests point it at the fake server.
    #[serde(default = "default_whatsapp_url")]
    pub server_url: Spanned<String>,
    /// The document WhatsApp Web's current version is read from (its service worker, `sw.js`,
    /// which names the `client_revision`): fetched when the channel starts and whenever WhatsApp
    /// answers a login with 405 (client outdated). Tests point it at the fake server.
    #[serde(default = "default_whatsapp_version_url")]
    pub version_url: Spanned<String>,
    /// Group chats: see [`groups`].
    #[serde(default)]
    pub groups: groups::GroupsConfig,
}

/// On, allowlist policy with nobody listed: only the owner's self chat reaches the assistant.
impl Default for WhatsAppConfig {
    fn default() -> Self {
        WhatsAppConfig {
            enabled: true,
            agent: None,
            dm_policy: DmPolicy::default(),
            allow_from: Vec::new(),
            self_chat: true,
            self_prefix: default_self_prefix(),
            read_receipts: true,
            server_url: default_whatsapp_url(),
            version_url: default_whatsapp_version_url(),
            groups: groups::GroupsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub agent: Option<Spanned<String>>,
    /// Also read stdin as a channel in `clawbox run` (foreground debugging); `clawbox chat`
    /// always uses the console.
    #[serde(default)]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn default_poll_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 50)
}
fn default_telegram_root() -> Spanned<String> {
    Spanned::new(0..0, "https://api.telegram.org".into())
}
fn default_whatsapp_url() -> Spanned<String> {
    Spanned::new(0..0, "wss://web.whatsapp.com/ws/chat".into())
}
fn default_whatsapp_version_url() -> Spanned<String> {
    Spanned::new(0..0, crate::channel::whatsapp::DEFAULT_VERSION_URL.into())
}
fn default_self_prefix() -> String {
    "🤖 ".into()
}

/// The built-in agent used when no `[agents.*]` is declared.
pub const BUILTIN_AGENT: &str = "echo";

impl Config {
    /// Reads, parses and checks `path`. Secrets are loaded here, so a missing token file is a
    /// config error at start-up, not a surprise hours later.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        Config::load_partial(path).and_then(whole)
    }

    /// Like [`Config::load`], but a file that parses is returned with the problems the checks
    /// found in it (empty when valid): `clawbox doctor` reports them and still checks the rest
    /// of the box. A file that cannot be read or parsed is an error as in [`Config::load`].
    pub fn load_partial(path: &Path) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
        let at = |message: String| {
            vec![ConfigError {
                path: Some(path.to_path_buf()),
                line_col: None,
                message,
            }]
        };
        let meta =
            std::fs::metadata(path).map_err(|e| at(format!("cannot read the config file: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(at(format!(
                "the file is {} bytes; a config is at most {MAX_CONFIG_BYTES}",
                meta.len()
            )));
        }
        if let Some(w) = writable_by_all(path, &meta) {
            tracing::warn!("{w}");
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| at(format!("cannot read the config file: {e}")))?;
        Config::parse_partial(&text, Some(path))
    }

    /// Parses and checks config text. `path` is only used in messages.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
        Config::parse_partial(text, path).and_then(whole)
    }

    /// [`Config::parse`], returning the config with the problems the checks found in it.
    pub fn parse_partial(
        text: &str,
        path: Option<&Path>,
    ) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            vec![ConfigError {
                path: path.map(Path::to_path_buf),
                line_col: e.span().map(|s| line_col(text, s.start)),
                message: plain_words(e.message().trim_end()),
            }]
        })?;
        cfg.source = path.map(Path::to_path_buf);
        let problems = check::check(&mut cfg, text).err().unwrap_or_default();
        Ok((cfg, problems))
    }

    /// Finds the config: `explicit`, else the first of [`DEFAULT_PATHS`] that exists, else none
    /// (embedded defaults).
    pub fn discover(explicit: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
        Config::discover_partial(explicit).and_then(whole)
    }

    /// [`Config::discover`] with [`Config::load_partial`]'s answer.
    pub fn discover_partial(
        explicit: Option<&Path>,
    ) -> Result<(Config, Vec<ConfigError>), Vec<ConfigError>> {
        if let Some(p) = explicit {
            return Config::load_partial(p);
        }
        for p in DEFAULT_PATHS {
            let p = Path::new(p);
            if p.exists() {
                return Config::load_partial(p);
            }
        }
        Ok((Config::default(), Vec::new()))
    }

    /// The state directory, the same for every command: configured, else `$STATE_DIRECTORY`
    /// (systemd's `StateDirectory=`), else `/var/lib/clawbox` when it exists (an installed box),
    /// else `./state`. See [`crate::state_dir::resolve`].
    pub fn state_dir(&self) -> PathBuf {
        crate::state_dir::resolve(self.gateway.state_dir.as_deref())
    }

    /// The agent a channel uses: its `agent = …`, else the only declared agent, else the built-in echo.
    fn agent_for(&self, named: Option<&Spanned<String>>) -> String {
        if let Some(n) = named {
            return n.get_ref().clone();
        }
        if self.agents.len() == 1 {
            if let Some(k) = self.agents.keys().next() {
                return k.clone();
            }
        }
        BUILTIN_AGENT.to_string()
    }

    /// The agent a channel uses ([`Config::agent_for`] with the channel's own `agent = …`).
    pub fn agent_of(&self, kind: crate::vocab::ChannelKind) -> String {
        use crate::vocab::ChannelKind;
        let c = &self.channels;
        self.agent_for(match kind {
            ChannelKind::Console => c.console.as_ref().and_then(|c| c.agent.as_ref()),
            ChannelKind::Telegram => c.telegram.as_ref().and_then(|c| c.agent.as_ref()),
            ChannelKind::WhatsApp => c.whatsapp.as_ref().and_then(|c| c.agent.as_ref()),
        })
    }

    /// An agent's router settings with the `[router]` defaults filled in (`None`: the built-in
    /// echo, which has no table of its own).
    pub fn agent_settings(&self, acfg: Option<&AgentConfig>, name: &str) -> AgentSettings {
        let r = &self.router;
        let Some(a) = acfg else {
            return AgentSettings {
                agent_id: name.to_string(),
                prefix: r.session_prefix.clone(),
                ack_timeout: Duration::from_secs(r.ack_timeout_s),
                accumulation_timeout: Duration::from_secs(r.accumulation_timeout_s),
            };
        };
        let agent_id = match a.kind.get_ref() {
            // The gateway's own agent, `main` unless the config names another.
            AgentKind::Openclaw => a
                .agent_id
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_else(|| "main".into()),
            _ => name.to_string(),
        };
        AgentSettings {
            agent_id,
            prefix: a
                .session_prefix
                .as_ref()
                .map(|s| s.get_ref().clone())
                .unwrap_or_else(|| r.session_prefix.clone()),
            ack_timeout: Duration::from_secs(
                a.ack_timeout_s
                    .as_ref()
                    .map(|v| *v.get_ref())
                    .unwrap_or(r.ack_timeout_s),
            ),
            accumulation_timeout: Duration::from_secs(
                a.accumulation_timeout_s
                    .as_ref()
                    .map(|v| *v.get_ref())
                    .unwrap_or(r.accumulation_timeout_s),
            ),
        }
    }
}

/// An agent's settings as the router uses them, every default resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// The `<agent_id>` in session keys.
    pub agent_id: String,
    pub prefix: String,
    pub ack_timeout: Duration,
    pub accumulation_timeout: Duration,
}

/// A config anyone can write lets anyone choose who may talk to the assistant and where messages
/// go: said (with the fix), not refused, since the file holds no secrets (those live in their own
/// 0600 files). None when only its owner (and group) may write it.
pub fn writable_by_all(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o002 == 0 {
        return None;
    }
    let p = crate::cli::shell_quote(&path.display().to_string()).into_owned();
    Some(format!(
        "{p} is writable by every user on this box (mode {mode:04o}): anyone could change who \
         may talk to your assistant; run: chmod o-w {p}"
    ))
}

/// A config with problems is no config.
fn whole((cfg, problems): (Config, Vec<ConfigError>)) -> Result<Config, Vec<ConfigError>> {
    if problems.is_empty() {
        Ok(cfg)
    } else {
        Err(problems)
    }
}

/// serde names Rust types in its messages; an owner editing a config needs TOML words.
fn plain_words(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, toml) in [
        ("expected u64", "expected a whole number (e.g. 10)"),
        ("expected u32", "expected a whole number (e.g. 10)"),
        ("expected usize", "expected a whole number (e.g. 10)"),
        ("expected i64", "expected a whole number (e.g. 123456789)"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected a quoted string"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}
