//! Bytes → JSON → schema-checked event with lineage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value as Json;
use switchyard_schemas::{
    derive_lineage_id, headers, DlqRecord, ErrorClass, Event, EventSchema, FieldType, InputFormat, Lineage, RawRecord,
    SourceCoords, Stage, Value,
};

use crate::registry::{self, Registry, Writer};

mod object;

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
    /// Top-level name → field, for fields read from the top level.
    index: HashMap<String, usize>,
    /// Fields read from below the top level (`from: a.b`), with their paths.
    nested: Vec<(usize, Vec<String>)>,
    /// The first name of every field's path: what `reject_unknown_fields` knows.
    known: HashSet<String>,
    key_index: Option<usize>,
    ctx: LineageContext,
    registry: Option<Arc<Registry>>,
}

/// Longest producer-supplied lineage id that is accepted; longer ones are
/// ignored and a derived id is used, so a bad producer cannot bloat every row.
const MAX_LINEAGE_ID_LEN: usize = 128;

impl Decoder {
    /// A decoder for `schema`, stamping `ctx` into every event's lineage.
    pub fn new(schema: Arc<EventSchema>, ctx: LineageContext) -> Self {
        let mut index = HashMap::new();
        let mut nested = Vec::new();
        for (i, f) in schema.fields.iter().enumerate() {
            match f.path().as_slice() {
                [top] => {
                    index.insert(top.to_string(), i);
                }
                path => nested.push((i, path.iter().map(|p| p.to_string()).collect())),
            }
        }
        let known = registry::top_names(&schema).into_iter().map(str::to_string).collect();
        let key_index = schema.key_field.as_deref().and_then(|k| schema.index_of(k));
        Self { schema, index, nested, known, key_index, ctx, registry: None }
    }

