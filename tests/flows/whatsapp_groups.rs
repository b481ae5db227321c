//! WhatsApp groups through the real `clawbox run` binary against the fake server's groups
//! (sender keys, `w:g2`, `w:gp2`): `clawbox groups list` shows the groups the linked account is
//! in, through the running service.

use kit::fakes::whatsapp::{FakeWhatsApp, GroupAddressing};
use kit::support::*;

use super::whatsapp_flow::{FRIEND, linked_and_running, stop};

const BOB: &str = "+15550004444";
const CAROL: &str = "+15550005555";

/// `clawbox groups list`'s exit code and stdout.
async fn groups_list(cfg: &std::path::Path) -> (Option<i32>, String, String) {
    let out = command(&["groups", "list", "--config", cfg.to_str().unwrap()], &[])
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_list_shows_the_groups_the_account_is_in() {
    let fake = FakeWhatsApp::start().await;
    let (bx, p) = linked_and_running(&fake).await;
    let (code, out, err) = groups_list(&bx.cfg).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("in no group"), "{out}");

    let family = fake
        .group_create("Family", &[FRIEND, BOB, CAROL], GroupAddressing::Pn)
        .await
        .unwrap();
    let team = fake
        .group_create("team \"ops\"", &[BOB], GroupAddressing::Lid)
        .await
        .unwrap();
    let (code, out, err) = groups_list(&bx.cfg).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{family}\tFamily").as_str(),
            format!("{team}\tteam \"ops\"").as_str()
        ],
        "one line a group, id then subject, sorted by subject"
    );
    stop(p).await;

    // No service: the command says so instead of guessing.
    let (code, out, err) = groups_list(&bx.cfg).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("not running"), "{err}");
}
