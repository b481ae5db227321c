//! The first-boot script (`systemd/clawbox-firstboot`, run by `clawbox-firstboot.service`) on a
//! card in a temp dir: the config and secret files and `wifi.conf` leave the boot partition for
//! their 0600 places, what it cannot take stays there with the reason, no secret is ever printed or
//! written to the report, a second run changes nothing, and every state a power cut can leave
//! behind ends, on the next run, where an uninterrupted run ends. Runs the real script with `sh`
//! (dash on Debian, as on the box); the locations come from its `CLAWBOX_FIRSTBOOT_*` variables, the
//! owner is the user running the test. The whole image, booted, is `image/boot-test.sh`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/clawbox-firstboot");

const TOKEN: &str = "7345112233:AAHsecret-telegram-token";
const OPENAI_KEY: &str = "sk-secret-openai-key-0123456789";
const CONFIG: &str = "[channels.telegram]\ntoken_file = \"/etc/clawbox/telegram.token\"\n";
const PASSPHRASE: &str = "p\"ss #w=rd with spaces";

fn id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("id runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A card and a box: `boot/` is the FAT partition, `etc/` is /etc/clawbox, `ro/` a read-only /etc
/// whose Wi-Fi config is a symlink into `data/wifi/` (the SD image's layout).
struct Card {
    root: tempfile::TempDir,
    wifi: bool,
}

struct Run {
    out: Output,
    text: String,
}

impl Card {
    fn new() -> Card {
        let root = tempfile::tempdir().unwrap();
        for d in ["boot", "etc", "ro", "data/wifi"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink(
            "../data/wifi/wpa_supplicant-wlan0.conf",
            root.path().join("ro/wpa_supplicant-wlan0.conf"),
        )
        .unwrap();
        Card { root, wifi: true }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn put(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// A file as the script writes its targets: mode 0600.
    fn put_written(&self, rel: &str, bytes: &[u8]) {
        self.put(rel, bytes);
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }

    fn run(&self) -> Run {
        let mut cmd = Command::new("sh");
        cmd.arg(SCRIPT)
            .env("CLAWBOX_FIRSTBOOT_BOOT", self.path("boot"))
            .env("CLAWBOX_FIRSTBOOT_ETC", self.path("etc"))
            .env("CLAWBOX_FIRSTBOOT_USER", id("-un"));
        if self.wifi {
            cmd.env(
                "CLAWBOX_FIRSTBOOT_WIFI",
                self.path("ro/wpa_supplicant-wlan0.conf"),
            );
        } else {
            cmd.env_remove("CLAWBOX_FIRSTBOOT_WIFI");
        }
        let out = cmd.output().expect("sh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Run { out, text }
    }

    fn report(&self) -> String {
        self.read("boot/clawbox-firstboot.txt")
    }

    /// Every file under the card and the box, with its content and mode: the whole end state.
    fn snapshot(&self) -> Vec<(String, String, u32)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String, u32)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                let meta = p.symlink_metadata().unwrap();
                if meta.is_dir() {
                    out.push((rel, "<dir>".into(), meta.permissions().mode() & 0o7777));
                    walk(base, &p, out);
                } else if meta.file_type().is_symlink() {
                    let to = std::fs::read_link(&p).unwrap().display().to_string();
                    out.push((rel, format!("-> {to}"), 0));
                } else {
                    let body = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_string();
                    out.push((rel, body, meta.permissions().mode() & 0o7777));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out
    }
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
}

/// `rel` is a regular file, mode 0600, owned by the test's user, holding `body`.
fn assert_private(card: &Card, rel: &str, body: &str) {
    let meta = card.path(rel).symlink_metadata().unwrap();
    assert!(meta.is_file(), "{rel} is not a regular file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{rel}'s mode");
    assert_eq!(meta.uid().to_string(), id("-u"), "{rel}'s owner");
    assert_eq!(card.read(rel), body, "{rel}'s content");
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [TOKEN, OPENAI_KEY, PASSPHRASE, "secretvalue"] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

/// No temporary file is left beside the targets.
fn assert_no_temp(card: &Card) {
    for (rel, _, _) in card.snapshot() {
        assert!(!rel.contains("firstboot-tmp"), "left behind: {rel}");
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn config_and_secrets_move_to_etc_0600_and_leave_the_card() {
    let card = Card::new();
    card.put("boot/clawbox.toml", CONFIG.as_bytes());
    card.put(
        "boot/clawbox/telegram.token",
        format!("{TOKEN}\r\n").as_bytes(),
    );
    card.put("boot/clawbox/openai.key", OPENAI_KEY.as_bytes());
    let run = card.run();
    assert_eq!(run.code(), Some(0), "{}", run.text);

    assert_private(&card, "etc/clawbox.toml", CONFIG);
    assert_private(&card, "etc/telegram.token", &format!("{TOKEN}\r\n"));
    assert_private(&card, "etc/openai.key", OPENAI_KEY);
    // Gone from the card, folder included; only the report is left there.
    let left: Vec<_> = std::fs::read_dir(card.path("boot"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["clawbox-firstboot.txt"]);
    // The report and the journal name each file, never its content.
    let report = card.report();
    for name in [
        "clawbox.toml",
        "clawbox/telegram.token",
        "clawbox/openai.key",
    ] {
        assert!(report.contains(&format!("took {name}")), "{report}");
        assert!(run.text.contains(&format!("took {name}")), "{}", run.text);
    }
    assert_no_secret("the output", &run.text);
    assert_no_secret("the report", &report);
    assert_no_temp(&card);
}

#[test]
fn wifi_conf_becomes_the_wpa_supplicant_config_where_the_symlink_points() {
    let card = Card::new();
    // As a Windows editor saves it: a byte order mark, CRLF; spaces around `=`, a comment, the
    // keys in any case, a quoted name with a trailing space and UTF-8 in it.
    let conf = format!(
        "\u{feff}# my home network\r\nCountry = de\r\nSSID = \"Café net \"\r\npassphrase={PASSPHRASE}\r\n"
    );
    card.put("boot/wifi.conf", conf.as_bytes());
    let run = card.run();
    assert_eq!(run.code(), Some(0), "{}", run.text);

    // The symlink in the read-only /etc is untouched; the file it points at is written.
    assert!(card.path("ro/wpa_supplicant-wlan0.conf").is_symlink());
    let written = card.read("data/wifi/wpa_supplicant-wlan0.conf");
    assert_private(&card, "data/wifi/wpa_supplicant-wlan0.conf", &written);
    let lines: Vec<&str> = written.lines().map(str::trim).collect();
    for needed in [
        "ctrl_interface=DIR=/run/wpa_supplicant",
        "country=DE",
        "network={",
        &format!("ssid={}", hex("Café net ")),
        &format!("psk=\"{PASSPHRASE}\""),
        "}",
    ] {
        assert!(lines.contains(&needed), "no `{needed}` in:\n{written}");
    }
    assert!(!card.exists("boot/wifi.conf"));
    // The network's name and country are shown; the passphrase never.
    let report = card.report();
    assert!(
        report.contains("took wifi.conf: network 'Café net ', country DE"),
        "{report}"
    );
    assert_no_secret("the output", &run.text);
    assert_no_secret("the report", &report);
    assert_no_temp(&card);
}

#[test]
fn an_open_or_hidden_network_and_a_raw_key_are_written_as_such() {
    let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ABCDEF";
    let raw_conf = format!("country=GB\nssid=cafe\npassphrase={key}\n");
    let raw_psk = format!("psk={key}");
    for (conf, want, unwanted) in [
        ("country=GB\nssid=cafe\n", "key_mgmt=NONE", "psk="),
        (
            "country=GB\nssid=cafe\npassphrase=longenough\nhidden=yes",
            "scan_ssid=1",
            "key_mgmt=NONE",
        ),
        (raw_conf.as_str(), raw_psk.as_str(), "psk=\""),
    ] {
        let card = Card::new();
        card.put("boot/wifi.conf", conf.as_bytes());
        let run = card.run();
        assert_eq!(run.code(), Some(0), "{conf}: {}", run.text);
        let written = card.read("data/wifi/wpa_supplicant-wlan0.conf");
        let lines: Vec<&str> = written.lines().map(str::trim).collect();
        assert!(lines.contains(&want), "{conf}: no `{want}` in:\n{written}");
        assert!(
            !written.contains(unwanted),
            "{conf}: `{unwanted}` in:\n{written}"
        );
    }
}

#[test]
fn without_the_image_drop_in_wifi_conf_stays_on_the_card() {
    // The .deb on another system (no CLAWBOX_FIRSTBOOT_WIFI): the network is not clawbox's.
    let mut card = Card::new();
    card.wifi = false;
    let conf = format!("country=DE\nssid=home\npassphrase={PASSPHRASE}\n");
    card.put("boot/wifi.conf", conf.as_bytes());
    let run = card.run();
    assert_eq!(run.code(), Some(0), "{}", run.text);
    assert_eq!(card.read("boot/wifi.conf"), conf);
    assert!(!card.exists("data/wifi/wpa_supplicant-wlan0.conf"));
    assert!(
        run.text.contains("wifi.conf left on the card"),
        "{}",
        run.text
    );
}

#[test]
fn a_wifi_conf_it_cannot_use_stays_on_the_card_with_the_reason() {
    for (conf, reason) in [
        (
            "country=DE\nssid=home\npassphrase=short\n",
            "has 5 characters; WPA2 needs 8 to 63",
        ),
        ("ssid=home\npassphrase=secretvalue\n", "country= is missing"),
        ("country=Germany\nssid=home\n", "is not two letters"),
        ("country=DE\npassphrase=secretvalue\n", "ssid= is missing"),
        (
            "country=DE\nssid=home\npasword=secretvalue\n",
            "line 3: unknown key 'pasword'",
        ),
        (
            "country=DE\nssid=home\nsecretvalue\n",
            "line 3 is not key=value",
        ),
        (
            "country=DE\nssid=a network name that is longer than 32 bytes\n",
            "at most 32",
        ),
        (
            "country=DE\nssid=home\npassphrase=sécretvalue\n",
            "outside printable ASCII",
        ),
        (
            "country=DE\nssid=home\nhidden=maybe\n",
            "hidden=yes or hidden=no",
        ),
    ] {
        let card = Card::new();
        card.put("boot/wifi.conf", conf.as_bytes());
        card.put("boot/clawbox/telegram.token", TOKEN.as_bytes());
        let run = card.run();
        assert_eq!(run.code(), Some(1), "{conf}: {}", run.text);
        assert_eq!(card.read("boot/wifi.conf"), conf, "wifi.conf must stay");
        assert!(
            !card.exists("data/wifi/wpa_supplicant-wlan0.conf"),
            "{conf}"
        );
        let report = card.report();
        assert!(
            report.contains(reason),
            "{conf}: `{reason}` not in:\n{report}"
        );
        assert!(
            report.contains("fix it on the card and boot again"),
            "{report}"
        );
        assert_no_secret("the output", &run.text);
        assert_no_secret("the report", &report);
        // The rest is still taken.
        assert_private(&card, "etc/telegram.token", TOKEN);
    }
}

#[test]
fn what_cannot_be_taken_stays_and_the_rest_is_taken() {
    let card = Card::new();
    card.put("boot/clawbox/telegram.token", TOKEN.as_bytes());
    card.put("boot/clawbox/bad name.key", b"x");
    card.put("boot/clawbox/.hidden", b"x");
    card.put("boot/clawbox/sub/inner.key", b"x");
    card.put("boot/clawbox/huge.key", &vec![b'x'; 65537]);
    let run = card.run();
    assert_eq!(run.code(), Some(1), "{}", run.text);
    assert_private(&card, "etc/telegram.token", TOKEN);
    for rel in ["bad name.key", ".hidden", "sub/inner.key", "huge.key"] {
        assert!(
            card.exists(&format!("boot/clawbox/{rel}")),
            "{rel} must stay"
        );
    }
    let report = card.report();
    for reason in [
        "clawbox/bad name.key: use a name of letters",
        "clawbox/.hidden: use a name of letters",
        "clawbox/sub: a folder",
        "clawbox/huge.key: 65537 bytes",
    ] {
        assert!(report.contains(reason), "`{reason}` not in:\n{report}");
    }
    // Nothing but the good file reached the box.
    let etc: Vec<_> = std::fs::read_dir(card.path("etc")).unwrap().collect();
    assert_eq!(etc.len(), 1);
}

#[test]
fn a_failed_install_keeps_the_boot_copy() {
    // A directory where the token should go: the rename fails (it must not move the file into it).
    let card = Card::new();
    card.put("boot/clawbox/telegram.token", TOKEN.as_bytes());
    card.put("etc/telegram.token/keep", b"other");
    let run = card.run();
    assert_eq!(run.code(), Some(1), "{}", run.text);
    assert_eq!(card.read("boot/clawbox/telegram.token"), TOKEN);
    assert_eq!(card.read("etc/telegram.token/keep"), "other");
    assert_eq!(
        std::fs::read_dir(card.path("etc/telegram.token"))
            .unwrap()
            .count(),
        1
    );
    assert!(
        card.report().contains("could not install it"),
        "{}",
        card.report()
    );
    assert_no_temp(&card);
}

#[test]
fn a_second_run_changes_nothing() {
    let card = Card::new();
    card.put("boot/clawbox.toml", CONFIG.as_bytes());
    card.put("boot/clawbox/telegram.token", TOKEN.as_bytes());
    card.put(
        "boot/wifi.conf",
        format!("country=DE\nssid=home\npassphrase={PASSPHRASE}\n").as_bytes(),
    );
    assert_eq!(card.run().code(), Some(0));
    let after_first = card.snapshot();
    let run = card.run();
    assert_eq!(run.code(), Some(0), "{}", run.text);
    assert_eq!(run.text, "", "nothing to take, nothing to say");
    assert_eq!(card.snapshot(), after_first);
}

/// The card as the owner prepared it.
fn prepared() -> Card {
    let card = Card::new();
    card.put("boot/clawbox.toml", CONFIG.as_bytes());
    card.put("boot/clawbox/telegram.token", TOKEN.as_bytes());
    card.put(
        "boot/wifi.conf",
        format!("country=DE\nssid=home\npassphrase={PASSPHRASE}\n").as_bytes(),
    );
    card
}

/// Leaves a prepared card in the state a power cut left it in (given the Wi-Fi config an
/// uninterrupted run writes).
type CutState = fn(&Card, &str);

#[test]
fn every_state_a_power_cut_leaves_ends_where_an_uninterrupted_run_ends() {
    let clean = prepared();
    assert_eq!(clean.run().code(), Some(0));
    let want = clean.snapshot();
    let wpa_written = clean.read("data/wifi/wpa_supplicant-wlan0.conf");

    // Each state the script passes through (per file: temp written, temp renamed, boot copy
    // deleted, FAT synced), as a cut leaves it; the next boot runs the script again.
    let cuts: [(&str, CutState); 5] = [
        ("old targets from an earlier provisioning", |c, _| {
            c.put("etc/clawbox.toml", b"old config");
            c.put("etc/telegram.token", b"old token");
            c.put("data/wifi/wpa_supplicant-wlan0.conf", b"old wifi");
        }),
        ("a temp file half written", |c, _| {
            c.put_written("etc/.telegram.token.firstboot-tmp", &TOKEN.as_bytes()[..5]);
            c.put_written(
                "data/wifi/.wpa_supplicant-wlan0.conf.firstboot-tmp",
                b"ctrl_int",
            );
        }),
        ("renamed, boot copy not yet deleted", |c, wpa| {
            c.put_written("etc/telegram.token", TOKEN.as_bytes());
            c.put_written("data/wifi/wpa_supplicant-wlan0.conf", wpa.as_bytes());
        }),
        (
            "the folder's files done, the top-level config not",
            |c, _| {
                c.put_written("etc/telegram.token", TOKEN.as_bytes());
                std::fs::remove_file(c.path("boot/clawbox/telegram.token")).unwrap();
                std::fs::remove_dir(c.path("boot/clawbox")).unwrap();
            },
        ),
        ("an earlier run's report half written", |c, _| {
            c.put("boot/clawbox-firstboot.txt.tmp", b"clawbox-first");
        }),
    ];
    for (what, cut) in cuts {
        let card = prepared();
        cut(&card, &wpa_written);
        let run = card.run();
        assert_eq!(run.code(), Some(0), "{what}: {}", run.text);
        let got: Vec<_> = card
            .snapshot()
            .into_iter()
            .filter(|(rel, _, _)| rel != "boot/clawbox-firstboot.txt")
            .collect();
        let want: Vec<_> = want
            .iter()
            .filter(|(rel, _, _)| rel != "boot/clawbox-firstboot.txt")
            .cloned()
            .collect();
        assert_eq!(got, want, "{what}");
    }
}
