//! The on-disk key layout of the `whatsapp` table: every key the backend reads or writes is
//! built here, so the format is reviewed in one place. The keys are the on-disk format: renaming
//! one orphans every row stored under it. Never touches the store.
//!
//! One namespace per family; `\x1f` separates the parts of a composite key:
//! `dev` device · `linked_at` when the account was linked · `id/` identities · `ses/` sessions ·
//! `pk/<10-digit id>` prekeys (first byte: uploaded) · `spk/` signed prekeys · `sk/` sender keys ·
//! `sync/<hex>` app-state keys · `synclatest` · `ver/` app-state versions · `mac/<name>\x1f<hex>`
//! mutation MACs · `skd/<group>\x1f<device>` sender-key status · `lid/` LID→PN · `pn/` PN→LID ·
//! `lid_refreshed_at` when `allow_from` was last resolved to LIDs in full · `bk/` base keys · `dl/` device lists · `gm/` group metadata · `tc/` trusted-contact tokens ·
//! `sent/` sent messages (first 8 bytes: time) · `pin/` pending inbound (first 8 bytes: time) ·
//! `sec/` message secrets.

/// Separator inside composite keys: never part of a JID, a message id or a collection name.
pub(super) const SEP: char = '\x1f';

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(super) fn k_id(a: &str) -> String {
    format!("id/{a}")
}
pub(super) fn k_ses(a: &str) -> String {
    format!("ses/{a}")
}
/// Zero-padded so the keys sort by id.
pub(super) fn k_pk(id: u32) -> String {
    format!("pk/{id:010}")
}
pub(super) fn k_spk(id: u32) -> String {
    format!("spk/{id:010}")
}
pub(super) fn k_sk(a: &str) -> String {
    format!("sk/{a}")
}
pub(super) fn k_sync(id: &[u8]) -> String {
    format!("sync/{}", hex(id))
}
pub(super) const K_SYNC_LATEST: &str = "synclatest";
pub(super) fn k_ver(name: &str) -> String {
    format!("ver/{name}")
}
pub(super) fn k_mac_prefix(name: &str) -> String {
    format!("mac/{name}{SEP}")
}
pub(super) fn k_mac(name: &str, index_mac: &[u8]) -> String {
    format!("mac/{name}{SEP}{}", hex(index_mac))
}
pub(super) fn k_skd_prefix(group: &str) -> String {
    format!("skd/{group}{SEP}")
}
pub(super) fn k_lid(lid: &str) -> String {
    format!("lid/{lid}")
}
pub(super) fn k_pn(pn: &str) -> String {
    format!("pn/{pn}")
}
pub(super) fn k_bk(address: &str, msg: &str) -> String {
    format!("bk/{address}{SEP}{msg}")
}
pub(super) fn k_dl(user: &str) -> String {
    format!("dl/{user}")
}
pub(super) fn k_gm(group: &str) -> String {
    format!("gm/{group}")
}
pub(super) fn k_tc(jid: &str) -> String {
    format!("tc/{jid}")
}
pub(super) fn k_sent(chat: &str, id: &str) -> String {
    format!("sent/{chat}{SEP}{id}")
}
pub(super) fn k_pin(chat: &str, sender: &str, id: &str) -> String {
    format!("pin/{chat}{SEP}{sender}{SEP}{id}")
}
pub(super) fn k_sec(chat: &str, sender: &str, id: &str) -> String {
    format!("sec/{chat}{SEP}{sender}{SEP}{id}")
}
pub(super) const K_DEVICE: &str = "dev";
/// When the account was linked: 8 bytes, big-endian milliseconds since the epoch.
pub(super) const K_LINKED_AT: &str = "linked_at";
/// When every `allow_from` entry was last resolved (ms since the epoch, 8 bytes big-endian).
pub(super) const K_LID_REFRESHED_AT: &str = "lid_refreshed_at";
