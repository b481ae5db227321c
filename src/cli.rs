//! The command line: parses arguments into a [`Command`], and quotes the words of a command we tell
//! the user to run ([`shell_quote`]). lexopt keeps this to a few KB of binary (clap derive costs
//! ~190 KB on ARM) for nine subcommands.

use std::path::PathBuf;

pub const USAGE: &str = "\
clawbox — your WhatsApp and Telegram, connected to your own AI assistant

Usage:
  clawbox run [--config PATH]              run the gateway (the systemd service runs this)
  clawbox chat [--config PATH]             talk to your agent from this terminal
  clawbox config check [PATH]              check a config file; exit 0 if valid, 78 if not
  clawbox status [--config PATH]           ask the running gateway how each channel is doing
  clawbox pair whatsapp [--phone +E164] [--config PATH]
                                           link your WhatsApp (QR, or an 8-character code),
                                           through the running service if there is one
  clawbox unpair whatsapp [--yes] [--config PATH]
                                           log out and wipe the WhatsApp state (asks first)
  clawbox groups list [--config PATH]      the WhatsApp groups the account is in, with their ids
  clawbox providers test [NAME] [--json] [--config PATH]
                                           really connect to each configured agent
  clawbox doctor [--json] [--config PATH]  check the whole box; each problem with its fix
  clawbox import openclaw PATH/openclaw.json [--out FILE] [--secrets-dir DIR]
                                           write a clawbox.toml from an OpenClaw config
  clawbox --version | --help

Without --config, clawbox reads /etc/clawbox/clawbox.toml, else ./clawbox.toml, else runs on its
embedded defaults (the built-in echo agent). State: the config's state_dir, else $STATE_DIRECTORY,
else /var/lib/clawbox if it exists (an installed box), else ./state; the same for every command.
`pair`, `unpair`, `status` and `groups list` reach the running service through <state>/control.sock (root and
the service's user only).";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<PathBuf>,
    },
    Chat {
        config: Option<PathBuf>,
    },
    ConfigCheck {
        path: Option<PathBuf>,
    },
    Status {
        config: Option<PathBuf>,
    },
    ProvidersTest {
        name: Option<String>,
        json: bool,
        config: Option<PathBuf>,
    },
    /// `pair whatsapp`: link the WhatsApp account (through the running service, else directly).
    PairWhatsApp {
        phone: Option<String>,
        config: Option<PathBuf>,
    },
    /// `unpair whatsapp`: log out and wipe the WhatsApp state; `yes`: without asking.
    UnpairWhatsApp {
        yes: bool,
        config: Option<PathBuf>,
    },
    /// `groups list`: the WhatsApp groups the linked account is in (through the service).
    GroupsList {
        config: Option<PathBuf>,
    },
    /// `doctor`: check the whole box and say what to fix.
    Doctor {
        json: bool,
        config: Option<PathBuf>,
    },
    /// `import openclaw`: a clawbox.toml (stdout or `out`) from an OpenClaw config; its secrets go
    /// to files next to `out` or in `secrets_dir`.
    ImportOpenClaw {
        input: PathBuf,
        out: Option<PathBuf>,
        secrets_dir: Option<PathBuf>,
    },
    Help,
    Version,
}

