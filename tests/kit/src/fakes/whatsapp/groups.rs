//! Groups on the fake server: a group (`<id>@g.us`) with a subject, the mock contacts in it and
//! the linked account, in phone-number or LID addressing; a member writing to the group the way
//! real clients do — the content encrypted once with the member's sender key (`<enc
//! type="skmsg">`), and, the first time, the member's SenderKeyDistributionMessage encrypted
//! pairwise to the linked device (`pkmsg`/`msg`) in the same stanza (whatsmeow `sendGroup`,
//! whatsapp-rust `wacore::send::group::prepare_group_stanza`, Baileys `relayMessage` for
//! groups); and the log of the group's messages (for quotes). The linked account's own sends
//! to the group, decrypted by every member device, are `group_sends.rs`; the `w:g2` IQs and the
//! `w:gp2` notifications are `group_iq.rs`. No sockets; async only for libsignal's stores.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use whatsapp_rust::async_trait;
use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::libsignal::protocol::{
    SenderKeyName, SenderKeyRecord, SenderKeyStore, SignalProtocolError,
    create_sender_key_distribution_message, group_encrypt,
};
use whatsapp_rust::wacore::messages::MessageUtils;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::waproto::whatsapp as wa;

use super::contacts::PADDING_VERSION;
use super::lid::contact_lid;
use super::nodes::SERVER;
use super::phone;
use super::server::*;

/// Groups the fake keeps at once (a test makes a few).
pub const GROUPS_CAP: usize = 64;
/// Members per group besides the linked account (a test group has a handful; WhatsApp's own
/// limit is 1024).
pub const GROUP_MEMBERS_CAP: usize = 64;
/// Messages remembered per group (both directions), for quotes and `GET /groups/<jid>/messages`;
/// the oldest is dropped beyond this.
pub const GROUP_LOG_CAP: usize = 512;
/// The sender id the members' devices file the linked account's sender key under (any stable
/// name: the chain itself comes in the distribution message).
const BOX_SENDER: &str = "box.0";

/// How a group names its participants: by phone number (older groups) or by LID (WhatsApp's
/// default since 2024: `addressing_mode="lid"`, `participant_pn` beside the LID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupAddressing {
    Pn,
    Lid,
}

impl GroupAddressing {
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("pn") => Ok(Self::Pn),
            Some("lid") => Ok(Self::Lid),
            Some(other) => Err(format!("group: addressing must be pn or lid, not {other}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pn => "pn",
            Self::Lid => "lid",
        }
    }
}

/// In-memory sender-key records of one party (a member's own chain, or one member device's
/// copy of the linked account's chain).
#[derive(Default)]
pub struct SenderKeys(HashMap<String, SenderKeyRecord>);

#[async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> Result<(), SignalProtocolError> {
        self.0.insert(name.cache_key().to_string(), record);
        Ok(())
    }

    async fn load_sender_key(
        &self,
        name: &SenderKeyName,
    ) -> Result<Option<SenderKeyRecord>, SignalProtocolError> {
        Ok(self.0.get(name.cache_key()).cloned())
    }
}

/// One message of the group's log.
#[derive(Clone, Debug)]
pub struct Logged {
    pub id: String,
    /// The author as the group names it (`participant`).
    pub participant: String,
    pub text: String,
}

/// What the linked account sent to the group, as each member device decrypted it: `GET
/// /groups/<jid>/messages`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GroupDelivery {
    /// Sends by the linked account to this group so far when this one arrived (0, 1, …).
    pub seq: u64,
    pub id: String,
    pub ts: u64,
    /// The text as the first member device that decrypted it read it.
    pub text: String,
    /// `contextInfo.stanzaId` / `participant` of the message it quotes, if any.
    pub quoted_id: Option<String>,
    pub quoted_participant: Option<String>,
    /// `contextInfo.quotedMessage.conversation`: the quoted text the members' phones show.
    pub quoted_text: Option<String>,
    /// `contextInfo.mentionedJid`.
    pub mentions: Vec<String>,
    /// Member (`+E.164`) → device id → the text that device decrypted.
    pub read_by: BTreeMap<String, BTreeMap<u16, String>>,
}

pub struct Group {
    /// The user part of the group JID (`120363…`).
    pub user: String,
    pub subject: String,
    pub creation: u64,
    pub addressing: GroupAddressing,
    /// Members' numbers (digits), the creator (an admin) first; the linked account is a member
    /// besides these.
    pub members: Vec<String>,
    /// Each member's own sender-key chain for this group.
    pub(super) member_keys: HashMap<String, SenderKeys>,
    /// Members whose distribution message the linked device has got.
    pub(super) distributed: HashSet<String>,
    /// (member, device) → that device's copy of the linked account's chain.
    pub(super) box_keys: BTreeMap<(String, u16), SenderKeys>,
    pub(super) log: VecDeque<Logged>,
    pub sent: VecDeque<GroupDelivery>,
    pub(super) sent_count: u64,
}

