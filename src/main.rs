//! The `clawbox` binary: parse the command line, load the config, run the command, map the outcome
//! to an exit code. Everything else lives in the library.

use clawbox::cli::{self, Command};
use clawbox::config::{Config, ConfigError, EXIT_CONFIG};
use std::process::ExitCode;

/// After the daemon returned, leftover blocking work (a pending stdin read) gets this long.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(200);

/// sysexits' EX_USAGE.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cmd = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clawbox: {}\n\n{}", e.0, cli::USAGE);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Logging first: what reading the config says (a file open to everyone) must reach the log.
    let log = clawbox::logging::init(clawbox::logging::STARTUP_LEVEL);
    match cmd {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("clawbox {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::ConfigCheck { path } => match Config::discover(path.as_deref()) {
            Ok(cfg) => {
                match &cfg.source {
                    Some(p) => println!("{}: ok", p.display()),
                    None => println!("no config file found; the embedded defaults are valid"),
                }
                ExitCode::SUCCESS
            }
            Err(errors) => config_failed(&errors),
        },
        Command::Run { config } => daemon(config, clawbox::daemon::Mode::Run, &log),
        Command::Chat { config } => daemon(config, clawbox::daemon::Mode::Chat, &log),
        Command::Status { config } => {
            let cfg = match Config::discover(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => return config_failed(&errors),
            };
            // The answer is the output.
            log.off();
            let code = runtime()
                .map(|rt| rt.block_on(clawbox::control::client::status(&cfg)))
                .unwrap_or(70);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::PairWhatsApp { phone, config } => {
            let cfg = match Config::discover(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => return config_failed(&errors),
            };
            // Errors only: the QR and the outcome are the output.
            log.set("error");
            let code = runtime()
                .map(|rt| rt.block_on(clawbox::control::client::pair(&cfg, phone)))
                .unwrap_or(70);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::UnpairWhatsApp { yes, config } => {
            let cfg = match Config::discover(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => return config_failed(&errors),
            };
            log.set("error");
            let code = runtime()
                .map(|rt| rt.block_on(clawbox::control::client::unpair(&cfg, yes)))
                .unwrap_or(70);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::GroupsList { config } => {
            let cfg = match Config::discover(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => return config_failed(&errors),
            };
            log.off();
            let code = runtime()
                .map(|rt| rt.block_on(clawbox::control::client::groups(&cfg)))
                .unwrap_or(70);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::Doctor { json, config } => {
            // The report is the output.
            log.off();
            let Some(rt) = runtime() else {
                return ExitCode::from(70);
            };
            let code = rt.block_on(clawbox::doctor::run(config.as_deref(), json));
            // A name lookup that timed out still runs on a blocking thread: do not wait for it.
            rt.shutdown_timeout(RUNTIME_SHUTDOWN);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::ImportOpenClaw {
            input,
            out,
            secrets_dir,
        } => {
            log.off();
            let code =
                clawbox::import::openclaw_command(&input, out.as_deref(), secrets_dir.as_deref());
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Command::ProvidersTest { name, json, config } => {
            let cfg = match Config::discover(config.as_deref()) {
                Ok(c) => c,
                Err(errors) => return config_failed(&errors),
            };
            // The report is the output.
            log.off();
            let code = runtime()
                .map(|rt| rt.block_on(clawbox::providers::test(&cfg, name.as_deref(), json)))
                .unwrap_or(70);
            ExitCode::from(code.clamp(0, 255) as u8)
        }
    }
}

fn config_failed(errors: &[ConfigError]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!("clawbox: the configuration is not valid; nothing was started (exit {EXIT_CONFIG})");
    ExitCode::from(EXIT_CONFIG as u8)
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("clawbox: cannot start the runtime: {e}");
            None
        }
    }
}

fn daemon(
    config: Option<std::path::PathBuf>,
    mode: clawbox::daemon::Mode,
    log: &clawbox::logging::LogLevel,
) -> ExitCode {
    let cfg = match Config::discover(config.as_deref()) {
        Ok(c) => c,
        Err(errors) => return config_failed(&errors),
    };
    match mode {
        // A terminal conversation is not the place for info logs unless asked for.
        clawbox::daemon::Mode::Chat => log.set("warn"),
        clawbox::daemon::Mode::Run => log.set(cfg.gateway.log_level.get_ref()),
    }
    match &cfg.source {
        Some(p) => {
            tracing::info!(config = %p.display(), version = env!("CARGO_PKG_VERSION"), "starting")
        }
        None => tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "starting on embedded defaults (no config file)"
        ),
    }
    let Some(rt) = runtime() else {
        return ExitCode::from(70);
    };
    let outcome = rt.block_on(clawbox::daemon::run(cfg, mode));
    // A blocking stdin read (the console channel) never returns by itself: do not wait for it.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "clawbox stopped");
            eprintln!("clawbox: {e}");
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
    }
}
