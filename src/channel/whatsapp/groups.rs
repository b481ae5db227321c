//! The groups the linked account is in, for `clawbox groups list`: asked of WhatsApp when the
//! owner asks (the `w:g2` `<participating>` IQ through the client), each with its JID — what
//! `[channels.whatsapp.groups] allow` takes — and its subject. Nothing is kept.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use whatsapp_rust::Client;

/// The server's answer to the groups query must come within this.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(20);
/// Groups listed at most (the rest counted): the answer is one control-socket line
/// (`control::MAX_LINE`, 16 KiB), and an owner copies an id from a screenful anyway.
pub const GROUPS_LISTED_MAX: usize = 64;
/// Characters of a subject shown (WhatsApp allows 100).
pub const SUBJECT_MAX: usize = 100;
/// The answer while the channel is not linked (or not running).
pub const NOT_LINKED: &str =
    "WhatsApp is not linked (or not connected): run `clawbox pair whatsapp` first";

/// One group: its JID (`<id>@g.us`) and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub jid: String,
    pub subject: String,
}

/// The groups, sorted by subject, at most [`GROUPS_LISTED_MAX`]; `more`: how many were left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    pub groups: Vec<Group>,
    pub more: usize,
}

/// Sorts and bounds what the server listed.
pub fn listing(mut all: Vec<Group>) -> Listing {
    all.sort_by(|a, b| (a.subject.to_lowercase(), &a.jid).cmp(&(b.subject.to_lowercase(), &b.jid)));
    let more = all.len().saturating_sub(GROUPS_LISTED_MAX);
    all.truncate(GROUPS_LISTED_MAX);
    for g in &mut all {
        if g.subject.chars().count() > SUBJECT_MAX {
            g.subject = g.subject.chars().take(SUBJECT_MAX).collect();
        }
    }
    Listing { groups: all, more }
}

/// Answers [`super::link::Ask::Groups`] from its own task, so the channel's loop is never held up.
pub(super) fn answer(client: &Arc<Client>, reply: oneshot::Sender<Result<Listing, String>>) {
    let client = client.clone();
    tokio::spawn(async move {
        let r = if !client.is_logged_in() {
            Err(NOT_LINKED.to_string())
        } else {
            match tokio::time::timeout(LIST_TIMEOUT, client.groups().get_participating()).await {
                Ok(Ok(map)) => Ok(listing(
                    map.into_iter()
                        .map(|(jid, meta)| Group {
                            jid: jid.to_string(),
                            subject: meta.subject,
                        })
                        .collect(),
                )),
                Ok(Err(e)) => Err(format!("WhatsApp did not list the groups: {e}")),
                Err(_) => Err("WhatsApp did not list the groups in time; try again".into()),
            }
        };
        let _ = reply.send(r);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_sorted_bounded_and_cut() {
        let mut all: Vec<Group> = (0..GROUPS_LISTED_MAX + 3)
            .map(|i| Group {
                jid: format!("1203630000000{i:05}@g.us"),
                subject: format!("g{i:03}"),
            })
            .collect();
        all[0].subject = "A".repeat(SUBJECT_MAX + 50);
        all.reverse();
        let l = listing(all);
        assert_eq!(l.groups.len(), GROUPS_LISTED_MAX);
        assert_eq!(l.more, 3);
        assert_eq!(l.groups[0].subject.chars().count(), SUBJECT_MAX, "cut");
        assert_eq!(l.groups[1].subject, "g001", "sorted by subject");
    }
}
