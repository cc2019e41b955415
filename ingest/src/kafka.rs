//! Kafka source: consumer-group consumption in chunks, with backpressure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use switchyard_schemas::now_us;
use switchyard_schemas::telemetry as m;
use switchyard_schemas::{kafka as client, notice, AuditEvent, Notice, Problems, RawRecord, SecretSource};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Error, Result};

/// The `source:` section of a manifest for `type: kafka`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// Consumer group id; offsets are committed for this group.
    pub group_id: String,
    /// Extra librdkafka properties passed through unchanged (security, timeouts,
    /// `auto.offset.reset`, …). `group.id`, `bootstrap.servers` and
    /// `enable.auto.commit` are set by switchyard and cannot be overridden.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties (`sasl.password`, key passwords), each
    /// read from an environment variable (`{ env: NAME }`) or a file
    /// (`{ file: path }`) when the client starts; never written in the
    /// manifest and never printed.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Most records handed downstream at once.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Longest wait to fill a chunk once its first record arrived, in ms.
    /// With 0 (the default) a chunk takes the records already fetched and
    /// goes: under load, records pile up while the previous chunk is
    /// processed, so chunks still fill, and an event arriving alone waits
    /// for nobody. Raise it to trade latency for bigger chunks.
    #[serde(default = "default_chunk_max_wait_ms")]
    pub chunk_max_wait_ms: u64,
    /// Chunks buffered between the consumer and processing. When they are
    /// all taken the consumer stops reading; librdkafka's own prefetch is
    /// bounded by `queued.max.messages.kbytes` (16 MiB unless set).
    #[serde(default = "default_max_queued_chunks")]
    pub max_queued_chunks: usize,
    /// When processing has been behind for this long, pause the partitions
    /// (stop fetching, release the prefetch buffer) until it catches up, in ms.
    /// Short stalls are absorbed without pausing: a resume costs a fetch round trip.
    #[serde(default = "default_pause_after_ms")]
    pub pause_after_ms: u64,
    /// Longest wait at start-up for a broker to answer, in ms; then the run
    /// fails with an error naming the brokers and the cause.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// A lane of its own for urgent traffic: records of these topics are
    /// read by a second consumer in the same group and go through their own
    /// chunks, model queue slot, producer and Parquet writer, so they never
    /// wait behind a backlog of the main topics. Absent: one lane.
    #[serde(default)]
    pub priority: Option<PriorityLaneConfig>,
}

/// `source.priority`: the topics of the priority lane and how it chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriorityLaneConfig {
    /// Topics read by the priority lane (none of `source.topics`).
    pub topics: Vec<String>,
    /// Most records the lane hands downstream at once (its chunks go as soon
    /// as they are fetched; small ones keep each record's wait short).
    #[serde(default = "default_priority_chunk_size")]
    pub chunk_size: usize,
}

fn default_priority_chunk_size() -> usize {
    256
}

fn default_chunk_size() -> usize {
    1024
}
fn default_chunk_max_wait_ms() -> u64 {
    0
}
fn default_max_queued_chunks() -> usize {
    4
}
fn default_pause_after_ms() -> u64 {
    500
}
fn default_connect_timeout_ms() -> u64 {
    30_000
}

/// Consumer errors are logged at most this often (with a count of those
/// left out); librdkafka retries on its own meanwhile.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs consumer errors at a bounded rate.
struct ErrorLog {
    last: Option<Instant>,
    quiet: u64,
}

impl ErrorLog {
    fn new() -> Self {
        Self { last: None, quiet: 0 }
    }

    fn log(&mut self, e: &rdkafka::error::KafkaError) {
        if self.last.is_some_and(|t| t.elapsed() < ERROR_LOG_EVERY) {
            self.quiet += 1;
            return;
        }
        if self.quiet > 0 {
            tracing::warn!(error = %e, more = self.quiet, "kafka consumer error (and {} more since the last)", self.quiet);
        } else {
            tracing::warn!(error = %e, "kafka consumer error");
        }
        self.last = Some(Instant::now());
        self.quiet = 0;
    }
}

/// Longest single wait on the consumer's queue before polling it again.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Longest a stopping source waits to leave its consumer group.
pub const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// Properties switchyard owns: overriding them would break delivery guarantees.
const RESERVED: &[&str] = &["group.id", "bootstrap.servers", "enable.auto.commit"];

