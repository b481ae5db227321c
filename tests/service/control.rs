//! The daemon owns pairing, through the real binaries: with the service running as systemd runs
//! it (`STATE_DIRECTORY` and `RUNTIME_DIRECTORY` set, the config in a directory of its own),
//! `clawbox pair whatsapp --config <that config>` from another directory and another environment
//! shows the service's live QR (or pairing code), the fake phone links it, the running service is
//! linked without a restart and `clawbox status` says so; Ctrl-C cancels in the service;
//! `clawbox unpair whatsapp` logs out and wipes, over the socket and without a service; a user
//! who is neither root nor the service's user is refused with what to do.

use kit::{fakes, support};

use fakes::whatsapp::FakeWhatsApp;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

/// A box laid out as systemd runs the service: `etc/clawbox.toml` (names no state directory),
/// `lib/` ($STATE_DIRECTORY, and what an installed box's /var/lib/clawbox is to the CLI), `run/`
/// ($RUNTIME_DIRECTORY), and `home/`, where the owner types.
struct Service {
    root: tempfile::TempDir,
    cfg: PathBuf,
}

impl Service {
    fn new(whatsapp_url: &str, version_url: &str) -> Service {
        let root = tempfile::tempdir().unwrap();
        for d in ["etc", "lib", "run", "home"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        std::fs::set_permissions(
            root.path().join("lib"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::set_permissions(
            root.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let port = free_port();
        let cfg = root.path().join("etc/clawbox.toml");
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nhealth_listen = \"127.0.0.1:{port}\"\n[pacing]\nenabled = false\n\
                 [channels.whatsapp]\nserver_url = \"{whatsapp_url}\"\n\
                 version_url = \"{version_url}\"\n"
            ),
        )
        .unwrap();
        Service { root, cfg }
    }
    fn dir(&self, d: &str) -> PathBuf {
        self.root.path().join(d)
    }

    /// `clawbox run` with the unit's environment, in `/` as systemd starts it.
    async fn start(&self) -> Proc {
        let lib = self.dir("lib").display().to_string();
        let run = self.dir("run").display().to_string();
        let p = spawn(
            &["run", "--config", self.cfg.to_str().unwrap()],
            &[
                ("STATE_DIRECTORY", lib.as_str()),
                ("RUNTIME_DIRECTORY", run.as_str()),
                // Nothing installed at the packaged path for the service itself.
                ("CLAWBOX_DEFAULT_STATE_DIR", "/nonexistent"),
            ],
            Path::new("/"),
        );
        p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
            .await;
        p
    }

    /// A command typed by the owner in `home/`: no systemd variables; the installed box's state
    /// directory is where it always is (here `lib/`, named as the packaged default).
    fn cli(&self, args: &[&str]) -> Proc {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--config", self.cfg.to_str().unwrap()]);
        let lib = self.dir("lib").display().to_string();
        spawn(
            &a,
            &[("CLAWBOX_DEFAULT_STATE_DIR", lib.as_str())],
            &self.dir("home"),
        )
    }

    async fn cli_done(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut p = self.cli(args);
        let code = p.exit_code().await;
        (code, p.stdout().join("\n"), p.stderr().join("\n"))
    }

    /// `clawbox status` until its output contains `needle`.
    async fn wait_status(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + SOON;
        loop {
            let (_, out, err) = self.cli_done(&["status"]).await;
            if out.contains(needle) {
                return out;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`clawbox status` never said {needle:?}:\n{out}\n{err}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn pairing_code(p: &Proc) -> String {
    let line = p
        .stdout()
        .into_iter()
        .find(|l| l.starts_with("WhatsApp pairing code:"))
        .unwrap();
    line.trim_start_matches("WhatsApp pairing code:")
        .trim()
        .to_string()
}

fn readies(p: &Proc) -> usize {
    p.stderr().iter().filter(|l| l.contains(" ready")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_by_qr_links_the_running_service_without_a_restart() {
    let fake = FakeWhatsApp::start().await;
    let svc = Service::new(&fake.ws_url(), &fake.version_url());
    let mut daemon = svc.start().await;
    // The socket lives in the runtime directory, private; the state directory links to it.
    let sock = svc.dir("run/control.sock");
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let link = std::fs::symlink_metadata(svc.dir("lib/control.sock")).unwrap();
    assert!(link.file_type().is_symlink());

    let mut p = svc.cli(&["pair", "whatsapp"]);
    let qr = wait_qr(&p).await;
    fake.scan(&qr).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    let out = p.stdout().join("\n");
    assert!(
        out.contains(&format!(
            "WhatsApp linked {}. The running service uses it now.",
            fake.phone_number()
        )),
        "{out}"
    );
    // The very same process, linked: no restart.
    assert!(daemon.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(readies(&daemon), 1, "{:#?}", daemon.stderr());
    let status = svc
        .wait_status(&format!("linked {}", fake.phone_number()))
        .await;
    assert!(
        status.contains(&format!("WhatsApp linked to {}", fake.phone_number())),
        "{status}"
    );
    assert!(fake.state().await.connected);
    // Nothing was created where the owner typed, and no store outside the state directory.
    assert_eq!(std::fs::read_dir(svc.dir("home")).unwrap().count(), 0);

    // Asking again: already linked, nothing done.
    let (code, out, _) = svc.cli_done(&["pair", "whatsapp"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("already linked"), "{out}");

    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, Some(0));
    assert!(!sock.exists(), "the socket is removed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_by_phone_number_links_the_running_service() {
    let fake = FakeWhatsApp::start().await;
    let svc = Service::new(&fake.ws_url(), &fake.version_url());
    let daemon = svc.start().await;
    let mut p = svc.cli(&["pair", "whatsapp", "--phone", fake.phone_number()]);
    p.wait_stdout("the pairing code", |o| {
        o.iter().any(|l| l.starts_with("WhatsApp pairing code:"))
    })
    .await;
    let code = pairing_code(&p);
    assert_eq!(code.replace('-', "").len(), 8, "{code}");
    fake.enter_code(&code).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    svc.wait_status(&format!("linked {}", fake.phone_number()))
        .await;
    assert_eq!(readies(&daemon), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_in_the_service_and_pair_starts_again() {
    let fake = FakeWhatsApp::start().await;
    let svc = Service::new(&fake.ws_url(), &fake.version_url());
    let _daemon = svc.start().await;
    let mut p = svc.cli(&["pair", "whatsapp"]);
    wait_qr(&p).await;
    let pid = p.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert_eq!(p.exit_code().await, Some(1));
    assert!(p.stderr().join("\n").contains("pairing cancelled"));
    // The service stopped showing codes and says so.
    svc.wait_status("pairing cancelled").await;
    assert!(
        svc.wait_status("WhatsApp not linked (pairing: stopped)")
            .await
            .contains("needs-owner")
    );

    // A new request starts a fresh pairing in the same service.
    let mut p = svc.cli(&["pair", "whatsapp"]);
    let qr = wait_qr(&p).await;
    fake.scan(&qr).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpair_logs_out_and_wipes_then_pair_links_again_without_a_restart() {
    let fake = FakeWhatsApp::start().await;
    let svc = Service::new(&fake.ws_url(), &fake.version_url());
    let daemon = svc.start().await;
    let mut p = svc.cli(&["pair", "whatsapp"]);
    fake.scan(&wait_qr(&p).await).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0));
    svc.wait_status("WhatsApp linked to").await;

    // Without a terminal and without --yes: asks, so nothing happens.
    let (code, _, err) = svc.cli_done(&["unpair", "whatsapp"]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("add --yes") && err.contains("nothing changed"),
        "{err}"
    );
    assert!(fake.state().await.paired);

    let (code, out, err) = svc.cli_done(&["unpair", "whatsapp", "--yes"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("logged out") && out.contains("wiped"), "{out}");
    assert!(!fake.state().await.paired, "the phone dropped the device");
    let status = svc.wait_status("unlinked by the owner").await;
    assert!(status.contains("needs-owner"), "{status}");

    let mut p = svc.cli(&["pair", "whatsapp"]);
    fake.scan(&wait_qr(&p).await).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    svc.wait_status(&format!("linked {}", fake.phone_number()))
        .await;
    assert_eq!(readies(&daemon), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpair_without_a_service_works_on_its_state() {
    let fake = FakeWhatsApp::start().await;
    let svc = Service::new(&fake.ws_url(), &fake.version_url());
    // Linked directly (no service runs).
    let mut p = svc.cli(&["pair", "whatsapp"]);
    fake.scan(&wait_qr(&p).await).await.unwrap();
    assert_eq!(p.exit_code().await, Some(0), "{:#?}", p.stderr());
    assert!(fake.state().await.paired);

    let (code, out, err) = svc.cli_done(&["unpair", "whatsapp", "--yes"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("logged out"), "{out}");
    assert!(!fake.state().await.paired);
    let (code, out, _) = svc.cli_done(&["unpair", "whatsapp", "--yes"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("was not linked"), "{out}");
}

/// Runs this test binary's clawbox as `nobody` (neither root nor the service's user, here root).
async fn as_nobody(svc: &Service, args: &[&str]) -> (Option<i32>, String) {
    let mut a: Vec<String> = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        support::bin(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend(["--config".to_string(), svc.cfg.display().to_string()]);
    let out = tokio::process::Command::new("setpriv")
        .args(&a)
        .env_remove("STATE_DIRECTORY")
        .env_remove("RUNTIME_DIRECTORY")
        .env("CLAWBOX_DEFAULT_STATE_DIR", svc.dir("lib"))
        .current_dir("/")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused_with_what_to_do() {
    if !root_can_be_nobody() || which("setpriv").is_none() {
        eprintln!("skipped: needs root that can act as nobody (65534), and setpriv");
        return;
    }
    let fake = FakeWhatsApp::start().await;
    let svc = Service::new(&fake.ws_url(), &fake.version_url());
    // nobody may read the config and reach the directories (as on a box); lib/ and run/ stay 0700.
    std::fs::set_permissions(svc.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(svc.dir("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&svc.cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _daemon = svc.start().await;

    // The file system says no first, and the state directory's owner is named, with the command.
    let (code, err) = as_nobody(&svc, &["pair", "whatsapp"]).await;
    assert_eq!(code, Some(73), "{err}");
    assert!(
        err.contains(&format!(
            "the state directory {} belongs to root, not to",
            svc.dir("lib").display()
        )) && err.contains(&format!(
            "run it as root: sudo {} pair whatsapp",
            support::bin()
        )),
        "{err}"
    );
    let (code, err) = as_nobody(&svc, &["unpair", "whatsapp", "--yes"]).await;
    assert_eq!(code, Some(73), "{err}");

    // Directories opened by mistake: the service itself checks who is calling.
    std::fs::set_permissions(svc.dir("lib"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(svc.dir("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        svc.dir("run/control.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let (code, err) = as_nobody(&svc, &["pair", "whatsapp"]).await;
    assert_eq!(code, Some(77), "{err}");
    assert!(
        err.contains(
            "the clawbox service refused: only root and the service's user (root) may talk to \
             the clawbox service"
        ) && err.contains("sudo"),
        "{err}"
    );
    // Status still answers from /healthz, which tells nothing secret.
    let (code, err) = as_nobody(&svc, &["status"]).await;
    assert!(matches!(code, Some(0) | Some(1)), "{err}");
    // Nothing was started: the service shows the codes it showed on its own, nobody else's.
    assert!(!fake.state().await.paired);
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}
