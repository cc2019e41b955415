//! Records in the Confluent Schema Registry wire format: a zero byte, the
//! writer's schema id (4 bytes, big-endian), then the value encoded with
//! that schema. Each id's schema is fetched once from the registry and
//! cached; [`Registry::resolve`] fetches a chunk's new ids before the chunk
//! is decoded, so decoding itself never waits on the network.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;
use switchyard_schemas::{EventSchema, InputFormat, RawRecord, RegistryConfig, Secret};

use crate::{Error, Result};

mod avro;
mod protobuf;
mod values;

pub use avro::{avro_writer, writer_of, AvroWriter};
pub use protobuf::{proto_writer, ProtoWriter};
pub(crate) use values::{rfc3339_ms, top_names, type_name, whole};
pub use values::{subject_note, DecodeFailure};

/// The first byte of every framed value.
const MAGIC: u8 = 0;
/// Magic byte and schema id.
const HEADER: usize = 5;
/// Longest pause between two tries of an unreachable registry.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
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
    /// A Protobuf file, with where each pipeline field is in each of its
    /// message types.
    Proto(Box<ProtoWriter>),
    /// A JSON Schema: values are JSON documents, mapped as `json` ones are.
    Json {
        /// The subject it is registered under, where the registry says.
        subject: Option<String>,
    },
    /// The id is not in the registry, or its schema cannot be read as the
    /// pipeline's format: records that name it go to the DLQ.
    Missing(String),
}

/// A Schema Registry's REST API: its base URL and credentials.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

/// The writer schemas of a pipeline's records, by id.
pub struct Registry {
    client: Client,
    format: InputFormat,
    event: Arc<EventSchema>,
    cache: RwLock<HashMap<u32, Arc<Writer>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.client.base).field("format", &self.format).finish()
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
    /// The name the schema imports it under (Protobuf's import path).
    #[serde(default)]
    name: String,
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

impl Client {
    /// A client for the registry `cfg` (the manifest section at `section`,
    /// for messages); secrets are read now, relative to `base`.
    pub fn new(cfg: &RegistryConfig, base: &Path, section: &str) -> Result<Self> {
        let secret = |s: &switchyard_schemas::SecretSource, what: &str| {
            s.load(base).map_err(|e| Error::Registry(format!("{section}.{what}: {e}")))
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
        Ok(Self { http, base: cfg.url.trim_end_matches('/').to_string(), auth })
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn with_auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.with_auth(self.http.get(format!("{}{path}", self.base)).header("Accept", "application/json"))
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
        Err(Error::Registry(format!("the Schema Registry at {} answered {status}{}", self.base, hint(status))))
    }

    /// Registers `schema` (an Avro schema's text) under `subject`, or finds
    /// it registered already; its id. A schema the subject's compatibility
    /// rule refuses (409) is an error quoting the registry's answer.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let req = self
            .http
            .post(format!("{}/subjects/{}/versions", self.base, urlencode(subject)))
            .header("Accept", "application/json")
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
        let what = format!("registering the result schema under subject `{subject}` at {}", self.base);
        let answer = self
            .with_auth(req)
            .send()
            .await
            .map_err(|e| Error::Registry(format!("{what}: the registry cannot be reached: {}", chain(&e))))?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            let said: String = text.chars().take(300).collect();
            return Err(Error::Registry(format!("{what}: the registry answered {status}{}: {said}", hint(status))));
        }
        serde_json::from_str::<Registered>(&text)
            .map(|r| r.id)
            .map_err(|e| Error::Registry(format!("{what}: an unreadable answer: {e}")))
    }
}

/// What to check after an HTTP status, for messages.
fn hint(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => " (check the registry's username/password or bearer_token)",
        404 => " (is the URL the base of the Confluent-compatible API?)",
        409 => " (the subject's compatibility rule refuses this schema)",
        _ => "",
    }
}

