//! OpenTelemetry traces over OTLP, configured by the standard `OTEL_*`
//! environment variables and off when no endpoint is set.
//!
//! Each input record's W3C `traceparent`/`tracestate` is the parent of its
//! `process <topic>` span (span kind consumer, OpenTelemetry's messaging
//! conventions for Kafka); a record without one starts a trace of its own.
//! Each chunk gets a `process <topic>` batch span linking its records'
//! contexts, with `prepare`, `inference` and `sink_write` children. The
//! context of a record's span goes into its result (and DLQ record) as
//! `traceparent`, so the trace goes on downstream; cloud workers add a
//! client span per HTTP attempt and send its context to the endpoint.
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | where spans go (OTLP over HTTP, protobuf); tracing is off when neither is set |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `…_TRACES_HEADERS` | extra request headers (`key=value,…`), e.g. an API key |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `…_TRACES_TIMEOUT` | export timeout in ms |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource (service name `switchyard` when unset) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | the sampler (default `parentbased_always_on`) |
//! | `OTEL_BSP_*` | the batch span processor (queue size, delay, batch size) |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | tracing off |

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{global, Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use switchyard_schemas::{headers, RawRecord};

/// The installed tracer provider (flushed at the end of a run).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Whether spans are made at all: false costs nothing on the hot path.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The instrumentation scope of switchyard's spans.
pub const SCOPE: &str = "switchyard";

/// Whether tracing is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Starts exporting spans when the environment names an OTLP endpoint;
/// returns whether it did. A protocol or exporter switchyard does not
/// speak is an error naming the variable.
pub fn init_from_env() -> anyhow::Result<bool> {
    if PROVIDER.get().is_some() {
        return Ok(true);
    }
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match env("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => anyhow::bail!("OTEL_TRACES_EXPORTER={other}: switchyard exports traces over OTLP only (`otlp`)"),
    }
    if env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")).is_none() {
        return Ok(false);
    }
    for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(p) = env(var).filter(|p| p != "http/protobuf") {
            anyhow::bail!(
                "{var}={p}: switchyard sends OTLP over HTTP with protobuf (`http/protobuf`); point it at the \
                 collector's HTTP port (4318)"
            );
        }
    }
    use opentelemetry_otlp::WithHttpConfig as _;
    let client = OtlpHttp { client: reqwest::Client::new(), runtime: tokio::runtime::Handle::current() };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .build()
        .context("configuring the OTLP trace exporter from OTEL_EXPORTER_OTLP_*")?;
    let mut resource = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    if !named {
        resource = resource.with_service_name(SCOPE);
    }
    let resource = resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    tracing::info!("exporting traces over OTLP (OTEL_EXPORTER_OTLP_* settings)");
    Ok(true)
}

/// Sends the spans still queued (end of a run); waits at most a few seconds.
pub async fn flush() {
    let Some(p) = PROVIDER.get().cloned() else { return };
    let done = tokio::task::spawn_blocking(move || p.force_flush());
    match tokio::time::timeout(Duration::from_secs(10), done).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing traces failed"),
        _ => tracing::warn!("flushing traces did not finish within 10 s"),
    }
}

/// The OTLP exporter's HTTP client: the process's reqwest (one TLS stack),
/// run on the Tokio runtime whichever thread the batch processor exports from.
#[derive(Debug)]
struct OtlpHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let resp =
                client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            let mut out = opentelemetry_http::Response::builder().status(status).body(bytes)?;
            *out.headers_mut() = headers;
            Ok::<_, opentelemetry_http::HttpError>(out)
        };
        self.runtime.spawn(call).await?
    }
}

/// A record's headers as the propagator reads them.
struct RecordHeaders<'a>(&'a RawRecord);

impl Extractor for RecordHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The context a record carries (`traceparent`, `tracestate`); empty when
/// it carries none.
fn record_context(raw: &RawRecord) -> Context {
    if raw.header(headers::TRACEPARENT).is_none() {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&RecordHeaders(raw))
}

fn time_of(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us.max(0) as u64)
}

/// `traceparent` of a sampled span context (W3C format).
pub fn traceparent(cx: &SpanContext) -> String {
    switchyard_schemas::traceparent(cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8())
}

/// The spans of one chunk: one per record (`process <topic>`, child of
/// the record's context) and the batch span linking them.
pub struct ChunkSpans {
    batch: global::BoxedSpan,
    batch_cx: Context,
    /// Per record of the chunk, in chunk order.
    records: Vec<global::BoxedSpan>,
    topic: String,
}

