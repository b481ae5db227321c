//! The server's side of group metadata and membership: the `w:g2` IQs the client sends — one
//! group's metadata (`<query request="interactive"/>`, which the client asks before its first
//! send to a group) and the groups the account is in (`<participating>`) — answered with the
//! `<group>` node whatsapp-rust's `GroupInfoResponse::try_from_node_ref` and whatsmeow's
//! `parseGroupNode` read; and members added or removed (`POST /groups/<jid>/members`), told to
//! the client as the server does: `<notification type="w:gp2">` with `<add>`/`<remove>` of
//! `<participant jid/>` (whatsmeow `parseGroupChange`, whatsapp-rust
//! `handlers/notification/groups.rs`).

use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use super::groups::{Group, GroupAddressing};
use super::nodes::{attr, child, iq_error};
use super::phone;
use super::server::*;

/// `POST /groups/<jid>/members`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct MemberChange {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl World {
    /// `xmlns="w:g2"`: a group's metadata or the groups the account is in. Unknown group: 404
    /// `item-not-found` (whatsmeow `ErrGroupNotFound`); anything else: 501.
    pub(super) fn on_groups_iq(&mut self, iq: &Node, id: &str) -> Node {
        let to = attr(iq, "to").unwrap_or_default();
        if child(iq, "participating").is_some() {
            let groups: Vec<Node> = self
                .groups
                .list
                .values()
                .map(|g| self.group_node(g))
                .collect();
            return result_from(
                &to,
                id,
                vec![NodeBuilder::new("groups").children(groups).build()],
            );
        }
        if child(iq, "query").is_some() {
            let user = to.split('@').next().unwrap_or("");
            return match self.groups.list.get(user) {
                Some(g) => result_from(&to, id, vec![self.group_node(g)]),
                None => iq_error(id, 404, "item-not-found"),
            };
        }
        iq_error(id, 501, "feature-not-implemented")
    }

    /// `<group id subject creation creator s_t s_o addressing_mode size>` with a
    /// `<participant jid [phone_number] [type]>` per member, the account included.
    fn group_node(&self, g: &Group) -> Node {
        let mut participants: Vec<Node> = Vec::new();
        for (i, user) in g.members.iter().enumerate() {
            let mut p =
                NodeBuilder::new("participant").attr("jid", Self::member_jid(user, g.addressing));
            if g.addressing == GroupAddressing::Lid {
                p = p.attr("phone_number", Self::member_jid(user, GroupAddressing::Pn));
            }
            if i == 0 {
                p = p.attr("type", "superadmin");
            }
            participants.push(p.build());
        }
        let mut own =
            NodeBuilder::new("participant").attr("jid", self.own_member_jid(g.addressing));
        if g.addressing == GroupAddressing::Lid {
            own = own.attr("phone_number", self.own_member_jid(GroupAddressing::Pn));
        }
        participants.push(own.build());
        let creator = g
            .members
            .first()
            .map(|u| Self::member_jid(u, g.addressing))
            .unwrap_or_default();
        NodeBuilder::new("group")
            .attr("id", g.user.clone())
            .attr("subject", g.subject.clone())
            .attr("s_t", g.creation.to_string())
            .attr("s_o", creator.clone())
            .attr("creation", g.creation.to_string())
            .attr("creator", creator)
            .attr("addressing_mode", g.addressing.as_str())
            .attr("size", participants.len().to_string())
            .children(participants)
            .build()
    }

    /// Members join or leave group `jid` (the creator's doing); the client is told.
    pub fn group_members(
        &mut self,
        jid: &str,
        change: &MemberChange,
        now: u64,
    ) -> Result<(), String> {
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for m in &change.add {
            let user = digits(m).ok_or_else(|| format!("group: {m} is not an E.164 number"))?;
            self.contact_mut(&user).ok_or("group: too many contacts")?;
            add.push(user);
        }
        for m in &change.remove {
            remove.push(digits(m).ok_or_else(|| format!("group: {m} is not an E.164 number"))?);
        }
        let group = self.group_mut(jid)?;
        add.retain(|u| !group.members.contains(u));
        remove.retain(|u| group.members.contains(u));
        if group.members.len() + add.len() > super::groups::GROUP_MEMBERS_CAP {
            return Err("group: too many members".into());
        }
        group.members.extend(add.iter().cloned());
        group.members.retain(|u| !remove.contains(u));
        for u in &remove {
            group.distributed.remove(u);
        }
        let addressing = group.addressing;
        let group_jid = group.jid();
        let actor = group
            .members
            .first()
            .map(|u| Self::member_jid(u, addressing))
            .unwrap_or_default();
        let participant = |user: &String| {
            let mut p =
                NodeBuilder::new("participant").attr("jid", Self::member_jid(user, addressing));
            if addressing == GroupAddressing::Lid {
                p = p.attr("phone_number", Self::member_jid(user, GroupAddressing::Pn));
            }
            p.build()
        };
        let mut actions = Vec::new();
        if !add.is_empty() {
            actions.push(
                NodeBuilder::new("add")
                    .children(add.iter().map(participant))
                    .build(),
            );
        }
        if !remove.is_empty() {
            actions.push(
                NodeBuilder::new("remove")
                    .children(remove.iter().map(participant))
                    .build(),
            );
        }
        for action in actions {
            let node = NodeBuilder::new("notification")
                .attr("from", group_jid.clone())
                .attr("type", "w:gp2")
                .attr("id", phone::random_hex(8))
                .attr("t", now.to_string())
                .attr("participant", actor.clone())
                .attr("addressing_mode", addressing.as_str())
                .children([action])
                .build();
            self.queue_or_send(node);
        }
        Ok(())
    }
}

impl World {
    /// `GET /groups`: `[{"jid","subject","members":[+E.164…],"addressing"}]`.
    pub fn groups_json(&self) -> serde_json::Value {
        self.groups
            .list
            .values()
            .map(|g| {
                serde_json::json!({
                    "jid": g.jid(),
                    "subject": g.subject,
                    "members": g.members.iter().map(|m| format!("+{m}")).collect::<Vec<_>>(),
                    "addressing": g.addressing.as_str(),
                })
            })
            .collect()
    }
}

/// An IQ result `from` the entity asked (a group, or `g.us`).
fn result_from(to: &str, id: &str, content: Vec<Node>) -> Node {
    let from = if to.is_empty() { "g.us" } else { to };
    NodeBuilder::new("iq")
        .attr("from", from.to_string())
        .attr("type", "result")
        .attr("id", id.to_string())
        .children(content)
        .build()
}
