//! Process-wide counters and gauges, rendered in the Prometheus text format for `/metrics`.
//!
//! Lock-free atomics in one fixed struct: no registry, no labels allocated at run time, so memory
//! does not grow with uptime. Per-channel series are arrays indexed by [`ChannelKind::index`].

use crate::vocab::{ChannelKind, PerChannel};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the turn latency histogram buckets; +Inf is implicit.
pub const TURN_LATENCY_BUCKETS: [f64; 10] =
    [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Why an inbound message was dropped before reaching an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    NotAllowed,
    Disabled,
    Group,
    Duplicate,
    SelfEcho,
    TooLarge,
    /// A group not in `[channels.*.groups]` `allow` (or groups are on but this one is not listed).
    GroupNotAllowed,
    /// A sender the group's `allow_from` does not name.
    GroupSenderNotAllowed,
    /// A group message that does not address the assistant: no turn, no write; kept in memory as
    /// recent context for the next message that does (see `recent`).
    GroupUnaddressed,
    /// WhatsApp status updates (`status@broadcast`).
    Status,
    /// WhatsApp broadcast lists' copies.
    BroadcastList,
    /// WhatsApp channel posts (newsletters).
    Newsletter,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::NotAllowed,
        DropReason::Disabled,
        DropReason::Group,
        DropReason::Duplicate,
        DropReason::SelfEcho,
        DropReason::TooLarge,
        DropReason::GroupNotAllowed,
        DropReason::GroupSenderNotAllowed,
        DropReason::GroupUnaddressed,
        DropReason::Status,
        DropReason::BroadcastList,
        DropReason::Newsletter,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotAllowed => "not_allowed",
            DropReason::Disabled => "dm_disabled",
            DropReason::Group => "group",
            DropReason::Duplicate => "duplicate",
            DropReason::SelfEcho => "self_echo",
            DropReason::TooLarge => "too_large",
            DropReason::GroupNotAllowed => "group_not_allowed",
            DropReason::GroupSenderNotAllowed => "group_sender_not_allowed",
            DropReason::GroupUnaddressed => "group_unaddressed",
            DropReason::Status => "status",
            DropReason::BroadcastList => "broadcast_list",
            DropReason::Newsletter => "newsletter",
        }
    }
}

/// How a turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnOutcome {
    Ok,
    AckTimeout,
    AccumulationTimeout,
    AgentError,
}

impl TurnOutcome {
    pub const ALL: [TurnOutcome; 4] = [
        TurnOutcome::Ok,
        TurnOutcome::AckTimeout,
        TurnOutcome::AccumulationTimeout,
        TurnOutcome::AgentError,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TurnOutcome::Ok => "ok",
            TurnOutcome::AckTimeout => "ack_timeout",
            TurnOutcome::AccumulationTimeout => "accumulation_timeout",
            TurnOutcome::AgentError => "agent_error",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub messages_in: PerChannel<AtomicU64>,
    pub messages_out: PerChannel<AtomicU64>,
    pub send_failures: PerChannel<AtomicU64>,
    pub reconnects: PerChannel<AtomicU64>,
    pub malformed: PerChannel<AtomicU64>,
    dropped: PerChannel<[AtomicU64; DropReason::ALL.len()]>,
    turns: [AtomicU64; TurnOutcome::ALL.len()],
    turn_latency_buckets: [AtomicU64; TURN_LATENCY_BUCKETS.len()],
    turn_latency_count: AtomicU64,
    turn_latency_sum_ms: AtomicU64,
    pub resets: AtomicU64,
    /// Reactions to replies noted as feedback for the session's next turn.
    pub feedback: AtomicU64,
    /// Acknowledgement reactions put on a message whose reply took longer than the threshold.
    pub ack_reactions: AtomicU64,
    pub turns_in_flight: AtomicU64,
    pub queued_messages: AtomicU64,
    pub inbox_pending: AtomicU64,
    pub outbox_pending: AtomicU64,
    pub store_commits: AtomicU64,
    pub store_fsyncs: AtomicU64,
    pub store_bytes_written: AtomicU64,
    pub task_restarts: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, ch: ChannelKind, why: DropReason) {
        self.dropped[ch][why as usize].fetch_add(1, Relaxed);
    }

    pub fn dropped_count(&self, ch: ChannelKind, why: DropReason) -> u64 {
        self.dropped[ch][why as usize].load(Relaxed)
    }

    pub fn turn(&self, outcome: TurnOutcome, latency: std::time::Duration) {
        self.turns[outcome as usize].fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        for (i, bound) in TURN_LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.turn_latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.turn_latency_count.fetch_add(1, Relaxed);
        self.turn_latency_sum_ms
            .fetch_add(latency.as_millis() as u64, Relaxed);
    }

