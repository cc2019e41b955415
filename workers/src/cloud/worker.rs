//! The cloud worker: a coalescing queue in front of one endpoint, and the
//! path every request takes — budget and circuit checks, the last PII
//! check, the rate limiter, then attempts with retries.
//!
//! ```text
//!  infer(rows) ─▶ queue ─▶ dispatcher: up to max_batch_size rows or
//!                            max_queue_delay_ms ─▶ (max_concurrency) request task:
//!     admit (budget, breaker) ─▶ render + redact ─▶ last PII check ─▶ limiter
//!        ─▶ POST ─▶ RetryLogic ─▶ breaker.record ─▶ budget.spend ─▶ answers
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::MonotonicClock;
use switchyard_schemas::telemetry as m;
use switchyard_schemas::Notice;
use switchyard_schemas::{notice, AuditEvent, ModelRef, PiiScanner, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::cloud::breaker::{BreakerState, CircuitBreaker};
use crate::cloud::budget::{Budget, BudgetLevel, Reservation};
use crate::cloud::config::{CloudWorkerConfig, OnExhausted, Protocol};
use crate::cloud::kserve::KserveCodec;
use crate::cloud::ledger::{now as wall_clock, SpendLedger};
use crate::cloud::limiter::EndpointLimiter;
use crate::cloud::openai::OpenAiCodec;
use crate::cloud::redact::{last_check, Redactor};
use crate::cloud::retry::{AttemptOutcome, RetryDecision, RetryLogic};
use crate::cloud::secret::Secret;
use crate::cloud::span::RequestSpan;
use crate::cloud::template::Template;
use crate::Answer;
use crate::{Error, Result};

/// One event for a cloud worker.
#[derive(Debug, Clone)]
pub struct CloudInput {
    /// Lineage id (request ids are derived from it).
    pub id: String,
    /// Pre-processed features (`kserve_v2`).
    pub features: Vec<f32>,
    /// Field values in schema order (`openai` templates).
    pub values: Vec<Value>,
    /// The event's span when it is traced: the request's span links to it.
    pub trace: Option<opentelemetry::trace::SpanContext>,
}

/// Why a cloud worker did not answer an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// The endpoint cannot take requests now (circuit open, budget spent);
    /// the event should take its next path, or wait.
    #[error("{reason}")]
    Unavailable {
        /// Why, for the DLQ and lineage.
        reason: String,
        /// When it may be available again.
        retry_in: Duration,
        /// The policy says to wait (budget `on_exhausted: pause`) rather
        /// than fall back.
        pause: bool,
    },
    /// The last PII check found personal data in the request; it was not
    /// sent. Only a local path may serve the event.
    #[error("request blocked before egress: {0}")]
    Blocked(String),
    /// Every attempt failed, or the answer was unusable.
    #[error("{0}")]
    Failed(String),
}

/// Counters of a cloud worker.
#[derive(Debug, Default)]
pub struct CloudStats {
    /// Requests (each possibly several attempts).
    pub requests: AtomicU64,
    /// HTTP attempts.
    pub attempts: AtomicU64,
    /// Retries (attempts after the first).
    pub retries: AtomicU64,
    /// Rows answered.
    pub rows: AtomicU64,
    /// Rows that failed after every attempt.
    pub failed_rows: AtomicU64,
    /// Rows refused because the endpoint was unavailable.
    pub unavailable_rows: AtomicU64,
    /// Rows whose request the last PII check blocked.
    pub blocked_rows: AtomicU64,
    /// Responses with status 429.
    pub throttled: AtomicU64,
}

/// A snapshot for summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudSnapshot {
    /// Requests sent (first attempts).
    pub requests: u64,
    /// HTTP attempts.
    pub attempts: u64,
    /// Retries.
    pub retries: u64,
    /// Rows answered.
    pub rows: u64,
    /// Rows failed after all attempts.
    pub failed_rows: u64,
    /// Rows refused while unavailable.
    pub unavailable_rows: u64,
    /// Rows blocked by the last PII check.
    pub blocked_rows: u64,
    /// 429 responses.
    pub throttled: u64,
    /// Breaker state now.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Spent in the current budget window.
    pub budget_spent: Option<f64>,
}

enum Codec {
    Kserve(KserveCodec),
    OpenAi(OpenAiCodec, Redactor),
}

/// One event waiting for a request to its endpoint: its input and where the answer goes.
struct CloudCall {
    input: CloudInput,
    queued: Instant,
    reply: oneshot::Sender<std::result::Result<Answer, CloudError>>,
}

