//! Feedback topics: ground-truth records, decoded and checked.
//!
//! A feedback record is a JSON object:
//!
//! ```json
//! {"lineage_id": "…", "key": "txn-1", "label": 1,
//!  "observed_time": "2026-11-22T10:00:00Z", "source": "chargebacks"}
//! ```
//!
//! `lineage_id` or `key` names the predicted event (`lineage_id` wins when
//! both are given); `label` is an integer class (or a boolean);
//! `observed_time` (RFC 3339 or epoch milliseconds) defaults to the Kafka
//! timestamp; `source` defaults to the topic. Anything else is a DLQ record
//! naming the field and the problem.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use switchyard_schemas::{
    derive_lineage_id, DlqRecord, ErrorClass, Feedback, Problems, RawRecord, SecretSource, Stage,
};

/// The `feedback:` section of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Topics carrying ground truth.
    pub topics: Vec<String>,
    /// Consumer group; `<source group_id>-feedback` when absent.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Brokers; the source's `bootstrap_servers` when absent.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// Classes a label may take.
    #[serde(default = "default_labels")]
    pub labels: Vec<i64>,
    /// Accept fields other than `lineage_id`, `key`, `label`,
    /// `observed_time` and `source` (ignored) instead of sending the record
    /// to the DLQ.
    #[serde(default)]
    pub allow_unknown_fields: bool,
    /// Reject records observed further than this in the future (clock
    /// skew, wrong units), in ms.
    #[serde(default = "default_max_future_ms")]
    pub max_future_ms: u64,
    /// Extra librdkafka consumer properties passed through unchanged (added
    /// to the source's).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties, from an environment variable or a file
    /// (added to the source's), as under `source.secrets`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

fn default_labels() -> Vec<i64> {
    vec![0, 1]
}
fn default_max_future_ms() -> u64 {
    300_000
}

impl FeedbackConfig {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        switchyard_schemas::kafka::check(path, &self.properties, &self.secrets, problems);
        if self.topics.is_empty() {
            problems.push(format!("{path}.topics"), "name at least one feedback topic");
        }
        if self.labels.is_empty() {
            problems.push(format!("{path}.labels"), "name at least one class");
        }
        if self.group_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
            problems.push(format!("{path}.group_id"), "must not be empty");
        }
    }

    /// Decodes one record into feedback, or a DLQ record that says why not.
    pub fn decode(&self, raw: &RawRecord, pipeline: &str) -> Result<Feedback, Box<DlqRecord>> {
        self.decode_inner(raw).map_err(|(class, message)| {
            Box::new(DlqRecord::from_raw(
                raw,
                derive_lineage_id(&raw.topic, raw.partition, raw.offset),
                Stage::Feedback,
                class,
                format!("feedback {}[{}]@{}: {message}", raw.topic, raw.partition, raw.offset),
                pipeline.to_string(),
            ))
        })
    }

    fn decode_inner(&self, raw: &RawRecord) -> Result<Feedback, (ErrorClass, String)> {
        let payload = match raw.payload.as_deref() {
            None | Some([]) => return Err((ErrorClass::EmptyPayload, "record has no value".into())),
            Some(p) => p,
        };
        let json: Json = serde_json::from_slice(payload)
            .map_err(|e| (ErrorClass::InvalidJson, format!("value is not valid JSON: {e}")))?;
        let Json::Object(map) = json else {
            return Err((ErrorClass::NotAnObject, "value is not a JSON object".into()));
        };
        if !self.allow_unknown_fields {
            if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return Err((
                    ErrorClass::UnknownField,
                    format!("unknown field `{k}` (expected {}; or set allow_unknown_fields)", FIELDS.join(", ")),
                ));
            }
        }
        let text = |name: &str| -> Result<Option<String>, (ErrorClass, String)> {
            match map.get(name) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) if s.trim().is_empty() => {
                    Err((ErrorClass::WrongType, format!("`{name}` is an empty string")))
                }
                Some(Json::String(s)) => Ok(Some(s.clone())),
                Some(Json::Number(n)) if name == "key" => Ok(Some(n.to_string())),
                Some(_) => Err((ErrorClass::WrongType, format!("`{name}` must be a string"))),
            }
        };
        let lineage_id = text("lineage_id")?;
        let key = text("key")?;
        if lineage_id.is_none() && key.is_none() {
            return Err((ErrorClass::MissingField, "needs `lineage_id` or `key` to find the prediction".into()));
        }
        let label = match map.get("label") {
            None | Some(Json::Null) => return Err((ErrorClass::MissingField, "`label` is missing".into())),
            Some(Json::Bool(b)) => *b as i64,
            Some(Json::Number(n)) => {
                n.as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                    .ok_or_else(|| (ErrorClass::WrongType, format!("`label` must be an integer class, not {n}")))?
            }
            Some(_) => return Err((ErrorClass::WrongType, "`label` must be an integer class or a boolean".into())),
        };
        if !self.labels.contains(&label) {
            return Err((
                ErrorClass::WrongType,
                format!("`label` {label} is not one of the classes {:?}", self.labels),
            ));
        }
        let observed_time_us = match map.get("observed_time") {
            None | Some(Json::Null) => raw.timestamp_ms.map(|ms| ms * 1000).unwrap_or(raw.received_us),
            Some(Json::Number(n)) => n
                .as_i64()
                .map(|ms| ms * 1000)
                .ok_or_else(|| (ErrorClass::WrongType, "`observed_time` must be epoch milliseconds".into()))?,
            Some(Json::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.timestamp_micros())
                .map_err(|e| (ErrorClass::WrongType, format!("`observed_time` is not RFC 3339 (`{s}`): {e}")))?,
            Some(_) => return Err((ErrorClass::WrongType, "`observed_time` must be RFC 3339 or epoch ms".into())),
        };
        if observed_time_us > raw.received_us + self.max_future_ms as i64 * 1000 {
            return Err((
                ErrorClass::WrongType,
                format!(
                    "`observed_time` is {} s in the future (max_future_ms = {}); wrong units?",
                    (observed_time_us - raw.received_us) / 1_000_000,
                    self.max_future_ms
                ),
            ));
        }
        let source = text("source")?.unwrap_or_else(|| raw.topic.clone());
        Ok(Feedback {
            lineage_id,
            key,
            label,
            observed_time_us,
            source,
            feedback_topic: raw.topic.clone(),
            feedback_partition: raw.partition,
            feedback_offset: raw.offset,
            ingest_time_us: raw.received_us,
        })
    }
}

