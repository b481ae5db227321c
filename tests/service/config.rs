//! `clawbox config check` and `clawbox run` on bad configs: every error names file:line:col and
//! says what is valid; the exit code is 78 (EX_CONFIG) so systemd does not restart-loop. A damaged
//! store is a clear error with a recovery path (exit 65), never a panic.

use kit::support;

use std::path::Path;
use support::*;

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

async fn check(path: &str) -> (Option<i32>, String) {
    let out = command(&["config", "check", path], &[])
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn valid_config_passes() {
    let out = command(&["config", "check", &data("valid.toml")], &[])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid.toml: ok"));
}

#[tokio::test]
async fn unknown_key_is_located_and_rejected() {
    let (code, err) = check(&data("unknown_key.toml")).await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}:4:1:", data("unknown_key.toml"))),
        "{err}"
    );
    assert!(err.contains("unknown field `health_port`"), "{err}");
    assert!(err.contains("health_listen"), "says what is valid: {err}");
}

#[tokio::test]
async fn wrong_type_is_located_and_rejected() {
    let (code, err) = check(&data("wrong_type.toml")).await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}:2:17:", data("wrong_type.toml"))),
        "{err}"
    );
    assert!(err.contains("expected a whole number"), "{err}");
}

#[tokio::test]
async fn bad_e164_number_is_located_and_rejected() {
    let (code, err) = check(&data("bad_number.toml")).await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}:2:32:", data("bad_number.toml"))),
        "{err}"
    );
    assert!(err.contains("not an E.164 number"), "{err}");
    assert!(
        err.contains("`0170 1234567`") && !err.contains("+441234567890"),
        "names the bad number only: {err}"
    );
}

/// A LID is a valid `allow_from` entry; a malformed one (here with a device part) is located and
/// named, with the form that is valid.
#[tokio::test]
async fn bad_lid_is_located_and_rejected() {
    let (code, err) = check(&data("bad_lid.toml")).await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}:2:55:", data("bad_lid.toml"))),
        "{err}"
    );
    assert!(err.contains("`12345:2@lid` is not a WhatsApp LID"), "{err}");
    assert!(
        err.contains("\"123456789012345@lid\""),
        "says what is valid: {err}"
    );
    assert!(
        !err.contains("`123456789012345@lid`") && !err.contains("+441234567890"),
        "names the bad entry only: {err}"
    );
}

#[tokio::test]
async fn missing_secret_file_is_located_and_rejected() {
    let (code, err) = check(&data("missing_secret.toml")).await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}:2:14:", data("missing_secret.toml"))),
        "{err}"
    );
    assert!(err.contains("missing-token.txt"), "{err}");
}

#[tokio::test]
async fn run_on_a_bad_config_exits_78_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(
        &["run", "--config", &data("wrong_type.toml")],
        &[],
        dir.path(),
    );
    assert_eq!(p.exit_code().await, Some(78));
    let err = p.stderr().join("\n");
    assert!(
        err.contains(&format!("{}:2:17:", data("wrong_type.toml"))),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was started");
}

#[tokio::test]
async fn secrets_inline_are_not_accepted() {
    let (_dir, path) = scratch("[channels.telegram]\ntoken = \"123:abc\"\nallow_from = [1]\n");
    let (code, err) = check(path.to_str().unwrap()).await;
    assert_eq!(code, Some(78));
    assert!(err.contains("unknown field `token`"), "{err}");
    assert!(err.contains("token_file"), "points at the right way: {err}");
}

async fn run_on_store(bytes: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("clawbox.redb"), bytes).unwrap();
    let port = free_port();
    let cfg = format!(
        "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{port}\"\n",
        state.display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut p = spawn(
        &["run", "--config", path.to_str().unwrap()],
        &[],
        dir.path(),
    );
    let code = p.exit_code().await;
    (code, p.stderr().join("\n"))
}

