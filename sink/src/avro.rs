//! Results as Avro in the Confluent wire format: a zero byte, the id the
//! registry gave [`RESULT_SCHEMA`], then the Avro datum. The fields are the
//! JSON result's, lineage included, so a consumer reading either finds the
//! same names.

use switchyard_schemas::Prediction;

/// The Avro schema of a result (`switchyard.Result`), as registered.
pub const RESULT_SCHEMA: &str = r#"{
  "type": "record", "name": "Result", "namespace": "switchyard",
  "doc": "One scored event: its key, the model's answer, the features it saw and the event's lineage.",
  "fields": [
    {"name": "key", "type": "string"},
    {"name": "score", "type": ["null", "double"], "default": null},
    {"name": "label", "type": ["null", "long"], "default": null},
    {"name": "outputs", "type": ["null", "string"], "default": null, "doc": "mapped result fields as a JSON object (openai workers)"},
    {"name": "features", "type": {"type": "array", "items": "float"}},
    {"name": "latency_us", "type": "long"},
    {"name": "lineage", "type": {"type": "record", "name": "Lineage", "fields": [
      {"name": "lineage_id", "type": "string"},
      {"name": "source_topic", "type": "string"},
      {"name": "source_partition", "type": "int"},
      {"name": "source_offset", "type": "long"},
      {"name": "kafka_timestamp_ms", "type": ["null", "long"], "default": null},
      {"name": "ingest_time_us", "type": "long"},
      {"name": "pipeline", "type": "string"},
      {"name": "manifest_hash", "type": "string"},
      {"name": "schema_id", "type": "string"},
      {"name": "schema_version", "type": "long"},
      {"name": "preprocess_hash", "type": "string"},
      {"name": "route", "type": {"type": "record", "name": "Route", "fields": [
        {"name": "policy_version", "type": "string"},
        {"name": "rule_id", "type": "string"},
        {"name": "reason", "type": "string"},
        {"name": "route", "type": "string"},
        {"name": "sensitivity", "type": "string"},
        {"name": "latency_tier", "type": "string"}
      ]}},
      {"name": "model", "type": {"type": "record", "name": "Model", "fields": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "sha256", "type": "string"},
        {"name": "provider", "type": "string"},
        {"name": "request_id", "type": "string", "default": ""}
      ]}},
      {"name": "fallback", "type": "boolean"},
      {"name": "shadow", "type": "boolean"},
      {"name": "traceparent", "type": "string"},
      {"name": "run_id", "type": "string", "default": ""}
    ]}}
  ]
}"#;

/// Encodes results with [`RESULT_SCHEMA`] under its registered id.
#[derive(Debug, Clone)]
pub struct AvroResults {
    id: u32,
}

impl AvroResults {
    /// An encoder for the schema registered as `id`.
    pub fn new(id: u32) -> Self {
        Self { id }
    }

    /// One result's value: magic byte, schema id, Avro datum. Written
    /// field by field in [`RESULT_SCHEMA`]'s order (Avro's binary encoding:
    /// zig-zag varints, length-prefixed strings, union branch indexes,
    /// blocked arrays), without building a generic value first.
    pub fn encode(&self, p: &Prediction) -> Vec<u8> {
        let l = &p.lineage;
        let mut w = Datum(Vec::with_capacity(512 + 4 * p.features.len()));
        w.0.push(0);
        w.0.extend_from_slice(&self.id.to_be_bytes());
        w.str(&p.key);
        w.optional(p.score, Datum::double);
        w.optional(p.label, Datum::long);
        w.optional(p.outputs.as_deref(), Datum::str);
        if !p.features.is_empty() {
            w.long(p.features.len() as i64);
            for &f in &p.features {
                w.0.extend_from_slice(&f.to_le_bytes());
            }
        }
        w.long(0);
        w.long(p.latency_us);
        // lineage
        w.str(&l.lineage_id);
        w.str(&l.source.topic);
        w.long(i64::from(l.source.partition));
        w.long(l.source.offset);
        w.optional(l.source.kafka_timestamp_ms, Datum::long);
        w.long(l.source.ingest_time_us);
        w.str(&l.pipeline);
        w.str(&l.manifest_hash);
        w.str(&l.schema_id);
        w.long(i64::from(l.schema_version));
        w.str(&l.preprocess_hash);
        // lineage.route
        w.str(&l.route.policy_version);
        w.str(&l.route.rule_id);
        w.str(&l.route.reason);
        w.str(&l.route.route);
        w.str(l.route.sensitivity.as_str());
        w.str(&l.route.latency_tier);
        // lineage.model
        w.str(&l.model.name);
        w.str(&l.model.version);
        w.str(&l.model.sha256);
        w.str(&l.model.provider);
        w.str(&l.model.request_id);
        w.0.push(u8::from(l.fallback));
        w.0.push(u8::from(l.shadow));
        w.str(&l.traceparent);
        w.str(&l.run_id);
        w.0
    }
}

/// An Avro datum being written.
struct Datum(Vec<u8>);