struct Shared {
    name: String,
    protocol: Protocol,
    config: CloudWorkerConfig,
    base: String,
    codec: Codec,
    http: reqwest::Client,
    token: Option<Secret>,
    limiter: EndpointLimiter<MonotonicClock>,
    breaker: CircuitBreaker<MonotonicClock>,
    budget: Option<Budget<MonotonicClock>>,
    retry: RetryLogic,
    scanner: Arc<dyn PiiScanner>,
    width: usize,
    stats: CloudStats,
    /// Mean request latency (exponentially weighted), µs; 0 before the first.
    latency_ewma_us: AtomicU64,
    /// What the last failed attempt failed with (no event data: status,
    /// server snippet or transport error).
    last_failure: std::sync::Mutex<Option<String>>,
    /// The breaker state last reported (its gauge value), to see changes.
    breaker_reported: AtomicU64,
}

/// A worker that sends events to a cloud endpoint.
pub struct CloudWorker {
    shared: Arc<Shared>,
    tx: mpsc::Sender<CloudCall>,
}

impl std::fmt::Debug for CloudWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWorker").field("name", &self.shared.name).field("url", &self.shared.base).finish()
    }
}

impl CloudWorker {
    /// Builds the worker and starts its dispatcher (needs a Tokio runtime).
    /// `fields` are the schema's field names (templates, redaction), `width`
    /// the feature count, `base` the manifest's folder (secret files),
    /// `scanner` the PII detectors for masking and the last check.
    pub fn start(
        name: &str,
        protocol: Protocol,
        config: &CloudWorkerConfig,
        base: &Path,
        fields: &[String],
        width: usize,
        scanner: Arc<dyn PiiScanner>,
    ) -> Result<Self> {
        let token = config.auth.as_ref().map(|a| a.load(base)).transpose()?;
        let codec = match protocol {
            Protocol::KserveV2 => Codec::Kserve(KserveCodec::new(config)),
            Protocol::OpenAi => {
                let text = config
                    .template
                    .as_deref()
                    .ok_or_else(|| Error::Config("an openai worker needs a template".into()))?;
                let template = Template::parse(text).map_err(|e| Error::Config(format!("template: {e}")))?;
                let redactor = Redactor::new(&template, fields, &config.redact, scanner.clone())?;
                Codec::OpenAi(OpenAiCodec::new(config), redactor)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .pool_max_idle_per_host(config.max_concurrency)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http { retriable: false, message: format!("cannot build HTTP client: {e}") })?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            protocol,
            base: config.url.trim_end_matches('/').to_string(),
            limiter: EndpointLimiter::new(&config.rate_limit, MonotonicClock),
            breaker: CircuitBreaker::new(config.circuit_breaker.clone(), MonotonicClock),
            budget: config.budget.clone().map(|b| Budget::new(b, MonotonicClock)),
            retry: RetryLogic::new(config.retry.clone()),
            config: config.clone(),
            codec,
            http,
            token,
            scanner,
            width,
            stats: CloudStats::default(),
            latency_ewma_us: AtomicU64::new(0),
            last_failure: std::sync::Mutex::new(None),
            breaker_reported: AtomicU64::new(0),
        });
        let batch = shared.max_inputs();
        let (tx, rx) = mpsc::channel(batch * config.max_concurrency.max(1) * 2);
        tokio::spawn(dispatch(shared.clone(), rx));
        Ok(CloudWorker { shared, tx })
    }

    /// The worker's name in the manifest.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether a request could be sent now: budget left and circuit not
    /// open. The pipeline asks before routing an event here, to take the
    /// next path at once instead of queueing.
    pub fn admit(&self) -> std::result::Result<(), CloudError> {
        self.shared.admit()
    }

    /// How long an event with no other path may wait for this endpoint
    /// (`max_wait_ms`).
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.shared.config.max_wait_ms)
    }

    /// Mean request latency so far (exponentially weighted); `None` before
    /// the first answer.
    pub fn expected_latency(&self) -> Option<Duration> {
        match self.shared.latency_ewma_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Answers for `inputs`, one per input, in order. Waits for queue space
    /// when the endpoint is behind (backpressure).
    pub async fn infer(&self, inputs: Vec<CloudInput>) -> Vec<std::result::Result<Answer, CloudError>> {
        let mut replies = Vec::with_capacity(inputs.len());
        for input in inputs {
            let (reply, rx) = oneshot::channel();
            let job = CloudCall { input, queued: Instant::now(), reply };
            if self.tx.send(job).await.is_err() {
                replies.push(None);
            } else {
                replies.push(Some(rx));
            }
        }
        let mut out = Vec::with_capacity(replies.len());
        for r in replies {
            out.push(match r {
                Some(rx) => rx.await.unwrap_or_else(|_| Err(CloudError::Failed("worker stopped".into()))),
                None => Err(CloudError::Failed(format!("worker `{}` has stopped", self.shared.name))),
            });
        }
        out
    }

    /// Uses `share` (0–1) of the endpoint's rate limit from now on: in a
    /// consumer group, the fraction of the input partitions this process
    /// owns, so that the group together stays within the limit.
    pub fn set_share(&self, share: f64) {
        self.shared.limiter.set_share(share);
        m::QUOTA_SHARE.gauge(self.shared.worker_label()).set(self.shared.limiter.share());
    }

    /// Counts the spend of every process that shares `ledger` (a consumer
    /// group's table root), restarted ones included, against this worker's
    /// budget, in windows aligned to the clock. Call before the first
    /// request.
    pub fn share_budget(&self, ledger: Arc<SpendLedger>) {
        if let Some(b) = &self.shared.budget {
            b.share_through(ledger, &self.shared.name, wall_clock());
        }
    }

    /// Counters and state now.
    pub fn snapshot(&self) -> CloudSnapshot {
        let s = &self.shared.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CloudSnapshot {
            requests: l(&s.requests),
            attempts: l(&s.attempts),
            retries: l(&s.retries),
            rows: l(&s.rows),
            failed_rows: l(&s.failed_rows),
            unavailable_rows: l(&s.unavailable_rows),
            blocked_rows: l(&s.blocked_rows),
            throttled: l(&s.throttled),
            breaker: self.shared.breaker.state(),
            breaker_opened: self.shared.breaker.times_opened(),
            budget_spent: self.shared.budget.as_ref().map(Budget::spent),
        }
    }

    /// Asks the endpoint whether it is ready (`GET /v2/health/ready` or
    /// `GET {url}/models`); the error says what failed.
    pub async fn check_ready(&self) -> std::result::Result<(), String> {
        let s = &self.shared;
        let url = match s.protocol {
            Protocol::KserveV2 => format!("{}/v2/health/ready", s.base),
            Protocol::OpenAi => format!("{}/models", s.base),
        };
        let mut req = s.http.get(&url).timeout(Duration::from_millis(s.config.timeout_ms));
        if let Some(h) = s.auth_header() {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url}: HTTP {}", r.status().as_u16())),
            Err(e) => Err(format!("{url}: {}", describe(&e))),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        // Without the URL (callers name it), and with the cause chain.
        let mut text = e.without_url_ref().to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(u) => text.replace(&format!(" for url ({u})"), ""),
            None => text,
        }
    }
}

