//! Records in the Confluent Schema Registry wire format: a zero byte, the
//! writer's schema id (4 bytes, big-endian), then the value encoded with
//! that schema. Each id's schema is fetched once from the registry and
//! cached; [`Registry::resolve`] fetches a chunk's new ids before the chunk
//! is decoded, so decoding itself never waits on the network.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use apache_avro::schema::{ResolvedSchema, Schema as AvroSchema};
use apache_avro::types::Value as Avro;
use serde::Deserialize;
use switchyard_schemas::{ErrorClass, EventSchema, FieldType, InputFormat, RawRecord, RegistryConfig, Secret, Value};

use crate::{Error, Result};

/// The first byte of every framed value.
const MAGIC: u8 = 0;
/// Magic byte and schema id.
const HEADER: usize = 5;
/// Longest pause between two tries of an unreachable registry.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most one Avro value in a record may allocate.
const MAX_ALLOCATION: usize = 64 << 20;
/// How deep schema references may nest.
const MAX_REFERENCE_DEPTH: usize = 8;

/// The schema id of a framed value, and the encoded value after the header;
/// `None` when `payload` is not framed.
pub fn frame(payload: &[u8]) -> Option<(u32, &[u8])> {
    if payload.len() < HEADER || payload[0] != MAGIC {
        return None;
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Some((id, &payload[HEADER..]))
}

enum Auth {
    None,
    Basic(String, Secret),
    Bearer(Secret),
}

/// What the registry said about one schema id.
#[derive(Debug)]
pub enum Writer {
    /// An Avro schema, with where each pipeline field is in its records.
    Avro(Box<AvroWriter>),
    /// A JSON Schema: values are JSON documents, mapped as `json` ones are.
    Json {
        /// The subject it is registered under, where the registry says.
        subject: Option<String>,
    },
    /// The id is not in the registry, or its schema cannot be read as the
    /// pipeline's format: records that name it go to the DLQ.
    Missing(String),
}

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

/// The writer schemas of a pipeline's records, by id.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    format: InputFormat,
    event: Arc<EventSchema>,
    cache: RwLock<HashMap<u32, Arc<Writer>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.base).field("format", &self.format).finish()
    }
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    subject: String,
    version: i64,
}

#[derive(Deserialize)]
struct SubjectVersion {
    subject: String,
}

/// Why a request did not give a schema.
enum Failure {
    /// The registry answered that it does not have it (404): permanent.
    NotFound(String),
    /// No usable answer (unreachable, 5xx, refused login): try again.
    Unavailable(String),
}

