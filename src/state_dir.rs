//! Where clawbox keeps its state, and who owns it.
//!
//! [`resolve`] is the one place the state directory is chosen, for every command (`run`, `chat`,
//! `pair whatsapp`, `providers test`), so the CLI and the service open the same store on an
//! installed box: the config's `gateway.state_dir`, else `$STATE_DIRECTORY` (systemd's
//! `StateDirectory=`), else the packaged default [`PACKAGED`] when it exists (the .deb creates it:
//! an installed box), else [`FALLBACK`] in the working directory.
//!
//! [`prepare`] creates the directory (0700) so that state never belongs to the wrong user: root
//! working in another user's directory (`sudo clawbox pair whatsapp` on an installed box) gives
//! everything it creates to that user, and anyone else is refused with the command to run. Never
//! reads or writes the store itself.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The packaged state directory: the unit's `StateDirectory=clawbox`, created by the .deb.
pub const PACKAGED: &str = "/var/lib/clawbox";
/// Replaces [`PACKAGED`] when set: for tests (an "installed box" in a temp dir, or none at all)
/// and for packagings that keep the state elsewhere.
pub const PACKAGED_ENV: &str = "CLAWBOX_DEFAULT_STATE_DIR";
/// Where state goes on a box without the package (a developer's checkout).
pub const FALLBACK: &str = "./state";

/// The state directory; see the module doc for the order.
pub fn resolve(configured: Option<&Path>) -> PathBuf {
    resolve_with(configured, |k| std::env::var_os(k), Path::is_dir)
}

/// [`resolve`] with the environment and the file system given.
pub fn resolve_with(
    configured: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    is_dir: impl Fn(&Path) -> bool,
) -> PathBuf {
    if let Some(d) = configured {
        return d.to_path_buf();
    }
    // systemd's StateDirectory=: the first entry if several.
    if let Some(first) = env("STATE_DIRECTORY")
        .as_deref()
        .and_then(|d| std::env::split_paths(d).next())
        .filter(|p| !p.as_os_str().is_empty())
    {
        return first;
    }
    let packaged = env(PACKAGED_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PACKAGED));
    if is_dir(&packaged) {
        return packaged;
    }
    PathBuf::from(FALLBACK)
}

/// The user the packaged service runs as: the unit's `User=clawbox`, created by the .deb.
pub const SERVICE_USER: &str = "clawbox";
/// Names the service's user instead (a name or a numeric uid): for packagings that run it as
/// another user (a container's uid), and for tests.
pub const SERVICE_USER_ENV: &str = "CLAWBOX_SERVICE_USER";

/// A user and its primary group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// The user the service runs as, when this box says: `$CLAWBOX_SERVICE_USER`, else the `clawbox`
/// user when it exists (an installed box). None on a box without the package: a developer's
/// checkout runs the service as whoever starts it, and the state directory's owner is the rule
/// ([`plan`]).
pub fn service_user() -> Option<Account> {
    let named = std::env::var(SERVICE_USER_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let wanted = named.as_deref().unwrap_or(SERVICE_USER).trim();
    let user = match wanted.trim_start_matches('#').parse::<u32>() {
        Ok(uid) => {
            let found = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten();
            // A bare uid (a container's) has no passwd entry: its group is taken to be the same.
            return Some(Account {
                uid,
                gid: found.as_ref().map_or(uid, |u| u.gid.as_raw()),
                name: found.map_or_else(|| format!("#{uid}"), |u| u.name),
            });
        }
        Err(_) => nix::unistd::User::from_name(wanted).ok().flatten()?,
    };
    Some(Account {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        name: user.name,
    })
}

/// Who gets what is created in the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The user running this command: files are created as usual.
    Me,
    /// Root in another user's directory: what is created is given to that user and group.
    GiveTo { uid: u32, gid: u32 },
}

/// Why a user may not use a state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The directory belongs to `owner`, and the caller is neither `owner` nor root.
    NotYours { owner: u32 },
}

/// The rule, given who runs (`euid`), the directory's owner if it exists, and else the owner of
/// its nearest existing ancestor (where it will be created).
pub fn plan(euid: u32, dir: Option<(u32, u32)>, ancestor: (u32, u32)) -> Result<Owner, Refusal> {
    match dir {
        Some((uid, _)) if uid == euid => Ok(Owner::Me),
        Some((uid, gid)) if euid == 0 => Ok(Owner::GiveTo { uid, gid }),
        Some((owner, _)) => Err(Refusal::NotYours { owner }),
        // A new directory belongs to whoever owns the place it is made in.
        None if euid == 0 && ancestor.0 != 0 => Ok(Owner::GiveTo {
            uid: ancestor.0,
            gid: ancestor.1,
        }),
        None => Ok(Owner::Me),
    }
}

/// A prepared state directory: who runs, and who gets the files made in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub euid: u32,
    pub owner: Owner,
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A user's name, or `#uid` (as sudo takes it) when it has none.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        // sudo takes `#uid` for a user without a name.
        .unwrap_or_else(|| format!("#{uid}"))
}

