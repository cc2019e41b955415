//! Protobuf values: a writer schema (a `.proto` file as text, or a
//! serialized `FileDescriptorProto` in base64 as some serializers register
//! it, with the files it imports), the message type each record's index
//! list names, and the mapping of Protobuf types to the pipeline's.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use prost_reflect::prost::Message;
use prost_reflect::{
    prost, prost_types, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value as Proto,
};
use protox::file::{File, FileResolver, GoogleFileResolver};
use switchyard_schemas::{ErrorClass, EventSchema, FieldType, Value};

use super::values::{rfc3339_ms, subject_note, top_names, type_name, unscaled, whole, DecodeFailure};

/// The most message indexes a record may carry (nesting depth).
const MAX_INDEXES: u64 = 32;

/// Files that Confluent's serializers import without registering them as
/// references (`google/protobuf/…` come from protox).
const CONFLUENT_FILES: &[(&str, &str)] = &[
    (
        "confluent/type/decimal.proto",
        "syntax = \"proto3\";\npackage confluent.type;\n\
         message Decimal { bytes value = 1; uint32 precision = 2; int32 scale = 3; }\n",
    ),
    (
        "confluent/meta.proto",
        "syntax = \"proto3\";\npackage confluent;\nimport \"google/protobuf/descriptor.proto\";\n\
         message Meta { string doc = 1; map<string, string> params = 2; repeated string tags = 3; }\n\
         extend google.protobuf.FileOptions { Meta file_meta = 1088; }\n\
         extend google.protobuf.MessageOptions { Meta message_meta = 1088; }\n\
         extend google.protobuf.FieldOptions { Meta field_meta = 1088; }\n\
         extend google.protobuf.EnumOptions { Meta enum_meta = 1088; }\n\
         extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }\n",
    ),
];

/// A writer's Protobuf file and the pipeline's fields in each of its
/// message types.
#[derive(Debug)]
pub struct ProtoWriter {
    /// The subject it is registered under, where the registry says.
    pub subject: Option<String>,
    /// Every message type of the file, by its index path (top-level
    /// message, then nested ones), as records name them.
    messages: HashMap<Vec<usize>, ProtoMessage>,
    /// How many top-level messages the file has, for messages.
    top: usize,
}

#[derive(Debug)]
struct ProtoMessage {
    desc: MessageDescriptor,
    /// Per pipeline field: the fields leading to its value (none when this
    /// message type does not have it).
    paths: Vec<Option<Vec<FieldDescriptor>>>,
    /// A top-level field the pipeline's schema does not list.
    unknown: Option<String>,
}

/// The schema texts by file name, then Confluent's and Google's own files.
struct Sources {
    files: HashMap<String, String>,
    google: GoogleFileResolver,
}

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if let Some(text) = self.files.get(name) {
            return parse_file(name, text);
        }
        if let Some((_, text)) = CONFLUENT_FILES.iter().find(|(n, _)| *n == name) {
            return File::from_source(name, text);
        }
        self.google.open_file(name)
    }
}

/// A `.proto` file from its text or its base64 `FileDescriptorProto`.
fn parse_file(name: &str, text: &str) -> Result<File, protox::Error> {
    let trimmed = text.trim();
    if !trimmed.contains(char::is_whitespace) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed) {
            if let Ok(mut proto) = prost_types::FileDescriptorProto::decode(bytes.as_slice()) {
                proto.name = Some(name.to_string());
                return Ok(File::from_file_descriptor_proto(proto));
            }
        }
    }
    File::from_source(name, text)
}

/// Compiles a Protobuf writer schema (with the files it imports, by the
/// names it imports them under) and finds each of `event`'s fields in each
/// of its message types.
pub fn proto_writer(text: &str, imports: &[(String, String)], event: &EventSchema) -> Result<ProtoWriter, String> {
    let main = "switchyard-writer-schema.proto";
    let mut files: HashMap<String, String> = imports.iter().cloned().collect();
    files.insert(main.to_string(), text.to_string());
    let mut compiler = protox::Compiler::with_file_resolver(Sources { files, google: GoogleFileResolver::new() });
    compiler.open_file(main).map_err(|e| e.to_string())?;
    let pool = compiler.descriptor_pool();
    let file = pool.get_file_by_name(main).ok_or("the schema's file is missing after compiling it")?;
    let known = top_names(event);
    let mut messages = HashMap::new();
    let mut todo: Vec<(Vec<usize>, MessageDescriptor)> =
        file.messages().enumerate().map(|(i, m)| (vec![i], m)).collect();
    let top = todo.len();
    if top == 0 {
        return Err("the schema defines no message".into());
    }
    while let Some((at, desc)) = todo.pop() {
        for (i, child) in desc.child_messages().enumerate() {
            let mut path = at.clone();
            path.push(i);
            todo.push((path, child));
        }
        let paths = event.fields.iter().map(|f| field_path(&desc, &f.path())).collect();
        let unknown = if event.reject_unknown_fields {
            desc.fields().find(|fd| !known.contains(fd.name())).map(|fd| fd.name().to_string())
        } else {
            None
        };
        messages.insert(at, ProtoMessage { desc, paths, unknown });
    }
    Ok(ProtoWriter { subject: None, messages, top })
}