impl Registry {
    /// A client for the registry of `event` (its `format` and `registry`);
    /// secrets are read now, relative to `base`.
    pub fn new(event: Arc<EventSchema>, base: &Path) -> Result<Self> {
        let cfg: &RegistryConfig = event
            .registry
            .as_ref()
            .ok_or_else(|| Error::Registry(format!("format `{}` needs `schema.registry`", event.format.as_str())))?;
        Ok(Self {
            client: Client::new(cfg, base, "schema.registry")?,
            format: event.format,
            event: event.clone(),
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// Asks the registry for its subjects (see [`Client::check`]).
    pub async fn check(&self) -> Result<()> {
        self.client.check().await
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
                tracing::info!(schema_id = id, registry = %self.client.base, "writer schema fetched");
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
        let resp = self.client.get(path).send().await.map_err(|e| {
            Failure::Unavailable(format!(
                "the Schema Registry at {} cannot be reached: {}",
                self.client.base,
                chain(&e)
            ))
        })?;
        let status = resp.status();
        if status.as_u16() == 404 {
            let body = resp.text().await.unwrap_or_default();
            return Err(Failure::NotFound(format!(
                "{what} is not in the Schema Registry at {} (404: {})",
                self.client.base,
                body.chars().take(200).collect::<String>()
            )));
        }
        if !status.is_success() {
            return Err(Failure::Unavailable(format!(
                "the Schema Registry at {} answered {status} for {what}",
                self.client.base
            )));
        }
        let unreadable = |e: &dyn std::fmt::Display| {
            Failure::Unavailable(format!(
                "the Schema Registry at {} sent an unreadable answer for {what}: {e}",
                self.client.base
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
            InputFormat::Protobuf => "PROTOBUF",
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
        let unreadable = |what: &str, e: String| {
            Writer::Missing(format!("schema id {id}{} is not a readable {what}: {e}", subject_note(subject.as_deref())))
        };
        if self.format == InputFormat::Protobuf {
            return Ok(match proto_writer(&answer.schema, &references, &self.event) {
                Ok(mut w) => {
                    w.subject = subject;
                    Writer::Proto(Box::new(w))
                }
                Err(e) => unreadable("Protobuf schema", e),
            });
        }
        let texts: Vec<String> = references.into_iter().map(|(_, text)| text).collect();
        Ok(match avro_writer(&answer.schema, &texts, &self.event) {
            Ok(mut w) => {
                w.subject = subject;
                Writer::Avro(Box::new(w))
            }
            Err(e) => unreadable("Avro record schema", e),
        })
    }

    /// The names and schema texts of `refs` and of what they reference in
    /// turn, dependencies first.
    async fn referenced(
        &self,
        refs: &[Reference],
        depth: usize,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), Failure> {
        if depth > MAX_REFERENCE_DEPTH && !refs.is_empty() {
            return Err(Failure::NotFound("schema references nest too deep".into()));
        }
        for r in refs {
            let version = if r.version < 0 { "latest".to_string() } else { r.version.to_string() };
            let path = format!("/subjects/{}/versions/{version}", urlencode(&r.subject));
            let what = format!("referenced schema {} version {version}", r.subject);
            let answer: SchemaAnswer = self.answer(&path, &what).await?;
            Box::pin(self.referenced(&answer.references, depth + 1, out)).await?;
            if !out.iter().any(|(name, text)| *name == r.name && *text == answer.schema) {
                out.push((r.name.clone(), answer.schema));
            }
        }
        Ok(())
    }
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

    #[test]
    fn frame_reads_the_magic_byte_and_the_big_endian_id() {
        assert_eq!(frame(&[0, 0, 0, 1, 2, 9, 9]), Some((258, &[9u8, 9][..])));
        assert_eq!(frame(&[1, 0, 0, 1, 2, 9]), None, "another magic byte");
        assert_eq!(frame(&[0, 0, 0, 1]), None, "too short for an id");
        assert_eq!(frame(b"{\"a\":1}"), None, "plain JSON");
    }
}
