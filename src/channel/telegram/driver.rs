//! The Telegram channel's async shell: runs the long poll and the command loop side by side, does
//! the HTTP, the sleeping and the store/intake calls that [`super::proto`] decides on.
//!
//! Holds no protocol logic of its own. Never logs a URL (it carries the token) and never logs a
//! message body; only method names, update ids, status codes and error words.

use super::doubt::{self, Probed};
use super::proto::{
    self, Fetched, MAX_ACTION_BODY, MAX_GETME_BODY, MAX_SEND_BODY, MAX_UPDATES_BODY, PollStep,
    Poller, RateLimiter, StartStep, Status, TypingSchedule,
};
use crate::channel::{
    Arm, ChannelCommand, ChannelContext, ChannelError, Doubt, ReplyTo, SendError,
};
use crate::config::{Secret, TelegramConfig};
use crate::http::{HttpClient, HttpError};
use crate::metrics::Metrics;
use crate::status::State;
use crate::vocab::ChannelKind;
use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

/// The poll loop beats at each step and says how long the step may take: its own deadline (a
/// call's timeout, a long poll's `poll_timeout_s` + grace, a backoff or Retry-After wait) plus
/// this, for the in-memory work between two steps and the scheduling delays of a loaded box.
const STEP_SLACK: Duration = Duration::from_secs(5);
/// A step that waits on the store (handing a batch to the intake, saving the offset) may take as
/// long as the store may take to answer.
const STORE_STEP: Duration = crate::store::ANSWER_WITHIN;
/// Deadline of getMe, sendMessage and sendChatAction.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of the getMe that checks a suspect link before a send: short, since nothing is lost by
/// holding the send back and trying again.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// setMyCommands is tried this often at each start of the channel, [`COMMANDS_RETRY`] apart.
const COMMANDS_ATTEMPTS: u32 = 3;
const COMMANDS_RETRY: Duration = Duration::from_secs(2);
/// The cursor name of the next getUpdates offset in the store.
const OFFSET_CURSOR: &str = "telegram.offset";

const KIND: ChannelKind = ChannelKind::Telegram;
/// Our retry lines in the repeat suppressor.
const REPEAT_SITE: &str = "telegram";

/// The Bot API endpoint: `<api_root>/bot<token>/<method>`. The URL is never logged.
struct Api {
    http: HttpClient,
    root: String,
    token: Secret,
    /// Set when a call got no answer, cleared by any answer: the link may be down. A sendMessage
    /// is then preceded by an idempotent getMe, so a send is only risked on a link that just
    /// answered: a send cut mid-way must be settled by probing ([`doubt`]), which costs time.
    suspect: AtomicBool,
    /// The highest private-chat message id the bot knows (updates, its own sends): the hint a
    /// send is armed with ([`doubt`]).
    box_max: AtomicI64,
}

/// What a call returned, owned, so it can be lent to the core as [`Fetched`].
enum Reply {
    Body(u16, Bytes),
    TooLarge,
    /// No answer; `maybe_sent`: the request may have reached Telegram (the connection broke or
    /// timed out after it was sent), as opposed to a failure to connect.
    Failed {
        why: String,
        maybe_sent: bool,
    },
    Invalid(String),
}

