//! OpenClaw's `openclaw.json` (JSON5, read by [`super::json5`]) → clawbox.toml text and the
//! secrets to put in files. Pure: [`convert`] reads a string and
//! returns strings, so a fuzz target can drive it; the command around it ([`super`]) does the I/O.
//!
//! Carried over: WhatsApp's and Telegram's `enabled`, `dmPolicy` and `allowFrom` (and WhatsApp's
//! `sendReadReceipts`), the Telegram bot token, and the gateway's URL and token as an `openclaw`
//! agent (with the default agent's id). Everything else gets a comment naming it and why it stays
//! behind; a secret's value is never written into the TOML, nor into a comment.

pub use super::json5::ImportError;
use crate::config::Secret;
use crate::config::check::is_e164;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::path::Path;

/// The file the Telegram bot token is written to.
pub const TELEGRAM_TOKEN_FILE: &str = "telegram.token";
/// The file the gateway token is written to.
pub const GATEWAY_TOKEN_FILE: &str = "openclaw.token";
/// OpenClaw's gateway port when its config names none.
const DEFAULT_GATEWAY_PORT: u64 = 18789;
/// The environment variable OpenClaw itself falls back to for the bot token.
const TELEGRAM_TOKEN_ENV: &str = "TELEGRAM_BOT_TOKEN";
/// The environment variable OpenClaw itself falls back to for the gateway token.
const GATEWAY_TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

/// The result: the TOML text, and the secrets it names by file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub toml: String,
    pub secrets: Vec<SecretFile>,
}

/// A secret for a file of its own (mode 0600), named in the TOML by `name` under the secrets
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub name: &'static str,
    pub value: Secret,
}

/// Converts an OpenClaw config to clawbox.toml. The TOML names each secret file as
/// `secrets_dir/<name>` (just `<name>`, relative to the config file, when `secrets_dir` is empty).
pub fn convert(text: &str, secrets_dir: &Path) -> Result<Imported, ImportError> {
    let root = super::json5::parse(text)?;
    let Some(root) = root.as_object() else {
        return Err(ImportError {
            line_col: Some((1, 1)),
            message: "an OpenClaw config is one object, { … }".into(),
        });
    };
    let mut out = Out {
        text: String::new(),
        secrets: Vec::new(),
        secrets_dir,
    };
    out.line("# clawbox.toml, imported from an OpenClaw config by `clawbox import openclaw`.");
    out.line(
        "# Check it with `clawbox config check FILE`. Every OpenClaw setting that could not be",
    );
    out.line("# carried over is named in a comment below (a secret's value never is).");
    gateway(&mut out, root);
    let channels = root.get("channels").and_then(Value::as_object);
    whatsapp(&mut out, channels.and_then(|c| c.get("whatsapp")));
    telegram(&mut out, channels.and_then(|c| c.get("telegram")));
    let mut left = Vec::new();
    if let Some(c) = channels {
        for k in c
            .keys()
            .filter(|k| !["whatsapp", "telegram"].contains(&k.as_str()))
        {
            left.push((
                format!("channels.{k}"),
                "clawbox has WhatsApp and Telegram only",
            ));
        }
    }
    for k in root.keys() {
        let why = match k.as_str() {
            "channels" | "gateway" => continue,
            "agents" | "models" | "tools" | "skills" | "auth" | "plugins" => {
                "the assistant's own setting: it stays with OpenClaw, which clawbox talks to"
            }
            _ => "an OpenClaw setting with no clawbox equivalent",
        };
        left.push((k.clone(), why));
    }
    if !left.is_empty() {
        out.line("");
        out.comment("The rest of OpenClaw's config:");
        out.not_carried(&left);
    }
    Ok(Imported {
        toml: out.text,
        secrets: out.secrets,
    })
}

struct Out<'a> {
    text: String,
    secrets: Vec<SecretFile>,
    secrets_dir: &'a Path,
}