/// The fields leading from `desc` along `parts` (by Protobuf field name),
/// through singular message fields.
fn field_path(desc: &MessageDescriptor, parts: &[&str]) -> Option<Vec<FieldDescriptor>> {
    let mut at = desc.clone();
    let mut steps = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        let fd = at.get_field_by_name(part)?;
        if k + 1 < parts.len() {
            match fd.kind() {
                Kind::Message(sub) if !fd.is_list() && !fd.is_map() => at = sub,
                _ => return None,
            }
        }
        steps.push(fd);
    }
    Some(steps)
}

/// The message index list after the schema id (zig-zag varints: a count,
/// then the indexes; a single 0 stands for `[0]`), and the message after it.
pub fn message_indexes(mut body: &[u8]) -> Result<(Vec<usize>, &[u8]), String> {
    let mut next = |what: &str| -> Result<i64, String> {
        let v =
            prost::encoding::decode_varint(&mut body).map_err(|_| format!("the message index {what} is cut short"))?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    };
    let count = next("count")?;
    if count == 0 {
        return Ok((vec![0], body));
    }
    if count < 0 || count as u64 > MAX_INDEXES {
        return Err(format!("the message index count {count} is not between 1 and {MAX_INDEXES}"));
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = next("list")?;
        indexes.push(usize::try_from(i).map_err(|_| format!("the message index {i} is negative"))?);
    }
    Ok((indexes, body))
}

impl ProtoWriter {
    /// Decodes `body` (message indexes, then the message) into the
    /// pipeline's field values (null where the message type lacks a field,
    /// or where a field with presence is unset). Messages name the field
    /// and the message type, never a value.
    pub fn decode(&self, body: &[u8], event: &EventSchema, id: u32) -> Result<Vec<Value>, DecodeFailure> {
        let of = || format!("schema id {id}{}", subject_note(self.subject.as_deref()));
        let (indexes, message) =
            message_indexes(body).map_err(|e| (ErrorClass::Undecodable, format!("{e} in a value of {}", of())))?;
        let Some(m) = self.messages.get(&indexes) else {
            return Err((
                ErrorClass::UnknownSchema,
                format!(
                    "message index {indexes:?} names no message type in {} (its file has {} top-level message{})",
                    of(),
                    self.top,
                    if self.top == 1 { "" } else { "s" }
                ),
            ));
        };
        if let Some(u) = &m.unknown {
            return Err((
                ErrorClass::UnknownField,
                format!(
                    "unknown field `{u}` in message type {} of writer {} (schema {} v{} does not list it)",
                    m.desc.full_name(),
                    of(),
                    event.id,
                    event.version
                ),
            ));
        }
        let msg = DynamicMessage::decode(m.desc.clone(), message).map_err(|e| {
            (ErrorClass::Undecodable, format!("value does not decode as {} under {}: {e}", m.desc.full_name(), of()))
        })?;
        let mut out = Vec::with_capacity(event.fields.len());
        for (spec, path) in event.fields.iter().zip(&m.paths) {
            let Some(steps) = path else {
                out.push(Value::Null);
                continue;
            };
            let last = &steps[steps.len() - 1];
            let converted = match at(&msg, steps) {
                None => Some(Value::Null),
                Some(v) => convert(&v, &last.kind(), spec.ty),
            };
            out.push(converted.ok_or_else(|| {
                (
                    ErrorClass::WrongType,
                    format!(
                        "field `{}`: expected {}, got Protobuf {}{}",
                        spec.name,
                        type_name(spec.ty),
                        if last.is_list() {
                            "repeated "
                        } else if last.is_map() {
                            "map of "
                        } else {
                            ""
                        },
                        kind_name(&last.kind())
                    ),
                )
            })?);
        }
        Ok(out)
    }
}

