//! Every metric switchyard exports, named, typed and described here once.
//!
//! Code records a metric through its entry ([`Metric::counter`],
//! [`Metric::gauge`], [`Metric::histogram`]), never through a string of its
//! own; the Prometheus exporter takes descriptions and histogram buckets
//! from [`ALL`], and README's metric table is generated from it
//! (`switchyard metrics`). Names follow Prometheus conventions: the
//! `switchyard_` prefix, base units in the name (`_seconds`, `_bytes`),
//! `_total` on counters. Label values are bounded: topics, partitions,
//! worker, route and model names from the manifest, fixed class names —
//! never a key or a lineage id.
//!
//! Without an installed recorder (`run` without `service.listen`) every
//! call here is a no-op.

use metrics::{Label, SharedString};

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (Prometheus counter, name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution, exported as Prometheus histogram buckets.
    Histogram,
}

impl Kind {
    /// Prometheus's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Debug)]
pub struct Metric {
    /// Full Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// What one unit is (`seconds`, `records`, …), for the docs.
    pub unit: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Its label names, in the order code passes them.
    pub labels: &'static [&'static str],
    /// Histogram bucket upper bounds (histograms only).
    pub buckets: &'static [f64],
}

/// Upper bounds for durations in seconds, 100 µs to 30 s.
const SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds for counts of rows or records.
const ROWS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0];
/// Upper bounds for a fraction.
const RATIO: &[f64] = &[0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

macro_rules! metric {
    ($id:ident, $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal) => {
        metric!($id, $name, $kind, $unit, [$($label),*], $help, &[]);
    };
    ($id:ident, $name:literal, $kind:ident, $unit:literal, [$($label:literal),*], $help:literal, $buckets:expr) => {
        #[doc = $help]
        pub static $id: Metric = Metric {
            name: $name,
            kind: Kind::$kind,
            unit: $unit,
            help: $help,
            labels: &[$($label),*],
            buckets: $buckets,
        };
    };
}

// --- the source -------------------------------------------------------------
metric!(
    RECORDS_CONSUMED,
    "switchyard_records_consumed_total",
    Counter,
    "records",
    ["topic", "partition"],
    "Records read from the source topics."
);
metric!(
    CONSUMER_LAG,
    "switchyard_consumer_lag_records",
    Gauge,
    "records",
    ["topic", "partition"],
    "Records between the group's position and the partition's high watermark (librdkafka statistics, every 5 s)."
);
metric!(
    ASSIGNED_PARTITIONS,
    "switchyard_consumer_assigned_partitions",
    Gauge,
    "partitions",
    [],
    "Partitions assigned to this worker's consumer."
);
metric!(
    REBALANCES,
    "switchyard_consumer_rebalances_total",
    Counter,
    "rebalances",
    ["kind"],
    "Consumer group rebalances seen by this worker, by kind (`assign`, `revoke`, `error`)."
);
metric!(
    CONSUMER_PAUSES,
    "switchyard_consumer_pauses_total",
    Counter,
    "pauses",
    [],
    "Times the consumer paused its partitions because processing was behind (backpressure)."
);
metric!(
    CHUNK_RECORDS,
    "switchyard_chunk_records",
    Histogram,
    "records",
    [],
    "Records per chunk handed from the consumer to the pipeline.",
    ROWS
);
metric!(
    OFFSET_COMMITS,
    "switchyard_offset_commits_total",
    Counter,
    "commits",
    ["outcome"],
    "Offset commits after a roll, by outcome (`ok`, `error`: retried by the next roll)."
);
metric!(
    COMMITTED_OFFSET,
    "switchyard_committed_offset",
    Gauge,
    "offset",
    ["topic", "partition"],
    "The next offset this worker committed for the partition (everything before it is durable)."
);

// --- the pipeline -----------------------------------------------------------
metric!(
    STAGE_DURATION,
    "switchyard_stage_duration_seconds",
    Histogram,
    "seconds",
    ["stage"],
    "Time a chunk spent in each stage: `decode`, `preprocess`, `route` (summed over its records), `queue_wait` \
     (prepared, waiting for the sink), `inference` (dispatch to the last answer), `sink_write` (Kafka send and \
     Parquet write), `roll` (Parquet files made durable), `commit` (offset commit).",
    SECONDS
);
metric!(
    RESULT_LATENCY,
    "switchyard_result_latency_seconds",
    Histogram,
    "seconds",
    ["tier", "from"],
    "Time until a result was acknowledged by the results topic (or, without one, written), by the event's \
     latency tier, from the worker's receipt of the record (`from=receipt`) or from its Kafka timestamp \
     (`from=timestamp`: includes the time it waited in the topic).",
    SECONDS
);
metric!(
    EVENTS,
    "switchyard_events_total",
    Counter,
    "events",
    ["route", "rule", "model", "sensitivity", "fallback"],
    "Results written, by route (the worker that answered, as in the tables' `route` column), the policy rule \
     that matched, the model version that answered (`name/version`), the event's sensitivity class and whether \
     a fallback answered (`true`/`false`)."
);
metric!(
    SHADOW_ANSWERS,
    "switchyard_shadow_answers_total",
    Counter,
    "answers",
    ["worker", "model"],
    "Shadow answers recorded in the predictions table (not sent to the results topic)."
);
metric!(
    SHADOW_FAILURES,
    "switchyard_shadow_failures_total",
    Counter,
    "requests",
    [],
    "Shadow requests that got no answer."
);
metric!(
    DLQ_RECORDS,
    "switchyard_dlq_records_total",
    Counter,
    "records",
    ["stage", "class"],
    "Records sent to the dead-letter queue, by the stage that refused them and the error class."
);
metric!(
    REPLAYED_RECORDS,
    "switchyard_replayed_records_total",
    Counter,
    "records",
    [],
    "Records skipped because their results were already durable (a replay after a crash or rebalance)."
);
metric!(
    BUILD_INFO,
    "switchyard_build_info",
    Gauge,
    "1",
    ["version", "pipeline"],
    "Always 1: the running switchyard version and pipeline name."
);
metric!(
    MODEL_INFO,
    "switchyard_model_info",
    Gauge,
    "1",
    ["worker", "model", "version"],
    "1 for each model version a local worker serves now, 0 for versions it served before."
);

// --- local workers ----------------------------------------------------------
metric!(
    BATCH_ROWS,
    "switchyard_batch_rows",
    Histogram,
    "rows",
    ["worker"],
    "Rows per model execution of a local worker.",
    ROWS
);
metric!(
    BATCH_FILL,
    "switchyard_batch_fill_ratio",
    Histogram,
    "ratio",
    ["worker"],
    "Rows per model execution as a fraction of `max_batch_size`.",
    RATIO
);
metric!(
    BATCH_DURATION,
    "switchyard_batch_duration_seconds",
    Histogram,
    "seconds",
    ["worker"],
    "Time of one model execution (ONNX Runtime) of a local worker.",
    SECONDS
);
metric!(
    BATCHER_QUEUE,
    "switchyard_batcher_queued_requests",
    Gauge,
    "requests",
    ["worker"],
    "Requests waiting in a local worker's batcher queue when a batch starts."
);

// --- cloud workers ----------------------------------------------------------
metric!(
    CLOUD_REQUESTS,
    "switchyard_cloud_requests_total",
    Counter,
    "requests",
    ["worker", "outcome"],
    "HTTP attempts of a cloud worker, by outcome (`ok`, `status_4xx`, `status_429`, `status_5xx`, `timeout`, \
     `connection`)."
);
metric!(
    CLOUD_RETRIES,
    "switchyard_cloud_retries_total",
    Counter,
    "attempts",
    ["worker"],
    "Attempts that repeated a failed one."
);
metric!(CLOUD_ROWS, "switchyard_cloud_rows_total", Counter, "rows", ["worker"], "Rows answered by a cloud endpoint.");
metric!(
    CLOUD_REQUEST_DURATION,
    "switchyard_cloud_request_duration_seconds",
    Histogram,
    "seconds",
    ["worker"],
    "Time of one successful HTTP attempt, request sent to answer read.",
    SECONDS
);
metric!(
    CLOUD_RATE_LIMIT_WAIT,
    "switchyard_cloud_rate_limit_wait_seconds",
    Histogram,
    "seconds",
    ["worker"],
    "Time an attempt waited for the endpoint's rate limiter.",
    SECONDS
);
metric!(
    BREAKER_STATE,
    "switchyard_cloud_breaker_state",
    Gauge,
    "state",
    ["worker"],
    "Circuit breaker state of a cloud worker: 0 closed, 1 half-open, 2 open."
);
metric!(
    BUDGET_SPENT,
    "switchyard_cloud_budget_spent",
    Gauge,
    "budget units",
    ["worker"],
    "Money (the budget's unit) spent in the current budget window, by every process sharing the table root."
);
metric!(
    QUOTA_SHARE,
    "switchyard_cloud_quota_share",
    Gauge,
    "fraction",
    ["worker"],
    "Share of a cloud endpoint's rate limit this process uses: the fraction of the input partitions it owns."
);
metric!(
    BUDGET_REMAINING,
    "switchyard_cloud_budget_remaining",
    Gauge,
    "budget units",
    ["worker"],
    "Budget left in the current window."
);
metric!(
    BUDGET_WARNINGS,
    "switchyard_cloud_budget_warnings_total",
    Counter,
    "warnings",
    ["worker"],
    "Times spending crossed the budget's warning fraction."
);
metric!(
    BUDGET_EXHAUSTED,
    "switchyard_cloud_budget_exhausted_total",
    Counter,
    "windows",
    ["worker"],
    "Times a budget window was spent."
);
metric!(
    REDACTIONS,
    "switchyard_cloud_redactions_total",
    Counter,
    "values",
    ["worker"],
    "Values a cloud worker's redaction replaced before a request left."
);
metric!(
    EGRESS_BLOCKED,
    "switchyard_cloud_egress_blocked_total",
    Counter,
    "requests",
    ["worker"],
    "Requests (or rows) stopped by the last PII check before leaving."
);

// --- tables and topics ------------------------------------------------------
metric!(
    PARQUET_FILES,
    "switchyard_parquet_files_total",
    Counter,
    "files",
    ["table"],
    "Parquet files made durable, per table."
);
metric!(
    PARQUET_ROWS,
    "switchyard_parquet_rows_total",
    Counter,
    "rows",
    ["table"],
    "Rows made durable in Parquet files, per table."
);
metric!(
    PARQUET_BYTES,
    "switchyard_parquet_bytes_total",
    Counter,
    "bytes",
    ["table"],
    "Bytes of Parquet files made durable, per table."
);
metric!(
    ROLLS,
    "switchyard_parquet_rolls_total",
    Counter,
    "rolls",
    [],
    "Parquet rolls that reached their commit point."
);
metric!(
    KAFKA_PRODUCED,
    "switchyard_kafka_records_produced_total",
    Counter,
    "records",
    ["topic"],
    "Records handed to the Kafka producer, per output topic (results, DLQ)."
);
metric!(
    KAFKA_TRANSACTIONS,
    "switchyard_kafka_transactions_total",
    Counter,
    "transactions",
    ["outcome"],
    "Kafka transactions of the results and DLQ producer with `delivery: exactly_once`, by outcome (committed, aborted, failed)."
);

/// Every metric, in the order of the docs.
pub static ALL: &[&Metric] = &[
    &RECORDS_CONSUMED,
    &CONSUMER_LAG,
    &ASSIGNED_PARTITIONS,
    &REBALANCES,
    &CONSUMER_PAUSES,
    &CHUNK_RECORDS,
    &OFFSET_COMMITS,
    &COMMITTED_OFFSET,
    &STAGE_DURATION,
    &RESULT_LATENCY,
    &EVENTS,
    &SHADOW_ANSWERS,
    &SHADOW_FAILURES,
    &DLQ_RECORDS,
    &REPLAYED_RECORDS,
    &BUILD_INFO,
    &MODEL_INFO,
    &BATCH_ROWS,
    &BATCH_FILL,
    &BATCH_DURATION,
    &BATCHER_QUEUE,
    &CLOUD_REQUESTS,
    &CLOUD_RETRIES,
    &CLOUD_ROWS,
    &CLOUD_REQUEST_DURATION,
    &CLOUD_RATE_LIMIT_WAIT,
    &BREAKER_STATE,
    &BUDGET_SPENT,
    &QUOTA_SHARE,
    &BUDGET_REMAINING,
    &BUDGET_WARNINGS,
    &BUDGET_EXHAUSTED,
    &REDACTIONS,
    &EGRESS_BLOCKED,
    &PARQUET_FILES,
    &PARQUET_ROWS,
    &PARQUET_BYTES,
    &ROLLS,
    &KAFKA_PRODUCED,
    &KAFKA_TRANSACTIONS,
];

impl Metric {
    /// Label values in the order of [`Metric::labels`]: the keys must be
    /// exactly those (checked in debug builds), so the docs cannot drift.
    fn labels<const N: usize>(&self, kind: Kind, values: [(&'static str, SharedString); N]) -> Vec<Label> {
        debug_assert_eq!(self.kind, kind, "{} is a {}", self.name, self.kind.as_str());
        debug_assert!(
            values.iter().map(|(k, _)| *k).eq(self.labels.iter().copied()),
            "{} takes the labels {:?}",
            self.name,
            self.labels
        );
        values.into_iter().map(|(k, v)| Label::new(k, v)).collect()
    }

    /// The counter with these label values.
    pub fn counter<const N: usize>(&self, labels: [(&'static str, SharedString); N]) -> metrics::Counter {
        let labels = self.labels(Kind::Counter, labels);
        metrics::counter!(self.name, labels)
    }

    /// The gauge with these label values.
    pub fn gauge<const N: usize>(&self, labels: [(&'static str, SharedString); N]) -> metrics::Gauge {
        let labels = self.labels(Kind::Gauge, labels);
        metrics::gauge!(self.name, labels)
    }

    /// The histogram with these label values.
    pub fn histogram<const N: usize>(&self, labels: [(&'static str, SharedString); N]) -> metrics::Histogram {
        let labels = self.labels(Kind::Histogram, labels);
        metrics::histogram!(self.name, labels)
    }
}

static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that a recorder is installed: code that gathers what it records
/// (per-chunk tallies, timings) may skip that work while this is false.
pub fn set_recording(on: bool) {
    RECORDING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a recorder is installed ([`set_recording`]).
pub fn recording() -> bool {
    RECORDING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Registers every metric's description with the installed recorder.
pub fn describe_all() {
    for m in ALL {
        let help = SharedString::const_str(m.help);
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, help),
            Kind::Gauge => metrics::describe_gauge!(m.name, help),
            Kind::Histogram => metrics::describe_histogram!(m.name, help),
        }
    }
}

/// The metrics as a Markdown table (README's list).
pub fn markdown() -> String {
    let mut out = String::from("| metric | type | labels | unit | what it counts |\n|---|---|---|---|---|\n");
    for m in ALL {
        let labels = if m.labels.is_empty() { "—".to_string() } else { m.labels.join(", ") };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            labels,
            m.unit,
            m.help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("switchyard_"), "{}", m.name);
            assert!(m.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{}", m.name);
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}: `_total` is for counters", m.name);
            assert_eq!(m.kind == Kind::Histogram, !m.buckets.is_empty(), "{}: buckets are for histograms", m.name);
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}: buckets must increase", m.name);
            if m.unit == "seconds" {
                assert!(m.name.contains("_seconds"), "{}: a duration is named in seconds", m.name);
            }
            for l in m.labels {
                assert!(!["key", "lineage_id", "id"].contains(l), "{}: `{l}` is unbounded", m.name);
            }
        }
    }

    #[test]
    fn markdown_lists_every_metric() {
        let md = markdown();
        assert_eq!(md.lines().count(), ALL.len() + 2);
        assert!(md.contains("| `switchyard_stage_duration_seconds` | histogram | stage | seconds |"));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "takes the labels")]
    fn wrong_labels_are_caught() {
        let _ = RECORDS_CONSUMED.counter([("topic", "t".into())]);
    }
}