/// Heartbeat interval of both consumers of a worker with a priority lane,
/// in ms, unless `source.properties` sets `heartbeat.interval.ms`: a lane
/// (or main consumer) that joins the group after the other waits for the
/// other's next heartbeat before it gets its partitions.
const LANE_HEARTBEAT_MS: &str = "1000";

impl KafkaSourceConfig {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.bootstrap_servers.trim().is_empty() {
            problems.push(format!("{path}.bootstrap_servers"), "must list at least one host:port");
        }
        if self.topics.is_empty() {
            problems.push(format!("{path}.topics"), "must list at least one topic");
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !valid_topic(t) {
                problems.push(format!("{path}.topics[{i}]"), format!("`{t}` is not a valid Kafka topic name"));
            }
        }
        if self.group_id.trim().is_empty() {
            problems.push(format!("{path}.group_id"), "must not be empty");
        }
        for k in self.properties.keys().chain(self.secrets.keys()) {
            if RESERVED.contains(&k.as_str()) {
                problems.push(
                    format!("{path}.properties.{k}"),
                    "is set by switchyard (offsets are committed only after results are durable); remove it",
                );
            }
        }
        client::check(path, &self.properties, &self.secrets, problems);
        if self.chunk_size == 0 {
            problems.push(format!("{path}.chunk_size"), "must be at least 1");
        }
        if self.max_queued_chunks == 0 {
            problems.push(format!("{path}.max_queued_chunks"), "must be at least 1");
        }
        if let Some(lane) = &self.priority {
            let at = format!("{path}.priority");
            if lane.topics.is_empty() {
                problems.push(format!("{at}.topics"), "must list at least one topic");
            }
            for (i, t) in lane.topics.iter().enumerate() {
                if !valid_topic(t) {
                    problems.push(format!("{at}.topics[{i}]"), format!("`{t}` is not a valid Kafka topic name"));
                } else if self.topics.contains(t) {
                    problems.push(
                        format!("{at}.topics[{i}]"),
                        format!("`{t}` is also in {path}.topics: a topic is read by one lane only"),
                    );
                }
            }
            if lane.chunk_size == 0 {
                problems.push(format!("{at}.chunk_size"), "must be at least 1");
            }
        }
    }

    /// The source of the priority lane, when there is one: the same group,
    /// brokers and properties, its own topics and chunk size.
    pub fn priority_lane(&self) -> Option<KafkaSourceConfig> {
        let lane = self.priority.as_ref()?;
        let mut properties = self.properties.clone();
        properties.entry("heartbeat.interval.ms".into()).or_insert_with(|| LANE_HEARTBEAT_MS.into());
        Some(KafkaSourceConfig {
            topics: lane.topics.clone(),
            properties,
            chunk_size: lane.chunk_size,
            chunk_max_wait_ms: 0,
            priority: None,
            ..self.clone()
        })
    }

    /// The consumer's librdkafka configuration, secrets read. `path` names
    /// this client in errors (`source`, `feedback`).
    pub fn client_config(&self, path: &str) -> Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("auto.offset.reset", "earliest")
            // A rebalance moves only the partitions that change owner; the
            // others go on being consumed (KIP-429).
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Bound librdkafka's own prefetch so backpressure is felt quickly.
            .set("queued.max.messages.kbytes", "16384")
            // Consumer lag per partition (`switchyard_consumer_lag_records`).
            .set("statistics.interval.ms", "5000");
        if self.priority.is_some() {
            // Two members of the group in one process: the lane joins beside
            // this consumer, and a member joining later gets its partitions
            // once the others have heard of it, at their next heartbeat
            // (librdkafka's default: every 3 s).
            c.set("heartbeat.interval.ms", LANE_HEARTBEAT_MS);
        }
        for (k, v) in client::settings(path, &self.properties, &self.secrets).map_err(Error::Config)? {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        Ok(c)
    }
}

/// True when `t` is a legal Kafka topic name.
fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 249 && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Counters of a running source.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Records received.
    pub records: AtomicU64,
    /// Times the consumer paused because processing was behind.
    pub pauses: AtomicU64,
    /// Offset commits that failed (they are retried by the next commit).
    pub commit_errors: AtomicU64,
    /// Partitions assigned to the consumer now.
    pub assigned: AtomicU64,
}

