//! The records kept in the store, encoded with prost (derive only, no build script). Field tags are
//! the on-disk format: never reuse or renumber one; add new fields with new tags.
//!
//! A record names its channel as a string (the on-disk format); the store hands rows out as
//! [`StoredMessage`] and [`StoredReply`], with the channel parsed once where the row is read, so no
//! later layer parses it.

use crate::vocab::ChannelKind;

/// State of an inbound message.
pub const INBOX_PENDING: u32 = 0;
pub const INBOX_ANSWERED: u32 = 1;

/// One accepted inbound message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InboxRecord {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub msg_id: String,
    #[prost(string, tag = "3")]
    pub chat: String,
    #[prost(string, tag = "4")]
    pub sender: String,
    /// The rendered text the agent sees (placeholders for media).
    #[prost(string, tag = "5")]
    pub text: String,
    #[prost(uint64, tag = "6")]
    pub ts_ms: u64,
    /// The session's identity (see `session`), without its generation.
    #[prost(string, tag = "7")]
    pub session: String,
    #[prost(uint32, tag = "8")]
    pub state: u32,
    /// When it was accepted (our clock), for retention.
    #[prost(uint64, tag = "9")]
    pub accepted_ms: u64,
    /// The agent (by config name) this message's channel routes to.
    #[prost(string, tag = "10")]
    pub agent: String,
    /// The sender as the channel's wire names them (WhatsApp: the sender JID with its device;
    /// Telegram: the user id), stable across redeliveries; part of the dedupe key.
    #[prost(string, tag = "11")]
    pub author: String,
    /// The channel's ordinal for the message (see `channel::Inbound::wire_seq`); 0 if none.
    #[prost(uint64, tag = "12")]
    pub wire_seq: u64,
    /// How the reply quotes this message on its channel (`Inbound::cues.reply_ref`, else its
    /// id); empty: the reply quotes nothing. Set for group messages: a reply in a group quotes
    /// the message that addressed the assistant.
    #[prost(string, tag = "13")]
    pub reply_ref: String,
    /// The group's `system_prompt` override for this turn; empty: the agent's own.
    #[prost(string, tag = "14")]
    pub system_prompt: String,
    /// The command the channel recognised (`vocab::Command::code`); 0: none.
    #[prost(uint32, tag = "15")]
    pub command: u32,
    /// No acknowledgement reaction on this message (a group message that does not address the
    /// assistant). False for every row written before the field existed: all of them DMs.
    #[prost(bool, tag = "16")]
    pub quiet: bool,
}

/// An inbox row as the store hands it out: its sequence number, its channel (parsed once, where
/// the row was read, or known when it was accepted) and the record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub seq: u64,
    pub channel: ChannelKind,
    pub rec: InboxRecord,
}

/// An outbox row as read back: its sequence number, its channel (parsed once) and the record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    pub seq: u64,
    pub channel: ChannelKind,
    pub rec: OutboxRecord,
}

/// One reply, split into the chunks the channel will send, and how far sending got.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboxRecord {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub chat: String,
    #[prost(string, repeated, tag = "3")]
    pub chunks: Vec<String>,
    /// Index of the next chunk to send.
    #[prost(uint32, tag = "4")]
    pub next: u32,
    /// True once chunk `next` may have left: set durably just before the send.
    #[prost(bool, tag = "5")]
    pub in_flight: bool,
    /// Stable idempotency key of the reply; chunk keys are `<key>.<index>`.
    #[prost(string, tag = "6")]
    pub key: String,
    #[prost(uint64, tag = "7")]
    pub created_ms: u64,
    /// What the channel noted when it armed the in-flight chunk, to settle its fate after a crash
    /// (Telegram: the highest message id the bot knew then; see `channel::telegram::doubt`).
    #[prost(uint64, tag = "8")]
    pub doubt_hint: u64,
    /// When the in-flight chunk was armed (our clock, ms since the epoch).
    #[prost(uint64, tag = "9")]
    pub in_flight_ms: u64,
    /// The highest `wire_seq` of the inbound messages this reply answers (0: none known).
    #[prost(uint64, tag = "10")]
    pub after_wire_seq: u64,
    /// The channel's reference of the message this reply answers and quotes (the answered
    /// message's `InboxRecord::reply_ref`); empty: no quote. Channel-neutral: each channel reads
    /// its own form (Telegram: `<message_id>` or `<message_id>:<topic thread id>`; WhatsApp: the
    /// message id). The first chunk quotes it; every chunk stays in its thread.
    #[prost(string, tag = "11")]
    pub reply_ref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryItem {
    /// 0 = user, 1 = assistant.
    #[prost(uint32, tag = "1")]
    pub role: u32,
    #[prost(string, tag = "2")]
    pub text: String,
}

/// Per-session state: the generation (bumped by a 🗑️ reset) and bounded recent history.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionRecord {
    #[prost(uint32, tag = "1")]
    pub generation: u32,
    #[prost(message, repeated, tag = "2")]
    pub history: Vec<HistoryItem>,
    #[prost(uint64, tag = "3")]
    pub last_used_ms: u64,
}