/// Messaging attributes of a Kafka topic read by `group`.
fn messaging(topic: &str, group: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.destination.name", topic.to_string()),
        KeyValue::new("messaging.consumer.group.name", group.to_string()),
    ]
}

impl ChunkSpans {
    /// Starts the spans of `chunk` (read by consumer group `group`).
    pub fn start(chunk: &[RawRecord], group: &str) -> Self {
        let tracer = global::tracer(SCOPE);
        let topic = chunk.first().map(|r| r.topic.clone()).unwrap_or_default();
        let name = format!("process {topic}");
        let mut records = Vec::with_capacity(chunk.len());
        let mut links = Vec::new();
        for raw in chunk {
            let parent = record_context(raw);
            if parent.span().span_context().is_sampled() {
                links.push(Link::with_context(parent.span().span_context().clone()));
            }
            let mut span = tracer
                .span_builder(name.clone())
                .with_kind(SpanKind::Consumer)
                .with_start_time(time_of(raw.received_us))
                .start_with_context(&tracer, &parent);
            // Attributes only for spans that are kept: most are not, when
            // sampling.
            if span.is_recording() {
                let mut attributes = messaging(&raw.topic, group);
                attributes.push(KeyValue::new("messaging.destination.partition.id", raw.partition.to_string()));
                attributes.push(KeyValue::new("messaging.kafka.offset", raw.offset));
                span.set_attributes(attributes);
            }
            records.push(span);
        }
        let mut attributes = messaging(&topic, group);
        attributes.push(KeyValue::new("messaging.batch.message_count", chunk.len() as i64));
        let started = chunk.iter().map(|r| r.received_us).min().unwrap_or(0);
        let batch = tracer
            .span_builder(name)
            .with_kind(SpanKind::Consumer)
            .with_start_time(time_of(started))
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&tracer, &Context::new());
        let batch_cx = Context::new().with_remote_span_context(batch.span_context().clone());
        Self { batch, batch_cx, records, topic }
    }

    /// The context of record `i`'s span when it is sampled (for cloud
    /// requests to link to, and for the result's `traceparent`).
    pub fn record(&self, i: usize) -> Option<SpanContext> {
        let cx = self.records.get(i)?.span_context();
        cx.is_sampled().then(|| cx.clone())
    }

    /// A finished stage of the whole chunk, as a child of the batch span.
    pub fn stage(&self, name: &'static str, start: SystemTime, end: SystemTime) {
        if !self.batch.span_context().is_sampled() {
            return;
        }
        let tracer = global::tracer(SCOPE);
        let mut span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([KeyValue::new("messaging.destination.name", self.topic.clone())])
            .start_with_context(&tracer, &self.batch_cx);
        span.end_with_timestamp(end);
    }

    /// Ends record `i`'s span as served: route, rule, model and fallback
    /// from its lineage.
    pub fn served(&mut self, i: usize, lineage: &switchyard_schemas::Lineage) {
        let Some(span) = self.records.get_mut(i) else { return };
        if span.is_recording() {
            let model = format!("{}/{}", lineage.model.name, lineage.model.version);
            span.set_attributes([
                KeyValue::new("switchyard.route", lineage.route.route.clone()),
                KeyValue::new("switchyard.rule", lineage.route.rule_id.clone()),
                KeyValue::new("switchyard.model", model),
                KeyValue::new("switchyard.fallback", lineage.fallback),
            ]);
        }
        span.end();
    }

    /// Ends record `i`'s span as sent to the DLQ, with the error class.
    pub fn failed(&mut self, i: usize, stage: &str, class: &str, message: &str) {
        let Some(span) = self.records.get_mut(i) else { return };
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("error.type", class.to_string()),
                KeyValue::new("switchyard.stage", stage.to_string()),
            ]);
            span.set_status(Status::error(message.to_string()));
        }
        span.end();
    }

    /// Ends the spans of records neither served nor refused (replays).
    pub fn finish(mut self) {
        for s in &mut self.records {
            s.end();
        }
        self.batch.end();
    }
}

/// Index of each record of a chunk by its coordinates (DLQ records name
/// their source, not their position).
pub fn positions(chunk: &[RawRecord]) -> HashMap<(&str, i32, i64), usize> {
    chunk.iter().enumerate().map(|(i, r)| ((r.topic.as_str(), r.partition, r.offset), i)).collect()
}
