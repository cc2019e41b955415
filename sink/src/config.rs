use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_schemas::{Problems, RegistryConfig, SecretSource};

/// The `sinks:` section of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Results and DLQ topics.
    #[serde(default)]
    pub kafka: Option<KafkaSinkConfig>,
    /// Parquet tables (required: offsets are committed when results are
    /// durable in them).
    pub parquet: ParquetSinkConfig,
}

/// Kafka output topics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Brokers; the source's `bootstrap_servers` when absent.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// Topic for results (JSON, key = result key, lineage in headers).
    pub results_topic: String,
    /// Topic for records that could not be processed.
    pub dlq_topic: String,
    /// Extra librdkafka producer properties passed through unchanged. With
    /// no `bootstrap_servers` of its own, the producer also takes the
    /// source's connection properties (`security.*`, `sasl.*`, `ssl.*`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties (`sasl.password`, key passwords), each
    /// from an environment variable (`{ env: NAME }`) or a file (`{ file:
    /// path }`); without `bootstrap_servers`, the source's secrets apply.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Compression of the results and DLQ records: `zstd` (the default:
    /// half of lz4's bytes at no measured cost in throughput, see
    /// docs/BENCHMARKS.md), `lz4`, `snappy`, `gzip` or `none`. A `compression.type` under
    /// `properties` is refused: set it here. `zstd` runs at level 1 unless
    /// `properties` sets `compression.level`: on batches of results it gave
    /// as few bytes as librdkafka's default level 3 for 5 % less CPU per
    /// event (docs/BENCHMARKS.md, "Output codec").
    #[serde(default)]
    pub compression: Compression,
    /// Create the results and DLQ topics at start-up when they are missing.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of a results topic created at start-up.
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    /// Longest wait for the broker to acknowledge a record, in ms.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// `at_least_once` (the default): results are produced as they come and
    /// may appear twice after a crash. `exactly_once`: results and DLQ
    /// records of each roll are produced in one Kafka transaction together
    /// with the consumed offsets, so a `read_committed` consumer sees each
    /// event's result once through crashes and rebalances.
    #[serde(default)]
    pub delivery: Delivery,
    /// With `exactly_once`: longest wait for one attempt at committing a
    /// transaction, in ms. An attempt that times out has an unknown outcome
    /// and is retried (librdkafka finishes the first one); after three, the
    /// run stops and the next owner of the partitions settles the roll by
    /// the group's committed offsets.
    #[serde(default = "default_commit_timeout_ms")]
    pub commit_timeout_ms: u64,
    /// Encoding of the results topic's values: `json` (the default) or
    /// `avro`, the Confluent wire format with switchyard's result schema,
    /// registered at start-up under `<results_topic>-value`
    /// (TopicNameStrategy). DLQ records keep the original bytes either way.
    #[serde(default)]
    pub value_format: ValueFormat,
    /// The Schema Registry for `value_format: avro`; the pipeline's
    /// `schema.registry` when absent.
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
}

/// Encoding of the results topic's values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    /// A JSON object per result.
    #[default]
    Json,
    /// Confluent wire format (a zero byte, the schema id) and an Avro datum.
    Avro,
}

/// How results reach the results and DLQ topics.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Produced as they come; after a crash some may appear twice.
    #[default]
    AtLeastOnce,
    /// In Kafka transactions with the consumed offsets.
    ExactlyOnce,
}

/// A Kafka producer's compression codec (librdkafka's `compression.type`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip: small, slow.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard: the default.
    #[default]
    Zstd,
}

impl Compression {
    /// librdkafka's name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_topic_partitions() -> i32 {
    3
}
fn default_delivery_timeout_ms() -> u64 {
    30_000
}
fn default_commit_timeout_ms() -> u64 {
    30_000
}

/// Parquet tables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Root of the tables (`<path>/predictions`, `<path>/dlq`, …): a folder
    /// relative to the manifest's folder, or an object store prefix
    /// (`s3://bucket/prefix`, `gs://…`, `az://container/prefix`) that any
    /// number of workers share.
    pub path: PathBuf,
    /// Object store settings of an `s3://`, `gs://` or `az://` path, e.g.
    /// `aws_endpoint`, `aws_region`, `aws_allow_http` (the `object_store`
    /// crate's keys). Credentials are best left to the environment
    /// (`AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`, …), which is
    /// read first.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Roll (make durable, then commit offsets) after this many rows.
    #[serde(default = "default_roll_max_rows")]
    pub roll_max_rows: usize,
    /// Roll at least this often while data flows, in ms.
    #[serde(default = "default_roll_interval_ms")]
    pub roll_interval_ms: u64,
}

