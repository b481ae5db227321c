//! The WhatsApp channel's task in the service ([`serve`]): runs the channel and, whenever it needs
//! the owner (pairing paused, logged out, replaced), waits for the owner's next request
//! ([`super::link`]) instead of ending, so `clawbox pair whatsapp` and the pairing page link the
//! running service without a restart. (The CLI's own runs when no service runs are
//! [`crate::control::direct`].) Never logs the pairing payload or the code.

use super::link::{Ask, Asks, Inbox, PairReply, unlinked, wipe, words};
use super::storage::KvBackend;
use super::{Options, Outcome, run_with};
use crate::channel::{ChannelContext, ChannelError};
use crate::config::WhatsAppConfig;
use crate::pairing::{Pairing, PairingPublisher};
use crate::store::kv::KvTable;
use std::sync::Arc;

/// The channel task in the service: runs the channel, and whenever it needs the owner, waits for
/// the owner's request (link again, unlink) instead of ending. Returns at shutdown.
pub async fn serve(
    cfg: Arc<WhatsAppConfig>,
    ctx: ChannelContext,
    pairing: PairingPublisher,
    asks: Asks,
) -> Result<(), ChannelError> {
    let mut inbox = Inbox::open(&asks).await;
    let mut opts = Options::default();
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let outcome = run_with(
            cfg.clone(),
            ctx.clone(),
            pairing.clone(),
            opts.clone(),
            &mut inbox,
        )
        .await?;
        let why = match outcome {
            Outcome::NeedsOwner(why) => why,
            Outcome::Shutdown | Outcome::Linked(_) => return Ok(()),
        };
        opts.phone = None;
        // Every surface shows that nothing is on offer any more, and why.
        if !matches!(
            pairing.current(),
            Pairing::Paused | Pairing::PairAgain | Pairing::Stopped { .. }
        ) {
            pairing.publish(Pairing::Stopped { why });
        }
        loop {
            let ask = tokio::select! {
                a = inbox.next() => a,
                _ = shutdown.wait() => return Ok(()),
            };
            match ask {
                Ask::Pair { phone, reply } => {
                    if let Some(r) = reply {
                        let _ = r.send(PairReply::Started);
                    }
                    opts.phone = phone;
                    break;
                }
                Ask::Cancel => {}
                Ask::Groups { reply } => {
                    let _ = reply.send(Err(super::groups::NOT_LINKED.into()));
                }
                Ask::Unpair { reply } => {
                    let backend = KvBackend::new(ctx.store.kv(KvTable::WhatsApp));
                    let paired = backend.is_paired().await;
                    let r = wipe(&backend).await.map(|()| words(paired, false));
                    if r.is_ok() {
                        unlinked(&ctx, &pairing);
                    }
                    let _ = reply.send(r);
                }
            }
        }
    }
}
