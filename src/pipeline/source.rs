//! Where a run's records come from: a Kafka consumer group (streaming), a
//! JSON Lines file (`run --input-file`), or a bounded source (backfills).
//! The caller opens it; the pipeline only reads chunks from it.

use std::sync::Arc;

use switchyard_ingest::bounded::BoundedSource;
use switchyard_ingest::{FileSource, KafkaCommitter, KafkaSource, SourceEvent, SourceStats};

/// A run's source of records.
pub enum Source {
    /// A Kafka consumer group: offsets are committed after each roll.
    Kafka(KafkaSource),
    /// A JSON Lines file.
    File(FileSource),
    /// A backfill's files or Kafka ranges; its checkpoint is the roll manifests.
    Bounded(BoundedSource),
}

impl Source {
    /// The next chunk (or, from Kafka, rebalance event); `None` at the end;
    /// an error when a bounded source's input cannot be read.
    pub(super) async fn next(&mut self) -> Option<anyhow::Result<SourceEvent>> {
        match self {
            Source::Kafka(k) => k.next_event().await.map(Ok),
            Source::File(f) => f.next_chunk().map(|c| c.map(SourceEvent::Records).map_err(anyhow::Error::from)),
            Source::Bounded(b) => {
                b.next_chunk().await.map(|r| r.map(SourceEvent::Records).map_err(anyhow::Error::from))
            }
        }
    }

    /// Who commits the consumed offsets (Kafka only).
    pub(super) fn committer(&self) -> Option<KafkaCommitter> {
        match self {
            Source::Kafka(k) => Some(k.committer()),
            _ => None,
        }
    }

    /// The consumer's counters (Kafka only).
    pub(super) fn stats(&self) -> Option<Arc<SourceStats>> {
        match self {
            Source::Kafka(k) => Some(k.stats()),
            _ => None,
        }
    }

    /// Leaves the consumer group cleanly (Kafka only).
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        if let Source::Kafka(k) = self {
            k.stop().await?;
        }
        Ok(())
    }
}