impl Group {
    pub fn jid(&self) -> String {
        format!("{}@g.us", self.user)
    }

    pub(super) fn remember(&mut self, entry: Logged) {
        if self.log.len() >= GROUP_LOG_CAP {
            self.log.pop_front();
        }
        self.log.push_back(entry);
    }

    /// The key name a member's chain is filed under (whatsapp-rust `make_sender_key_name`:
    /// group JID and the sender's device-0 address).
    pub(super) fn member_key_name(&self, user: &str) -> SenderKeyName {
        SenderKeyName::new(self.jid(), format!("{user}.0"))
    }

    pub(super) fn box_key_name(&self) -> SenderKeyName {
        SenderKeyName::new(self.jid(), BOX_SENDER.to_string())
    }
}

/// `POST /groups/<jid>/messages`: what a member writes.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct MemberSend {
    pub from: String,
    pub text: String,
    /// Numbers mentioned (`+E.164`), or `"self"` (the linked account in the group's addressing),
    /// `"self-pn"`, `"self-lid"`.
    #[serde(default)]
    pub mentions: Vec<String>,
    /// Id of a message in this group being quoted (a member's or the linked account's).
    pub quote: Option<String>,
    /// The member's push name (`notify`); default `Member <last 4 digits>`.
    pub name: Option<String>,
}

/// All groups, by JID user part.
#[derive(Default)]
pub struct Groups {
    pub list: BTreeMap<String, Group>,
    next: u64,
}

impl Groups {
    /// A device linked anew has no member's sender key: each member distributes it again with
    /// their next message (as real clients do for a device they have not sent it to).
    pub(super) fn new_companion(&mut self) {
        for g in self.list.values_mut() {
            g.distributed.clear();
        }
    }
}

impl World {
    /// The JID a group names member `user` (digits) by.
    pub(super) fn member_jid(user: &str, addressing: GroupAddressing) -> String {
        match addressing {
            GroupAddressing::Pn => format!("{user}@{SERVER}"),
            GroupAddressing::Lid => format!("{}@lid", contact_lid(user)),
        }
    }

    /// The JID a group names the linked account by.
    pub(super) fn own_member_jid(&self, addressing: GroupAddressing) -> String {
        match addressing {
            GroupAddressing::Pn => format!("{}@{SERVER}", self.account.pn),
            GroupAddressing::Lid => format!("{}@lid", self.account.lid),
        }
    }

    /// `POST /groups`: a group with `subject`, `members` (numbers; the first created it) and
    /// the linked account; returns its JID.
    pub fn group_create(
        &mut self,
        subject: &str,
        members: &[String],
        addressing: GroupAddressing,
        now: u64,
    ) -> Result<String, String> {
        if self.groups.list.len() >= GROUPS_CAP {
            return Err("group: too many groups".into());
        }
        if members.is_empty() || members.len() > GROUP_MEMBERS_CAP {
            return Err(format!("group: 1 to {GROUP_MEMBERS_CAP} members"));
        }
        let mut users = Vec::new();
        for m in members {
            let user = digits(m).ok_or_else(|| format!("group: {m} is not an E.164 number"))?;
            self.contact_mut(&user).ok_or("group: too many contacts")?;
            if user != self.account.pn && !users.contains(&user) {
                users.push(user);
            }
        }
        self.groups.next += 1;
        // The shape of WhatsApp's group ids (`120363` + 12 digits).
        let user = format!(
            "120363{:06}{:06}",
            self.groups.next,
            fastrand::u32(..1_000_000)
        );
        let group = Group {
            user: user.clone(),
            subject: subject.to_string(),
            creation: now,
            addressing,
            members: users,
            member_keys: HashMap::new(),
            distributed: HashSet::new(),
            box_keys: BTreeMap::new(),
            log: VecDeque::new(),
            sent: VecDeque::new(),
            sent_count: 0,
        };
        let jid = group.jid();
        self.groups.list.insert(user, group);
        Ok(jid)
    }

    pub(super) fn group_mut(&mut self, jid: &str) -> Result<&mut Group, String> {
        let user = jid.split('@').next().unwrap_or("");
        self.groups
            .list
            .get_mut(user)
            .ok_or_else(|| format!("group: no group {jid}"))
    }