impl Reply {
    fn fetched(&self) -> Fetched<'_> {
        match self {
            Reply::Body(status, body) => Fetched::Body {
                status: *status,
                body,
            },
            Reply::TooLarge => Fetched::TooLarge,
            Reply::Failed { why, .. } => Fetched::Failed(why),
            Reply::Invalid(e) => Fetched::Invalid(e),
        }
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        body: &impl Serialize,
        timeout: Duration,
        max_body: usize,
    ) -> Reply {
        let json = match serde_json::to_vec(body) {
            Ok(j) => j,
            Err(e) => return Reply::Invalid(e.to_string()),
        };
        let url = format!("{}/bot{}/{method}", self.root, self.token.expose());
        let req = match http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
        {
            Ok(r) => r,
            // http's error words name the problem, never the URL itself.
            Err(e) => return Reply::Invalid(e.to_string()),
        };
        let reply = self.exchange(req, timeout, max_body).await;
        self.suspect
            .store(matches!(reply, Reply::Failed { .. }), Ordering::Relaxed);
        reply
    }

    /// `Some(why)` when the last call got no answer and a getMe now gets none either.
    async fn unreachable(&self) -> Option<String> {
        if !self.suspect.load(Ordering::Relaxed) {
            return None;
        }
        let empty = serde_json::Map::new();
        match self
            .call("getMe", &empty, PROBE_TIMEOUT, MAX_GETME_BODY)
            .await
        {
            Reply::Failed { why, .. } => Some(why),
            _ => None,
        }
    }

    async fn exchange(
        &self,
        req: http::Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Reply {
        match self.http.request(req, timeout, max_body).await {
            Ok(resp) => Reply::Body(resp.status().as_u16(), resp.into_body()),
            Err(HttpError::TooLarge(_)) => Reply::TooLarge,
            Err(HttpError::Request(e)) => Reply::Invalid(e),
            Err(e @ HttpError::Connect(_)) => Reply::Failed {
                why: e.to_string(),
                maybe_sent: false,
            },
            Err(e) => Reply::Failed {
                why: e.to_string(),
                maybe_sent: true,
            },
        }
    }
}

/// Runs the Telegram channel until shutdown (`Ok`), a rejected token (`Ok`, row NeedsOwner), or an
/// error worth a restart (`Err`).
pub async fn run(cfg: Arc<TelegramConfig>, ctx: ChannelContext) -> Result<(), ChannelError> {
    let mut shutdown = ctx.shutdown.clone();
    let Some(token) = cfg.token.clone() else {
        ctx.reporter.set(
            State::NeedsOwner,
            "no bot token — set token_file or token_env",
        );
        return Ok(());
    };
    let api = Api {
        http: ctx.http.clone(),
        root: cfg.api_root.get_ref().trim_end_matches('/').to_string(),
        token,
        suspect: AtomicBool::new(false),
        box_max: AtomicI64::new(load_box_max(&ctx).await),
    };
    // The queue outlives this task; hold it for as long as this run lives.
    let commands = ctx.commands.clone();
    let mut rx = tokio::select! {
        g = commands.lock() => g,
        _ = shutdown.wait() => return Ok(()),
    };

    let poll = poll_loop(&cfg, &ctx, &api);
    let send = command_loop(&api, &ctx, &mut rx);
    tokio::pin!(poll, send);
    let mut send_open = true;
    loop {
        tokio::select! {
            _ = shutdown.wait() => {
                ctx.reporter.set(State::Off, "stopped");
                return Ok(());
            }
            r = &mut poll => return r,
            _ = &mut send, if send_open => {
                // The core dropped its sender: nothing more to send, but keep receiving.
                send_open = false;
            }
        }
    }
}

/// "telegram: retrying" once per failure, then a reminder every 10 minutes ([`crate::repeat`]).
fn retrying(method: &str, detail: &str) {
    match crate::repeat::admit(REPEAT_SITE, &format!("{method} {detail}")) {
        Some(note) => tracing::warn!(method, detail = %detail, "telegram: retrying{note}"),
        None => tracing::debug!(method, detail = %detail, "telegram: retrying"),
    }
}

fn report(ctx: &ChannelContext, status: Option<Status>) {
    if let Some((state, detail)) = status {
        ctx.reporter.set(state, detail);
    }
}

async fn load_offset(ctx: &ChannelContext) -> Option<i64> {
    match ctx.store.cursor(OFFSET_CURSOR).await {
        Ok(Some(bytes)) => {
            let o = proto::decode_offset(&bytes);
            if o.is_none() {
                tracing::warn!(
                    len = bytes.len(),
                    "telegram: saved offset is not 8 bytes; starting from Telegram's"
                );
            }
            o
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "telegram: could not read the saved offset");
            None
        }
    }
}

