//! `clawbox import openclaw` through the binary: an OpenClaw config in the shape people have
//! (JSON5: comments, unquoted keys, single quotes, trailing commas) becomes a clawbox.toml that
//! `clawbox config check` accepts, with the bot and gateway tokens in 0600 files beside it and
//! never in the TOML; malformed input is refused with its line and column and writes nothing;
//! nothing is ever overwritten.

use kit::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

const OPENCLAW: &str = r#"// ~/.openclaw/openclaw.json, as the seed story had it
{
  gateway: {
    mode: 'remote',
    remote: { url: 'wss://claw.example.net:18789', token: 'gw-Token-0123456789abcdef' },
  },
  channels: {
    whatsapp: { dmPolicy: "allowlist", allowFrom: ["+491701234567"] },
    telegram: {
      enabled: true,
      dmPolicy: 'allowlist',
      allowFrom: ['123456789'],
      botToken: '123456:ABC-def_ghi',
      streamMode: 'partial', // OpenClaw's own
    },
  },
}
"#;

/// `clawbox <args>` in `dir`: (exit code, stdout, stderr).
async fn clawbox(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let mut c = command(args, &[]);
    c.current_dir(dir);
    let out = c.output().await.unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn an_openclaw_config_becomes_a_clawbox_toml_that_passes_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("openclaw.json");
    std::fs::write(&input, OPENCLAW).unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let out = etc.join("clawbox.toml");
    let (code, stdout, stderr) = clawbox(
        &[
            "import",
            "openclaw",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.is_empty(),
        "with --out nothing goes to stdout: {stdout}"
    );
    assert!(
        stderr.contains("it passes `clawbox config check"),
        "{stderr}"
    );
    let toml = std::fs::read_to_string(&out).unwrap();
    // The secrets: in 0600 files next to the config, named relative to it; never inline.
    assert_eq!(
        std::fs::read_to_string(etc.join("telegram.token")).unwrap(),
        "123456:ABC-def_ghi\n"
    );
    assert_eq!(mode(&etc.join("telegram.token")), 0o600);
    assert_eq!(
        std::fs::read_to_string(etc.join("openclaw.token")).unwrap(),
        "gw-Token-0123456789abcdef\n"
    );
    assert_eq!(mode(&etc.join("openclaw.token")), 0o600);
    assert!(
        !toml.contains("ABC-def_ghi") && !toml.contains("gw-Token") && !stderr.contains("gw-Token"),
        "{toml}"
    );
    assert!(toml.contains("token_file = \"telegram.token\""), "{toml}");
    assert!(
        toml.contains("# not carried over: channels.telegram.streamMode"),
        "{toml}"
    );
    // The service's own check accepts it as written.
    let (code, stdout, stderr) =
        clawbox(&["config", "check", out.to_str().unwrap()], dir.path()).await;
    assert_eq!(code, Some(0), "{stderr}\n{toml}");
    assert!(stdout.ends_with(": ok\n"), "{stdout}");

    // Run again: nothing is overwritten, nothing is half-written.
    let before = std::fs::read_to_string(&out).unwrap();
    let (code, _, stderr) = clawbox(
        &[
            "import",
            "openclaw",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(code, Some(73), "{stderr}");
    assert!(stderr.contains("exists and is not overwritten"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);
}

#[tokio::test]
async fn to_stdout_the_secrets_need_a_place_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("openclaw.json");
    std::fs::write(&input, OPENCLAW).unwrap();
    let (code, stdout, stderr) =
        clawbox(&["import", "openclaw", input.to_str().unwrap()], dir.path()).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("--secrets-dir"), "{stderr}");
    // With a secrets directory: the TOML on stdout names the files there, absolutely.
    let secrets = dir.path().join("secrets");
    let (code, stdout, stderr) = clawbox(
        &[
            "import",
            "openclaw",
            input.to_str().unwrap(),
            "--secrets-dir",
            secrets.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(mode(&secrets), 0o700);
    assert_eq!(mode(&secrets.join("telegram.token")), 0o600);
    let expected = format!(
        "token_file = \"{}\"",
        secrets
            .canonicalize()
            .unwrap()
            .join("telegram.token")
            .display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
    // What stdout holds is a config the service accepts.
    let cfg = dir.path().join("from-stdout.toml");
    std::fs::write(&cfg, &stdout).unwrap();
    let (code, _, stderr) = clawbox(&["config", "check", cfg.to_str().unwrap()], dir.path()).await;
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
}

#[tokio::test]
async fn malformed_json5_is_refused_with_line_and_column_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("openclaw.json");
    // Line 4: a missing comma between two keys.
    std::fs::write(
        &input,
        "{\n  channels: {\n    // the owner's number\n    whatsapp: { dmPolicy: 'allowlist' allowFrom: ['+491701234567'] },\n  },\n}\n",
    )
    .unwrap();
    let out = dir.path().join("clawbox.toml");
    let (code, stdout, stderr) = clawbox(
        &[
            "import",
            "openclaw",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!("{}:4:38: Expected comma", input.display())),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!out.exists());
    // A file that is not there.
    let (code, _, stderr) = clawbox(
        &[
            "import",
            "openclaw",
            dir.path().join("nope.json").to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(code, Some(66), "{stderr}");
}
