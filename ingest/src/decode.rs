//! Bytes → JSON → schema-checked event with lineage.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;
use switchyard_schemas::{
    derive_lineage_id, headers, DlqRecord, ErrorClass, Event, EventSchema, FieldType, Lineage, RawRecord, SourceCoords,
    Stage, Value,
};

/// The parts of lineage that are the same for every event of a run.
#[derive(Debug, Clone, Default)]
pub struct LineageContext {
    /// Pipeline name.
    pub pipeline: String,
    /// SHA-256 of the manifest file.
    pub manifest_hash: String,
    /// Hash of the pre-processing spec.
    pub preprocess_hash: String,
    /// Backfill run id stamped on every row; empty for streaming runs.
    pub run_id: String,
}

/// Decodes and validates raw records against an [`EventSchema`].
#[derive(Debug, Clone)]
pub struct Decoder {
    schema: Arc<EventSchema>,
    index: HashMap<String, usize>,
    key_index: Option<usize>,
    ctx: LineageContext,
}

/// Longest producer-supplied lineage id that is accepted; longer ones are
/// ignored and a derived id is used, so a bad producer cannot bloat every row.
const MAX_LINEAGE_ID_LEN: usize = 128;

impl Decoder {
    /// A decoder for `schema`, stamping `ctx` into every event's lineage.
    pub fn new(schema: Arc<EventSchema>, ctx: LineageContext) -> Self {
        let index = schema.fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        let key_index = schema.key_field.as_deref().and_then(|k| schema.index_of(k));
        Self { schema, index, key_index, ctx }
    }

    /// The schema events are checked against.
    pub fn schema(&self) -> &EventSchema {
        &self.schema
    }

    /// Lineage for `raw` before any stage has run: ids, coordinates, run context.
    pub fn lineage_for(&self, raw: &RawRecord) -> Lineage {
        let lineage_id = raw
            .header(headers::LINEAGE_ID)
            .filter(|id| !id.is_empty() && id.len() <= MAX_LINEAGE_ID_LEN)
            .map(str::to_owned)
            .unwrap_or_else(|| derive_lineage_id(&raw.topic, raw.partition, raw.offset));
        let traceparent = raw
            .header(headers::TRACEPARENT)
            .filter(|tp| is_traceparent(tp))
            .map(str::to_owned)
            .unwrap_or_else(|| Lineage::derive_traceparent(&lineage_id));
        Lineage {
            lineage_id,
            source: SourceCoords::of(raw),
            pipeline: self.ctx.pipeline.clone(),
            manifest_hash: self.ctx.manifest_hash.clone(),
            schema_id: self.schema.id.clone(),
            schema_version: self.schema.version,
            preprocess_hash: self.ctx.preprocess_hash.clone(),
            traceparent,
            run_id: self.ctx.run_id.clone(),
            ..Lineage::default()
        }
    }

    /// A DLQ record for `raw`, failed at `stage` with `class` and `message`.
    pub fn reject(
        &self,
        raw: &RawRecord,
        lineage_id: String,
        stage: Stage,
        class: ErrorClass,
        message: String,
    ) -> DlqRecord {
        DlqRecord::from_raw(raw, lineage_id, stage, class, message, self.ctx.pipeline.clone())
            .with_run_id(&self.ctx.run_id)
    }