/// The highest message id of the bot's own sends saved before this start (0 if none).
async fn load_box_max(ctx: &ChannelContext) -> i64 {
    match ctx.store.cursor(doubt::BOX_MAX_CURSOR).await {
        Ok(Some(bytes)) => proto::decode_offset(&bytes).unwrap_or(0),
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!(error = %e, "telegram: could not read the last known message id");
            0
        }
    }
}

/// Raises the known message id to `id`, saving it when it came from the bot's own message (so it
/// is durable whenever the record of that send is: the store writes in order).
async fn know_own_message(ctx: &ChannelContext, api: &Api, id: i64) {
    if api.box_max.fetch_max(id, Ordering::Relaxed) < id
        && let Err(e) = ctx
            .store
            .set_cursor(doubt::BOX_MAX_CURSOR, proto::encode_offset(id))
            .await
    {
        tracing::warn!(error = %e, "telegram: could not save the last sent message id");
    }
}

async fn save_offset(ctx: &ChannelContext, poller: &mut Poller) {
    if let Some(o) = poller.take_offset_to_save() {
        ctx.reporter.beat_within(STORE_STEP + STEP_SLACK);
        // Not fatal: the intake dedupes by update_id, so a lost cursor only replays updates.
        if let Err(e) = ctx
            .store
            .set_cursor(OFFSET_CURSOR, proto::encode_offset(o))
            .await
        {
            tracing::warn!(error = %e, "telegram: could not save the offset");
        }
    }
}

async fn poll_loop(
    cfg: &TelegramConfig,
    ctx: &ChannelContext,
    api: &Api,
) -> Result<(), ChannelError> {
    let saved = load_offset(ctx).await;
    let mut poller = Poller::new(
        *cfg.poll_timeout_s.get_ref(),
        cfg.handle_edits,
        saved,
        fastrand::u64(..),
    );

    loop {
        crate::fault::hang("telegram").await;
        ctx.reporter.beat_within(CALL_TIMEOUT + STEP_SLACK);
        let reply = api
            .call(
                "getMe",
                &serde_json::Map::new(),
                CALL_TIMEOUT,
                MAX_GETME_BODY,
            )
            .await;
        match poller.handle_get_me(reply.fetched()) {
            StartStep::Ready { status } => {
                crate::repeat::settled(REPEAT_SITE);
                report(ctx, Some(status));
                register_commands(ctx, api).await;
                break;
            }
            StartStep::Wait { delay, status } => {
                retrying("getMe", &status.1);
                report(ctx, Some(status));
                ctx.reporter.beat_within(delay + STEP_SLACK);
                sleep(delay).await;
            }
            StartStep::Stop { status } => {
                report(ctx, Some(status));
                return Ok(());
            }
        }
    }

    loop {
        crate::fault::hang("telegram").await;
        ctx.reporter
            .beat_within(poller.request_deadline() + STEP_SLACK);
        let request = poller.request();
        let reply = api
            .call(
                "getUpdates",
                &request,
                poller.request_deadline(),
                MAX_UPDATES_BODY,
            )
            .await;
        match poller.handle_updates(reply.fetched()) {
            PollStep::Deliver {
                status,
                recovered,
                malformed,
            } => {
                report(ctx, status);
                if recovered {
                    crate::repeat::settled(REPEAT_SITE);
                    Metrics::inc(&ctx.metrics.reconnects[KIND]);
                }
                for _ in 0..malformed {
                    Metrics::inc(&ctx.metrics.malformed[KIND]);
                }
                if malformed > 0 {
                    tracing::warn!(count = malformed, "telegram: skipped unreadable updates");
                }
                api.box_max.fetch_max(poller.box_max(), Ordering::Relaxed);
                let (failed, accepted) = deliver(ctx, &mut poller).await;
                // Only a batch that put something in the inbox moves the saved offset: a batch
                // of dropped messages (strangers, groups the bot is not addressed in) writes
                // nothing at all. Telegram forgets them once the next poll confirms them; after
                // a restart before that they come again and are dropped again.
                if accepted {
                    save_offset(ctx, &mut poller).await;
                }
                if let Some(wait) = failed {
                    ctx.reporter.beat_within(wait + STEP_SLACK);
                    sleep(wait).await;
                }
            }
            PollStep::Wait {
                delay,
                status,
                malformed,
            } => {
                if let Some(why) = malformed {
                    Metrics::inc(&ctx.metrics.malformed[KIND]);
                    tracing::warn!(
                        method = "getUpdates",
                        error = %why,
                        "telegram: unreadable getUpdates answer; retrying the same offset"
                    );
                } else if let Some((_, detail)) = &status {
                    retrying("getUpdates", detail);
                }
                report(ctx, status);
                ctx.reporter.beat_within(delay + STEP_SLACK);
                sleep(delay).await;
            }
            PollStep::Stop { status } => {
                tracing::warn!(detail = %status.1, "telegram: polling stopped");
                report(ctx, Some(status));
                return Ok(());
            }
        }
    }
}