const FIELDS: &[&str] = &["lineage_id", "key", "label", "observed_time", "source"];

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FeedbackConfig {
        serde_yaml::from_str("topics: [fb]").unwrap()
    }

    fn raw(payload: &str) -> RawRecord {
        RawRecord {
            topic: "fb".into(),
            partition: 1,
            offset: 7,
            timestamp_ms: Some(1_767_225_600_000),
            payload: Some(payload.as_bytes().to_vec()),
            received_us: 1_767_225_600_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn good_feedback_decodes_with_defaults() {
        let f = cfg().decode(&raw(r#"{"key": "t1", "label": true}"#), "p").unwrap();
        assert_eq!((f.key.as_deref(), f.lineage_id, f.label), (Some("t1"), None, 1));
        assert_eq!((f.observed_time_us, f.source.as_str()), (1_767_225_600_000_000, "fb"));
        let f = cfg()
            .decode(
                &raw(
                    r#"{"lineage_id": "abc", "label": 0, "observed_time": "2026-01-01T00:00:00Z", "source": "review"}"#,
                ),
                "p",
            )
            .unwrap();
        assert_eq!((f.lineage_id.as_deref(), f.label, f.source.as_str()), (Some("abc"), 0, "review"));
    }

    #[test]
    fn bad_feedback_is_rejected_with_the_field_named() {
        for (payload, class, needle) in [
            ("", ErrorClass::EmptyPayload, "no value"),
            ("{", ErrorClass::InvalidJson, "not valid JSON"),
            ("[1]", ErrorClass::NotAnObject, "not a JSON object"),
            (r#"{"label": 1}"#, ErrorClass::MissingField, "`lineage_id` or `key`"),
            (r#"{"key": "a"}"#, ErrorClass::MissingField, "`label` is missing"),
            (r#"{"key": "a", "label": 3}"#, ErrorClass::WrongType, "not one of the classes"),
            (r#"{"key": "a", "label": 0.5}"#, ErrorClass::WrongType, "integer class"),
            (r#"{"key": "a", "label": 1, "score": 0.3}"#, ErrorClass::UnknownField, "unknown field `score`"),
            (r#"{"key": "a", "label": 1, "observed_time": "yesterday"}"#, ErrorClass::WrongType, "RFC 3339"),
            (r#"{"key": "a", "label": 1, "observed_time": 1767225600000000}"#, ErrorClass::WrongType, "future"),
        ] {
            let d = cfg().decode(&raw(payload), "p").unwrap_err();
            assert_eq!(d.error_class, class, "{payload}: {}", d.message);
            assert!(d.message.contains(needle) && d.message.contains("fb[1]@7"), "{payload}: {}", d.message);
            assert_eq!((d.stage, d.source.offset), (Stage::Feedback, 7));
        }
    }
}