#[tokio::test]
async fn a_garbage_store_file_is_a_clear_error_not_a_panic() {
    let (code, err) = run_on_store(&vec![0xA5; 64 * 1024]).await;
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains(".broken"), "gives the recovery path: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn a_truncated_store_file_is_a_clear_error_not_a_panic() {
    // Make a real store, then cut it short.
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(
        &["chat"],
        &[("STATE_DIRECTORY", dir.path().to_str().unwrap())],
        dir.path(),
    );
    p.write_line("hello").await;
    p.wait_stdout("the echo", |o| o.iter().any(|l| l == "hello"))
        .await;
    p.close_stdin();
    assert_eq!(p.exit_code().await, Some(0));
    let file = dir.path().join("console/clawbox.redb");
    let full = std::fs::read(&file).unwrap();
    let (code, err) = run_on_store(&full[..full.len() / 3]).await;
    assert!(matches!(code, Some(65) | Some(0)), "exit {code:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    if code == Some(65) {
        assert!(err.contains(".broken"), "{err}");
    }
}

#[tokio::test]
async fn a_channel_naming_an_unknown_agent_is_located_and_rejected() {
    let (code, err) = check(&data("unknown_agent.toml")).await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{}:5:9:", data("unknown_agent.toml"))),
        "{err}"
    );
    assert!(
        err.contains("no agent named `helpr`; declared: helper, echo"),
        "{err}"
    );
}

// ---- secret files and the config file's own mode --------------------------------------------

/// A box whose Telegram token file has `mode`; `token_file` is on line 5, its value at column 14.
fn token_box(mode: u32) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("telegram.token");
    std::fs::write(&token, "123456:SECRET-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
    let cfg = dir.path().join("clawbox.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nstate_dir = \"{}\"\nhealth_listen = \"127.0.0.1:{}\"\n[channels.telegram]\n\
             token_file = \"{}\"\nallow_from = [1]\napi_root = \"http://127.0.0.1:{}\"\n",
            dir.path().join("state").display(),
            free_port(),
            token.display(),
            free_port()
        ),
    )
    .unwrap();
    (dir, cfg, token)
}

/// The refusal: located at the key that names the file, with the chmod to run; never the secret.
fn assert_refused(err: &str, cfg: &Path, token: &Path, mode: &str) {
    assert!(
        err.contains(&format!(
            "{}:5:14: the bot token: {} is readable by other users (mode {mode}); run: chmod 600 {}",
            cfg.display(),
            token.display(),
            token.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("SECRET"),
        "the secret is never printed: {err}"
    );
}

#[tokio::test]
async fn a_token_file_other_users_can_read_is_refused_with_the_chmod_to_run() {
    for mode in [0o644, 0o640] {
        let (dir, cfg, token) = token_box(mode);
        let (code, err) = check(cfg.to_str().unwrap()).await;
        assert_eq!(code, Some(78), "{err}");
        assert_refused(&err, &cfg, &token, &format!("{mode:04o}"));

        let mut p = spawn(&["run", "--config", cfg.to_str().unwrap()], &[], dir.path());
        assert_eq!(p.exit_code().await, Some(78), "{:#?}", p.stderr());
        assert_refused(&p.stderr().join("\n"), &cfg, &token, &format!("{mode:04o}"));
        assert!(!dir.path().join("state").exists(), "nothing was started");
    }
}

#[tokio::test]
async fn a_private_token_file_is_accepted() {
    let (dir, cfg, _token) = token_box(0o600);
    let (code, err) = check(cfg.to_str().unwrap()).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("WARN"), "nothing to say: {err}");
    let p = spawn(&["run", "--config", cfg.to_str().unwrap()], &[], dir.path());
    p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
        .await;
    p.sigterm();
}

/// Logging starts before the config is read: what loading it says reaches stderr (it used to be
/// dropped, as the warning about a world-readable token file was). A config anyone may write is
/// such a warning, for `config check` and for `run`.
#[tokio::test]
async fn a_warning_while_loading_the_config_reaches_stderr() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, cfg, _token) = token_box(0o600);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let said = |err: &str| {
        err.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&format!(
                    "{} is writable by every user on this box (mode 0666)",
                    cfg.display()
                ))
                && l.ends_with(&format!("run: chmod o-w {}", cfg.display()))
        })
    };
    // At the default level too: the command's own level applies only after the config is read.
    let out = command(&["config", "check", cfg.to_str().unwrap()], &[])
        .env_remove("CLAWBOX_LOG")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a warning, not a refusal: {err}"
    );
    assert!(said(&err), "the warning reached stderr: {err}");

    let p = spawn(&["run", "--config", cfg.to_str().unwrap()], &[], dir.path());
    p.wait_stderr("ready", |e| e.iter().any(|l| l.contains("ready")))
        .await;
    assert!(said(&p.stderr().join("\n")), "{:#?}", p.stderr());
    p.sigterm();
}

