//! The manifest entry of a cloud worker (`type: kserve_v2` or `type:
//! openai`): endpoint, protocol mapping, limits, failure handling, budget,
//! secrets and redaction, as plain serde data.
//!
//! ```yaml
//! workers:
//!   fraud-cloud:
//!     type: kserve_v2
//!     url: http://inference.internal:8080
//!     model: fraud
//!     output: probabilities
//!     auth: { bearer_env: FRAUD_API_TOKEN }
//!     rate_limit: { requests_per_second: 50 }
//!     circuit_breaker: { failure_threshold: 5, open_ms: 5000 }
//!     budget: { cost_per_request: 0.0004, limit: 20.0, window_s: 3600 }
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_schemas::Problems;

/// Settings of a cloud worker. One struct serves both protocols; fields that
/// belong to the other protocol are reported by validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CloudWorkerConfig {
    /// Base URL. `kserve_v2`: the server root (`http://host:8080`; requests go
    /// to `{url}/v2/models/{model}/infer`). `openai`: the API root including
    /// its version (`https://api.openai.com/v1`; requests go to
    /// `{url}/chat/completions` or `{url}/embeddings`).
    pub url: String,
    /// Model name at the endpoint.
    pub model: String,
    /// `kserve_v2`: model version (`/versions/{version}` in the path); the
    /// server's default when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// `kserve_v2`: name of the input tensor. Default: `input`.
    #[serde(default)]
    pub input_name: Option<String>,
    /// `kserve_v2`: element type of the input tensor, `FP32` (default) or `FP64`.
    #[serde(default)]
    pub datatype: Option<TensorType>,
    /// `kserve_v2`: output tensor holding the scores; requested by name.
    /// Default: the first output of the response.
    #[serde(default)]
    pub output: Option<String>,
    /// `kserve_v2`: column of a 2-D output holding the positive-class
    /// probability. Default: 1 (the second column of `[n, 2]` probabilities).
    #[serde(default)]
    pub score_index: Option<usize>,
    /// Score at or above which the label is 1. Default: 0.5.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// `openai`: which API: `chat` (`/chat/completions`, default) or
    /// `embeddings` (`/embeddings`).
    #[serde(default)]
    pub api: Option<OpenAiApi>,
    /// `openai`: the request text, with `{field}` replaced by the event's
    /// (redacted) field values; `{{` and `}}` write braces. Required for
    /// `openai` workers.
    #[serde(default)]
    pub template: Option<String>,
    /// `openai` `chat`: system message sent before the template.
    #[serde(default)]
    pub system: Option<String>,
    /// `openai` `chat`: most tokens of the reply. Default: 16.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// `openai` `chat`: the result's score is the first number in the reply,
    /// which must lie in [0, 1] (`number_in_reply`, default), or no score
    /// (`none`; the reply is kept in `outputs`).
    #[serde(default)]
    pub score_from: Option<ScoreFrom>,
    /// How to authenticate. Default: no credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Longest a single HTTP attempt may take, in ms (connect + response).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most events coalesced into one request, where the protocol allows it
    /// (`kserve_v2`, `openai` `embeddings`; chat requests carry one event).
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Longest an event waits for others to join its request, in ms: the
    /// same batching window as an `onnx` worker's `max_queue_delay_ms`.
    #[serde(default = "default_max_queue_delay_ms")]
    pub max_queue_delay_ms: u64,
    /// The former name of `max_queue_delay_ms`: still read (and preferred
    /// when given), with a deprecation warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_delay_ms: Option<u64>,
    /// Most requests in flight at once to this endpoint.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// How long an event that has no other path waits for this endpoint to
    /// become available (circuit closing, budget window turning) before it
    /// goes to the DLQ, in ms.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
    /// Rate limits, shared by every request to this endpoint.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Retries of retriable failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The endpoint's circuit breaker.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// Spending limit. Default: none.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// Redaction of event fields before they are rendered into a request
    /// (`openai` templates). `kserve_v2` requests carry only the
    /// pre-processed feature vector.
    #[serde(default)]
    pub redact: Vec<RedactRule>,
}

/// Element type of a KServe V2 input tensor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum TensorType {
    /// 32-bit floats.
    #[default]
    FP32,
    /// 64-bit floats.
    FP64,
}

impl TensorType {
    /// The protocol's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorType::FP32 => "FP32",
            TensorType::FP64 => "FP64",
        }
    }
}

