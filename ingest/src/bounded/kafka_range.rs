//! A Kafka topic between offsets or timestamps, per partition: assigned
//! (no consumer group, nothing committed), read from each partition's start
//! up to its end, then done.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use switchyard_schemas::{Problems, RawRecord, SecretSource};
use tokio::sync::mpsc;

use super::{send, Done, Input};
use crate::{Error, Result};

/// `type: kafka`: the records of `topic` from `start` (inclusive) to `end`
/// (exclusive), per partition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaRangeConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// The topic to read.
    pub topic: String,
    /// Partitions to read; all of the topic's when empty.
    #[serde(default)]
    pub partitions: Vec<i32>,
    /// Where each partition's range starts (inclusive); its earliest
    /// retained record when not given.
    #[serde(default)]
    pub start: RangeBound,
    /// Where each partition's range ends (exclusive); the partition's end
    /// when the run was first planned, when not given (a resumed run keeps
    /// the first attempt's ends).
    #[serde(default)]
    pub end: RangeBound,
    /// Extra librdkafka properties (security, timeouts).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties (`sasl.password`, key passwords), each
    /// from an environment variable (`{ env: NAME }`) or a file (`{ file:
    /// path }`, relative to the manifest).
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Records per chunk handed to the pipeline.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// A partition that delivers nothing for this long before its end is an
    /// error (broker gone, records deleted by retention), in ms.
    #[serde(default = "default_stall_ms")]
    pub stall_timeout_ms: u64,
}

fn default_chunk_size() -> usize {
    1024
}
fn default_stall_ms() -> u64 {
    60_000
}

/// One end of a range: at most one of `offset` and `time`, and per-partition
/// `offsets` that take precedence for the partitions they name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RangeBound {
    /// An offset, the same for every partition.
    #[serde(default)]
    pub offset: Option<i64>,
    /// A time (RFC 3339): the first record at or after it, by the record's
    /// Kafka timestamp.
    #[serde(default)]
    pub time: Option<String>,
    /// Offsets by partition.
    #[serde(default)]
    pub offsets: BTreeMap<i32, i64>,
}

fn parse_time(t: &str) -> std::result::Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|e| format!("`{t}` is not an RFC 3339 time (e.g. 2026-07-01T00:00:00Z): {e}"))
}

/// Properties switchyard sets for a range reader.
const RESERVED: &[&str] = &["bootstrap.servers", "enable.auto.commit", "enable.partition.eof", "group.id"];

impl RangeBound {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.offset.is_some() && self.time.is_some() {
            problems.push(path.to_string(), "give `offset` or `time`, not both");
        }
        if let Some(t) = &self.time {
            if let Err(e) = parse_time(t) {
                problems.push(format!("{path}.time"), e);
            }
        }
        if self.offset.is_some_and(|o| o < 0) {
            problems.push(format!("{path}.offset"), "must not be negative");
        }
        for (p, o) in &self.offsets {
            if *o < 0 {
                problems.push(format!("{path}.offsets.{p}"), "must not be negative");
            }
        }
    }

    /// The offset this bound names for partition `p` (whose records are
    /// `low..high`), or `None` for the default (earliest start, end of
    /// partition). Times are looked up in the broker's time index.
    fn offset_in(
        &self,
        consumer: &BaseConsumer,
        topic: &str,
        p: i32,
        (low, high): (i64, i64),
        timeout: Duration,
    ) -> Result<Option<i64>> {
        if let Some(&o) = self.offsets.get(&p) {
            return Ok(Some(o));
        }
        if let Some(o) = self.offset {
            return Ok(Some(o));
        }
        let Some(t) = &self.time else { return Ok(None) };
        let ms = parse_time(t).map_err(Error::Config)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(ms))?;
        let found = consumer.offsets_for_times(tpl, timeout)?;
        // The broker's time index: the first offset whose timestamp is at or
        // after the time; none when no record is.
        Ok(Some(match found.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.clamp(low, high),
            _ => high,
        }))
    }
}