/// What a [`KafkaSource`] hands downstream.
#[derive(Debug)]
pub enum SourceEvent {
    /// Records, in offset order within each partition.
    Records(Vec<RawRecord>),
    /// Partitions newly assigned to this consumer; their records follow.
    /// Another worker may have made some of them durable before: re-read
    /// what is durable before admitting them.
    Assigned(Vec<(String, i32)>),
    /// Partitions being taken away in a rebalance. The consumer stays inside
    /// the group's rebalance until `done` is answered (or dropped): by then
    /// every record of them handed downstream before this event must be
    /// durable and its offset committed. Records of them that the consumer
    /// had not handed downstream yet are dropped (the next owner reads them).
    Revoked {
        /// The partitions.
        partitions: Vec<(String, i32)>,
        /// The group has already given them to another member (this one
        /// missed its session or poll deadline): nothing more of them may be
        /// made durable or committed here; what is not durable yet must be
        /// abandoned.
        lost: bool,
        /// Answer once done.
        done: RevokeDone,
    },
}

/// The answer to [`SourceEvent::Revoked`]; dropping it also answers.
#[derive(Debug)]
pub struct RevokeDone(std::sync::mpsc::SyncSender<()>);

impl RevokeDone {
    /// Lets the rebalance go on.
    pub fn done(self) {
        let _ = self.0.try_send(());
    }
}

/// The source consumer's client context: rebalances are handed downstream
/// in order with the records ([`SourceEvent`]), and become metrics and
/// audit notices; librdkafka's statistics become the lag gauge.
pub struct SourceContext {
    stats: Arc<SourceStats>,
    /// Where rebalance events go (the fetch loop's channel; weak, so the
    /// channel closes when the fetch loop ends).
    events: OnceLock<mpsc::WeakSender<SourceEvent>>,
    /// The partitions assigned now.
    assigned: Mutex<HashSet<(String, i32)>>,
    /// Bumped at every revocation: a chunk being filled across one drops the
    /// records of partitions no longer assigned.
    revocations: AtomicU64,
    /// Bumped when partitions are assigned: the idle timeout starts again
    /// (a partition taken over may hold a backlog).
    assignments: AtomicU64,
}

impl SourceContext {
    fn new(stats: Arc<SourceStats>) -> Self {
        Self {
            stats,
            events: OnceLock::new(),
            assigned: Mutex::new(HashSet::new()),
            revocations: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
        }
    }

    /// Sends `event` downstream from inside a rebalance callback (which runs
    /// in the fetch task, inside its poll) and, for a revocation, waits for
    /// the answer. Without a multi-threaded runtime (unit tests) or once the
    /// pipeline is gone (closing), nothing is sent.
    fn hand_over(&self, event: SourceEvent, answer: Option<std::sync::mpsc::Receiver<()>>) {
        let Some(tx) = self.events.get().and_then(mpsc::WeakSender::upgrade) else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if rt.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            tracing::warn!("rebalance not handed downstream: needs the multi-threaded runtime");
            return;
        }
        tokio::task::block_in_place(|| {
            if rt.block_on(tx.send(event)).is_ok() {
                if let Some(rx) = answer {
                    let _ = rx.recv();
                }
            }
        });
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl rdkafka::ClientContext for SourceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; a lag of
                // -1 means not known yet.
                if partition >= 0 && p.consumer_lag >= 0 {
                    m::CONSUMER_LAG
                        .gauge([("topic", topic.clone().into()), ("partition", partition.to_string().into())])
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for SourceContext {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = partitions(tpl);
            if let Ok(mut a) = self.assigned.lock() {
                for p in &parts {
                    a.remove(p);
                }
            }
            self.revocations.fetch_add(1, Ordering::SeqCst);
            let lost = consumer.assignment_lost();
            if lost {
                tracing::warn!(partitions = parts.len(), "partitions lost: the group gave them to another member");
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            self.hand_over(SourceEvent::Revoked { partitions: parts, lost, done: RevokeDone(tx) }, Some(rx));
        }
    }

    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let list = |tpl: &TopicPartitionList| {
            let mut parts: Vec<String> =
                tpl.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect();
            parts.sort();
            parts.join(", ")
        };
        let kind = match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = partitions(tpl);
                if let Ok(mut a) = self.assigned.lock() {
                    a.extend(parts.iter().cloned());
                }
                if !parts.is_empty() {
                    self.assignments.fetch_add(1, Ordering::SeqCst);
                }
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                notice(Notice::new(AuditEvent::PartitionsAssigned, "consumer", list(tpl)));
                self.hand_over(SourceEvent::Assigned(parts), None);
                "assign"
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                notice(Notice::new(AuditEvent::PartitionsRevoked, "consumer", list(tpl)));
                "revoke"
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance failed");
                "error"
            }
        };
        let now = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.stats.assigned.store(now as u64, Ordering::Relaxed);
        m::REBALANCES.counter([("kind", kind.into())]).increment(1);
        m::ASSIGNED_PARTITIONS.gauge([]).set(now as f64);
    }
}