async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::Receiver<CloudCall>) {
    let max = shared.max_inputs();
    let delay = Duration::from_millis(shared.config.queue_delay_ms());
    let slots = Arc::new(Semaphore::new(shared.config.max_concurrency.max(1)));
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::from_std(first.queued + delay);
        let mut batch = vec![first];
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                _ => break,
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let s = shared.clone();
        tokio::spawn(async move {
            s.send_batch(batch).await;
            drop(permit);
        });
    }
}

impl Shared {
    fn max_inputs(&self) -> usize {
        match &self.codec {
            Codec::Kserve(_) => self.config.max_batch_size.max(1),
            Codec::OpenAi(c, _) => c.max_inputs(self.config.max_batch_size),
        }
    }

    fn auth_header(&self) -> Option<reqwest::header::HeaderValue> {
        let t = self.token.as_ref()?;
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose())).ok()?;
        v.set_sensitive(true);
        Some(v)
    }

    fn provider(&self) -> String {
        let kind = match self.protocol {
            Protocol::KserveV2 => "kserve_v2",
            Protocol::OpenAi => "openai",
        };
        format!("{kind} {}", self.base)
    }

    fn admit(&self) -> std::result::Result<(), CloudError> {
        if let Some(b) = &self.budget {
            if let Err(wait) = b.check() {
                return Err(self.budget_spent(wait));
            }
        }
        if let Some(wait) = self.breaker.open_for() {
            return Err(CloudError::Unavailable { reason: self.circuit_open_reason(), retry_in: wait, pause: false });
        }
        Ok(())
    }

    /// "circuit open", with the failure that opened it: the reason names
    /// the cause, not only the effect.
    fn circuit_open_reason(&self) -> String {
        let last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let cause = last.map(|w| format!("; last failure: {w}")).unwrap_or_default();
        format!("worker `{}`: circuit open ({}){cause}", self.name, self.base)
    }

    fn budget_spent(&self, wait: Duration) -> CloudError {
        let cfg = self.config.budget.as_ref().map(|c| (c.limit, c.window_s, c.on_exhausted));
        let (limit, window, on) = cfg.unwrap_or((0.0, 0, OnExhausted::Fallback));
        CloudError::Unavailable {
            reason: format!("worker `{}`: budget of {limit} per {window} s spent", self.name),
            retry_in: wait,
            pause: on == OnExhausted::Pause,
        }
    }

    fn answer_all(&self, jobs: Vec<CloudCall>, err: CloudError) {
        let counter = match &err {
            CloudError::Unavailable { .. } => &self.stats.unavailable_rows,
            CloudError::Blocked(_) => &self.stats.blocked_rows,
            CloudError::Failed(_) => &self.stats.failed_rows,
        };
        counter.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        for j in jobs {
            let _ = j.reply.send(Err(err.clone()));
        }
    }

    async fn send_batch(self: Arc<Self>, jobs: Vec<CloudCall>) {
        if let Err(e) = self.admit() {
            return self.answer_all(jobs, e);
        }
        // Build the body; the last check runs on exactly what would leave.
        let request_id = format!("sy-{}", jobs[0].input.id);
        let (path, body, jobs, tokens) = match &self.codec {
            Codec::Kserve(c) => {
                let envelope = c.envelope_text(&request_id);
                let fired = last_check(self.scanner.as_ref(), &envelope);
                if !fired.is_empty() {
                    let msg = format!("{} found in the request envelope", fired.join(", "));
                    self.meter(&m::EGRESS_BLOCKED).increment(1);
                    return self.answer_all(jobs, CloudError::Blocked(msg));
                }
                let mut features = Vec::with_capacity(jobs.len() * self.width);
                for j in &jobs {
                    features.extend_from_slice(&j.input.features);
                }
                if features.len() != jobs.len() * self.width {
                    let msg = format!(
                        "internal error: {} features for {} rows of {}",
                        features.len(),
                        jobs.len(),
                        self.width
                    );
                    return self.answer_all(jobs, CloudError::Failed(msg));
                }
                let body = c.encode(&request_id, &features, jobs.len(), self.width);
                (c.infer_path(), body, jobs, 0)
            }
            Codec::OpenAi(c, redactor) => {
                let mut texts = Vec::with_capacity(jobs.len());
                let mut kept = Vec::with_capacity(jobs.len());
                for j in jobs {
                    let text = redactor.render(&j.input.values);
                    let fired = redactor.last_check(&text);
                    if fired.is_empty() {
                        texts.push(text);
                        kept.push(j);
                    } else {
                        self.meter(&m::EGRESS_BLOCKED).increment(1);
                        let msg = format!("{} found in the rendered request", fired.join(", "));
                        self.answer_all(vec![j], CloudError::Blocked(msg));
                    }
                }
                if kept.is_empty() {
                    return;
                }
                self.meter(&m::REDACTIONS).increment((kept.len() * redactor.redacted_fields()) as u64);
                let body = c.encode(&texts);
                // The whole body too: system prompt and model name are part of it.
                let fired = last_check(self.scanner.as_ref(), &String::from_utf8_lossy(&body));
                if !fired.is_empty() {
                    let msg = format!("{} found in the request body", fired.join(", "));
                    self.meter(&m::EGRESS_BLOCKED).increment(1);
                    return self.answer_all(kept, CloudError::Blocked(msg));
                }
                (c.path().to_string(), body, kept, c.estimate_tokens(&texts))
            }
        };
        // The estimated cost is held while the request is in flight, so
        // concurrent requests cannot overshoot the budget together.
        let reservation = match &self.budget {
            Some(b) => match b.reserve(b.cost(u64::from(tokens))) {
                Ok(r) => Some(r),
                Err(wait) => return self.answer_all(jobs, self.budget_spent(wait)),
            },
            None => None,
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{path}", self.base);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let permit = match self.breaker.permit() {
                Ok(p) => p,
                Err(wait) => {
                    let e =
                        CloudError::Unavailable { reason: self.circuit_open_reason(), retry_in: wait, pause: false };
                    return self.answer_all(jobs, e);
                }
            };
            let waited = Instant::now();
            self.limiter.acquire(tokens).await;
            m::CLOUD_RATE_LIMIT_WAIT.histogram(self.worker_label()).record(waited.elapsed().as_secs_f64());
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                self.meter(&m::CLOUD_RETRIES).increment(1);
            }
            let mut span =
                RequestSpan::start(&self.name, &url, attempt, jobs.len(), jobs.iter().map(|j| j.input.trace.as_ref()));
            let started = Instant::now();
            let posted = self.post(&url, &body, span.traceparent()).await;
            match &posted {
                Ok((status, _, _)) => span.answered(*status),
                Err((AttemptOutcome::Timeout, what)) => span.failed("timeout", what),
                Err((_, what)) => span.failed("connection", what),
            }
            drop(span);
            let (outcome, what) = match posted {
                Ok((status, _, bytes)) if (200..300).contains(&status) => {
                    self.observe_latency(started.elapsed());
                    m::CLOUD_REQUEST_DURATION.histogram(self.worker_label()).record(started.elapsed().as_secs_f64());
                    let answered = self.parse(&bytes, &jobs, &request_id);
                    // The server answered; an unusable answer is a broken
                    // endpoint all the same.
                    let state = self.breaker.record(permit, answered.is_ok());
                    self.gauge(state, None);
                    self.count_attempt("ok");
                    return match answered {
                        Ok((answers, used_tokens)) => {
                            self.spend(reservation, used_tokens);
                            self.stats.rows.fetch_add(answers.len() as u64, Ordering::Relaxed);
                            self.meter(&m::CLOUD_ROWS).increment(answers.len() as u64);
                            for (j, a) in jobs.into_iter().zip(answers) {
                                let _ = j.reply.send(Ok(a));
                            }
                        }
                        Err(msg) => self.answer_all(jobs, CloudError::Failed(format!("{url}: {msg}"))),
                    };
                }
                Ok((status, headers, bytes)) => {
                    if status == 429 {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    let snippet: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
                    (AttemptOutcome::Response { status, headers }, format!("HTTP {status}: {}", snippet.trim()))
                }
                Err((a, what)) => (a, what),
            };
            self.count_attempt(match &outcome {
                AttemptOutcome::Response { status: 429, .. } => "status_429",
                AttemptOutcome::Response { status, .. } if *status >= 500 => "status_5xx",
                AttemptOutcome::Response { .. } => "status_4xx",
                AttemptOutcome::Timeout => "timeout",
                AttemptOutcome::Connection => "connection",
            });
            let state = self.breaker.record(permit, !RetryLogic::is_unhealthy(&outcome));
            self.gauge(state, Some(&what));
            match self.retry.decide(&outcome, attempt, rand::random::<f64>()) {
                RetryDecision::RetryAfter(wait) => {
                    tracing::debug!(worker = %self.name, attempt, wait_ms = wait.as_millis() as u64, error = %what, "retrying");
                    *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
                    tokio::time::sleep(wait).await;
                }
                RetryDecision::GiveUp { .. } => {
                    *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.clone());
                    let plural = if attempt == 1 { "" } else { "s" };
                    tracing::warn!(worker = %self.name, attempts = attempt, error = %what, "request failed");
                    let msg = format!("{url}: {what} (after {attempt} attempt{plural})");
                    return self.answer_all(jobs, CloudError::Failed(msg));
                }
            }
        }
    }

    fn parse(
        &self,
        body: &[u8],
        jobs: &[CloudCall],
        request_id: &str,
    ) -> std::result::Result<(Vec<Answer>, u64), String> {
        let threshold = self.config.threshold;
        let label = |s: Option<f64>| s.map(|s| i64::from(s >= threshold));
        let model = |version: Option<String>, id: Option<String>| ModelRef {
            name: self.config.model.clone(),
            version: version.or_else(|| self.config.version.clone()).unwrap_or_default(),
            sha256: String::new(),
            provider: self.provider(),
            request_id: id.unwrap_or_else(|| request_id.to_string()),
        };
        match &self.codec {
            Codec::Kserve(c) => {
                let a = c.decode(body, jobs.len())?;
                let m = model(a.model_version, a.id);
                let answers = a
                    .scores
                    .into_iter()
                    .map(|s| Answer { label: label(Some(s)), model: m.clone(), ..Answer::remote(Some(s), None) })
                    .collect();
                Ok((answers, 0))
            }
            Codec::OpenAi(c, _) => {
                let p = c.decode(body, jobs.len())?;
                let mut m = model(None, p.id);
                if let Some(served) = p.model {
                    m.version = served;
                }
                let answers =
                    p.replies.into_iter().map(|r| Answer { label: label(r.score), model: m.clone(), ..r }).collect();
                Ok((answers, p.tokens))
            }
        }
    }

    fn spend(&self, reservation: Option<Reservation<'_, MonotonicClock>>, tokens: u64) {
        let Some(b) = &self.budget else { return };
        let cost = b.cost(tokens);
        let level = match reservation {
            Some(r) => r.settle(cost),
            None => b.spend(cost),
        };
        let spent = b.spent();
        m::BUDGET_SPENT.gauge(self.worker_label()).set(spent);
        let limit = self.config.budget.as_ref().map_or(0.0, |c| c.limit);
        m::BUDGET_REMAINING.gauge(self.worker_label()).set((limit - spent).max(0.0));
        match level {
            BudgetLevel::Ok => {}
            BudgetLevel::CrossedWarning => {
                self.meter(&m::BUDGET_WARNINGS).increment(1);
                let detail = format!("spent {spent} of {limit} in this window");
                notice(Notice::new(AuditEvent::BudgetWarning, self.name.clone(), detail));
                tracing::warn!(worker = %self.name, spent, "cloud budget near its limit");
            }
            BudgetLevel::Exhausted => {
                self.meter(&m::BUDGET_EXHAUSTED).increment(1);
                let detail = format!("spent {spent} of {limit}: budget window exhausted");
                notice(Notice::new(AuditEvent::BudgetExhausted, self.name.clone(), detail));
                tracing::warn!(worker = %self.name, spent, "cloud budget spent for this window");
            }
        }
    }

    /// Reports the breaker's state: its gauge, and an audit notice when the
    /// circuit opens (with `cause`) or closes.
    fn gauge(&self, state: BreakerState, cause: Option<&str>) {
        let now = state.gauge();
        m::BREAKER_STATE.gauge(self.worker_label()).set(now);
        let before = self.breaker_reported.swap(now as u64, Ordering::Relaxed);
        let open = BreakerState::Open.gauge() as u64;
        let closed = BreakerState::Closed.gauge() as u64;
        let event = match (before, now as u64) {
            (b, n) if n == open && b != open => AuditEvent::BreakerOpened,
            (b, n) if n == closed && b != closed => AuditEvent::BreakerClosed,
            _ => return,
        };
        let detail = match (event, cause) {
            (AuditEvent::BreakerOpened, Some(c)) => format!("circuit to {} opened: {c}", self.base),
            (AuditEvent::BreakerOpened, None) => format!("circuit to {} opened", self.base),
            _ => format!("circuit to {} closed", self.base),
        };
        notice(Notice::new(event, self.name.clone(), detail));
    }

    fn count_attempt(&self, outcome: &'static str) {
        m::CLOUD_REQUESTS.counter([("worker", self.name.clone().into()), ("outcome", outcome.into())]).increment(1);
    }

    /// The `worker` label of this worker's metrics.
    fn worker_label(&self) -> [(&'static str, metrics::SharedString); 1] {
        [("worker", self.name.clone().into())]
    }

    /// This worker's counter `metric` (labelled by `worker` only).
    fn meter(&self, metric: &m::Metric) -> metrics::Counter {
        metric.counter(self.worker_label())
    }

    fn observe_latency(&self, took: Duration) {
        let us = took.as_micros().max(1) as u64;
        let old = self.latency_ewma_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.latency_ewma_us.store(new.max(1), Ordering::Relaxed);
    }

    /// One attempt: status, retry headers and body, or what went wrong.
    async fn post(
        &self,
        url: &str,
        body: &[u8],
        traceparent: Option<String>,
    ) -> std::result::Result<(u16, Vec<(String, String)>, Vec<u8>), (AttemptOutcome, String)> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let mut req = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(h) = self.auth_header() {
            req = req.header(reqwest::header::AUTHORIZATION, h);
        }
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                (AttemptOutcome::Timeout, format!("timed out after {} ms", self.config.timeout_ms))
            } else {
                (AttemptOutcome::Connection, format!("connection failed: {}", describe(&e)))
            }
        };
        let resp = req.send().await.map_err(fail)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                k.starts_with("retry-after") || k.starts_with("x-ratelimit-reset")
            })
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let bytes = resp.bytes().await.map_err(fail)?;
        Ok((status, headers, bytes.to_vec()))
    }
}
