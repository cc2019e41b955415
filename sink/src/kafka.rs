//! Results and DLQ records to Kafka.

use std::fmt::Write as _;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use switchyard_schemas::telemetry as m;
use switchyard_schemas::{headers as h, DlqRecord, Prediction};
use tokio::sync::Notify;

use crate::{AvroResults, Error, KafkaSinkConfig, Result};

/// Kafka Connect's dead-letter header names, reused so existing tooling reads our DLQ.
pub mod dlq_headers {
    /// Source topic.
    pub const TOPIC: &str = "__connect.errors.topic";
    /// Source partition.
    pub const PARTITION: &str = "__connect.errors.partition";
    /// Source offset.
    pub const OFFSET: &str = "__connect.errors.offset";
    /// Pipeline name (Connect: connector name).
    pub const CONNECTOR: &str = "__connect.errors.connector.name";
    /// Stage that failed.
    pub const STAGE: &str = "__connect.errors.stage";
    /// Error class.
    pub const CLASS: &str = "__connect.errors.class.name";
    /// Error message.
    pub const MESSAGE: &str = "__connect.errors.exception.message";
}

/// The acknowledgements of one group of records (a chunk's results, or its
/// DLQ records): counted by the producer's delivery callback, so a chunk
/// costs one shared counter rather than a channel and a future per record.
#[derive(Default)]
struct AckGroup {
    /// Records sent and not yet acknowledged, plus one while records are
    /// still being added.
    pending: AtomicUsize,
    /// The first delivery error.
    error: Mutex<Option<KafkaError>>,
    /// Signalled when `pending` reaches zero.
    done: Notify,
}

impl AckGroup {
    /// One fewer to wait for; the last one wakes the waiter.
    fn settle(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// The producer's context: each record's delivery report settles its group.
struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<AckGroup>;

    fn delivery(&self, result: &DeliveryResult<'_>, group: Arc<AckGroup>) {
        if let Err((e, _)) = result {
            if let Ok(mut first) = group.error.lock() {
                first.get_or_insert_with(|| e.clone());
            }
        }
        group.settle();
    }
}

type AckProducer = ThreadedProducer<AckContext>;

/// Acknowledgements still to come for a group of records.
#[must_use = "records are durable in Kafka only once their deliveries resolve"]
pub struct Deliveries {
    group: Arc<AckGroup>,
    len: usize,
}

impl Deliveries {
    /// A group with no records yet; [`Deliveries::sealed`] once all are sent.
    fn open() -> Self {
        Self { group: Arc::new(AckGroup { pending: AtomicUsize::new(1), ..Default::default() }), len: 0 }
    }

    /// Every record of the group is sent: only their reports are awaited.
    fn sealed(self) -> Self {
        self.group.settle();
        self
    }

