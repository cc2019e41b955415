//! Avro values: a writer schema (with the schemas it references), where
//! each pipeline field is in its records, and the mapping of Avro types to
//! the pipeline's.

use apache_avro::schema::{ResolvedSchema, Schema as AvroSchema};
use apache_avro::types::Value as Avro;
use switchyard_schemas::{ErrorClass, EventSchema, FieldType, Value};

use super::values::{rfc3339_ms, subject_note, top_names, type_name, unscaled, whole, DecodeFailure};

/// The most one Avro value in a record may allocate.
const MAX_ALLOCATION: usize = 64 << 20;

/// A writer's Avro schema and the pipeline's fields in it.
#[derive(Debug)]
pub struct AvroWriter {
    schema: AvroSchema,
    references: Vec<AvroSchema>,
    /// The subject it is registered under, where the registry says.
    pub subject: Option<String>,
    /// Per pipeline field: the record field indices leading to its value
    /// (none when this schema does not have it) and a decimal's scale.
    paths: Vec<Option<(Vec<usize>, Option<usize>)>>,
    /// A top-level field the pipeline's schema does not list.
    unknown: Option<String>,
}

/// Parses an Avro writer schema (with the schemas it references) and finds
/// each of `event`'s fields in it.
pub fn avro_writer(text: &str, references: &[String], event: &EventSchema) -> Result<AvroWriter, String> {
    let (schema, references) = if references.is_empty() {
        (AvroSchema::parse_str(text).map_err(|e| e.to_string())?, Vec::new())
    } else {
        AvroSchema::parse_str_with_list(text, references).map_err(|e| e.to_string())?
    };
    writer_of(schema, references, event)
}

/// Finds each of `event`'s fields in a parsed writer schema (`references`:
/// the schemas it uses, dependencies first).
pub fn writer_of(schema: AvroSchema, references: Vec<AvroSchema>, event: &EventSchema) -> Result<AvroWriter, String> {
    // A malformed datum may claim a string or array of any length: allocate
    // no more than a record can hold (Kafka values are far smaller).
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
    // Dependencies first: each is resolved against those before it.
    let mut all: Vec<&AvroSchema> = references.iter().collect();
    all.push(&schema);
    let resolved = ResolvedSchema::try_from(all).map_err(|e| e.to_string())?;
    let names = resolved.get_names();
    let deref = |s: &'_ AvroSchema| -> Option<AvroSchema> {
        match s {
            AvroSchema::Ref { name } => names.get(name).map(|s| (*s).clone()),
            other => Some(other.clone()),
        }
    };
    let top = deref(&schema).ok_or("an unresolvable reference")?;
    let AvroSchema::Record(record) = &top else {
        return Err("the top-level schema is not a record".into());
    };
    let mut paths = Vec::with_capacity(event.fields.len());
    for f in &event.fields {
        let mut at = top.clone();
        let mut steps = Vec::new();
        let mut found = true;
        for part in f.path() {
            let Some(rec) = record_of(&at, &deref) else {
                found = false;
                break;
            };
            let Some(&i) = rec.lookup.get(part) else {
                found = false;
                break;
            };
            steps.push(i);
            at = deref(&rec.fields[i].schema).ok_or("an unresolvable reference")?;
        }
        paths.push(found.then(|| (steps, decimal_scale(&at, &deref))));
    }
    let known = top_names(event);
    let unknown = if event.reject_unknown_fields {
        record.fields.iter().find(|rf| !known.contains(rf.name.as_str())).map(|rf| rf.name.clone())
    } else {
        None
    };
    Ok(AvroWriter { schema, references, subject: None, paths, unknown })
}

/// The record `s` is, or the record branch of a union (`["null", Rec]`).
fn record_of(
    s: &AvroSchema,
    deref: &impl Fn(&AvroSchema) -> Option<AvroSchema>,
) -> Option<apache_avro::schema::RecordSchema> {
    match deref(s)? {
        AvroSchema::Record(r) => Some(r),
        AvroSchema::Union(u) => u.variants().iter().find_map(|v| match deref(v)? {
            AvroSchema::Record(r) => Some(r),
            _ => None,
        }),
        _ => None,
    }
}