    /// The whole set in Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let per_channel =
            |out: &mut String, name: &str, help: &str, arr: &PerChannel<AtomicU64>| {
                let _ = writeln!(
                    out,
                    "# HELP clawbox_{name} {help}\n# TYPE clawbox_{name} counter"
                );
                for ch in ChannelKind::ALL {
                    let _ = writeln!(
                        out,
                        "clawbox_{name}{{channel=\"{ch}\"}} {}",
                        arr[ch].load(Relaxed)
                    );
                }
            };
        per_channel(
            &mut out,
            "messages_in_total",
            "Inbound messages accepted into the inbox.",
            &self.messages_in,
        );
        per_channel(
            &mut out,
            "messages_out_total",
            "Reply chunks confirmed sent by the channel.",
            &self.messages_out,
        );
        per_channel(
            &mut out,
            "send_failures_total",
            "Send attempts that failed.",
            &self.send_failures,
        );
        per_channel(
            &mut out,
            "reconnects_total",
            "Channel (re)connections after a loss.",
            &self.reconnects,
        );
        per_channel(
            &mut out,
            "malformed_total",
            "Malformed frames or updates skipped.",
            &self.malformed,
        );

        let _ = writeln!(
            out,
            "# HELP clawbox_messages_dropped_total Inbound messages dropped before any agent call.\n# TYPE clawbox_messages_dropped_total counter"
        );
        for ch in ChannelKind::ALL {
            for why in DropReason::ALL {
                let _ = writeln!(
                    out,
                    "clawbox_messages_dropped_total{{channel=\"{ch}\",reason=\"{}\"}} {}",
                    why.as_str(),
                    self.dropped_count(ch, why)
                );
            }
        }

        let _ = writeln!(
            out,
            "# HELP clawbox_turns_total Agent turns by outcome.\n# TYPE clawbox_turns_total counter"
        );
        for o in TurnOutcome::ALL {
            let _ = writeln!(
                out,
                "clawbox_turns_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                self.turns[o as usize].load(Relaxed)
            );
        }

        let _ = writeln!(
            out,
            "# HELP clawbox_turn_latency_seconds From turn start to the reply.\n# TYPE clawbox_turn_latency_seconds histogram"
        );
        for (i, bound) in TURN_LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "clawbox_turn_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                self.turn_latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.turn_latency_count.load(Relaxed);
        let _ = writeln!(
            out,
            "clawbox_turn_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "clawbox_turn_latency_seconds_sum {}",
            self.turn_latency_sum_ms.load(Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "clawbox_turn_latency_seconds_count {count}");

        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP clawbox_{name} {help}\n# TYPE clawbox_{name} {kind}\nclawbox_{name} {}",
                v.load(Relaxed)
            );
        };
        scalar(
            &mut out,
            "session_resets_total",
            "counter",
            "Sessions reset by a 🗑️ message.",
            &self.resets,
        );
        scalar(
            &mut out,
            "feedback_total",
            "counter",
            "Reactions to replies noted as feedback for the next turn (no turn of their own).",
            &self.feedback,
        );
        scalar(
            &mut out,
            "ack_reactions_total",
            "counter",
            "Acknowledgement reactions put on a message whose reply was slow.",
            &self.ack_reactions,
        );
        scalar(
            &mut out,
            "turns_in_flight",
            "gauge",
            "Agent turns running now.",
            &self.turns_in_flight,
        );
        scalar(
            &mut out,
            "inbox_pending",
            "gauge",
            "Accepted messages not yet answered.",
            &self.inbox_pending,
        );
        scalar(
            &mut out,
            "queued_messages",
            "gauge",
            "Accepted messages waiting for a turn.",
            &self.queued_messages,
        );
        scalar(
            &mut out,
            "outbox_pending",
            "gauge",
            "Replies not yet confirmed sent.",
            &self.outbox_pending,
        );
        scalar(
            &mut out,
            "store_commits_total",
            "counter",
            "Store write transactions committed.",
            &self.store_commits,
        );
        scalar(
            &mut out,
            "store_fsyncs_total",
            "counter",
            "Durable (fsynced) store commits.",
            &self.store_fsyncs,
        );
        scalar(
            &mut out,
            "store_bytes_written_total",
            "counter",
            "Bytes of records written to the store (payload, before redb's page overhead).",
            &self.store_bytes_written,
        );
        scalar(
            &mut out,
            "task_restarts_total",
            "counter",
            "Supervised tasks restarted after a failure.",
            &self.task_restarts,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_what_was_recorded() {
        let m = Metrics::default();
        Metrics::inc(&m.messages_in[ChannelKind::Telegram]);
        m.dropped(ChannelKind::WhatsApp, DropReason::NotAllowed);
        m.turn(TurnOutcome::Ok, std::time::Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("clawbox_messages_in_total{channel=\"telegram\"} 1"));
        assert!(text.contains(
            "clawbox_messages_dropped_total{channel=\"whatsapp\",reason=\"not_allowed\"} 1"
        ));
        assert!(text.contains("clawbox_turn_latency_seconds_bucket{le=\"0.25\"} 0"));
        assert!(text.contains("clawbox_turn_latency_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("clawbox_turns_total{outcome=\"ok\"} 1"));
    }
}
