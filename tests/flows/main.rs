//! Messages end to end through the real `clawbox run` binary against the fakes: turns, history and
//! the allowlist (`flow`), each channel inside the daemon (`telegram_flow`, `whatsapp_flow`;
//! Telegram groups in `telegram_groups`;
//! WhatsApp's login failures and version check in `whatsapp_login`, its retries, refusals and
//! key events in `whatsapp_retry`, LID addressing and the allowlist by identity in
//! `whatsapp_lid`, multi-device contacts and the self chat's forms in
//! `whatsapp_devices`, groups in `whatsapp_groups`), the OpenClaw agent in the daemon (`openclaw_flow`), crash safety
//! (`restart`), the security matrix (`security`) and malformed frames from every server
//! (`malformed`). Every test has its own temp state dir and free ports, so they run side by side.
//! One test binary (one link of the WhatsApp stack); select a module with
//! `cargo test --test flows restart::`.

mod cues_telegram;
mod cues_whatsapp;
mod flow;
mod malformed;
mod openclaw_flow;
mod restart;
mod security;
mod telegram_flow;
mod telegram_groups;
mod whatsapp_devices;
mod whatsapp_flow;
mod whatsapp_groups;
mod whatsapp_lid;
mod whatsapp_login;
mod whatsapp_retry;
mod whatsapp_writes;