impl Out<'_> {
    fn line(&mut self, l: &str) {
        self.text.push_str(l);
        self.text.push('\n');
    }
    fn comment(&mut self, l: &str) {
        let _ = writeln!(self.text, "# {l}");
    }
    fn key(&mut self, k: &str, raw: &str) {
        let _ = writeln!(self.text, "{k} = {raw}");
    }
    fn not_carried(&mut self, left: &[(String, &str)]) {
        for (k, why) in left {
            self.comment(&format!("not carried over: {k} ({why})"));
        }
    }
    /// A secret: `${NAME}` is OpenClaw's reference to an environment variable, kept as one;
    /// anything else goes to the file `file`. Writes `<kind>_file` or `<kind>_env`.
    fn secret(&mut self, kind: &str, value: &str, file: &'static str) {
        if let Some(var) = env_reference(value) {
            self.key(&format!("{kind}_env"), &quote(var));
            return;
        }
        let path = self.secrets_dir.join(file);
        self.key(&format!("{kind}_file"), &quote(&path.display().to_string()));
        self.secrets.push(SecretFile {
            name: file,
            value: Secret::new(value.trim().to_string()),
        });
    }
}

/// `${NAME}` → NAME (OpenClaw substitutes environment variables written so).
fn env_reference(v: &str) -> Option<&str> {
    let name = v.trim().strip_prefix("${")?.strip_suffix('}')?;
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(name)
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A JSON value's text for a comment: strings as they are, anything else as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

fn gateway(out: &mut Out<'_>, root: &Map<String, Value>) {
    let g = root.get("gateway").and_then(Value::as_object);
    let get = |path: &str| g.and_then(|g| g.get(path));
    let remote = get("remote").and_then(Value::as_object);
    let auth = get("auth").and_then(Value::as_object);
    out.line("");
    out.line("[agents.openclaw]");
    out.key("kind", &quote("openclaw"));
    let remote_url = non_empty_str(remote.and_then(|r| r.get("url")));
    let used = ["mode", "port", "bind", "auth", "remote"];
    let token = match remote_url {
        Some(url) => {
            out.key("url", &quote(url));
            non_empty_str(remote.and_then(|r| r.get("token")))
                .or_else(|| non_empty_str(auth.and_then(|a| a.get("token"))))
        }
        None => {
            let port = get("port")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_GATEWAY_PORT);
            let bind = get("bind").map(shown).unwrap_or_else(|| "loopback".into());
            out.comment(&format!(
                "OpenClaw's gateway listens on port {port} (bind \"{bind}\"): 127.0.0.1 reaches it"
            ));
            out.comment("only on this same machine; else write its address (wss:// off loopback).");
            out.key("url", &quote(&format!("ws://127.0.0.1:{port}")));
            non_empty_str(auth.and_then(|a| a.get("token")))
        }
    };
    match token {
        Some(t) => out.secret("token", t, GATEWAY_TOKEN_FILE),
        None => {
            let mode = auth.and_then(|a| a.get("mode")).map(shown);
            out.comment(&match mode.as_deref() {
                Some("password") => "the gateway uses password auth, which clawbox does not speak: \
                                     give it a token (gateway.auth.mode = \"token\") and put it in:"
                    .to_string(),
                _ => "no gateway token in OpenClaw's config: set it in this variable (or a token_file):"
                    .to_string(),
            });
            out.key("token_env", &quote(GATEWAY_TOKEN_ENV));
        }
    }
    // The default agent, when OpenClaw's config names one other than its own default.
    let agents = root.get("agents").and_then(Value::as_object);
    let default_id = agents
        .and_then(|a| a.get("list"))
        .and_then(Value::as_array)
        .and_then(|l| {
            l.iter()
                .find(|a| a.get("default").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|a| non_empty_str(a.get("id")));
    if let Some(id) = default_id.filter(|id| *id != crate::agent::openclaw::DEFAULT_AGENT_ID) {
        out.key("agent_id", &quote(id));
    }
    if let Some(a) = auth {
        let left: Vec<(String, &str)> = a
            .keys()
            .filter(|k| !["mode", "token"].contains(&k.as_str()))
            .map(|k| (format!("gateway.auth.{k}"), "the gateway's own setting"))
            .collect();
        out.not_carried(&left);
    }
    if let Some(g) = g {
        let left: Vec<(String, &str)> = g
            .keys()
            .filter(|k| !used.contains(&k.as_str()))
            .map(|k| (format!("gateway.{k}"), "the gateway's own setting"))
            .collect();
        out.not_carried(&left);
    }
}

/// OpenClaw's `dmPolicy` and `allowFrom` → clawbox's `dm_policy` and what to allow; comments for
/// what does not fit. `entry` turns one allowFrom entry into its TOML value, or says why not.
fn policy(
    out: &mut Out<'_>,
    table: &str,
    c: &Map<String, Value>,
    entry: impl Fn(&Value) -> Result<String, String>,
) {
    let everyone = c
        .get("allowFrom")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|v| v.as_str() == Some("*")));
    let policy = c
        .get("dmPolicy")
        .and_then(Value::as_str)
        .unwrap_or("pairing");
    let mapped = match policy {
        "open" | "disabled" => policy,
        "allowlist" if everyone => {
            out.comment("allowFrom [\"*\"] lets everyone write: that is dm_policy \"open\"");
            "open"
        }
        "allowlist" => policy,
        "pairing" => {
            out.comment(
                "OpenClaw's dmPolicy \"pairing\" (strangers get a code you approve) has no",
            );
            out.comment("clawbox equivalent: only allow_from gets in. Senders you approved are in");
            out.comment("OpenClaw's pairing store, not in its config: add them here.");
            if everyone { "open" } else { "allowlist" }
        }
        other => {
            out.comment(&format!(
                "dmPolicy \"{other}\" is unknown: allowlist (only allow_from gets in)"
            ));
            "allowlist"
        }
    };
    out.key("dm_policy", &quote(mapped));
    let mut allowed = Vec::new();
    for v in c
        .get("allowFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.as_str() == Some("*") {
            continue;
        }
        match entry(v) {
            Ok(t) => allowed.push(t),
            Err(why) => out.comment(&format!(
                "not carried over: {table}.allowFrom entry {} ({why})",
                shown(v)
            )),
        }
    }
    if mapped == "allowlist" && allowed.is_empty() {
        out.comment("allow_from is empty: add who may write, or clawbox refuses this channel");
    }
    out.key("allow_from", &format!("[{}]", allowed.join(", ")));
}