/// A group's name, or its number when it has none.
pub fn group_name(gid: u32) -> String {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string())
}

/// This command line, quoted, to suggest running it as someone else.
fn this_command() -> String {
    let words: Vec<String> = std::env::args_os()
        .map(|a| crate::cli::shell_quote(&a.to_string_lossy()).into_owned())
        .collect();
    if words.is_empty() {
        "clawbox".into()
    } else {
        words.join(" ")
    }
}

/// The words for a refusal.
pub fn refusal_message(dir: &Path, euid: u32, refusal: Refusal, command: &str) -> String {
    match refusal {
        Refusal::NotYours { owner } => {
            let name = user_name(owner);
            let run_as = if owner == 0 {
                format!("sudo {command}")
            } else {
                format!("sudo -u {name} {command}")
            };
            format!(
                "the state directory {} belongs to {name}, not to {}: run it as {name}: {run_as}",
                dir.display(),
                user_name(euid)
            )
        }
    }
}

/// Creates `dir` (and missing parents) for the store: the directory 0700 (an existing one open to
/// other users is made private again, with a warning), owned as [`plan`] says. Errors are in plain
/// words with what to do.
pub fn prepare(dir: &Path) -> Result<Prepared, String> {
    let euid = euid();
    let existing = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Some((m.uid(), m.gid())),
        Ok(_) => {
            return Err(format!(
                "the state directory {} is not a directory",
                dir.display()
            ));
        }
        Err(_) => None,
    };
    // The nearest existing ancestor: the first directory that will not be created.
    let mut created: Vec<PathBuf> = Vec::new();
    let mut ancestor = (euid, 0);
    if existing.is_none() {
        for a in dir.ancestors() {
            let a = if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            };
            match std::fs::metadata(a) {
                Ok(m) => {
                    ancestor = (m.uid(), m.gid());
                    break;
                }
                Err(_) => created.push(a.to_path_buf()),
            }
        }
    }
    let owner = plan(euid, existing, ancestor)
        .map_err(|r| refusal_message(dir, euid, r, &this_command()))?;
    let prepared = Prepared { euid, owner };
    if existing.is_none() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private (chmod 0700): {e}", dir.display()))?;
        // Outermost first, so a parent is never left root-owned above a child given away.
        for c in created.iter().rev() {
            prepared.give(c)?;
        }
        return Ok(prepared);
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "state directory was open to other users; setting it to 0700");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private (chmod 0700): {e}", dir.display()))?;
    }
    Ok(prepared)
}

impl Prepared {
    /// `path` (in the state directory, just created or about to be used) belongs to the right
    /// user: root gives it to the directory's owner; anyone else must own it already.
    pub fn claim(&self, path: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        match self.owner {
            Owner::GiveTo { uid, gid } if meta.uid() != uid || meta.gid() != gid => self.give(path),
            Owner::Me if self.euid != 0 && meta.uid() != self.euid => Err(format!(
                "{} belongs to {}, not to {} (an earlier `sudo clawbox …`?); give it back: sudo chown {}:{} {}",
                path.display(),
                user_name(meta.uid()),
                user_name(self.euid),
                user_name(self.euid),
                group_name(nix::unistd::getegid().as_raw()),
                crate::cli::shell_quote(&path.display().to_string())
            )),
            _ => Ok(()),
        }
    }

