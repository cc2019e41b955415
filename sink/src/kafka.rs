//! Results and DLQ records to Kafka.

use std::fmt::Write as _;
use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use switchyard_schemas::telemetry as m;
use switchyard_schemas::{headers as h, DlqRecord, Prediction};

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

/// Acknowledgements still to come for a group of records.
#[must_use = "records are durable in Kafka only once their deliveries resolve"]
pub struct Deliveries(Vec<DeliveryFuture>);

impl Deliveries {
    /// Waits for every acknowledgement; fails with the first delivery error.
    pub async fn wait(self) -> Result<()> {
        let results =
            try_join_all(self.0).await.map_err(|_| Error::Internal("producer dropped a delivery report".into()))?;
        for r in results {
            if let Err((e, _)) = r {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Producer for the results and DLQ topics.
pub struct KafkaSink {
    producer: FutureProducer,
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
            producer: config.client_config(default_bootstrap)?.create()?,
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
        let producer: FutureProducer = c.create()?;
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
        let mut pending = Vec::with_capacity(rows.len());
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
            let record = FutureRecord::to(&self.results_topic).key(p.key.as_bytes()).payload(&body).headers(headers);
            pending.push(self.enqueue(record).await?);
        }
        m::KAFKA_PRODUCED.counter([("topic", self.results_topic.clone().into())]).increment(rows.len() as u64);
        Ok(Deliveries(pending))
    }

    /// Queues DLQ records (original key and value, context in headers); the
    /// returned [`Deliveries`] resolve when the broker has acknowledged them.
    pub async fn send_dlq(&self, rows: &[DlqRecord]) -> Result<Deliveries> {
        if !rows.is_empty() {
            self.ensure_transaction()?;
        }
        let mut pending = Vec::with_capacity(rows.len());
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
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dlq_topic).headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &r.payload {
                record = record.payload(p.as_slice());
            }
            pending.push(self.enqueue(record).await?);
        }
        if !rows.is_empty() {
            m::KAFKA_PRODUCED.counter([("topic", self.dlq_topic.clone().into())]).increment(rows.len() as u64);
        }
        Ok(Deliveries(pending))
    }

    /// Enqueues a record, waiting while librdkafka's queue is full.
    async fn enqueue<'a, K, P>(&self, mut record: FutureRecord<'a, K, P>) -> Result<DeliveryFuture>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::Kafka(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)));
                    }
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits for everything in flight.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        Ok(self.producer.flush(timeout)?)
    }
}

fn hdr<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}