    /// Reads registry-framed values with the writer schemas `registry`
    /// fetched (formats other than `json`).
    pub fn with_registry(mut self, registry: Arc<Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The Schema Registry client, for a registry format.
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.registry.as_ref()
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
        let values = match self.schema.format {
            InputFormat::Json => self.json_values(payload)?,
            format => self.registry_values(format, payload)?,
        };
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

impl Decoder {
    /// A JSON object's fields, read in one pass (see [`object`]).
    fn json_values(&self, bytes: &[u8]) -> Result<Vec<Value>, (Stage, ErrorClass, String)> {
        let mut values = vec![Value::Null; self.schema.fields.len()];
        let mut tops = Vec::new();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let seed = object::ObjectSeed { dec: self, values: &mut values, tops: &mut tops };
        let flaw = serde::de::DeserializeSeed::deserialize(seed, &mut de)
            .and_then(|flaw| de.end().map(|()| flaw))
            .map_err(|e| (Stage::Decode, ErrorClass::InvalidJson, format!("value is not valid JSON: {e}")))?;
        let wrong = |i: usize, kind: &str| {
            let spec = &self.schema.fields[i];
            (
                Stage::Validate,
                ErrorClass::WrongType,
                format!("field `{}`: expected {}, got {kind}", spec.name, registry::type_name(spec.ty)),
            )
        };
        match flaw {
            None => {}
            Some(object::Flaw::NotAnObject(kind)) => {
                return Err((
                    Stage::Decode,
                    ErrorClass::NotAnObject,
                    format!("value is a JSON {kind}, expected an object"),
                ))
            }
            Some(object::Flaw::Unknown(name)) => {
                return Err((
                    Stage::Validate,
                    ErrorClass::UnknownField,
                    format!(
                        "unknown field `{}` (schema {} v{} does not list it)",
                        truncate(&name, 64),
                        self.schema.id,
                        self.schema.version
                    ),
                ))
            }
            Some(object::Flaw::Wrong(i, kind)) => return Err(wrong(i, kind)),
        }
        for (i, path) in &self.nested {
            let mut at = tops.iter().find(|(top, _)| *top == path[0]).map(|(_, v)| v);
            for part in &path[1..] {
                at = at.and_then(|v| v.as_object()).and_then(|o| o.get(part));
            }
            if let Some(v) = at {
                values[*i] = convert(v, self.schema.fields[*i].ty).ok_or_else(|| wrong(*i, json_kind(v)))?;
            }
        }
        Ok(values)
    }

    /// A value in the Schema Registry wire format, decoded with the schema
    /// its id names.
    fn registry_values(&self, format: InputFormat, payload: &[u8]) -> Result<Vec<Value>, (Stage, ErrorClass, String)> {
        let Some((id, body)) = registry::frame(payload) else {
            return Err((
                Stage::Decode,
                ErrorClass::Unframed,
                format!(
                    "value does not start with the Schema Registry header (a zero byte and a 4-byte schema id) that \
                     format `{}` expects",
                    format.as_str()
                ),
            ));
        };
        let writer = self.registry.as_ref().and_then(|r| r.writer(id));
        match writer.as_deref() {
            None => Err((
                Stage::Decode,
                ErrorClass::UnknownSchema,
                format!("schema id {id} was not fetched from the registry"),
            )),
            Some(Writer::Missing(why)) => Err((Stage::Decode, ErrorClass::UnknownSchema, why.clone())),
            Some(Writer::Json { subject }) => self.json_values(body).map_err(|(stage, class, message)| {
                (stage, class, format!("{message} (schema id {id}{})", registry::subject_note(subject.as_deref())))
            }),
            Some(Writer::Avro(w)) => w.decode(body, &self.schema, id).map_err(stage_of),
            Some(Writer::Proto(w)) => w.decode(body, &self.schema, id).map_err(stage_of),
        }
    }
}

/// A registry decoder's failure with its stage: bytes that do not decode
/// (or name no schema) fail decoding, the rest fail validation.
fn stage_of((class, message): registry::DecodeFailure) -> (Stage, ErrorClass, String) {
    let stage = match class {
        ErrorClass::Undecodable | ErrorClass::UnknownSchema => Stage::Decode,
        _ => Stage::Validate,
    };
    (stage, class, message)
}

fn convert(v: &Json, ty: FieldType) -> Option<Value> {
    Some(match (v, ty) {
        (Json::Null, _) => Value::Null,
        (Json::String(s), FieldType::String) => Value::Str(s.clone()),
        (Json::Bool(b), FieldType::Bool) => Value::Bool(*b),
        (Json::Number(n), FieldType::Float) => Value::Float(n.as_f64()?),
        (Json::Number(n), FieldType::Int | FieldType::Timestamp) => Value::Int(match n.as_i64() {
            Some(i) => i,
            None => registry::whole(n.as_f64()?)?,
        }),
        (Json::String(s), FieldType::Timestamp) => Value::Int(registry::rfc3339_ms(s)?),
        _ => return None,
    })
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
    use proptest::prelude::Strategy as _;
    use switchyard_schemas::FieldSpec;

    fn schema(reject_unknown: bool) -> Arc<EventSchema> {
        let f = |name: &str, ty, required| FieldSpec { name: name.into(), ty, required, sensitivity: None, from: None };
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
            format: Default::default(),
            registry: None,
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

    #[test]
    fn json_fields_may_come_from_nested_objects() {
        let mut s = (*schema(true)).clone();
        s.fields[2].from = Some("stats.count".into());
        s.fields[3].from = Some("flags.ok".into());
        let d = Decoder::new(Arc::new(s), LineageContext::default());
        let e = d.decode(&raw(r#"{"id": "a", "amount": 1, "stats": {"count": 3}, "flags": {}}"#)).unwrap();
        assert_eq!(e.values[2], Value::Int(3));
        assert_eq!(e.values[3], Value::Null, "absent below the top: null");
        let err = d.decode(&raw(r#"{"id": "a", "amount": 1, "stats": {"count": "x"}}"#)).unwrap_err();
        assert_eq!(err.message, "field `n`: expected integer, got string");
        // `stats` is known (a path starts there); `other` is not.
        let err = d.decode(&raw(r#"{"id": "a", "amount": 1, "other": 1}"#)).unwrap_err();
        assert_eq!(err.error_class, ErrorClass::UnknownField);
    }

    #[test]
    fn one_pass_reading_handles_escapes_duplicates_and_bad_json_after_a_bad_field() {
        let d = dec(true);
        // An escaped key is still the field; a string with escapes is unescaped.
        let e = d.decode(&raw(r#"{"\u0069d":"a\"b","amount":1}"#)).unwrap();
        assert_eq!(e.values[0], Value::Str("a\"b".into()));
        // The last of duplicate keys wins, as when reading into a map.
        let e = d.decode(&raw(r#"{"id":"a","amount":1,"amount":2.5}"#)).unwrap();
        assert_eq!(e.values[1], Value::Float(2.5));
        // Bytes that are not JSON are reported as such, even after a field of the wrong type.
        let err = d.decode(&raw(r#"{"id":"a","amount":"x","n":}"#)).unwrap_err();
        assert_eq!(err.error_class, ErrorClass::InvalidJson, "{}", err.message);
        let err = d.decode(&raw(r#"{"id":"a","amount":1} trailing"#)).unwrap_err();
        assert_eq!(err.error_class, ErrorClass::InvalidJson, "{}", err.message);
        // Arrays and objects where a scalar is expected name their kind.
        for (payload, kind) in [(r#"{"id":["a"],"amount":1}"#, "array"), (r#"{"id":{"a":1},"amount":1}"#, "object")] {
            let err = d.decode(&raw(payload)).unwrap_err();
            assert_eq!(err.message, format!("field `id`: expected string, got {kind}"));
        }
        for (payload, kind) in
            [("null", "null"), ("true", "boolean"), ("3", "integer"), ("2.5", "number"), (r#""s""#, "string")]
        {
            let err = d.decode(&raw(payload)).unwrap_err();
            assert_eq!(err.error_class, ErrorClass::NotAnObject);
            assert_eq!(err.message, format!("value is a JSON {kind}, expected an object"));
        }
        // Integers too large for 64 bits, or not whole, are not integers.
        let err = d.decode(&raw(r#"{"id":"a","amount":1,"n":18446744073709551615}"#)).unwrap_err();
        assert_eq!(err.message, "field `n`: expected integer, got integer");
        let err = d.decode(&raw(r#"{"id":"a","amount":1,"n":-1.5}"#)).unwrap_err();
        assert_eq!(err.message, "field `n`: expected integer, got number");
    }

    #[test]
    fn a_field_may_also_be_where_a_nested_path_starts() {
        let mut s = (*schema(true)).clone();
        s.fields[0].ty = FieldType::String;
        s.fields[3].from = Some("id.ok".into());
        s.fields.push(FieldSpec { name: "id".into(), ..s.fields[3].clone() });
        let d = Decoder::new(Arc::new(s), LineageContext::default());
        let err = d.decode(&raw(r#"{"id": {"ok": true}, "amount": 1}"#)).unwrap_err();
        assert_eq!(err.message, "field `id`: expected string, got object");
    }

    fn registry_decoder(format: InputFormat) -> (Decoder, Arc<Registry>) {
        let mut s = (*schema(false)).clone();
        s.format = format;
        s.registry = Some(switchyard_schemas::RegistryConfig {
            url: "http://127.0.0.1:9".into(),
            username: None,
            password: None,
            bearer_token: None,
            timeout_ms: 100,
        });
        let s = Arc::new(s);
        let registry = Arc::new(Registry::new(s.clone(), std::path::Path::new(".")).unwrap());
        (Decoder::new(s, LineageContext::default()).with_registry(registry.clone()), registry)
    }

    fn framed(id: u32, body: &[u8]) -> RawRecord {
        let mut payload = vec![0u8];
        payload.extend(id.to_be_bytes());
        payload.extend(body);
        RawRecord { payload: Some(payload), ..raw("") }
    }

    #[test]
    fn registry_records_go_to_the_dlq_with_their_schema_id_and_subject() {
        let (d, registry) = registry_decoder(InputFormat::Avro);
        let text = r#"{"type": "record", "name": "T", "fields": [
            {"name": "id", "type": "string"}, {"name": "amount", "type": "double"}]}"#;
        let mut w = registry::avro_writer(text, &[], d.schema()).unwrap();
        w.subject = Some("tx-value".into());
        registry.insert(5, Writer::Avro(Box::new(w)));
        registry.insert(6, Writer::Missing("schema id 6 is not in the Schema Registry (404)".into()));
        let schema = apache_avro::Schema::parse_str(text).unwrap();
        let datum = apache_avro::to_avro_datum(
            &schema,
            apache_avro::types::Value::Record(vec![
                ("id".into(), apache_avro::types::Value::String("a".into())),
                ("amount".into(), apache_avro::types::Value::Double(2.5)),
            ]),
        )
        .unwrap();
        let e = d.decode(&framed(5, &datum)).unwrap();
        assert_eq!(e.values[..2], [Value::Str("a".into()), Value::Float(2.5)]);
        assert_eq!(e.key, "a");

        let plain = d.decode(&raw(r#"{"id": "a", "amount": 1}"#)).unwrap_err();
        assert_eq!((plain.stage, plain.error_class), (Stage::Decode, ErrorClass::Unframed));
        assert!(plain.message.contains("format `avro`"), "{}", plain.message);
        let missing = d.decode(&framed(6, &datum)).unwrap_err();
        assert_eq!(missing.error_class, ErrorClass::UnknownSchema);
        assert!(missing.message.contains("schema id 6"), "{}", missing.message);
        let never_fetched = d.decode(&framed(7, &datum)).unwrap_err();
        assert_eq!(never_fetched.error_class, ErrorClass::UnknownSchema);
        let cut = d.decode(&framed(5, &datum[..datum.len() - 3])).unwrap_err();
        assert_eq!(cut.error_class, ErrorClass::Undecodable);
        assert!(cut.message.contains("schema id 5 (subject tx-value)"), "{}", cut.message);
        assert_eq!(cut.payload.as_deref().map(<[u8]>::len), Some(5 + datum.len() - 3), "the DLQ keeps the bytes");
    }

    #[test]
    fn protobuf_records_pick_their_message_type_by_index_and_bad_indexes_go_to_the_dlq() {
        let (d, registry) = registry_decoder(InputFormat::Protobuf);
        let text = "syntax = \"proto3\"; message Other { bool x = 1; } message T { string id = 1; double amount = 2; }";
        let mut w = registry::proto_writer(text, &[], d.schema()).unwrap();
        w.subject = Some("tx-value".into());
        registry.insert(8, Writer::Proto(Box::new(w)));
        // Message index [1] (count 1, index 1: zig-zag 0x02 0x02), then
        // field 1 "a" and field 2 2.5.
        let mut body = vec![0x02, 0x02, 0x0a, 0x01, b'a', 0x11];
        body.extend(2.5f64.to_le_bytes());
        let e = d.decode(&framed(8, &body)).unwrap();
        assert_eq!(e.values[..2], [Value::Str("a".into()), Value::Float(2.5)]);
        body[1] = 0x08; // index [4]
        let bad = d.decode(&framed(8, &body)).unwrap_err();
        assert_eq!((bad.stage, bad.error_class), (Stage::Decode, ErrorClass::UnknownSchema));
        assert!(bad.message.contains("message index [4]") && bad.message.contains("schema id 8 (subject tx-value)"));
    }

    #[test]
    fn json_schema_records_are_json_after_the_header() {
        let (d, registry) = registry_decoder(InputFormat::JsonSchema);
        registry.insert(9, Writer::Json { subject: Some("tx-value".into()) });
        let e = d.decode(&framed(9, br#"{"id": "b", "amount": 3}"#)).unwrap();
        assert_eq!(e.values[1], Value::Float(3.0));
        let bad = d.decode(&framed(9, br#"{"id": "b", "amount": "x"}"#)).unwrap_err();
        assert_eq!(bad.error_class, ErrorClass::WrongType);
        assert!(bad.message.ends_with("(schema id 9 (subject tx-value))"), "{}", bad.message);
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let r = RawRecord { payload: Some(bytes), ..Default::default() };
            let _ = dec(true).decode(&r);
        }

        #[test]
        fn one_pass_reading_agrees_with_reading_a_json_tree(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["id", "amount", "n", "ok", "at", "other"]),
                 proptest::prop_oneof![
                     proptest::strategy::Just(Json::Null),
                     proptest::bool::ANY.prop_map(Json::from),
                     proptest::num::i64::ANY.prop_map(Json::from),
                     proptest::num::u64::ANY.prop_map(Json::from),
                     (-1e6f64..1e6).prop_map(Json::from),
                     "[a-z\"\\\\é]{0,6}".prop_map(Json::from),
                     proptest::strategy::Just(Json::from("2026-01-01T00:00:00Z")),
                 ]),
                0..8,
            )
        ) {
            let map: serde_json::Map<String, Json> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let text = Json::Object(map).to_string();
            // The reference: the text parsed into a tree (the same number
            // parser: a float written and read back may move by one ulp),
            // then each field converted.
            let map: serde_json::Map<String, Json> = serde_json::from_str(&text).unwrap();
            let d = dec(false);
            let expected: Result<Vec<Value>, String> = d.schema().fields.iter().map(|f| match map.get(&f.name) {
                None => Ok(Value::Null),
                Some(v) => convert(v, f.ty).ok_or_else(|| format!("field `{}`", f.name)),
            }).collect();
            match (d.json_values(text.as_bytes()), expected) {
                (Ok(got), Ok(want)) => proptest::prop_assert_eq!(got, want),
                (Err((_, class, msg)), Err(_)) => {
                    proptest::prop_assert_eq!(class, ErrorClass::WrongType);
                    proptest::prop_assert!(msg.starts_with("field `"), "{}", msg);
                }
                (got, want) => proptest::prop_assert!(false, "{text}: {got:?} against {want:?}"),
            }
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
