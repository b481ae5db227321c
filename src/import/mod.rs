//! `clawbox import openclaw PATH/openclaw.json [--out FILE] [--secrets-dir DIR]`: reads an
//! OpenClaw config and writes a clawbox.toml (stdout, or `--out`) and its secrets (each in a
//! 0600 file next to `--out`, or in `--secrets-dir`; never in the TOML). Never overwrites a file.
//! The conversion itself is [`openclaw::convert`], pure; this module does the files.

pub mod json5;
pub mod openclaw;

use crate::cli::shell_quote;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// sysexits: EX_USAGE, EX_DATAERR (malformed input), EX_NOINPUT, EX_CANTCREAT.
const EXIT_USAGE: i32 = 64;
const EXIT_DATAERR: i32 = 65;
const EXIT_NOINPUT: i32 = 66;
const EXIT_CANTCREAT: i32 = 73;

/// The command; returns the exit code.
pub fn openclaw_command(input: &Path, out: Option<&Path>, secrets_dir: Option<&Path>) -> i32 {
    let shown = input.display().to_string();
    let text = match read_input(input) {
        Ok(t) => t,
        Err((code, e)) => {
            eprintln!("clawbox: {shown}: {e}");
            return code;
        }
    };
    // Where the secrets go on disk, and how the TOML names them: next to --out, relative to the
    // config (the pair can move together, e.g. to /etc/clawbox); in --secrets-dir, absolute.
    let place: Option<(PathBuf, PathBuf)> = match (secrets_dir, out) {
        (Some(d), _) => {
            if let Err(e) = make_private_dir(d) {
                eprintln!("clawbox: cannot create {}: {e}", d.display());
                return EXIT_CANTCREAT;
            }
            let abs = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
            Some((abs.clone(), abs))
        }
        (None, Some(o)) => {
            let dir = o
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some((dir.to_path_buf(), PathBuf::new()))
        }
        (None, None) => None,
    };
    let in_toml = place.as_ref().map(|p| p.1.clone()).unwrap_or_default();
    let imported = match openclaw::convert(&text, &in_toml) {
        Ok(i) => i,
        Err(e) => {
            match e.line_col {
                Some((l, c)) => eprintln!("clawbox: {shown}:{l}:{c}: {}", e.message),
                None => eprintln!("clawbox: {shown}: {}", e.message),
            }
            eprintln!("clawbox: nothing was written");
            return EXIT_DATAERR;
        }
    };
    let secrets_on_disk = match (&place, imported.secrets.is_empty()) {
        (_, true) => None,
        (Some((dir, _)), false) => Some(dir.clone()),
        (None, false) => {
            let names: Vec<&str> = imported.secrets.iter().map(|s| s.name).collect();
            eprintln!(
                "clawbox: {shown} holds secrets ({}), which go to files of their own, never into \
                 the TOML: add --out FILE (they go next to it) or --secrets-dir DIR",
                names.join(", ")
            );
            return EXIT_USAGE;
        }
    };
    // Nothing is overwritten: every target is checked before anything is written.
    let mut targets: Vec<PathBuf> = Vec::new();
    if let Some(dir) = &secrets_on_disk {
        targets.extend(imported.secrets.iter().map(|s| dir.join(s.name)));
    }
    targets.extend(out.map(Path::to_path_buf));
    if let Some(t) = targets.iter().find(|t| t.exists()) {
        eprintln!(
            "clawbox: {} exists and is not overwritten: move it aside, or choose another --out or \
             --secrets-dir; nothing was written",
            t.display()
        );
        return EXIT_CANTCREAT;
    }
    let mut written: Vec<String> = Vec::new();
    if let Some(dir) = &secrets_on_disk {
        for s in &imported.secrets {
            let path = dir.join(s.name);
            let line = format!("{}\n", s.value.expose());
            if let Err(e) = write_new(&path, line.as_bytes(), 0o600) {
                eprintln!("clawbox: cannot write {}: {e}", path.display());
                return EXIT_CANTCREAT;
            }
            give_to_service(&path);
            written.push(format!("{} (0600)", path.display()));
        }
    }
    let config_path = match out {
        Some(o) => {
            // The config holds no secret: readable, as /etc/clawbox's example is.
            if let Err(e) = write_new(o, imported.toml.as_bytes(), 0o644) {
                eprintln!("clawbox: cannot write {}: {e}", o.display());
                return EXIT_CANTCREAT;
            }
            written.insert(0, o.display().to_string());
            o.to_path_buf()
        }
        None => {
            print!("{}", imported.toml);
            let _ = std::io::stdout().flush();
            secrets_on_disk
                .clone()
                .unwrap_or_else(|| PathBuf::from("."))
                .join("clawbox.toml")
        }
    };
    if !written.is_empty() {
        eprintln!("clawbox: wrote {}", written.join(", "));
    }
    // What the service will say about it: the comments explain, this says what is left to do.
    match crate::config::Config::parse_partial(&imported.toml, Some(&config_path)) {
        Ok((_, problems)) if problems.is_empty() => {
            if out.is_some() {
                eprintln!(
                    "clawbox: it passes `clawbox config check {}`",
                    shell_quote(&config_path.display().to_string())
                );
            }
        }
        Ok((_, problems)) => {
            eprintln!("clawbox: before the service accepts it:");
            for p in problems {
                eprintln!("  {}", p.message);
            }
        }
        Err(errors) => {
            // A bug of the importer: its own TOML must parse.
            for e in errors {
                eprintln!("clawbox: the written TOML does not parse: {e}");
            }
            return EXIT_DATAERR;
        }
    }
    0
}

/// The input, bounded: at most [`json5::MAX_INPUT_BYTES`], UTF-8.
fn read_input(input: &Path) -> Result<String, (i32, String)> {
    use std::io::Read;
    let f = std::fs::File::open(input).map_err(|e| (EXIT_NOINPUT, e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(json5::MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| (EXIT_NOINPUT, e.to_string()))?;
    if bytes.len() > json5::MAX_INPUT_BYTES {
        return Err((
            EXIT_DATAERR,
            format!(
                "larger than {} bytes: this is no OpenClaw config",
                json5::MAX_INPUT_BYTES
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        (
            EXIT_DATAERR,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// Creates `d` (mode 0700) unless it exists.
fn make_private_dir(d: &Path) -> std::io::Result<()> {
    if d.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
}

/// Writes a file that must not exist yet, with `mode` from the start (no moment with wider
/// permissions).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Root writing a secret gives it to the service's user, who must read it (0600); anyone else
/// writes their own files.
fn give_to_service(path: &Path) {
    if crate::state_dir::euid() != 0 {
        return;
    }
    if let Some(a) = crate::state_dir::service_user() {
        if let Err(e) = std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)) {
            eprintln!(
                "clawbox: cannot give {} to {} (chown): {e}; the service cannot read it until it is \
                 theirs",
                path.display(),
                a.name
            );
        }
    }
}