type SourceConsumer = StreamConsumer<SourceContext>;

/// A running Kafka consumer delivering chunks of records.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    rx: mpsc::Receiver<SourceEvent>,
    stats: Arc<SourceStats>,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// A Kafka client to check at start-up: [`check_brokers`].
pub struct BrokerCheck {
    /// The manifest section of the client (`source`, `sinks.kafka`, …), for errors.
    pub what: String,
    /// Its bootstrap servers.
    pub brokers: String,
    /// Its librdkafka configuration (secrets included).
    pub config: ClientConfig,
    /// How it connects ([`switchyard_schemas::kafka::describe`]), for errors.
    pub security: String,
    /// Longest wait for a broker to answer.
    pub timeout: Duration,
}

impl KafkaSourceConfig {
    /// The start-up check of this consumer, named `what` in errors.
    pub fn broker_check(&self, what: &str) -> Result<BrokerCheck> {
        Ok(BrokerCheck {
            what: what.to_string(),
            brokers: self.bootstrap_servers.clone(),
            config: self.client_config(what)?,
            security: client::describe(&self.properties),
            timeout: Duration::from_millis(self.connect_timeout_ms.max(1)),
        })
    }
}

/// Waits until a broker answers a metadata request, at most `check.timeout`:
/// an unreachable broker is a clear error at start-up, not a silent wait. A
/// refused login or TLS handshake (wrong password, unknown certificate
/// authority) ends the wait at once: librdkafka would retry it forever.
pub async fn check_brokers(check: BrokerCheck) -> Result<()> {
    let BrokerCheck { what, brokers, config, security, timeout } = check;
    let answer = tokio::task::spawn_blocking(move || -> std::result::Result<(), (bool, String)> {
        let consumer: rdkafka::consumer::BaseConsumer<Quiet> =
            config.create_with_context(Quiet::default()).map_err(|e| (false, e.to_string()))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let err = match consumer.fetch_metadata(None, left.min(Duration::from_millis(250))) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            // Serves the error callbacks, which record a refusal.
            let _ = consumer.poll(Duration::ZERO);
            if let Some(refused) = consumer.context().refused() {
                return Err((true, refused));
            }
            if left <= Duration::from_millis(250) {
                return Err((false, consumer.context().last().unwrap_or_else(|| err.to_string())));
            }
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("broker check failed: {e}")))?;
    answer.map_err(|(refused, cause)| {
        if refused {
            let hint = if cause.contains("SSL") || cause.contains("certificate") {
                "check that `ssl.ca.location` names the authority that signed the broker's certificate, and the \
                 listener's protocol"
                    .to_string()
            } else {
                format!("check `sasl.mechanism`, `sasl.username` and the password in `{what}.secrets`")
            };
            Error::Refused { what, brokers, security, cause, hint }
        } else {
            Error::Unreachable { what, brokers, security, timeout_ms: timeout.as_millis() as u64, cause }
        }
    })
}

/// The broker check's client context: its connection errors are the
/// check's result, reported once, not logged per retry.
#[derive(Default)]
struct Quiet {
    /// A refused login or TLS handshake, which retrying will not cure.
    refused: std::sync::Mutex<Option<String>>,
    /// The last connection error.
    last: std::sync::Mutex<Option<String>>,
}

impl Quiet {
    fn refused(&self) -> Option<String> {
        self.refused.lock().ok()?.clone()
    }

