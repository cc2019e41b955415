//! The Kafka source against a real broker: a slow reader gets every record
//! exactly once, whether the consumer stops reading while processing is
//! behind or pauses its partitions for a longer stall, and its commits land
//! on the broker.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_ingest::{KafkaSource, KafkaSourceConfig};

use crate::broker;
use crate::support::*;

/// 2,000 records over 2 partitions read by a source with `pause_after_ms`,
/// stalling `stall` every 500 records; returns how often it paused.
async fn read_slowly(name: &str, pause_after_ms: u64, stall: Duration) -> u64 {
    let bootstrap = broker::bootstrap();
    let topic = unique(name);
    let group = unique(&format!("{name}-group"));
    let (b2, t2) = (bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        create_topics(&b2, &[(&t2, 2)]);
        let payloads: Vec<Vec<u8>> = (0..2000).map(|i| format!("{{\"i\":{i}}}").into_bytes()).collect();
        produce(&b2, &t2, &payloads);
    })
    .await
    .unwrap();

    let config: KafkaSourceConfig = serde_yaml::from_str(&format!(
        "{{bootstrap_servers: '{bootstrap}', topics: [{topic}], group_id: {group}, chunk_size: 100, max_queued_chunks: 1, pause_after_ms: {pause_after_ms}}}"
    ))
    .unwrap();
    let mut src = KafkaSource::start(&config, Some(Duration::from_secs(3)), Duration::from_secs(30)).unwrap();
    let stats = src.stats();
    let mut seen = HashSet::new();
    let mut next = std::collections::HashMap::new();
    while let Some(chunk) = src.next_chunk().await {
        assert!(chunk.len() <= 100, "chunks are bounded");
        for r in &chunk {
            assert!(seen.insert((r.partition, r.offset)), "record delivered twice");
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        let pause = if seen.len() % 500 < 100 { stall } else { Duration::from_millis(10) };
        tokio::time::sleep(pause).await;
    }
    assert_eq!(seen.len(), 2000, "every record arrives once");
    src.committer().commit(&next).unwrap();
    src.stop().await.unwrap();
    let c = tokio::task::spawn_blocking(move || committed(&bootstrap, &group, &topic, 2)).await.unwrap();
    assert_eq!(c.values().sum::<i64>(), 2000, "commits land on the broker");
    stats.pauses.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_every_record_once_and_commits_land() {
    let pauses = read_slowly("src", 60_000, Duration::from_millis(10)).await;
    assert_eq!(pauses, 0, "short stalls are absorbed without pausing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_and_resumed_partitions_deliver_every_record_once() {
    let pauses = read_slowly("pause", 50, Duration::from_millis(300)).await;
    assert!(pauses > 0, "the consumer paused under backpressure");
}
