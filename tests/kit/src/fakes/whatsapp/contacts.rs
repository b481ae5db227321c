//! Mock contacts: each is a Signal peer (device 0 of `<digits>@s.whatsapp.net`) that encrypts
//! messages to the linked client with the client's uploaded pre-key bundle and decrypts what the
//! client sends back into a bounded inbox. Also the client's own key bundle as the server stores
//! it. No sockets; the Signal calls are async only because libsignal's store traits are.

use std::collections::VecDeque;

use whatsapp_rust::buffa::MessageField;
use whatsapp_rust::wacore::libsignal::protocol::{
    CiphertextMessageType, DeviceId, IdentityKey, PreKeyBundle, PreKeySignalMessage, PreKeyStore,
    ProtocolAddress, PublicKey, SignalMessage, SignedPreKeyId, UsePQRatchet,
    message_decrypt_prekey, message_decrypt_signal, message_encrypt, process_prekey_bundle,
};
use whatsapp_rust::wacore::messages::{MessageUtils, decode_plaintext};
use whatsapp_rust::waproto::whatsapp as wa;

use super::signal_store::PeerStore;

/// Messages kept per contact inbox (what the linked account sent to that contact); the oldest is
/// dropped beyond this. Tests read a handful.
pub const INBOX_CAP: usize = 256;
/// One-time pre-keys the server keeps for the client; the client uploads ~800 at a time.
pub const CLIENT_PREKEYS_CAP: usize = 2048;
/// Padding version WhatsApp uses inside `<enc v="2">`.
pub const PADDING_VERSION: u8 = 2;

/// One message the contact's phone received and decrypted, as it arrived: a retransmission with
/// an id the phone already has is recorded again (the phone itself shows one message per id).
#[derive(Clone, Debug, serde::Serialize)]
pub struct InboxEntry {
    /// Deliveries to this contact so far when this one arrived (0, 1, 2, …): lets a reader that
    /// polls the bounded inbox take each delivery exactly once.
    pub seq: u64,
    pub id: String,
    pub text: String,
    pub ts: u64,
    /// The address the linked device sent it to (the stanza's `to`): the contact's chat in PN
    /// (`<pn>@s.whatsapp.net`) or LID (`<lid>@lid`) form.
    pub to: String,
}

pub struct Contact {
    pub peer: PeerStore,
    pub inbox: VecDeque<InboxEntry>,
    /// Deliveries recorded so far (never reset; the next entry's `seq`).
    pub delivered: u64,
}

impl Contact {
    /// A contact with fresh random keys: no `Default`, since no two are alike.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let pair = whatsapp_rust::wacore::libsignal::protocol::KeyPair::generate(&mut rand::rng());
        Self {
            peer: PeerStore::new(&pair),
            inbox: VecDeque::new(),
            delivered: 0,
        }
    }

    pub fn record(&mut self, mut entry: InboxEntry) {
        if self.inbox.len() >= INBOX_CAP {
            self.inbox.pop_front();
        }
        entry.seq = self.delivered;
        self.delivered += 1;
        self.inbox.push_back(entry);
    }
}

/// The linked client's key bundle as uploaded (`encrypt` IQs) or registered.
#[derive(Default, Clone)]
pub struct ClientKeys {
    pub registration_id: u32,
    pub identity: Vec<u8>,
    pub skey_id: u32,
    pub skey_pub: Vec<u8>,
    pub skey_sig: Vec<u8>,
    pub prekeys: VecDeque<(u32, Vec<u8>)>,
}

impl ClientKeys {
    pub fn add_prekey(&mut self, id: u32, key: Vec<u8>) {
        if self.prekeys.iter().any(|(i, _)| *i == id) {
            return;
        }
        if self.prekeys.len() >= CLIENT_PREKEYS_CAP {
            self.prekeys.pop_front();
        }
        self.prekeys.push_back((id, key));
    }

    /// A bundle for device `device`, consuming one one-time pre-key as the server does.
    pub fn take_bundle(&mut self, device: u16) -> Result<PreKeyBundle, String> {
        let key = |b: &[u8]| {
            PublicKey::from_djb_public_key_bytes(b).map_err(|e| format!("client key: {e}"))
        };
        let one_time = match self.prekeys.pop_front() {
            Some((id, pk)) => Some((id.into(), key(&pk)?)),
            None => None,
        };
        PreKeyBundle::new(
            self.registration_id,
            DeviceId::from(u32::from(device)),
            one_time,
            SignedPreKeyId::from(self.skey_id),
            key(&self.skey_pub)?,
            self.skey_sig.clone(),
            IdentityKey::new(key(&self.identity)?),
        )
        .map_err(|e| format!("client bundle: {e}"))
    }

    pub fn is_known(&self) -> bool {
        self.identity.len() == 32 && self.skey_pub.len() == 32
    }
}