impl KafkaRangeConfig {
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if self.bootstrap_servers.trim().is_empty() {
            problems.push(format!("{path}.bootstrap_servers"), "must list at least one host:port");
        }
        if self.topic.trim().is_empty() {
            problems.push(format!("{path}.topic"), "must not be empty");
        }
        self.start.validate(&format!("{path}.start"), problems);
        self.end.validate(&format!("{path}.end"), problems);
        if let (Some(s), Some(e)) = (self.start.offset, self.end.offset) {
            if s > e {
                problems.push(format!("{path}.end.offset"), format!("{e} is before start offset {s}"));
            }
        }
        if let (Some(s), Some(e)) = (&self.start.time, &self.end.time) {
            if let (Ok(s), Ok(e)) = (parse_time(s), parse_time(e)) {
                if s > e {
                    problems.push(format!("{path}.end.time"), "is before the start time");
                }
            }
        }
        for k in self.properties.keys().chain(self.secrets.keys()) {
            if RESERVED.contains(&k.as_str()) {
                problems.push(format!("{path}.properties.{k}"), "is set by switchyard and cannot be overridden");
            }
        }
        switchyard_schemas::kafka::check(path, &self.properties, &self.secrets, problems);
        if self.chunk_size == 0 {
            problems.push(format!("{path}.chunk_size"), "must be at least 1");
        }
    }

    fn consumer(&self, eof: bool) -> Result<BaseConsumer> {
        let mut c = ClientConfig::new();
        let settings =
            switchyard_schemas::kafka::settings("source", &self.properties, &self.secrets).map_err(Error::Config)?;
        for (k, v) in settings {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.bootstrap_servers)
            // Needed by librdkafka's consumer; no group operation is used.
            .set("group.id", format!("switchyard-backfill-{}", self.topic))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", if eof { "true" } else { "false" });
        Ok(c.create()?)
    }

    /// Every partition's range, from the broker's offsets.
    pub(super) fn list_inputs(&self) -> Result<Vec<Input>> {
        let timeout = Duration::from_secs(15);
        let consumer = self.consumer(false)?;
        let unreachable =
            |e: KafkaError| Error::Source(format!("kafka {} (topic `{}`): {e}", self.bootstrap_servers, self.topic));
        let meta = consumer.fetch_metadata(Some(&self.topic), timeout).map_err(unreachable)?;
        let topic = meta
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| Error::Source(format!("topic `{}` not found on {}", self.topic, self.bootstrap_servers)))?;
        let all: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        let partitions = if self.partitions.is_empty() { all.clone() } else { self.partitions.clone() };
        let mut inputs = Vec::new();
        for p in partitions {
            if !all.contains(&p) {
                return Err(Error::Source(format!(
                    "topic `{}` has no partition {p} (it has {})",
                    self.topic,
                    all.len()
                )));
            }
            let (low, high) = consumer.fetch_watermarks(&self.topic, p, timeout).map_err(unreachable)?;
            let bound = |b: &RangeBound| {
                b.offset_in(&consumer, &self.topic, p, (low, high), timeout).map_err(|e| match e {
                    Error::Kafka(k) => unreachable(k),
                    e => e,
                })
            };
            let (start, end) = (bound(&self.start)?, bound(&self.end)?);
            let start = start.unwrap_or(low).clamp(low, high);
            let end = end.unwrap_or(high).clamp(start, high);
            inputs.push(Input { source: self.topic.clone(), partition: p, start, end: Some(end), bytes: None });
        }
        Ok(inputs)
    }

    pub(super) fn reader(&self, inputs: Vec<Input>, done: &Done, chunk: usize) -> Result<RangeReader> {
        let mut ranges = HashMap::new();
        for i in inputs {
            let from = done.get(&(i.source.clone(), i.partition)).map_or(i.start, |&d| (d + 1).max(i.start));
            let end = i.end.unwrap_or(i64::MAX);
            if from < end {
                ranges.insert(i.partition, (from, end));
            }
        }
        Ok(RangeReader {
            consumer: self.consumer(true)?,
            topic: self.topic.clone(),
            ranges,
            chunk,
            stall: Duration::from_millis(self.stall_timeout_ms.max(1)),
        })
    }
}

/// Reads the ranges on its own thread.
pub(super) struct RangeReader {
    consumer: BaseConsumer,
    topic: String,
    /// Partition → (next offset, end), for partitions not finished.
    ranges: HashMap<i32, (i64, i64)>,
    chunk: usize,
    stall: Duration,
}

impl RangeReader {
    pub(super) fn run(mut self, tx: &mpsc::Sender<Result<Vec<RawRecord>>>) {
        if let Err(e) = self.read(tx) {
            let _ = tx.blocking_send(Err(e));
        }
    }

    fn read(&mut self, tx: &mpsc::Sender<Result<Vec<RawRecord>>>) -> Result<()> {
        if self.ranges.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &(from, _)) in &self.ranges {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(from))?;
        }
        self.consumer.assign(&tpl)?;
        let mut chunk = Vec::with_capacity(self.chunk);
        let mut progress = Instant::now();
        while !self.ranges.is_empty() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {
                    if !send(tx, &mut chunk) {
                        return Ok(());
                    }
                    if progress.elapsed() > self.stall {
                        let mut left: Vec<String> =
                            self.ranges.iter().map(|(p, (next, end))| format!("{p} at {next} of {end}")).collect();
                        left.sort();
                        return Err(Error::Source(format!(
                            "topic `{}`: nothing read for {} s with partitions unfinished ({}); is the broker up, \
                             or were the records deleted by retention?",
                            self.topic,
                            self.stall.as_secs(),
                            left.join(", ")
                        )));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // The partition's current end is at or past the range's end.
                    progress = Instant::now();
                    self.finish(p)?;
                }
                Some(Err(e)) => {
                    return Err(Error::Source(format!("topic `{}`: {e}", self.topic)));
                }
                Some(Ok(m)) => {
                    use rdkafka::message::Message as _;
                    progress = Instant::now();
                    let p = m.partition();
                    let Some(&(_, end)) = self.ranges.get(&p) else { continue };
                    if m.offset() < end {
                        chunk.push(crate::kafka::to_raw(&m, 0));
                        if let Some(r) = self.ranges.get_mut(&p) {
                            r.0 = m.offset() + 1;
                        }
                    }
                    if m.offset() + 1 >= end {
                        self.finish(p)?;
                    }
                    if chunk.len() >= self.chunk && !send(tx, &mut chunk) {
                        return Ok(());
                    }
                }
            }
        }
        send(tx, &mut chunk);
        Ok(())
    }

    fn finish(&mut self, p: i32) -> Result<()> {
        if self.ranges.remove(&p).is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, p);
            // Stop fetching what lies past the range.
            self.consumer.pause(&tpl)?;
        }
        Ok(())
    }
}
