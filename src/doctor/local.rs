//! The checks that only look at this box: the config (the same checks as `config check`), the
//! state directory and the store (owner and mode, by [`crate::state_dir`]'s rule), the secret
//! files (as the service reads them, plus: can the service's user read them), and free space on
//! the state's filesystem. Changes nothing: it says the `chmod`/`chown` to run.

use super::{Check, NAME_CONFIG, NAME_DISK, NAME_SECRETS, NAME_STATE, NAME_STORE};
use crate::cli::shell_quote;
use crate::config::Config;
use crate::state_dir::{Account, group_name, user_name};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Less free space than this on the state's filesystem fails: the store grows its file as
/// messages arrive, and a full disk makes it refuse new messages.
pub const DISK_FAIL_BELOW: u64 = 64 * 1024 * 1024;
/// Less than this warns: an upgrade or a burst of logs can take that much.
pub const DISK_WARN_BELOW: u64 = 512 * 1024 * 1024;

/// The config's line; the config itself when it could be parsed (with or without problems), so
/// the other checks can run.
pub fn config(explicit: Option<&Path>, checks: &mut Vec<Check>) -> Option<Config> {
    let (cfg, problems) = match Config::discover_partial(explicit) {
        Ok(c) => c,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            checks.push(Check::fail(
                NAME_CONFIG,
                format!("the config cannot be read:\n{}", list.join("\n")),
                "correct it (`clawbox config check PATH` says when it is right); nothing else \
                 can be checked without it",
            ));
            return None;
        }
    };
    let Some(path) = cfg.source.clone() else {
        checks.push(Check::ok(
            NAME_CONFIG,
            format!(
                "no config file ({} looked for): the embedded defaults (the built-in echo \
                 agent, WhatsApp for your own chat)",
                crate::config::DEFAULT_PATHS.join(", ")
            ),
        ));
        return Some(cfg);
    };
    let shown = path.display().to_string();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
        checks.push(Check::fail(
            NAME_CONFIG,
            format!(
                "{shown}: the service refuses it (exit 78):\n{}",
                list.join("\n")
            ),
            format!(
                "correct what is listed; `clawbox config check {}` must say ok",
                shell_quote(&shown)
            ),
        ));
    } else if let Some(w) = std::fs::metadata(&path)
        .ok()
        .and_then(|m| crate::config::writable_by_all(&path, &m))
    {
        let (said, fix) = w.split_once("; run: ").unwrap_or((w.as_str(), ""));
        checks.push(Check::warn(NAME_CONFIG, said, format!("run: {fix}")));
    } else {
        checks.push(Check::ok(NAME_CONFIG, format!("{shown} is valid")));
    }
    Some(cfg)
}

/// An entry's owner, group and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// A directory where one is wanted, a regular file where one is wanted.
    pub right_kind: bool,
}

impl Entry {
    fn of(path: &Path, dir: bool) -> Option<Entry> {
        let m = std::fs::metadata(path).ok()?;
        Some(Entry {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.permissions().mode() & 0o7777,
            right_kind: if dir { m.is_dir() } else { m.is_file() },
        })
    }
}

/// Who must own the state (and read the secrets), and why we think so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub account: Account,
    pub why: &'static str,
}

/// What the state checks found.
#[derive(Debug, Clone)]
pub struct State {
    pub dir: PathBuf,
    pub store: PathBuf,
    /// The store exists and its owner and mode are right: it may be opened (opening a store fixes
    /// owner and mode, which is the service's business, not the doctor's).
    pub store_ready: bool,
    pub owner: Option<Owner>,
}

/// What [`ownership`] needs to know.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub dir: &'a Path,
    pub store: &'a Path,
    /// The service's user when the box names one ([`crate::state_dir::service_user`]).
    pub service: Option<&'a Account>,
    pub euid: u32,
    pub dir_entry: Option<Entry>,
    pub store_entry: Option<Entry>,
}