    fn last(&self) -> Option<String> {
        self.last.lock().ok()?.clone()
    }
}

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(facility = fac, "broker check: {message}");
        // Under load the error callback may report a failed handshake only
        // as a transport failure; the log line still says what it was.
        if refusal(message) {
            if let Ok(mut r) = self.refused.lock() {
                r.get_or_insert_with(|| message.to_string());
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        tracing::debug!(error = %error, "broker check: {reason}");
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(Code::Authentication | Code::SSL | Code::SaslAuthenticationFailed)
        ) || refusal(reason);
        if refused {
            if let Ok(mut r) = self.refused.lock() {
                r.get_or_insert_with(|| reason.to_string());
            }
        }
        if let Ok(mut l) = self.last.lock() {
            *l = Some(reason.to_string());
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// True for a librdkafka message telling of a refused TLS handshake or login.
fn refusal(message: &str) -> bool {
    ["SSL handshake failed", "certificate verify failed", "Authentication failed", "SASL authentication error"]
        .iter()
        .any(|m| message.contains(m))
}

impl KafkaSource {
    /// Subscribes and starts consuming. With `idle_timeout`, the source ends
    /// once no record has arrived for that long (after the first record, or
    /// after `startup_timeout` when none ever comes) — for bounded runs.
    pub fn start(
        config: &KafkaSourceConfig,
        idle_timeout: Option<Duration>,
        startup_timeout: Duration,
    ) -> Result<Self> {
        let stats = Arc::new(SourceStats::default());
        let client_config = config.client_config("source")?;
        let consumer: SourceConsumer = client_config.create_with_context(SourceContext::new(stats.clone()))?;
        let (tx, rx) = mpsc::channel(config.max_queued_chunks.max(1));
        let _ = consumer.context().events.set(tx.downgrade());
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let consumer = Arc::new(consumer);
        let settings = FetchSettings {
            chunk_size: config.chunk_size.max(1),
            chunk_wait: Duration::from_millis(config.chunk_max_wait_ms),
            pause_after: Duration::from_millis(config.pause_after_ms),
            idle_timeout,
            startup_timeout,
            group_grace: group_grace(&client_config, idle_timeout),
        };
        let task = tokio::spawn(fetch_loop(consumer.clone(), tx, stats.clone(), settings));
        Ok(Self { consumer, rx, stats, task })
    }

    /// The next chunk of records or rebalance event, or `None` when the
    /// source has ended.
    pub async fn next_event(&mut self) -> Option<SourceEvent> {
        self.rx.recv().await
    }

    /// The next chunk, or `None` when the source has ended. Rebalances are
    /// let through at once: for readers that hold nothing between chunks.
    pub async fn next_chunk(&mut self) -> Option<Vec<RawRecord>> {
        loop {
            match self.rx.recv().await? {
                SourceEvent::Records(r) => return Some(r),
                SourceEvent::Assigned(_) => {}
                SourceEvent::Revoked { done, .. } => done.done(),
            }
        }
    }

    /// Counters of this source.
    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    /// A handle that commits offsets for this source's consumer group.
    pub fn committer(&self) -> KafkaCommitter {
        KafkaCommitter { consumer: self.consumer.clone(), stats: self.stats.clone() }
    }

    /// Stops fetching, waits for the fetch task to end, and leaves the
    /// group, waiting at most [`LEAVE_WAIT`] for that.
    pub async fn stop(self) -> Result<()> {
        let KafkaSource { consumer, rx, task, .. } = self;
        drop(rx);
        let fetched = match task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("kafka fetch task failed: {e}"))),
        };
        // Closing the consumer leaves the group, and librdkafka's close first
        // waits for a rebalance in progress to end, which a slow member can
        // hold up for as long as the group's rebalance timeout. Everything
        // read is durable and committed by now, so past LEAVE_WAIT the process
        // goes and the group drops this member after its session timeout.
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let closing = std::thread::Builder::new().name("sy-consumer-close".into()).spawn(move || {
            drop(consumer);
            let _ = closed_tx.send(());
        });
        if closing.is_ok() && tokio::time::timeout(LEAVE_WAIT, closed_rx).await.is_err() {
            tracing::warn!(
                wait_s = LEAVE_WAIT.as_secs(),
                "leaving the consumer group did not finish (a rebalance is in progress); going without it: the \
                 group drops this member after its session timeout"
            );
        }
        fetched
    }
}

/// Commits offsets of a [`KafkaSource`]'s group; cheap to clone.
#[derive(Clone)]
pub struct KafkaCommitter {
    consumer: Arc<SourceConsumer>,
    stats: Arc<SourceStats>,
}

