//! The cores in process, against the fakes on real loopback sockets (tokio's paused clock where
//! time matters): the fake WhatsApp server proven against the real whatsapp-rust client (its
//! multi-device side in `fake_whatsapp_devices`), the Telegram channel, the OpenAI-compatible and
//! OpenClaw agents, pacing in the delivery loop, the board displays. One test binary (one link of the WhatsApp stack) with a module per area; select
//! one with `cargo test --test protocols telegram_channel::`.

mod display;
mod fake_whatsapp;
mod fake_whatsapp_devices;
mod fake_whatsapp_groups;
mod fake_whatsapp_retry;
mod openai_agent;
mod openclaw_agent;
mod pacing;
mod telegram_channel;