/// Submits the batch in order. `Some(wait)` when the intake failed: the rest waits for the next
/// poll from the same offset; `true` when a message was accepted into the inbox.
async fn deliver(ctx: &ChannelContext, poller: &mut Poller) -> (Option<Duration>, bool) {
    let mut accepted = false;
    // The whole answer in one durable write (one fsync), then confirmed in order up to the first
    // message the intake could not take.
    let batch = poller.submissions();
    if !batch.is_empty() {
        ctx.reporter.beat_within(STORE_STEP + STEP_SLACK);
    }
    let ids: Vec<String> = batch.iter().map(|i| i.id.clone()).collect();
    let outcomes = ctx.intake.submit_batch(batch).await;
    for (id, outcome) in ids.iter().zip(outcomes) {
        match outcome {
            Ok(outcome) => {
                tracing::debug!(update_id = %id, ?outcome, "telegram: update handed on");
                accepted |= outcome == crate::intake::Submitted::Accepted;
                // Skips (unsupported updates) before it are confirmed on the way.
                let _ = poller.next_submission();
                poller.confirm();
            }
            Err(e) => {
                tracing::warn!(update_id = %id, error = %e, "telegram: intake failed; will retry");
                return (Some(poller.submit_failed()), accepted);
            }
        }
    }
    // Trailing skips.
    let _ = poller.next_submission();
    (None, accepted)
}

/// Registers the bot's commands ([`proto::MENU`]) so Telegram shows them in the menu: a few tries
/// [`COMMANDS_RETRY`] apart, then given up with a log line (the commands work unregistered too).
async fn register_commands(ctx: &ChannelContext, api: &Api) {
    let body = proto::my_commands();
    for attempt in 1..=COMMANDS_ATTEMPTS {
        ctx.reporter.beat_within(CALL_TIMEOUT + STEP_SLACK);
        let reply = api
            .call("setMyCommands", &body, CALL_TIMEOUT, MAX_ACTION_BODY)
            .await;
        match proto::classify::<serde::de::IgnoredAny>(reply.fetched()) {
            Ok(_) => {
                tracing::debug!("telegram: commands registered");
                return;
            }
            Err(e) if attempt == COMMANDS_ATTEMPTS => {
                tracing::warn!(error = ?e, "telegram: setMyCommands failed; the commands work, but the menu does not list them");
            }
            Err(e) => {
                tracing::debug!(error = ?e, attempt, "telegram: setMyCommands failed; trying again");
                ctx.reporter.beat_within(COMMANDS_RETRY + STEP_SLACK);
                sleep(COMMANDS_RETRY).await;
            }
        }
    }
}

