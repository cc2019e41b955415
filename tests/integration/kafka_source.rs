//! The Kafka source against a real broker: a slow reader gets every record
//! exactly once (the consumer stops reading while processing is behind) and
//! its commits land on the broker. Pausing partitions is covered on the mock
//! cluster (`ingest/tests/mock_kafka.rs`): tansu 0.6 does not serve a resumed
//! partition reliably.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_ingest::{KafkaSource, KafkaSourceConfig};

use crate::broker;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_gets_every_record_once_and_commits_land() {
    let bootstrap = broker::bootstrap();
    let topic = unique("src");
    let group = unique("src-group");
    let (b2, t2) = (bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        create_topics(&b2, &[(&t2, 2)]);
        let payloads: Vec<Vec<u8>> = (0..2000).map(|i| format!("{{\"i\":{i}}}").into_bytes()).collect();
        produce(&b2, &t2, &payloads);
    })
    .await
    .unwrap();

    let config: KafkaSourceConfig = serde_yaml::from_str(&format!(
        "{{bootstrap_servers: '{bootstrap}', topics: [{topic}], group_id: {group}, chunk_size: 100, max_queued_chunks: 1, pause_after_ms: 60000}}"
    ))
    .unwrap();
    let mut src = KafkaSource::start(&config, Some(Duration::from_secs(3)), Duration::from_secs(30)).unwrap();
    let mut seen = HashSet::new();
    let mut next = std::collections::HashMap::new();
    while let Some(chunk) = src.next_chunk().await {
        assert!(chunk.len() <= 100, "chunks are bounded");
        for r in &chunk {
            assert!(seen.insert((r.partition, r.offset)), "record delivered twice");
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.len(), 2000);
    src.committer().commit(&next).unwrap();
    src.stop().await.unwrap();
    let c = tokio::task::spawn_blocking(move || committed(&bootstrap, &group, &topic, 2)).await.unwrap();
    assert_eq!(c.values().sum::<i64>(), 2000, "commits land on the broker");
}
