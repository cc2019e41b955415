use crate::Lineage;

/// One record as it arrived from a source, before decoding: the Kafka message or
/// a line of a file, with its coordinates.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Source topic (or file name for file sources).
    pub topic: String,
    /// Kafka partition (0 for files).
    pub partition: i32,
    /// Kafka offset (line number for files).
    pub offset: i64,
    /// Kafka message timestamp in ms since the epoch, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub payload: Option<Vec<u8>>,
    /// Message headers whose values are valid UTF-8.
    pub headers: Vec<(String, String)>,
    /// When switchyard received the record, in µs since the epoch.
    pub received_us: i64,
    /// Why the source could not read this record as a row (a CSV line with
    /// the wrong number of fields, say); the record goes to the DLQ with
    /// this message and its raw bytes as the payload.
    pub error: Option<String>,
}

impl RawRecord {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A decoded, validated value of one schema field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent or JSON `null`.
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Text.
    Str(String),
}

impl Value {
    /// The value as text, when it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A display form used for rule matching on attributes (`true`, `42`, `web`).
    pub fn to_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
        }
    }
}

/// A decoded event: one [`Value`] per schema field (same order as
/// [`crate::EventSchema::fields`]), its key, the source headers and its lineage.
#[derive(Debug, Clone)]
pub struct Event {
    /// Values in schema field order; absent fields are [`Value::Null`].
    pub values: Vec<Value>,
    /// Result key: the schema's key field, else the Kafka key, else the lineage id.
    pub key: String,
    /// UTF-8 headers of the source record (latency tier, trace context, …).
    pub headers: Vec<(String, String)>,
    /// Lineage, filled in as the event moves through the stages.
    pub lineage: Lineage,
}

impl Event {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}