    /// Decodes and validates one record. Every failure becomes a DLQ record
    /// that names the field and the problem, never the field's value (which
    /// may be personal data).
    pub fn decode(&self, raw: &RawRecord) -> Result<Event, Box<DlqRecord>> {
        let lineage = self.lineage_for(raw);
        match self.decode_values(raw) {
            Ok(values) => {
                let key = self
                    .key_index
                    .and_then(|i| values[i].to_text())
                    .or_else(|| raw.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).map(str::to_owned))
                    .unwrap_or_else(|| lineage.lineage_id.clone());
                Ok(Event { values, key, headers: raw.headers.clone(), lineage })
            }
            Err((stage, class, message)) => Err(Box::new(self.reject(raw, lineage.lineage_id, stage, class, message))),
        }
    }

    fn decode_values(&self, raw: &RawRecord) -> Result<Vec<Value>, (Stage, ErrorClass, String)> {
        if let Some(e) = &raw.error {
            return Err((Stage::Decode, ErrorClass::Unreadable, e.clone()));
        }
        let payload = match raw.payload.as_deref() {
            None | Some([]) => {
                return Err((
                    Stage::Decode,
                    ErrorClass::EmptyPayload,
                    "record has no value (tombstone or empty message)".into(),
                ))
            }
            Some(p) => p,
        };
        let json: Json = serde_json::from_slice(payload)
            .map_err(|e| (Stage::Decode, ErrorClass::InvalidJson, format!("value is not valid JSON: {e}")))?;
        let Json::Object(map) = json else {
            return Err((
                Stage::Decode,
                ErrorClass::NotAnObject,
                format!("value is a JSON {}, expected an object", json_kind(&json)),
            ));
        };
        let mut values = vec![Value::Null; self.schema.fields.len()];
        for (name, v) in map {
            let Some(&i) = self.index.get(&name) else {
                if self.schema.reject_unknown_fields {
                    return Err((
                        Stage::Validate,
                        ErrorClass::UnknownField,
                        format!(
                            "unknown field `{}` (schema {} v{} does not list it)",
                            truncate(&name, 64),
                            self.schema.id,
                            self.schema.version
                        ),
                    ));
                }
                continue;
            };
            let spec = &self.schema.fields[i];
            values[i] = convert(&v, spec.ty).ok_or_else(|| {
                (
                    Stage::Validate,
                    ErrorClass::WrongType,
                    format!("field `{}`: expected {}, got {}", spec.name, type_name(spec.ty), json_kind(&v)),
                )
            })?;
        }
        for (spec, v) in self.schema.fields.iter().zip(&values) {
            if spec.required && v.is_null() {
                return Err((
                    Stage::Validate,
                    ErrorClass::MissingField,
                    format!("required field `{}` is missing or null", spec.name),
                ));
            }
        }
        Ok(values)
    }
}

