//! # switchyard-workers
//!
//! The third stage of `ingest → router → workers → sink`: the workers that
//! answer events the router sent them.
//!
//! * [`WorkerConfig`] — the `workers:` entries of a manifest (`type: onnx`,
//!   `kserve_v2`, `openai`);
//! * [`registry`] — the model registry folder (`name/version/model.onnx` +
//!   `metadata.json`), checked against the ONNX file at start-up;
//! * [`Batcher`] — the dynamic batcher (Triton's model: a batch closes at
//!   `max_batch_size` rows or `max_queue_delay_ms` after its first request),
//!   running a [`BatchModel`] on dedicated threads, never on the async runtime;
//! * [`OnnxWorker`] — ONNX Runtime through `ort` behind a [`Batcher`], taking
//!   up new registry versions while running (canary, shadow or replace);
//! * [`cloud`] — cloud API workers: KServe V2 and OpenAI-compatible clients
//!   with coalescing, rate limits, retries, circuit breakers, budgets,
//!   secrets and redaction ([`cloud::CloudWorker`]);
//! * [`dispatch`] — which worker answers each routed event: fallback
//!   chains, waits for unavailable endpoints, shadows, the last egress
//!   guard; every worker gives the same [`Answer`].
//!
//! Depends only on `switchyard-schemas`.

mod answer;
mod batcher;
pub mod cloud;
mod config;
pub mod dispatch;
mod error;
mod onnx;
pub mod registry;

pub use answer::Answer;
pub use batcher::{set_model_thread_nice, set_thread_nice, urgent, BatchModel, BatchStats, Batcher, Scores};
pub use config::{ExecutionProviderKind, OnnxWorkerConfig, ReloadConfig, RolloutMode, WorkerConfig};
pub use error::{Error, Result};
pub use onnx::{init_runtime, EventAnswers, OnnxModel, OnnxWorker, ReloadEvent, Role, RowAnswer};
