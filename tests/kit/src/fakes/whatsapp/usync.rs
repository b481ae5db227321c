//! The fake server's user sync (`xmlns="usync"`): contact existence, device lists and LIDs
//! (both directions, see `lid`), and the count of lookups by kind.

use super::lid::LidAnswer;
use super::nodes::{self, attr, child, iq_error, iq_result};
use super::server::*;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

impl World {
    pub(super) fn on_usync(&mut self, iq: &Node, id: &str) -> Node {
        let Some(usync) = child(iq, "usync") else {
            return iq_error(id, 400, "bad-request");
        };
        let wants_lid = child(usync, "query").is_some_and(|q| child(q, "lid").is_some());
        let wants_devices = child(usync, "query").is_some_and(|q| child(q, "devices").is_some());
        let wants_contact = child(usync, "query").is_some_and(|q| child(q, "contact").is_some());
        let mut users = Vec::new();
        let mut asked = Vec::new();
        for user in child(usync, "list")
            .map(|l| nodes::children(l, "user").collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let jid = attr(user, "jid").or_else(|| {
                child(user, "contact")
                    .and_then(nodes::bytes)
                    .and_then(|b| digits(&String::from_utf8_lossy(b)))
                    .map(|d| format!("{d}@s.whatsapp.net"))
            });
            let Some(jid) = jid else { continue };
            asked.push(jid.clone());
            let user_part = jid
                .split('@')
                .next()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("");
            let mut kids = Vec::new();
            if wants_contact {
                // Every number is on the fake WhatsApp.
                let mut c = NodeBuilder::new("contact").attr("type", "in");
                if let Some(b) = child(user, "contact").and_then(nodes::bytes) {
                    c = c.bytes(b.to_vec());
                }
                kids.push(c.build());
            }
            if wants_devices {
                // Every device of the account, linked ones with their key index (`devices.rs`).
                kids.push(self.devices_node(user_part, now_secs()));
            }
            let mut out_user = NodeBuilder::new("user").attr("jid", jid.clone());
            if wants_lid {
                // The account's own LID, a contact's LID, or a LID's number (see `lid`).
                match self.usync_lid_of(&jid) {
                    LidAnswer::Lid(lid) => {
                        kids.push(NodeBuilder::new("lid").attr("val", lid).build())
                    }
                    LidAnswer::PnJid(pn) => out_user = out_user.attr("pn_jid", pn),
                    LidAnswer::None => {}
                }
            }
            users.push(out_user.children(kids).build());
        }
        self.usync_counts.record(wants_lid, wants_devices, &asked);
        let mut out = NodeBuilder::new("usync");
        for key in ["sid", "mode", "context"] {
            if let Some(v) = attr(usync, key) {
                out = out.attr(key, v);
            }
        }
        let out = out
            .children([NodeBuilder::new("list").children(users).build()])
            .build();
        iq_result(id, vec![out])
    }
}