fn whatsapp(out: &mut Out<'_>, v: Option<&Value>) {
    out.line("");
    let Some(c) = v.and_then(Value::as_object) else {
        out.comment("OpenClaw's config has no channels.whatsapp: WhatsApp stays off (no table).");
        return;
    };
    out.line("[channels.whatsapp]");
    out.comment("The link itself is not carried over: link this box with `clawbox pair whatsapp`.");
    if c.get("enabled").and_then(Value::as_bool) == Some(false) {
        out.key("enabled", "false");
    }
    policy(out, "channels.whatsapp", c, |v| match v.as_str() {
        Some(n) if is_e164(n) => Ok(quote(n)),
        _ => Err("not an E.164 number: + then country code and number".into()),
    });
    if let Some(b) = c.get("sendReadReceipts").and_then(Value::as_bool) {
        out.key("read_receipts", if b { "true" } else { "false" });
    }
    let used = ["enabled", "dmPolicy", "allowFrom", "sendReadReceipts"];
    let left: Vec<(String, &str)> = c
        .keys()
        .filter(|k| !used.contains(&k.as_str()))
        .map(|k| {
            let why = match k.as_str() {
                "groups" | "groupPolicy" | "groupAllowFrom" => {
                    "clawbox ignores group chats in this version"
                }
                "accounts" => "clawbox links one WhatsApp account",
                "selfChatMode" => "clawbox answers in your own chat anyway (self_chat = true)",
                _ => "no clawbox equivalent",
            };
            (format!("channels.whatsapp.{k}"), why)
        })
        .collect();
    out.not_carried(&left);
}

