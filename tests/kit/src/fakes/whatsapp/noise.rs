//! Server side of WhatsApp Web's Noise XX handshake and the framed AES-GCM transport after it.
//! Sans-io: bytes in, bytes out; the connection driver owns the socket. Owns the fake's server
//! identity (static key and a certificate chain signed by the fake's own root); never reads a
//! socket, never implements IK (the chain carries no validity window, so the client always
//! chooses XX).

use whatsapp_rust::buffa::{Message, MessageField};
use whatsapp_rust::wacore::framing::{FrameDecoder, encode_frame};
use whatsapp_rust::wacore::handshake::NoiseHandshake;
use whatsapp_rust::wacore::libsignal::protocol::KeyPair;
use whatsapp_rust::wacore::noise::NoiseCipher;
use whatsapp_rust::wacore_binary::consts::{NOISE_PATTERN_XX, WA_CONN_HEADER};
use whatsapp_rust::waproto::whatsapp as wa;

/// Largest plaintext node the fake accepts or sends in one frame. Real frames are capped at the
/// 3-byte length (16 MiB); the fake's traffic (stanzas, key bundles) is far below 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Edge-routing pre-intro magic the client may put in front of the WA header on reconnect.
const EDGE_ROUTING_MAGIC: &[u8] = b"ED\x00\x01";

#[derive(Debug)]
pub struct NoiseFail(pub String);

impl std::fmt::Display for NoiseFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> NoiseFail {
    NoiseFail(format!("noise: {what}: {e}"))
}

/// The fake's long-lived server identity.
pub struct ServerIdentity {
    pub static_key: KeyPair,
    pub cert_chain: Vec<u8>,
}

impl ServerIdentity {
    /// A fresh static key and a two-level chain: fake root → intermediate (issuer_serial 0) → leaf
    /// (issuer = intermediate serial, key = static). Signatures are real XEdDSA signatures by the
    /// fake root; the client's check against WhatsApp's pinned root is what the dev-only
    /// `danger-skip-cert-chain-verify` feature skips, every structural check still runs.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let root = KeyPair::generate(&mut rng);
        let intermediate = KeyPair::generate(&mut rng);
        let static_key = KeyPair::generate(&mut rng);
        let intermediate_details = wa::cert_chain::noise_certificate::Details {
            serial: Some(1),
            issuer_serial: Some(0),
            key: Some(intermediate.public_key.public_key_bytes().to_vec()),
            ..Default::default()
        }
        .encode_to_vec();
        let leaf_details = wa::cert_chain::noise_certificate::Details {
            serial: Some(2),
            issuer_serial: Some(1),
            key: Some(static_key.public_key.public_key_bytes().to_vec()),
            ..Default::default()
        }
        .encode_to_vec();
        let sign = |key: &KeyPair, data: &[u8]| {
            key.private_key
                .calculate_signature(data, &mut rand::rng())
                .map(|s| s.to_vec())
                .unwrap_or_default()
        };
        let cert_chain = wa::CertChain {
            intermediate: MessageField::some(wa::cert_chain::NoiseCertificate {
                signature: Some(sign(&root, &intermediate_details)),
                details: Some(intermediate_details),
            }),
            leaf: MessageField::some(wa::cert_chain::NoiseCertificate {
                signature: Some(sign(&intermediate, &leaf_details)),
                details: Some(leaf_details),
            }),
        }
        .encode_to_vec();
        Self {
            static_key,
            cert_chain,
        }
    }
}

/// Handshake state between our ServerHello and the client's ClientFinish.
pub struct PendingHandshake {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
}

/// Reads the client's first WebSocket message (optional edge-routing pre-intro, `WA\x06\x03`,
/// one frame holding ClientHello) and returns the framed ServerHello to send back.
pub fn respond_to_hello(
    first: &[u8],
    server: &ServerIdentity,
) -> Result<(Vec<u8>, PendingHandshake), NoiseFail> {
    let mut rest = first;
    if rest.starts_with(EDGE_ROUTING_MAGIC) {
        let len_bytes = rest
            .get(4..7)
            .ok_or_else(|| NoiseFail("noise: truncated edge-routing pre-intro".into()))?;
        let len = (usize::from(len_bytes[0]) << 16)
            | (usize::from(len_bytes[1]) << 8)
            | usize::from(len_bytes[2]);
        rest = rest
            .get(7 + len..)
            .ok_or_else(|| NoiseFail("noise: edge-routing data past end".into()))?;
    }
    let body = rest
        .strip_prefix(&WA_CONN_HEADER[..])
        .ok_or_else(|| NoiseFail("noise: first message lacks the WA connection header".into()))?;
    let hello_bytes = single_frame(body)?;
    let hello = wa::HandshakeMessage::decode_from_slice(&hello_bytes)
        .map_err(|e| fail("ClientHello decode", e))?;
    let client_eph: [u8; 32] = hello
        .client_hello
        .into_option()
        .and_then(|h| h.ephemeral)
        .and_then(|e| e.try_into().ok())
        .ok_or_else(|| NoiseFail("noise: ClientHello without a 32-byte ephemeral".into()))?;

    let mut noise =
        NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER).map_err(|e| fail("init", e))?;
    noise.authenticate(&client_eph);
    let ephemeral = KeyPair::generate(&mut rand::rng());
    noise.authenticate(ephemeral.public_key.public_key_bytes());
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_eph)
        .map_err(|e| fail("ee", e))?;
    let enc_static = noise
        .encrypt(server.static_key.public_key.public_key_bytes())
        .map_err(|e| fail("encrypt static", e))?;
    noise
        .mix_shared_secret(server.static_key.private_key.serialize(), &client_eph)
        .map_err(|e| fail("se", e))?;
    let enc_payload = noise
        .encrypt(&server.cert_chain)
        .map_err(|e| fail("encrypt cert chain", e))?;
    let server_hello = wa::HandshakeMessage {
        server_hello: MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral.public_key.public_key_bytes().to_vec()),
            r#static: Some(enc_static),
            payload: Some(enc_payload),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let framed = encode_frame(&server_hello, None).map_err(|e| fail("frame ServerHello", e))?;
    Ok((framed, PendingHandshake { noise, ephemeral }))
}