/// Carries out the core's commands until its sender is dropped.
async fn command_loop(api: &Api, ctx: &ChannelContext, rx: &mut mpsc::Receiver<ChannelCommand>) {
    let mut limiter = RateLimiter::default();
    let mut typing = TypingSchedule::default();
    loop {
        let due = typing.next_due().map(Instant::from_std);
        let cmd = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                for chat in typing.take_due(Instant::now().into_std()) {
                    send_typing(api, &chat).await;
                }
                continue;
            }
        };
        match cmd {
            ChannelCommand::Typing { chat, on } => {
                typing.set(&chat, on, Instant::now().into_std());
            }
            ChannelCommand::React {
                chat,
                target,
                emoji,
            } => {
                // The message id: numbered in the bot's box in a private chat, named by the
                // reply reference in a group (whose messages have no `wire_seq`).
                let id = match target.wire_seq {
                    0 => proto::cues::parse_reply_ref(&target.reply_ref)
                        .and_then(|(id, _)| u64::try_from(id).ok())
                        .unwrap_or(0),
                    n => n,
                };
                send_reaction(api, &chat, id, &emoji).await
            }
            ChannelCommand::Send {
                chat,
                text,
                after,
                reply_to,
                arm,
                done,
                ..
            } => {
                let outcome = send_message(
                    api,
                    ctx,
                    &mut limiter,
                    Outgoing {
                        chat: &chat,
                        text: &text,
                        after,
                        reply_to: reply_to.as_ref(),
                    },
                    arm,
                )
                .await;
                // Sent/failed counts are kept by the delivery loop, once for every channel.
                if let Err(e) = &outcome {
                    if !matches!(e, SendError::NotYet(_)) {
                        tracing::warn!(error = %e, "telegram: sendMessage failed");
                    }
                }
                // The delivery loop may have given up waiting; nothing to do then.
                let _ = done.send(outcome);
            }
            ChannelCommand::Reconcile {
                chat,
                hint,
                since_ms,
                done,
                ..
            } => {
                let _ = done.send(reconcile(api, ctx, &chat, hint, since_ms).await);
            }
        }
    }
}

/// One chunk: the per-chat limit and a suspect link are checked first (nothing armed, nothing
/// sent); then the chunk is armed with the highest message id the bot knows — its own sends, the
/// updates it saw, and `after`, the id of the message the reply answers — and sent.
/// One chunk to send: where, what, the highest `wire_seq` it answers, and the message it
/// answers when it should quote it (see [`ReplyTo`]).
struct Outgoing<'a> {
    chat: &'a str,
    text: &'a str,
    after: u64,
    reply_to: Option<&'a ReplyTo>,
}

async fn send_message(
    api: &Api,
    ctx: &ChannelContext,
    limiter: &mut RateLimiter,
    out: Outgoing<'_>,
    arm: Arm,
) -> Result<(), SendError> {
    let Outgoing {
        chat,
        text,
        after,
        reply_to,
    } = out;
    let now = Instant::now().into_std();
    let ready = limiter.ready_at(chat, now);
    if ready > now {
        return Err(SendError::NotYet(ready - now));
    }
    limiter.record(chat, now);
    if let Some(why) = api.unreachable().await {
        // Nothing was sent: the delivery loop retries this chunk later.
        match crate::repeat::admit(REPEAT_SITE, &format!("held back {why}")) {
            Some(note) => {
                tracing::info!(error = %why, "telegram: unreachable; sendMessage held back{note}")
            }
            None => tracing::debug!(error = %why, "telegram: unreachable; sendMessage held back"),
        }
        return Err(SendError::Retry(why));
    }
    let hint = u64::try_from(api.box_max.load(Ordering::Relaxed))
        .unwrap_or(0)
        .max(after);
    arm.arm(hint).await?;
    // A reply in a group quotes the message it answers (the first chunk) and stays in its forum
    // topic (every chunk).
    let reference = reply_to.and_then(|r| proto::cues::parse_reply_ref(&r.reference));
    let body = proto::SendMessage {
        chat_id: proto::chat_id_json(chat),
        text,
        message_thread_id: reference.and_then(|(_, thread)| thread),
        reply_parameters: reference.filter(|_| reply_to.is_some_and(|r| r.quote)).map(
            |(message_id, _)| proto::ReplyParameters {
                message_id,
                allow_sending_without_reply: true,
            },
        ),
    };
    let reply = api
        .call("sendMessage", &body, CALL_TIMEOUT, MAX_SEND_BODY)
        .await;
    if matches!(reply, Reply::Body(200..=299, _))
        && proto::classify::<serde::de::IgnoredAny>(reply.fetched()).is_err()
    {
        Metrics::inc(&ctx.metrics.malformed[KIND]);
    }
    // An answer lost after the request left: the chunk is settled by probing ([`doubt`]).
    let outcome = match &reply {
        Reply::Failed {
            why,
            maybe_sent: true,
        } => Err(SendError::InDoubt(why.clone())),
        _ => proto::send_outcome(reply.fetched()),
    };
    if outcome.is_ok()
        && let Some(id) = doubt::sent_message_id(reply.fetched())
    {
        know_own_message(ctx, api, id).await;
    }
    outcome
}