fn telegram(out: &mut Out<'_>, v: Option<&Value>) {
    let Some(c) = v.and_then(Value::as_object) else {
        return;
    };
    out.line("");
    out.line("[channels.telegram]");
    if c.get("enabled").and_then(Value::as_bool) == Some(false) {
        out.key("enabled", "false");
    }
    match (
        non_empty_str(c.get("botToken")),
        non_empty_str(c.get("tokenFile")),
    ) {
        (Some(t), _) => out.secret("token", t, TELEGRAM_TOKEN_FILE),
        (None, Some(f)) => {
            out.comment("the token stays in its file: mode 0600, owned by the service's user");
            out.key("token_file", &quote(f));
        }
        (None, None) => {
            out.comment("no botToken in OpenClaw's config: it read this variable, so does clawbox");
            out.key("token_env", &quote(TELEGRAM_TOKEN_ENV));
        }
    }
    policy(out, "channels.telegram", c, |v| {
        let id = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => {
                let s = s.trim();
                let s = s
                    .strip_prefix("telegram:")
                    .or_else(|| s.strip_prefix("tg:"))
                    .unwrap_or(s);
                s.parse::<i64>().ok()
            }
            _ => None,
        };
        match id {
            Some(id) if id > 0 => Ok(id.to_string()),
            _ if v.as_str().is_some_and(|s| s.starts_with('@')) => Err(
                "a username: clawbox needs the numeric user id (@userinfobot tells you yours)"
                    .into(),
            ),
            _ => Err("not a numeric Telegram user id".into()),
        }
    });
    let used = ["enabled", "botToken", "tokenFile", "dmPolicy", "allowFrom"];
    let left: Vec<(String, &str)> = c
        .keys()
        .filter(|k| !used.contains(&k.as_str()))
        .map(|k| {
            let why = match k.as_str() {
                "groups" | "groupPolicy" | "groupAllowFrom" => {
                    "clawbox ignores group chats in this version"
                }
                "accounts" => "clawbox runs one bot",
                "webhookUrl" | "webhookSecret" => "clawbox long-polls; no webhook needed",
                _ => "no clawbox equivalent",
            };
            (format!("channels.telegram.{k}"), why)
        })
        .collect();
    out.not_carried(&left);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DmPolicy};

    /// The shape the people this comes from had: JSON5 with comments, unquoted keys, single
    /// quotes and trailing commas.
    const SEED: &str = r#"
