//! The deliver stage's offset commits on librdkafka's in-process mock
//! cluster, whose group coordinator can be told to fail the next requests.

use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::generate::{GenOptions, Generator};
use crate::manifest::{self, Overrides, Plan};
use crate::run::StreamOptions;

const EVENTS: u64 = 300;
const PARTITIONS: i32 = 3;

/// A failed commit loses nothing and is not forgotten: its offsets go back
/// to the uncommitted ones and a later commit sends them. Here the roll's
/// commit and the first retry at the end of the run both fail (the
/// coordinator answers `OFFSET_METADATA_TOO_LARGE`, an error librdkafka does
/// not retry by itself); the group must still end with every partition
/// committed at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_whose_commit_failed_are_committed_by_a_later_commit() {
    let mock = MockCluster::new(1).unwrap();
    let loaded = manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/fraud.yaml")).unwrap();
    let source = loaded.manifest.source.kafka().clone();
    let input = source.topics[0].clone();
    let sinks = loaded.manifest.sinks.kafka.clone().unwrap();
    mock.create_topic(&input, PARTITIONS, 1).unwrap();
    mock.create_topic(&sinks.results_topic, PARTITIONS, 1).unwrap();
    mock.create_topic(&sinks.dlq_topic, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();

    let mut gen = Generator::new(GenOptions::default());
    let records = (0..EVENTS).map(|_| gen.next_record());
    assert_eq!(crate::kafka_util::produce(&bootstrap, &input, None, records, &[]).await.unwrap(), EVENTS);

    let too_large = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE;
    mock.request_errors(RDKafkaApiKey::OffsetCommit, &[too_large, too_large]);

    let tables = tempfile::tempdir().unwrap();
    let overrides = Overrides { bootstrap_servers: Some(bootstrap.clone()), tables: Some(tables.path().to_path_buf()) };
    let plan = Plan::build(&loaded, &overrides).unwrap();
    let summary = crate::run::stream(
        &plan,
        StreamOptions {
            idle_exit: Some(Duration::from_millis(1500)),
            startup_timeout: Some(Duration::from_secs(30)),
            skip_topic_creation: true,
            ..StreamOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.predictions + summary.dlq, EVENTS, "every event accounted for");

    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", &source.group_id).create().unwrap();
    let mut wanted = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(&input, p);
        ends.push(consumer.fetch_watermarks(&input, p, Duration::from_secs(10)).unwrap().1);
    }
    assert_eq!(ends.iter().sum::<i64>(), EVENTS as i64);
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10)).unwrap();
    for (p, end) in ends.into_iter().enumerate() {
        let at = committed.find_partition(&input, p as i32).unwrap().offset();
        assert_eq!(at, Offset::Offset(end), "partition {p}: committed {at:?}, the partition ends at {end}");
    }
}
