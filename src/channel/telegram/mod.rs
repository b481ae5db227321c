//! Telegram Bot API long-polling channel. Placeholder until implemented.
