//! The per-channel send loop: takes finished replies in order, paces them like a person (typing,
//! gaps, a global budget: [`crate::pacing`]), and sends each chunk through the channel with the
//! durability order that makes a reply neither lost nor sent twice:
//! the channel arms the chunk right before its request leaves (marked in flight, fsynced:
//! [`crate::channel::Arm`]) → send → mark it sent.
//!
//! A chunk whose outcome is unknown — the request may have reached the server, and the answer was
//! lost to a broken link, a crash or a power cut — is settled with the channel before anything
//! else is sent ([`ChannelCommand::Reconcile`]): sent (never again), not sent (send it), or
//! unknowable on that channel (not resent, logged). Nothing is skipped while the channel cannot
//! tell yet (a Telegram outage): the question is asked again until it can.

use crate::channel::{Arm, ChannelCommand, Doubt, ReplyTo, SendError};
use crate::config::PacingConfig;
use crate::metrics::Metrics;
use crate::pacing::Pacer;
use crate::retry::{self, Backoff};
use crate::shutdown::Shutdown;
use crate::store::{OutboxRecord, Store};
use crate::vocab::ChannelSpec;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until};

/// Replies waiting per channel; the turn runner waits (backpressure) beyond this.
pub const QUEUE_DEPTH: usize = 256;
/// A channel that has not reported a send's outcome by then is treated as having failed it.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// A reply still unsent after this long (a channel down for a day) is given up, with a log line.
const MAX_REPLY_AGE_MS: u64 = 24 * 3600 * 1000;
/// A channel that has not settled a chunk in doubt by then is asked again later (its probing is
/// bounded by its own request deadlines; this only guards against a channel that vanished).
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);

/// One reply to deliver.
#[derive(Debug)]
pub struct Job {
    pub seq: u64,
    pub rec: OutboxRecord,
}

/// The router's way to one channel: queue a finished reply for pacing and delivery, or show
/// "typing…" while a turn runs. The router reaches channels only through this, never their
/// command queues directly.
#[derive(Clone, Debug)]
pub struct Outlet {
    pub spec: ChannelSpec,
    jobs: mpsc::Sender<Job>,
    commands: mpsc::Sender<ChannelCommand>,
}

impl Outlet {
    pub fn new(
        spec: ChannelSpec,
        jobs: mpsc::Sender<Job>,
        commands: mpsc::Sender<ChannelCommand>,
    ) -> Outlet {
        Outlet {
            spec,
            jobs,
            commands,
        }
    }

    /// "typing…" in `chat` while a turn runs. Best effort: dropped when the queue is full.
    pub fn typing(&self, chat: &str) {
        let _ = self.commands.try_send(ChannelCommand::Typing {
            chat: chat.to_string(),
            on: true,
        });
    }

    /// Puts `emoji` on the message `target` in `chat` (empty: takes it off). Best effort:
    /// dropped when the queue is full.
    pub fn react(&self, chat: &str, target: crate::channel::ReactTarget, emoji: &str) {
        let _ = self.commands.try_send(ChannelCommand::React {
            chat: chat.to_string(),
            target,
            emoji: emoji.to_string(),
        });
    }

    /// Queues a stored reply for delivery (waits while [`QUEUE_DEPTH`] replies wait); `false` when
    /// the delivery loop has ended (shutdown: the reply is sent from the store after a restart).
    pub async fn queue(&self, job: Job) -> bool {
        self.jobs.send(job).await.is_ok()
    }
}

pub struct Delivery {
    pub spec: ChannelSpec,
    pub pacer: Pacer,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub commands: mpsc::Sender<ChannelCommand>,
}

enum Sent {
    Ok,
    /// Outcome unknown (channel vanished or timed out mid-send).
    InDoubt,
    Failed(SendError),
}

/// How a chunk in doubt was settled.
enum Settled {
    /// It arrived: count it sent.
    Sent,
    /// Send it (again).
    Resend,
    /// The reply is too old to keep trying: given up.
    GaveUp,
}

