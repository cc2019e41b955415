//! Bounded sources, for backfills: files by glob (Parquet, JSON Lines, CSV;
//! local or on object storage) and Kafka topics between offsets or times.
//!
//! A bounded source is planned first ([`BoundedConfig::list_inputs`]): the list of
//! its *inputs* — one per file, one per Kafka partition — with their offset
//! ranges, fixed for the whole run (a resumed run reads the same ranges).
//! Reading ([`BoundedConfig::open`]) yields the same [`RawRecord`]s as the
//! streaming sources, so decoding, validation and everything after it is the
//! streaming pipeline's code. A file's rows are numbered from 0 and the
//! number is the record's offset; the file's location is its topic, so every
//! row has stable coordinates, a stable lineage id, and a checkpoint is the
//! highest offset made durable per input.

mod files;
mod kafka_range;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_schemas::{EventSchema, Problems, RawRecord};
use tokio::sync::mpsc;

pub use files::{CsvOptions, FileFormat, FilesConfig};
pub use kafka_range::{KafkaRangeConfig, RangeBound};

use crate::Result;

/// The `source:` section of a backfill manifest, selected by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BoundedConfig {
    /// Parquet, JSON Lines, CSV or Avro container files by glob, local or on
    /// object storage.
    Files(FilesConfig),
    /// A Kafka topic between offsets or timestamps, per partition.
    Kafka(KafkaRangeConfig),
}

/// One input of a bounded source: a file, or one partition's offset range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Input {
    /// Recorded as the rows' source topic: the file's location (an absolute
    /// path or an object store URL), or the Kafka topic.
    pub source: String,
    /// Kafka partition; 0 for files.
    pub partition: i32,
    /// First offset of the range (row 0 for files).
    pub start: i64,
    /// One past the last offset. For files the row count, when known before
    /// reading (Parquet footers, or after counting lines).
    pub end: Option<i64>,
    /// Size in bytes (files).
    #[serde(default)]
    pub bytes: Option<u64>,
}

impl Input {
    /// Rows in the range, when known.
    pub fn rows(&self) -> Option<u64> {
        self.end.map(|e| (e - self.start).max(0) as u64)
    }

    /// Rows still to read when everything up to `done` (the highest durable
    /// offset) is finished.
    pub fn remaining(&self, done: Option<i64>) -> Option<u64> {
        let from = done.map_or(self.start, |d| (d + 1).max(self.start));
        self.end.map(|e| (e - from).max(0) as u64)
    }
}

/// Highest durable offset per `(source, partition)`: a run's checkpoint.
pub type Done = HashMap<(String, i32), i64>;

impl BoundedConfig {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        match self {
            BoundedConfig::Files(f) => f.validate(path, problems),
            BoundedConfig::Kafka(k) => k.validate(path, problems),
        }
    }

    /// Records per chunk handed to the pipeline.
    pub fn chunk_size(&self) -> usize {
        match self {
            BoundedConfig::Files(f) => f.chunk_size.max(1),
            BoundedConfig::Kafka(k) => k.chunk_size.max(1),
        }
    }

    /// What the inputs are called in messages: `files` or `partitions`.
    pub fn unit(&self) -> &'static str {
        match self {
            BoundedConfig::Files(_) => "files",
            BoundedConfig::Kafka(_) => "partitions",
        }
    }

    /// Lists the inputs and their ranges: expands the globs (relative paths
    /// against `base`) and reads Parquet footers, or asks the broker for the
    /// partitions' offsets. An empty match is an error naming the pattern.
    pub async fn list_inputs(&self, base: &Path) -> Result<Vec<Input>> {
        match self {
            BoundedConfig::Files(f) => f.list_inputs(base).await,
            BoundedConfig::Kafka(k) => {
                let k = k.clone();
                tokio::task::spawn_blocking(move || k.list_inputs())
                    .await
                    .map_err(|e| crate::Error::Internal(format!("offset lookup task failed: {e}")))?
            }
        }
    }

    /// Counts the rows of inputs whose count the listing did not give
    /// (JSON Lines and CSV files are read to the end).
    pub async fn count(&self, inputs: &mut [Input]) -> Result<()> {
        match self {
            BoundedConfig::Files(f) => f.count(inputs).await,
            BoundedConfig::Kafka(_) => Ok(()),
        }
    }

    /// Starts reading `inputs` on a thread of its own, skipping every record
    /// at or below its input's `done` offset. Chunks arrive in input order
    /// and, within an input, in offset order; at most `queue` wait unread.
    pub fn open(
        &self,
        inputs: Vec<Input>,
        done: &Done,
        schema: Arc<EventSchema>,
        queue: usize,
    ) -> Result<BoundedSource> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let chunk = self.chunk_size();
        let handle = tokio::runtime::Handle::current();
        let thread = match self {
            BoundedConfig::Files(f) => {
                let reader = f.reader(inputs, done, schema, chunk)?;
                std::thread::Builder::new().name("backfill-files".into()).spawn(move || reader.run(&handle, &tx))
            }
            BoundedConfig::Kafka(k) => {
                let reader = k.reader(inputs, done, chunk)?;
                std::thread::Builder::new().name("backfill-kafka".into()).spawn(move || reader.run(&tx))
            }
        }
        .map_err(|e| crate::Error::Internal(format!("cannot start the reader thread: {e}")))?;
        Ok(BoundedSource { rx, thread: Some(thread) })
    }
}

/// A running bounded source.
pub struct BoundedSource {
    rx: mpsc::Receiver<Result<Vec<RawRecord>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BoundedSource {
    /// The next chunk; `None` once every input is read; an error when an
    /// input cannot be read (the run stops, and resumes from its checkpoint).
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<RawRecord>>> {
        let next = self.rx.recv().await;
        if next.is_none() {
            if let Some(t) = self.thread.take() {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        next
    }
}

/// Sends a chunk; false when the receiver is gone (the run stopped).
fn send(tx: &mpsc::Sender<Result<Vec<RawRecord>>>, chunk: &mut Vec<RawRecord>) -> bool {
    if chunk.is_empty() {
        return true;
    }
    let now = chrono::Utc::now().timestamp_micros();
    for r in chunk.iter_mut() {
        r.received_us = now;
    }
    tx.blocking_send(Ok(std::mem::take(chunk))).is_ok()
}
