//! Carrying out the router's [`ChannelCommand`]s on WhatsApp: typing indicators, and sends of one
//! chunk each with an id derived from its key, done once the server acked it ([`SEND_ACK_TIMEOUT`])
//! and classified by what went wrong otherwise (a refusal by [`super::nack`], a local failure by
//! [`classify_send_error`]).

use super::adapter;
use super::nack::{self, Decision};
use super::{Shared, number_of, own_of};
use crate::channel::{ChannelCommand, SendError};
use crate::status::State;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use whatsapp_rust::Jid;
use whatsapp_rust::prelude::*;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::waproto::whatsapp as wa;

/// A sent message counts as delivered to the server when its `<ack>` arrives within this; past it
/// the send is retried (same id: no duplicate).
pub const SEND_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// Sends awaiting the server's ack at once (delivery sends one chunk at a time per channel).
const MAX_PENDING_ACKS: usize = 32;

/// Answers every send still waiting for the server's ack: the channel stopped.
pub(super) fn fail_pending(sh: &Shared) {
    for (_, tx) in sh.acks().drain() {
        let _ = tx.send(Some("channel stopped".into()));
    }
}

/// Carries out one command on its own task, so a send never holds up the connection loop.
pub(super) fn handle_command(sh: &Arc<Shared>, client: &Arc<Client>, cmd: ChannelCommand) {
    match cmd {
        ChannelCommand::Typing { chat, on } => {
            let c = client.clone();
            tokio::spawn(async move {
                let Ok(jid) = chat.parse::<Jid>() else { return };
                let r = if on {
                    c.chatstate().send_composing(&jid).await
                } else {
                    c.chatstate().send_paused(&jid).await
                };
                if let Err(e) = r {
                    tracing::debug!(error = %e, "typing indicator not sent");
                }
            });
        }
        ChannelCommand::React {
            chat,
            target,
            emoji,
        } => {
            let c = client.clone();
            tokio::spawn(async move { react(&c, &chat, target, &emoji).await });
        }
        // A resend carries the same message id: a recipient's devices keep one message per id.
        ChannelCommand::Reconcile { done, .. } => {
            let _ = done.send(crate::channel::Doubt::NotSent);
        }
        ChannelCommand::Send {
            chat,
            text,
            key,
            reply_to,
            arm,
            done,
            ..
        } => {
            let sh = sh.clone();
            let c = client.clone();
            // The first chunk of a reply quotes the message it answers.
            let quote = reply_to.filter(|r| r.quote).map(|r| r.reference);
            tokio::spawn(async move {
                let r = send(&sh, &c, &chat, text, &key, quote.as_deref(), arm).await;
                if let Err(e) = &r {
                    tracing::info!(error = %e, "WhatsApp send failed");
                }
                let _ = done.send(r);
            });
        }
    }
}

/// The acknowledgement reaction (or its removal: `emoji` empty, WhatsApp Web's empty-text
/// reaction) on a received message, as whatsapp-rust 0.7.0 `Client::send_reaction` and
/// `MessageContext::message_key` build it: the key names the chat, the message id, and in a
/// group the author. Best effort: a failure is logged at debug.
async fn react(client: &Arc<Client>, chat: &str, target: crate::channel::ReactTarget, emoji: &str) {
    let Ok(jid) = chat.parse::<Jid>() else { return };
    let own = own_of(client);
    let from_me = own.pn.as_deref() == Some(jid.user.as_str())
        || own.lid.as_deref() == Some(jid.user.as_str());
    let key = wa::MessageKey {
        remote_jid: Some(chat.to_string()),
        from_me: Some(from_me),
        id: Some(target.msg_id),
        participant: whatsapp_rust::wacore_binary::JidExt::is_group(&jid).then_some(target.author),
    };
    if let Err(e) = client.send_reaction(jid, key, emoji).await {
        tracing::debug!(error = %e, "reaction not sent");
    }
}

