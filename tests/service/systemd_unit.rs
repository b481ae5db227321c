//! The shipped units, checked by systemd's own tools: `systemd/clawbox.service`, the same unit with
//! its display drop-in (`systemd/clawbox.service.d/display.conf`) and
//! `systemd/clawbox-firstboot.service` must each parse without a single complaint
//! (`systemd-analyze verify`) and score "OK" or better in `systemd-analyze security --offline=yes`.
//! Both work without a running systemd; they need the `systemd` package, which CI installs — a
//! missing tool fails the test rather than skipping it. The journald drop-in
//! (`systemd/journald-clawbox.conf`) has no verifier: its keys are checked against the commented
//! defaults of the installed `journald.conf`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../../systemd/clawbox.service");
const DISPLAY_DROP_IN: &str = include_str!("../../systemd/clawbox.service.d/display.conf");
const FIRSTBOOT: &str = include_str!("../../systemd/clawbox-firstboot.service");
const JOURNALD: &str = include_str!("../../systemd/journald-clawbox.conf");

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

/// A line in which systemd complains about a unit's contents.
fn is_unit_error(line: &str) -> bool {
    // Parse complaints are prefixed `<file>:<line>:` (the unit, or a drop-in `.conf`).
    let located = [".service:", ".conf:"].iter().any(|suffix| {
        line.split_once(suffix)
            .and_then(|(_, rest)| rest.split(':').next())
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    });
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

/// `systemd-analyze security --offline=yes` on `unit`: the overall exposure and the full output.
fn exposure(unit: &Path) -> (f64, String) {
    let name = unit.file_name().unwrap().to_str().unwrap().to_string();
    let out = analyze(&["security", "--offline=yes", unit.to_str().unwrap()]);
    let all = text(&out);
    // "→ Overall exposure level for clawbox.service: 1.1 OK 🙂"
    let level = all
        .lines()
        .find_map(|l| l.split_once(&format!("Overall exposure level for {name}:")))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    let Some(level) = level else {
        panic!(
            "no overall exposure level in the output ({}):\n{all}",
            out.status
        );
    };
    (level, all)
}

/// `systemd-analyze verify` on `unit` must print no complaint and succeed.
fn verify_clean(unit: &Path) {
    let out = analyze(&["verify", "--man=no", unit.to_str().unwrap()]);
    let all = text(&out);
    let errors: Vec<&str> = all.lines().filter(|l| is_unit_error(l)).collect();
    assert!(
        errors.is_empty() && out.status.success(),
        "systemd-analyze verify complained about {} ({}):\n{all}",
        unit.display(),
        out.status
    );
}

#[test]
fn the_unit_exposure_is_ok_or_better() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let (level, all) = exposure(&unit);
    assert!(
        level <= MAX_EXPOSURE,
        "exposure {level} is above {MAX_EXPOSURE} (OK):\n{all}"
    );
}

/// The unit with the display drop-in beside it, as systemd finds drop-ins:
/// `<dir>/clawbox.service.d/display.conf`.
fn unit_with_display_drop_in(dir: &Path) -> PathBuf {
    let unit = unit_copy(dir);
    let d = dir.join("clawbox.service.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("display.conf"), DISPLAY_DROP_IN).unwrap();
    unit
}

#[test]
fn the_display_drop_in_applies_verifies_and_stays_ok() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_display_drop_in(dir.path());
    verify_clean(&unit);
    let (level, all) = exposure(&unit);
    assert!(
        level <= MAX_EXPOSURE,
        "exposure {level} with the display drop-in is above {MAX_EXPOSURE} (OK):\n{all}"
    );
    // The drop-in was really loaded: its device list is in the report, and the private /dev is off.
    let acl = all
        .lines()
        .find(|l| l.contains("DeviceAllow="))
        .unwrap_or_else(|| panic!("no DeviceAllow= line:\n{all}"));
    for dev in [
        "/dev/fb0:w",
        "/dev/fb1:w",
        "/dev/i2c-1:rw",
        "/dev/ttyAMA0:w",
        "/dev/serial0:w",
    ] {
        assert!(acl.contains(dev), "{dev} missing from: {acl}");
    }
    assert!(
        all.lines().any(|l| l.contains("✗ PrivateDevices=")
            || l.contains("PrivateDevices=") && l.contains("hardware")),
        "PrivateDevices= still on:\n{all}"
    );
    // Without the drop-in the same report has no display device.
    let plain = tempfile::tempdir().unwrap();
    let (_, base) = exposure(&unit_copy(plain.path()));
    assert!(!base.contains("/dev/fb0"), "{base}");
}

