//! The per-channel send loop: takes finished replies in order, paces them like a person (typing,
//! gaps, a global budget: [`crate::pacing`]), and sends each chunk through the channel with the
//! durability order that makes a reply never go out twice:
//! mark the chunk in flight (fsynced) → send → mark it sent.
//!
//! After a crash, a chunk found in flight is resent only if the channel's sends are idempotent
//! (the same key cannot make a second message); otherwise it is counted as in doubt and skipped.

use crate::backoff::Backoff;
use crate::channel::{ChannelCommand, ChannelSpec, SendError};
use crate::config::PacingConfig;
use crate::metrics::Metrics;
use crate::pacing::Pacer;
use crate::shutdown::Shutdown;
use crate::store::{OutboxRecord, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until};

/// Replies waiting per channel; the turn runner waits (backpressure) beyond this.
pub const QUEUE_DEPTH: usize = 256;
/// A channel that has not reported a send's outcome by then is treated as having failed it.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// First wait before a failed chunk is tried again.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between tries of a failed chunk: once a link is back, the reply follows within
/// seconds (a failed try while it is down is local or one small request, so this costs little).
const RETRY_CAP: Duration = Duration::from_secs(8);
/// A reply still unsent after this long (a channel down for a day) is given up, with a log line.
const MAX_REPLY_AGE_MS: u64 = 24 * 3600 * 1000;
/// The longest `retry_after` honoured as asked; longer ones are capped (then asked again).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One reply to deliver.
#[derive(Debug)]
pub struct Job {
    pub seq: u64,
    pub rec: OutboxRecord,
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
        // A chunk left in flight by a crash: resend only where that cannot duplicate it.
        if rec.in_flight {
            if self.spec.idempotent_send {
                tracing::info!(channel = %ch, seq, chunk = rec.next, "resending a chunk interrupted by a restart (idempotent)");
            } else {
                tracing::warn!(channel = %ch, seq, chunk = rec.next, "a reply chunk was being sent when clawbox stopped; not resending it, to never send it twice");
                if self.store.mark_sent(seq).await? {
                    return Ok(());
                }
                rec.next = rec.next.saturating_add(1);
                rec.in_flight = false;
            }
        }
        let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP, seq);
        // While a channel is unreachable every waiting reply retries every few seconds: say so
        // once, then every 10 minutes ([`crate::repeat`]).
        let repeat_site = format!("delivery {ch}");
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
            self.store.mark_in_flight(seq).await?;
            crate::fault::crash_point("before-send");
            let outcome = self
                .send(&rec.chat, text, format!("{}.{idx}", rec.key))
                .await;
            match outcome {
                Sent::Ok => {
                    crate::fault::crash_point("after-send");
                    self.pacer.on_sent(Instant::now());
                    Metrics::inc(&self.metrics.messages_out[ch.index()]);
                    self.store.mark_sent(seq).await?;
                    rec.next = rec.next.saturating_add(1);
                    first = false;
                    if backoff.attempts() > 0 {
                        crate::repeat::settled(&repeat_site);
                    }
                    backoff.reset();
                }
                Sent::InDoubt if !self.spec.idempotent_send => {
                    Metrics::inc(&self.metrics.send_failures[ch.index()]);
                    tracing::warn!(channel = %ch, seq, chunk = idx, "send outcome unknown; not resending, to never send it twice");
                    self.store.mark_sent(seq).await?;
                    rec.next = rec.next.saturating_add(1);
                }
                Sent::InDoubt | Sent::Failed(SendError::Retry(_) | SendError::InDoubt(_)) => {
                    Metrics::inc(&self.metrics.send_failures[ch.index()]);
                    if crate::store::now_ms().saturating_sub(rec.created_ms) > MAX_REPLY_AGE_MS {
                        tracing::error!(channel = %ch, seq, "reply could not be sent for a day; giving up on it");
                        self.store.abandon(seq).await?;
                        break;
                    }
                    let wait = backoff.next_delay();
                    match crate::repeat::admit(&repeat_site, "send failed; retrying") {
                        Some(note) => {
                            tracing::info!(channel = %ch, seq, retry_in_ms = wait.as_millis() as u64, "send failed; retrying{note}")
                        }
                        None => {
                            tracing::debug!(channel = %ch, seq, retry_in_ms = wait.as_millis() as u64, "send failed; retrying")
                        }
                    }
                    sleep(wait).await;
                }
                Sent::Failed(SendError::NotYet(d)) => sleep(d.min(MAX_RETRY_AFTER)).await,
                Sent::Failed(SendError::RetryAfter(d)) => {
                    Metrics::inc(&self.metrics.send_failures[ch.index()]);
                    tracing::info!(channel = %ch, seq, retry_after_s = d.as_secs(), "rate limited by the channel");
                    sleep(d.min(MAX_RETRY_AFTER)).await;
                }
                Sent::Failed(SendError::Permanent(why)) => {
                    Metrics::inc(&self.metrics.send_failures[ch.index()]);
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

    async fn send(&self, chat: &str, text: String, key: String) -> Sent {
        let (done, rx) = oneshot::channel();
        let cmd = ChannelCommand::Send {
            chat: chat.to_string(),
            text,
            key,
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
