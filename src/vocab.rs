//! The shared words: which channel ([`ChannelKind`]), what a message carries ([`Content`]), one
//! received message ([`Inbound`]), a channel's static facts ([`ChannelSpec`]) and one value per
//! channel ([`PerChannel`]). A leaf: it imports nothing from the crate, so every layer (channels,
//! policy, router, store, delivery, metrics) can use it without importing one another.

use std::fmt;

/// Which channel a message belongs to. The string form is stored on disk: never rename one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ChannelKind {
    Console,
    Telegram,
    WhatsApp,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [
        ChannelKind::Console,
        ChannelKind::Telegram,
        ChannelKind::WhatsApp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Console => "console",
            ChannelKind::Telegram => "telegram",
            ChannelKind::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Dense index for per-channel metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kinds of media a channel can report. The placeholder text is `<media:KIND>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }
}

/// What a message carries, before it is rendered to the text an agent sees.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Content {
    Text(String),
    Media {
        kind: MediaKind,
        caption: Option<String>,
    },
    Reaction {
        emoji: String,
        target_id: String,
    },
    /// A command the channel recognised (Telegram `/start`, `/reset`, …): answered by the router,
    /// never sent to an agent as text (a reset ends the conversation; `/start` and `/help` get
    /// the configured texts).
    Command(Command),
}

/// A command a channel recognised. The number is stored with the message (`InboxRecord::command`):
/// never renumber one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Command {
    /// The 🗑️ reset (Telegram `/reset`, `/new`).
    Reset = 1,
    /// Telegram `/start`: a greeting that says what the bot is.
    Start = 2,
    /// Telegram `/help`.
    Help = 3,
}

impl Command {
    /// The stored number (0 is "no command").
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Command> {
        match code {
            1 => Some(Command::Reset),
            2 => Some(Command::Start),
            3 => Some(Command::Help),
            _ => None,
        }
    }
}

impl Content {
    /// The text the agent receives: text as is, media as `<media:KIND>` plus the caption on the next
    /// line, a reaction as a short description.
    pub fn render(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Media { kind, caption } => match caption.as_deref().map(str::trim) {
                Some(c) if !c.is_empty() => format!("<media:{}>\n{c}", kind.as_str()),
                _ => format!("<media:{}>", kind.as_str()),
            },
            Content::Reaction { emoji, target_id } => {
                format!("[reacted {emoji} to message {target_id}]")
            }
            // The reset keeps its 🗑️ form, so a stored `/reset` resets like a 🗑️ does.
            Content::Command(Command::Reset) => "\u{1F5D1}\u{FE0F}".into(),
            Content::Command(Command::Start) => "/start".into(),
            Content::Command(Command::Help) => "/help".into(),
        }
    }
}

/// One message received by a channel, in the core's terms.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Inbound {
    pub channel: ChannelKind,
    /// The channel's own id for this message; unique within the channel. The dedupe key.
    pub id: String,
    /// Where replies go (Telegram chat id, WhatsApp chat JID, "console").
    pub chat: String,
    /// Who sent it, in the form the allowlist uses: E.164 (`+4915…`) or a Telegram user id; a
    /// WhatsApp sender known only by its LID is `<digits>@lid`.
    pub sender: String,
    /// The same sender under its other address, when the channel knows it (WhatsApp: the LID,
    /// `<digits>@lid`, of a sender given as a number). The policy matches either: one person,
    /// two address forms.
    pub sender_alt: Option<String>,
    /// Who sent it as the wire names them (WhatsApp: the sender JID with its device; Telegram:
    /// the user id): the same on every redelivery, so part of the dedupe key with `chat` and `id`.
    pub author: String,
    /// Where the channel numbers messages in order (Telegram: the message id in the bot's own
    /// message box, for private chats), this message's number; else 0. A reply to it comes after
    /// it: the lower bound a send in doubt is settled from.
    pub wire_seq: u64,
    /// A group chat (WhatsApp `@g.us`, Telegram group or supergroup): the group rule applies.
    pub is_group: bool,
    pub content: Content,
    /// Sent time, milliseconds since the Unix epoch, as the channel reports it.
    pub ts_ms: u64,
    /// What the message says beyond its content: the sender's name, whether it addresses the
    /// assistant, what it quotes. Empty for a plain DM.
    pub cues: Cues,
}

/// The conversational cues of one message, read by its channel from the wire (never guessed from
/// the text: the mention patterns of the group rule are the policy's business).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Cues {
    /// The sender's display name as the channel gives it (WhatsApp push name, Telegram first and
    /// last name), given to the agent with group messages (`[Alice] …`).
    pub sender_name: Option<String>,
    /// The message's own mention list names the assistant's account (WhatsApp: the linked
    /// number or LID in `mentionedJid`; Telegram: an `@botusername` or text mention entity).
    pub mentions_me: bool,
    /// The message this one replies to, when it quotes one.
    pub quote: Option<Quote>,
    /// How a reply quotes this message on its channel, when that differs from `id` (Telegram:
    /// the `message_id`, as `id` is the update id, with `:<thread id>` in a forum topic). `None`:
    /// quote by `id`. Opaque to the core: it reaches the channel again as `ReplyTo::reference`.
    pub reply_ref: Option<String>,
}

/// A quoted (replied-to) message, as far as the channel tells.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Quote {
    /// The quoted message's id on the channel.
    pub id: String,
    /// Who wrote it, as the channel names them (may be empty when unknown).
    pub author: String,
    /// Its text or placeholder, cut to a bound by the channel.
    pub text: String,
    /// It is one of the assistant's own messages: a reply to it addresses the assistant.
    pub to_me: bool,
}

/// Static facts about a channel that the core needs.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSpec {
    pub kind: ChannelKind,
    /// Longest text one message may carry (Telegram 4096 characters); longer replies are chunked.
    pub max_chars: usize,
}

/// One value per channel, indexed by [`ChannelKind`]: the typed form of the per-channel tables
/// (metrics, queues, agent names) that were arrays indexed by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerChannel<T>([T; ChannelKind::ALL.len()]);

impl<T> PerChannel<T> {
    /// Each channel's value from `f`.
    pub fn from_fn(mut f: impl FnMut(ChannelKind) -> T) -> Self {
        PerChannel(ChannelKind::ALL.map(&mut f))
    }
}

impl<T> std::ops::Index<ChannelKind> for PerChannel<T> {
    type Output = T;
    fn index(&self, kind: ChannelKind) -> &T {
        &self.0[kind.index()]
    }
}

impl<T> std::ops::IndexMut<ChannelKind> for PerChannel<T> {
    fn index_mut(&mut self, kind: ChannelKind) -> &mut T {
        &mut self.0[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_a_reset_renders_as_the_wastebasket() {
        for c in [Command::Reset, Command::Start, Command::Help] {
            assert_eq!(Command::from_code(c.code()), Some(c));
        }
        assert_eq!(Command::from_code(0), None);
        assert!(crate::session::is_reset(
            &Content::Command(Command::Reset).render()
        ));
    }

    #[test]
    fn per_channel_is_indexed_by_kind() {
        let mut p = PerChannel::from_fn(|k| k.as_str().len());
        assert_eq!(p[ChannelKind::Telegram], 8);
        assert_eq!(p[ChannelKind::Console], 7);
        p[ChannelKind::Console] += 1;
        assert_eq!(p[ChannelKind::Console], 8);
        assert_eq!(p[ChannelKind::WhatsApp], 8);
    }
}