/// A usage error, printed with the usage text; exit 64 (EX_USAGE).
#[derive(Debug)]
pub struct UsageError(pub String);

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let err = |e: lexopt::Error| UsageError(e.to_string());
    let mut positional: Vec<String> = Vec::new();
    let mut config: Option<PathBuf> = None;
    let mut json = false;
    let mut phone: Option<String> = None;
    let mut yes = false;
    let mut out: Option<PathBuf> = None;
    let mut secrets_dir: Option<PathBuf> = None;
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('c') | Long("config") => config = Some(PathBuf::from(p.value().map_err(err)?)),
            Long("json") => json = true,
            Short('y') | Long("yes") => yes = true,
            Long("phone") => phone = Some(p.value().map_err(err)?.string().map_err(err)?),
            Long("out") => out = Some(PathBuf::from(p.value().map_err(err)?)),
            Long("secrets-dir") => secrets_dir = Some(PathBuf::from(p.value().map_err(err)?)),
            Value(v) => positional.push(v.string().map_err(err)?),
            other => return Err(UsageError(other.unexpected().to_string())),
        }
    }
    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    if phone.is_some() && words.as_slice() != ["pair", "whatsapp"] {
        return Err(UsageError("--phone only goes with `pair whatsapp`".into()));
    }
    if yes && words.as_slice() != ["unpair", "whatsapp"] {
        return Err(UsageError("--yes only goes with `unpair whatsapp`".into()));
    }
    let importing = words.first() == Some(&"import");
    if (out.is_some() || secrets_dir.is_some()) && !importing {
        return Err(UsageError(
            "--out and --secrets-dir only go with `import openclaw`".into(),
        ));
    }
    let no_json = |c: Command| {
        if json {
            Err(UsageError(
                "--json only goes with `providers test` and `doctor`".into(),
            ))
        } else {
            Ok(c)
        }
    };
    match words.as_slice() {
        [] => Err(UsageError("missing a command".into())),
        ["run"] => no_json(Command::Run { config }),
        ["chat"] => no_json(Command::Chat { config }),
        ["status"] => no_json(Command::Status { config }),
        ["config", "check"] => no_json(Command::ConfigCheck { path: config }),
        ["config", "check", path] if config.is_none() => no_json(Command::ConfigCheck {
            path: Some(PathBuf::from(path)),
        }),
        ["providers", "test"] => Ok(Command::ProvidersTest {
            name: None,
            json,
            config,
        }),
        ["providers", "test", name] => Ok(Command::ProvidersTest {
            name: Some((*name).to_string()),
            json,
            config,
        }),
        ["pair", "whatsapp"] => {
            if let Some(n) = &phone {
                let digits = n.strip_prefix('+').unwrap_or_default();
                if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(UsageError(format!(
                        "--phone {n}: write + then country code and number, e.g. +491701234567"
                    )));
                }
            }
            no_json(Command::PairWhatsApp { phone, config })
        }
        ["unpair", "whatsapp"] => no_json(Command::UnpairWhatsApp { yes, config }),
        ["groups", "list"] => no_json(Command::GroupsList { config }),
        ["doctor"] => Ok(Command::Doctor { json, config }),
        ["import", "openclaw", input] if config.is_none() => no_json(Command::ImportOpenClaw {
            input: PathBuf::from(input),
            out,
            secrets_dir,
        }),
        ["import", "openclaw"] => Err(UsageError(
            "which OpenClaw config? e.g. clawbox import openclaw ~/.openclaw/openclaw.json".into(),
        )),
        ["import", ..] => Err(UsageError(
            "clawbox imports from OpenClaw: clawbox import openclaw PATH/openclaw.json".into(),
        )),
        ["help"] => Ok(Command::Help),
        other => Err(UsageError(format!("unknown command `{}`", other.join(" ")))),
    }
}

/// `word` as one shell word: unchanged when it is plain, else in single quotes.
pub fn shell_quote(word: &str) -> std::borrow::Cow<'_, str> {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@,%=".contains(&b));
    if plain {
        word.into()
    } else {
        format!("'{}'", word.replace('\'', "'\\''")).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, UsageError> {
        parse(s.split_whitespace().map(std::ffi::OsString::from))
    }

    #[test]
    fn commands() {
        assert_eq!(p("run").unwrap(), Command::Run { config: None });
        assert_eq!(
            p("run --config /x.toml").unwrap(),
            Command::Run {
                config: Some("/x.toml".into())
            }
        );
        assert_eq!(
            p("config check a.toml").unwrap(),
            Command::ConfigCheck {
                path: Some("a.toml".into())
            }
        );
        assert_eq!(
            p("providers test oc --json").unwrap(),
            Command::ProvidersTest {
                name: Some("oc".into()),
                json: true,
                config: None
            }
        );
        assert_eq!(p("--version").unwrap(), Command::Version);
        assert!(p("").is_err());
        assert!(p("run --bogus").is_err());
        assert!(p("fly").is_err());
        assert!(p("run --json").is_err());
        assert_eq!(
            p("pair whatsapp").unwrap(),
            Command::PairWhatsApp {
                phone: None,
                config: None
            }
        );
        assert_eq!(
            p("pair whatsapp --phone +491701234567").unwrap(),
            Command::PairWhatsApp {
                phone: Some("+491701234567".into()),
                config: None
            }
        );
        assert!(p("pair whatsapp --phone 0170").is_err());
        assert_eq!(
            p("doctor --json --config /c.toml").unwrap(),
            Command::Doctor {
                json: true,
                config: Some("/c.toml".into())
            }
        );
        assert_eq!(
            p("import openclaw /o/openclaw.json --out /etc/clawbox/clawbox.toml").unwrap(),
            Command::ImportOpenClaw {
                input: "/o/openclaw.json".into(),
                out: Some("/etc/clawbox/clawbox.toml".into()),
                secrets_dir: None
            }
        );
        assert!(p("import openclaw").is_err());
        assert!(p("import hermes x.json").is_err());
        assert!(p("import openclaw x.json --json").is_err());
        assert!(p("run --out x.toml").is_err());
        assert!(p("run --phone +491701234567").is_err());
        assert_eq!(
            p("unpair whatsapp --yes").unwrap(),
            Command::UnpairWhatsApp {
                yes: true,
                config: None
            }
        );
        assert_eq!(
            p("unpair whatsapp").unwrap(),
            Command::UnpairWhatsApp {
                yes: false,
                config: None
            }
        );
        assert!(p("run --yes").is_err());
        assert!(p("unpair telegram").is_err());
        assert_eq!(
            p("groups list").unwrap(),
            Command::GroupsList { config: None }
        );
        assert!(p("groups").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("/etc/clawbox/telegram.token"),
            "/etc/clawbox/telegram.token"
        );
        assert_eq!(shell_quote("+491701234567"), "+491701234567");
        assert_eq!(shell_quote("/tmp/my token"), "'/tmp/my token'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
