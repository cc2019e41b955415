//! The client span of one HTTP attempt of a cloud worker (OpenTelemetry's
//! HTTP client conventions). It is made only when one of the request's
//! events is traced: it continues the first traced event's trace, links the
//! others, and its context goes to the endpoint as `traceparent`.

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

/// A request's span, ended when dropped.
pub(crate) struct RequestSpan(Option<BoxedSpan>);

impl RequestSpan {
    /// Starts the span of attempt `attempt` (1 for the first) of `worker`
    /// to `url` for `rows` rows, when any of `contexts` is sampled.
    pub(crate) fn start<'a>(
        worker: &str,
        url: &str,
        attempt: u32,
        rows: usize,
        contexts: impl Iterator<Item = Option<&'a SpanContext>>,
    ) -> Self {
        let mut traced = contexts.flatten().filter(|c| c.is_sampled());
        let Some(parent) = traced.next() else { return Self(None) };
        let links: Vec<Link> = traced.map(|c| Link::with_context(c.clone())).collect();
        let parsed = reqwest::Url::parse(url).ok();
        let mut attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.full", url.to_string()),
            KeyValue::new("switchyard.worker", worker.to_string()),
            KeyValue::new("switchyard.rows", rows as i64),
        ];
        if let Some(u) = &parsed {
            attributes.push(KeyValue::new("server.address", u.host_str().unwrap_or_default().to_string()));
            if let Some(port) = u.port_or_known_default() {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if attempt > 1 {
            attributes.push(KeyValue::new("http.request.resend_count", i64::from(attempt - 1)));
        }
        let tracer = global::tracer("switchyard");
        let cx = Context::new().with_remote_span_context(parent.clone());
        let span = tracer
            .span_builder("POST")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&tracer, &cx);
        Self(Some(span))
    }

    /// The `traceparent` header for the request, when traced.
    pub(crate) fn traceparent(&self) -> Option<String> {
        let cx = self.0.as_ref()?.span_context();
        cx.is_sampled().then(|| switchyard_schemas::traceparent(cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8()))
    }

    /// The endpoint answered with `status`.
    pub(crate) fn answered(&mut self, status: u16) {
        let Some(span) = &mut self.0 else { return };
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 400 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(format!("HTTP {status}")));
        }
    }

    /// The attempt failed without an answer (`timeout`, `connection`).
    pub(crate) fn failed(&mut self, kind: &'static str, what: &str) {
        let Some(span) = &mut self.0 else { return };
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error(what.to_string()));
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        if let Some(s) = &mut self.0 {
            s.end();
        }
    }
}
