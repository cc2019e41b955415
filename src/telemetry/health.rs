//! What `/readyz` reports: the conditions a streaming run must meet to do
//! its work, each set by the part of the run that knows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The readiness of a streaming run. `/healthz` needs none of it: the
/// process answering is the proof of life.
#[derive(Debug, Default)]
pub struct Health {
    /// Every worker's model loaded and cloud client built.
    pub models_loaded: AtomicBool,
    /// The Parquet tables (and the Kafka producer, when used) opened.
    pub sinks_open: AtomicBool,
    /// Partitions assigned to the consumer; `None` until a Kafka source
    /// started (a file source needs no assignment).
    assigned: std::sync::Mutex<Option<Arc<switchyard_ingest::SourceStats>>>,
    /// A file source (no consumer group to join).
    pub no_consumer: AtomicBool,
    /// The run is ending (its source ended, or it failed).
    pub stopping: AtomicBool,
}

impl Health {
    /// Watches the consumer's assignment through its counters.
    pub fn watch_consumer(&self, stats: Arc<switchyard_ingest::SourceStats>) {
        if let Ok(mut a) = self.assigned.lock() {
            *a = Some(stats);
        }
    }

    /// Ready or not, and the JSON body naming each condition.
    pub fn report(&self) -> (bool, String) {
        let partitions = self.assigned.lock().ok().and_then(|a| a.as_ref().map(|s| s.assigned.load(Ordering::Relaxed)));
        let consumer = self.no_consumer.load(Ordering::Relaxed) || partitions.is_some_and(|p| p > 0);
        let models = self.models_loaded.load(Ordering::Relaxed);
        let sinks = self.sinks_open.load(Ordering::Relaxed);
        let stopping = self.stopping.load(Ordering::Relaxed) || crate::signal::requested();
        let ready = consumer && models && sinks && !stopping;
        let body = serde_json::json!({
            "ready": ready,
            "consumer_assigned": consumer,
            "assigned_partitions": partitions.unwrap_or(0),
            "models_loaded": models,
            "sinks_open": sinks,
            "shutting_down": stopping,
        });
        (ready, format!("{body}\n"))
    }
}