/// Which OpenAI API an `openai` worker calls.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiApi {
    /// `POST {url}/chat/completions`, one event per request.
    #[default]
    Chat,
    /// `POST {url}/embeddings`, up to `max_batch_size` events per request.
    Embeddings,
}

/// Where an `openai` chat result's score comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreFrom {
    /// The first number in the reply, which must lie in [0, 1].
    #[default]
    NumberInReply,
    /// No score; the reply is kept in the result's `outputs`.
    None,
}

/// Credentials: a bearer token read at start-up from an environment
/// variable or a file, never from the manifest itself, never logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Environment variable holding the token.
    #[serde(default)]
    pub bearer_env: Option<String>,
    /// File holding the token (surrounding whitespace is trimmed); relative
    /// to the manifest's folder.
    #[serde(default)]
    pub bearer_file: Option<PathBuf>,
}

/// Rate limits of one endpoint (GCRA, `governor`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second. Default: unlimited.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Requests that may go at once after a quiet period. Default: 50 ms
    /// worth of `requests_per_second` (at least 1), so that a timer waking
    /// late does not cost rate; no window of any length sees more than its
    /// share plus the burst.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Tokens per minute (`openai`; estimated before sending as prompt
    /// characters / 4 plus `max_tokens`). Default: unlimited.
    #[serde(default)]
    pub tokens_per_minute: Option<u32>,
}

/// Retries of one request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included. Default: 4.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry, in ms; doubles per retry, with jitter.
    /// Default: 100.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest backoff, in ms. Default: 5000.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Longest wait a server may ask for with `Retry-After` or
    /// `x-ratelimit-reset-*`, in ms; a longer ask fails the attempt instead.
    /// Default: 30000.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
        }
    }
}

/// The circuit breaker of one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts (5xx, timeouts, connection errors; each
    /// retry is an attempt) that open the circuit. Default: 5.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long the circuit stays open before probes are let through, in ms.
    /// Default: 5000.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// Successful probes (one at a time) that close the circuit again.
    /// Default: 1.
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_failure_threshold(),
            open_ms: default_open_ms(),
            half_open_probes: default_half_open_probes(),
        }
    }
}

/// Spending limit of one endpoint over a fixed time window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Cost of one request. Default: 0.
    #[serde(default)]
    pub cost_per_request: f64,
    /// Cost of 1000 tokens (as reported in the response's `usage`). Default: 0.
    #[serde(default)]
    pub cost_per_1k_tokens: f64,
    /// Most spent per window.
    pub limit: f64,
    /// Window length in seconds. Default: 3600.
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// Fraction of the limit at which a warning is logged and counted.
    /// Default: 0.8.
    #[serde(default = "default_warn_fraction")]
    pub warn_fraction: f64,
    /// At the limit: `fallback` (events take their next path, or wait up to
    /// `max_wait_ms`, default) or `pause` (events wait for the next window,
    /// which pauses the Kafka consumer).
    #[serde(default)]
    pub on_exhausted: OnExhausted,
}

/// What happens when a budget is spent.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Events take their next path.
    #[default]
    Fallback,
    /// Events wait for the next window.
    Pause,
}

/// How one field is made safe before it leaves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// Schema field.
    pub field: String,
    /// What to do with it.
    pub op: RedactOp,
    /// `replace`: the text written instead. Default: `[REDACTED]`.
    #[serde(default)]
    pub with: Option<String>,
    /// `hash`: environment variable holding the HMAC key.
    #[serde(default)]
    pub key_env: Option<String>,
}

/// A redaction operator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedactOp {
    /// The field is left out (renders as empty text).
    Drop,
    /// Every PII detector match in the text is replaced by `[KIND]`
    /// (`[EMAIL]`, `[PAYMENT_CARD]`, …).
    Mask,
    /// The value is replaced by a keyed hash (HMAC-SHA256, first 16 hex
    /// digits): equal values stay equal, and nobody without the key can
    /// reverse or test guesses.
    Hash,
    /// The value is replaced by `with`.
    Replace,
}