/// Sends one chunk with the id derived from `key`; Ok once the server acked it.
async fn send(
    sh: &Arc<Shared>,
    client: &Arc<Client>,
    chat: &str,
    text: String,
    key: &str,
    quote: Option<&str>,
    arm: crate::channel::Arm,
) -> Result<(), SendError> {
    if !client.is_logged_in() {
        return Err(SendError::Retry("WhatsApp is not connected".into()));
    }
    let jid: Jid = chat
        .parse()
        .map_err(|_| SendError::Permanent(format!("{chat:?} is not a WhatsApp chat address")))?;
    let own = own_of(client);
    let is_self = (jid.is_pn() && own.pn.as_deref() == Some(jid.user.as_str()))
        || (jid.is_lid() && own.lid.as_deref() == Some(jid.user.as_str()));
    let text = if is_self && !text.starts_with(&sh.cfg.self_prefix) {
        format!("{}{text}", sh.cfg.self_prefix)
    } else {
        text
    };
    let id = adapter::message_id_for(key);
    sh.sent().remember(&id, Instant::now());
    let (tx, rx) = oneshot::channel();
    {
        let mut s = sh.acks();
        if s.len() >= MAX_PENDING_ACKS && !s.contains_key(&id) {
            return Err(SendError::Retry(
                "too many sends awaiting the server".into(),
            ));
        }
        s.insert(id.clone(), tx);
    }
    let msg = wa::Message {
        conversation: Some(text),
        ..Default::default()
    };
    let msg = match quote {
        Some(reference) => super::context_info::quoting(msg, reference),
        None => msg,
    };
    if let Err(e) = arm.arm(0).await {
        sh.acks().remove(&id);
        return Err(e);
    }
    let sent = client
        .send_message_with_options(
            jid.clone(),
            msg,
            SendOptions::default().with_message_id(id.clone()),
        )
        .await;
    if let Err(e) = sent {
        sh.acks().remove(&id);
        return Err(classify_send_error(&e));
    }
    match tokio::time::timeout(SEND_ACK_TIMEOUT, rx).await {
        // A group is reached through its members' devices, not a device of the group JID: the
        // #1298 check is a 1:1 one.
        Ok(Ok(None))
            if !is_self && !jid.is_group() && !reached_a_device(client, &jid, &own).await =>
        {
            refused(sh, client, &jid, &id, nack::UNREACHED).await
        }
        Ok(Ok(None)) => {
            sh.refusals().forget(&id);
            Ok(())
        }
        Ok(Ok(Some(code))) => refused(sh, client, &jid, &id, &code).await,
        Ok(Err(_)) => Err(SendError::Retry("channel restarted".into())),
        Err(_) => {
            sh.acks().remove(&id);
            Err(SendError::Retry("no acknowledgement from WhatsApp".into()))
        }
    }
}

/// Message `id` to `jid` was refused with `code` (or reached nobody): what becomes of the reply.
async fn refused(
    sh: &Arc<Shared>,
    client: &Arc<Client>,
    jid: &Jid,
    id: &str,
    code: &str,
) -> Result<(), SendError> {
    let decision = sh.refusals().on_nack(id, code, Instant::now());
    match decision {
        Decision::Retry { why } => Err(SendError::Retry(why)),
        Decision::RefreshThenRetry { why } => {
            refresh_sessions(client, jid).await;
            Err(SendError::Retry(why))
        }
        Decision::GiveUp { why } => {
            tracing::warn!(code = %code, "{why}; the reply is given up");
            // The owner sees it in `clawbox status` too, until the link's next change of state.
            sh.ctx.reporter.set(
                State::Up,
                format!("linked {} — a reply was given up: {why}", number_of(client)),
            );
            Err(SendError::Permanent(why))
        }
    }
}

/// After the server accepted a message to `jid`: whether the client holds a Signal session with
/// at least one of the recipient's devices, i.e. whether any copy can have been encrypted for
/// them (whatsapp-rust #1298). A failed look-up counts as reached: the check only catches the
/// known defect and never holds a reply back on its own failure.
async fn reached_a_device(client: &Arc<Client>, jid: &Jid, own: &adapter::Own) -> bool {
    let devices = match client
        .signal()
        .get_user_devices(std::slice::from_ref(jid))
        .await
    {
        Ok(d) => d,
        Err(_) => return true,
    };
    // The recipient's devices, in whichever address form the library lists them; not our own.
    let ours = |d: &Jid| {
        own.pn.as_deref() == Some(d.user.as_str()) || own.lid.as_deref() == Some(d.user.as_str())
    };
    for d in devices.iter().filter(|d| !ours(d)) {
        if client.signal().validate_session(d).await.unwrap_or(true) {
            return true;
        }
    }
    false
}

/// After a refusal that says our view of the chat is stale: the Signal sessions with every known
/// device of `jid` are dropped, so the next send fetches the devices' keys again and starts fresh
/// sessions (whatsapp-rust 0.7.0 exposes no public device-list refresh; a device list it lacks is
/// fetched by usync on the send). Failures only cost the refresh: the retry still happens.
async fn refresh_sessions(client: &Arc<Client>, jid: &Jid) {
    let devices = match client
        .signal()
        .get_user_devices(std::slice::from_ref(jid))
        .await
    {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "device list for a refused message not read");
            return;
        }
    };
    match client.signal().delete_sessions(&devices).await {
        Ok(()) => tracing::info!(
            devices = devices.len(),
            "WhatsApp refused a message as stale; the chat's sessions are rebuilt before it is sent again"
        ),
        Err(e) => tracing::debug!(error = %e, "sessions of a refused chat not dropped"),
    }
}

fn classify_send_error(e: &whatsapp_rust::SendError) -> SendError {
    use whatsapp_rust::SendError as E;
    match e {
        E::InvalidRequest(why) => SendError::Permanent(why.clone()),
        E::NotLoggedIn => SendError::Retry("WhatsApp is not connected".into()),
        other => SendError::Retry(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_errors_are_classified() {
        assert!(matches!(
            classify_send_error(&whatsapp_rust::SendError::NotLoggedIn),
            SendError::Retry(_)
        ));
        assert!(matches!(
            classify_send_error(&whatsapp_rust::SendError::InvalidRequest("bad".into())),
            SendError::Permanent(_)
        ));
    }
}