    /// Member `req.from` writes to group `jid`; returns the message id.
    pub async fn group_member_send(
        &mut self,
        jid: &str,
        req: &MemberSend,
        now: u64,
    ) -> Result<String, String> {
        let user = digits(&req.from).ok_or("group: from is not an E.164 number")?;
        if !self.client_keys.is_known() {
            return Err("group: the linked device has not published keys".into());
        }
        let own = (
            self.own_member_jid(GroupAddressing::Pn),
            self.own_member_jid(GroupAddressing::Lid),
        );
        let group = self.group_mut(jid)?;
        if !group.members.contains(&user) {
            return Err(format!("group: {} is not a member", req.from));
        }
        let addressing = group.addressing;
        let group_jid = group.jid();
        let mut mentions = Vec::new();
        for m in &req.mentions {
            mentions.push(match m.as_str() {
                "self" if addressing == GroupAddressing::Pn => own.0.clone(),
                "self" => own.1.clone(),
                "self-pn" => own.0.clone(),
                "self-lid" => own.1.clone(),
                other => Self::member_jid(
                    &digits(other).ok_or_else(|| format!("group: bad mention {other}"))?,
                    addressing,
                ),
            });
        }
        let quoted = match &req.quote {
            Some(id) => Some(
                group
                    .log
                    .iter()
                    .rev()
                    .find(|l| &l.id == id)
                    .cloned()
                    .ok_or_else(|| format!("group: no message {id} to quote"))?,
            ),
            None => None,
        };
        let msg = member_message(&req.text, mentions, quoted);

        // The distribution message, once per member (whatsmeow `sendGroup`: the SKDM goes to
        // every device that has not had it, pairwise, beside the skmsg).
        let name = group.member_key_name(&user);
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        let skdm = if group.distributed.contains(&user) {
            None
        } else {
            let store = group.member_keys.entry(user.clone()).or_default();
            let skdm = create_sender_key_distribution_message(&name, store, &mut rng)
                .await
                .map_err(|e| format!("group: skdm: {e}"))?;
            Some(wa::Message {
                sender_key_distribution_message: MessageField::some(
                    wa::message::SenderKeyDistributionMessage {
                        group_id: Some(group_jid.clone()),
                        axolotl_sender_key_distribution_message: Some(skdm.serialized().to_vec()),
                    },
                ),
                ..Default::default()
            })
        };
        let mut encs = Vec::new();
        if let Some(wrapper) = skdm {
            let (kind, ct) = self.contact_encrypt(&user, &wrapper).await?;
            encs.push(enc_node(kind, ct));
        }
        let group = self.group_mut(jid)?;
        group.distributed.insert(user.clone());
        let store = group
            .member_keys
            .get_mut(&user)
            .ok_or("group: the member has no sender key")?;
        let skm = group_encrypt(store, &name, &MessageUtils::encode_and_pad(&msg), &mut rng)
            .await
            .map_err(|e| format!("group: skmsg: {e}"))?;
        encs.push(enc_node("skmsg", skm.serialized().to_vec()));

        let id = phone::random_hex(10).to_uppercase();
        let participant = Self::member_jid(&user, addressing);
        group.remember(Logged {
            id: id.clone(),
            participant: participant.clone(),
            text: req.text.clone(),
        });
        // whatsapp-rust `parse_message_info` (wacore messages.rs): a group's sender is
        // `participant`, its other form `participant_lid` (PN groups) or `participant_pn`
        // (LID groups).
        let mut stanza = NodeBuilder::new("message")
            .attr("from", group_jid)
            .attr("participant", participant)
            .attr("id", id.clone())
            .attr("t", now.to_string())
            .attr("type", "text")
            .attr("addressing_mode", addressing.as_str())
            .attr(
                "notify",
                req.name
                    .clone()
                    .unwrap_or_else(|| format!("Member {}", &user[user.len().saturating_sub(4)..])),
            );
        stanza = match addressing {
            GroupAddressing::Pn => stanza.attr(
                "participant_lid",
                Self::member_jid(&user, GroupAddressing::Lid),
            ),
            GroupAddressing::Lid => stanza.attr(
                "participant_pn",
                Self::member_jid(&user, GroupAddressing::Pn),
            ),
        };
        self.queue_or_send(stanza.children(encs).build());
        Ok(id)
    }

    /// What the linked account sent to group `jid`, as the members' devices read it.
    pub fn group_deliveries(&mut self, jid: &str) -> Result<Vec<GroupDelivery>, String> {
        Ok(self.group_mut(jid)?.sent.iter().cloned().collect())
    }
}

fn enc_node(kind: &str, ct: Vec<u8>) -> Node {
    NodeBuilder::new("enc")
        .attr("v", PADDING_VERSION.to_string())
        .attr("type", kind.to_string())
        .bytes(ct)
        .build()
}

/// A member's message: plain `conversation`, or `extendedTextMessage` with a `contextInfo`
/// carrying the mentions (`mentionedJid`) and the quoted message (`stanzaId`, `participant`,
/// `quotedMessage`) as WhatsApp's clients write them.
fn member_message(text: &str, mentions: Vec<String>, quoted: Option<Logged>) -> wa::Message {
    if mentions.is_empty() && quoted.is_none() {
        return wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
    }
    let mut ctx = wa::ContextInfo {
        mentioned_jid: mentions,
        ..Default::default()
    };
    if let Some(q) = quoted {
        ctx.stanza_id = Some(q.id);
        ctx.participant = Some(q.participant);
        ctx.quoted_message = MessageField::some(wa::Message {
            conversation: Some(q.text),
            ..Default::default()
        });
    }
    wa::Message {
        extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
            text: Some(text.to_string()),
            context_info: MessageField::some(ctx),
            ..Default::default()
        }),
        ..Default::default()
    }
}
