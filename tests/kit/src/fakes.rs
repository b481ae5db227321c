//! Fakes that speak the real wire protocols on loopback, one cargo feature each: WhatsApp Web
//! (Noise + binary nodes + Signal, with a fake phone and an admin API), the Telegram Bot API, an
//! OpenAI-compatible endpoint (SSE) and the OpenClaw gateway (WebSocket frames).

#[cfg(feature = "openai")]
pub mod openai;
#[cfg(feature = "openclaw")]
pub mod openclaw;
#[cfg(feature = "telegram")]
pub mod telegram;
#[cfg(feature = "whatsapp")]
pub mod whatsapp;