/// The state directory's and the store's lines, whether the store may be opened, and who must
/// own them: the service's user when known, else the directory's owner ([`crate::state_dir`]'s
/// rule: what is made in the directory belongs to its owner).
pub fn ownership(f: &Facts<'_>) -> (Check, Check, bool, Option<Owner>) {
    let dir_shown = shell_quote(&f.dir.display().to_string()).into_owned();
    let store_shown = shell_quote(&f.store.display().to_string()).into_owned();
    let first_start = "the service creates it on its first start (so does `clawbox pair whatsapp`)";
    let Some(d) = f.dir_entry else {
        let owner = f.service.map(|a| Owner {
            account: a.clone(),
            why: "the service's user",
        });
        return (
            Check::warn(
                NAME_STATE,
                format!("{dir_shown} does not exist yet"),
                first_start,
            ),
            Check::warn(NAME_STORE, "no store yet", first_start),
            false,
            owner,
        );
    };
    if !d.right_kind {
        return (
            Check::fail(
                NAME_STATE,
                format!("{dir_shown} is not a directory"),
                "move it aside; the service keeps its state in a directory there",
            ),
            Check::fail(NAME_STORE, "no state directory", "see the state line"),
            false,
            None,
        );
    }
    let owner = match f.service {
        Some(a) => Owner {
            account: a.clone(),
            why: "the service's user",
        },
        None => Owner {
            account: Account {
                uid: d.uid,
                gid: d.gid,
                name: user_name(d.uid),
            },
            why: "the state directory's owner",
        },
    };
    let a = &owner.account;
    let chown_all = format!("sudo chown -R {}:{} {dir_shown}", a.name, group_name(a.gid));
    let mut dir_ok = true;
    let dir_check = if d.uid != a.uid {
        dir_ok = false;
        Check::fail(
            NAME_STATE,
            format!(
                "{dir_shown} belongs to {}, not to {} ({}): the service cannot use it",
                user_name(d.uid),
                a.name,
                owner.why
            ),
            chown_all.clone(),
        )
    } else if f.euid != 0 && f.euid != d.uid {
        // Not the box's fault: this user cannot look inside.
        dir_ok = false;
        Check::warn(
            NAME_STATE,
            format!(
                "{dir_shown} belongs to {}; you are {}: the store cannot be checked",
                a.name,
                user_name(f.euid)
            ),
            format!("run the doctor as root or {}: sudo clawbox doctor", a.name),
        )
    } else if d.mode & 0o077 != 0 {
        dir_ok = false;
        Check::warn(
            NAME_STATE,
            format!(
                "{dir_shown} is open to other users (mode {:04o})",
                d.mode & 0o777
            ),
            format!("chmod 700 {dir_shown} (the service also does at its next start)"),
        )
    } else {
        Check::ok(
            NAME_STATE,
            format!(
                "{dir_shown}: owner {} ({}), mode {:04o}",
                a.name,
                owner.why,
                d.mode & 0o777
            ),
        )
    };
    let (store_check, store_ok) = match f.store_entry {
        None => (
            Check::warn(
                NAME_STORE,
                format!("no store yet ({store_shown})"),
                first_start,
            ),
            false,
        ),
        Some(s) if !s.right_kind => (
            Check::fail(
                NAME_STORE,
                format!("{store_shown} is not a file"),
                "move it aside; the service makes a new store",
            ),
            false,
        ),
        Some(s) if s.uid != a.uid => (
            Check::fail(
                NAME_STORE,
                format!(
                    "{store_shown} belongs to {}, not to {} ({}): the service cannot open it",
                    user_name(s.uid),
                    a.name,
                    owner.why
                ),
                chown_all,
            ),
            false,
        ),
        Some(s) if s.mode & 0o077 != 0 => (
            Check::warn(
                NAME_STORE,
                format!(
                    "{store_shown} is readable by other users (mode {:04o}): it holds your \
                     messages and the WhatsApp keys",
                    s.mode & 0o777
                ),
                format!("chmod 600 {store_shown} (the service also does at its next start)"),
            ),
            false,
        ),
        Some(s) => (
            Check::ok(
                NAME_STORE,
                format!(
                    "{store_shown}: owner {}, mode {:04o}",
                    a.name,
                    s.mode & 0o777
                ),
            ),
            true,
        ),
    };
    (dir_check, store_check, dir_ok && store_ok, Some(owner))
}

/// The state directory's and the store's lines.
pub fn state(cfg: &Config, checks: &mut Vec<Check>) -> State {
    let dir = cfg.state_dir();
    let store = dir.join(crate::store::FILE_NAME);
    let service = crate::state_dir::service_user();
    let facts = Facts {
        dir: &dir,
        store: &store,
        service: service.as_ref(),
        euid: crate::state_dir::euid(),
        dir_entry: Entry::of(&dir, true),
        store_entry: Entry::of(&store, false),
    };
    let (d, s, store_ready, owner) = ownership(&facts);
    checks.push(d);
    checks.push(s);
    State {
        dir,
        store,
        store_ready,
        owner,
    }
}

