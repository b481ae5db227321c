//! Pacing as the delivery loop really applies it, under tokio's paused clock: the typing duration,
//! the gap between replies, the gaps between chunks and the chunk boundaries are exactly what the
//! configuration and the seeded random sequence say.

use clawbox::channel::ChannelCommand;
use clawbox::config::PacingConfig;
use clawbox::delivery::{Delivery, Job};
use clawbox::metrics::Metrics;
use clawbox::pacing::Pacer;
use clawbox::store::{OutboxRecord, Store, TurnDone};
use clawbox::vocab::{ChannelKind, ChannelSpec};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

const SPEC: ChannelSpec = ChannelSpec {
    kind: ChannelKind::Telegram,
    max_chars: 100,
};
const SEED: u64 = 42;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Typing(bool),
    Sent(String),
}

async fn queue(store: &Store, text: &str, key: &str) -> Job {
    let rec = OutboxRecord {
        channel: "telegram".into(),
        chat: "7".into(),
        chunks: clawbox::chunk::split(text, SPEC.max_chars),
        next: 0,
        in_flight: false,
        key: key.into(),
        created_ms: clawbox::store::now_ms(),
        ..OutboxRecord::default()
    };
    let seq = store
        .turn_done(TurnDone {
            inbox: vec![],
            session: "s".into(),
            history: None,
            reset: false,
            new_generation: false,
            reply: Some(rec.clone()),
        })
        .await
        .unwrap()
        .unwrap();
    Job { seq, rec }
}

#[tokio::test(start_paused = true)]
async fn typing_gaps_and_chunks_are_exactly_as_configured() {
    let metrics = Arc::new(Metrics::default());
    let store = Store::open_in_memory(metrics.clone()).unwrap();
    let cfg = PacingConfig::default();
    let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
    let seen: Arc<Mutex<Vec<(Instant, Seen)>>> = Arc::default();
    let s = seen.clone();
    let (all_sent_tx, all_sent_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // Done when both replies were sent and typing was switched off after each.
        let (mut sends, mut offs) = (0, 0);
        let mut all_sent = Some(all_sent_tx);
        while let Some(cmd) = cmd_rx.recv().await {
            match cmd {
                ChannelCommand::Typing { on, .. } => {
                    s.lock().unwrap().push((Instant::now(), Seen::Typing(on)));
                    offs += usize::from(!on);
                }
                ChannelCommand::Send {
                    text, arm, done, ..
                } => {
                    arm.arm(0).await.unwrap();
                    s.lock().unwrap().push((Instant::now(), Seen::Sent(text)));
                    let _ = done.send(Ok(()));
                    sends += 1;
                }
                ChannelCommand::Reconcile { .. } => panic!("nothing was in doubt"),
                ChannelCommand::React { .. } => panic!("delivery never reacts"),
            }
            if sends == 4 && offs == 2 {
                if let Some(tx) = all_sent.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let t0 = Instant::now();
    let mut twin = Pacer::new(&cfg, SEED, t0);
    let delivery = Delivery::new(SPEC, &cfg, SEED, store.clone(), metrics.clone(), cmd_tx);
    let (jobs_tx, jobs_rx) = mpsc::channel(4);
    let (_trigger, shutdown) = clawbox::shutdown::Shutdown::new();
    tokio::spawn(delivery.run(jobs_rx, shutdown));

    let long = format!(
        "{}\n\n{}\n\n{}",
        "a".repeat(60),
        "b".repeat(70),
        "c".repeat(50)
    );
    let short = "Sure.";
    let job1 = queue(&store, &long, "k1").await;
    let chunks = job1.rec.chunks.clone();
    assert_eq!(
        chunks,
        vec!["a".repeat(60), "b".repeat(70), "c".repeat(50)],
        "split on the paragraph boundaries"
    );
    jobs_tx.send(job1).await.unwrap();
    let job2 = queue(&store, short, "k2").await;
    jobs_tx.send(job2).await.unwrap();
    all_sent_rx.await.unwrap();

    // The same seed predicts every instant.
    let p1 = twin.plan_first(t0, 60);
    assert_eq!(p1.typing_at, t0, "typing starts at once");
    assert_eq!(
        p1.send_at - p1.typing_at,
        Duration::from_millis(800 + 30 * 60),
        "typing = 800 + 30 × chars"
    );
    twin.on_sent(p1.send_at);
    let p2 = twin.plan_next_chunk(p1.send_at);
    twin.on_sent(p2.send_at);
    let p3 = twin.plan_next_chunk(p2.send_at);
    twin.on_sent(p3.send_at);
    let p4 = twin.plan_first(p3.send_at, short.len());

    let seen = seen.lock().unwrap().clone();
    let sends: Vec<(Instant, String)> = seen
        .iter()
        .filter_map(|(t, s)| {
            if let Seen::Sent(x) = s {
                Some((*t, x.clone()))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        sends.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>(),
        vec![
            chunks[0].clone(),
            chunks[1].clone(),
            chunks[2].clone(),
            short.to_string()
        ]
    );
    assert_eq!(sends[0].0, p1.send_at);
    assert_eq!(sends[1].0, p2.send_at);
    assert_eq!(sends[2].0, p3.send_at);
    assert_eq!(sends[3].0, p4.send_at);
    for (a, b) in [(0, 1), (1, 2)] {
        let gap = sends[b].0 - sends[a].0;
        assert!(
            gap >= Duration::from_millis(300) && gap <= Duration::from_millis(1000),
            "chunk gap {gap:?}"
        );
    }
    let reply_gap = sends[3].0 - sends[2].0;
    assert!(
        reply_gap >= Duration::from_millis(1500) && reply_gap <= Duration::from_millis(3500),
        "reply gap {reply_gap:?}"
    );
    assert!(
        sends[3].0 - p4.typing_at == Duration::from_millis(800 + 30 * 5),
        "the second reply is typed for its length too"
    );
    // Typing was shown before the first send of each reply, and turned off after each reply.
    let typing: Vec<(Instant, bool)> = seen
        .iter()
        .filter_map(|(t, s)| {
            if let Seen::Typing(on) = s {
                Some((*t, *on))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(typing.first(), Some(&(p1.typing_at, true)));
    assert!(typing.contains(&(p4.typing_at, true)), "{typing:?}");
    assert_eq!(typing.iter().filter(|(_, on)| !on).count(), 2, "{typing:?}");
    store.close().await;
}

#[test]
fn a_10000_character_reply_is_three_telegram_messages_on_boundaries() {
    let sentence = "This sentence is part of a long answer. ";
    let text: String = sentence.repeat(250);
    assert_eq!(text.chars().count(), 10_000);
    let chunks = clawbox::chunk::split(&text, 4096);
    assert_eq!(chunks.len(), 3);
    for c in &chunks {
        assert!(c.chars().count() <= 4096);
        assert!(
            c.ends_with('.'),
            "split on a sentence boundary: …{}",
            &c[c.len() - 20..]
        );
    }
    assert_eq!(chunks.join(" "), text.trim_end());
}
