//! The Kafka source on librdkafka's in-process mock cluster: backpressure
//! pauses the consumer, nothing is lost or duplicated, commits land.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use switchyard_ingest::{KafkaSource, KafkaSourceConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_pipeline_pauses_consumer_and_every_record_arrives_once() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("tx", 2, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    for i in 0..2000 {
        let payload = format!("{{\"i\":{i}}}");
        producer
            .send(FutureRecord::to("tx").key("k").payload(&payload).partition(i % 2), Duration::from_secs(5))
            .await
            .unwrap();
    }

    let config: KafkaSourceConfig = serde_yaml::from_str(&format!(
        "{{bootstrap_servers: '{bootstrap}', topics: [tx], group_id: g1, chunk_size: 100, max_queued_chunks: 1, pause_after_ms: 50}}"
    ))
    .unwrap();
    let mut src = KafkaSource::start(&config, Some(Duration::from_secs(3)), Duration::from_secs(30)).unwrap();
    let stats = src.stats();
    let mut seen = HashSet::new();
    let mut next = HashMap::new();
    while let Some(chunk) = src.next_chunk().await {
        assert!(chunk.len() <= 100, "chunks are bounded");
        for r in &chunk {
            assert!(seen.insert((r.partition, r.offset)), "record delivered twice");
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        if seen.len() % 500 < 100 {
            // A stall longer than pause_after_ms: the consumer must pause.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(seen.len(), 2000, "every record arrives after pauses");
    assert!(stats.pauses.load(Ordering::Relaxed) > 0, "the consumer paused under backpressure");
    let committer = src.committer();
    committer.commit(&next).unwrap();
    let committed = committer.committed(Duration::from_secs(5)).unwrap();
    assert_eq!(committed.values().sum::<i64>(), 2000, "commits land in the group");
    src.stop().await.unwrap();
}
