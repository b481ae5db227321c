//! Fuzz target `store_records`: arbitrary bytes as a stored row, decoded with prost as each record
//! the store keeps (`InboxRecord`, `OutboxRecord`, `SessionRecord`, as `store::writer` does), and
//! whatever decodes is encoded and decoded again. Owns nothing else; never opens a store.
//!
//! Asserts: decoding never panics; a decoded record re-encodes to exactly `encoded_len` bytes and
//! decodes back to itself, and that encoding is stable (encode ∘ decode ∘ encode = encode).
#![no_main]

use clawbox::store::{InboxRecord, OutboxRecord, SessionRecord};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let Ok(rec) = M::decode(bytes) else {
        return;
    };
    let enc = rec.encode_to_vec();
    assert_eq!(enc.len(), rec.encoded_len());
    let back = M::decode(&enc[..]).expect("our own encoding decodes");
    assert_eq!(back, rec, "round trip changed the record");
    assert_eq!(back.encode_to_vec(), enc, "re-encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    round_trip::<InboxRecord>(data);
    round_trip::<OutboxRecord>(data);
    round_trip::<SessionRecord>(data);
});
