use serde::{Deserialize, Serialize};

/// Kafka header names used for lineage on every output record (and read from
/// input records where a producer sets them).
pub mod headers {
    /// Lineage id; a producer may set it, otherwise it is derived.
    pub const LINEAGE_ID: &str = "switchyard.lineage_id";
    /// Pipeline name.
    pub const PIPELINE: &str = "switchyard.pipeline";
    /// Hash of the manifest that produced the record.
    pub const MANIFEST_HASH: &str = "switchyard.manifest_hash";
    /// Source topic/partition/offset as `topic/partition/offset`.
    pub const SOURCE: &str = "switchyard.source";
    /// Policy version that routed the event.
    pub const POLICY_VERSION: &str = "switchyard.policy_version";
    /// Rule that routed the event.
    pub const RULE_ID: &str = "switchyard.rule_id";
    /// Model that answered: `name/version`.
    pub const MODEL: &str = "switchyard.model";
    /// SHA-256 of the model file.
    pub const MODEL_SHA256: &str = "switchyard.model_sha256";
    /// Pre-processing spec hash.
    pub const PREPROCESS_HASH: &str = "switchyard.preprocess_hash";
    /// Latency tier a producer asks for (`realtime`, `standard`, `batch`).
    pub const LATENCY_TIER: &str = "switchyard.latency_tier";
    /// Backfill run that produced the record (absent for streaming runs).
    pub const RUN_ID: &str = "switchyard.run_id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
}

/// Sensitivity classes, from least to most sensitive. Ordering matters: an
/// event's class is the maximum over its tagged fields and detector hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// May be shared freely.
    #[default]
    Public,
    /// Internal business data.
    Internal,
    /// Personal data (e-mail, phone, …).
    Pii,
    /// Regulated data (payment cards, bank accounts, national ids).
    Regulated,
}

impl Sensitivity {
    /// Lower-case name as used in manifests and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Public => "public",
            Sensitivity::Internal => "internal",
            Sensitivity::Pii => "pii",
            Sensitivity::Regulated => "regulated",
        }
    }
}

/// The routing decision recorded in lineage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Policy version that decided.
    pub policy_version: String,
    /// Id of the rule that matched.
    pub rule_id: String,
    /// Human-readable reason (the rule's `reason`, plus detector hits).
    pub reason: String,
    /// Name of the worker the event was sent to.
    pub route: String,
    /// Sensitivity class of the event.
    pub sensitivity: Sensitivity,
    /// Latency tier the event asked for.
    pub latency_tier: String,
}

/// Where a record came from and when it arrived: the same for the lineage
/// of a result and for a DLQ record. (Field names in JSON and tables:
/// `source_topic`, `source_partition`, `source_offset`,
/// `kafka_timestamp_ms`, `ingest_time_us`.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCoords {
    /// Source topic (or file, for file sources).
    #[serde(rename = "source_topic")]
    pub topic: String,
    /// Source partition.
    #[serde(rename = "source_partition")]
    pub partition: i32,
    /// Source offset (line or row number, for file sources).
    #[serde(rename = "source_offset")]
    pub offset: i64,
    /// Kafka timestamp (ms since epoch).
    pub kafka_timestamp_ms: Option<i64>,
    /// When switchyard received the record (µs since epoch).
    pub ingest_time_us: i64,
}

impl SourceCoords {
    /// The coordinates of a record as received.
    pub fn of(raw: &crate::RawRecord) -> Self {
        SourceCoords {
            topic: raw.topic.clone(),
            partition: raw.partition,
            offset: raw.offset,
            kafka_timestamp_ms: raw.timestamp_ms,
            ingest_time_us: raw.received_us,
        }
    }
}

/// The model that answered an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model name in the registry.
    pub name: String,
    /// Model version in the registry.
    pub version: String,
    /// SHA-256 of the ONNX file.
    pub sha256: String,
    /// Who ran it: `local/cpu`, `local/cuda`, or a cloud endpoint
    /// (`kserve_v2 http://host:8080`).
    pub provider: String,
    /// The provider's request id (cloud answers); empty for local models.
    #[serde(default)]
    pub request_id: String,
}

/// Everything needed to answer "which data, which model, which policy produced
/// this row". Built on ingest, completed by each stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Stable id: the producer's header, else derived from source coordinates.
    pub lineage_id: String,
    /// Where the event came from and when it arrived.
    #[serde(flatten)]
    pub source: SourceCoords,
    /// Pipeline name from the manifest.
    pub pipeline: String,
    /// SHA-256 of the manifest file.
    pub manifest_hash: String,
    /// Schema id.
    pub schema_id: String,
    /// Schema version.
    pub schema_version: u32,
    /// Hash of the pre-processing spec.
    pub preprocess_hash: String,
    /// Routing decision.
    pub route: RouteInfo,
    /// The model that answered.
    pub model: ModelRef,
    /// The answer came from a fallback path.
    pub fallback: bool,
    /// The answer is a shadow copy, for comparison only.
    pub shadow: bool,
    /// W3C `traceparent` of the event.
    pub traceparent: String,
    /// Id of the backfill run that produced the row; empty for streaming runs.
    #[serde(default)]
    pub run_id: String,
}

/// A W3C `traceparent` (version 00) of a trace id and span id in hex and
/// the trace flags (1: sampled).
pub fn traceparent(trace_id: impl std::fmt::Display, span_id: impl std::fmt::Display, flags: u8) -> String {
    format!("00-{trace_id}-{span_id}-{flags:02x}")
}