#[test]
fn the_display_drop_in_keeps_the_device_cgroup_closed() {
    let lines: Vec<&str> = DISPLAY_DROP_IN.lines().map(str::trim).collect();
    for needed in [
        "[Service]",
        "PrivateDevices=no",
        "DevicePolicy=closed",
        "SupplementaryGroups=video i2c dialout",
    ] {
        assert!(lines.contains(&needed), "the drop-in lacks `{needed}`");
    }
    // Every DeviceAllow= names one node under /dev (no `char-*` class wildcards) and at most rw.
    let allows: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("DeviceAllow="))
        .collect();
    assert!(allows.len() >= 5, "{allows:?}");
    for a in allows {
        let (path, mode) = a.split_once(' ').unwrap_or((a, ""));
        assert!(path.starts_with("/dev/"), "{a}");
        assert!(matches!(mode, "w" | "rw"), "{a}");
    }
}

/// The first-boot script in the repository (the .deb installs it as /usr/lib/clawbox/clawbox-firstboot).
const FIRSTBOOT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/clawbox-firstboot");

/// The first-boot unit copied to `dir`, its `ExecStart` pointing at the repository's script
/// (verify checks that the executable exists).
fn firstboot_copy(dir: &Path) -> PathBuf {
    assert!(!FIRSTBOOT_SCRIPT.contains(char::is_whitespace));
    let mut replaced = 0;
    let body: String = FIRSTBOOT
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                replaced += 1;
                format!("ExecStart={FIRSTBOOT_SCRIPT}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_eq!(
        replaced, 1,
        "the first-boot unit has exactly one ExecStart="
    );
    let path = dir.join("clawbox-firstboot.service");
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn the_firstboot_unit_verifies_and_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    // Before=clawbox.service: give verify the unit it orders against.
    unit_copy(dir.path());
    let unit = firstboot_copy(dir.path());
    verify_clean(&unit);
    let (level, all) = exposure(&unit);
    assert!(
        level <= MAX_EXPOSURE,
        "first-boot exposure {level} is above {MAX_EXPOSURE} (OK):\n{all}"
    );
}

#[test]
fn the_firstboot_unit_runs_the_script_before_clawbox_when_there_is_something_to_take() {
    let lines: Vec<&str> = FIRSTBOOT.lines().map(str::trim).collect();
    for needed in [
        "ConditionPathExists=|/boot/firmware/clawbox.toml",
        "ConditionDirectoryNotEmpty=|/boot/firmware/clawbox",
        "RequiresMountsFor=/boot/firmware /etc/clawbox",
        "Before=clawbox.service",
        "Type=oneshot",
        "ExecStart=/usr/lib/clawbox/clawbox-firstboot",
        "ReadWritePaths=/etc/clawbox /boot/firmware",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            lines.contains(&needed),
            "the first-boot unit lacks `{needed}`"
        );
    }
    // The .deb installs the script where the unit runs it, executable.
    let manifest = include_str!("../../Cargo.toml");
    assert!(
        manifest.contains(
            r#"["systemd/clawbox-firstboot", "usr/lib/clawbox/clawbox-firstboot", "755"]"#
        ),
        "Cargo.toml's [package.metadata.deb] assets do not install the first-boot script"
    );
    // What the script does with the files is tested in tests/service/firstboot.rs.
}

#[test]
fn the_journald_drop_in_uses_only_known_keys_and_keeps_logs_in_ram() {
    // The stock journald.conf lists every key, commented out, with its default.
    let stock = [
        "/etc/systemd/journald.conf",
        "/usr/lib/systemd/journald.conf",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .expect("journald.conf of the `systemd` package (apt-get install systemd)");
    let known: Vec<&str> = stock
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('#').split_once('='))
        .map(|(k, _)| k.trim())
        .collect();
    let mut keys = Vec::new();
    let mut section = "";
    for l in JOURNALD.lines().map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('[') {
            section = l;
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("not `key=value`: {l}"));
        assert_eq!(section, "[Journal]", "{l} outside [Journal]");
        assert!(known.contains(&k), "journald has no key `{k}`");
        assert!(!v.is_empty(), "{k} has no value");
        keys.push((k, v));
    }
    assert!(keys.contains(&("Storage", "volatile")), "{keys:?}");
    assert!(keys.iter().any(|(k, _)| *k == "RuntimeMaxUse"), "{keys:?}");
    assert!(keys.iter().any(|(k, _)| *k == "RateLimitBurst"), "{keys:?}");
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
        "RuntimeDirectory=clawbox",
        "RuntimeDirectoryMode=0700",
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