/// The secret files the config names: (what, where).
fn secret_files(cfg: &Config) -> Vec<(String, PathBuf)> {
    let at = |p: &Path| crate::config::check::secret_path(cfg.source.as_deref(), p);
    let mut files = Vec::new();
    if let Some(t) = cfg.channels.telegram.as_ref().filter(|t| t.enabled) {
        if let Some(f) = &t.token_file {
            files.push(("the Telegram bot token".to_string(), at(f.get_ref())));
        }
    }
    for (name, a) in &cfg.agents {
        for f in [&a.api_key_file, &a.token_file].into_iter().flatten() {
            files.push((format!("agent {name}'s key"), at(f.get_ref())));
        }
    }
    files
}

/// The secrets' line: each secret file as the service reads it (mode 0600, a line), and owned by
/// the service's user, who must read it.
pub fn secrets(cfg: &Config, state: &State, checks: &mut Vec<Check>) {
    let files = secret_files(cfg);
    if files.is_empty() {
        checks.push(Check::ok(
            NAME_SECRETS,
            "no secret files (secrets from the environment, or none needed)",
        ));
        return;
    }
    let mut problems: Vec<String> = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    for (what, path) in &files {
        let shown = shell_quote(&path.display().to_string()).into_owned();
        if let Err(e) = crate::config::check::read_secret_file(path) {
            let (said, fix) = match e.split_once("; run: ") {
                Some((s, f)) => (s.to_string(), format!("run: {f}")),
                None => (
                    e.clone(),
                    format!("put {what} alone on the first line of {shown}, mode 0600"),
                ),
            };
            problems.push(format!("{what}: {said}"));
            fixes.push(fix);
            continue;
        }
        let (Some(owner), Ok(m)) = (&state.owner, std::fs::metadata(path)) else {
            continue;
        };
        let a = &owner.account;
        // Root reads anything; anyone else reads a 0600 file only if it is theirs.
        if a.uid != 0 && m.uid() != a.uid {
            problems.push(format!(
                "{what}: {shown} belongs to {}; the service runs as {} and cannot read it",
                user_name(m.uid()),
                a.name
            ));
            fixes.push(format!(
                "sudo chown {}:{} {shown}",
                a.name,
                group_name(a.gid)
            ));
        }
    }
    if problems.is_empty() {
        let who = state
            .owner
            .as_ref()
            .map(|o| format!(", readable by {}", o.account.name))
            .unwrap_or_default();
        checks.push(Check::ok(
            NAME_SECRETS,
            format!("{} secret file(s): private (0600){who}", files.len()),
        ));
    } else {
        checks.push(Check::fail(
            NAME_SECRETS,
            problems.join("\n"),
            format!("{}; then restart the service", fixes.join("; ")),
        ));
    }
}

/// Free space on the filesystem that holds (or will hold) the state directory.
pub fn disk(dir: &Path, checks: &mut Vec<Check>) {
    // The directory may not exist yet: its nearest existing ancestor is on the same filesystem.
    let probe = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let st = match nix::sys::statvfs::statvfs(probe) {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check::warn(
                NAME_DISK,
                format!("cannot read the free space of {}: {e}", probe.display()),
                "check it with: df -h",
            ));
            return;
        }
    };
    let block = st.fragment_size() as u64;
    let free = (st.blocks_available() as u64).saturating_mul(block);
    let total = (st.blocks() as u64).saturating_mul(block);
    let said = format!(
        "{} free of {} where {} is",
        bytes(free),
        bytes(total),
        probe.display()
    );
    let fix = "make room: sudo journalctl --vacuum-size=50M, sudo apt-get clean, or a larger card";
    checks.push(
        if st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
            Check::fail(
                NAME_DISK,
                format!("{said}, but mounted read-only: the store cannot be written"),
                "remount it read-write (a card with errors is remounted read-only: see dmesg)",
            )
        } else if free < DISK_FAIL_BELOW {
            Check::fail(NAME_DISK, said, fix)
        } else if free < DISK_WARN_BELOW {
            Check::warn(NAME_DISK, said, fix)
        } else {
            Check::ok(NAME_DISK, said)
        },
    );
}