fn default_threshold() -> f64 {
    0.5
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_max_batch_size() -> usize {
    64
}
fn default_max_queue_delay_ms() -> u64 {
    5
}
fn default_max_concurrency() -> usize {
    8
}
fn default_max_wait_ms() -> u64 {
    30_000
}
fn default_attempts() -> u32 {
    4
}
fn default_initial_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    5_000
}
fn default_max_retry_after_ms() -> u64 {
    30_000
}
fn default_failure_threshold() -> u32 {
    5
}
fn default_open_ms() -> u64 {
    5_000
}
fn default_half_open_probes() -> u32 {
    1
}
fn default_window_s() -> u64 {
    3_600
}
fn default_warn_fraction() -> f64 {
    0.8
}

/// The two cloud protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// KServe V2 / Open Inference Protocol over REST.
    KserveV2,
    /// OpenAI-compatible chat completions / embeddings.
    OpenAi,
}

impl CloudWorkerConfig {
    /// The batching window in ms (`max_queue_delay_ms`, or its former name).
    pub fn queue_delay_ms(&self) -> u64 {
        self.max_batch_delay_ms.unwrap_or(self.max_queue_delay_ms)
    }

    /// Settings given under a former name, as warnings for `path`.
    pub fn deprecations(&self, path: &str) -> Vec<String> {
        match self.max_batch_delay_ms {
            Some(_) => vec![format!(
                "{path}.max_batch_delay_ms is deprecated: call it `max_queue_delay_ms` (the batching window of every worker)"
            )],
            None => Vec::new(),
        }
    }

    /// Reports every problem under `path` that needs no network or files.
    pub fn validate(&self, protocol: Protocol, path: &str, fields: &[String], problems: &mut Problems) {
        if let (Some(old), true) = (self.max_batch_delay_ms, self.max_queue_delay_ms != default_max_queue_delay_ms()) {
            if old != self.max_queue_delay_ms {
                problems.push(
                    format!("{path}.max_batch_delay_ms"),
                    "the former name of `max_queue_delay_ms`, which is also given: keep only `max_queue_delay_ms`",
                );
            }
        }
        match url_parts(&self.url) {
            Ok(_) => {}
            Err(e) => problems.push(format!("{path}.url"), e),
        }
        if self.model.trim().is_empty() {
            problems.push(format!("{path}.model"), "must name the model at the endpoint");
        }
        let kserve_only: [(&str, bool); 5] = [
            ("version", self.version.is_some()),
            ("input_name", self.input_name.is_some()),
            ("datatype", self.datatype.is_some()),
            ("output", self.output.is_some()),
            ("score_index", self.score_index.is_some()),
        ];
        let openai_only: [(&str, bool); 5] = [
            ("api", self.api.is_some()),
            ("template", self.template.is_some()),
            ("system", self.system.is_some()),
            ("max_tokens", self.max_tokens.is_some()),
            ("score_from", self.score_from.is_some()),
        ];
        let (foreign, this, other): (&[(&str, bool)], _, _) = match protocol {
            Protocol::KserveV2 => (&openai_only, "kserve_v2", "openai"),
            Protocol::OpenAi => (&kserve_only, "openai", "kserve_v2"),
        };
        for (name, set) in foreign {
            if *set {
                problems.push(
                    format!("{path}.{name}"),
                    format!("applies to `{other}` workers only; remove it from this `{this}` worker"),
                );
            }
        }
        if protocol == Protocol::OpenAi {
            match &self.template {
                None => problems.push(
                    format!("{path}.template"),
                    "an `openai` worker needs a template, e.g. \"Fraud risk of {amount} {currency} at {merchant_category}?\"",
                ),
                Some(t) => match template_fields(t) {
                    Err(e) => problems.push(format!("{path}.template"), e),
                    Ok(names) => {
                        for n in names {
                            if !fields.contains(&n) {
                                problems.push(format!("{path}.template"), format!("`{{{n}}}`: no field `{n}` in the schema"));
                            }
                        }
                    }
                },
            }
            if self.api == Some(OpenAiApi::Embeddings) && self.score_from.is_some() {
                problems.push(format!("{path}.score_from"), "embeddings have no reply to read a score from; remove it");
            }
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            problems.push(format!("{path}.threshold"), "must lie in [0, 1]");
        }
        for (name, v) in [
            ("timeout_ms", self.timeout_ms),
            ("max_batch_size", self.max_batch_size as u64),
            ("max_concurrency", self.max_concurrency as u64),
        ] {
            if v == 0 {
                problems.push(format!("{path}.{name}"), "must be at least 1");
            }
        }
        if let Some(auth) = &self.auth {
            if auth.bearer_env.is_some() == auth.bearer_file.is_some() {
                problems.push(format!("{path}.auth"), "give exactly one of `bearer_env` and `bearer_file`");
            }
        }
        let rl = &self.rate_limit;
        if rl.requests_per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            problems.push(format!("{path}.rate_limit.requests_per_second"), "must be a positive number");
        }
        if rl.burst == Some(0) {
            problems.push(format!("{path}.rate_limit.burst"), "must be at least 1");
        }
        if rl.tokens_per_minute == Some(0) {
            problems.push(format!("{path}.rate_limit.tokens_per_minute"), "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            problems.push(format!("{path}.retry.max_attempts"), "must be at least 1 (the first attempt counts)");
        }
        if self.circuit_breaker.failure_threshold == 0 {
            problems.push(format!("{path}.circuit_breaker.failure_threshold"), "must be at least 1");
        }
        if self.circuit_breaker.half_open_probes == 0 {
            problems.push(format!("{path}.circuit_breaker.half_open_probes"), "must be at least 1");
        }
        if let Some(b) = &self.budget {
            if !(b.limit > 0.0 && b.limit.is_finite()) {
                problems.push(format!("{path}.budget.limit"), "must be a positive number");
            }
            if b.cost_per_request < 0.0 || b.cost_per_1k_tokens < 0.0 {
                problems.push(format!("{path}.budget"), "costs must not be negative");
            }
            if b.cost_per_request == 0.0 && b.cost_per_1k_tokens == 0.0 {
                problems.push(format!("{path}.budget"), "set `cost_per_request` or `cost_per_1k_tokens`");
            }
            if b.window_s == 0 {
                problems.push(format!("{path}.budget.window_s"), "must be at least 1");
            }
            if !(0.0..=1.0).contains(&b.warn_fraction) {
                problems.push(format!("{path}.budget.warn_fraction"), "must lie in [0, 1]");
            }
        }
        for (i, r) in self.redact.iter().enumerate() {
            let at = format!("{path}.redact[{i}]");
            if !fields.contains(&r.field) {
                problems.push(format!("{at}.field"), format!("no field `{}` in the schema", r.field));
            }
            if r.op == RedactOp::Hash && r.key_env.is_none() {
                problems.push(format!("{at}.key_env"), "`hash` needs `key_env`: the variable holding the HMAC key");
            }
            if r.op != RedactOp::Hash && r.key_env.is_some() {
                problems.push(format!("{at}.key_env"), "applies to `op: hash` only");
            }
            if r.op != RedactOp::Replace && r.with.is_some() {
                problems.push(format!("{at}.with"), "applies to `op: replace` only");
            }
        }
    }
}