impl KafkaCommitter {
    /// Commits `next_offsets` (the offset of the next record to read, per
    /// topic/partition). Call only once the results before them are durable.
    pub fn commit(&self, next_offsets: &HashMap<(String, i32), i64>) -> Result<()> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next_offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            self.stats.commit_errors.fetch_add(1, Ordering::Relaxed);
            m::OFFSET_COMMITS.counter([("outcome", "error".into())]).increment(1);
            return Err(e.into());
        }
        m::OFFSET_COMMITS.counter([("outcome", "ok".into())]).increment(1);
        for ((topic, partition), offset) in next_offsets {
            m::COMMITTED_OFFSET
                .gauge([("topic", topic.clone().into()), ("partition", partition.to_string().into())])
                .set(*offset as f64);
        }
        Ok(())
    }

    /// True when the group has taken this consumer's partitions away without
    /// a hand-over (it missed its session or poll deadline): checked before
    /// a roll's commit point, so a worker fenced out writes nothing more.
    pub fn assignment_lost(&self) -> bool {
        self.consumer.assignment_lost()
    }

    /// The consumer's group metadata, for a producer's transaction that
    /// commits offsets on the group's behalf (fencing zombies by generation).
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// The group's committed offsets (next offset to read) of `partitions`,
    /// waiting for any pending transactional commit to settle.
    pub fn committed_of(&self, partitions: &[(String, i32)], timeout: Duration) -> Result<HashMap<(String, i32), i64>> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        Ok(offsets_of(&self.consumer.committed_offsets(tpl, timeout)?))
    }

    /// How many partitions the subscribed topics have in all (from the
    /// brokers' metadata): what the group shares out.
    pub fn subscribed_partitions(&self, timeout: Duration) -> Result<usize> {
        Ok(subscribed(&self.consumer, timeout)?.len())
    }

    /// The group's committed offsets for the current assignment.
    pub fn committed(&self, timeout: Duration) -> Result<HashMap<(String, i32), i64>> {
        Ok(offsets_of(&self.consumer.committed(timeout)?))
    }
}

/// Every partition of the topics `consumer` subscribes to (from the brokers'
/// metadata): what the group shares out.
fn subscribed(consumer: &SourceConsumer, timeout: Duration) -> Result<Vec<(String, i32)>> {
    let subscription = consumer.subscription()?;
    let mut topics: Vec<String> = subscription.elements().iter().map(|e| e.topic().to_string()).collect();
    topics.sort();
    topics.dedup();
    let mut partitions = Vec::new();
    for t in &topics {
        let md = consumer.fetch_metadata(Some(t), timeout)?;
        for topic in md.topics().iter().filter(|m| m.name() == t) {
            partitions.extend(topic.partitions().iter().map(|p| (t.clone(), p.id())));
        }
    }
    Ok(partitions)
}

/// The partitions this consumer does not hold whose records the group has
/// not all committed yet, with how many are left (high watermark minus the
/// group's committed offset, or minus the low watermark where the group has
/// committed nothing).
fn unread_elsewhere(consumer: &SourceConsumer, timeout: Duration) -> Result<Vec<((String, i32), i64)>> {
    let held: HashSet<(String, i32)> =
        consumer.assignment()?.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    let others: Vec<(String, i32)> = subscribed(consumer, timeout)?.into_iter().filter(|p| !held.contains(p)).collect();
    if others.is_empty() {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &others {
        tpl.add_partition(t, *p);
    }
    let committed = offsets_of(&consumer.committed_offsets(tpl, timeout)?);
    let mut unread = Vec::new();
    for tp in others {
        let (low, high) = consumer.fetch_watermarks(&tp.0, tp.1, timeout)?;
        let left = high - committed.get(&tp).copied().unwrap_or(low).max(low);
        if left > 0 {
            unread.push((tp, left));
        }
    }
    Ok(unread)
}

/// Where an idle consumer stands before it ends a bounded run: a group
/// member that read nothing for the idle timeout may only be between
/// owners — a rebalance in progress (a broker that led the group died, a
/// member left) hands out partitions that still hold records. So it stays
/// while partitions it does not hold have records the group has not
/// committed, looking again every [`GROUP_RECHECK`], for at most `grace`.
struct GroupDrain {
    grace: Duration,
    since: Option<Instant>,
    next_check: Option<Instant>,
}

/// How often an idle consumer waiting for the group looks at its progress.
const GROUP_RECHECK: Duration = Duration::from_secs(1);

impl GroupDrain {
    /// A record arrived: the next idle period starts afresh.
    fn reset(&mut self) {
        self.since = None;
        self.next_check = None;
    }

    /// True while it is too early to look again.
    fn resting(&self) -> bool {
        self.next_check.is_some_and(|t| Instant::now() < t)
    }

    /// True when the consumer should go on waiting rather than end.
    async fn stay(&mut self, consumer: &Arc<SourceConsumer>) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.grace {
            tracing::warn!(
                waited_s = since.elapsed().as_secs(),
                "idle, and the group still has unread records on partitions this worker does not hold; stopping \
                 anyway: their owner or the next run reads them"
            );
            return false;
        }
        let c = consumer.clone();
        let unread = tokio::task::spawn_blocking(move || unread_elsewhere(&c, Duration::from_secs(5))).await;
        match unread {
            Ok(Ok(unread)) if unread.is_empty() => false,
            Ok(Ok(unread)) => {
                if self.next_check.is_none() {
                    let records: i64 = unread.iter().map(|(_, n)| n).sum();
                    let partitions: Vec<String> = unread.iter().map(|((t, p), _)| format!("{t}/{p}")).collect();
                    tracing::info!(
                        records,
                        partitions = partitions.join(", "),
                        grace_s = self.grace.as_secs(),
                        "idle, but the group has not committed every record of partitions this worker does not \
                         hold; waiting for their owner or a rebalance"
                    );
                }
                self.next_check = Some(Instant::now() + GROUP_RECHECK);
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "idle, and the group's progress cannot be read; stopping");
                false
            }
            Err(_) => false,
        }
    }
}

