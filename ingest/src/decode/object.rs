//! A JSON object read straight into a schema's values, in one pass over the
//! bytes: no intermediate `serde_json::Value` tree, no copy of a key, one copy
//! of a string value (into the event). What the schema does not accept is
//! noted and reading goes on, so that bytes that are not JSON at all are
//! reported as such even when a field before the fault has the wrong type.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;
use switchyard_schemas::{FieldType, Value};

use super::Decoder;
use crate::registry;

/// The kind of a JSON value, as messages name it.
pub(super) type Kind = &'static str;

/// The first thing the schema does not accept, in the document's order.
pub(super) enum Flaw {
    /// The value is not an object.
    NotAnObject(Kind),
    /// A field the schema does not list (with `reject_unknown_fields`).
    Unknown(String),
    /// Field `.0` holds a JSON value of kind `.1`, which its type does not take.
    Wrong(usize, Kind),
}

/// Reads one JSON value, which should be an object, into `values` (one per
/// schema field); the objects a nested field's path starts at go to `tops`.
pub(super) struct ObjectSeed<'a> {
    pub(super) dec: &'a Decoder,
    pub(super) values: &'a mut [Value],
    pub(super) tops: &'a mut Vec<(String, Json)>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Option<Flaw>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The kind of any JSON value but an object, for `ObjectSeed`'s visitor.
macro_rules! not_an_object {
    ($($method:ident($($ty:ty)?) => $kind:literal),* $(,)?) => {$(
        fn $method<E: de::Error>(self $(, _: $ty)?) -> Result<Self::Value, E> {
            Ok(Some(Flaw::NotAnObject($kind)))
        }
    )*};
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Option<Flaw>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    not_an_object! {
        visit_unit() => "null",
        visit_bool(bool) => "boolean",
        visit_i64(i64) => "integer",
        visit_u64(u64) => "integer",
        visit_f64(f64) => "number",
        visit_str(&str) => "string",
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(Flaw::NotAnObject("array")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dec = self.dec;
        let mut flaw = None;
        while let Some(name) = map.next_key_seed(KeySeed)? {
            let field = dec.index.get(name.as_ref()).copied();
            // The object a nested field's path starts at (`from: a.b`) is
            // kept whole; it may be a field of its own as well.
            if dec.nested.iter().any(|(_, path)| path[0] == name) {
                let v: Json = map.next_value()?;
                if let Some(i) = field {
                    match super::convert(&v, dec.schema.fields[i].ty) {
                        Some(value) => self.values[i] = value,
                        None => {
                            flaw.get_or_insert(Flaw::Wrong(i, super::json_kind(&v)));
                        }
                    }
                }
                self.tops.retain(|(top, _)| *top != name);
                self.tops.push((name.into_owned(), v));
            } else if let Some(i) = field {
                match map.next_value_seed(FieldSeed(dec.schema.fields[i].ty))? {
                    Ok(v) => self.values[i] = v,
                    Err(kind) => {
                        flaw.get_or_insert(Flaw::Wrong(i, kind));
                    }
                }
            } else {
                map.next_value::<IgnoredAny>()?;
                if dec.schema.reject_unknown_fields && !dec.known.contains(name.as_ref()) {
                    flaw.get_or_insert(Flaw::Unknown(name.into_owned()));
                }
            }
        }
        Ok(flaw)
    }
}

/// A key, borrowed from the input unless it holds escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// One field's JSON value as the schema's type wants it, or the kind of JSON
/// it was when the type does not take it. `null` is null for every type.
struct FieldSeed(FieldType);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Result<Value, Kind>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Result<Value, Kind>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Value::Null))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(match self.0 {
            FieldType::Bool => Ok(Value::Bool(b)),
            _ => Err("boolean"),
        })
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            FieldType::Int | FieldType::Timestamp => Ok(Value::Int(i)),
            FieldType::Float => Ok(Value::Float(i as f64)),
            _ => Err("integer"),
        })
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            FieldType::Int | FieldType::Timestamp => i64::try_from(u).map(Value::Int).map_err(|_| "integer"),
            FieldType::Float => Ok(Value::Float(u as f64)),
            _ => Err("integer"),
        })
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Self::Value, E> {
        Ok(match self.0 {
            FieldType::Float => Ok(Value::Float(f)),
            FieldType::Int | FieldType::Timestamp => registry::whole(f).map(Value::Int).ok_or("number"),
            _ => Err("number"),
        })
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(match self.0 {
            FieldType::String => Ok(Value::Str(s.to_owned())),
            FieldType::Timestamp => registry::rfc3339_ms(s).map(Value::Int).ok_or("string"),
            _ => Err("string"),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err("array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err("object"))
    }
}
