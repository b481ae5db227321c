//! From a decrypted WhatsApp message to the durable inbox: the client's durability hook (the
//! server is acknowledged only after the inbox write), messages recovered from the phone ("waiting
//! for this message"), and what happens when the inbox cannot take a message right now.
//!
//! Every message takes the one submit path, [`submit_one`], with the client's own identity (so the
//! self chat is recognised) and the sender's other address form ([`identity::known_of`], so a
//! person is recognised by number or LID): live ones from the hook, recovered ones from a
//! bounded queue drained by [`drain_recovered`]. A message the inbox refused (busy, a store error)
//! is never left for the next reconnect, which on a stable link may be days away: the hook retries
//! for [`HOOK_PATIENCE`], then withholds the acknowledgement and forces a reconnect after
//! [`REDRIVE_AFTER`], so the server redelivers it within seconds.
//!
//! What a message costs the disk: the inbox write of an accepted message is its only fsync on the
//! inbound path, and it also makes durable everything the WhatsApp library committed before it
//! (its Signal state is deferred and its pending-message row held in memory: see
//! [`super::storage`]); a message the policy drops causes no fsync and leaves no plaintext in the
//! file. The library acks (or sends the delivery receipt) after this hook returns, so never
//! before the inbox fsync; it writes the message's own ratchet advance 25 ms after the ack, as it
//! does with any backend (a lost receive advance re-derives forward).

use super::adapter::{self, Classified, Known, Own};
use super::{Shared, identity, own_of};
use crate::intake::{IntakeError, Submitted};
use crate::retry::{self, Backoff};
use crate::vocab::ChannelKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use whatsapp_rust::prelude::*;
use whatsapp_rust::types::events::InboundMessage;
use whatsapp_rust::{InboundDurabilityHook, Jid, anyhow, async_trait};

/// Recovered messages waiting for the inbox. The phone answers a placeholder request with one
/// message at a time; 64 covers a burst after a long outage many times over. Beyond it a message
/// is counted and logged (the phone still has it; WhatsApp shows it there).
pub const MAX_RECOVERED: usize = 64;
/// How long the hook keeps offering a refused message to the inbox before it withholds the
/// acknowledgement: a busy inbox drains in seconds, and the client's receive pipeline waits
/// meanwhile (backpressure, as whatsmeow's synchronous ack does).
pub const HOOK_PATIENCE: Duration = Duration::from_secs(10);
/// After the hook gave up on a message: the pause before the forced reconnect that makes the
/// server deliver it again (time for the inbox to drain; short enough to be "within seconds").
pub const REDRIVE_AFTER: Duration = Duration::from_secs(5);

/// The queue of recovered messages, and whether a redrive reconnect is already on its way.
pub(super) struct Inflow {
    tx: mpsc::Sender<InboundMessage>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<InboundMessage>>>,
    redrive_pending: AtomicBool,
}

impl Inflow {
    pub(super) fn new() -> Inflow {
        let (tx, rx) = mpsc::channel(MAX_RECOVERED);
        Inflow {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            redrive_pending: AtomicBool::new(false),
        }
    }

    /// A redrive reconnect is on its way.
    #[cfg(test)]
    pub(super) fn redrive_pending(&self) -> bool {
        self.redrive_pending.load(Ordering::Acquire)
    }
}

/// From the client's event handler (never blocks): queues a message recovered from the phone.
pub(super) fn queue_recovered(sh: &Arc<Shared>, m: InboundMessage) {
    if sh.inflow.tx.try_send(m).is_err() {
        crate::metrics::Metrics::inc(&sh.ctx.metrics.malformed[ChannelKind::WhatsApp]);
        tracing::warn!(
            "WhatsApp: too many recovered messages waiting; one was not taken (it stays on the phone)"
        );
    }
}

