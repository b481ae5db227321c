//! The deaf-link probe: a link that still carries bytes but answers nothing is found by asking
//! (a keepalive IQ every [`PROBE_EVERY`]) and ended with a reconnect ([`deaf_link_probe`]). Its
//! numbers and their worst case ([`crate::retry::DEAF_LINK_NOTICED`]) live in [`crate::retry`].

use super::LINK_WITHIN;
use crate::retry::{PROBE_DEADLINE, PROBE_EVERY, PROBE_FAILURES, PROBE_SLACK};
use std::sync::Arc;
use whatsapp_rust::prelude::*;

/// A link that still carries bytes but answers nothing — e.g. the Noise read counter out of step
/// after a frame that failed to decrypt: every later frame fails too, yet the bytes keep the
/// library's and the transport's dead-link timers satisfied — is found by asking: a keepalive IQ
/// every [`PROBE_EVERY`] while logged in; [`PROBE_FAILURES`] unanswered in a row force a
/// reconnect (the server redelivers whatever was not acknowledged). Worst case to notice:
/// `PROBE_EVERY + PROBE_FAILURES × (PROBE_DEADLINE + PROBE_SLACK)` = 39 s
/// ([`crate::retry::DEAF_LINK_NOTICED`]). Only an error that came back at once (not connected)
/// paces the next probe; a probe that timed out already waited.
pub(super) async fn deaf_link_probe(client: Arc<Client>, row: crate::status::Reporter) {
    use whatsapp_rust::wacore::iq::keepalive::KeepaliveSpec;
    use whatsapp_rust::wacore::iq::spec::IqSpec;
    let mut failures = 0u32;
    loop {
        // After an unanswered probe the next one goes at once: a deaf link is found sooner.
        if failures == 0 {
            tokio::time::sleep(PROBE_EVERY).await;
        }
        if !client.is_logged_in() {
            failures = 0;
            continue;
        }
        let iq = KeepaliveSpec::with_timeout(PROBE_DEADLINE).build_iq();
        let asked = tokio::time::Instant::now();
        match tokio::time::timeout(PROBE_DEADLINE + PROBE_SLACK, client.send_iq(iq)).await {
            Ok(Ok(_)) => {
                failures = 0;
                row.beat_within(LINK_WITHIN);
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::debug!(error = %e, failures, "WhatsApp probe unanswered");
                // An error that came back at once (not a timeout): pace the next probe so that
                // it, too, has had the deadline to be answered.
                tokio::time::sleep(PROBE_DEADLINE.saturating_sub(asked.elapsed())).await;
            }
            Err(_) => {
                failures += 1;
                tracing::debug!(failures, "WhatsApp probe unanswered");
            }
        }
        if failures >= PROBE_FAILURES {
            tracing::warn!(
                "WhatsApp link answers nothing ({PROBE_FAILURES} probes unanswered although \
                 connected): reconnecting"
            );
            client.reconnect_immediately().await;
            return;
        }
    }
}
