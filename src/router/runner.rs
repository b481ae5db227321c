//! Runs one turn: builds the request (session key, joined text, history, idempotency key), calls
//! the agent under the ack and accumulation timeouts, turns every failure into a polite reply, and
//! records the outcome atomically before handing the reply to delivery. Never silent.

use super::turns::{Queued, Turn, batch_from};
use crate::agent::{Agent, HistoryEntry, Progress, ResetOutcome, Role, TurnRequest};
use crate::config::RouterConfig;
use crate::delivery::{Job, Outlet};
use crate::metrics::{Metrics, TurnOutcome};
use crate::session;
use crate::store::{OutboxRecord, Store, TurnDone, records::INBOX_PENDING};
use crate::vocab::PerChannel;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An agent with the settings the router needs around it.
pub struct AgentEntry {
    pub agent: Agent,
    /// The `<agent_id>` in session keys.
    pub agent_id: String,
    pub prefix: String,
    pub ack_timeout: Duration,
    pub accumulation_timeout: Duration,
}

impl AgentEntry {
    /// The agent with its settings as resolved by the config.
    pub fn new(agent: Agent, s: crate::config::AgentSettings) -> AgentEntry {
        AgentEntry {
            agent,
            agent_id: s.agent_id,
            prefix: s.prefix,
            ack_timeout: s.ack_timeout,
            accumulation_timeout: s.accumulation_timeout,
        }
    }
}

/// What every turn needs, shared.
pub struct Shared {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub cfg: RouterConfig,
    pub agents: HashMap<String, Arc<AgentEntry>>,
    /// Fallback when a stored message names an agent that is no longer configured.
    pub default_agent: String,
    /// Each running channel's way out (none for a channel that is off).
    pub outlets: PerChannel<Option<Outlet>>,
}

/// How a turn ended, for the router's scheduler.
pub struct Finished {
    pub session: String,
    pub more_in_store: bool,
}

#[derive(Debug)]
enum Failure {
    AckTimeout,
    AccumulationTimeout,
    Agent(String),
}

/// A stable key for the turn made of these messages: the same messages give the same key across
/// retries and restarts, so an agent that dedupes by it never runs the turn twice.
pub fn idempotency_key(channel: &str, msg_ids: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(channel.as_bytes());
    for id in msg_ids {
        ctx.update(b"\x1f");
        ctx.update(id.as_bytes());
    }
    let digest = ctx.finish();
    let hex: String = digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("clawbox-{hex}")
}

