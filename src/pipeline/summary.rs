//! What a run did: the summary at its end, and the live counters a
//! progress display reads while it goes on.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use switchyard_sink::TableRoot;

use switchyard_sink::{keep_highest, Offsets};
use switchyard_workers::cloud::CloudSnapshot;

/// Live counts of a run, for progress displays.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read.
    pub records: AtomicU64,
    /// Results written.
    pub results: AtomicU64,
    /// Records sent to the DLQ.
    pub dlq: AtomicU64,
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    /// Records read from the source.
    pub records: u64,
    /// Results written.
    pub predictions: u64,
    /// Records sent to the DLQ.
    pub dlq: u64,
    /// Records skipped because their results were already durable (replay).
    pub replayed: u64,
    /// Results per route: the worker that answered (shadow answers not
    /// included).
    pub by_route: BTreeMap<String, u64>,
    /// Results a fallback worker answered, per worker.
    pub fallbacks: BTreeMap<String, u64>,
    /// Shadow answers recorded (Parquet only), per worker.
    pub shadows: BTreeMap<String, u64>,
    /// Shadow requests that got no answer.
    pub shadow_failed: u64,
    /// Cloud workers' counters and circuit state at the end of the run.
    pub cloud: BTreeMap<String, CloudSnapshot>,
    /// Results per policy rule.
    pub by_rule: BTreeMap<String, u64>,
    /// DLQ records per error class.
    pub dlq_by_class: BTreeMap<String, u64>,
    /// Receipt → results durable (acknowledged by Kafka), in µs.
    pub latency_us: hdrhistogram::Histogram<u64>,
    /// Kafka message timestamp → results durable, in µs (includes time spent
    /// in the topic before switchyard read it).
    pub event_latency_us: hdrhistogram::Histogram<u64>,
    /// The same two, per latency tier: (receipt, Kafka timestamp) → results
    /// durable, in µs.
    pub latency_by_tier: BTreeMap<String, (hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)>,
    /// From the first record to the last result.
    pub elapsed: Duration,
    /// When the first record was received and the last result written
    /// (µs since the epoch; 0 when none): several workers' runs add up.
    pub span_us: (i64, i64),
    /// Model executions and rows, per worker.
    pub batches: BTreeMap<String, (u64, u64)>,
    /// Times the consumer paused for backpressure.
    pub pauses: u64,
    /// Parquet rolls (each followed by an offset commit).
    pub rolls: u64,
    /// Where the tables are.
    pub tables: TableRoot,
    /// Feedback records written to the `feedback` table.
    pub feedback: u64,
    /// Bad feedback records sent to the DLQ (table, and topic with a Kafka sink).
    pub feedback_dlq: u64,
    /// Retrain triggers the monitor emitted.
    pub triggers: u64,
    /// Model version changes taken up while running (`event version: detail`).
    pub model_changes: Vec<String>,
    /// Ctrl-C or SIGTERM stopped the run before its source ended.
    pub interrupted: bool,
    /// Highest durable offset per input at the end (bounded runs).
    pub durable: Offsets,
}

impl Summary {
    /// An empty summary of a run writing to `tables`.
    pub fn new(tables: TableRoot) -> Self {
        Summary {
            records: 0,
            predictions: 0,
            dlq: 0,
            replayed: 0,
            by_route: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
            shadows: BTreeMap::new(),
            shadow_failed: 0,
            cloud: BTreeMap::new(),
            by_rule: BTreeMap::new(),
            dlq_by_class: BTreeMap::new(),
            latency_us: histogram(),
            event_latency_us: histogram(),
            latency_by_tier: BTreeMap::new(),
            elapsed: Duration::ZERO,
            span_us: (0, 0),
            batches: BTreeMap::new(),
            pauses: 0,
            rolls: 0,
            tables,
            feedback: 0,
            feedback_dlq: 0,
            triggers: 0,
            model_changes: Vec::new(),
            interrupted: false,
            durable: Offsets::new(),
        }
    }

    /// Adds the summary of another lane of the same run (the priority
    /// lane): its counts, latencies, rolls and durable offsets; the run's
    /// span covers both. The workers' batch counts are shared, so already in.
    pub fn absorb(&mut self, lane: Summary) {
        fn add(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
            for (k, v) in from {
                *into.entry(k).or_default() += v;
            }
        }
        let had = self.records > 0;
        self.records += lane.records;
        self.predictions += lane.predictions;
        self.dlq += lane.dlq;
        self.replayed += lane.replayed;
        add(&mut self.by_route, lane.by_route);
        add(&mut self.fallbacks, lane.fallbacks);
        add(&mut self.shadows, lane.shadows);
        add(&mut self.by_rule, lane.by_rule);
        add(&mut self.dlq_by_class, lane.dlq_by_class);
        self.shadow_failed += lane.shadow_failed;
        let _ = self.latency_us.add(&lane.latency_us);
        let _ = self.event_latency_us.add(&lane.event_latency_us);
        for (tier, (receipt, age)) in lane.latency_by_tier {
            let mine = self.latency_by_tier.entry(tier).or_insert_with(|| (histogram(), histogram()));
            let _ = mine.0.add(&receipt);
            let _ = mine.1.add(&age);
        }
        if lane.records > 0 {
            let (first, last) = if had {
                (self.span_us.0.min(lane.span_us.0), self.span_us.1.max(lane.span_us.1))
            } else {
                lane.span_us
            };
            self.span_us = (first, last);
            self.elapsed = Duration::from_micros((last - first).max(1) as u64);
        }
        self.pauses += lane.pauses;
        self.rolls += lane.rolls;
        self.interrupted |= lane.interrupted;
        for (k, v) in lane.durable {
            keep_highest(&mut self.durable, k, v);
        }
    }

    /// Records per second over the run.
    pub fn rate(&self) -> f64 {
        self.records.saturating_sub(self.replayed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A latency histogram from 1 µs to a day, 3 significant digits.
pub(super) fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 24 * 3_600_000_000, 3).expect("valid histogram bounds")
}