/// The value at `steps` below `msg`; `None` (null) where a message on the
/// way is unset, or where the field itself has presence and is unset.
/// Fields without presence (proto3 scalars) read as their default.
fn at<'a>(msg: &'a DynamicMessage, steps: &[FieldDescriptor]) -> Option<Cow<'a, Proto>> {
    let (fd, rest) = steps.split_first()?;
    if rest.is_empty() {
        if fd.supports_presence() && !msg.has_field(fd) {
            return None;
        }
        return Some(msg.get_field(fd));
    }
    if !msg.has_field(fd) {
        return None;
    }
    match msg.get_field(fd) {
        Cow::Borrowed(Proto::Message(m)) => at(m, rest),
        _ => None,
    }
}

/// A Protobuf value of `kind` as the pipeline's `ty` (see the README's type
/// mapping); `None` when it cannot be.
pub fn convert(v: &Proto, kind: &Kind, ty: FieldType) -> Option<Value> {
    Some(match (v, ty) {
        (Proto::String(s), FieldType::String) => Value::Str(s.clone()),
        (Proto::String(s), FieldType::Timestamp) => Value::Int(rfc3339_ms(s)?),
        (Proto::Bool(b), FieldType::Bool) => Value::Bool(*b),
        (Proto::I32(i), FieldType::Int | FieldType::Timestamp) => Value::Int(i64::from(*i)),
        (Proto::I64(i), FieldType::Int | FieldType::Timestamp) => Value::Int(*i),
        (Proto::U32(i), FieldType::Int | FieldType::Timestamp) => Value::Int(i64::from(*i)),
        (Proto::U64(i), FieldType::Int | FieldType::Timestamp) => Value::Int(i64::try_from(*i).ok()?),
        (Proto::I32(i), FieldType::Float) => Value::Float(f64::from(*i)),
        (Proto::I64(i), FieldType::Float) => Value::Float(*i as f64),
        (Proto::U32(i), FieldType::Float) => Value::Float(f64::from(*i)),
        (Proto::U64(i), FieldType::Float) => Value::Float(*i as f64),
        (Proto::F32(f), FieldType::Float) => Value::Float(f64::from(*f)),
        (Proto::F64(f), FieldType::Float) => Value::Float(*f),
        (Proto::F32(f), FieldType::Int) => Value::Int(whole(f64::from(*f))?),
        (Proto::F64(f), FieldType::Int) => Value::Int(whole(*f)?),
        (Proto::EnumNumber(n), FieldType::String) => {
            let name = kind.as_enum().and_then(|e| e.get_value(*n)).map(|v| v.name().to_string());
            Value::Str(name.unwrap_or_else(|| n.to_string()))
        }
        (Proto::EnumNumber(n), FieldType::Int) => Value::Int(i64::from(*n)),
        (Proto::Message(m), _) => return well_known(m, ty),
        _ => return None,
    })
}

/// Messages that stand for a single value: `google.protobuf.Timestamp`,
/// the wrappers (`google.protobuf.DoubleValue`, …) and
/// `confluent.type.Decimal`.
fn well_known(m: &DynamicMessage, ty: FieldType) -> Option<Value> {
    let field = |name: &str| m.get_field_by_name(name);
    match m.descriptor().full_name() {
        "google.protobuf.Timestamp" if matches!(ty, FieldType::Timestamp | FieldType::Int) => {
            let seconds = field("seconds")?.as_i64()?;
            let nanos = field("nanos")?.as_i32()?;
            Some(Value::Int(seconds.checked_mul(1000)?.checked_add(i64::from(nanos).div_euclid(1_000_000))?))
        }
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue" => {
            let inner = m.descriptor().get_field_by_name("value")?;
            convert(&m.get_field(&inner), &inner.kind(), ty)
        }
        "confluent.type.Decimal" if ty == FieldType::Float => {
            let bytes = field("value")?.as_bytes()?.clone();
            let scale = usize::try_from(field("scale")?.as_i32()?).ok()?;
            Some(Value::Float(unscaled(&bytes, scale)?))
        }
        _ => None,
    }
}