impl Datum {
    /// `long` and `int`: zig-zag, then a varint.
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// `["null", T]`: branch 0, or branch 1 and the value.
    fn optional<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                write(self, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as Avro;
    use apache_avro::Schema;
    use switchyard_schemas::Lineage;

    /// The same result built as a generic Avro value and encoded by
    /// `apache-avro` against the schema: what [`AvroResults::encode`] must
    /// write byte for byte.
    fn reference(p: &Prediction) -> Vec<u8> {
        let s = |v: &str| Avro::String(v.to_string());
        let opt = |v: Option<Avro>| match v {
            None => Avro::Union(0, Box::new(Avro::Null)),
            Some(v) => Avro::Union(1, Box::new(v)),
        };
        let record = |fields: Vec<(&str, Avro)>| {
            Avro::Record(fields.into_iter().map(|(name, value)| (name.to_string(), value)).collect())
        };
        let l = &p.lineage;
        let route = record(vec![
            ("policy_version", s(&l.route.policy_version)),
            ("rule_id", s(&l.route.rule_id)),
            ("reason", s(&l.route.reason)),
            ("route", s(&l.route.route)),
            ("sensitivity", s(l.route.sensitivity.as_str())),
            ("latency_tier", s(&l.route.latency_tier)),
        ]);
        let model = record(vec![
            ("name", s(&l.model.name)),
            ("version", s(&l.model.version)),
            ("sha256", s(&l.model.sha256)),
            ("provider", s(&l.model.provider)),
            ("request_id", s(&l.model.request_id)),
        ]);
        let lineage = record(vec![
            ("lineage_id", s(&l.lineage_id)),
            ("source_topic", s(&l.source.topic)),
            ("source_partition", Avro::Int(l.source.partition)),
            ("source_offset", Avro::Long(l.source.offset)),
            ("kafka_timestamp_ms", opt(l.source.kafka_timestamp_ms.map(Avro::Long))),
            ("ingest_time_us", Avro::Long(l.source.ingest_time_us)),
            ("pipeline", s(&l.pipeline)),
            ("manifest_hash", s(&l.manifest_hash)),
            ("schema_id", s(&l.schema_id)),
            ("schema_version", Avro::Long(i64::from(l.schema_version))),
            ("preprocess_hash", s(&l.preprocess_hash)),
            ("route", route),
            ("model", model),
            ("fallback", Avro::Boolean(l.fallback)),
            ("shadow", Avro::Boolean(l.shadow)),
            ("traceparent", s(&l.traceparent)),
            ("run_id", s(&l.run_id)),
        ]);
        let value = record(vec![
            ("key", s(&p.key)),
            ("score", opt(p.score.map(Avro::Double))),
            ("label", opt(p.label.map(Avro::Long))),
            ("outputs", opt(p.outputs.as_deref().map(s))),
            ("features", Avro::Array(p.features.iter().map(|&f| Avro::Float(f)).collect())),
            ("latency_us", Avro::Long(p.latency_us)),
            ("lineage", lineage),
        ]);
        apache_avro::to_avro_datum(&Schema::parse_str(RESULT_SCHEMA).unwrap(), value).unwrap()
    }

    #[test]
    fn a_result_reads_back_under_its_schema_with_every_field() {
        let mut lineage =
            Lineage { lineage_id: "abc".into(), pipeline: "fraud".into(), schema_version: 3, ..Default::default() };
        lineage.source.topic = "tx".into();
        lineage.source.offset = 41;
        lineage.source.kafka_timestamp_ms = Some(1_700_000_000_000);
        lineage.route.rule_id = "pii-local".into();
        lineage.model.version = "2".into();
        lineage.run_id = "r1".into();
        let p = Prediction {
            key: "k1".into(),
            score: Some(0.75),
            label: Some(1),
            outputs: None,
            features: vec![0.5, -1.25],
            latency_us: 812,
            lineage,
        };
        let enc = AvroResults::new(258);
        let bytes = enc.encode(&p);
        assert_eq!(&bytes[..5], &[0, 0, 0, 1, 2], "magic byte and the big-endian id");
        assert_eq!(&bytes[5..], reference(&p), "apache-avro's encoding of the same value");
        let schema = Schema::parse_str(RESULT_SCHEMA).unwrap();
        let back = apache_avro::from_avro_datum(&schema, &mut &bytes[5..], None).unwrap();
        let json = serde_json::Value::try_from(back).unwrap();
        assert_eq!(json["key"], "k1");
        assert_eq!(json["score"], 0.75);
        assert_eq!(json["label"], 1);
        assert_eq!(json["outputs"], serde_json::Value::Null);
        assert_eq!(json["features"], serde_json::json!([0.5, -1.25]));
        assert_eq!(json["lineage"]["source_offset"], 41);
        assert_eq!(json["lineage"]["kafka_timestamp_ms"], 1_700_000_000_000i64);
        assert_eq!(json["lineage"]["route"]["rule_id"], "pii-local");
        assert_eq!(json["lineage"]["model"]["version"], "2");
        assert_eq!(json["lineage"]["run_id"], "r1");
        // The same names as the JSON result (which leaves out absent
        // `outputs`), lineage included.
        let mut plain = serde_json::to_value(&p).unwrap();
        plain.as_object_mut().unwrap().entry("outputs").or_insert(serde_json::Value::Null);
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&json), keys(&plain));
        assert_eq!(keys(&json["lineage"]), keys(&plain["lineage"]));

        // Empty features, no score, an enrichment's outputs, negative and
        // large numbers.
        let mut q = p.clone();
        q.score = None;
        q.label = None;
        q.outputs = Some(r#"{"reply": "ok"}"#.into());
        q.features.clear();
        q.latency_us = -1;
        q.lineage.source.offset = i64::MAX;
        q.lineage.source.partition = -1;
        q.lineage.source.kafka_timestamp_ms = None;
        q.lineage.fallback = true;
        assert_eq!(&enc.encode(&q)[5..], reference(&q));
    }
}
