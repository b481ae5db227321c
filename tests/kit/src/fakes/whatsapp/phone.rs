//! The mock primary phone's side of device linking: the ADV device identity it signs with the
//! account key for `pair-success` (QR and pair-code flows), the check of the companion's
//! `pair-device-sign` answer, and the phone's half of the pair-code key exchange; and the message
//! the phone sends to its own other devices (`deviceSentMessage`). Pure crypto and node building;
//! never touches a socket or the server state.

use ring::hmac;
use whatsapp_rust::buffa::{Message, MessageField};
use whatsapp_rust::wacore::libsignal::crypto::aes_256_gcm_decrypt;
use whatsapp_rust::wacore::libsignal::protocol::{KeyPair, PublicKey};
use whatsapp_rust::wacore::pair_code::PairCodeUtils;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::waproto::whatsapp as wa;

use super::nodes::{self, SERVER};

/// ADV signature prefixes (account signs, device signs), as the client verifies them.
const ADV_ACCOUNT_SIG_PREFIX: [u8; 2] = [6, 0];
const ADV_DEVICE_SIG_PREFIX: [u8; 2] = [6, 1];
/// Pair-code wrapped bundle: salt(32) ‖ iv(12) ‖ AES-GCM(96-byte bundle + 16 tag).
const LINK_BUNDLE_SALT_LEN: usize = 32;
const LINK_BUNDLE_IV_LEN: usize = 12;
const LINK_BUNDLE_PLAIN_LEN: usize = 96;

/// The account the mock phone owns.
pub struct Account {
    /// E.164 digits without `+`.
    pub pn: String,
    /// LID user part.
    pub lid: String,
    /// The account (identity) key pair; it signs ADV identities and is the phone's Signal identity.
    pub identity: KeyPair,
}

/// What the phone remembers between sending `pair-success` and the client's signature.
pub struct PendingPair {
    pub iq_id: String,
    pub device: u16,
    pub companion_identity: [u8; 32],
}

