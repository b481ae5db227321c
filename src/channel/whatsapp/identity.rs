//! The shell of [`super::lid`]: asks WhatsApp (usync, through the library's `is_on_whatsapp`,
//! which persists each LID↔PN pair it learns in our store) and reads the library's mapping. Two
//! moments: after each login, `allow_from` is resolved to the other address form
//! ([`spawn_resolve`]; what and when is [`super::lid::Resolver`]'s call); for each message, the
//! sender's other form is read from the mapping (and a pair the message carries is made durable),
//! and a LID nobody knows is looked up once within [`super::lid::Lookups`]' budget before the
//! policy judges it ([`known_of`]).
//!
//! Never decides who may talk to the assistant; never logs a number or a LID above debug.

use super::Shared;
use super::adapter::Known;
use super::lid::{Entry, LOOKUP_TIMEOUT, RESOLVE_BATCH};
use super::storage::KvBackend;
use crate::store::kv::KvTable;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use whatsapp_rust::Jid;
use whatsapp_rust::prelude::*;
use whatsapp_rust::types::events::InboundMessage;

/// How long one batch of `allow_from` lookups may take before it is given up (retried at a later
/// login, see [`super::lid::RETRY_UNRESOLVED_AFTER`]); the client's own IQ timeout is 75 s.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The mapping's entry for `jid` (either form), if the library knows one.
async fn mapped(client: &Client, jid: &Jid) -> Option<(String, String)> {
    match client.get_lid_pn_entry(jid).await {
        Ok(Some(e)) => Some((e.phone_number.to_string(), e.lid.to_string())),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(error = %e, "WhatsApp: LID mapping not readable");
            None
        }
    }
}

/// The sender's other address form, as far as WhatsApp lets us know it: nothing to do for a
/// message that carries both (`sender_pn`/`sender_lid`) or for the self chat and groups; the
/// library's mapping otherwise; for a LID with no mapping, one usync lookup if the budget allows
/// (bounded by [`LOOKUP_TIMEOUT`]).
pub(super) async fn known_of(sh: &Shared, client: &Client, m: &InboundMessage) -> Known {
    let src = &m.info.source;
    if src.is_from_me || src.is_group {
        return Known::default();
    }
    if let Some(alt) = &src.sender_alt {
        remember(client, &src.sender, alt).await;
        return Known::default();
    }
    let sender = src.sender.to_non_ad();
    if sender.is_pn() {
        return Known {
            pn: None,
            lid: mapped(client, &sender).await.map(|(_, lid)| lid),
        };
    }
    if !sender.is_lid() {
        return Known::default();
    }
    if let Some((pn, _)) = mapped(client, &sender).await {
        return Known {
            pn: Some(pn),
            lid: None,
        };
    }
    // Before a lookup of its own: `allow_from` resolved on this link, in one batched query (on
    // the resolver's schedule, so at most once per `RETRY_UNRESOLVED_AFTER`). The link reports
    // itself connected, and resolves at that moment, some seconds after messages start to flow:
    // allowed people writing from the LID alone in those seconds outnumbered the per-LID budget
    // and were dropped as strangers.
    // A stranger's flood costs one check here, not the allowlist's mappings and a store read.
    if !sh.resolver().recent(Instant::now()) {
        let backend = KvBackend::new(sh.ctx.store.kv(KvTable::WhatsApp));
        let resolving = resolve_allow_from(sh, client, &backend);
        let _ = tokio::time::timeout(LOOKUP_TIMEOUT, resolving).await;
        if let Some((pn, _)) = mapped(client, &sender).await {
            return Known {
                pn: Some(pn),
                lid: None,
            };
        }
    }
    if !sh.lookups().admit(&sender.user, Instant::now()) {
        tracing::debug!("WhatsApp: a LID with no known number; no lookup left for it now");
        return Known::default();
    }
    let contacts = client.contacts();
    let lookup = contacts.is_on_whatsapp(std::slice::from_ref(&sender));
    match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(_)) => sh.lookups().answered(&sender.user),
        // Judged without the number; the LID may be looked up again for its next message.
        Ok(Err(e)) => tracing::info!(error = %e, "WhatsApp: a LID lookup failed"),
        Err(_) => tracing::info!("WhatsApp: a LID lookup timed out"),
    }
    Known {
        pn: mapped(client, &sender).await.map(|(pn, _)| pn),
        lid: None,
    }
}