/// A decimal's scale (of `s` or of its non-null union branch).
fn decimal_scale(s: &AvroSchema, deref: &impl Fn(&AvroSchema) -> Option<AvroSchema>) -> Option<usize> {
    match deref(s)? {
        AvroSchema::Decimal(d) => Some(d.scale),
        AvroSchema::Union(u) => u.variants().iter().find_map(|v| match deref(v)? {
            AvroSchema::Decimal(d) => Some(d.scale),
            _ => None,
        }),
        _ => None,
    }
}

impl AvroWriter {
    /// A record read from an Avro container file as the JSON object the
    /// pipeline's JSON decoder reads: each pipeline field's value at its
    /// path, mapped by the type rules (a value that cannot be mapped is kept
    /// as plain JSON, so validation names the field and its type), and the
    /// writer's first unknown top-level field (null) when the schema rejects
    /// unknown fields.
    pub fn to_json(&self, value: &Avro, event: &EventSchema) -> serde_json::Value {
        use serde_json::Value as J;
        let mut root = serde_json::Map::new();
        if let Some(u) = &self.unknown {
            root.insert(u.clone(), J::Null);
        }
        for (spec, path) in event.fields.iter().zip(&self.paths) {
            let Some((steps, scale)) = path else { continue };
            let Some(v) = walk(value, steps) else { continue };
            let json = match convert(v, spec.ty, *scale) {
                Some(Value::Null) => continue,
                Some(Value::Str(s)) => J::String(s),
                Some(Value::Int(i)) => J::from(i),
                Some(Value::Float(f)) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
                Some(Value::Bool(b)) => J::Bool(b),
                None => J::try_from(v.clone()).unwrap_or_else(|_| J::String(kind(v).to_string())),
            };
            let parts = spec.path();
            let mut at = &mut root;
            for part in &parts[..parts.len() - 1] {
                let next = at.entry(part.to_string()).or_insert_with(|| J::Object(Default::default()));
                if !next.is_object() {
                    *next = J::Object(Default::default());
                }
                at = next.as_object_mut().expect("an object was just put here");
            }
            at.insert(parts[parts.len() - 1].to_string(), json);
        }
        J::Object(root)
    }
}

impl AvroWriter {
    /// Decodes `datum` into the pipeline's field values (null where this
    /// schema lacks a field). The message names the field, never its value.
    pub fn decode(&self, datum: &[u8], event: &EventSchema, id: u32) -> Result<Vec<Value>, DecodeFailure> {
        if let Some(u) = &self.unknown {
            return Err((
                ErrorClass::UnknownField,
                format!(
                    "unknown field `{u}` in writer schema id {id}{} (schema {} v{} does not list it)",
                    subject_note(self.subject.as_deref()),
                    event.id,
                    event.version
                ),
            ));
        }
        let mut reader = datum;
        let value = if self.references.is_empty() {
            apache_avro::from_avro_datum(&self.schema, &mut reader, None)
        } else {
            apache_avro::from_avro_datum_schemata(&self.schema, self.references.iter().collect(), &mut reader, None)
        }
        .map_err(|e| {
            (
                ErrorClass::Undecodable,
                format!("value does not decode under schema id {id}{}: {e}", subject_note(self.subject.as_deref())),
            )
        })?;
        if !reader.is_empty() {
            return Err((
                ErrorClass::Undecodable,
                format!(
                    "value has {} bytes left over after a record of schema id {id}{}",
                    reader.len(),
                    subject_note(self.subject.as_deref())
                ),
            ));
        }
        let mut out = Vec::with_capacity(event.fields.len());
        for (spec, path) in event.fields.iter().zip(&self.paths) {
            let Some((steps, scale)) = path else {
                out.push(Value::Null);
                continue;
            };
            let v = walk(&value, steps);
            let converted = v.map_or(Some(Value::Null), |v| convert(v, spec.ty, *scale));
            out.push(converted.ok_or_else(|| {
                (
                    ErrorClass::WrongType,
                    format!(
                        "field `{}`: expected {}, got Avro {}",
                        spec.name,
                        type_name(spec.ty),
                        v.map_or("null", kind)
                    ),
                )
            })?);
        }
        Ok(out)
    }
}