/// What the phone encrypts to the account's other devices when its user sends `text` to
/// `destination`: the message wrapped in a `deviceSentMessage` naming the chat it went to (the
/// chat's own devices get the bare message; none here: the self chat has only the account's).
pub fn device_sent(destination: &str, text: &str) -> wa::Message {
    wa::Message {
        device_sent_message: MessageField::some(wa::message::DeviceSentMessage {
            destination_jid: Some(destination.to_string()),
            message: MessageField::some(wa::Message {
                conversation: Some(text.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02X}", fastrand::u8(..)))
        .collect()
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// The `pair-success` IQ carrying `ADVSignedDeviceIdentityHMAC` for a companion whose identity
/// key and ADV secret the phone learned from the QR code or the pair-code exchange.
pub fn pair_success(
    account: &Account,
    adv_secret: &[u8; 32],
    companion_identity: &[u8; 32],
    device: u16,
    key_index: u32,
    now_secs: u64,
) -> Result<(Node, PendingPair), String> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(fastrand::u32(1..u32::MAX)),
        timestamp: Some(now_secs),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let to_sign = concat(&[&ADV_ACCOUNT_SIG_PREFIX, &details, companion_identity]);
    let account_signature = account
        .identity
        .private_key
        .calculate_signature(&to_sign, &mut rand::rng())
        .map_err(|e| format!("phone: account signature: {e}"))?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(account.identity.public_key.public_key_bytes().to_vec()),
        account_signature: Some(account_signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let key = hmac::Key::new(hmac::HMAC_SHA256, adv_secret);
    let tag = hmac::sign(&key, &signed);
    let container = wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(tag.as_ref().to_vec()),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let iq_id = random_hex(8);
    let node = NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "set")
        .attr("id", iq_id.clone())
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-success")
            .children([
                NodeBuilder::new("device-identity").bytes(container).build(),
                NodeBuilder::new("device")
                    .attr("jid", format!("{}:{device}@s.whatsapp.net", account.pn))
                    .attr("lid", format!("{}:{device}@lid", account.lid))
                    .build(),
                NodeBuilder::new("platform").attr("name", "android").build(),
            ])
            .build()])
        .build();
    Ok((
        node,
        PendingPair {
            iq_id,
            device,
            companion_identity: *companion_identity,
        },
    ))
}

/// Checks the companion's `<pair-device-sign>` answer; returns the fully signed identity (what
/// the server later hands out as the companion's `<device-identity>`).
pub fn verify_device_sign(
    answer: &Node,
    pending: &PendingPair,
    account: &Account,
) -> Result<Vec<u8>, String> {
    let identity_bytes = nodes::child(answer, "pair-device-sign")
        .and_then(|s| nodes::child_bytes(s, "device-identity"))
        .ok_or("phone: pair-device-sign without device-identity")?;
    let signed = wa::ADVSignedDeviceIdentity::decode_from_slice(identity_bytes)
        .map_err(|e| format!("phone: device-identity decode: {e}"))?;
    let details = signed.details.as_deref().unwrap_or_default();
    let device_sig = signed
        .device_signature
        .as_deref()
        .ok_or("phone: device-identity without device signature")?;
    let msg = concat(&[
        &ADV_DEVICE_SIG_PREFIX,
        details,
        &pending.companion_identity,
        account.identity.public_key.public_key_bytes(),
    ]);
    let companion = PublicKey::from_djb_public_key_bytes(&pending.companion_identity)
        .map_err(|e| format!("phone: companion identity key: {e}"))?;
    if !companion.verify_signature(&msg, device_sig) {
        return Err("phone: companion device signature does not verify".into());
    }
    Ok(identity_bytes.to_vec())
}

/// The phone's pair-code state between `primary_hello` and `companion_finish`.
pub struct LinkExchange {
    pub ephemeral: KeyPair,
    pub companion_ephemeral: [u8; 32],
}

/// The phone typed `code`: unwrap the companion's ephemeral key and build the `primary_hello`
/// notification with the phone's own wrapped ephemeral.
pub fn primary_hello(
    code: &str,
    wrapped_companion: &[u8],
    pairing_ref: &[u8],
    account: &Account,
) -> Result<(Node, LinkExchange), String> {
    let companion_ephemeral = PairCodeUtils::decrypt_primary_ephemeral_pub(wrapped_companion, code)
        .map_err(|e| format!("phone: unwrap companion ephemeral: {e}"))?;
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let mut eph_pub = [0u8; 32];
    eph_pub.copy_from_slice(ephemeral.public_key.public_key_bytes());
    let wrapped = PairCodeUtils::encrypt_ephemeral_pub(&eph_pub, code);
    let node = NodeBuilder::new("notification")
        .attr("from", SERVER)
        .attr("type", "link_code_companion_reg")
        .attr("id", random_hex(8))
        .children([NodeBuilder::new("link_code_companion_reg")
            .attr("stage", "primary_hello")
            .children([
                NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                    .bytes(wrapped.to_vec())
                    .build(),
                NodeBuilder::new("primary_identity_pub")
                    .bytes(account.identity.public_key.public_key_bytes().to_vec())
                    .build(),
                NodeBuilder::new("link_code_pairing_ref")
                    .bytes(pairing_ref.to_vec())
                    .build(),
            ])
            .build()])
        .build();
    Ok((
        node,
        LinkExchange {
            ephemeral,
            companion_ephemeral,
        },
    ))
}

/// Opens the companion's key bundle from `companion_finish`; returns (companion identity,
/// ADV secret) for `pair-success`.
pub fn finish_link(
    exchange: &LinkExchange,
    wrapped_bundle: &[u8],
    account: &Account,
) -> Result<([u8; 32], [u8; 32]), String> {
    if wrapped_bundle.len()
        != LINK_BUNDLE_SALT_LEN + LINK_BUNDLE_IV_LEN + LINK_BUNDLE_PLAIN_LEN + 16
    {
        return Err(format!(
            "phone: wrapped key bundle is {} bytes",
            wrapped_bundle.len()
        ));
    }
    let (salt, rest) = wrapped_bundle.split_at(LINK_BUNDLE_SALT_LEN);
    let (iv, ciphertext) = rest.split_at(LINK_BUNDLE_IV_LEN);
    let companion_eph = PublicKey::from_djb_public_key_bytes(&exchange.companion_ephemeral)
        .map_err(|e| format!("phone: companion ephemeral: {e}"))?;
    let eph_shared = exchange
        .ephemeral
        .private_key
        .calculate_agreement(&companion_eph)
        .map_err(|e| format!("phone: ephemeral agreement: {e}"))?;
    let mut enc_key = [0u8; 32];
    whatsapp_rust::wacore::crypto::hkdf_sha256_into(
        &eph_shared,
        Some(salt),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut enc_key,
    )
    .map_err(|e| format!("phone: bundle key: {e:?}"))?;
    let mut iv_arr = [0u8; LINK_BUNDLE_IV_LEN];
    iv_arr.copy_from_slice(iv);
    let mut bundle = Vec::with_capacity(LINK_BUNDLE_PLAIN_LEN);
    aes_256_gcm_decrypt(&enc_key, &iv_arr, b"", ciphertext, &mut bundle)
        .map_err(|e| format!("phone: key bundle does not decrypt (wrong code?): {e:?}"))?;
    if bundle.len() != LINK_BUNDLE_PLAIN_LEN {
        return Err("phone: key bundle has the wrong length".into());
    }
    let mut companion_identity = [0u8; 32];
    companion_identity.copy_from_slice(&bundle[..32]);
    if bundle[32..64] != *account.identity.public_key.public_key_bytes() {
        return Err("phone: key bundle names another primary identity".into());
    }
    let random = &bundle[64..96];
    let companion_id_key = PublicKey::from_djb_public_key_bytes(&companion_identity)
        .map_err(|e| format!("phone: companion identity: {e}"))?;
    let id_shared = account
        .identity
        .private_key
        .calculate_agreement(&companion_id_key)
        .map_err(|e| format!("phone: identity agreement: {e}"))?;
    let secret = concat(&[&eph_shared, &id_shared, random]);
    let mut adv_secret = [0u8; 32];
    whatsapp_rust::wacore::crypto::hkdf_sha256_into(&secret, None, b"adv_secret", &mut adv_secret)
        .map_err(|e| format!("phone: adv secret: {e:?}"))?;
    Ok((companion_identity, adv_secret))
}