impl Delivery {
    pub fn new(
        spec: ChannelSpec,
        pacing: &PacingConfig,
        seed: u64,
        store: Store,
        metrics: Arc<Metrics>,
        commands: mpsc::Sender<ChannelCommand>,
    ) -> Delivery {
        Delivery {
            spec,
            pacer: Pacer::new(pacing, seed, Instant::now()),
            store,
            metrics,
            commands,
        }
    }

    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>, mut shutdown: Shutdown) {
        loop {
            let job = tokio::select! {
                j = jobs.recv() => match j { Some(j) => j, None => return },
                _ = shutdown.wait() => return,
            };
            let seq = job.seq;
            tokio::select! {
                r = self.deliver(job) => if let Err(e) = r {
                    tracing::error!(channel = %self.spec.kind, seq, error = %e, "delivery stopped for this reply");
                },
                _ = shutdown.wait() => return,
            }
            self.metrics.outbox_pending.fetch_sub(1, Relaxed);
        }
    }

    async fn deliver(&mut self, job: Job) -> Result<(), crate::store::StoreError> {
        let Job { seq, mut rec } = job;
        let ch = self.spec.kind;
        let mut backoff = Backoff::new(retry::SEND, seq);
        // While a channel is unreachable every waiting reply retries every few seconds: say so
        // once, then every 10 minutes ([`crate::repeat`]).
        let repeat_site = format!("delivery {ch}");
        // A chunk left in flight by a crash: settle it before anything else goes to this channel.
        if rec.in_flight {
            tracing::info!(channel = %ch, seq, chunk = rec.next, "a reply chunk was being sent when clawbox stopped; asking the channel whether it arrived");
            let (hint, since) = (rec.doubt_hint, rec.in_flight_ms);
            match self.settle(seq, &rec, hint, since).await? {
                Settled::Sent => {
                    if self.store.mark_sent(seq).await? {
                        return Ok(());
                    }
                    rec.next = rec.next.saturating_add(1);
                }
                Settled::Resend => self.store.clear_in_flight(seq).await?,
                Settled::GaveUp => return Ok(()),
            }
            rec.in_flight = false;
        }
        let total = rec.chunks.len();
        let mut first = true;
        while (rec.next as usize) < total {
            let idx = rec.next as usize;
            let text = rec.chunks[idx].clone();
            let now = Instant::now();
            let plan = if first {
                self.pacer.plan_first(now, text.chars().count())
            } else {
                self.pacer.plan_next_chunk(now)
            };
            if plan.typing_at < plan.send_at {
                sleep_until(plan.typing_at).await;
                let _ = self.commands.try_send(ChannelCommand::Typing {
                    chat: rec.chat.clone(),
                    on: true,
                });
            }
            sleep_until(plan.send_at).await;
            let armed = Arc::new(std::sync::Mutex::new(None));
            let arm = Arm::new(self.store.clone(), seq, armed.clone());
            // Every chunk of a reply to a group message stays with it; the first quotes it.
            let reply_to = (!rec.reply_ref.is_empty()).then(|| ReplyTo {
                reference: rec.reply_ref.clone(),
                quote: idx == 0,
            });
            let outcome = self
                .send(
                    &rec.chat,
                    text,
                    format!("{}.{idx}", rec.key),
                    rec.after_wire_seq,
                    reply_to,
                    arm,
                )
                .await;
            let hint = *armed.lock().unwrap_or_else(|p| p.into_inner());
            // Whatever went wrong, a chunk that was never armed never left.
            let outcome = match (outcome, hint) {
                (Sent::InDoubt, None) => {
                    Sent::Failed(SendError::Retry("the channel dropped the send".into()))
                }
                (o, _) => o,
            };
            match outcome {
                Sent::Ok => {
                    crate::fault::crash_point("after-send");
                    self.pacer.on_sent(Instant::now());
                    Metrics::inc(&self.metrics.messages_out[ch]);
                    self.store.mark_sent(seq).await?;
                    rec.next = rec.next.saturating_add(1);
                    first = false;
                    if backoff.attempts() > 0 {
                        crate::repeat::settled(&repeat_site);
                    }
                    backoff.reset();
                    continue;
                }
                Sent::InDoubt => {
                    Metrics::inc(&self.metrics.send_failures[ch]);
                    tracing::warn!(channel = %ch, seq, chunk = idx, "send outcome unknown; asking the channel whether it arrived");
                    let since = crate::store::now_ms();
                    match self
                        .settle(seq, &rec, hint.unwrap_or_default(), since)
                        .await?
                    {
                        Settled::Sent => {
                            self.pacer.on_sent(Instant::now());
                            Metrics::inc(&self.metrics.messages_out[ch]);
                            self.store.mark_sent(seq).await?;
                            rec.next = rec.next.saturating_add(1);
                            first = false;
                        }
                        Settled::Resend => self.store.clear_in_flight(seq).await?,
                        Settled::GaveUp => break,
                    }
                    continue;
                }
                Sent::Failed(_) if hint.is_some() => {
                    // Refused before it left (an answer from the server, or no connection at
                    // all): the mark is lifted. Lazily: a crash before the next fsync leaves it,
                    // and the chunk is then settled with the channel like any other.
                    self.store.clear_in_flight(seq).await?;
                }
                Sent::Failed(_) => {}
            }
            let Sent::Failed(e) = outcome else { continue };
            match e {
                SendError::Retry(why) | SendError::InDoubt(why) => {
                    Metrics::inc(&self.metrics.send_failures[ch]);
                    if self.too_old(&rec) {
                        tracing::error!(channel = %ch, seq, "reply could not be sent for a day; giving up on it");
                        self.store.abandon(seq).await?;
                        break;
                    }
                    let wait = backoff.next_delay();
                    match crate::repeat::admit(&repeat_site, "send failed; retrying") {
                        Some(note) => {
                            tracing::info!(channel = %ch, seq, retry_in_ms = wait.as_millis() as u64, reason = %why, "send failed; retrying{note}")
                        }
                        None => {
                            tracing::debug!(channel = %ch, seq, retry_in_ms = wait.as_millis() as u64, reason = %why, "send failed; retrying")
                        }
                    }
                    sleep(wait).await;
                }
                SendError::NotYet(d) => sleep(d.min(retry::RETRY_AFTER_CAP)).await,
                SendError::RetryAfter(d) => {
                    Metrics::inc(&self.metrics.send_failures[ch]);
                    tracing::info!(channel = %ch, seq, retry_after_s = d.as_secs(), "rate limited by the channel");
                    sleep(d.min(retry::RETRY_AFTER_CAP)).await;
                }
                SendError::Permanent(why) => {
                    Metrics::inc(&self.metrics.send_failures[ch]);
                    tracing::warn!(channel = %ch, seq, reason = %why, "reply rejected by the channel; dropping it");
                    self.store.abandon(seq).await?;
                    break;
                }
            }
        }
        let _ = self.commands.try_send(ChannelCommand::Typing {
            chat: rec.chat.clone(),
            on: false,
        });
        Ok(())
    }

    fn too_old(&self, rec: &OutboxRecord) -> bool {
        crate::store::now_ms().saturating_sub(rec.created_ms) > MAX_REPLY_AGE_MS
    }

    /// Asks the channel until it can say whether chunk `rec.next` arrived. Unknowable counts as
    /// sent (never twice); a reply still unsettled after a day is given up.
    async fn settle(
        &mut self,
        seq: u64,
        rec: &OutboxRecord,
        hint: u64,
        since_ms: u64,
    ) -> Result<Settled, crate::store::StoreError> {
        let ch = self.spec.kind;
        let key = format!("{}.{}", rec.key, rec.next);
        let mut backoff = Backoff::new(retry::SEND, seq ^ 0xd0b7);
        loop {
            if self.too_old(rec) {
                tracing::error!(channel = %ch, seq, "a reply chunk in doubt could not be settled for a day; giving up on the reply");
                self.store.abandon(seq).await?;
                return Ok(Settled::GaveUp);
            }
            match self.reconcile(&rec.chat, &key, hint, since_ms).await {
                Doubt::Sent => {
                    tracing::info!(channel = %ch, seq, chunk = rec.next, "the chunk in doubt had arrived; not sending it again");
                    return Ok(Settled::Sent);
                }
                Doubt::NotSent => {
                    tracing::info!(channel = %ch, seq, chunk = rec.next, "the chunk in doubt had not arrived (or resending it cannot duplicate it); sending it");
                    return Ok(Settled::Resend);
                }
                Doubt::Unknowable => {
                    tracing::warn!(channel = %ch, seq, chunk = rec.next, "whether a reply chunk arrived cannot be known on this channel; not resending it, to never send it twice");
                    return Ok(Settled::Sent);
                }
                Doubt::NotYet(d) => sleep(d.min(retry::RETRY_AFTER_CAP)).await,
                Doubt::Unresolved(why) => {
                    let wait = backoff.next_delay();
                    tracing::info!(channel = %ch, seq, retry_in_ms = wait.as_millis() as u64, reason = %why, "cannot tell yet whether a chunk in doubt arrived; asking again");
                    sleep(wait).await;
                }
            }
        }
    }

    async fn reconcile(&self, chat: &str, key: &str, hint: u64, since_ms: u64) -> Doubt {
        let (done, rx) = oneshot::channel();
        let cmd = ChannelCommand::Reconcile {
            chat: chat.to_string(),
            key: key.to_string(),
            hint,
            since_ms,
            done,
        };
        if self.commands.send(cmd).await.is_err() {
            return Doubt::Unresolved("the channel is not running".into());
        }
        match tokio::time::timeout(RECONCILE_TIMEOUT, rx).await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => Doubt::Unresolved("the channel restarted".into()),
            Err(_) => Doubt::Unresolved("the channel did not answer".into()),
        }
    }

    async fn send(
        &self,
        chat: &str,
        text: String,
        key: String,
        after: u64,
        reply_to: Option<ReplyTo>,
        arm: Arm,
    ) -> Sent {
        let (done, rx) = oneshot::channel();
        let cmd = ChannelCommand::Send {
            chat: chat.to_string(),
            text,
            key,
            after,
            reply_to,
            arm,
            done,
        };
        if self.commands.send(cmd).await.is_err() {
            return Sent::Failed(SendError::Retry("the channel is not running".into()));
        }
        match tokio::time::timeout(SEND_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Sent::Ok,
            Ok(Ok(Err(SendError::InDoubt(_)))) => Sent::InDoubt,
            Ok(Ok(Err(e))) => Sent::Failed(e),
            Ok(Err(_)) | Err(_) => Sent::InDoubt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TurnDone;
    use crate::vocab::ChannelKind;

    const SPEC: ChannelSpec = ChannelSpec {
        kind: ChannelKind::Telegram,
        max_chars: 4096,
    };

    fn setup() -> (Delivery, mpsc::Receiver<ChannelCommand>, Store) {
        let metrics = Arc::new(Metrics::default());
        let store = Store::open_in_memory(metrics.clone()).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let pacing = PacingConfig {
            enabled: false,
            ..PacingConfig::default()
        };
        let d = Delivery::new(SPEC, &pacing, 7, store.clone(), metrics, tx);
        (d, rx, store)
    }

    async fn queue(store: &Store, chunks: &[&str]) -> Job {
        let rec = OutboxRecord {
            channel: "telegram".into(),
            chat: "42".into(),
            chunks: chunks.iter().map(|c| c.to_string()).collect(),
            key: "k".into(),
            created_ms: crate::store::now_ms(),
            ..OutboxRecord::default()
        };
        let seq = store
            .turn_done(TurnDone {
                inbox: vec![],
                session: "s".into(),
                history: None,
                reset: false,
                new_generation: false,
                reply: Some(rec.clone()),
            })
            .await
            .unwrap()
            .unwrap();
        Job { seq, rec }
    }

    /// The outbox row as stored now (None once the reply is complete).
    async fn row(store: &Store, seq: u64) -> Option<OutboxRecord> {
        let r = store.recover().await.unwrap();
        r.outbox.into_iter().find(|r| r.seq == seq).map(|r| r.rec)
    }

    /// The next command that is not a typing indicator.
    async fn next(rx: &mut mpsc::Receiver<ChannelCommand>) -> ChannelCommand {
        loop {
            match rx.recv().await.unwrap() {
                ChannelCommand::Typing { .. } => continue,
                c => return c,
            }
        }
    }

    /// Held back by the channel's own limit (never armed): nothing is marked in flight, so a
    /// crash during the wait leaves nothing in doubt. Armed, then refused by the server: the
    /// mark is lifted before the wait.
    #[tokio::test(start_paused = true)]
    async fn a_chunk_is_in_flight_only_while_its_request_may_be_out() {
        let (d, mut rx, store) = setup();
        let job = queue(&store, &["one"]).await;
        let seq = job.seq;
        let run = tokio::spawn(async move {
            let mut d = d;
            d.deliver(job).await
        });
        let ChannelCommand::Send { done, .. } = next(&mut rx).await else {
            panic!("a send")
        };
        done.send(Err(SendError::NotYet(Duration::from_secs(1))))
            .unwrap();
        let ChannelCommand::Send { arm, done, .. } = next(&mut rx).await else {
            panic!("a send")
        };
        assert!(!row(&store, seq).await.unwrap().in_flight, "not armed");
        arm.arm(99).await.unwrap();
        let r = row(&store, seq).await.unwrap();
        assert!(r.in_flight && r.doubt_hint == 99, "armed durably: {r:?}");
        done.send(Err(SendError::RetryAfter(Duration::from_secs(5))))
            .unwrap();
        let ChannelCommand::Send { arm, done, .. } = next(&mut rx).await else {
            panic!("a send")
        };
        // During the 5 s wait the mark was lifted; now it goes.
        assert!(!row(&store, seq).await.unwrap().in_flight);
        arm.arm(99).await.unwrap();
        done.send(Ok(())).unwrap();
        run.await.unwrap().unwrap();
        assert!(row(&store, seq).await.is_none(), "complete");
    }

    /// A chunk found in flight (a crash mid-send) is settled with the channel before anything
    /// is sent: arrived → the next chunk; not arrived → sent again; cannot tell yet → asked
    /// again, never skipped.
    #[tokio::test(start_paused = true)]
    async fn a_chunk_found_in_flight_is_settled_before_anything_is_sent() {
        for (answers, resent) in [
            (vec![Doubt::Sent], false),
            (vec![Doubt::NotSent], true),
            (
                vec![
                    Doubt::Unresolved("down".into()),
                    Doubt::NotYet(Duration::from_secs(3)),
                    Doubt::Sent,
                ],
                false,
            ),
        ] {
            let (d, mut rx, store) = setup();
            let mut job = queue(&store, &["one", "two"]).await;
            store.mark_in_flight(job.seq, 1234).await.unwrap();
            job.rec = row(&store, job.seq).await.unwrap();
            let seq = job.seq;
            let run = tokio::spawn(async move {
                let mut d = d;
                d.deliver(job).await
            });
            for a in answers {
                let ChannelCommand::Reconcile {
                    hint, key, done, ..
                } = next(&mut rx).await
                else {
                    panic!("settled first")
                };
                assert_eq!((hint, key.as_str()), (1234, "k.0"));
                done.send(a).unwrap();
            }
            let mut sent = Vec::new();
            while row(&store, seq).await.is_some() {
                let ChannelCommand::Send {
                    text, arm, done, ..
                } = next(&mut rx).await
                else {
                    panic!("a send")
                };
                arm.arm(1).await.unwrap();
                sent.push(text);
                done.send(Ok(())).unwrap();
                tokio::task::yield_now().await;
            }
            run.await.unwrap().unwrap();
            let want: &[&str] = if resent { &["one", "two"] } else { &["two"] };
            assert_eq!(sent, want);
        }
    }

    /// A send whose answer was lost is settled in place; a channel that never armed the chunk
    /// (it dropped the command) is simply asked again.
    #[tokio::test(start_paused = true)]
    async fn a_send_in_doubt_is_settled_and_an_unarmed_one_retried() {
        let (d, mut rx, store) = setup();
        let job = queue(&store, &["one"]).await;
        let seq = job.seq;
        let run = tokio::spawn(async move {
            let mut d = d;
            d.deliver(job).await
        });
        // Dropped without arming: not in doubt, just retried.
        let ChannelCommand::Send { done, .. } = next(&mut rx).await else {
            panic!("a send")
        };
        drop(done);
        let ChannelCommand::Send { arm, done, .. } = next(&mut rx).await else {
            panic!("retried")
        };
        arm.arm(5).await.unwrap();
        done.send(Err(SendError::InDoubt("cut".into()))).unwrap();
        let ChannelCommand::Reconcile { hint, done, .. } = next(&mut rx).await else {
            panic!("settled")
        };
        assert_eq!(hint, 5);
        done.send(Doubt::Sent).unwrap();
        run.await.unwrap().unwrap();
        assert!(row(&store, seq).await.is_none(), "counted sent, not resent");
    }
}