/// "1.2 GiB", "640 MiB", "12 KiB".
fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = KIB * 1024;
    const GIB: u64 = MIB * 1024;
    if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{} KiB", n / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    const CLAWBOX: u32 = 998;

    fn entry(uid: u32, mode: u32) -> Option<Entry> {
        Some(Entry {
            uid,
            gid: uid,
            mode,
            right_kind: true,
        })
    }

    fn judge(
        service: Option<u32>,
        euid: u32,
        dir: Option<Entry>,
        store: Option<Entry>,
    ) -> (Check, Check, bool, Option<Owner>) {
        let account = service.map(|uid| Account {
            uid,
            gid: uid,
            name: format!("#{uid}"),
        });
        ownership(&Facts {
            dir: Path::new("/var/lib/clawbox"),
            store: Path::new("/var/lib/clawbox/clawbox.redb"),
            service: account.as_ref(),
            euid,
            dir_entry: dir,
            store_entry: store,
        })
    }

    #[test]
    fn the_service_user_must_own_the_directory_and_the_store() {
        let (d, s, ready, owner) = judge(
            Some(CLAWBOX),
            0,
            entry(CLAWBOX, 0o700),
            entry(CLAWBOX, 0o600),
        );
        assert_eq!((d.level, s.level, ready), (Level::Ok, Level::Ok, true));
        assert_eq!(owner.unwrap().account.uid, CLAWBOX);
        // A directory left to root: the service cannot write there.
        let (d, _, ready, _) = judge(Some(CLAWBOX), 0, entry(0, 0o700), entry(CLAWBOX, 0o600));
        assert_eq!(d.level, Level::Fail);
        assert!(
            d.fix.as_deref().unwrap().starts_with("sudo chown -R #998:"),
            "{d:?}"
        );
        assert!(!ready);
        // A store left by `sudo clawbox …` before the rule existed.
        let (_, s, ready, _) = judge(Some(CLAWBOX), 0, entry(CLAWBOX, 0o700), entry(0, 0o600));
        assert_eq!(s.level, Level::Fail);
        assert!(s.summary.contains("belongs to root"), "{}", s.summary);
        assert!(
            !ready,
            "a store with the wrong owner is not opened (opening would fix it)"
        );
    }

    #[test]
    fn without_a_service_user_the_directory_owner_is_the_rule() {
        // The test setup: root made it all, then the directory was given to nobody.
        let (d, s, ready, owner) = judge(None, 0, entry(65534, 0o700), entry(0, 0o600));
        assert_eq!(d.level, Level::Ok);
        assert_eq!(s.level, Level::Fail);
        assert!(!ready);
        assert_eq!(owner.unwrap().why, "the state directory's owner");
        let (_, s, ready, _) = judge(None, 0, entry(0, 0o700), entry(0, 0o600));
        assert_eq!((s.level, ready), (Level::Ok, true));
    }

    #[test]
    fn modes_open_to_others_warn_with_the_chmod_and_nothing_is_opened() {
        let (d, _, ready, _) = judge(None, 0, entry(0, 0o755), entry(0, 0o600));
        assert_eq!(d.level, Level::Warn);
        assert!(d.fix.unwrap().starts_with("chmod 700 /var/lib/clawbox"));
        assert!(!ready);
        let (_, s, ready, _) = judge(None, 0, entry(0, 0o700), entry(0, 0o644));
        assert_eq!(s.level, Level::Warn);
        assert!(
            s.fix
                .unwrap()
                .starts_with("chmod 600 /var/lib/clawbox/clawbox.redb")
        );
        assert!(!ready);
    }

    #[test]
    fn missing_state_warns_and_another_user_is_told_who_to_run_as() {
        let (d, s, ready, _) = judge(Some(CLAWBOX), 0, None, None);
        assert_eq!((d.level, s.level, ready), (Level::Warn, Level::Warn, false));
        let (_, s, ready, _) = judge(None, 0, entry(0, 0o700), None);
        assert_eq!((s.level, ready), (Level::Warn, false));
        let (d, _, ready, _) = judge(
            Some(CLAWBOX),
            1000,
            entry(CLAWBOX, 0o700),
            entry(CLAWBOX, 0o600),
        );
        assert_eq!(d.level, Level::Warn);
        assert!(d.fix.unwrap().contains("sudo clawbox doctor"));
        assert!(!ready);
    }

    #[test]
    fn sizes_read_like_df_says_them() {
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(bytes(640 * 1024 * 1024), "640 MiB");
        assert_eq!(bytes(12 * 1024), "12 KiB");
    }
}