/// Settles a chunk in doubt ([`doubt`]): probes the ids above `hint` in `chat` for the bot's own
/// message.
async fn reconcile(api: &Api, ctx: &ChannelContext, chat: &str, hint: u64, since_ms: u64) -> Doubt {
    if !doubt::is_private(chat) {
        return Doubt::Unknowable;
    }
    let wait = doubt::wait_before_probe(since_ms, crate::store::now_ms());
    if !wait.is_zero() {
        return Doubt::NotYet(wait);
    }
    // No id known when it was armed (a fresh state, before any update): the bot's older
    // messages could not be told from the chunk.
    let Ok(first) = i64::try_from(hint) else {
        return Doubt::Unknowable;
    };
    if first == 0 {
        return Doubt::Unknowable;
    }
    for n in 1..=doubt::MAX_PROBES as i64 {
        let id = first.saturating_add(n);
        let body = doubt::Probe {
            chat_id: proto::chat_id_json(chat),
            message_id: id,
        };
        let reply = api
            .call(
                "editMessageReplyMarkup",
                &body,
                PROBE_TIMEOUT,
                MAX_SEND_BODY,
            )
            .await;
        match doubt::classify_probe(reply.fetched()) {
            Probed::Ours => {
                know_own_message(ctx, api, id).await;
                return Doubt::Sent;
            }
            Probed::NotOurs => {}
            Probed::ChatGone => return Doubt::NotSent,
            Probed::RetryAfter(d) => return Doubt::NotYet(d),
            Probed::Failed(why) => return Doubt::Unresolved(why),
            Probed::Unclear(why) => {
                tracing::warn!(error = %why, "telegram: unexpected answer while checking a send in doubt");
                return Doubt::Unknowable;
            }
        }
        sleep(doubt::PROBE_GAP).await;
    }
    Doubt::NotSent
}

/// The acknowledgement reaction (or its removal, `emoji` empty) on message `message_id`. Best
/// effort: a message without a known id (0: outside a private chat) is skipped, a failure logged.
async fn send_reaction(api: &Api, chat: &str, message_id: u64, emoji: &str) {
    if message_id == 0 {
        return;
    }
    let body = proto::set_reaction(chat, message_id, emoji);
    let reply = api
        .call("setMessageReaction", &body, CALL_TIMEOUT, MAX_ACTION_BODY)
        .await;
    if let Err(e) = proto::classify::<serde::de::IgnoredAny>(reply.fetched()) {
        tracing::debug!(error = ?e, "telegram: setMessageReaction failed");
    }
}

/// Best effort: a failed typing indicator is only logged.
async fn send_typing(api: &Api, chat: &str) {
    let body = proto::SendChatAction {
        chat_id: proto::chat_id_json(chat),
        action: "typing",
    };
    let reply = api
        .call("sendChatAction", &body, CALL_TIMEOUT, MAX_ACTION_BODY)
        .await;
    if let Err(e) = proto::classify::<serde::de::IgnoredAny>(reply.fetched()) {
        tracing::debug!(error = ?e, "telegram: sendChatAction failed");
    }
}