/// Makes the pair a message carries (`sender_pn`/`sender_lid`) durable. The library learns it
/// on its own, but keeps what it learns from offline deliveries in memory only: after a restart
/// the mapping would be unknown again, and a message from the LID alone then finds the Signal
/// session under the number (the library keys sessions by LID only when it knows the mapping).
/// A pair already stored costs nothing.
async fn remember(client: &Client, sender: &Jid, alt: &Jid) {
    use whatsapp_rust::lid_pn_cache::LearningSource;
    let (lid, pn, source) = if sender.is_lid() && alt.is_pn() {
        (sender, alt, LearningSource::PeerLidMessage)
    } else if sender.is_pn() && alt.is_lid() {
        (alt, sender, LearningSource::PeerPnMessage)
    } else {
        return;
    };
    if let Err(e) = client.add_lid_pn_mapping(&lid.user, &pn.user, source).await {
        tracing::debug!(error = %e, "WhatsApp: a LID mapping was not saved");
    }
}

/// After a login: resolves `allow_from` to the other address form in the background, if
/// [`super::lid::Resolver`] says it is time.
pub(super) fn spawn_resolve(sh: &Arc<Shared>, client: &Arc<Client>, backend: &KvBackend) {
    let (sh, client, backend) = (sh.clone(), client.clone(), backend.clone());
    tokio::spawn(async move { resolve_allow_from(&sh, &client, &backend).await });
}

async fn resolve_allow_from(sh: &Shared, client: &Client, backend: &KvBackend) {
    let entries: Vec<Entry> = sh
        .cfg
        .allow_from
        .iter()
        .filter_map(|e| Entry::parse(e.get_ref()))
        .collect();
    let mut resolved = HashSet::new();
    for e in &entries {
        if let Ok(jid) = e.jid().parse::<Jid>()
            && mapped(client, &jid).await.is_some()
        {
            resolved.insert(e.clone());
        }
    }
    let now_ms = crate::store::now_ms();
    let since_full = backend
        .lid_refreshed_at()
        .await
        .map(|t| Duration::from_millis(now_ms.saturating_sub(t)));
    let plan = sh.resolver().plan(
        &entries,
        |e| resolved.contains(e),
        since_full,
        Instant::now(),
    );
    if plan.entries.is_empty() {
        return;
    }
    let mut complete = true;
    for batch in plan.entries.chunks(RESOLVE_BATCH) {
        let jids: Vec<Jid> = batch.iter().filter_map(|e| e.jid().parse().ok()).collect();
        let contacts = client.contacts();
        match tokio::time::timeout(RESOLVE_TIMEOUT, contacts.is_on_whatsapp(&jids)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                complete = false;
                tracing::info!(error = %e, "WhatsApp: could not resolve allow_from to LIDs yet");
            }
            Err(_) => {
                complete = false;
                tracing::info!("WhatsApp: resolving allow_from to LIDs timed out");
            }
        }
    }
    let mut known = 0;
    for e in &plan.entries {
        if let Ok(jid) = e.jid().parse::<Jid>()
            && mapped(client, &jid).await.is_some()
        {
            known += 1;
        }
    }
    tracing::info!(
        asked = plan.entries.len(),
        known,
        full = plan.full,
        "WhatsApp: allow_from resolved to both address forms"
    );
    if plan.full
        && complete
        && let Err(e) = backend.set_lid_refreshed_at(now_ms).await
    {
        tracing::warn!(error = %e, "WhatsApp: could not save when allow_from was resolved");
    }
}
