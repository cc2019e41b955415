//! Cloud API workers: protocol clients for KServe V2 and OpenAI-compatible
//! endpoints, and everything that keeps them within bounds.
//!
//! * [`CloudWorkerConfig`] — the manifest entry (`type: kserve_v2` / `openai`);
//! * [`CloudWorker`] — the coalescing queue and request path;
//! * [`RetryLogic`] — which outcomes are retried and after how long
//!   (`Retry-After`, `x-ratelimit-reset-*`), separate from transport;
//! * [`CircuitBreaker`], [`EndpointLimiter`], [`Budget`] — per-endpoint
//!   health, rate limits and spending, each on an injected `governor` clock;
//! * [`SpendLedger`] — budget spend shared by a group's processes and kept
//!   across restarts;
//! * [`Redactor`] — templates, redaction operators and the last PII check;
//! * [`KserveCodec`], [`OpenAiCodec`] — request and response bodies.

mod breaker;
mod budget;
mod config;
mod kserve;
mod ledger;
mod limiter;
mod openai;
mod redact;
mod retry;
mod secret;
mod span;
mod template;
mod worker;

pub use breaker::{BreakerState, CircuitBreaker, Permit};
pub use budget::{Budget, BudgetLevel, Reservation};
pub use config::{
    AuthConfig, BreakerConfig, BudgetConfig, CloudWorkerConfig, OnExhausted, OpenAiApi, Protocol, RateLimitConfig,
    RedactOp, RedactRule, RetryConfig, ScoreFrom, TensorType,
};
pub use kserve::{Answered, KserveCodec};
pub use ledger::{SpendLedger, SYNC_EVERY};
pub use limiter::{default_burst, EndpointLimiter};
pub use openai::{OpenAiCodec, Parsed};
pub use redact::{mask, Redactor};
pub use retry::{server_wait, AttemptOutcome, RetryDecision, RetryLogic};
pub use secret::Secret;
pub use template::Template;
pub use worker::{CloudError, CloudInput, CloudSnapshot, CloudStats, CloudWorker};
