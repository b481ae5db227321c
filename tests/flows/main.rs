//! Messages end to end through the real `clawbox run` binary against the fakes: turns, history and
//! the allowlist (`flow`), each channel inside the daemon (`telegram_flow`, `whatsapp_flow`; WhatsApp's LID addressing and
//! the allowlist by identity: `whatsapp_lid`), the
//! OpenClaw agent in the daemon (`openclaw_flow`), crash safety (`restart`), the security matrix
//! (`security`) and malformed frames from every server (`malformed`). Every test has its own temp
//! state dir and free ports, so they run side by side. One test binary (one link of the WhatsApp
//! stack); select a module with `cargo test --test flows restart::`.

mod flow;
mod malformed;
mod openclaw_flow;
mod restart;
mod security;
mod telegram_flow;
mod whatsapp_flow;
mod whatsapp_lid;
