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
    /// Longest a request waits for others to join its batch, in ms.
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
    2
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
    }
}
