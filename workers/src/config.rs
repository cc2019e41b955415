use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use switchyard_schemas::Problems;

use crate::cloud::{CloudWorkerConfig, Protocol};

/// One entry of the manifest's `workers:` map, selected by its `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerConfig {
    /// A local ONNX model run by ONNX Runtime.
    Onnx(OnnxWorkerConfig),
    /// A KServe V2 / Open Inference Protocol endpoint (Triton, KServe,
    /// MLServer, `switchyard serve`).
    KserveV2(CloudWorkerConfig),
    /// An OpenAI-compatible endpoint (chat completions or embeddings).
    Openai(CloudWorkerConfig),
}

impl WorkerConfig {
    /// True for workers that send data outside the trusted boundary.
    pub fn is_cloud(&self) -> bool {
        !matches!(self, WorkerConfig::Onnx(_))
    }

    /// The manifest `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            WorkerConfig::Onnx(_) => "onnx",
            WorkerConfig::KserveV2(_) => "kserve_v2",
            WorkerConfig::Openai(_) => "openai",
        }
    }

    /// The cloud settings and protocol, for cloud workers.
    pub fn cloud(&self) -> Option<(Protocol, &CloudWorkerConfig)> {
        match self {
            WorkerConfig::Onnx(_) => None,
            WorkerConfig::KserveV2(c) => Some((Protocol::KserveV2, c)),
            WorkerConfig::Openai(c) => Some((Protocol::OpenAi, c)),
        }
    }

    /// Settings given under a former name, as warnings for `path`.
    pub fn deprecations(&self, path: &str) -> Vec<String> {
        match self {
            WorkerConfig::Onnx(_) => Vec::new(),
            WorkerConfig::KserveV2(c) | WorkerConfig::Openai(c) => c.deprecations(path),
        }
    }

    /// Reports every problem under `path`; `fields` are the schema's field
    /// names (templates and redaction name them).
    pub fn validate(&self, path: &str, fields: &[String], problems: &mut Problems) {
        match self {
            WorkerConfig::Onnx(c) => c.validate(path, problems),
            WorkerConfig::KserveV2(c) => c.validate(Protocol::KserveV2, path, fields, problems),
            WorkerConfig::Openai(c) => c.validate(Protocol::OpenAi, path, fields, problems),
        }
    }
}

/// Settings of a local ONNX worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OnnxWorkerConfig {
    /// Model name in the registry.
    pub model: String,
    /// Model version; the highest numeric version in the registry when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Registry folder (`<registry>/<model>/<version>/model.onnx`), relative to
    /// the manifest's folder.
    #[serde(default = "default_registry")]
    pub registry: PathBuf,
    /// Most rows per model execution.
    #[serde(default = "default_max_batch_size")]
    pub max_batch_size: usize,
    /// Longest a request waits for others to join its batch, in ms. With 0
    /// (the default) a batch takes the requests already queued and runs:
    /// under load, requests queue while the model runs, so batches still
    /// fill, and an event arriving alone waits for nobody.
    #[serde(default = "default_max_queue_delay_ms")]
    pub max_queue_delay_ms: u64,
    /// Most requests waiting for the model; when full, callers wait
    /// (backpressure up to the Kafka consumer).
    #[serde(default = "default_max_queued_requests")]
    pub max_queued_requests: usize,
    /// Sessions (each on its own thread) serving the queue.
    #[serde(default = "default_instances")]
    pub instances: usize,
    /// ONNX Runtime intra-op threads per session.
    #[serde(default = "default_intra_op_threads")]
    pub intra_op_threads: usize,
    /// Execution provider: `auto` (CUDA when built with the `cuda` feature and a
    /// GPU is usable, else CPU), `cpu`, or `cuda` (fail if CUDA cannot start).
    #[serde(default)]
    pub execution_provider: ExecutionProviderKind,
    /// Take up new versions of the model from the registry while running
    /// (not with a pinned `version`); off when absent.
    #[serde(default)]
    pub reload: Option<ReloadConfig>,
}

/// How a running worker takes up new model versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// How often the registry is read, in ms.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// How a new version goes into service.
    #[serde(default)]
    pub rollout: RolloutMode,
    /// `canary`: share of events (chosen by lineage id, so replays agree)
    /// the candidate answers.
    #[serde(default = "default_canary_fraction")]
    pub canary_fraction: f64,
    /// `shadow`: share of events the candidate also scores (its answers are
    /// stored as shadow rows, never sent on).
    #[serde(default = "default_shadow_sample")]
    pub shadow_sample: f64,
}

/// How a new model version goes into service.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Answers a share of the events beside the stable version until the
    /// monitor promotes or rejects it.
    #[default]
    Canary,
    /// Scores events beside the stable version, which alone answers, until
    /// the monitor promotes or rejects it.
    Shadow,
    /// Replaces the serving version as soon as it is registered.
    Replace,
}

impl RolloutMode {
    /// The manifest name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutMode::Canary => "canary",
            RolloutMode::Shadow => "shadow",
            RolloutMode::Replace => "replace",
        }
    }
}

fn default_poll_ms() -> u64 {
    5_000
}
fn default_canary_fraction() -> f64 {
    0.1
}
fn default_shadow_sample() -> f64 {
    1.0
}

/// Which ONNX Runtime execution provider a worker uses.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProviderKind {
    /// CUDA if available, else CPU.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or fail.
    Cuda,
}

fn default_registry() -> PathBuf {
    PathBuf::from("models")
}
fn default_max_batch_size() -> usize {
    1024
}
fn default_max_queue_delay_ms() -> u64 {
    0
}
fn default_max_queued_requests() -> usize {
    64
}
fn default_instances() -> usize {
    1
}
fn default_intra_op_threads() -> usize {
    1
}

impl OnnxWorkerConfig {
    /// Reports every problem under `path` that needs no file access.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.model.trim().is_empty() {
            problems.push(format!("{path}.model"), "must name a model of the registry");
        }
        if self.max_batch_size == 0 {
            problems.push(format!("{path}.max_batch_size"), "must be at least 1");
        }
        if self.max_queued_requests == 0 {
            problems.push(format!("{path}.max_queued_requests"), "must be at least 1");
        }
        if self.instances == 0 {
            problems.push(format!("{path}.instances"), "must be at least 1");
        }
        if self.intra_op_threads == 0 {
            problems.push(format!("{path}.intra_op_threads"), "must be at least 1");
        }
        if self.execution_provider == ExecutionProviderKind::Cuda && !cfg!(feature = "cuda") {
            problems.push(
                format!("{path}.execution_provider"),
                "`cuda` needs a build with `--features cuda`; use `auto` or `cpu`",
            );
        }
        if let Some(r) = &self.reload {
            if self.version.is_some() {
                problems.push(
                    format!("{path}.reload"),
                    "the model version is pinned (`version`); remove it to take up new versions",
                );
            }
            if r.poll_ms < 10 {
                problems.push(format!("{path}.reload.poll_ms"), "must be at least 10");
            }
            if !(r.canary_fraction > 0.0 && r.canary_fraction < 1.0) {
                problems.push(format!("{path}.reload.canary_fraction"), "must be above 0 and below 1");
            }
            if !(r.shadow_sample > 0.0 && r.shadow_sample <= 1.0) {
                problems.push(format!("{path}.reload.shadow_sample"), "must be above 0 and at most 1");
            }
        }
    }
}