// ~/.openclaw/openclaw.json
{
  gateway: {
    mode: 'remote',
    remote: { url: 'wss://claw.example.net:18789', token: 'gw-Secret-0123456789' },
    controlUi: { enabled: true },
  },
  agents: { defaults: { model: { primary: 'anthropic/claude' } }, list: [{ id: 'home', default: true }] },
  channels: {
    whatsapp: { dmPolicy: "allowlist", allowFrom: ["+491701234567", "0170 999"], groups: { '*': { requireMention: true } } },
    telegram: {
      enabled: true,
      dmPolicy: 'allowlist',
      allowFrom: ["123456789", 987654321, "@someone"],
      botToken: "123456:ABC-def_GHI",
    },
    discord: { enabled: false },
  },
}
"#;

    /// Converts, writes the secrets next to a config in a temp dir, and loads it as the service
    /// would.
    fn load(text: &str) -> (Imported, Result<Config, Vec<crate::config::ConfigError>>) {
        let imported = convert(text, Path::new("")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for s in &imported.secrets {
            let p = dir.path().join(s.name);
            std::fs::write(&p, s.value.expose()).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = Config::parse(&imported.toml, Some(&dir.path().join("clawbox.toml")));
        (imported, cfg)
    }

    #[test]
    fn the_seed_config_becomes_a_valid_clawbox_toml() {
        let (imported, cfg) = load(SEED);
        let cfg = cfg.unwrap_or_else(|e| panic!("{e:?}\n{}", imported.toml));
        let t = &imported.toml;
        let wa = cfg.channels.whatsapp.as_ref().unwrap();
        assert_eq!(wa.dm_policy, DmPolicy::Allowlist);
        let nums: Vec<&str> = wa.allow_from.iter().map(|n| n.get_ref().as_str()).collect();
        assert_eq!(nums, ["+491701234567"]);
        let tg = cfg.channels.telegram.as_ref().unwrap();
        assert!(tg.enabled);
        assert_eq!(tg.dm_policy, DmPolicy::Allowlist);
        let ids: Vec<i64> = tg.allow_from.iter().map(|i| *i.get_ref()).collect();
        assert_eq!(ids, [123456789, 987654321]);
        assert_eq!(tg.token.as_ref().unwrap().expose(), "123456:ABC-def_GHI");
        let oc = &cfg.agents["openclaw"];
        assert_eq!(
            oc.url.as_ref().unwrap().get_ref(),
            "wss://claw.example.net:18789"
        );
        assert_eq!(oc.secret.as_ref().unwrap().expose(), "gw-Secret-0123456789");
        assert_eq!(oc.agent_id.as_ref().unwrap().get_ref(), "home");
        // Secrets live in files only.
        let names: Vec<&str> = imported.secrets.iter().map(|s| s.name).collect();
        assert_eq!(names, [GATEWAY_TOKEN_FILE, TELEGRAM_TOKEN_FILE]);
        assert!(
            !t.contains("ABC-def_GHI") && !t.contains("gw-Secret"),
            "{t}"
        );
        // Every setting left behind is named.
        for left in [
            "not carried over: channels.whatsapp.groups (clawbox ignores group chats",
            "channels.whatsapp.allowFrom entry 0170 999 (not an E.164 number",
            "channels.telegram.allowFrom entry @someone (a username",
            "not carried over: channels.discord (clawbox has WhatsApp and Telegram only)",
            "not carried over: gateway.controlUi",
            "not carried over: agents (the assistant's own setting",
        ] {
            assert!(t.contains(left), "missing {left:?} in\n{t}");
        }
    }

    #[test]
    fn pairing_and_open_policies_and_env_references_map_to_what_clawbox_has() {
        let text = r#"{
          gateway: { port: 19001, auth: { mode: 'token', token: '${GW_TOKEN}' } },
          channels: {
            whatsapp: { allowFrom: ['+15550001111'], sendReadReceipts: false },
            telegram: { dmPolicy: 'allowlist', allowFrom: ['*'], botToken: '${TG}' },
          },
        }"#;
        let imported = convert(text, Path::new("/etc/clawbox")).unwrap();
        let t = &imported.toml;
        assert!(
            imported.secrets.is_empty(),
            "env references stay references"
        );
        assert!(
            t.contains("token_env = \"GW_TOKEN\"") && t.contains("token_env = \"TG\""),
            "{t}"
        );
        assert!(t.contains("url = \"ws://127.0.0.1:19001\""), "{t}");
        // No dmPolicy is OpenClaw's default "pairing": allowlist here, said so.
        assert!(t.contains("dmPolicy \"pairing\""), "{t}");
        assert!(t.contains("read_receipts = false"), "{t}");
        // allowFrom ["*"] is everyone.
        assert!(t.contains("dm_policy = \"open\""), "{t}");
        let v: toml::Value = toml::from_str(t).unwrap();
        assert_eq!(
            v["channels"]["whatsapp"]["dm_policy"].as_str(),
            Some("allowlist")
        );
        assert_eq!(
            v["channels"]["telegram"]["dm_policy"].as_str(),
            Some("open")
        );
        // A secret in a file outside the config's directory is named absolutely.
        let (imported, _) = (
            convert(
                r#"{channels:{telegram:{botToken:'1:x',allowFrom:[1]}}}"#,
                Path::new("/s"),
            )
            .unwrap(),
            (),
        );
        assert!(
            imported.toml.contains("token_file = \"/s/telegram.token\""),
            "{}",
            imported.toml
        );
        // No WhatsApp table in OpenClaw's config: none here either (clawbox's default is off).
        assert!(!imported.toml.contains("[channels.whatsapp]"));
    }

    #[test]
    fn a_config_is_one_object() {
        for text in ["[1, 2]", "", "'text'"] {
            let e = convert(text, Path::new("")).unwrap_err();
            assert!(e.message.contains("one object"), "{text:?}: {e:?}");
            assert_eq!(e.line_col, Some((1, 1)));
        }
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        let text = r#"{ gateway: { remote: { url: 'wss://x/"]\n[evil]', token: 't' } } }"#;
        let t = convert(text, Path::new("")).unwrap().toml;
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(
            v["agents"]["openclaw"]["url"].as_str(),
            Some("wss://x/\"]\n[evil]")
        );
        assert!(v.get("evil").is_none());
    }
}
