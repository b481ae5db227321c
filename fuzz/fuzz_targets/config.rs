//! Fuzz target `config`: arbitrary bytes as the text of a config file through
//! `Config::parse` (TOML, then the semantic checks). Owns nothing else; never writes a file.
//!
//! Asserts: never panics; a refusal always carries at least one error, each with a message, and
//! any `line:col` it names lies inside the text.
#![no_main]

use clawbox::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A config file is read with read_to_string: invalid UTF-8 never reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, None) {
        Ok(cfg) => {
            // What the daemon asks of every accepted config.
            let _ = cfg.state_dir();
            for kind in clawbox::vocab::ChannelKind::ALL {
                let name = cfg.agent_of(kind);
                let _ = cfg.agent_settings(cfg.agents.get(&name), &name);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without saying why");
            let lines = text.split('\n').count();
            for e in &errors {
                assert!(!e.message.trim().is_empty(), "an error without a message");
                if let Some((line, col)) = e.line_col {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}");
                    assert!(col >= 1, "column {col}");
                }
                let _ = e.to_string();
            }
        }
    }
});