pub async fn run_turn(shared: Arc<Shared>, turn: Turn) -> Finished {
    let session = turn.session.clone();
    let feedback = turn.feedback;
    let (messages, more_in_store) = if turn.spilled {
        match shared.store.pending_for(&session).await {
            Ok(rows) => batch_from(
                rows.into_iter()
                    .filter(|m| m.rec.state == INBOX_PENDING)
                    .map(Queued::from)
                    .collect(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot read a spilled session from the store; retrying");
                tokio::time::sleep(crate::retry::STORE_RETRY).await;
                return Finished {
                    session,
                    more_in_store: true,
                };
            }
        }
    } else {
        (turn.messages, false)
    };
    let Some(first) = messages.first() else {
        return Finished {
            session,
            more_in_store,
        };
    };
    let route = first.rec.clone();
    let channel = first.channel;
    let entry = shared
        .agents
        .get(&route.agent)
        .or_else(|| shared.agents.get(&shared.default_agent))
        .cloned();
    let Some(entry) = entry else {
        tracing::error!(agent = %route.agent, "no agent available");
        return Finished {
            session,
            more_in_store: true,
        };
    };
    let started = Instant::now();
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    let ids: Vec<&str> = messages.iter().map(|m| m.rec.msg_id.as_str()).collect();
    let key = idempotency_key(channel.as_str(), &ids);

    let record = match shared.store.session(&session).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the session; retrying");
            tokio::time::sleep(crate::retry::STORE_RETRY).await;
            return Finished {
                session,
                more_in_store: true,
            };
        }
    };
    let session_key = session::key(&entry.agent_id, &entry.prefix, &session, record.generation);

    let (reply, history, reset, new_generation) = if first.is_reset {
        let outcome = with_timeout(entry.ack_timeout, entry.agent.reset(&session_key)).await;
        let mut text = shared.cfg.reset_reply.clone();
        let outcome = match outcome {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "agent could not reset the session; starting a new one");
                ResetOutcome::NewGeneration
            }
            None => ResetOutcome::NewGeneration,
        };
        if outcome == ResetOutcome::NewGeneration && entry.agent.keeps_reset_conversations() {
            text.push_str(" (The previous conversation stays on the gateway.)");
        }
        Metrics::inc(&shared.metrics.resets);
        (text, None, true, outcome != ResetOutcome::Cleared)
    } else if let Some(command) = first.command {
        // `/start`, `/help`: the configured text, no agent call, nothing in the history.
        let text = match command {
            crate::vocab::Command::Help => shared.cfg.help_reply.clone(),
            _ => shared.cfg.start_reply.clone(),
        };
        (text, None, false, false)
    } else {
        if let Some(outlet) = &shared.outlets[channel] {
            outlet.typing(&route.chat);
        }
        let text = super::feedback::prepend(
            &feedback,
            &messages
                .iter()
                .map(|m| m.rec.text.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let history = if entry.agent.wants_history() {
            record
                .history
                .iter()
                .map(|h| HistoryEntry {
                    role: if h.role == 0 {
                        Role::User
                    } else {
                        Role::Assistant
                    },
                    text: h.text.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let req = TurnRequest {
            session_key,
            text: text.clone(),
            history,
            idempotency_key: key.clone(),
            system_prompt: Some(route.system_prompt.clone()).filter(|s| !s.is_empty()),
        };
        Metrics::inc(&shared.metrics.turns_in_flight);
        let ack = AckReaction::for_turn(&shared, first);
        let result = match &ack {
            Some(ack) => ack.around(call_agent(entry.clone(), req)).await,
            None => call_agent(entry.clone(), req).await,
        };
        shared
            .metrics
            .turns_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let (outcome, reply) = match result {
            Ok(r) if !r.trim().is_empty() => (TurnOutcome::Ok, r),
            Ok(_) => (TurnOutcome::AgentError, shared.cfg.error_reply.clone()),
            Err(Failure::AckTimeout) => (TurnOutcome::AckTimeout, shared.cfg.timeout_reply.clone()),
            Err(Failure::AccumulationTimeout) => (
                TurnOutcome::AccumulationTimeout,
                shared.cfg.timeout_reply.clone(),
            ),
            Err(Failure::Agent(e)) => {
                tracing::warn!(agent = %route.agent, error = %e, "turn failed");
                (TurnOutcome::AgentError, shared.cfg.error_reply.clone())
            }
        };
        if outcome != TurnOutcome::Ok {
            tracing::warn!(outcome = outcome.as_str(), session = %session, "turn ended without an answer; sent the polite reply");
        }
        shared.metrics.turn(outcome, started.elapsed());
        let history = (outcome == TurnOutcome::Ok).then(|| (text, reply.clone()));
        (reply, history, false, false)
    };

    let max_chars = shared.outlets[channel]
        .as_ref()
        .map(|o| o.spec.max_chars)
        .unwrap_or(4096);
    let chunks = crate::chunk::split(&reply, max_chars);
    let out = OutboxRecord {
        channel: channel.as_str().to_string(),
        chat: route.chat.clone(),
        chunks,
        next: 0,
        in_flight: false,
        key,
        created_ms: crate::store::now_ms(),
        after_wire_seq: messages.iter().map(|m| m.rec.wire_seq).max().unwrap_or(0),
        // The newest message of the turn that asks to be quoted (a group's addressed message).
        reply_ref: messages
            .iter()
            .rev()
            .map(|m| m.rec.reply_ref.as_str())
            .find(|r| !r.is_empty())
            .unwrap_or_default()
            .to_string(),
        ..OutboxRecord::default()
    };
    let done = TurnDone {
        inbox: seqs,
        session: session.clone(),
        history,
        reset,
        new_generation,
        reply: Some(out.clone()),
    };
    match record_done(&shared, done).await {
        Ok(Some(seq)) => {
            crate::fault::crash_point("after-turn");
            if let Some(outlet) = &shared.outlets[channel] {
                Metrics::inc(&shared.metrics.outbox_pending);
                if !outlet.queue(Job { seq, rec: out }).await {
                    shared
                        .metrics
                        .outbox_pending
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            } else {
                tracing::warn!(channel = %channel, "reply stored, but the channel is not running; it is sent when it is");
            }
            Finished {
                session,
                more_in_store,
            }
        }
        Ok(None) => Finished {
            session,
            more_in_store,
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot record the finished turn; it will run again");
            tokio::time::sleep(crate::retry::STORE_RETRY).await;
            Finished {
                session,
                more_in_store: true,
            }
        }
    }
}

/// The acknowledgement reaction of one turn: put on the message that started it once the agent
/// has taken longer than the threshold, taken off as soon as the reply is ready (before its
/// pacing and typing), whatever the outcome. Never in a group unless the message addressed the
/// assistant (`quiet`), never for a channel without a message id to react to.
struct AckReaction {
    outlet: Outlet,
    chat: String,
    target: crate::channel::ReactTarget,
    emoji: String,
    after: Duration,
    metrics: Arc<Metrics>,
}

impl AckReaction {
    fn for_turn(shared: &Shared, first: &Queued) -> Option<AckReaction> {
        let emoji = shared.cfg.ack_reaction.trim();
        if emoji.is_empty() || first.rec.quiet {
            return None;
        }
        let outlet = shared.outlets[first.channel].clone()?;
        Some(AckReaction {
            outlet,
            chat: first.rec.chat.clone(),
            target: crate::channel::ReactTarget {
                msg_id: first.rec.msg_id.clone(),
                author: first.rec.author.clone(),
                wire_seq: first.rec.wire_seq,
                reply_ref: first.rec.reply_ref.clone(),
            },
            emoji: emoji.to_string(),
            after: Duration::from_millis(shared.cfg.ack_reaction_after_ms),
            metrics: shared.metrics.clone(),
        })
    }

    /// Runs `turn`, reacting if it outlasts the threshold and taking the reaction off after.
    async fn around<T>(&self, turn: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(turn);
        tokio::select! {
            r = &mut turn => return r,
            _ = tokio::time::sleep(self.after) => {}
        }
        self.outlet
            .react(&self.chat, self.target.clone(), &self.emoji);
        Metrics::inc(&self.metrics.ack_reactions);
        let r = turn.await;
        self.outlet.react(&self.chat, self.target.clone(), "");
        r
    }
}

/// Records a finished turn; its messages stop counting as unanswered once that is stored.
async fn record_done(
    shared: &Shared,
    done: TurnDone,
) -> Result<Option<u64>, crate::store::StoreError> {
    let answered = done.inbox.len() as u64;
    let r = shared.store.turn_done(done).await;
    if r.is_ok() {
        let _ = shared.metrics.inbox_pending.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |v| Some(v.saturating_sub(answered)),
        );
    }
    r
}

async fn with_timeout<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, fut).await.ok()
}

/// Aborts the task when dropped (a timed-out or cancelled turn must not keep running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the agent's turn in its own task (a panic in agent code becomes an error, not a dead
/// router) under the ack timeout (until the agent accepts) and the accumulation timeout (between
/// progress reports after that).
async fn call_agent(entry: Arc<AgentEntry>, req: TurnRequest) -> Result<String, Failure> {
    let (progress, mut rx) = Progress::new();
    let ack = entry.ack_timeout;
    let accumulation = entry.accumulation_timeout;
    let task = AbortOnDrop(tokio::spawn(async move {
        entry.agent.turn(req, progress).await
    }));
    let mut task = task;
    let mut deadline = Instant::now() + ack;
    let mut accepted = false;
    let mut progress_open = true;
    loop {
        tokio::select! {
            joined = &mut task.0 => {
                return match joined {
                    Ok(Ok(text)) => Ok(text),
                    Ok(Err(e)) => Err(Failure::Agent(e.to_string())),
                    Err(e) if e.is_panic() => Err(Failure::Agent("the agent client crashed (a bug; please report it)".into())),
                    Err(_) => Err(Failure::Agent("the turn was cancelled".into())),
                };
            }
            changed = rx.changed(), if progress_open => {
                if changed.is_err() {
                    progress_open = false;
                    continue;
                }
                if *rx.borrow_and_update() >= 1 {
                    accepted = true;
                    deadline = Instant::now() + accumulation;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(if accepted { Failure::AccumulationTimeout } else { Failure::AckTimeout });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelCommand;
    use crate::vocab::{ChannelKind, ChannelSpec};

    fn ack(after_ms: u64) -> (AckReaction, tokio::sync::mpsc::Receiver<ChannelCommand>) {
        let (jobs, _) = tokio::sync::mpsc::channel(1);
        let (commands, rx) = tokio::sync::mpsc::channel(8);
        let spec = ChannelSpec {
            kind: ChannelKind::Telegram,
            max_chars: 4096,
        };
        let a = AckReaction {
            outlet: Outlet::new(spec, jobs, commands),
            chat: "42".into(),
            target: crate::channel::ReactTarget {
                msg_id: "7".into(),
                author: "42".into(),
                wire_seq: 7,
                reply_ref: String::new(),
            },
            emoji: "👀".into(),
            after: Duration::from_millis(after_ms),
            metrics: Arc::new(Metrics::default()),
        };
        (a, rx)
    }

    fn reaction(c: ChannelCommand) -> String {
        match c {
            ChannelCommand::React {
                emoji,
                target,
                chat,
            } => {
                assert_eq!((chat.as_str(), target.wire_seq), ("42", 7));
                emoji
            }
            other => panic!("not a reaction: {other:?}"),
        }
    }

    fn shared(ack_reaction: &str, with_outlet: bool) -> Shared {
        let metrics = Arc::new(Metrics::default());
        let mut outlets: PerChannel<Option<Outlet>> = Default::default();
        if with_outlet {
            outlets[ChannelKind::Telegram] = Some(ack(1).0.outlet);
        }
        Shared {
            store: Store::open_in_memory(metrics.clone()).unwrap(),
            metrics,
            cfg: RouterConfig {
                ack_reaction: ack_reaction.into(),
                ..RouterConfig::default()
            },
            agents: HashMap::new(),
            default_agent: "echo".into(),
            outlets,
        }
    }

    fn queued(quiet: bool) -> Queued {
        Queued {
            seq: 1,
            channel: ChannelKind::Telegram,
            rec: crate::store::InboxRecord {
                chat: "42".into(),
                msg_id: "9".into(),
                wire_seq: 7,
                quiet,
                ..Default::default()
            },
            is_reset: false,
            command: None,
        }
    }

    #[tokio::test]
    async fn the_ack_reaction_is_off_when_empty_for_a_quiet_group_message_and_without_an_outlet() {
        let on = AckReaction::for_turn(&shared("👀", true), &queued(false)).unwrap();
        assert_eq!(
            (on.emoji.as_str(), on.after),
            ("👀", Duration::from_secs(4))
        );
        assert_eq!(on.target.wire_seq, 7);
        assert!(AckReaction::for_turn(&shared("", true), &queued(false)).is_none());
        assert!(AckReaction::for_turn(&shared("👀", true), &queued(true)).is_none());
        assert!(AckReaction::for_turn(&shared("👀", false), &queued(false)).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_turn_gets_the_reaction_and_loses_it_a_fast_one_never_has_it() {
        let (a, mut rx) = ack(4000);
        let r = a
            .around(tokio::time::sleep(Duration::from_millis(3999)))
            .await;
        assert_eq!(r, ());
        assert!(rx.try_recv().is_err(), "a fast reply: no reaction");

        let started = Instant::now();
        a.around(async {
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(reaction(rx.try_recv().unwrap()), "👀");
        assert_eq!(reaction(rx.try_recv().unwrap()), "", "taken off after");
        assert!(rx.try_recv().is_err());
        assert_eq!(
            a.metrics
                .ack_reactions
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let a = idempotency_key("telegram", &["1", "2"]);
        assert_eq!(a, idempotency_key("telegram", &["1", "2"]));
        assert_ne!(a, idempotency_key("telegram", &["1"]));
        assert_ne!(a, idempotency_key("whatsapp", &["1", "2"]));
        assert_ne!(
            idempotency_key("t", &["1", "2"]),
            idempotency_key("t", &["12"])
        );
        assert!(a.starts_with("clawbox-") && a.len() == "clawbox-".len() + 32);
    }
}
