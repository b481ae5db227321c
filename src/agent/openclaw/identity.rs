//! The box's OpenClaw device identity: an Ed25519 key pair made once, kept in the store, and the
//! v3 signature over the gateway's `connect.challenge` that proves the box holds it.
//!
//! Owns key generation, loading, the device id / public key encodings and the v3 signing string.
//! Never talks to the network and never logs key material or tokens.

use super::super::AgentError;
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519_PUBLIC_KEY_LEN, Ed25519KeyPair, KeyPair};
use std::fmt;

/// A PKCS#8 Ed25519 document from ring is 83 bytes; anything much larger in the store is not ours.
const MAX_PKCS8_BYTES: usize = 256;
/// A device token is an opaque short string; refuse to keep a stored value past this.
pub const MAX_DEVICE_TOKEN_BYTES: usize = 4096;

/// Store key of the PKCS#8 device key of agent `agent`.
pub fn device_key_name(agent: &str) -> String {
    format!("openclaw.{agent}.device")
}

/// Store key of the device token the gateway issued to agent `agent` after pairing.
pub fn device_token_name(agent: &str) -> String {
    format!("openclaw.{agent}.device_token")
}

/// The device key pair plus its public encodings.
pub struct DeviceIdentity {
    key: Ed25519KeyPair,
    id: String,
    public_key: String,
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// A new random identity and its PKCS#8 document (to be stored).
    pub fn generate() -> Result<(DeviceIdentity, Vec<u8>), String> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "could not generate an Ed25519 key (no system randomness?)".to_string())?;
        let pkcs8 = doc.as_ref().to_vec();
        Ok((DeviceIdentity::from_pkcs8(&pkcs8)?, pkcs8))
    }

    /// Loads an identity from its PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<DeviceIdentity, String> {
        if pkcs8.len() > MAX_PKCS8_BYTES {
            return Err(format!(
                "stored device key is {} bytes, at most {MAX_PKCS8_BYTES} expected",
                pkcs8.len()
            ));
        }
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| format!("stored device key does not parse as Ed25519 PKCS#8: {e}"))?;
        let raw = key.public_key().as_ref();
        debug_assert_eq!(raw.len(), ED25519_PUBLIC_KEY_LEN);
        let digest = ring::digest::digest(&ring::digest::SHA256, raw);
        let id = hex(digest.as_ref());
        let public_key = URL_SAFE_NO_PAD.encode(raw);
        Ok(DeviceIdentity {
            key,
            id,
            public_key,
        })
    }

    /// Hex SHA-256 of the raw 32-byte public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// base64url (no padding) of the raw 32-byte public key.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// base64url (no padding) Ed25519 signature of `payload`'s UTF-8 bytes.
    pub fn sign(&self, payload: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.key.sign(payload.as_bytes()).as_ref())
    }
}

/// The fields the v3 device signature binds.
pub struct SignInput<'a> {
    pub device_id: &'a str,
    pub client_id: &'a str,
    pub client_mode: &'a str,
    pub role: &'a str,
    pub scopes: &'a [&'a str],
    pub signed_at_ms: u64,
    /// The token sent in `auth` (shared token or device token); empty if none.
    pub token: &'a str,
    pub nonce: &'a str,
    pub platform: &'a str,
    pub device_family: &'a str,
}

/// `v3|<deviceId>|<clientId>|<clientMode>|<role>|<scopes,>|<signedAtMs>|<token>|<nonce>|<platform>|<deviceFamily>`,
/// platform and device family trimmed and ASCII-lower-cased as the gateway does.
pub fn payload_v3(i: &SignInput<'_>) -> String {
    format!(
        "v3|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        i.device_id,
        i.client_id,
        i.client_mode,
        i.role,
        i.scopes.join(","),
        i.signed_at_ms,
        i.token,
        i.nonce,
        i.platform.trim().to_ascii_lowercase(),
        i.device_family.trim().to_ascii_lowercase(),
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The identity of agent `agent`: loaded from the store, or made and stored on first use. A stored
/// value that does not parse is replaced (the gateway will then ask for pairing again), because a
/// box that cannot connect at all is worse.
pub async fn load_or_create(store: &Store, agent: &str) -> Result<DeviceIdentity, AgentError> {
    let name = device_key_name(agent);
    let stored = store
        .auth(&name)
        .await
        .map_err(|e| AgentError::Unreachable(format!("reading the device key: {e}")))?;
    if let Some(bytes) = stored {
        match DeviceIdentity::from_pkcs8(&bytes) {
            Ok(id) => return Ok(id),
            Err(e) => tracing::warn!(agent, error = %e, "replacing an unreadable device key"),
        }
    }
    let (identity, pkcs8) = DeviceIdentity::generate().map_err(AgentError::Unreachable)?;
    store
        .set_auth(&name, pkcs8)
        .await
        .map_err(|e| AgentError::Unreachable(format!("saving the device key: {e}")))?;
    tracing::info!(agent, device = %identity.id(), "created an OpenClaw device identity");
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn id_is_hex_sha256_of_the_raw_key_and_signature_verifies() {
        let (id, pkcs8) = DeviceIdentity::generate().unwrap();
        let raw = URL_SAFE_NO_PAD.decode(id.public_key()).unwrap();
        assert_eq!(raw.len(), 32);
        let digest = ring::digest::digest(&ring::digest::SHA256, &raw);
        assert_eq!(id.id(), hex(digest.as_ref()));
        assert_eq!(id.id().len(), 64);
        let sig = URL_SAFE_NO_PAD.decode(id.sign("hello")).unwrap();
        UnparsedPublicKey::new(&ED25519, &raw)
            .verify(b"hello", &sig)
            .unwrap();
        // Reloading gives the same identity.
        let again = DeviceIdentity::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(again.id(), id.id());
        assert!(DeviceIdentity::from_pkcs8(b"junk").is_err());
    }

    #[test]
    fn v3_payload_matches_the_gateway_layout() {
        let p = payload_v3(&SignInput {
            device_id: "dev",
            client_id: "gateway-client",
            client_mode: "backend",
            role: "operator",
            scopes: &["operator.read", "operator.write"],
            signed_at_ms: 1737264000000,
            token: "tok",
            nonce: "n1",
            platform: " Linux ",
            device_family: "",
        });
        assert_eq!(
            p,
            "v3|dev|gateway-client|backend|operator|operator.read,operator.write|1737264000000|tok|n1|linux|"
        );
    }
}
