//! Small Kafka helpers for the CLI: topic creation and bulk producing.

use std::time::Duration;

use anyhow::Context as _;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;

use switchyard_schemas::headers;

use crate::generate::GenRecord;

/// A client configuration with only `bootstrap.servers`.
pub fn plain(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Creates `topics` (name, partitions) with the client configuration
/// `config` (brokers and security); existing topics are fine. `replication`
/// -1 takes the broker's `default.replication.factor`.
pub async fn create_topics(config: &ClientConfig, topics: &[(&str, i32)], replication: i32) -> anyhow::Result<()> {
    let bootstrap = config.get("bootstrap.servers").unwrap_or_default().to_string();
    let admin: AdminClient<DefaultClientContext> = config.create().context("creating Kafka admin client")?;
    let new: Vec<NewTopic<'_>> =
        topics.iter().map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(replication))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&new, &opts).await.context("creating topics")? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating topic `{t}` on {bootstrap}: {e}"),
        }
    }
    Ok(())
}

/// Produces `records` to `topic` — those asking for the `realtime` tier to
/// `realtime_topic` when given — and waits for every acknowledgement.
/// `properties` are passed to librdkafka after switchyard's defaults.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    realtime_topic: Option<&str>,
    records: impl Iterator<Item = GenRecord>,
    properties: &[(String, String)],
) -> anyhow::Result<u64> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "500000");
    for (k, v) in properties {
        config.set(k, v);
    }
    let producer: FutureProducer = config.create().context("creating Kafka producer")?;
    // Learn the topic's leaders first: otherwise the first records wait about
    // half a second for them, and a paced run (`--rate`) starts with a burst.
    let client = producer.client();
    for t in std::iter::once(topic).chain(realtime_topic) {
        tokio::task::block_in_place(|| client.fetch_metadata(Some(t), Duration::from_secs(10)))
            .with_context(|| format!("reading the metadata of topic `{t}` from {bootstrap}"))?;
    }
    // A sliding window of unacknowledged records: only the oldest is awaited
    // when it is full, so a paced run never stops to wait for a whole batch.
    let mut pending = std::collections::VecDeque::new();
    let mut n = 0u64;
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let to = match realtime_topic {
            Some(t) if r.headers.iter().any(|(k, v)| k == headers::LATENCY_TIER && v == "realtime") => t,
            _ => topic,
        };
        let mut rec = FutureRecord::to(to).key(r.key.as_bytes()).headers(headers);
        if !r.payload.is_empty() {
            rec = rec.payload(&r.payload);
        }
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push_back(f);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
        n += 1;
        if pending.len() >= 10_000 {
            if let Some(oldest) = pending.pop_front() {
                check(vec![oldest.await])?;
            }
        }
    }
    check(join_all(pending).await)?;
    Ok(n)
}

fn check(
    results: Vec<Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>>,
) -> anyhow::Result<()> {
    for r in results {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("delivery failed: {e}"),
            Err(_) => anyhow::bail!("producer dropped a delivery report"),
        }
    }
    Ok(())
}