impl Registry {
    /// A client for the registry of `event` (its `format` and `registry`);
    /// secrets are read now, relative to `base`.
    pub fn new(event: Arc<EventSchema>, base: &Path) -> Result<Self> {
        let cfg: &RegistryConfig = event
            .registry
            .as_ref()
            .ok_or_else(|| Error::Registry(format!("format `{}` needs `schema.registry`", event.format.as_str())))?;
        let secret = |s: &switchyard_schemas::SecretSource, what: &str| {
            s.load(base).map_err(|e| Error::Registry(format!("schema.registry.{what}: {e}")))
        };
        let auth = match (&cfg.username, &cfg.password, &cfg.bearer_token) {
            (Some(u), Some(p), _) => Auth::Basic(u.clone(), secret(p, "password")?),
            (_, _, Some(t)) => Auth::Bearer(secret(t, "bearer_token")?),
            _ => Auth::None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .build()
            .map_err(|e| Error::Registry(format!("schema registry client: {e}")))?;
        Ok(Self {
            http,
            base: cfg.url.trim_end_matches('/').to_string(),
            auth,
            format: event.format,
            event: event.clone(),
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{}{path}", self.base)).header("Accept", "application/json");
        match &self.auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
        }
    }

    /// Asks the registry for its subjects: fails at start-up, naming the
    /// URL and the cause, when it cannot be reached or refuses the login.
    pub async fn check(&self) -> Result<()> {
        let answer = self.get("/subjects").send().await.map_err(|e| {
            Error::Registry(format!("the Schema Registry at {} cannot be reached: {}", self.base, chain(&e)))
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let hint = match status.as_u16() {
            401 | 403 => " (check `schema.registry` username/password or bearer_token)",
            404 => " (is the URL the base of the Confluent-compatible API?)",
            _ => "",
        };
        Err(Error::Registry(format!("the Schema Registry at {} answered {status}{hint}", self.base)))
    }

    /// The writer of schema `id`, when fetched already.
    pub fn writer(&self, id: u32) -> Option<Arc<Writer>> {
        self.cache.read().ok()?.get(&id).cloned()
    }

    /// Fetches the schemas of `chunk`'s framed records that are not cached
    /// yet. An unknown id (404) or an unreadable schema is cached as
    /// [`Writer::Missing`] (its records go to the DLQ). While the registry
    /// cannot answer, this keeps trying with backoff, saying so: the
    /// records wait (and the consumer pauses behind them) rather than go to
    /// the DLQ for a fault that is not theirs.
    pub async fn resolve(&self, chunk: &[RawRecord]) {
        let mut wanted: Vec<u32> = Vec::new();
        {
            let Ok(cache) = self.cache.read() else { return };
            let mut seen = HashSet::new();
            for r in chunk {
                if let Some((id, _)) = r.payload.as_deref().and_then(frame) {
                    if !cache.contains_key(&id) && seen.insert(id) {
                        wanted.push(id);
                    }
                }
            }
        }
        for id in wanted {
            let writer = self.fetch_until_answered(id).await;
            if let Writer::Missing(why) = &writer {
                tracing::warn!(schema_id = id, "{why}; its records go to the DLQ");
            } else {
                tracing::info!(schema_id = id, registry = %self.base, "writer schema fetched");
            }
            if let Ok(mut cache) = self.cache.write() {
                cache.insert(id, Arc::new(writer));
            }
        }
    }

    async fn fetch_until_answered(&self, id: u32) -> Writer {
        let mut backoff = Duration::from_millis(200);
        let mut tries = 0u32;
        loop {
            match self.fetch(id).await {
                Ok(w) => return w,
                Err(Failure::NotFound(why)) => return Writer::Missing(why),
                Err(Failure::Unavailable(why)) => {
                    tries += 1;
                    tracing::warn!(
                        schema_id = id,
                        tries,
                        retry_in_ms = backoff.as_millis() as u64,
                        "{why}; the records that need this schema wait"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn answer<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> Result<T, Failure> {
        let resp = self.get(path).send().await.map_err(|e| {
            Failure::Unavailable(format!("the Schema Registry at {} cannot be reached: {}", self.base, chain(&e)))
        })?;
        let status = resp.status();
        if status.as_u16() == 404 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::NotFound(format!(
                "{what} is not in the Schema Registry at {} (404: {})",
                self.base,
                body.chars().take(200).collect::<String>()
            )));
        }
        if !status.is_success() {
            return Err(Failure::Unavailable(format!(
                "the Schema Registry at {} answered {status} for {what}",
                self.base
            )));
        }
        let unreadable = |e: &dyn std::fmt::Display| {
            Failure::Unavailable(format!(
                "the Schema Registry at {} sent an unreadable answer for {what}: {e}",
                self.base
            ))
        };
        let body = resp.bytes().await.map_err(|e| unreadable(&e))?;
        serde_json::from_slice(&body).map_err(|e| unreadable(&e))
    }

    async fn fetch(&self, id: u32) -> Result<Writer, Failure> {
        let answer: SchemaAnswer = self.answer(&format!("/schemas/ids/{id}"), &format!("schema id {id}")).await?;
        // Best effort: the subject only makes DLQ messages clearer.
        let subject = self
            .answer::<Vec<SubjectVersion>>(&format!("/schemas/ids/{id}/versions"), "its subjects")
            .await
            .ok()
            .and_then(|v| v.into_iter().next().map(|s| s.subject));
        let kind = answer.schema_type.as_deref().unwrap_or("AVRO").to_ascii_uppercase();
        let wanted = match self.format {
            InputFormat::Avro => "AVRO",
            InputFormat::JsonSchema => "JSON",
            InputFormat::Json => return Ok(Writer::Missing("the pipeline does not read a registry format".into())),
        };
        if kind != wanted {
            return Ok(Writer::Missing(format!(
                "schema id {id}{} is a {kind} schema, and the pipeline reads `{}`",
                subject_note(subject.as_deref()),
                self.format.as_str()
            )));
        }
        if self.format == InputFormat::JsonSchema {
            return Ok(Writer::Json { subject });
        }
        let mut references = Vec::new();
        self.referenced(&answer.references, 0, &mut references).await?;
        match avro_writer(&answer.schema, &references, &self.event) {
            Ok(mut w) => {
                w.subject = subject;
                Ok(Writer::Avro(Box::new(w)))
            }
            Err(e) => Ok(Writer::Missing(format!(
                "schema id {id}{} is not a readable Avro record schema: {e}",
                subject_note(subject.as_deref())
            ))),
        }
    }

    /// The schema texts of `refs` and of what they reference in turn,
    /// dependencies first.
    async fn referenced(&self, refs: &[Reference], depth: usize, out: &mut Vec<String>) -> Result<(), Failure> {
        if depth > MAX_REFERENCE_DEPTH && !refs.is_empty() {
            return Err(Failure::NotFound("schema references nest too deep".into()));
        }
        for r in refs {
            let version = if r.version < 0 { "latest".to_string() } else { r.version.to_string() };
            let path = format!("/subjects/{}/versions/{version}", urlencode(&r.subject));
            let what = format!("referenced schema {} version {version}", r.subject);
            let answer: SchemaAnswer = self.answer(&path, &what).await?;
            Box::pin(self.referenced(&answer.references, depth + 1, out)).await?;
            if !out.contains(&answer.schema) {
                out.push(answer.schema);
            }
        }
        Ok(())
    }
}

/// ` (subject S)` where the subject is known.
pub fn subject_note(subject: Option<&str>) -> String {
    subject.map(|s| format!(" (subject {s})")).unwrap_or_default()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An error with its causes, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Parses an Avro writer schema (with the schemas it references) and finds
/// each of `event`'s fields in it.
pub fn avro_writer(text: &str, references: &[String], event: &EventSchema) -> Result<AvroWriter, String> {
    // A malformed datum may claim a string or array of any length: allocate
    // no more than a record can hold (Kafka values are far smaller).
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
    let (schema, references) = if references.is_empty() {
        (AvroSchema::parse_str(text).map_err(|e| e.to_string())?, Vec::new())
    } else {
        AvroSchema::parse_str_with_list(text, references).map_err(|e| e.to_string())?
    };
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
    let known: HashSet<&str> = event.fields.iter().map(|f| f.path()[0]).collect();
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

/// A record that failed to decode: its DLQ class (`undecodable`,
/// `unknown_field`, `wrong_type`) and message.
pub type DecodeFailure = (ErrorClass, String);

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

/// `f` as an integer when it is one: 3.0 is an integer written as a float
/// by many producers; 3.5 is not, nor is a float too large to be exact.
pub(crate) fn whole(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() <= 9.0e15).then_some(f as i64)
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
pub(crate) fn rfc3339_ms(s: &str) -> Option<i64> {
    Some(chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_millis())
}

/// A decimal's value: its unscaled big-endian two's-complement bytes over
/// 10^scale.
fn decimal(d: &apache_avro::Decimal, scale: usize) -> Option<f64> {
    let bytes: Vec<u8> = d.try_into().ok()?;
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut be = [fill; 16];
    be[16 - bytes.len()..].copy_from_slice(&bytes);
    Some(i128::from_be_bytes(be) as f64 / 10f64.powi(i32::try_from(scale).ok()?))
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
impl Registry {
    /// Puts `writer` in the cache under `id`, as a fetch would.
    pub(crate) fn insert(&self, id: u32, writer: Writer) {
        self.cache.write().unwrap().insert(id, Arc::new(writer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Record;
    use proptest::prelude::*;
    use switchyard_schemas::FieldSpec;

    fn event(fields: &[(&str, FieldType, Option<&str>)], reject_unknown: bool) -> EventSchema {
        EventSchema {
            id: "t".into(),
            version: 1,
            key_field: None,
            reject_unknown_fields: reject_unknown,
            fields: fields
                .iter()
                .map(|(name, ty, from)| FieldSpec {
                    name: name.to_string(),
                    ty: *ty,
                    required: false,
                    sensitivity: None,
                    from: from.map(str::to_string),
                })
                .collect(),
            format: InputFormat::Avro,
            registry: None,
        }
    }

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
    fn frame_reads_the_magic_byte_and_the_big_endian_id() {
        assert_eq!(frame(&[0, 0, 0, 1, 2, 9, 9]), Some((258, &[9u8, 9][..])));
        assert_eq!(frame(&[1, 0, 0, 1, 2, 9]), None, "another magic byte");
        assert_eq!(frame(&[0, 0, 0, 1]), None, "too short for an id");
        assert_eq!(frame(b"{\"a\":1}"), None, "plain JSON");
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
