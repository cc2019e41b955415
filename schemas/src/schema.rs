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
    /// How record values are encoded: `json` (the default: a JSON object
    /// per record), or a Confluent Schema Registry wire format — `avro`,
    /// `protobuf`, `json_schema` — whose schema is fetched by the id in each record
    /// (`registry` is then required).
    #[serde(default)]
    pub format: InputFormat,
    /// The Schema Registry that holds the writers' schemas (formats other
    /// than `json`).
    #[serde(default)]
    pub registry: Option<RegistryConfig>,
}

/// The encoding of record values.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// A JSON object per record.
    #[default]
    Json,
    /// Confluent wire format (a zero byte, a 4-byte schema id) with an Avro
    /// binary datum written with that schema.
    Avro,
    /// Confluent wire format, then the list of message indexes naming the
    /// message type in the schema's file, then a Protobuf message.
    Protobuf,
    /// Confluent wire format with a JSON document (JSON Schema serializers).
    JsonSchema,
}

impl InputFormat {
    /// The manifest's name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Json => "json",
            InputFormat::Avro => "avro",
            InputFormat::Protobuf => "protobuf",
            InputFormat::JsonSchema => "json_schema",
        }
    }
}

/// Where the Schema Registry is and how to log in to it.
///
/// ```yaml
/// registry:
///   url: https://registry.example.com:8081
///   username: switchyard
///   password: { env: REGISTRY_PASSWORD }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible REST API (the path that
    /// `/schemas/ids/{id}` is under).
    pub url: String,
    /// User name for HTTP basic auth (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for basic auth, from an environment variable or a file.
    #[serde(default)]
    pub password: Option<crate::SecretSource>,
    /// Bearer token instead of basic auth, from an environment variable or a file.
    #[serde(default)]
    pub bearer_token: Option<crate::SecretSource>,
    /// Longest wait for one answer from the registry, in ms.
    #[serde(default = "default_registry_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_registry_timeout_ms() -> u64 {
    5000
}

impl RegistryConfig {
    /// Reports every problem under `path` (the `registry` section).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("{path}.url"), "an http:// or https:// URL");
        }
        if self.password.is_some() != self.username.is_some() {
            problems.push(path, "basic auth needs both `username` and `password`");
        }
        if self.bearer_token.is_some() && self.username.is_some() {
            problems.push(path, "either basic auth or `bearer_token`, not both");
        }
        if self.timeout_ms == 0 {
            problems.push(format!("{path}.timeout_ms"), "must be at least 1");
        }
    }
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
    /// Where the value is in the decoded record when not at the top level
    /// under `name`: a dotted path through nested records/objects
    /// (`payment.card.country`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl FieldSpec {
    /// The path of the field's value in a decoded record: `from` split at
    /// dots, or just the name.
    pub fn path(&self) -> Vec<&str> {
        match &self.from {
            Some(f) => f.split('.').collect(),
            None => vec![self.name.as_str()],
        }
    }
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
        for (i, f) in self.fields.iter().enumerate() {
            if f.from.as_deref().is_some_and(|p| p.split('.').any(|s| s.trim().is_empty())) {
                problems.push(format!("{path}.fields[{i}].from"), "a dotted path of field names, none of them empty");
            }
        }
        match (&self.registry, self.format) {
            (None, InputFormat::Json) => {}
            (Some(_), InputFormat::Json) => problems.push(
                format!("{path}.registry"),
                "is only read with a registry `format` (avro, protobuf, json_schema)",
            ),
            (None, f) => problems
                .push(format!("{path}.registry"), format!("format `{}` needs the Schema Registry's `url`", f.as_str())),
            (Some(r), _) => r.validate(&format!("{path}.registry"), problems),
        }
        if let Some(k) = &self.key_field {
            if self.index_of(k).is_none() {
                problems.push(format!("{path}.key_field"), format!("no field named `{k}` in the schema"));
            }
        }
    }
}
