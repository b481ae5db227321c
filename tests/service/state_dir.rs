//! Where the state lives, through the real binary, with no `state_dir` in the config and no
//! `$STATE_DIRECTORY` (a user following the README on an installed box): `pair whatsapp` writes
//! the store that `run` reads (the packaged directory, here a temp dir named by
//! `CLAWBOX_DEFAULT_STATE_DIR`), a running daemon is asked instead of its store being touched, and
//! state is never left to the wrong user.

use kit::{fakes, support};

use fakes::whatsapp::FakeWhatsApp;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use support::*;
use tokio::time::Instant;

/// An installed box in a temp dir: `lib/` stands for /var/lib/clawbox, `cwd/` is where the user
/// types, with a config that names no state directory.
struct Installed {
    root: tempfile::TempDir,
    cfg: PathBuf,
    port: u16,
}

impl Installed {
    fn new(whatsapp_url: &str, version_url: &str) -> Installed {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("lib")).unwrap();
        std::fs::create_dir(root.path().join("cwd")).unwrap();
        let port = free_port();
        let cfg = root.path().join("cwd/clawbox.toml");
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
                 [channels.whatsapp]\nserver_url = \"{whatsapp_url}\"\n\
                 version_url = \"{version_url}\"\n"
            ),
        )
        .unwrap();
        Installed { root, cfg, port }
    }
    fn lib(&self) -> PathBuf {
        self.root.path().join("lib")
    }
    fn cwd(&self) -> PathBuf {
        self.root.path().join("cwd")
    }
    fn envs(&self) -> [(&'static str, String); 1] {
        [(
            "CLAWBOX_DEFAULT_STATE_DIR",
            self.lib().display().to_string(),
        )]
    }
    fn spawn(&self, args: &[&str]) -> Proc {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--config", self.cfg.to_str().unwrap()]);
        let envs = self.envs();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spawn(&a, &envs, &self.cwd())
    }
    async fn run(&self) -> Proc {
        let p = self.spawn(&["run"]);
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        p
    }
    async fn wait_health(&self, needle: &str) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let h = http_get(&format!("http://127.0.0.1:{}/healthz", self.port)).await;
            if h.contains(needle) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz never said {needle:?}: {h}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Every path under `dir`, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_writes_the_store_that_run_reads() {
    let fake = FakeWhatsApp::start().await;
    let bx = Installed::new(&fake.ws_url(), &fake.version_url());
    let mut p = bx.spawn(&["pair", "whatsapp"]);
    let qr = wait_qr(&p).await;
    fake.scan(&qr).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    let store = bx.lib().join("clawbox.redb");
    assert!(store.is_file(), "pair wrote into the packaged directory");
    assert!(!bx.cwd().join("state").exists(), "not into ./state");

    // The service finds the link pair made: no QR, linked at once.
    let p = bx.run().await;
    assert!(
        p.stderr()
            .iter()
            .any(|l| l.contains(&format!("store open store={}", store.display()))),
        "{:#?}",
        p.stderr()
    );
    bx.wait_health(&format!("linked {}", fake.phone_number()))
        .await;
    assert!(!bx.cwd().join("state").exists());
    p.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_while_the_service_runs_goes_through_it_and_touches_nothing() {
    // A WhatsApp server that refuses connections: the service keeps retrying.
    let bx = Installed::new(
        &format!("ws://127.0.0.1:{}/ws/chat", free_port()),
        &format!("http://127.0.0.1:{}/sw.js", free_port()),
    );
    let mut daemon = bx.run().await;
    let store = bx.lib().join("clawbox.redb");
    assert!(store.is_file(), "{:#?}", daemon.stderr());
    let before = tree(bx.root.path());

    // The command asks the service (its store is the service's to hold) and tells what it sees.
    let mut p = bx.spawn(&["pair", "whatsapp"]);
    p.wait_stderr("the channel's state from the service", |e| {
        e.iter()
            .any(|l| l.starts_with("WhatsApp: ") && l.contains("reconnecting"))
    })
    .await;
    let pid = p.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert_eq!(p.exit_code().await, Some(1));
    let err = p.stderr().join("\n");
    assert!(err.contains("Asking the running clawbox service"), "{err}");
    assert!(err.contains("pairing cancelled"), "{err}");
    assert!(p.stdout().is_empty(), "no QR: {:#?}", p.stdout());
    assert_eq!(tree(bx.root.path()), before, "nothing else created");

    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, Some(0));
}

/// `sudo clawbox pair whatsapp` on an installed box: the store it creates belongs to the service's
/// user (the owner of the state directory), not to root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_pairing_in_the_service_directory_leaves_the_store_to_the_service_user() {
    if !root_can_be_nobody() {
        eprintln!("skipped: needs root that can chown to nobody (65534)");
        return;
    }
    let fake = FakeWhatsApp::start().await;
    let bx = Installed::new(&fake.ws_url(), &fake.version_url());
    std::os::unix::fs::chown(bx.lib(), Some(65534), Some(65534)).unwrap();
    let mut p = bx.spawn(&["pair", "whatsapp"]);
    let qr = wait_qr(&p).await;
    fake.scan(&qr).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    let m = std::fs::metadata(bx.lib().join("clawbox.redb")).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(m.mode() & 0o777, 0o600);
}

/// Another user (not root, not the owner) is refused by name, with the command to run.
#[tokio::test]
async fn another_user_is_refused_with_the_command_to_run() {
    if !root_can_be_nobody() || which("setpriv").is_none() {
        eprintln!("skipped: needs root that can act as nobody (65534), and setpriv");
        return;
    }
    let bx = Installed::new("ws://127.0.0.1:1/ws/chat", "http://127.0.0.1:1/sw.js");
    // Let `nobody` reach the directories, as /var/lib is reachable on a box; lib/ stays private.
    for d in [bx.root.path().to_path_buf(), bx.cwd()] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        bx.lib(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::set_permissions(&bx.cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let before = tree(bx.root.path());
    let out = tokio::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support::bin(),
            "pair",
            "whatsapp",
            "--config",
            bx.cfg.to_str().unwrap(),
        ])
        .env_remove("STATE_DIRECTORY")
        .env("CLAWBOX_DEFAULT_STATE_DIR", bx.lib())
        .current_dir(bx.cwd())
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(73), "{err}");
    assert!(
        err.contains(&format!(
            "the state directory {} belongs to root, not to",
            bx.lib().display()
        )) && err.contains(&format!(
            "run it as root: sudo {} pair whatsapp --config {}",
            support::bin(),
            bx.cfg.display()
        )),
        "{err}"
    );
    assert_eq!(tree(bx.root.path()), before, "nothing created");
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}