/// The Protobuf type's name, for messages.
fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost_reflect::DescriptorPool;

    use crate::registry::values::test_event as event;

    const TXN: &str = r#"
        syntax = "proto3";
        package test;
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/wrappers.proto";
        import "confluent/type/decimal.proto";

        message Other { string x = 1; }
        message Txn {
          enum Channel { POS = 0; WEB = 1; }
          message Merchant {
            string country = 1;
            message Site { bool open = 1; }
            Site site = 2;
          }
          string id = 1;
          confluent.type.Decimal amount = 2;
          google.protobuf.Timestamp at = 3;
          Channel channel = 4;
          optional string note = 5;
          Merchant merchant = 6;
          google.protobuf.DoubleValue score = 7;
          uint64 count = 8;
          repeated string tags = 9;
        }
    "#;

    fn txn_event(reject_unknown: bool) -> EventSchema {
        event(
            &[
                ("id", FieldType::String, None),
                ("amount", FieldType::Float, None),
                ("at", FieldType::Timestamp, None),
                ("channel", FieldType::String, None),
                ("note", FieldType::String, None),
                ("country", FieldType::String, Some("merchant.country")),
                ("open", FieldType::Bool, Some("merchant.site.open")),
                ("score", FieldType::Float, None),
                ("count", FieldType::Int, None),
            ],
            reject_unknown,
        )
    }

    /// The message types of `text` (compiled on its own), for encoding.
    fn pool(text: &str) -> DescriptorPool {
        let w = proto_writer(text, &[], &event(&[], false)).unwrap();
        w.messages[&vec![0]].desc.parent_pool().clone()
    }

    /// Zig-zag varints: the index list as the serializers write it.
    fn indexes(list: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        if list == [0] {
            return vec![0];
        }
        for v in std::iter::once(list.len() as i64).chain(list.iter().copied()) {
            prost::encoding::encode_varint(((v << 1) ^ (v >> 63)) as u64, &mut out);
        }
        out
    }

    fn txn(pool: &DescriptorPool, fill: impl FnOnce(&mut DynamicMessage, &DescriptorPool)) -> Vec<u8> {
        let mut m = DynamicMessage::new(pool.get_message_by_name("test.Txn").unwrap());
        fill(&mut m, pool);
        let mut out = indexes(&[1]);
        out.extend(m.encode_to_vec());
        out
    }

    fn sub(pool: &DescriptorPool, name: &str, fields: &[(&str, Proto)]) -> Proto {
        let mut m = DynamicMessage::new(pool.get_message_by_name(name).unwrap());
        for (f, v) in fields {
            m.set_field_by_name(f, v.clone());
        }
        Proto::Message(m)
    }

    fn full(m: &mut DynamicMessage, p: &DescriptorPool) {
        m.set_field_by_name("id", Proto::String("t1".into()));
        let unscaled = (-12345i64).to_be_bytes()[5..].to_vec();
        m.set_field_by_name(
            "amount",
            sub(p, "confluent.type.Decimal", &[("value", Proto::Bytes(unscaled.into())), ("scale", Proto::I32(2))]),
        );
        m.set_field_by_name(
            "at",
            sub(
                p,
                "google.protobuf.Timestamp",
                &[("seconds", Proto::I64(1_700_000_000)), ("nanos", Proto::I32(123_456_789))],
            ),
        );
        m.set_field_by_name("channel", Proto::EnumNumber(1));
        let site = sub(p, "test.Txn.Merchant.Site", &[("open", Proto::Bool(true))]);
        m.set_field_by_name(
            "merchant",
            sub(p, "test.Txn.Merchant", &[("country", Proto::String("NL".into())), ("site", site)]),
        );
        m.set_field_by_name("score", sub(p, "google.protobuf.DoubleValue", &[("value", Proto::F64(0.25))]));
        m.set_field_by_name("count", Proto::U64(7));
    }

    #[test]
    fn message_indexes_read_as_the_serializers_write_them() {
        assert_eq!(message_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        assert_eq!(message_indexes(&indexes(&[1])).unwrap().0, vec![1]);
        assert_eq!(message_indexes(&indexes(&[0, 2, 300])).unwrap().0, vec![0, 2, 300]);
        assert!(message_indexes(&[]).unwrap_err().contains("cut short"));
        assert!(message_indexes(&indexes(&[-1])).unwrap_err().contains("negative"));
        assert!(message_indexes(&[0x7f]).unwrap_err().contains("not between"), "a count of -64");
        assert!(message_indexes(&[0x04, 0x02]).unwrap_err().contains("cut short"), "two promised, one given");
    }

    #[test]
    fn well_known_types_enums_optionals_and_nested_messages_map_by_the_documented_rules() {
        let ev = txn_event(false);
        let w = proto_writer(TXN, &[], &ev).unwrap();
        let p = pool(TXN);
        let values = w.decode(&txn(&p, full), &ev, 7).unwrap();
        assert_eq!(
            values,
            vec![
                Value::Str("t1".into()),
                Value::Float(-123.45),
                Value::Int(1_700_000_000_123),
                Value::Str("WEB".into()),
                Value::Null,
                Value::Str("NL".into()),
                Value::Bool(true),
                Value::Float(0.25),
                Value::Int(7),
            ]
        );
        // Unset messages and optionals are null; proto3 scalars without
        // presence read as their default.
        let values = w
            .decode(
                &txn(&p, |m, _| {
                    m.set_field_by_name("note", Proto::String("hi".into()));
                }),
                &ev,
                7,
            )
            .unwrap();
        assert_eq!(
            values,
            vec![
                Value::Str(String::new()),
                Value::Null,
                Value::Null,
                Value::Str("POS".into()),
                Value::Str("hi".into()),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Int(0),
            ]
        );
    }

    #[test]
    fn a_serialized_descriptor_in_base64_reads_as_its_proto_text_does() {
        let ev = txn_event(false);
        let p = pool(TXN);
        let file = p.get_file_by_name("switchyard-writer-schema.proto").unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(file.file_descriptor_proto().encode_to_vec());
        let w = proto_writer(&b64, &[], &ev).unwrap();
        assert_eq!(
            w.decode(&txn(&p, full), &ev, 7).unwrap(),
            proto_writer(TXN, &[], &ev).unwrap().decode(&txn(&p, full), &ev, 7).unwrap()
        );
    }

    #[test]
    fn a_schema_may_import_the_files_it_references() {
        let money = "syntax = \"proto3\"; package shared; message Money { double units = 1; string currency = 2; }";
        let main = "syntax = \"proto3\"; package test; import \"shared/money.proto\";\n\
                    message Pay { string id = 1; shared.Money price = 2; }";
        let ev = event(&[("id", FieldType::String, None), ("amount", FieldType::Float, Some("price.units"))], false);
        let imports = [("shared/money.proto".to_string(), money.to_string())];
        let w = proto_writer(main, &imports, &ev).unwrap();
        let p = w.messages[&vec![0]].desc.parent_pool().clone();
        let mut m = DynamicMessage::new(p.get_message_by_name("test.Pay").unwrap());
        m.set_field_by_name("id", Proto::String("p1".into()));
        m.set_field_by_name("price", sub(&p, "shared.Money", &[("units", Proto::F64(9.5))]));
        let mut bytes = vec![0];
        bytes.extend(m.encode_to_vec());
        assert_eq!(w.decode(&bytes, &ev, 1).unwrap(), vec![Value::Str("p1".into()), Value::Float(9.5)]);
        let missing = proto_writer(main, &[], &ev).unwrap_err();
        assert!(missing.contains("shared/money.proto"), "{missing}");
    }

    #[test]
    fn bad_indexes_bad_bytes_wrong_types_and_unknown_fields_are_named_with_the_schema_id() {
        let ev = txn_event(false);
        let mut w = proto_writer(TXN, &[], &ev).unwrap();
        w.subject = Some("tx-value".into());
        let (class, msg) = w.decode(&indexes(&[5]), &ev, 42).unwrap_err();
        assert_eq!(class, ErrorClass::UnknownSchema);
        assert_eq!(msg, "message index [5] names no message type in schema id 42 (subject tx-value) (its file has 2 top-level messages)");
        let (class, msg) = w.decode(&[0x02, 0x02, 0x0a, 0x05, b'a'], &ev, 42).unwrap_err();
        assert_eq!(class, ErrorClass::Undecodable);
        assert!(msg.contains("as test.Txn under schema id 42 (subject tx-value)"), "{msg}");
        let (class, _) = w.decode(&[0x02], &ev, 42).unwrap_err();
        assert_eq!(class, ErrorClass::Undecodable, "the index list is cut short");

        let mut wrong = txn_event(false);
        wrong.fields[0].ty = FieldType::Int;
        wrong.fields.push(switchyard_schemas::FieldSpec { name: "tags".into(), ..wrong.fields[3].clone() });
        let w = proto_writer(TXN, &[], &wrong).unwrap();
        let p = pool(TXN);
        let (class, msg) = w.decode(&txn(&p, full), &wrong, 42).unwrap_err();
        assert_eq!(class, ErrorClass::WrongType);
        assert_eq!(msg, "field `id`: expected integer, got Protobuf string");
        wrong.fields[0].ty = FieldType::String;
        let w = proto_writer(TXN, &[], &wrong).unwrap();
        let (_, msg) = w.decode(&txn(&p, full), &wrong, 42).unwrap_err();
        assert_eq!(msg, "field `tags`: expected string, got Protobuf repeated string");

        let strict = event(&[("id", FieldType::String, None)], true);
        let w = proto_writer(TXN, &[], &strict).unwrap();
        let (class, msg) = w.decode(&txn(&p, full), &strict, 42).unwrap_err();
        assert_eq!(class, ErrorClass::UnknownField);
        assert!(msg.contains("unknown field `amount` in message type test.Txn of writer schema id 42"), "{msg}");
        // The other message type has no unknown field, but not the pipeline's either.
        let (class, _) = w.decode(&[0], &strict, 42).unwrap_err();
        assert_eq!(class, ErrorClass::UnknownField, "test.Other's `x` is unknown too");

        assert!(proto_writer("syntax = \"proto3\"; message {", &[], &strict).is_err());
        assert!(proto_writer("syntax = \"proto3\";", &[], &strict).unwrap_err().contains("no message"));
    }

    #[derive(Debug, Clone)]
    enum Col {
        Int(i64),
        Double(f64),
        Str(String),
        Bool(bool),
    }

    fn col() -> impl Strategy<Value = (Col, bool)> {
        let c = prop_oneof![
            any::<i64>().prop_map(Col::Int),
            (-1.0e12f64..1.0e12).prop_map(Col::Double),
            "[a-zA-Z0-9 @.]{0,12}".prop_map(Col::Str),
            any::<bool>().prop_map(Col::Bool),
        ];
        (c, any::<bool>())
    }

    proptest! {
        /// Random message types (int64, double, string, bool fields, each
        /// maybe `optional` and maybe unset, numbered in shuffled order)
        /// with random values decode to the values written.
        #[test]
        fn random_messages_and_values_round_trip(cols in proptest::collection::vec(col(), 1..12), seed in any::<u64>()) {
            let n = cols.len();
            let mut numbers: Vec<usize> = (1..=n).collect();
            numbers.sort_by_key(|k| (*k as u64).wrapping_mul(seed | 1).rotate_left(17));
            let mut fields = Vec::new();
            let mut specs = Vec::new();
            for (i, (c, optional)) in cols.iter().enumerate() {
                let (pty, ty) = match c {
                    Col::Int(_) => ("int64", FieldType::Int),
                    Col::Double(_) => ("double", FieldType::Float),
                    Col::Str(_) => ("string", FieldType::String),
                    Col::Bool(_) => ("bool", FieldType::Bool),
                };
                let opt = if *optional { "optional " } else { "" };
                fields.push(format!("{opt}{pty} f{i} = {};", numbers[i]));
                specs.push((format!("f{i}"), ty));
            }
            let text = format!("syntax = \"proto3\"; message R {{ {} }}", fields.join(" "));
            let listed: Vec<(&str, FieldType, Option<&str>)> = specs.iter().rev().map(|(n, t)| (n.as_str(), *t, None)).collect();
            let ev = event(&listed, true);
            let w = proto_writer(&text, &[], &ev).unwrap();
            let desc = w.messages[&vec![0]].desc.clone();
            let mut m = DynamicMessage::new(desc);
            let mut want = Vec::new();
            for (i, (c, optional)) in cols.iter().enumerate() {
                // An optional field whose value is its type's default is left unset: null.
                let (v, w, default) = match c {
                    Col::Int(x) => (Proto::I64(*x), Value::Int(*x), *x == 0),
                    Col::Double(x) => (Proto::F64(*x), Value::Float(*x), *x == 0.0),
                    Col::Str(x) => (Proto::String(x.clone()), Value::Str(x.clone()), x.is_empty()),
                    Col::Bool(x) => (Proto::Bool(*x), Value::Bool(*x), !*x),
                };
                if *optional && default {
                    want.push(Value::Null);
                } else {
                    m.set_field_by_name(&format!("f{i}"), v);
                    want.push(w);
                }
            }
            let mut bytes = vec![0];
            bytes.extend(m.encode_to_vec());
            let got = w.decode(&bytes, &ev, 3).unwrap();
            want.reverse();
            prop_assert_eq!(got, want);
        }

        /// Any bytes: values or a DLQ reason, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ev = txn_event(true);
            let w = proto_writer(TXN, &[], &ev).unwrap();
            let _ = w.decode(&bytes, &ev, 1);
        }
    }
}
