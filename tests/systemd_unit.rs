//! The shipped unit, `systemd/clawbox.service`, checked by systemd's own tools: it must parse
//! without a single complaint (`systemd-analyze verify`) and score "OK" or better in
//! `systemd-analyze security --offline=yes`. Both work without a running systemd; they need the
//! `systemd` package, which CI installs — a missing tool fails the test rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../systemd/clawbox.service");

/// The highest `systemd-analyze security` exposure that still reads "OK" (5.0 and up is MEDIUM).
const MAX_EXPOSURE: f64 = 4.9;

fn analyze(args: &[&str]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed: install the `systemd` package (apt-get install systemd) to run this test"
        ),
        Err(e) => panic!("could not run systemd-analyze: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The unit as shipped, with `ExecStart` pointing at the binary cargo built (verify checks that
/// the executable exists), written to a fresh directory.
fn unit_copy(dir: &Path) -> PathBuf {
    let exe = env!("CARGO_BIN_EXE_clawbox");
    assert!(
        !exe.contains(char::is_whitespace),
        "binary path with whitespace: {exe}"
    );
    let mut replaced = 0;
    let body: String = UNIT
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                replaced += 1;
                format!("ExecStart={exe} run\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_eq!(replaced, 1, "the unit has exactly one ExecStart=");
    let path = dir.join("clawbox.service");
    std::fs::write(&path, body).unwrap();
    path
}

/// A line in which systemd complains about the unit's contents.
fn is_unit_error(line: &str) -> bool {
    // Parse complaints are prefixed `<file>:<line>:`.
    let located = line
        .split_once("clawbox.service:")
        .and_then(|(_, rest)| rest.split(':').next())
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    const MARKERS: [&str; 9] = [
        "unknown key",
        "unknown section",
        "unknown lvalue",
        "failed to parse",
        "invalid",
        "missing '='",
        "not executable",
        "has no execstart",
        "bad unit file setting",
    ];
    let lower = line.to_ascii_lowercase();
    located || MARKERS.iter().any(|m| lower.contains(m))
}

#[test]
fn the_unit_verifies_without_complaints() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let all = text(&out);
    let errors: Vec<&str> = all.lines().filter(|l| is_unit_error(l)).collect();
    assert!(
        errors.is_empty() && out.status.success(),
        "systemd-analyze verify complained ({}):\n{all}",
        out.status
    );
}

#[test]
fn the_unit_exposure_is_ok_or_better() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let out = analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let all = text(&out);
    // "→ Overall exposure level for clawbox.service: 1.1 OK 🙂"
    let level = all
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for clawbox.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    let Some(level) = level else {
        panic!(
            "no overall exposure level in the output ({}):\n{all}",
            out.status
        );
    };
    assert!(
        level <= MAX_EXPOSURE,
        "exposure {level} is above {MAX_EXPOSURE} (OK):\n{all}"
    );
}

#[test]
fn the_unit_says_what_the_daemon_relies_on() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for needed in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/clawbox run",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartPreventExitStatus=78 65",
        "User=clawbox",
        "StateDirectory=clawbox",
        "StateDirectoryMode=0700",
        "ConfigurationDirectory=clawbox",
    ] {
        assert!(lines.contains(&needed), "the unit lacks `{needed}`");
    }
}

#[test]
fn the_error_filter_catches_real_syntax_complaints() {
    // The same check on a copy with a typo and a bad value must find them.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let broken = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("RestartSec=2", "RestartSec=two\nWatchDogSec=30");
    std::fs::write(&unit, broken).unwrap();
    let out = analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let all = text(&out);
    let errors: Vec<&str> = all.lines().filter(|l| is_unit_error(l)).collect();
    assert_eq!(errors.len(), 2, "expected two complaints:\n{all}");
    assert!(!is_unit_error(""));
}