/// Scheme and the rest of an `http(s)://` URL, or why it is not one.
pub(crate) fn url_parts(url: &str) -> Result<(&str, &str), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL; write e.g. http://127.0.0.1:8080"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme `{scheme}` is not supported; use http or https"));
    }
    if rest.trim_matches('/').is_empty() {
        return Err("names no host".into());
    }
    Ok((scheme, rest))
}

/// Field names used by `{field}` placeholders of a template.
pub(crate) fn template_fields(template: &str) -> Result<Vec<String>, String> {
    Ok(crate::cloud::template::Template::parse(template)?.fields().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> CloudWorkerConfig {
        serde_yaml::from_str(&format!("{{url: 'http://127.0.0.1:1', model: m{extra}}}")).unwrap()
    }

    #[test]
    fn the_batching_window_has_one_name_and_the_former_one_still_works() {
        let c = config(", max_queue_delay_ms: 40");
        assert_eq!(c.queue_delay_ms(), 40);
        assert!(c.deprecations("workers.w").is_empty());

        let old = config(", max_batch_delay_ms: 30");
        assert_eq!(old.queue_delay_ms(), 30);
        let warnings = old.deprecations("workers.w");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("workers.w.max_batch_delay_ms") && warnings[0].contains("max_queue_delay_ms"));
        let mut p = Problems::new();
        old.validate(Protocol::KserveV2, "workers.w", &[], &mut p);
        assert!(p.is_empty(), "{p}");

        let both = config(", max_batch_delay_ms: 30, max_queue_delay_ms: 40");
        let mut p = Problems::new();
        both.validate(Protocol::KserveV2, "workers.w", &[], &mut p);
        assert!(p.to_string().contains("workers.w.max_batch_delay_ms: the former name"), "{p}");
    }
}