/// Derives the lineage id of a record that carries none: a hash of its source
/// coordinates, so a replay of the same record gets the same id.
pub fn derive_lineage_id(topic: &str, partition: i32, offset: i64) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    // SHA-256 of `{topic}\0{partition}\0{offset}`, the numbers in decimal,
    // fed in parts (no string per record).
    hasher.update(topic.as_bytes());
    hasher.update([0]);
    hasher.update(itoa::Buffer::new().format(partition).as_bytes());
    hasher.update([0]);
    hasher.update(itoa::Buffer::new().format(offset).as_bytes());
    // The first 16 bytes: 32 hex digits.
    crate::hex_lower(&hasher.finalize()[..16])
}

impl Lineage {
    /// A W3C `traceparent` for this lineage: the trace id is the lineage id (so
    /// a replay continues the same trace), the span id a hash of it.
    pub fn derive_traceparent(lineage_id: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(lineage_id.as_bytes());
        // `00-{32 hex digits}-{16 hex digits}-01`: the digest's first 24 bytes.
        let mut tp = String::with_capacity(55);
        tp.push_str("00-");
        crate::push_hex(&mut tp, &digest[..16]);
        tp.push('-');
        crate::push_hex(&mut tp, &digest[16..24]);
        tp.push_str("-01");
        tp
    }

    /// Records that a fallback worker answered: the event is marked as a
    /// fallback, and the reason says to whom it fell and why.
    pub fn fell_back_to(&mut self, worker: &str, why: &str) {
        self.fallback = true;
        self.route.reason = format!("{}; fallback to `{worker}`: {why}", self.route.reason);
    }

    /// Completes the lineage of a served event: the worker that answered,
    /// the model that gave the answer, and — for a model version being
    /// rolled out — its note (`canary of version 4`).
    pub fn served_by(&mut self, worker: &str, model: ModelRef, rollout_note: Option<&str>) {
        worker.clone_into(&mut self.route.route);
        if let Some(note) = rollout_note {
            self.route.reason = format!("{}; {note}", self.route.reason);
        }
        self.model = model;
    }

    /// The lineage of a shadow answer to this (served) event: marked as a
    /// shadow copy, never as a fallback, with the shadow worker and model.
    pub fn shadow_copy(&self, worker: &str, model: ModelRef, rollout_note: Option<&str>) -> Lineage {
        let mut l = self.clone();
        l.shadow = true;
        l.fallback = false;
        l.route.reason = match rollout_note {
            Some(note) => format!("{}; shadow copy to `{worker}` ({note})", l.route.reason),
            None => format!("{}; shadow copy to `{worker}`", l.route.reason),
        };
        worker.clone_into(&mut l.route.route);
        l.model = model;
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_id_is_deterministic_and_coordinate_sensitive() {
        let a = derive_lineage_id("tx", 0, 42);
        assert_eq!(a, derive_lineage_id("tx", 0, 42));
        assert_eq!(a.len(), 32);
        assert_ne!(a, derive_lineage_id("tx", 1, 42));
        assert_ne!(a, derive_lineage_id("tx", 0, 43));
        // The separator keeps ("t", 10) and ("t1", 0) apart.
        assert_ne!(derive_lineage_id("t", 10, 1), derive_lineage_id("t1", 0, 1));
    }

    #[test]
    fn derived_ids_never_change_between_versions() {
        // Replays, backfills and tables written by older versions rely on
        // the same coordinates giving the same id and trace.
        for (topic, partition, offset) in [("tx", 0, 42), ("payments.eu", -1, -1), ("t", 2147483647, i64::MAX)] {
            let id = derive_lineage_id(topic, partition, offset);
            assert_eq!(id, crate::sha256_hex(format!("{topic}\u{0}{partition}\u{0}{offset}").as_bytes())[..32]);
            let trace = crate::sha256_hex(id.as_bytes());
            assert_eq!(Lineage::derive_traceparent(&id), format!("00-{}-{}-01", &trace[..32], &trace[32..48]));
        }
        assert_eq!(derive_lineage_id("tx", 0, 42), "ca29120a2d20471f11aef711e9827d7e");
    }

    #[test]
    fn sensitivity_orders_from_public_to_regulated() {
        assert!(Sensitivity::Public < Sensitivity::Internal);
        assert!(Sensitivity::Internal < Sensitivity::Pii);
        assert!(Sensitivity::Pii < Sensitivity::Regulated);
    }

    #[test]
    fn completing_a_lineage_records_fallback_model_rollout_and_shadow() {
        let mut l = Lineage::default();
        l.route.reason = "rule".into();
        l.route.route = "cloud".into();
        l.fell_back_to("local", "circuit open");
        let m = |v: &str| ModelRef { name: "fraud".into(), version: v.into(), ..Default::default() };
        l.served_by("local", m("3"), Some("canary of version 3"));
        assert!(l.fallback && !l.shadow);
        assert_eq!(l.route.route, "local");
        assert_eq!(l.route.reason, "rule; fallback to `local`: circuit open; canary of version 3");
        assert_eq!(l.model.version, "3");
        let s = l.shadow_copy("other", m("4"), None);
        assert!(s.shadow && !s.fallback);
        assert_eq!((s.route.route.as_str(), s.model.version.as_str()), ("other", "4"));
        assert_eq!(
            s.route.reason,
            "rule; fallback to `local`: circuit open; canary of version 3; shadow copy to `other`"
        );
        let s = l.shadow_copy("fraud", m("5"), Some("candidate version 5 in shadow"));
        assert!(
            s.route.reason.ends_with("; shadow copy to `fraud` (candidate version 5 in shadow)"),
            "{}",
            s.route.reason
        );
    }

    #[test]
    fn traceparent_has_w3c_shape() {
        let tp = Lineage::derive_traceparent("abc");
        let parts: Vec<_> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
    }
}