fn convert(v: &Json, ty: FieldType) -> Option<Value> {
    Some(match (v, ty) {
        (Json::Null, _) => Value::Null,
        (Json::String(s), FieldType::String) => Value::Str(s.clone()),
        (Json::Bool(b), FieldType::Bool) => Value::Bool(*b),
        (Json::Number(n), FieldType::Float) => Value::Float(n.as_f64()?),
        (Json::Number(n), FieldType::Int | FieldType::Timestamp) => Value::Int(match n.as_i64() {
            Some(i) => i,
            // 3.0 is an integer written as a float by many producers; 3.5 is not.
            None => {
                let f = n.as_f64()?;
                if f.fract() != 0.0 || f.abs() > 9.0e15 {
                    return None;
                }
                f as i64
            }
        }),
        (Json::String(s), FieldType::Timestamp) => {
            Value::Int(chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis())
        }
        _ => return None,
    })
}

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Int => "integer",
        FieldType::Float => "number",
        FieldType::Bool => "boolean",
        FieldType::Timestamp => "timestamp (epoch ms or RFC 3339)",
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn is_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && tp.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && parts[1] != "00000000000000000000000000000000"
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::FieldSpec;

    fn schema(reject_unknown: bool) -> Arc<EventSchema> {
        let f = |name: &str, ty, required| FieldSpec { name: name.into(), ty, required, sensitivity: None };
        Arc::new(EventSchema {
            id: "t".into(),
            version: 2,
            key_field: Some("id".into()),
            reject_unknown_fields: reject_unknown,
            fields: vec![
                f("id", FieldType::String, true),
                f("amount", FieldType::Float, true),
                f("n", FieldType::Int, false),
                f("ok", FieldType::Bool, false),
                f("at", FieldType::Timestamp, false),
            ],
        })
    }

    fn raw(payload: &str) -> RawRecord {
        RawRecord {
            topic: "tx".into(),
            partition: 1,
            offset: 7,
            payload: Some(payload.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    fn dec(reject_unknown: bool) -> Decoder {
        Decoder::new(schema(reject_unknown), LineageContext { pipeline: "p".into(), ..Default::default() })
    }

    #[test]
    fn decodes_valid_event_with_derived_lineage() {
        let e = dec(false)
            .decode(&raw(r#"{"id":"a1","amount":3,"n":4.0,"ok":true,"at":"2026-01-01T00:00:00Z","extra":1}"#))
            .unwrap();
        assert_eq!(e.key, "a1");
        assert_eq!(e.values[1], Value::Float(3.0));
        assert_eq!(e.values[2], Value::Int(4));
        assert_eq!(e.values[4], Value::Int(1_767_225_600_000));
        assert_eq!(e.lineage.lineage_id, derive_lineage_id("tx", 1, 7));
        assert_eq!(e.lineage.schema_version, 2);
        assert_eq!(e.lineage.pipeline, "p");
    }

    #[test]
    fn producer_lineage_id_and_traceparent_are_kept() {
        let mut r = raw(r#"{"id":"a","amount":1}"#);
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        r.headers = vec![(headers::LINEAGE_ID.into(), "L-1".into()), ("traceparent".into(), tp.into())];
        let e = dec(false).decode(&r).unwrap();
        assert_eq!(e.lineage.lineage_id, "L-1");
        assert_eq!(e.lineage.traceparent, tp);
    }

    #[test]
    fn every_bad_input_gets_a_class_and_names_the_field() {
        let cases = [
            ("", ErrorClass::EmptyPayload, "no value"),
            ("{not json", ErrorClass::InvalidJson, "not valid JSON"),
            ("[1,2]", ErrorClass::NotAnObject, "array"),
            (r#"{"amount":1}"#, ErrorClass::MissingField, "`id`"),
            (r#"{"id":"a","amount":null}"#, ErrorClass::MissingField, "`amount`"),
            (r#"{"id":"a","amount":"12"}"#, ErrorClass::WrongType, "field `amount`: expected number, got string"),
            (r#"{"id":"a","amount":1,"n":1.5}"#, ErrorClass::WrongType, "field `n`"),
        ];
        for (payload, class, needle) in cases {
            let d = dec(false).decode(&raw(payload)).unwrap_err();
            assert_eq!(d.error_class, class, "{payload}");
            assert!(d.message.contains(needle), "{payload}: {}", d.message);
            assert_eq!((d.source.topic.as_str(), d.source.partition, d.source.offset), ("tx", 1, 7));
            assert_eq!(d.payload.as_deref(), Some(payload.as_bytes()), "payload kept byte for byte");
        }
    }

    #[test]
    fn unknown_fields_rejected_only_when_asked() {
        let p = r#"{"id":"a","amount":1,"surprise":true}"#;
        assert!(dec(false).decode(&raw(p)).is_ok());
        let d = dec(true).decode(&raw(p)).unwrap_err();
        assert_eq!(d.error_class, ErrorClass::UnknownField);
        assert!(d.message.contains("`surprise`"));
    }

    #[test]
    fn messages_never_echo_values() {
        let d = dec(false).decode(&raw(r#"{"id":"a","amount":"jane@example.com"}"#)).unwrap_err();
        assert!(!d.message.contains("jane"), "{}", d.message);
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let r = RawRecord { payload: Some(bytes), ..Default::default() };
            let _ = dec(true).decode(&r);
        }

        #[test]
        fn replay_gets_same_lineage(p in 0i32..100, o in 0i64..1_000_000) {
            let mut r = raw(r#"{"id":"a","amount":1}"#);
            r.partition = p; r.offset = o;
            let a = dec(false).decode(&r).unwrap().lineage.lineage_id;
            let b = dec(false).decode(&r).unwrap().lineage.lineage_id;
            proptest::prop_assert_eq!(a, b);
        }
    }
}