    /// Waits for every acknowledgement; fails with the first delivery error.
    pub async fn wait(self) -> Result<()> {
        if self.group.pending.load(Ordering::Acquire) > 0 {
            self.group.done.notified().await;
        }
        match self.group.error.lock().map_err(|_| Error::Internal("delivery error lock poisoned".into()))?.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Producer for the results and DLQ topics.
pub struct KafkaSink {
    producer: AckProducer,
    results_topic: String,
    dlq_topic: String,
    timeout: Duration,
    /// With `exactly_once`: whether a transaction is open, and how long one
    /// commit attempt may take.
    txn: Option<(std::sync::Mutex<bool>, Duration)>,
    /// Results as Avro (`value_format: avro`); JSON when absent.
    avro: Option<AvroResults>,
}

/// Attempts at committing one transaction before its outcome is declared unknown.
const COMMIT_ATTEMPTS: usize = 3;

impl KafkaSink {
    /// Creates the producer (idempotent, so broker retries add no duplicates).
    pub fn new(config: &KafkaSinkConfig, default_bootstrap: &str) -> Result<Self> {
        Ok(Self {
            producer: config.client_config(default_bootstrap)?.create_with_context(AckContext)?,
            results_topic: config.results_topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            timeout: Duration::from_millis(config.delivery_timeout_ms),
            txn: None,
            avro: None,
        })
    }

    /// Creates a transactional producer with `transactional_id` and
    /// registers it with the broker, fencing any older producer with that
    /// id (blocking; call off the async workers).
    pub fn transactional(config: &KafkaSinkConfig, default_bootstrap: &str, transactional_id: &str) -> Result<Self> {
        let mut c = config.client_config(default_bootstrap)?;
        c.set("transactional.id", transactional_id);
        let producer: AckProducer = c.create_with_context(AckContext)?;
        producer.init_transactions(Duration::from_millis(config.delivery_timeout_ms.max(10_000)))?;
        Ok(Self {
            producer,
            results_topic: config.results_topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            timeout: Duration::from_millis(config.delivery_timeout_ms),
            txn: Some((std::sync::Mutex::new(false), Duration::from_millis(config.commit_timeout_ms.max(1)))),
            avro: None,
        })
    }

    /// Writes results as Avro with `avro` (its schema registered) instead of
    /// JSON.
    pub fn with_avro(mut self, avro: AvroResults) -> Self {
        self.avro = Some(avro);
        self
    }

    /// Learns the output topics' partitions and leaders now (blocking): a
    /// fresh producer otherwise holds its first records while it asks, about
    /// half a second that would land on the first results' latency. Fails
    /// when the brokers do not answer within `timeout` or a topic is missing.
    pub fn warm_up(&self, timeout: Duration) -> Result<()> {
        for topic in [&self.results_topic, &self.dlq_topic] {
            let metadata = self.producer.client().fetch_metadata(Some(topic), timeout)?;
            if let Some(e) = metadata.topics().iter().find_map(|t| t.error()) {
                let e = RDKafkaErrorCode::from(e);
                return Err(Error::Config(format!("output topic `{topic}`: {e}")));
            }
        }
        Ok(())
    }

    /// True for a transactional producer.
    pub fn is_transactional(&self) -> bool {
        self.txn.is_some()
    }

    /// Opens a transaction unless one is open (transactional producers only).
    fn ensure_transaction(&self) -> Result<()> {
        let Some((open, _)) = &self.txn else { return Ok(()) };
        let mut open = open.lock().map_err(|_| Error::Internal("transaction state lock poisoned".into()))?;
        if !*open {
            self.producer.begin_transaction()?;
            *open = true;
        }
        Ok(())
    }

    /// Commits the open transaction together with the consumed offsets
    /// `next_offsets` (the next record to read per partition) for the group
    /// `group` (blocking). A commit attempt that times out is retried: its
    /// outcome is unknown until a later attempt settles it.
    pub fn commit_transaction(
        &self,
        next_offsets: &std::collections::HashMap<(String, i32), i64>,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<()> {
        let Some((open, timeout)) = &self.txn else { return Ok(()) };
        let unknown = |e: &dyn std::fmt::Display| Error::TxnUnknown(e.to_string());
        self.ensure_transaction().map_err(|e| unknown(&e))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for ((topic, partition), offset) in next_offsets {
            tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset)).map_err(|e| unknown(&e))?;
        }
        let settle = |e: KafkaError| -> Error {
            match &e {
                KafkaError::Transaction(t) if t.txn_requires_abort() => {
                    match self.producer.abort_transaction(*timeout) {
                        Ok(()) => Error::TxnAborted(e.to_string()),
                        Err(a) => Error::TxnUnknown(format!("{e}; aborting failed too: {a}")),
                    }
                }
                _ => Error::TxnUnknown(e.to_string()),
            }
        };
        if !tpl.elements().is_empty() {
            self.producer.send_offsets_to_transaction(&tpl, group, self.timeout).map_err(settle)?;
        }
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.producer.commit_transaction(*timeout) {
                Ok(()) => break Ok(()),
                Err(KafkaError::Transaction(t)) if t.is_retriable() && attempt < COMMIT_ATTEMPTS => {
                    tracing::warn!(attempt, error = %t, "transaction commit timed out (outcome unknown); retrying");
                }
                Err(e) => break Err(settle(e)),
            }
        };
        if let Ok(mut o) = open.lock() {
            *o = false;
        }
        if result.is_ok() {
            m::KAFKA_TRANSACTIONS.counter([("outcome", "committed".into())]).increment(1);
        } else {
            m::KAFKA_TRANSACTIONS.counter([("outcome", "failed".into())]).increment(1);
        }
        result
    }

