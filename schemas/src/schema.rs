use serde::{Deserialize, Serialize};

use crate::{Problems, Sensitivity};

/// The manifest's description of an input event: its fields, their types,
/// which are required and how sensitive each one is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventSchema {
    /// Schema identifier, recorded in every row's lineage (`card_txn`).
    pub id: String,
    /// Schema version, recorded in every row's lineage.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Field names whose value becomes the result's key; the Kafka message key is
    /// used when this is empty or the field is absent.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Reject events that carry fields not listed here (`true`), or ignore them
    /// (`false`, the default: producers may add fields before the schema knows them).
    #[serde(default)]
    pub reject_unknown_fields: bool,
    /// The fields of the event, in any order.
    pub fields: Vec<FieldSpec>,
}

fn default_version() -> u32 {
    1
}

/// One field of an [`EventSchema`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Field name as it appears in the JSON event.
    pub name: String,
    /// Expected type; JSON values of another type are a validation error.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// An event without this field (or with `null`) goes to the DLQ.
    #[serde(default)]
    pub required: bool,
    /// Sensitivity of the field's content; an event carrying a non-null value of
    /// a tagged field is at least this sensitive.
    #[serde(default)]
    pub sensitivity: Option<Sensitivity>,
}

/// Types a schema field can have.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer (JSON numbers without fraction).
    Int,
    /// 64-bit float (any JSON number).
    Float,
    /// `true` / `false`.
    Bool,
    /// Milliseconds since the Unix epoch, or an RFC 3339 string.
    Timestamp,
}

impl EventSchema {
    /// Index of the field called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// Reports duplicate or empty field names under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.id.trim().is_empty() {
            problems.push(format!("{path}.id"), "must not be empty");
        }
        if self.fields.is_empty() {
            problems.push(format!("{path}.fields"), "a schema needs at least one field");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            if f.name.trim().is_empty() {
                problems.push(format!("{path}.fields[{i}].name"), "must not be empty");
            } else if !seen.insert(f.name.as_str()) {
                problems.push(format!("{path}.fields[{i}].name"), format!("duplicate field `{}`", f.name));
            }
        }
        if let Some(k) = &self.key_field {
            if self.index_of(k).is_none() {
                problems.push(format!("{path}.key_field"), format!("no field named `{k}` in the schema"));
            }
        }
    }
}