    /// Gives `path` to the directory's owner when root works in someone else's directory.
    fn give(&self, path: &Path) -> Result<(), String> {
        match self.owner {
            Owner::GiveTo { uid, gid } => std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| {
                    format!(
                        "cannot give {} to {} (chown): {e}",
                        path.display(),
                        user_name(uid)
                    )
                }),
            Owner::Me => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_in(configured: Option<&str>, env: &[(&str, &str)], dirs: &[&str]) -> PathBuf {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), OsString::from(v)))
            .collect();
        resolve_with(
            configured.map(Path::new),
            |k| env.get(k).cloned(),
            |p| dirs.iter().any(|d| Path::new(d) == p),
        )
    }

    #[test]
    fn the_order_is_config_then_systemd_then_the_package_then_the_working_directory() {
        let installed = &[PACKAGED];
        assert_eq!(
            resolve_in(Some("/srv/c"), &[("STATE_DIRECTORY", "/s")], installed),
            PathBuf::from("/srv/c")
        );
        assert_eq!(
            resolve_in(None, &[("STATE_DIRECTORY", "/s:/t")], installed),
            PathBuf::from("/s")
        );
        assert_eq!(resolve_in(None, &[], installed), PathBuf::from(PACKAGED));
        assert_eq!(resolve_in(None, &[], &[]), PathBuf::from(FALLBACK));
        // An empty STATE_DIRECTORY names nothing.
        assert_eq!(
            resolve_in(None, &[("STATE_DIRECTORY", "")], installed),
            PathBuf::from(PACKAGED)
        );
        // The override replaces the packaged path, and also only counts when it exists.
        assert_eq!(
            resolve_in(None, &[(PACKAGED_ENV, "/t/lib")], &["/t/lib", PACKAGED]),
            PathBuf::from("/t/lib")
        );
        assert_eq!(
            resolve_in(None, &[(PACKAGED_ENV, "/t/none")], installed),
            PathBuf::from(FALLBACK)
        );
    }

    #[test]
    fn the_ownership_rule() {
        const CLAWBOX: (u32, u32) = (998, 997);
        const ROOT: (u32, u32) = (0, 0);
        // The owner runs it.
        assert_eq!(plan(998, Some(CLAWBOX), ROOT), Ok(Owner::Me));
        // Root in the service's directory gives what it makes to the service's user and group.
        assert_eq!(
            plan(0, Some(CLAWBOX), ROOT),
            Ok(Owner::GiveTo { uid: 998, gid: 997 })
        );
        // Another user is refused, whatever the directory's mode.
        assert_eq!(
            plan(1000, Some(CLAWBOX), ROOT),
            Err(Refusal::NotYours { owner: 998 })
        );
        assert_eq!(
            plan(1000, Some(ROOT), ROOT),
            Err(Refusal::NotYours { owner: 0 })
        );
        // A new directory: root making it in another user's place gives it to them...
        assert_eq!(
            plan(0, None, (1000, 1000)),
            Ok(Owner::GiveTo {
                uid: 1000,
                gid: 1000
            })
        );
        // ... and in its own place keeps it; anyone else just creates it (or gets EACCES).
        assert_eq!(plan(0, None, ROOT), Ok(Owner::Me));
        assert_eq!(plan(1000, None, ROOT), Ok(Owner::Me));
    }

    #[test]
    fn a_refusal_names_the_owner_and_the_command_to_run() {
        let m = refusal_message(
            Path::new("/var/lib/clawbox"),
            1000,
            Refusal::NotYours { owner: 0 },
            "clawbox pair whatsapp",
        );
        assert!(
            m.contains("/var/lib/clawbox belongs to root")
                && m.ends_with("run it as root: sudo clawbox pair whatsapp"),
            "{m}"
        );
        // A uid without a name is written the way sudo takes it.
        let m = refusal_message(
            Path::new("/d"),
            1000,
            Refusal::NotYours { owner: 4_000_000 },
            "clawbox chat",
        );
        assert!(m.ends_with("sudo -u #4000000 clawbox chat"), "{m}");
    }

    /// Tests run as root (CI and the dev container); the chown cases need it.
    fn as_root() -> bool {
        euid() == 0
    }

    /// A user and group other than root's that this root can give files to. CI runs as root in a
    /// user namespace that maps only some ids, where chown to an unmapped one is EINVAL; the ids
    /// are probed on a scratch file rather than assumed.
    fn someone_else() -> Option<(u32, u32)> {
        if !as_root() {
            return None;
        }
        let probe = tempfile::NamedTempFile::new().ok()?;
        [(65534, 65533), (1000, 1001), (1, 2), (1, 1)]
            .into_iter()
            .find(|&(u, g)| std::os::unix::fs::chown(probe.path(), Some(u), Some(g)).is_ok())
    }

    #[test]
    fn root_gives_what_it_creates_in_another_users_directory_to_that_user() {
        let Some((uid, gid)) = someone_else() else {
            eprintln!("skipped: needs root that can chown to another id");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
        let p = prepare(&state).unwrap();
        assert_eq!(p.owner, Owner::GiveTo { uid, gid });
        // A file root makes there, and one a root run of an older clawbox left there.
        let made = state.join("clawbox.redb");
        std::fs::write(&made, b"").unwrap();
        p.claim(&made).unwrap();
        let m = std::fs::metadata(&made).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        // A new directory below it (chat's `console/`) and its store go to the same user.
        let console = state.join("console");
        let p = prepare(&console).unwrap();
        let m = std::fs::metadata(&console).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        let f = console.join("clawbox.redb");
        std::fs::write(&f, b"").unwrap();
        p.claim(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().uid(), uid);
    }

    #[test]
    fn root_in_its_own_place_keeps_what_it_makes() {
        if !as_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("a/b/state");
        let p = prepare(&state).unwrap();
        assert_eq!(p.owner, Owner::Me);
        assert_eq!(std::fs::metadata(&state).unwrap().uid(), 0);
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn every_new_parent_goes_to_the_owner_of_the_place_it_is_made_in() {
        let Some((uid, gid)) = someone_else() else {
            eprintln!("skipped: needs root that can chown to another id");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let state = home.join("a/b/state");
        prepare(&state).unwrap();
        for d in [home.join("a"), home.join("a/b"), state] {
            assert_eq!(std::fs::metadata(&d).unwrap().uid(), uid, "{}", d.display());
        }
    }
}