    /// Aborts the open transaction, if any (blocking): its records are
    /// never seen by `read_committed` consumers.
    pub fn abort_transaction(&self) -> Result<()> {
        let Some((open, timeout)) = &self.txn else { return Ok(()) };
        let mut open = open.lock().map_err(|_| Error::Internal("transaction state lock poisoned".into()))?;
        if *open {
            self.producer.abort_transaction(*timeout)?;
            *open = false;
            m::KAFKA_TRANSACTIONS.counter([("outcome", "aborted".into())]).increment(1);
        }
        Ok(())
    }

    /// Queues the results for sending; the returned [`Deliveries`] resolve
    /// when the broker has acknowledged every one of them.
    pub async fn send_predictions(&self, rows: &[Prediction]) -> Result<Deliveries> {
        if !rows.is_empty() {
            self.ensure_transaction()?;
        }
        let mut pending = Deliveries::open();
        // librdkafka copies what it is given: the value and the two headers
        // built from parts reuse one buffer each for every record.
        let mut body = Vec::with_capacity(2048);
        let mut source = String::with_capacity(128);
        let mut model = String::with_capacity(128);
        for p in rows {
            body.clear();
            match &self.avro {
                Some(avro) => body.extend_from_slice(&avro.encode(p)),
                None => crate::json::write_prediction(&mut body, p),
            }
            let l = &p.lineage;
            source.clear();
            let _ = write!(source, "{}/{}/{}", l.source.topic, l.source.partition, l.source.offset);
            model.clear();
            let _ = write!(model, "{}/{}", l.model.name, l.model.version);
            let mut headers = OwnedHeaders::new_with_capacity(11)
                .insert(hdr(h::LINEAGE_ID, &l.lineage_id))
                .insert(hdr(h::PIPELINE, &l.pipeline))
                .insert(hdr(h::MANIFEST_HASH, &l.manifest_hash))
                .insert(hdr(h::SOURCE, &source))
                .insert(hdr(h::POLICY_VERSION, &l.route.policy_version))
                .insert(hdr(h::RULE_ID, &l.route.rule_id))
                .insert(hdr(h::MODEL, &model))
                .insert(hdr(h::MODEL_SHA256, &l.model.sha256))
                .insert(hdr(h::PREPROCESS_HASH, &l.preprocess_hash))
                .insert(hdr(h::TRACEPARENT, &l.traceparent));
            if !l.run_id.is_empty() {
                headers = headers.insert(hdr(h::RUN_ID, &l.run_id));
            }
            let record = BaseRecord::with_opaque_to(&self.results_topic, pending.group.clone())
                .key(p.key.as_bytes())
                .payload(&body)
                .headers(headers);
            self.enqueue(record, &mut pending).await?;
        }
        m::KAFKA_PRODUCED.counter([("topic", self.results_topic.clone().into())]).increment(rows.len() as u64);
        Ok(pending.sealed())
    }

