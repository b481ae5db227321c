//! In-memory Signal stores for one mock peer (a contact or the account's phone): its identity,
//! registration id, signed pre-key, one-time pre-keys, and its sessions with the linked client.
//! Owns only key material held in `HashMap`s; never does I/O, never distrusts an identity (the
//! fake's peers trust on first use, as WhatsApp's clients do).

use std::collections::HashMap;

use whatsapp_rust::async_trait;
use whatsapp_rust::wacore::libsignal::protocol::{
    Direction, GenericSignedPreKey, IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore,
    KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeyStore, ProtocolAddress, SessionRecord,
    SessionStore, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore,
    Timestamp,
};

type SignalResult<T> = Result<T, SignalProtocolError>;

/// One-time pre-keys a mock peer mints up front: each inbound pkmsg from the client consumes at
/// most one, and a peer is created per contact per test, so a handful is plenty.
pub const PEER_ONE_TIME_PREKEYS: u32 = 8;
/// Id of the single signed pre-key every mock peer publishes.
const SIGNED_PREKEY_ID: u32 = 1;

/// A peer's whole Signal state, one field per libsignal store trait so a call can borrow each
/// store mutably at once (libsignal takes them as separate `&mut dyn` arguments).
pub struct PeerStore {
    pub identity: Identities,
    pub sessions: Sessions,
    pub prekeys: PreKeys,
    pub signed: SignedPreKeys,
}

pub struct Identities {
    pair: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

#[derive(Default)]
pub struct Sessions(HashMap<String, SessionRecord>);

#[derive(Default)]
pub struct PreKeys(HashMap<u32, PreKeyRecord>);

pub struct SignedPreKeys(SignedPreKeyRecord);

impl PeerStore {
    /// A fresh peer with its own identity `identity_pair` (the phone passes the account key).
    pub fn new(identity_pair: &KeyPair) -> Self {
        let mut rng = rand::rng();
        let pair = IdentityKeyPair::new(
            IdentityKey::new(identity_pair.public_key),
            identity_pair.private_key.clone(),
        );
        let signed_pair = KeyPair::generate(&mut rng);
        let signature = identity_pair
            .private_key
            .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let signed_prekey = SignedPreKeyRecord::new(
            SignedPreKeyId::from(SIGNED_PREKEY_ID),
            Timestamp::from_epoch_millis(0),
            &signed_pair,
            &signature,
        );
        let prekeys = (1..=PEER_ONE_TIME_PREKEYS)
            .map(|id| {
                let pair = KeyPair::generate(&mut rng);
                (id, PreKeyRecord::new(PreKeyId::from(id), &pair))
            })
            .collect();
        Self {
            identity: Identities {
                pair,
                registration_id: fastrand::u32(1..16_380),
                known: HashMap::new(),
            },
            sessions: Sessions::default(),
            prekeys: PreKeys(prekeys),
            signed: SignedPreKeys(signed_prekey),
        }
    }

    /// The bundle the fake server hands out for this peer (device 0). The one-time pre-key with
    /// the lowest id is offered; its record stays until a pkmsg consumes it.
    pub fn bundle(&self) -> SignalResult<PreKeyBundle> {
        let one_time = match self.prekeys.0.keys().min().copied() {
            Some(id) => Some((PreKeyId::from(id), self.prekeys.0[&id].public_key()?)),
            None => None,
        };
        PreKeyBundle::new(
            self.identity.registration_id,
            0u32.into(),
            one_time,
            SignedPreKeyId::from(SIGNED_PREKEY_ID),
            self.signed.0.public_key()?,
            self.signed.0.signature()?.to_vec(),
            *self.identity.pair.identity_key(),
        )
    }

    /// The registration id this peer announces (in its bundles and retry receipts).
    pub fn registration_id(&self) -> u32 {
        self.identity.registration_id
    }

    pub fn has_session(&self, address: &ProtocolAddress) -> bool {
        self.sessions.0.contains_key(&address.to_string())
    }
}

#[async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.pair.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let previous = self.known.insert(address.to_string(), *identity);
        Ok(match previous {
            Some(old) if old != *identity => IdentityChange::ReplacedExisting,
            _ => IdentityChange::NewOrUnchanged,
        })
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(&address.to_string()).copied())
    }
}

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(&address.to_string()).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(&address.to_string()))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.to_string(), record);
        Ok(())
    }
}

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0
            .get(&u32::from(prekey_id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(prekey_id), record.clone());
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        if u32::from(id) == SIGNED_PREKEY_ID {
            Ok(self.0.clone())
        } else {
            Err(SignalProtocolError::InvalidSignedPreKeyId)
        }
    }

    async fn save_signed_pre_key(
        &mut self,
        _id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0 = record.clone();
        Ok(())
    }
}
