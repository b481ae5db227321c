//! Faults the tests inject through the admin API (`POST /faults`): a dead or blackholed link,
//! corrupted frames, stream errors, a conflict, a server-side replay.

use super::nodes::{self};
use super::server::*;

impl World {
    // ---- faults --------------------------------------------------------------------------

    pub fn fault(&mut self, kind: &str, code: Option<u16>) -> Result<(), String> {
        match kind {
            "heal" => {
                self.blackhole.send_replace(false);
                if let Some(c) = self.conn.as_mut() {
                    c.blackholed = false;
                    let _ = c.tx.try_send(Cmd::Heal);
                }
                Ok(())
            }
            "blackhole" => {
                self.blackhole.send_replace(true);
                if let Some(c) = self.conn.as_mut() {
                    c.blackholed = true;
                    let _ = c.tx.try_send(Cmd::Blackhole);
                }
                Ok(())
            }
            // A server-side replay: every message delivered so far is queued again (same id, same
            // ciphertext) and the link drops, so the reconnecting client gets them offline.
            "replay" => {
                let c = self.conn.as_mut().ok_or("fault: no client connected")?;
                c.tx.try_send(Cmd::Close)
                    .map_err(|_| "fault: connection queue full".to_string())?;
                for node in self.delivered.clone() {
                    if self.offline.len() >= OFFLINE_QUEUE_CAP {
                        break;
                    }
                    self.offline.push_back(node);
                }
                Ok(())
            }
            "bad-decrypt" | "garbage-node" | "truncated" | "oversized" => {
                let c = self.conn.as_mut().ok_or("fault: no client connected")?;
                let cmd = match kind {
                    "bad-decrypt" => {
                        let mut f = vec![0, 0, BAD_CIPHERTEXT_LEN as u8];
                        f.extend((0..BAD_CIPHERTEXT_LEN).map(|_| fastrand::u8(..)));
                        Cmd::RawWs(f)
                    }
                    "garbage-node" => Cmd::SealRaw(GARBAGE_NODE.to_vec()),
                    // A header promising 1000 bytes, 10 of them sent, then the link is cut.
                    "truncated" => {
                        let mut f = vec![0x00, 0x03, 0xe8];
                        f.extend([0xab; 10]);
                        Cmd::RawWsCut(f)
                    }
                    _ => {
                        let mut f = vec![0xff, 0xff, 0xff];
                        f.resize(OVERSIZED_LEN, 0x5a);
                        Cmd::RawWs(f)
                    }
                };
                c.tx.try_send(cmd)
                    .map_err(|_| "fault: connection queue full".to_string())
            }
            "drop" | "stream-error" | "conflict" => {
                let c = self.conn.as_mut().ok_or("fault: no client connected")?;
                let cmd = match kind {
                    "drop" => Cmd::Close,
                    "stream-error" => Cmd::SendClose(nodes::stream_error(code.unwrap_or(515))),
                    _ => Cmd::SendClose(nodes::conflict_replaced()),
                };
                c.tx.try_send(cmd)
                    .map_err(|_| "fault: connection queue full".to_string())
            }
            other => Err(format!("fault: unknown kind {other}")),
        }
    }
}
