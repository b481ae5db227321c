//! The fake server's key service: the linked device's prekey uploads, counts and digest, and the
//! key bundles it fetches for the account's own devices and for contacts (`xmlns="encrypt"`).

use super::nodes::{self, attr, child, child_bytes, iq_error, iq_result};
use super::server::*;
use whatsapp_rust::wacore::protocol::ProtocolNode;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::{Jid, Node};

impl World {
    pub(super) fn on_encrypt_iq(&mut self, iq: &Node, id: &str) -> Node {
        if let Some(count) = child(iq, "count") {
            let _ = count;
            let n = self.client_keys.prekeys.len();
            return iq_result(
                id,
                vec![
                    NodeBuilder::new("count")
                        .attr("value", n.to_string())
                        .build(),
                ],
            );
        }
        if child(iq, "digest").is_some() {
            return self.digest(id);
        }
        if let Some(key) = child(iq, "key") {
            let users: Vec<Node> = nodes::children(key, "user")
                .filter_map(|u| attr(u, "jid"))
                .map(|jid| self.bundle_node(&jid))
                .collect();
            return iq_result(id, vec![NodeBuilder::new("list").children(users).build()]);
        }
        if let Some(rotate) = child(iq, "rotate") {
            if let Some(skey) = child(rotate, "skey") {
                self.store_skey(skey);
            }
            return iq_result(id, vec![]);
        }
        if child(iq, "registration").is_some() {
            if child(iq, "list").is_some() {
                self.retry.prekeys_uploaded();
            }
            let keys = &mut self.client_keys;
            if let Some(b) = child_bytes(iq, "registration") {
                keys.registration_id = nodes::be_uint(b);
            }
            if let Some(b) = child_bytes(iq, "identity") {
                keys.identity = b.to_vec();
            }
            if let Some(list) = child(iq, "list") {
                for k in nodes::children(list, "key") {
                    if let (Some(i), Some(v)) = (child_bytes(k, "id"), child_bytes(k, "value")) {
                        keys.add_prekey(nodes::be_uint(i), v.to_vec());
                    }
                }
            }
            if let Some(skey) = child(iq, "skey") {
                self.store_skey(skey);
            }
            return iq_result(id, vec![]);
        }
        iq_error(id, 501, "feature-not-implemented")
    }

    pub(super) fn store_skey(&mut self, skey: &Node) {
        if let Some(b) = child_bytes(skey, "id") {
            self.client_keys.skey_id = nodes::be_uint(b);
        }
        if let Some(b) = child_bytes(skey, "value") {
            self.client_keys.skey_pub = b.to_vec();
        }
        if let Some(b) = child_bytes(skey, "signature") {
            self.client_keys.skey_sig = b.to_vec();
        }
    }

    pub(super) fn digest(&self, id: &str) -> Node {
        let k = &self.client_keys;
        if !k.is_known() {
            return iq_error(id, 404, "item-not-found");
        }
        let pubs: Vec<&[u8]> = k.prekeys.iter().map(|(_, p)| p.as_slice()).collect();
        let hash = whatsapp_rust::wacore::prekeys::compute_key_bundle_digest(
            &k.identity,
            &k.skey_pub,
            &k.skey_sig,
            &pubs,
        );
        let id3 = |n: u32| n.to_be_bytes()[1..].to_vec();
        let digest = NodeBuilder::new("digest")
            .children([
                NodeBuilder::new("registration")
                    .bytes(k.registration_id.to_be_bytes().to_vec())
                    .build(),
                NodeBuilder::new("type").bytes(vec![5]).build(),
                NodeBuilder::new("identity")
                    .bytes(k.identity.clone())
                    .build(),
                NodeBuilder::new("skey")
                    .children([
                        NodeBuilder::new("id").bytes(id3(k.skey_id)).build(),
                        NodeBuilder::new("value").bytes(k.skey_pub.clone()).build(),
                        NodeBuilder::new("signature")
                            .bytes(k.skey_sig.clone())
                            .build(),
                    ])
                    .build(),
                NodeBuilder::new("list")
                    .children(
                        k.prekeys
                            .iter()
                            .map(|(i, _)| NodeBuilder::new("id").bytes(id3(*i)).build()),
                    )
                    .build(),
                NodeBuilder::new("hash").bytes(hash).build(),
            ])
            .build();
        iq_result(id, vec![digest])
    }

    /// One `<user>` of a pre-key fetch answer.
    pub(super) fn bundle_node(&mut self, jid_str: &str) -> Node {
        let error = |code: u16, text: &str| {
            NodeBuilder::new("user")
                .attr("jid", jid_str.to_string())
                .children([NodeBuilder::new("error")
                    .attr("code", code.to_string())
                    .attr("text", text.to_string())
                    .build()])
                .build()
        };
        let Ok(jid) = jid_str.parse::<Jid>() else {
            return error(400, "bad-request");
        };
        if self.refuse_bundle(&jid) {
            return error(406, "not-acceptable");
        }
        let own = jid.user == self.account.pn || jid.user == self.account.lid;
        let bundle = if own && jid.device == 0 {
            self.phone.bundle().map_err(|e| e.to_string())
        } else if own
            && self
                .companion
                .as_ref()
                .is_some_and(|c| c.device == jid.device)
        {
            self.client_keys.take_bundle(jid.device)
        } else if jid.device == 0
            && !own
            && let Some(contact) = self.contact_mut_by_jid(&jid)
        {
            // Any PN user is a reachable mock contact: the client may start a chat; a LID user
            // is one if it is a contact's LID.
            contact.peer.bundle().map_err(|e| e.to_string())
        } else if let Some(linked) = self.linked_device_bundle(&jid) {
            // A contact's linked device, or the owner's own other one (`devices.rs`).
            return match linked.and_then(|(b, identity)| {
                whatsapp_rust::wacore::iq::prekeys::PreKeyBundleUserNode::from_bundle(
                    jid.clone(),
                    &b,
                    Some(identity),
                )
                .map_err(|e| e.to_string())
            }) {
                Ok(user) => user.into_node(),
                Err(e) => {
                    tracing::warn!("fake-whatsapp: bundle for a linked device failed: {e}");
                    error(500, "internal-server-error")
                }
            };
        } else {
            return error(406, "not-acceptable");
        };
        let identity = if own && jid.device != 0 {
            self.companion.as_ref().map(|c| c.signed_identity.clone())
        } else {
            None
        };
        match bundle.and_then(|b| {
            whatsapp_rust::wacore::iq::prekeys::PreKeyBundleUserNode::from_bundle(
                jid.clone(),
                &b,
                identity,
            )
            .map_err(|e| e.to_string())
        }) {
            Ok(user) => user.into_node(),
            Err(e) => {
                tracing::warn!("fake-whatsapp: bundle for a known user failed: {e}");
                error(500, "internal-server-error")
            }
        }
    }
}