/// The partitions of `tpl` that have an offset, by (topic, partition).
fn offsets_of(tpl: &TopicPartitionList) -> HashMap<(String, i32), i64> {
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

pub(crate) fn to_raw(m: &rdkafka::message::BorrowedMessage<'_>, received_us: i64) -> RawRecord {
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| Some((h.key.to_string(), std::str::from_utf8(h.value?).ok()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    RawRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers,
        received_us,
        error: None,
    }
}

/// Records consumed per partition, and the chunk's size, as metrics: one
/// update per partition per chunk, not per record.
fn count_consumed(chunk: &[RawRecord]) {
    m::CHUNK_RECORDS.histogram([]).record(chunk.len() as f64);
    let mut start = 0;
    while start < chunk.len() {
        let (topic, partition) = (&chunk[start].topic, chunk[start].partition);
        let run = chunk[start..].iter().take_while(|r| r.partition == partition && &r.topic == topic).count();
        m::RECORDS_CONSUMED
            .counter([("topic", topic.clone().into()), ("partition", partition.to_string().into())])
            .increment(run as u64);
        start += run;
    }
}

/// How long an idle consumer waits at most for the group to commit the
/// partitions it does not hold: two session timeouts (the time the group
/// takes to notice a member gone and hand its partitions out), and no less
/// than the idle timeout.
fn group_grace(client_config: &ClientConfig, idle_timeout: Option<Duration>) -> Duration {
    let session_ms = client_config.get("session.timeout.ms").and_then(|v| v.parse().ok()).unwrap_or(45_000);
    (Duration::from_millis(session_ms) * 2).max(idle_timeout.unwrap_or_default())
}

struct FetchSettings {
    chunk_size: usize,
    chunk_wait: Duration,
    pause_after: Duration,
    idle_timeout: Option<Duration>,
    startup_timeout: Duration,
    /// How long an idle consumer waits at most for the group to finish
    /// partitions it does not hold ([`GroupDrain`]).
    group_grace: Duration,
}

async fn fetch_loop(
    consumer: Arc<SourceConsumer>,
    tx: mpsc::Sender<SourceEvent>,
    stats: Arc<SourceStats>,
    settings: FetchSettings,
) -> Result<()> {
    let FetchSettings { chunk_size, chunk_wait, pause_after, idle_timeout, startup_timeout, group_grace } = settings;
    let mut seen_any = false;
    let mut drain = GroupDrain { grace: group_grace, since: None, next_check: None };
    let mut errors = ErrorLog::new();
    // Since the last record, assignment or the start: consumer errors do not
    // reset it.
    let mut waiting = Instant::now();
    let mut assignments = consumer.context().assignments.load(Ordering::SeqCst);
    loop {
        // Wait for the first record of a chunk. The wait is cut into short
        // slices, each polling the queue afresh: after a pause/resume the
        // stream's wake-up can be missed, and a fresh poll finds the records.
        let limit = if seen_any { idle_timeout } else { idle_timeout.map(|_| startup_timeout) };
        let revocations = consumer.context().revocations.load(Ordering::SeqCst);
        let first = loop {
            if let Ok(r) = tokio::time::timeout(POLL_SLICE, consumer.recv()).await {
                break Some(r);
            }
            // Partitions newly assigned (during that poll, in the rebalance
            // callback) may hold a backlog: waiting for their records starts
            // now.
            let assigned_now = consumer.context().assignments.load(Ordering::SeqCst);
            if assigned_now != assignments {
                assignments = assigned_now;
                waiting = Instant::now();
            }
            if limit.is_some_and(|l| waiting.elapsed() >= l)
                && !drain.resting()
                && !(seen_any && drain.stay(&consumer).await)
            {
                break None;
            }
            // `stop()` dropped the receiver: end even while no record comes.
            if tx.is_closed() {
                return Ok(());
            }
        };
        let Some(first) = first else {
            if !seen_any {
                tracing::warn!(
                    timeout_s = startup_timeout.as_secs(),
                    "no record arrived before the startup timeout; stopping"
                );
            }
            return Ok(());
        };
        let first = match first {
            Ok(m) => m,
            Err(e) => {
                // Transient broker errors are reported by librdkafka and retried internally.
                errors.log(&e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seen_any = true;
        drain.reset();
        let received = now_us();
        let mut chunk = Vec::with_capacity(chunk_size);
        chunk.push(to_raw(&first, received));
        drop(first);
        let deadline = Instant::now() + chunk_wait;
        while chunk.len() < chunk_size {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => chunk.push(to_raw(&m, now_us())),
                Ok(Err(e)) => {
                    errors.log(&e);
                    break;
                }
                Err(_) => break,
            }
        }
        if consumer.context().revocations.load(Ordering::SeqCst) != revocations {
            // Partitions were revoked while the chunk filled: their records
            // belong to the next owner now.
            let assigned = consumer.context().assigned.lock().map(|a| a.clone()).unwrap_or_default();
            chunk.retain(|r| assigned.contains(&(r.topic.clone(), r.partition)));
            if chunk.is_empty() {
                continue;
            }
        }
        stats.records.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if m::recording() {
            count_consumed(&chunk);
        }
        let permit = match tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => match tokio::time::timeout(pause_after, tx.reserve()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Ok(()),
                Err(_) => {
                    // Processing is well behind: pause fetching rather than buffer more.
                    stats.pauses.fetch_add(1, Ordering::Relaxed);
                    m::CONSUMER_PAUSES.counter([]).increment(1);
                    let assignment = consumer.assignment()?;
                    consumer.pause(&assignment)?;
                    tracing::debug!(partitions = assignment.count(), "consumer paused: processing is behind");
                    let permit = tx.reserve().await;
                    consumer.resume(&assignment)?;
                    match permit {
                        Ok(p) => p,
                        Err(_) => return Ok(()),
                    }
                }
            },
        };
        permit.send(SourceEvent::Records(chunk));
        waiting = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(config: &KafkaSourceConfig) -> Option<String> {
        config.client_config("source").unwrap().get("heartbeat.interval.ms").map(str::to_string)
    }

    #[test]
    fn a_worker_with_a_priority_lane_heartbeats_every_second_unless_told_otherwise() {
        let yaml = "{bootstrap_servers: 'b:9092', topics: [tx], group_id: g, priority: {topics: [urgent]}}";
        let config: KafkaSourceConfig = serde_yaml::from_str(yaml).unwrap();
        let lane = config.priority_lane().unwrap();
        assert_eq!(lane.topics, ["urgent"]);
        assert_eq!(heartbeat(&config).as_deref(), Some("1000"), "main consumer");
        assert_eq!(heartbeat(&lane).as_deref(), Some("1000"), "lane consumer");

        let set = "{bootstrap_servers: 'b:9092', topics: [tx], group_id: g, priority: {topics: [urgent]}, \
                   properties: {heartbeat.interval.ms: '2500'}}";
        let config: KafkaSourceConfig = serde_yaml::from_str(set).unwrap();
        assert_eq!(heartbeat(&config).as_deref(), Some("2500"));
        assert_eq!(heartbeat(&config.priority_lane().unwrap()).as_deref(), Some("2500"));

        let plain: KafkaSourceConfig =
            serde_yaml::from_str("{bootstrap_servers: 'b', topics: [tx], group_id: g}").unwrap();
        assert_eq!(heartbeat(&plain), None, "librdkafka's default without a lane");
    }
}