    /// Queues DLQ records (original key and value, context in headers); the
    /// returned [`Deliveries`] resolve when the broker has acknowledged them.
    pub async fn send_dlq(&self, rows: &[DlqRecord]) -> Result<Deliveries> {
        if !rows.is_empty() {
            self.ensure_transaction()?;
        }
        let mut pending = Deliveries::open();
        for r in rows {
            let partition = r.source.partition.to_string();
            let offset = r.source.offset.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 8);
            for (k, v) in &r.headers {
                headers = headers.insert(hdr(k, v));
            }
            let headers = headers
                .insert(hdr(dlq_headers::TOPIC, &r.source.topic))
                .insert(hdr(dlq_headers::PARTITION, &partition))
                .insert(hdr(dlq_headers::OFFSET, &offset))
                .insert(hdr(dlq_headers::CONNECTOR, &r.pipeline))
                .insert(hdr(dlq_headers::STAGE, r.stage.as_str()))
                .insert(hdr(dlq_headers::CLASS, r.error_class.as_str()))
                .insert(hdr(dlq_headers::MESSAGE, &r.message))
                .insert(hdr(h::LINEAGE_ID, &r.lineage_id));
            let headers = if r.run_id.is_empty() { headers } else { headers.insert(hdr(h::RUN_ID, &r.run_id)) };
            let mut record: BaseRecord<'_, [u8], [u8], _> =
                BaseRecord::with_opaque_to(&self.dlq_topic, pending.group.clone()).headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &r.payload {
                record = record.payload(p.as_slice());
            }
            self.enqueue(record, &mut pending).await?;
        }
        if !rows.is_empty() {
            m::KAFKA_PRODUCED.counter([("topic", self.dlq_topic.clone().into())]).increment(rows.len() as u64);
        }
        Ok(pending.sealed())
    }

    /// Enqueues a record into `group`, waiting while librdkafka's queue is full.
    async fn enqueue<'a, K, P>(
        &self,
        mut record: BaseRecord<'a, K, P, Arc<AckGroup>>,
        group: &mut Deliveries,
    ) -> Result<()>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // Counted before it is sent: its report may come at once.
        group.group.pending.fetch_add(1, Ordering::AcqRel);
        let sent = loop {
            match self.producer.send(record) {
                Ok(()) => break Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if tokio::time::Instant::now() > deadline {
                        break Err(Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)));
                    }
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => break Err(e.into()),
            }
        };
        match sent {
            Ok(()) => group.len += 1,
            // Not sent: no report will come for it.
            Err(_) => {
                group.group.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
        sent
    }

    /// Waits for everything in flight.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        Ok(self.producer.flush(timeout)?)
    }
}

fn hdr<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use switchyard_schemas::{Lineage, SourceCoords};

    use super::*;

    fn config(timeout_ms: u64) -> KafkaSinkConfig {
        serde_json::from_str(&format!(
            r#"{{"results_topic": "r", "dlq_topic": "d", "delivery_timeout_ms": {timeout_ms}}}"#
        ))
        .unwrap()
    }

    fn results(n: i64) -> Vec<Prediction> {
        (0..n)
            .map(|offset| Prediction {
                key: format!("k{offset}"),
                score: Some(0.5),
                label: Some(1),
                outputs: None,
                features: vec![1.0],
                latency_us: 1,
                lineage: Lineage {
                    lineage_id: format!("l{offset}"),
                    source: SourceCoords { topic: "tx".into(), offset, ..Default::default() },
                    ..Default::default()
                },
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_resolves_once_the_broker_holds_all_its_records() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("r", 1, 1).unwrap();
        mock.create_topic("d", 1, 1).unwrap();
        let sink = KafkaSink::new(&config(10_000), &mock.bootstrap_servers()).unwrap();
        for (round, n) in [(1, 5), (2, 300)] {
            let sent = sink.send_predictions(&results(n)).await.unwrap();
            assert_eq!(sent.len(), n as usize);
            sent.wait().await.unwrap();
            let (_, high) = sink.producer.client().fetch_watermarks("r", 0, Duration::from_secs(5)).unwrap();
            assert_eq!(high, if round == 1 { 5 } else { 305 }, "every record of the group is in the topic");
        }
        let none = sink.send_dlq(&[]).await.unwrap();
        assert!(none.is_empty());
        tokio::time::timeout(Duration::from_secs(1), none.wait()).await.expect("an empty group is done").unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_fails_with_its_first_delivery_error() {
        // Nobody listens there: every record times out undelivered.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let sink = KafkaSink::new(&config(500), &format!("127.0.0.1:{port}")).unwrap();
        let sent = sink.send_predictions(&results(3)).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), sent.wait())
            .await
            .expect("a failed delivery ends the wait")
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }
}
