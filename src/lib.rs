//! clawbox: keeps a person's WhatsApp account and Telegram bot connected to their own AI assistant,
//! from a Raspberry Pi-class box, for months, unattended.
//!
//! # Layout
//!
//! Data flows one way: **channel → policy → router → agent → pacing → channel**.
//!
//! - [`cli`]: parses the command line; nothing else.
//! - [`config`]: the strict TOML schema and its semantic checks ([`config::ConfigError`] → exit 78).
//! - [`daemon`]: wires every task together, owns shutdown ([`shutdown`]: the one switch every task
//!   watches) and readiness.
//! - [`supervisor`]: runs each channel in its own task and restarts it ([`retry::RESTART`])
//!   after an error or a panic, while the others carry on.
//! - [`systemd`]: `READY=1`, `WATCHDOG=1`, `STATUS=`, `STOPPING=1`; a no-op without `NOTIFY_SOCKET`.
//! - [`store`]: the redb file: inbox, outbox, sessions, cursors, channel auth. The only code that
//!   commits, in grouped transactions: `schema.rs` (tables, version, modes), [`store::records`]
//!   (the rows; the channel parsed once, on the way out), `ops.rs` (typed reads and writes),
//!   `reader.rs` and `writer.rs` (the two threads), `apply.rs` (what each write does),
//!   `retention.rs`, `maintenance.rs` (its own flush and retention task), [`store::kv`].
//! - [`vocab`]: the shared words every layer uses ([`vocab::Inbound`], [`vocab::ChannelKind`],
//!   [`vocab::PerChannel`], …); a leaf that imports nothing from the crate.
//! - [`channel`]: the connector contract ([`channel::ChannelCommand`], [`channel::ChannelContext`]);
//!   [`channel::console`], [`channel::telegram`] and [`channel::whatsapp`] implement it; the
//!   WhatsApp connection's lifecycle (phases, reconnect policy) is the sans-io
//!   [`channel::whatsapp::lifecycle`], its driver a thin shell.
//! - [`intake`]: the channels' way in: policy, dedupe and the durable write before an ack.
//! - [`policy`]: the DM allowlist and the group rule. Pure: a message in, allow, context or drop out.
//! - [`recent`]: the recent context of groups (messages not addressed to the assistant), in memory.
//! - [`turn_text`]: the text an agent gets for a message: context, quote, sender name. Pure.
//! - [`session`]: session keys and 🗑️ resets. Pure.
//! - [`router`]: [`router::turns`] (one turn in flight per session, batching; pure) and the turn
//!   runner with the ack and accumulation timeouts; it reaches channels only through
//!   [`delivery::Outlet`].
//! - [`agent`]: the [`agent::Agent`] boundary; [`agent::echo`], [`agent::openai`] (+ [`agent::sse`]),
//!   [`agent::openclaw`].
//! - [`pacing`]: human-like send timing (pure: given `now`, when to type and send);
//!   [`chunk`] splits long replies; [`delivery`] is the per-channel send loop that applies both.
//! - [`control`]: the control socket `pair`, `unpair` and `status` (and `doctor`) ask the running
//!   service through ([`control::client`], [`control::server`]), and [`control::direct`]: `pair`
//!   and `unpair` on the state themselves when no service runs. The WhatsApp side is
//!   [`channel::whatsapp::link`] (the owner's requests) and [`channel::whatsapp::runs`] (the
//!   channel's task in the service, waiting for them).
//! - [`health`]: loopback `/healthz` and `/metrics`, on [`httpd`] (the tiny bounded HTTP server
//!   the pairing page [`web`] runs on too); [`metrics`]: the counters; [`status`]: each
//!   component's state, shared by health, `STATUS=` and the watchdog.
//! - [`retry`]: the reconnect, restart and retry policy: [`retry::Backoff`] and the named profiles
//!   ([`retry::LINK`], [`retry::RESTART`], [`retry::SEND`], …), the waits a server may ask for,
//!   and the dead-link budgets, each with its reason and the README promise it keeps.
//! - [`http`]: the bounded hyper + rustls client shared by the agents and channels; [`ws`]: the
//!   one WebSocket connect (TCP, rustls, upgrade, limits) of the WhatsApp transport and the
//!   OpenClaw gateway link.
//! - [`state_dir`]: where the state lives (the same for every command) and who owns it.
//! - [`web`]: the pairing and status page (`[web] listen`, off by default).
//! - The pairing screen: [`pairing`] holds the WhatsApp pairing state (QR, code, linked, paused)
//!   and the one table of words for each state ([`pairing::words`]); [`display`] shows it:
//!   [`display::terminal`] on a terminal, [`display::qr`] the QR in characters, and the board's
//!   framebuffer, OLED and serial console; [`web`] on the page.
//! - [`providers`]: `clawbox providers test`, each agent really exercised.
//! - [`fault`]: `CLAWBOX_FAULT` crash points and hangs for the tests (inert unless set).
//! - [`logging`]: journald or stderr; [`repeat`] keeps a repeating failure to one line and a
//!   reminder every 10 minutes.
//! - [`doctor`]: `clawbox doctor`, every check of the box with its fix; [`import`]: a clawbox.toml
//!   from an OpenClaw config.

pub mod agent;
pub mod channel;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod delivery;
pub mod display;
pub mod doctor;
pub mod fault;
pub mod health;
pub mod http;
pub mod httpd;
pub mod import;
pub mod intake;
pub mod logging;
pub mod metrics;
pub mod pacing;
pub mod pairing;
pub mod policy;
pub mod providers;
pub mod recent;
pub mod repeat;
pub mod retry;
pub mod router;
pub mod session;
pub mod shutdown;
pub mod state_dir;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod systemd;
pub mod turn_text;
pub mod vocab;
pub mod web;
pub mod ws;
