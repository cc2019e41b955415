//! What the registry formats share: the pipeline's view of a decoded value
//! (whole numbers, RFC 3339 timestamps, type names for messages) and the
//! shape of a decoding failure.

use std::collections::HashSet;

use switchyard_schemas::{ErrorClass, EventSchema, FieldType};

/// A record that failed to decode: its DLQ class (`undecodable`,
/// `unknown_field`, `wrong_type`) and message.
pub type DecodeFailure = (ErrorClass, String);

/// ` (subject S)` where the subject is known.
pub fn subject_note(subject: Option<&str>) -> String {
    subject.map(|s| format!(" (subject {s})")).unwrap_or_default()
}

/// `f` as an integer when it is one: 3.0 is an integer written as a float
/// by many producers; 3.5 is not, nor is a float too large to be exact.
pub(crate) fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() <= 9.0e15).then_some(f as i64)
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub(crate) fn rfc3339_ms(s: &str) -> Option<i64> {
    Some(chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis())
}

/// The pipeline's name of a field type, for messages.
pub(crate) fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Int => "integer",
        FieldType::Float => "number",
        FieldType::Bool => "boolean",
        FieldType::Timestamp => "timestamp (epoch ms or RFC 3339)",
    }
}

/// A decimal's value from its unscaled big-endian two's-complement bytes
/// (at most 16) over 10^scale.
pub(crate) fn unscaled(bytes: &[u8], scale: usize) -> Option<f64> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut be = [fill; 16];
    be[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(be) as f64 / 10f64.powi(i32::try_from(scale).ok()?))
}

/// The first name of every field's path: the top-level names
/// `reject_unknown_fields` accepts.
pub(crate) fn top_names(event: &EventSchema) -> HashSet<&str> {
    event.fields.iter().map(|f| f.path()[0]).collect()
}

/// An event schema of `fields` (name, type, `from`).
#[cfg(test)]
pub(crate) fn test_event(fields: &[(&str, FieldType, Option<&str>)], reject_unknown: bool) -> EventSchema {
    EventSchema {
        id: "t".into(),
        version: 1,
        key_field: None,
        reject_unknown_fields: reject_unknown,
        fields: fields
            .iter()
            .map(|(name, ty, from)| switchyard_schemas::FieldSpec {
                name: name.to_string(),
                ty: *ty,
                required: false,
                sensitivity: None,
                from: from.map(str::to_string),
            })
            .collect(),
        format: switchyard_schemas::InputFormat::Avro,
        registry: None,
    }
}
