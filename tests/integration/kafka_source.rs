//! The Kafka source against a real broker: every record once, and a slow
//! reader pauses the consumer instead of losing or buffering without bound.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_ingest::{KafkaSource, KafkaSourceConfig};

use crate::broker;
use crate::support::*;

fn config(bootstrap: &str, topic: &str, group: &str) -> KafkaSourceConfig {
    serde_yaml::from_str(&format!(
        "{{bootstrap_servers: '{bootstrap}', topics: [{topic}], group_id: {group}, chunk_size: 100, max_queued_chunks: 1}}"
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_pauses_consumer_and_every_record_arrives_once() {
    let bootstrap = broker::bootstrap();
    let topic = unique("src");
    let group = unique("src-group");
    let b2 = bootstrap.clone();
    let t2 = topic.clone();
    tokio::task::spawn_blocking(move || {
        create_topics(&b2, &[(&t2, 2)]);
        let payloads: Vec<Vec<u8>> = (0..2000).map(|i| format!("{{\"i\":{i}}}").into_bytes()).collect();
        produce(&b2, &t2, &payloads);
    })
    .await
    .unwrap();

    let mut src =
        KafkaSource::start(&config(&bootstrap, &topic, &group), Some(Duration::from_secs(3)), Duration::from_secs(30))
            .unwrap();
    let stats = src.stats();
    let mut seen = HashSet::new();
    let mut last = std::collections::HashMap::new();
    while let Some(chunk) = src.next_chunk().await {
        assert!(chunk.len() <= 100);
        for r in &chunk {
            assert!(seen.insert((r.partition, r.offset)), "record delivered twice");
            last.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        // A slow pipeline: the source must pause rather than queue more.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 2000);
    assert!(stats.pauses.load(std::sync::atomic::Ordering::Relaxed) > 0, "consumer paused under backpressure");
    src.committer().commit(&last).unwrap();
    src.stop().await.unwrap();
    let c = tokio::task::spawn_blocking(move || committed(&bootstrap, &group, &topic, 2)).await.unwrap();
    assert_eq!(c.values().sum::<i64>(), 2000, "commits land on the broker");
}