fn default_roll_max_rows() -> usize {
    100_000
}
fn default_roll_interval_ms() -> u64 {
    5_000
}

impl KafkaSinkConfig {
    /// The producer's librdkafka configuration (secrets read): switchyard's
    /// defaults, then `properties` and `secrets`, on `bootstrap_servers`
    /// (else `default_bootstrap`).
    pub fn client_config(&self, default_bootstrap: &str) -> crate::Result<rdkafka::ClientConfig> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string());
        if self.compression == Compression::Zstd {
            c.set("compression.level", "1");
        }
        let settings = switchyard_schemas::kafka::settings("sinks.kafka", &self.properties, &self.secrets)
            .map_err(crate::Error::Config)?;
        for (k, v) in settings {
            c.set(k, v);
        }
        c.set("compression.type", self.compression.as_str());
        c.set("bootstrap.servers", self.bootstrap_servers.as_deref().unwrap_or(default_bootstrap));
        Ok(c)
    }
}

impl SinksConfig {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(k) = &self.kafka {
            let topic_ok = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !topic_ok(&k.results_topic) {
                problems.push(
                    format!("{path}.kafka.results_topic"),
                    format!("`{}` is not a valid topic name", k.results_topic),
                );
            }
            if !topic_ok(&k.dlq_topic) {
                problems
                    .push(format!("{path}.kafka.dlq_topic"), format!("`{}` is not a valid topic name", k.dlq_topic));
            }
            if k.results_topic == k.dlq_topic {
                problems.push(format!("{path}.kafka.dlq_topic"), "must differ from results_topic");
            }
            if k.properties.contains_key("compression.type") || k.properties.contains_key("compression.codec") {
                problems.push(
                    format!("{path}.kafka.properties.compression.type"),
                    format!("set the codec with `{path}.kafka.compression` instead"),
                );
            }
            if k.properties.contains_key("transactional.id") {
                problems.push(
                    format!("{path}.kafka.properties.transactional.id"),
                    format!("is set by switchyard (one per worker) with `{path}.kafka.delivery: exactly_once`"),
                );
            }
            let txn_timeout = k.properties.get("transaction.timeout.ms").and_then(|v| v.parse::<u64>().ok());
            if let Some(t) = txn_timeout.filter(|&t| k.delivery == Delivery::ExactlyOnce && t < k.delivery_timeout_ms) {
                problems.push(
                    format!("{path}.kafka.properties.transaction.timeout.ms"),
                    format!(
                        "is {t} ms, less than `{path}.kafka.delivery_timeout_ms` ({} ms): a record may not take \
                         longer to deliver than its transaction may stay open; lower delivery_timeout_ms too",
                        k.delivery_timeout_ms
                    ),
                );
            }
            if k.commit_timeout_ms == 0 {
                problems.push(format!("{path}.kafka.commit_timeout_ms"), "must be at least 1");
            }
            if let Some(r) = &k.registry {
                r.validate(&format!("{path}.kafka.registry"), problems);
                if k.value_format == ValueFormat::Json {
                    problems.push(format!("{path}.kafka.registry"), "is only read with `value_format: avro`");
                }
            }
            switchyard_schemas::kafka::check(&format!("{path}.kafka"), &k.properties, &k.secrets, problems);
        }
        let p = &self.parquet;
        if p.path.as_os_str().is_empty() {
            problems.push(format!("{path}.parquet.path"), "must not be empty");
        }
        if p.roll_max_rows == 0 {
            problems.push(format!("{path}.parquet.roll_max_rows"), "must be at least 1");
        }
        if p.roll_interval_ms == 0 {
            problems.push(format!("{path}.parquet.roll_interval_ms"), "must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(extra: &str) -> KafkaSinkConfig {
        serde_json::from_str(&format!(r#"{{"results_topic": "r", "dlq_topic": "d"{extra}}}"#)).unwrap()
    }

    #[test]
    fn zstd_runs_at_level_one_unless_the_properties_say_otherwise() {
        let level =
            |c: &KafkaSinkConfig| c.client_config("b:9092").unwrap().get("compression.level").map(str::to_owned);
        let default = sink("");
        assert_eq!(default.compression, Compression::Zstd);
        assert_eq!(default.client_config("b:9092").unwrap().get("compression.type"), Some("zstd"));
        assert_eq!(level(&default).as_deref(), Some("1"));
        assert_eq!(level(&sink(r#", "properties": {"compression.level": "9"}"#)).as_deref(), Some("9"));
        assert_eq!(level(&sink(r#", "compression": "lz4""#)), None, "other codecs keep librdkafka's level");
    }
}