// ---- [channels.*.groups] ---------------------------------------------------------------------

/// `clawbox config check` on config text written to a scratch file: (exit code, stderr, path).
async fn check_text(text: &str) -> (Option<i32>, String, String) {
    let (dir, path) = scratch(text);
    write_secret(dir.path().join("tg.token"), "123456:TEST-token_abc");
    let p = path.display().to_string();
    let (code, err) = check(&p).await;
    (code, err, p)
}

const TG: &str = "[channels.telegram]\ntoken_file = \"tg.token\"\nallow_from = [111]\n";

#[tokio::test]
async fn a_valid_groups_table_passes_on_both_channels() {
    let (code, err, _) = check_text(&format!(
        "[agents.fam]\nkind = \"openai\"\nurl = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n{TG}[channels.telegram.groups]\npolicy = \"allowlist\"\n\
         allow = [-1001234567890, \"-4012345678\"]\nallow_from = [\"*\"]\nmention_patterns = [\"claw\"]\n\
         [channels.telegram.groups.chats.\"-1001234567890\"]\nrequire_mention = false\nagent = \"fam\"\n\
         system_prompt = \"Be brief.\"\n\
         [channels.whatsapp.groups]\npolicy = \"open\"\nallow = [\"120363012345678901@g.us\"]\n\
         allow_from = [\"+491701234567\", \"123456789012345@lid\"]\n"
    ))
    .await;
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test]
async fn bad_group_settings_are_located_and_rejected_with_78() {
    // A policy that is no policy: serde's words, at the value.
    let (code, err, p) = check_text(&format!(
        "{TG}[channels.telegram.groups]\npolicy = \"some\"\n"
    ))
    .await;
    assert_eq!(code, Some(78));
    assert!(err.contains(&format!("{p}:5:10:")), "{err}");
    assert!(err.contains("`off`, `allowlist`, `open`"), "{err}");
    // A key the table does not have.
    let (code, err, p) = check_text(&format!(
        "{TG}[channels.telegram.groups]\nrequire_mentions = false\n"
    ))
    .await;
    assert_eq!(code, Some(78));
    assert!(err.contains(&format!("{p}:5:1:")), "{err}");
    // A positive number is a user, not a group; a DM JID is not a group.
    let (code, err, p) = check_text(&format!(
        "{TG}[channels.telegram.groups]\npolicy = \"allowlist\"\nallow = [-100, 42]\n\
         [channels.whatsapp.groups]\nallow = [\"491701234567@s.whatsapp.net\"]\n"
    ))
    .await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{p}:6:16: [channels.telegram.groups] allow: `42`: Telegram group ids are negative numbers")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:8:10: [channels.whatsapp.groups] allow: `491701234567@s.whatsapp.net`: WhatsApp group ids are JIDs ending in @g.us")),
        "{err}"
    );
    // An override naming an agent that does not exist.
    let (code, err, p) = check_text(&format!(
        "{TG}[channels.telegram.groups.chats.\"-100\"]\nagent = \"famly\"\n"
    ))
    .await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{p}:5:9: no agent named `famly`; declared: echo")),
        "{err}"
    );
    // A system prompt for a group whose agent takes none (the channel's: the built-in echo).
    let (code, err, p) = check_text(&format!(
        "{TG}[channels.telegram.groups.chats.\"-100\"]\nsystem_prompt = \"Be brief.\"\n"
    ))
    .await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains(&format!("{p}:5:17: [channels.telegram.groups.chats.\"-100\"] system_prompt: this group's agent `echo` is not an openai agent")),
        "{err}"
    );
    // An allowlist with nothing on it lets no group in: said, not silently accepted.
    let (code, err, _) = check_text(&format!(
        "{TG}[channels.telegram.groups]\npolicy = \"allowlist\"\n"
    ))
    .await;
    assert_eq!(code, Some(78));
    assert!(
        err.contains("with an empty allow lets no group in"),
        "{err}"
    );
}