/// Submits recovered messages for as long as the channel runs, each until the inbox took it,
/// with the client current at the time (the driver builds one per connection).
pub(super) async fn drain_recovered(
    sh: Arc<Shared>,
    clients: tokio::sync::watch::Receiver<Arc<Client>>,
) {
    let rx = sh
        .inflow
        .rx
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut rx) = rx else { return };
    let mut backoff = Backoff::new(retry::INTAKE, 0x7ec0);
    while let Some(m) = rx.recv().await {
        loop {
            let client = clients.borrow().clone();
            match submit_one(&sh, Some(&client), &m).await {
                Ok(_) => break,
                Err(IntakeError::ShuttingDown) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "WhatsApp: could not store a recovered message yet; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        backoff.reset();
    }
}

/// Submits one message; `Ok(true)` when it became new and durable (worth a read receipt).
pub(super) async fn submit_one(
    sh: &Arc<Shared>,
    client: Option<&Arc<Client>>,
    m: &InboundMessage,
) -> Result<bool, IntakeError> {
    let own = client.map(|c| own_of(c)).unwrap_or_default();
    let known = match client {
        Some(c) => identity::known_of(sh, c, m).await,
        None => Known::default(),
    };
    submit_as(sh, &own, &known, m).await
}

/// [`submit_one`] with the identity already known.
pub(super) async fn submit_as(
    sh: &Arc<Shared>,
    own: &Own,
    known: &Known,
    m: &InboundMessage,
) -> Result<bool, IntakeError> {
    let verdict = {
        let mut sent = sh.sent();
        adapter::classify(
            &m.message,
            &m.info,
            own,
            &sh.rules(),
            &mut sent,
            known,
            Instant::now(),
        )
    };
    match verdict {
        Classified::Skip(why) => {
            if let Some(reason) = why.drop_reason() {
                sh.ctx.metrics.dropped(ChannelKind::WhatsApp, reason);
            }
            tracing::debug!(reason = ?why, "WhatsApp message not submitted");
            Ok(false)
        }
        Classified::Submit(inbound) => {
            let r = sh.ctx.intake.submit(inbound).await?;
            Ok(r == Submitted::Accepted)
        }
    }
}

/// Offers `m` to the inbox until it takes it or [`HOOK_PATIENCE`] runs out.
async fn submit_patiently(
    sh: &Arc<Shared>,
    client: &Arc<Client>,
    m: &InboundMessage,
) -> Result<bool, IntakeError> {
    let give_up = Instant::now() + HOOK_PATIENCE;
    let mut backoff = Backoff::new(retry::INTAKE, 0x400c);
    loop {
        match submit_one(sh, Some(client), m).await {
            Err(e @ (IntakeError::Busy | IntakeError::Store(_))) => {
                let wait = backoff.next_delay();
                if Instant::now() + wait > give_up {
                    return Err(e);
                }
                tracing::debug!(error = %e, "WhatsApp: the inbox cannot take a message yet; offering it again");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// After the hook withheld an acknowledgement: one reconnect, [`REDRIVE_AFTER`] from now, so the
/// server delivers the message again (at most one on its way at a time).
fn redrive(sh: &Arc<Shared>, client: &Arc<Client>) {
    if sh.inflow.redrive_pending.swap(true, Ordering::AcqRel) {
        return;
    }
    let sh = sh.clone();
    let client = client.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REDRIVE_AFTER).await;
        sh.inflow.redrive_pending.store(false, Ordering::Release);
        tracing::info!(
            "WhatsApp: reconnecting so the server delivers a message the inbox could not take"
        );
        client.reconnect_immediately().await;
    });
}

/// The client's inbound durability hook: the ack waits for our durable inbox write.
pub(super) struct Hook(pub(super) Arc<Shared>);

#[async_trait]
impl InboundDurabilityHook for Hook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> Result<(), anyhow::Error> {
        let mut receipts: Vec<(Jid, Option<Jid>, String)> = Vec::new();
        for m in batch {
            match submit_patiently(&self.0, &client, m).await {
                // No read receipt in the self chat: the owner's own messages (as OpenClaw).
                Ok(true) if m.info.source.is_from_me => {}
                Ok(true) => {
                    let src = &m.info.source;
                    let sender = src.is_group.then(|| src.sender.clone());
                    receipts.push((src.chat.clone(), sender, m.info.id.clone()));
                }
                Ok(false) => {}
                Err(e) => {
                    // Not acked: the server keeps it; a reconnect soon makes it deliver it again
                    // (the core dedupes by id).
                    tracing::warn!(error = %e, "could not store a WhatsApp message; it will be delivered again shortly");
                    if !matches!(e, IntakeError::ShuttingDown) {
                        redrive(&self.0, &client);
                    }
                    return Err(anyhow::anyhow!("inbox write failed: {e}"));
                }
            }
        }
        if self.0.cfg.read_receipts && !receipts.is_empty() {
            // After the hook returns (never inside it: the sender's lock is held here).
            tokio::spawn(async move {
                for (chat, sender, id) in receipts {
                    if let Err(e) = client
                        .mark_as_read(&chat, sender.as_ref(), &[id.as_str()])
                        .await
                    {
                        tracing::debug!(error = %e, "read receipt not sent");
                    }
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{shared, test_client};
    use super::*;
    use crate::intake::IntakeError;
    use whatsapp_rust::waproto::whatsapp as wa;

    fn inbound(id: &str, text: &str) -> InboundMessage {
        let info = whatsapp_rust::wacore::types::message::MessageInfo {
            source: whatsapp_rust::wacore::types::message::MessageSource {
                chat: "491701111111@s.whatsapp.net".parse().unwrap(),
                sender: "491701111111:2@s.whatsapp.net".parse().unwrap(),
                ..Default::default()
            },
            id: id.into(),
            ..Default::default()
        };
        InboundMessage::builder()
            .message(Arc::new(wa::Message {
                conversation: Some(text.into()),
                ..Default::default()
            }))
            .info(Arc::new(info))
            .build()
    }

    #[tokio::test]
    async fn the_hook_returns_only_after_the_inbox_took_the_message() {
        let (sh, mut subs, _prx, _board) = shared(false);
        let client = test_client(&sh).await;
        let hook = Hook(sh.clone());
        let batch = [inbound("A1", "hello"), inbound("A2", "again")];
        let call = hook.on_messages(client.clone(), &batch);
        tokio::pin!(call);
        // The hook (and so the client's ack) waits for the durable submit of each message.
        let first = tokio::select! {
            _ = &mut call => panic!("hook returned before the inbox answered"),
            s = subs.recv() => s.unwrap(),
        };
        assert_eq!(first.msg.id, "A1");
        assert_eq!(first.msg.sender, "+491701111111");
        first.reply.send(Ok(Submitted::Accepted)).unwrap();
        let second = tokio::select! {
            _ = &mut call => panic!("hook returned before the second message was stored"),
            s = subs.recv() => s.unwrap(),
        };
        second.reply.send(Ok(Submitted::Duplicate)).unwrap();
        call.await.unwrap();

        // A refused message is offered again (a busy inbox drains in seconds): taken the
        // second time, the hook succeeds and nothing is redelivered.
        let batch = [inbound("B1", "x")];
        let call = hook.on_messages(client.clone(), &batch);
        tokio::pin!(call);
        let s = tokio::select! {
            _ = &mut call => panic!("returned early"),
            s = subs.recv() => s.unwrap(),
        };
        s.reply
            .send(Err(IntakeError::Store("disk full".into())))
            .unwrap();
        let again = tokio::select! {
            _ = &mut call => panic!("gave up after one refusal"),
            s = subs.recv() => s.unwrap(),
        };
        assert_eq!(again.msg.id, "B1");
        again.reply.send(Ok(Submitted::Accepted)).unwrap();
        call.await.unwrap();
        assert!(!sh.inflow_redrive_pending());
    }

    /// An inbox that keeps refusing: after its patience the hook fails (the client does not ack)
    /// and a reconnect is on its way, so the server delivers the message again within seconds
    /// instead of at the next reconnect, days later on a stable link.
    #[tokio::test(start_paused = true)]
    async fn a_message_the_inbox_keeps_refusing_is_redriven_within_seconds() {
        let (sh, mut subs, _prx, _board) = shared(false);
        let client = test_client(&sh).await;
        let hook = Hook(sh.clone());
        let batch = [inbound("C1", "x")];
        let t0 = tokio::time::Instant::now();
        let call = hook.on_messages(client, &batch);
        tokio::pin!(call);
        let mut offers = 0;
        let r = loop {
            tokio::select! {
                r = &mut call => break r,
                s = subs.recv() => {
                    offers += 1;
                    s.unwrap().reply.send(Err(IntakeError::Busy)).unwrap();
                }
            }
        };
        assert!(r.is_err(), "not acknowledged");
        assert!(offers > 2, "offered again before giving up ({offers})");
        assert!(t0.elapsed() <= HOOK_PATIENCE);
        assert!(sh.inflow_redrive_pending(), "a reconnect is on its way");
    }

    /// A message recovered from the phone is submitted through the same path, and a store error
    /// does not lose it: it is offered until the inbox takes it.
    #[tokio::test(start_paused = true)]
    async fn a_recovered_message_is_retried_until_the_inbox_takes_it() {
        let (sh, mut subs, _prx, _board) = shared(false);
        let client = test_client(&sh).await;
        let (_current, clients) = tokio::sync::watch::channel(client);
        let drain = tokio::spawn(drain_recovered(sh.clone(), clients));
        queue_recovered(&sh, inbound("R1", "while you were away"));
        let s = subs.recv().await.unwrap();
        assert_eq!(s.msg.id, "R1");
        s.reply
            .send(Err(IntakeError::Store("disk full".into())))
            .unwrap();
        let s = subs.recv().await.unwrap();
        assert_eq!(s.msg.id, "R1", "offered again");
        s.reply.send(Ok(Submitted::Accepted)).unwrap();
        drain.abort();
    }
}
