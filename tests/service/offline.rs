//! A box without network, on the embedded defaults (no config file, WhatsApp on its real server
//! URL): clawbox keeps retrying every few seconds, and its log says so once instead of once per
//! attempt (it was one WhatsApp library error every ~2 s: 40,000 lines a day into the journal).
//!
//! "No network" is made certain, not assumed: the daemon runs in a network namespace of its own
//! (`unshare --net`, with loopback up for /healthz), where no name resolves and no route leads
//! anywhere, whatever the machine running the tests can reach.

use kit::support;

use std::time::Duration;
use support::*;

/// How long the box is watched: a dozen retries at the WhatsApp backoff (≤ 3 s apart).
const WINDOW: Duration = Duration::from_secs(25);

/// The daemon's stderr and its /metrics after `WINDOW` without network; an error if this machine
/// cannot make a network namespace (the test then fails: it proves nothing without one).
async fn run_offline(cwd: &std::path::Path) -> Result<(Vec<String>, String), String> {
    // Inside the namespace: loopback up, the daemon on its defaults, /metrics fetched at the end
    // (bash's /dev/tcp: no tool needed in there), then SIGTERM.
    let script = format!(
        r#"ip link set lo up || exit 97
"$0" run & pid=$!
sleep {secs}
exec 3<>/dev/tcp/127.0.0.1/8787 || exit 98
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
cat <&3 > metrics.txt
kill -TERM "$pid"
wait "$pid""#,
        secs = WINDOW.as_secs()
    );
    let out = tokio::time::timeout(
        WINDOW + SOON,
        tokio::process::Command::new("unshare")
            .args(["--map-root-user", "--net", "bash", "-c", &script, bin()])
            .current_dir(cwd)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env_remove("STATE_DIRECTORY")
            .env_remove("CLAWBOX_FAULT")
            // The default level (info), as a user runs it.
            .env_remove("CLAWBOX_LOG")
            // Not an installed box: state in ./state, whatever this machine has in /var/lib.
            .env("CLAWBOX_DEFAULT_STATE_DIR", cwd.join("not-installed"))
            .output(),
    )
    .await
    .map_err(|_| "the offline run did not end".to_string())?
    .map_err(|e| format!("cannot run unshare: {e}"))?;
    let stderr: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    if out.status.code() != Some(0) {
        return Err(format!(
            "the offline run failed ({:?}; 97: no network namespace, 98: /metrics unreachable): {stderr:#?}",
            out.status
        ));
    }
    let metrics = std::fs::read_to_string(cwd.join("metrics.txt")).map_err(|e| e.to_string())?;
    Ok((stderr, metrics))
}

#[tokio::test]
async fn without_network_the_defaults_retry_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (stderr, metrics) = run_offline(dir.path()).await.unwrap();
    // Up to SIGTERM: what a day offline looks like, minus the shutdown lines.
    let running: Vec<&String> = stderr
        .iter()
        .take_while(|l| !l.contains("SIGTERM"))
        .collect();
    let library = running
        .iter()
        .filter(|l| l.contains("library ") && l.contains("Failed to connect"))
        .count();
    let ours = running
        .iter()
        .filter(|l| l.contains("WhatsApp reconnecting"))
        .count();
    let retries = metric(&metrics, "clawbox_reconnects_total{channel=\"whatsapp\"}");
    println!(
        "QA offline-log: {} stderr lines in {} s offline ({library} library line(s), {ours} reconnect line(s)) over {retries} WhatsApp retries",
        running.len(),
        WINDOW.as_secs()
    );
    // It really kept trying, every few seconds...
    assert!(
        retries >= 5,
        "WhatsApp retried only {retries} times in {WINDOW:?}: {stderr:#?}"
    );
    // ... and said so once: the library's error and our reconnect line each once, not per retry.
    assert_eq!(library, 1, "{running:#?}");
    assert_eq!(ours, 1, "{running:#?}");
    // Start-up (starting, store, health, ready, the WhatsApp state twice) and those two lines.
    assert!(
        running.len() <= 10,
        "{} lines in {WINDOW:?}: {running:#?}",
        running.len()
    );
}

/// Our own retry lines: Telegram and an OpenClaw gateway that cannot be reached are retried every
/// few seconds; each says so once. At debug level every attempt is still there (nothing is lost,
/// only kept out of the normal log), which also proves the retries went on.
#[tokio::test]
async fn unreachable_telegram_and_gateway_are_said_once_while_retried() {
    const WATCH: Duration = Duration::from_secs(12);
    let closed = free_port();
    let bx = TestBox::new(
        &format!(
            "[agents.claw]\nkind = \"openclaw\"\nurl = \"ws://127.0.0.1:{closed}\"\ntoken_file = \"gw.token\"\n\
             [channels.telegram]\nagent = \"claw\"\ntoken_file = \"tg.token\"\nallow_from = [1]\n\
             api_root = \"http://127.0.0.1:{closed}\"\n"
        ),
        &[("gw.token", "gw-secret"), ("tg.token", "1:tg-secret")],
    );
    let p = bx.run_with(&[("CLAWBOX_LOG", "debug")]).await;
    tokio::time::sleep(WATCH).await;
    let err = p.stderr();
    let count = |level: &str, what: &str| {
        err.iter()
            .filter(|l| l.contains(level) && l.contains(what))
            .count()
    };
    let tg = (
        count(" WARN ", "telegram: retrying"),
        count("DEBUG ", "telegram: retrying"),
    );
    let gw = (
        count(" INFO ", "gateway link lost"),
        count("DEBUG ", "gateway link lost"),
    );
    println!(
        "QA offline-retries: in {} s, telegram retrying shown {} / kept at debug {}, gateway link lost shown {} / kept at debug {}",
        WATCH.as_secs(),
        tg.0,
        tg.1,
        gw.0,
        gw.1
    );
    assert_eq!(tg.0, 1, "{err:#?}");
    assert!(tg.1 >= 3, "Telegram kept retrying: {err:#?}");
    assert_eq!(gw.0, 1, "{err:#?}");
    assert!(gw.1 >= 3, "the gateway kept being retried: {err:#?}");
    p.sigterm();
}