/// The value at `steps` (record field indices) below `v`, through unions;
/// `None` where a record on the way is null.
fn walk<'a>(mut v: &'a Avro, steps: &[usize]) -> Option<&'a Avro> {
    for &i in steps {
        while let Avro::Union(_, inner) = v {
            v = inner;
        }
        match v {
            Avro::Record(fields) => v = &fields.get(i)?.1,
            _ => return None,
        }
    }
    while let Avro::Union(_, inner) = v {
        v = inner;
    }
    Some(v)
}

/// An Avro value as the pipeline's `ty` (see the README's type mapping);
/// `None` when it cannot be.
pub fn convert(v: &Avro, ty: FieldType, scale: Option<usize>) -> Option<Value> {
    const DAY_MS: i64 = 86_400_000;
    Some(match (v, ty) {
        (Avro::Null, _) => Value::Null,
        (Avro::Union(_, inner), _) => return convert(inner, ty, scale),
        (Avro::String(s), FieldType::String) | (Avro::Enum(_, s), FieldType::String) => Value::Str(s.clone()),
        (Avro::Uuid(u), FieldType::String) => Value::Str(u.to_string()),
        (Avro::Boolean(b), FieldType::Bool) => Value::Bool(*b),
        (Avro::Int(i), FieldType::Int | FieldType::Timestamp) => Value::Int(i64::from(*i)),
        (Avro::Long(i), FieldType::Int | FieldType::Timestamp) => Value::Int(*i),
        (Avro::Int(i), FieldType::Float) => Value::Float(f64::from(*i)),
        (Avro::Long(i), FieldType::Float) => Value::Float(*i as f64),
        (Avro::Float(f), FieldType::Float) => Value::Float(f64::from(*f)),
        (Avro::Double(f), FieldType::Float) => Value::Float(*f),
        (Avro::Float(f), FieldType::Int) => Value::Int(whole(f64::from(*f))?),
        (Avro::Double(f), FieldType::Int) => Value::Int(whole(*f)?),
        (Avro::Decimal(d), FieldType::Float) => Value::Float(decimal(d, scale?)?),
        (Avro::TimestampMillis(t) | Avro::LocalTimestampMillis(t), FieldType::Timestamp | FieldType::Int) => {
            Value::Int(*t)
        }
        (Avro::TimestampMicros(t) | Avro::LocalTimestampMicros(t), FieldType::Timestamp | FieldType::Int) => {
            Value::Int(t.div_euclid(1000))
        }
        (Avro::TimestampNanos(t) | Avro::LocalTimestampNanos(t), FieldType::Timestamp | FieldType::Int) => {
            Value::Int(t.div_euclid(1_000_000))
        }
        (Avro::Date(d), FieldType::Timestamp) => Value::Int(i64::from(*d) * DAY_MS),
        (Avro::Date(d), FieldType::Int) => Value::Int(i64::from(*d)),
        (Avro::String(s), FieldType::Timestamp) => Value::Int(rfc3339_ms(s)?),
        _ => return None,
    })
}

/// An Avro decimal's value.
fn decimal(d: &apache_avro::Decimal, scale: usize) -> Option<f64> {
    let bytes: Vec<u8> = d.try_into().ok()?;
    unscaled(&bytes, scale)
}