/// The `wa::Message` a contact sends: plain text, or a media message carrying `caption`.
pub fn build_message(text: &str, media: Option<&str>, caption: Option<&str>) -> wa::Message {
    let caption = caption.unwrap_or(text).to_string();
    // Media fields a receiver needs to show a placeholder; the blob itself is never fetched.
    let media_key = Some((0..32).map(|_| fastrand::u8(..)).collect::<Vec<u8>>());
    let sha = Some(vec![0u8; 32]);
    let path = Some("/v/t62.7118-24/fake-media".to_string());
    match media {
        Some("image") => wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some(caption),
                mimetype: Some("image/jpeg".into()),
                media_key,
                file_sha256: sha.clone(),
                file_enc_sha256: sha,
                direct_path: path,
                file_length: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some("video") => wa::Message {
            video_message: MessageField::some(wa::message::VideoMessage {
                caption: Some(caption),
                mimetype: Some("video/mp4".into()),
                media_key,
                file_sha256: sha.clone(),
                file_enc_sha256: sha,
                direct_path: path,
                file_length: Some(4096),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some("audio") => wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                mimetype: Some("audio/ogg; codecs=opus".into()),
                media_key,
                file_sha256: sha.clone(),
                file_enc_sha256: sha,
                direct_path: path,
                file_length: Some(2048),
                ptt: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some("document") => wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                caption: Some(caption),
                mimetype: Some("application/pdf".into()),
                file_name: Some("file.pdf".into()),
                media_key,
                file_sha256: sha.clone(),
                file_enc_sha256: sha,
                direct_path: path,
                file_length: Some(2048),
                ..Default::default()
            }),
            ..Default::default()
        },
        Some("sticker") => wa::Message {
            sticker_message: MessageField::some(wa::message::StickerMessage {
                mimetype: Some("image/webp".into()),
                media_key,
                file_sha256: sha.clone(),
                file_enc_sha256: sha,
                direct_path: path,
                file_length: Some(512),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        },
    }
}

/// The text a message shows: conversation, extended text, or a media caption.
pub fn message_text(msg: &wa::Message) -> Option<String> {
    if let Some(t) = &msg.conversation {
        return Some(t.clone());
    }
    if let Some(e) = msg.extended_text_message.as_option() {
        return e.text.clone();
    }
    if let Some(m) = msg.image_message.as_option() {
        return m.caption.clone();
    }
    if let Some(m) = msg.video_message.as_option() {
        return m.caption.clone();
    }
    if let Some(m) = msg.document_message.as_option() {
        return m.caption.clone();
    }
    if let Some(d) = msg.device_sent_message.as_option()
        && let Some(inner) = d.message.as_option()
    {
        return message_text(inner);
    }
    None
}

/// `peer` encrypts `msg` for `remote` (building a session from `bundle` first when it has none).
/// Returns (`pkmsg`|`msg`, ciphertext).
pub async fn encrypt(
    peer: &mut PeerStore,
    remote: &ProtocolAddress,
    bundle: impl FnOnce() -> Result<PreKeyBundle, String>,
    msg: &wa::Message,
) -> Result<(&'static str, Vec<u8>), String> {
    // A `Send` RNG: the futures below run on the multi-threaded runtime.
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    if !peer.has_session(remote) {
        let bundle = bundle()?;
        process_prekey_bundle(
            remote,
            &mut peer.sessions,
            &mut peer.identity,
            &bundle,
            &mut rng,
            UsePQRatchet::No,
        )
        .await
        .map_err(|e| format!("process bundle: {e}"))?;
    }
    let plaintext = MessageUtils::encode_and_pad(msg);
    let ct = message_encrypt(&plaintext, remote, &mut peer.sessions, &mut peer.identity)
        .await
        .map_err(|e| format!("encrypt: {e}"))?;
    let kind = match ct.message_type() {
        CiphertextMessageType::PreKey => "pkmsg",
        _ => "msg",
    };
    Ok((kind, ct.serialize().to_vec()))
}

/// `peer` decrypts one `<enc>` the client sent from `remote`.
pub async fn decrypt(
    peer: &mut PeerStore,
    remote: &ProtocolAddress,
    kind: &str,
    ciphertext: &[u8],
    padding: u8,
) -> Result<wa::Message, String> {
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let plaintext = match kind {
        "pkmsg" => {
            let m = PreKeySignalMessage::try_from(ciphertext).map_err(|e| format!("pkmsg: {e}"))?;
            let result = message_decrypt_prekey(
                &m,
                remote,
                &mut peer.sessions,
                &mut peer.identity,
                &mut peer.prekeys,
                &peer.signed,
                &mut rng,
                UsePQRatchet::No,
            )
            .await
            .map_err(|e| format!("decrypt pkmsg: {e}"))?;
            if let Some(id) = result.consumed_prekey_id {
                let _ = peer.prekeys.remove_pre_key(id).await;
            }
            result.plaintext
        }
        "msg" => {
            let m = SignalMessage::try_from(ciphertext).map_err(|e| format!("msg: {e}"))?;
            message_decrypt_signal(&m, remote, &mut peer.sessions, &mut peer.identity, &mut rng)
                .await
                .map_err(|e| format!("decrypt msg: {e}"))?
                .plaintext
        }
        other => return Err(format!("unsupported enc type {other}")),
    };
    decode_plaintext(&plaintext, padding).map_err(|e| format!("plaintext: {e}"))
}