impl PendingHandshake {
    /// Reads ClientFinish; returns the transport and the client's login/registration payload.
    /// Also returns the client's Noise static public key.
    pub fn finish(
        mut self,
        data: &[u8],
    ) -> Result<(FrameCipher, wa::ClientPayload, Vec<u8>), NoiseFail> {
        let finish_bytes = single_frame(data)?;
        let msg = wa::HandshakeMessage::decode_from_slice(&finish_bytes)
            .map_err(|e| fail("ClientFinish decode", e))?;
        let finish = msg
            .client_finish
            .into_option()
            .ok_or_else(|| NoiseFail("noise: expected ClientFinish".into()))?;
        let enc_static = finish
            .r#static
            .ok_or_else(|| NoiseFail("noise: ClientFinish without static".into()))?;
        let enc_payload = finish
            .payload
            .ok_or_else(|| NoiseFail("noise: ClientFinish without payload".into()))?;
        let client_static = self
            .noise
            .decrypt(&enc_static)
            .map_err(|e| fail("decrypt client static", e))?;
        self.noise
            .mix_shared_secret(self.ephemeral.private_key.serialize(), &client_static)
            .map_err(|e| fail("es", e))?;
        let payload_bytes = self
            .noise
            .decrypt(&enc_payload)
            .map_err(|e| fail("decrypt client payload", e))?;
        let payload = wa::ClientPayload::decode_from_slice(&payload_bytes)
            .map_err(|e| fail("ClientPayload decode", e))?;
        // `finish` yields the initiator's (write, read); the responder uses them swapped.
        let (initiator_write, initiator_read) =
            self.noise.finish().map_err(|e| fail("split", e))?;
        Ok((
            FrameCipher {
                write: initiator_read,
                read: initiator_write,
                write_counter: 0,
                read_counter: 0,
                decoder: FrameDecoder::new(),
            },
            payload,
            client_static,
        ))
    }
}

fn single_frame(data: &[u8]) -> Result<Vec<u8>, NoiseFail> {
    let mut decoder = FrameDecoder::new();
    decoder.feed(data);
    decoder
        .decode_frame()
        .map(|f| f.to_vec())
        .ok_or_else(|| NoiseFail("noise: incomplete handshake frame".into()))
}

/// The post-handshake transport: 3-byte length frames of AES-GCM ciphertext, one IV counter per
/// direction.
pub struct FrameCipher {
    write: NoiseCipher,
    read: NoiseCipher,
    write_counter: u32,
    read_counter: u32,
    decoder: FrameDecoder,
}

impl FrameCipher {
    /// Feeds received bytes; returns every complete decrypted frame (a marshalled node).
    pub fn open(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, NoiseFail> {
        self.decoder.feed(data);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.decode_frame() {
            if frame.len() > MAX_FRAME_LEN {
                return Err(NoiseFail(format!(
                    "noise: client frame of {} bytes exceeds {MAX_FRAME_LEN}",
                    frame.len()
                )));
            }
            let mut buf = frame.to_vec();
            self.read
                .decrypt_in_place_with_counter(self.read_counter, &mut buf)
                .map_err(|e| fail("decrypt frame", e))?;
            self.read_counter = self.read_counter.wrapping_add(1);
            out.push(buf);
        }
        Ok(out)
    }

    /// Encrypts and frames one marshalled node.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseFail> {
        if plaintext.len() > MAX_FRAME_LEN {
            return Err(NoiseFail(format!(
                "noise: outgoing node of {} bytes exceeds {MAX_FRAME_LEN}",
                plaintext.len()
            )));
        }
        let ciphertext = self
            .write
            .encrypt_with_counter(self.write_counter, plaintext)
            .map_err(|e| fail("encrypt frame", e))?;
        self.write_counter = self.write_counter.wrapping_add(1);
        encode_frame(&ciphertext, None).map_err(|e| fail("frame", e))
    }
}