/// The Avro type of `v`, for messages.
fn kind(v: &Avro) -> &'static str {
    match v {
        Avro::Null => "null",
        Avro::Boolean(_) => "boolean",
        Avro::Int(_) => "int",
        Avro::Long(_) => "long",
        Avro::Float(_) => "float",
        Avro::Double(_) => "double",
        Avro::Bytes(_) => "bytes",
        Avro::String(_) => "string",
        Avro::Fixed(..) => "fixed",
        Avro::Enum(..) => "enum",
        Avro::Union(..) => "union",
        Avro::Array(_) => "array",
        Avro::Map(_) => "map",
        Avro::Record(_) => "record",
        Avro::Date(_) => "date",
        Avro::Decimal(_) | Avro::BigDecimal(_) => "decimal",
        Avro::TimeMillis(_) | Avro::TimeMicros(_) => "time",
        Avro::TimestampMillis(_)
        | Avro::TimestampMicros(_)
        | Avro::TimestampNanos(_)
        | Avro::LocalTimestampMillis(_)
        | Avro::LocalTimestampMicros(_)
        | Avro::LocalTimestampNanos(_) => "timestamp",
        Avro::Duration(_) => "duration",
        Avro::Uuid(_) => "uuid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Record;
    use proptest::prelude::*;

    use crate::registry::values::test_event as event;

    const TXN: &str = r#"{
      "type": "record", "name": "Txn", "namespace": "test",
      "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "channel", "type": {"type": "enum", "name": "Channel", "symbols": ["pos", "web"]}},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "merchant", "type": ["null", {"type": "record", "name": "Merchant", "fields": [
          {"name": "country", "type": "string"},
          {"name": "site", "type": {"type": "record", "name": "Site", "fields": [{"name": "open", "type": "boolean"}]}}
        ]}], "default": null},
        {"name": "again", "type": ["null", "Merchant"], "default": null}
      ]
    }"#;

    fn txn_event(reject_unknown: bool) -> EventSchema {
        event(
            &[
                ("id", FieldType::String, None),
                ("amount", FieldType::Float, None),
                ("at", FieldType::Timestamp, None),
                ("day", FieldType::Timestamp, None),
                ("channel", FieldType::String, None),
                ("note", FieldType::String, None),
                ("country", FieldType::String, Some("merchant.country")),
                ("open", FieldType::Bool, Some("merchant.site.open")),
                ("country2", FieldType::String, Some("again.country")),
            ],
            reject_unknown,
        )
    }

    fn encode(schema: &AvroSchema, fill: impl FnOnce(&mut Record<'_>)) -> Vec<u8> {
        let mut r = Record::new(schema).unwrap();
        fill(&mut r);
        apache_avro::to_avro_datum(schema, r).unwrap()
    }

    #[test]
    fn logical_types_enums_unions_and_nested_records_map_by_the_documented_rules() {
        let ev = txn_event(false);
        let w = avro_writer(TXN, &[], &ev).unwrap();
        let schema = AvroSchema::parse_str(TXN).unwrap();
        let merchant = |country: &str| {
            Avro::Union(
                1,
                Box::new(Avro::Record(vec![
                    ("country".into(), Avro::String(country.into())),
                    ("site".into(), Avro::Record(vec![("open".into(), Avro::Boolean(true))])),
                ])),
            )
        };
        let bytes = encode(&schema, |r| {
            r.put("id", "t1");
            r.put("amount", Avro::Decimal(apache_avro::Decimal::from(&(-12345i64).to_be_bytes()[5..])));
            r.put("at", Avro::TimestampMicros(1_700_000_000_123_456));
            r.put("day", Avro::Date(19_000));
            r.put("channel", Avro::Enum(1, "web".into()));
            r.put("note", Avro::Union(0, Box::new(Avro::Null)));
            r.put("merchant", merchant("NL"));
            r.put("again", merchant("BE"));
        });
        let values = w.decode(&bytes, &ev, 7).unwrap();
        assert_eq!(
            values,
            vec![
                Value::Str("t1".into()),
                Value::Float(-123.45),
                Value::Int(1_700_000_000_123),
                Value::Int(19_000 * 86_400_000),
                Value::Str("web".into()),
                Value::Null,
                Value::Str("NL".into()),
                Value::Bool(true),
                Value::Str("BE".into()),
            ]
        );
        // A null nested record leaves its fields null.
        let bytes = encode(&schema, |r| {
            r.put("id", "t2");
            r.put("amount", Avro::Decimal(apache_avro::Decimal::from(vec![1u8])));
            r.put("at", Avro::TimestampMicros(0));
            r.put("day", Avro::Date(0));
            r.put("channel", Avro::Enum(0, "pos".into()));
            r.put("note", Avro::Union(1, Box::new(Avro::String("hi".into()))));
            r.put("merchant", Avro::Union(0, Box::new(Avro::Null)));
            r.put("again", Avro::Union(0, Box::new(Avro::Null)));
        });
        let values = w.decode(&bytes, &ev, 7).unwrap();
        assert_eq!(values[1], Value::Float(0.01));
        assert_eq!(values[5], Value::Str("hi".into()));
        assert_eq!(&values[6..], &[Value::Null, Value::Null, Value::Null]);
    }

    #[test]
    fn bad_bytes_wrong_types_and_unknown_fields_are_named_with_the_schema_id() {
        let ev = txn_event(false);
        let w = avro_writer(TXN, &[], &ev).unwrap();
        let (class, msg) = w.decode(&[0x02, 0xff, 0xff], &ev, 42).unwrap_err();
        assert_eq!(class, ErrorClass::Undecodable);
        assert!(msg.contains("schema id 42"), "{msg}");

        let mut wrong = txn_event(false);
        wrong.fields[0].ty = FieldType::Int;
        let w = avro_writer(TXN, &[], &wrong).unwrap();
        let schema = AvroSchema::parse_str(TXN).unwrap();
        let bytes = encode(&schema, |r| {
            r.put("id", "t1");
            r.put("amount", Avro::Decimal(apache_avro::Decimal::from(vec![1u8])));
            r.put("at", Avro::TimestampMicros(0));
            r.put("day", Avro::Date(0));
            r.put("channel", Avro::Enum(0, "pos".into()));
            r.put("note", Avro::Union(0, Box::new(Avro::Null)));
            r.put("merchant", Avro::Union(0, Box::new(Avro::Null)));
            r.put("again", Avro::Union(0, Box::new(Avro::Null)));
        });
        let (class, msg) = w.decode(&bytes, &wrong, 42).unwrap_err();
        assert_eq!(class, ErrorClass::WrongType);
        assert_eq!(msg, "field `id`: expected integer, got Avro string");

        let mut strict = event(&[("id", FieldType::String, None)], true);
        strict.reject_unknown_fields = true;
        let w = avro_writer(TXN, &[], &strict).unwrap();
        let (class, msg) = w.decode(&bytes, &strict, 42).unwrap_err();
        assert_eq!(class, ErrorClass::UnknownField);
        assert!(msg.contains("unknown field `amount` in writer schema id 42"), "{msg}");

        assert!(avro_writer(r#""string""#, &[], &strict).unwrap_err().contains("not a record"));
        assert!(avro_writer("{not json", &[], &strict).is_err());
    }

    #[test]
    fn a_schema_may_use_types_defined_in_the_schemas_it_references() {
        let reference = r#"{"type": "record", "name": "Money", "namespace": "shared",
            "fields": [{"name": "units", "type": "double"}, {"name": "currency", "type": "string"}]}"#;
        let main = r#"{"type": "record", "name": "Pay", "namespace": "test",
            "fields": [{"name": "id", "type": "string"}, {"name": "price", "type": "shared.Money"}]}"#;
        let ev = event(&[("id", FieldType::String, None), ("amount", FieldType::Float, Some("price.units"))], false);
        let w = avro_writer(main, &[reference.to_string()], &ev).unwrap();
        let (schema, refs) = AvroSchema::parse_str_with_list(main, [reference]).unwrap();
        let value = Avro::Record(vec![
            ("id".into(), Avro::String("p1".into())),
            (
                "price".into(),
                Avro::Record(vec![
                    ("units".into(), Avro::Double(9.5)),
                    ("currency".into(), Avro::String("EUR".into())),
                ]),
            ),
        ]);
        let bytes = apache_avro::to_avro_datum_schemata(&schema, refs.iter().collect(), value).unwrap();
        assert_eq!(w.decode(&bytes, &ev, 1).unwrap(), vec![Value::Str("p1".into()), Value::Float(9.5)]);
    }

    /// One column of a random flat schema: its Avro type, whether it is
    /// nullable, and a value.
    #[derive(Debug, Clone)]
    enum Col {
        Int(i32),
        Long(i64),
        Double(f64),
        Str(String),
        Bool(bool),
    }

    fn col() -> impl Strategy<Value = (Col, bool, bool)> {
        let c = prop_oneof![
            any::<i32>().prop_map(Col::Int),
            any::<i64>().prop_map(Col::Long),
            (-1.0e12f64..1.0e12).prop_map(Col::Double),
            "[a-zA-Z0-9 @.]{0,12}".prop_map(Col::Str),
            any::<bool>().prop_map(Col::Bool),
        ];
        (c, any::<bool>(), any::<bool>())
    }

    proptest! {
        /// Random record schemas (ints, longs, doubles, strings, booleans,
        /// each maybe nullable and maybe null) with random values decode to
        /// the values written, whatever the field order.
        #[test]
        fn random_schemas_and_values_round_trip(cols in proptest::collection::vec(col(), 1..12)) {
            let mut fields = Vec::new();
            let mut specs = Vec::new();
            let mut values = Vec::new();
            let mut want = Vec::new();
            for (i, (c, nullable, null)) in cols.iter().enumerate() {
                let name = format!("f{i}");
                let (avro_ty, ty, v, w) = match c {
                    Col::Int(x) => ("int", FieldType::Int, Avro::Int(*x), Value::Int(i64::from(*x))),
                    Col::Long(x) => ("long", FieldType::Int, Avro::Long(*x), Value::Int(*x)),
                    Col::Double(x) => ("double", FieldType::Float, Avro::Double(*x), Value::Float(*x)),
                    Col::Str(x) => ("string", FieldType::String, Avro::String(x.clone()), Value::Str(x.clone())),
                    Col::Bool(x) => ("boolean", FieldType::Bool, Avro::Boolean(*x), Value::Bool(*x)),
                };
                if *nullable {
                    fields.push(format!(r#"{{"name": "{name}", "type": ["null", "{avro_ty}"], "default": null}}"#));
                    if *null {
                        values.push((name.clone(), Avro::Union(0, Box::new(Avro::Null))));
                        want.push(Value::Null);
                    } else {
                        values.push((name.clone(), Avro::Union(1, Box::new(v))));
                        want.push(w);
                    }
                } else {
                    fields.push(format!(r#"{{"name": "{name}", "type": "{avro_ty}"}}"#));
                    values.push((name.clone(), v));
                    want.push(w);
                }
                specs.push((name, ty));
            }
            let text = format!(r#"{{"type": "record", "name": "R", "fields": [{}]}}"#, fields.join(","));
            let schema = AvroSchema::parse_str(&text).unwrap();
            let bytes = apache_avro::to_avro_datum(&schema, Avro::Record(values)).unwrap();
            // The pipeline lists the fields in reverse order.
            let listed: Vec<(&str, FieldType, Option<&str>)> =
                specs.iter().rev().map(|(n, t)| (n.as_str(), *t, None)).collect();
            let ev = event(&listed, true);
            let w = avro_writer(&text, &[], &ev).unwrap();
            let got = w.decode(&bytes, &ev, 3).unwrap();
            want.reverse();
            prop_assert_eq!(got, want);
        }

        /// Any bytes under any of these schemas: a value or a DLQ reason,
        /// never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ev = txn_event(true);
            let w = avro_writer(TXN, &[], &ev).unwrap();
            let _ = w.decode(&bytes, &ev, 1);
        }
    }
}
