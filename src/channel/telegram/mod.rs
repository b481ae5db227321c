//! The Telegram channel: a bot over the Bot API's `getUpdates` long poll.
//!
//! [`proto`] is the sans-io core (envelopes, offsets, error classification, update conversion,
//! send limits, typing schedule); [`driver`] is the thin async shell that the supervisor runs via
//! [`run`]. Every private message is reported faithfully; who may talk to the assistant is the
//! core's policy, never decided here. Group and supergroup chats are submitted with
//! `is_group = true` and their cues (sender name, mentions of the bot from entities, the replied-to
//! message, the reply reference with the forum topic: [`proto::cues`]); the group rule is the
//! core's. A reply in a group quotes the message it answers (`reply_parameters`) and stays in its
//! forum topic (`message_thread_id`).
//!
//! Never logs the token (it lives in the URL path `/bot<token>/<method>`, and URLs are not logged)
//! and never logs message bodies.

pub mod doubt;
pub mod driver;
pub mod proto;

use crate::vocab::{ChannelKind, ChannelSpec};

pub use driver::run;

/// Telegram: 4096 characters per message. A resent sendMessage makes a second message: a send
/// in doubt is settled by [`doubt`] before anything else is sent.
pub const SPEC: ChannelSpec = ChannelSpec {
    kind: ChannelKind::Telegram,
    max_chars: 4096,
};
